"""GPT-NeoX (the Pythia architecture) and its checkpoints: Hugging Face folders, the hub, and
GPT-NeoX / DeepSpeed training checkpoints.

Modules, in import order (each imports only those above it): `architecture` (GPTNeoXConfig),
`lm_loss` (chunked cross-entropy), `weight_decay` (AdamW groups), `hf_folder` (read/write
Hugging Face folders), `gpt_neox` (the model), `flops` (parameter and FLOP accounting),
`checkpoint_source` (local folder or hub revision), `neox_import` (GPT-NeoX / ZeRO checkpoints).
"""

from debias.model.architecture import GPTNeoXConfig
from debias.model.checkpoint_source import pythia_checkpoint_steps, resolve_checkpoint
from debias.model.flops import (
    ParameterCounts,
    config_from_preset,
    flops_per_token,
    mfu,
    parameter_counts,
    peak_bf16_flops,
    preset_accounting,
)
from debias.model.gpt_neox import GPTNeoX
from debias.model.lm_loss import chunked_cross_entropy
from debias.model.neox_import import ZeroState, adamw_state_dict, import_checkpoint, load_neox_model, read_zero_state
from debias.model.weight_decay import parameter_groups

__all__ = [
    "GPTNeoX",
    "GPTNeoXConfig",
    "ParameterCounts",
    "ZeroState",
    "adamw_state_dict",
    "chunked_cross_entropy",
    "config_from_preset",
    "flops_per_token",
    "import_checkpoint",
    "load_neox_model",
    "mfu",
    "parameter_counts",
    "parameter_groups",
    "peak_bf16_flops",
    "preset_accounting",
    "pythia_checkpoint_steps",
    "read_zero_state",
    "resolve_checkpoint",
]
