"""GPT-NeoX, the architecture of every Pythia model, in plain PyTorch.

One block, applied `num_layers` times (the Pythia paper, Biderman et al. 2023, and GPT-NeoX):

    x = x + attention(ln1(x)) + mlp(ln2(x))        # parallel residual (sequential also offered)

with rotary position embeddings on the first `rotary_pct` of each head's dimensions, a fused QKV
projection laid out per head ([q_h0, k_h0, v_h0, q_h1, ...]) and untied input / output embeddings.
Module names follow the Hugging Face checkpoint keys (minus the `gpt_neox.` prefix), so loading
and saving is a rename of one prefix, nothing more.

Attention goes through `scaled_dot_product_attention` (FlashAttention kernels on GPU for bf16 /
fp16), or through the `flash_attn` package when it is installed and the tensors are CUDA half
precision.

Training calls `model(ids, labels)`, which returns the mean next-token loss without ever holding
the logits of the whole batch (`lm_loss.chunked_cross_entropy`); `compile_blocks()` compiles each
block in place with torch.compile (one compiled graph serves every layer, so compilation takes
seconds, and parameter names, state_dicts and checkpoints stay exactly as they are).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from debias.model.architecture import GPTNeoXConfig
from debias.model.hf_folder import load_pretrained, save_pretrained
from debias.model.lm_loss import chunked_cross_entropy

try:  # optional: the FlashAttention package (pip install flash-attn) on CUDA machines
    from flash_attn import flash_attn_func
except ImportError:  # CPU machines and GPU machines without it use SDPA, which is also flash on GPU
    flash_attn_func = None

def rotary_tables(config: GPTNeoXConfig, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [length, rotary_dims] in fp32. Recomputed per call: it costs next to nothing,
    keeps fp32 precision when the model is cast to bf16, and needs no cache under torch.compile."""
    dims = config.rotary_dims
    inv_freq = 1.0 / (config.rotary_base ** (torch.arange(0, dims, 2, device=device, dtype=torch.float32) / dims))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)  # rotate-half pairs dimension i with i + dims/2
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dims of x [B, T, ..., head] (rotate-half); pass the rest."""
    dims = cos.shape[-1]
    rot, rest = x[..., :dims], x[..., dims:]
    first, second = rot.chunk(2, dim=-1)
    rotated_half = torch.cat((-second, first), dim=-1)
    broadcast = (cos.shape[0],) + (1,) * (x.dim() - 3) + (dims,)  # [T, 1, ..., dims]
    cos, sin = cos.view(broadcast).to(x.dtype), sin.view(broadcast).to(x.dtype)
    return torch.cat((rot * cos + rotated_half * sin, rest), dim=-1)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal self-attention on [B, T, H, head] tensors, scale 1/sqrt(head); returns [B, T, H, head]."""
    if flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return flash_attn_func(q, k, v, causal=True)  # takes [B, T, H, head] as it is
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    return out.transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, config: GPTNeoXConfig):
        super().__init__()
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        # the fused weight is laid out per head: [q_h0, k_h0, v_h0, q_h1, ...]
        qkv = self.query_key_value(x).view(batch, length, self.num_heads, 3, self.head_size)
        q, k = apply_rotary(qkv[:, :, :, :2], cos, sin).unbind(dim=3)  # queries and keys in one go
        v = qkv[:, :, :, 2]
        return self.dense(causal_attention(q, k, v).reshape(batch, length, width))


class MLP(nn.Module):
    def __init__(self, config: GPTNeoXConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)
        self.approximate = "tanh" if config.gelu == "tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, config: GPTNeoXConfig):
        super().__init__()
        self.use_parallel_residual = config.use_parallel_residual
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = Attention(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        attended = self.attention(self.input_layernorm(x), cos, sin)
        if self.use_parallel_residual:
            return x + attended + self.mlp(self.post_attention_layernorm(x))
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x))


class GPTNeoX(nn.Module):
    def __init__(self, config: GPTNeoXConfig):
        super().__init__()
        self.config = config
        self.embed_in = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.embed_out = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.gradient_checkpointing = False  # recompute each block in backward: less memory, ~1/3 more compute
        self.tokenizer_file: Path | None = None  # tokenizer.json of the folder it was loaded from, if any
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-NeoX's initialisation as Pythia used it: "small_init" N(0, sqrt(2 / 5d)) for the
        embeddings and input projections, "wang_init" N(0, 2 / (L sqrt(d))) for the two output
        projections that write into the residual stream; zero biases, unit LayerNorm gains."""
        d, layers = self.config.hidden_size, self.config.num_layers
        small_init, wang_init = math.sqrt(2 / (5 * d)), 2 / (layers * math.sqrt(d))
        for name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, (nn.Linear, nn.Embedding)):
                is_output = name.endswith("attention.dense") or name.endswith("mlp.dense_4h_to_h")
                nn.init.normal_(module.weight, std=wang_init if is_output else small_init)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """ids [B, T] -> logits [B, T, vocab_size]; with labels [B, T] -> the mean next-token
        cross-entropy (fp32 scalar), computed in chunks so the whole batch's logits never exist."""
        hidden = self.hidden_states(ids)
        if labels is None:
            return self.embed_out(hidden)
        return chunked_cross_entropy(hidden.flatten(0, 1), self.embed_out.weight, labels.reshape(-1))

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] -> the final LayerNorm's output [B, T, hidden_size], the input of `embed_out`.
        Callers that apply the output layer themselves (in fp32, or in chunks) start here."""
        x = self.embed_in(ids)
        cos, sin = rotary_tables(self.config, ids.shape[1], ids.device)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        return self.final_layer_norm(x)

    def compile_blocks(self, **options) -> None:
        """torch.compile every block in place ("regional compilation"). Compilation is lazy: the
        first forward pass compiles, and fails there if the platform cannot compile."""
        for layer in self.layers:
            layer.compile(**options)

    def uncompile_blocks(self) -> None:
        """Back to eager blocks (after a failed compilation). nn.Module.compile() keeps the
        compiled call in `_compiled_call_impl`; None restores the plain call."""
        for layer in self.layers:
            layer._compiled_call_impl = None

    @property
    def blocks_compiled(self) -> bool:
        return any(getattr(layer, "_compiled_call_impl", None) is not None for layer in self.layers)

    # Hugging Face folders (debias/model/hf_folder.py holds the file handling)
    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        gelu: str | None = None,
    ) -> "GPTNeoX":
        """Load a Hugging Face GPT-NeoX folder. dtype None means float32 (master weights for
        training, and what CPUs compute fastest); gelu overrides the folder's activation, e.g.
        "tanh" to run Pythia as it was trained (its config.json says exact "gelu")."""
        return load_pretrained(cls, folder, dtype=dtype, device=device, gelu=gelu)

    def save_pretrained(self, folder: str | Path, tokenizer: str | Path | None = None) -> Path:
        """Write model.safetensors + config.json (+ tokenizer files) atomically; transformers'
        GPTNeoXForCausalLM and AutoTokenizer load the folder."""
        return save_pretrained(self, folder, tokenizer=tokenizer)
