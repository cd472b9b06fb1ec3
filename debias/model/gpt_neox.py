"""GPT-NeoX, the architecture of every Pythia model, in plain PyTorch.

One block, applied `num_layers` times (FACTS §4):

    x = x + attention(ln1(x)) + mlp(ln2(x))        # parallel residual (sequential also offered)

with rotary position embeddings on the first `rotary_pct` of each head's dimensions, a fused QKV
projection laid out per head ([q_h0, k_h0, v_h0, q_h1, ...]) and untied input / output embeddings.
Module names follow the Hugging Face checkpoint keys (minus the `gpt_neox.` prefix), so loading
and saving is a rename of one prefix, nothing more.

Attention goes through `scaled_dot_product_attention` (FlashAttention kernels on GPU for bf16 /
fp16), or through the `flash_attn` package when it is installed and the tensors are CUDA half
precision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from debias.errors import UserError

try:  # optional: the FlashAttention package (pip install flash-attn) on CUDA machines
    from flash_attn import flash_attn_func
except ImportError:  # CPU machines and GPU machines without it use SDPA, which is also flash on GPU
    flash_attn_func = None

# Hugging Face `hidden_act` names -> our `gelu` setting. "gelu" is exact (erf); the others are the
# tanh approximation Pythia was trained with, written three ways over the years.
HF_ACTIVATIONS = {"gelu": "exact", "gelu_new": "tanh", "gelu_fast": "tanh", "gelu_pytorch_tanh": "tanh"}
GELU_TO_HF = {"exact": "gelu", "tanh": "gelu_pytorch_tanh"}  # gelu_pytorch_tanh is F.gelu(approximate="tanh")


@dataclass
class GPTNeoXConfig:
    vocab_size: int = 50304  # embedding rows: the tokenizer's 50,277 ids padded for fast matmuls
    hidden_size: int = 512
    num_layers: int = 6
    num_heads: int = 8
    intermediate_size: int = 2048
    rotary_pct: float = 0.25  # share of each head's dimensions that is rotated
    rotary_base: float = 10000.0
    max_position_embeddings: int = 2048  # the trained context; longer inputs still run
    layer_norm_eps: float = 1e-5
    gelu: str = "tanh"  # "tanh" (how Pythia was trained) or "exact" (how transformers evaluates it)
    use_parallel_residual: bool = True
    bos_token_id: int = 0
    eos_token_id: int = 0

    def __post_init__(self) -> None:
        if self.gelu not in GELU_TO_HF:
            raise UserError(f"model gelu={self.gelu!r}: unknown; use 'tanh' or 'exact'")
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"model hidden_size={self.hidden_size}, num_heads={self.num_heads}: "
                "hidden_size must be a multiple of num_heads"
            )
        if not 0.0 <= self.rotary_pct <= 1.0 or self.rotary_dims % 2:
            raise UserError(
                f"model rotary_pct={self.rotary_pct}: must lie in [0, 1] and rotate an even number of "
                f"each head's {self.head_size} dimensions (rotate-half pairs them)"
            )

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dims(self) -> int:
        return int(self.head_size * self.rotary_pct)  # int() truncates, as GPT-NeoX and transformers do

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GPTNeoXConfig":
        """From our own keys (a conf/model `architecture:` block); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"model architecture: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], source: str | Path = "config.json") -> "GPTNeoXConfig":
        """Read a Hugging Face GPT-NeoX config.json, in the transformers 4 (`rotary_pct`,
        `rotary_emb_base`) or transformers 5 (`rope_parameters`) spelling."""
        if hf.get("model_type") != "gpt_neox":
            raise UserError(
                f"{source}: model_type is {hf.get('model_type')!r}, not 'gpt_neox'; "
                "debias loads GPT-NeoX (Pythia) models only"
            )
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise UserError(f"{source}: rope type {rope.get('rope_type', rope.get('type'))!r} is not supported; only plain rotary")
        if hf.get("attention_bias") is False:
            raise UserError(f"{source}: attention_bias=false is not supported; GPT-NeoX attention has biases")
        if hf.get("hidden_act", "gelu") not in HF_ACTIVATIONS:
            raise UserError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported; expected one of {sorted(HF_ACTIVATIONS)}")
        try:
            return cls(
                vocab_size=int(hf["vocab_size"]),
                hidden_size=int(hf["hidden_size"]),
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=int(hf["num_attention_heads"]),
                intermediate_size=int(hf["intermediate_size"]),
                rotary_pct=float(rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))),
                rotary_base=float(rope.get("rope_theta", hf.get("rotary_emb_base", hf.get("rope_theta", 10000.0)))),
                max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
                layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
                gelu=HF_ACTIVATIONS[hf.get("hidden_act", "gelu")],
                use_parallel_residual=bool(hf.get("use_parallel_residual", True)),
                bos_token_id=first_id(hf.get("bos_token_id")),
                eos_token_id=first_id(hf.get("eos_token_id")),
            )
        except KeyError as missing:
            raise UserError(f"{source}: key {missing} is missing; is this a GPT-NeoX config.json?") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json that transformers 4 and 5 both load as GPTNeoXForCausalLM."""
        return {
            "architectures": ["GPTNeoXForCausalLM"],
            "model_type": "gpt_neox",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": GELU_TO_HF[self.gelu],
            # both spellings: transformers 4 reads rotary_pct / rotary_emb_base, 5 reads rope_parameters
            "rotary_pct": self.rotary_pct,
            "rotary_emb_base": self.rotary_base,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": self.rotary_base,
                "partial_rotary_factor": self.rotary_pct,
            },
            "max_position_embeddings": self.max_position_embeddings,
            "layer_norm_eps": self.layer_norm_eps,
            "use_parallel_residual": self.use_parallel_residual,
            "tie_word_embeddings": False,
            "attention_dropout": 0.0,
            "hidden_dropout": 0.0,
            "initializer_range": 0.02,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "use_cache": True,
        }


def first_id(value: int | list[int] | None) -> int:
    """A token id from config.json, which may also be a list (transformers 5) or null."""
    if isinstance(value, list):
        value = value[0] if value else None
    return 0 if value is None else int(value)


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

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] -> logits [B, T, vocab_size]."""
        return self.embed_out(self.hidden_states(ids))

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

    # Hugging Face folders (debias/model/checkpoint.py holds the file handling)
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
        from debias.model.checkpoint import load_pretrained

        return load_pretrained(cls, folder, dtype=dtype, device=device, gelu=gelu)

    def save_pretrained(self, folder: str | Path, tokenizer: str | Path | None = None) -> Path:
        """Write model.safetensors + config.json (+ tokenizer files) atomically; transformers'
        GPTNeoXForCausalLM and AutoTokenizer load the folder."""
        from debias.model.checkpoint import save_pretrained

        return save_pretrained(self, folder, tokenizer=tokenizer)
