"""GPT-NeoX (the Pythia architecture) and its checkpoints: Hugging Face folders, the hub, and
GPT-NeoX / DeepSpeed training checkpoints."""

from debias.model.flops import (
    ParameterCounts,
    config_from_preset,
    flops_per_token,
    mfu,
    parameter_counts,
    peak_bf16_flops,
    preset_accounting,
)
from debias.model.gpt_neox import GPTNeoX, GPTNeoXConfig
from debias.model.hub import pythia_checkpoint_steps, resolve_checkpoint
from debias.model.neox_import import ZeroState, adamw_state_dict, import_checkpoint, load_neox_model, read_zero_state

__all__ = [
    "GPTNeoX",
    "GPTNeoXConfig",
    "ParameterCounts",
    "ZeroState",
    "adamw_state_dict",
    "config_from_preset",
    "flops_per_token",
    "import_checkpoint",
    "load_neox_model",
    "mfu",
    "parameter_counts",
    "peak_bf16_flops",
    "preset_accounting",
    "pythia_checkpoint_steps",
    "read_zero_state",
    "resolve_checkpoint",
]
