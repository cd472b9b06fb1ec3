"""AdamW with Pythia's parameter groups, and where its state comes from.

Weight decay (decoupled, 0.1) skips LayerNorm weights and biases (FACTS §5). We read that the way
GPT-NeoX's `get_params_for_weight_decay_optimization` (megatron/model/utils.py) implements it, which
is what Pythia ran: no decay on any LayerNorm parameter *and* on every parameter named `bias`
(linear biases too). `optimizer.decay_biases: true` decays linear biases instead, for users who
read the recipe narrowly. Groups come in GPT-NeoX's order (decay, then no-decay; parameters in
module order), so an optimizer state imported from GPT-NeoX lines up.

State: either an imported optimizer state (a torch `state_dict` file, e.g. produced from GPT-NeoX
ZeRO shards by `debias.model.neox_import`), or a fresh Adam. A fresh Adam may be warmed by
`adam_warmup_steps` zero-learning-rate steps (see `loop.py`): with lr = 0 AdamW changes no weight
(its decoupled decay is lr * wd * w), but the moments see real gradients, so the first real updates
are not the oversized steps of an empty Adam.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from debias.errors import UserError


def is_decayed(module: nn.Module, param_name: str, decay_biases: bool = False) -> bool:
    """Pythia's rule: decay everything except LayerNorm parameters and biases."""
    if isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower():
        return False
    return decay_biases or param_name != "bias"


def parameter_groups(model: nn.Module, weight_decay: float, decay_biases: bool = False) -> list[dict]:
    """Two AdamW groups in a stable order (module order), so state_dicts line up across runs."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                (decay if is_decayed(module, name, decay_biases) else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(
    model: nn.Module, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.1,
    decay_biases: bool = False, fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`; lr starts at 0 and is set by the loop before every update."""
    groups = parameter_groups(model, weight_decay, decay_biases)
    return torch.optim.AdamW(groups, lr=0.0, betas=tuple(betas), eps=eps, fused=fused)


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Load an imported optimizer state_dict (tensors only; never unpickles arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: optimizer state not found (give a torch optimizer state_dict file or optimizer_state=null for a fresh Adam)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with non-tensor payload, a truncated file, ...
        raise UserError(f"{path}: not a loadable optimizer state_dict ({type(err).__name__}); write it with torch.save(optimizer.state_dict())") from None
    if not isinstance(state, dict) or "state" not in state or "param_groups" not in state:
        raise UserError(f"{path}: not an optimizer state_dict (needs 'state' and 'param_groups' keys)")
    ours = optimizer.state_dict()["param_groups"]
    theirs = state["param_groups"]
    if [len(g["params"]) for g in theirs] != [len(g["params"]) for g in ours]:
        raise UserError(
            f"{path}: optimizer groups hold {[len(g['params']) for g in theirs]} parameters, this model's "
            f"AdamW groups hold {[len(g['params']) for g in ours]} (decay, no-decay); import it for this model"
        )
    # Keep our hyper-parameters (recipe from the config); take only the moments and step counts.
    state = {"state": state["state"], "param_groups": [{**g_ours, "params": g_theirs["params"]} for g_ours, g_theirs in zip(ours, theirs)]}
    optimizer.load_state_dict(state)
