"""The hyper-parameters of a GPT-NeoX model (`GPTNeoXConfig`) and their Hugging Face config.json
spelling, in transformers 4 (`rotary_pct`, `rotary_emb_base`) and 5 (`rope_parameters`) alike.
The modules that use them live in `gpt_neox.py`; reading and writing model folders in `hf_folder.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from debias.errors import UserError

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
