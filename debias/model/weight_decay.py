"""Which parameters of a model get weight decay: Pythia's AdamW parameter groups.

Pythia decays every weight matrix and nothing else: no LayerNorm weight or bias and no linear bias,
as GPT-NeoX's `get_params_for_weight_decay_optimization` (megatron/model/utils.py) splits them.
`decay_biases=True` decays linear biases too, for users who read the recipe narrowly. Groups come
in GPT-NeoX's order (decay, then no-decay; parameters in module order), so an optimizer state
imported from GPT-NeoX lines up, and state_dicts line up across runs.

Here, beside the model, because both the trainer and the GPT-NeoX checkpoint importer build their
AdamW states over these groups.
"""

from __future__ import annotations

from torch import nn


def is_decayed(module: nn.Module, param_name: str, decay_biases: bool = False) -> bool:
    """Pythia's rule: decay everything except LayerNorm parameters and biases."""
    if isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower():
        return False
    return decay_biases or param_name != "bias"


def parameter_groups(model: nn.Module, weight_decay: float, decay_biases: bool = False) -> list[dict]:
    """Two AdamW groups, "decay" and "no_decay", in module order."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                (decay if is_decayed(module, name, decay_biases) else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
