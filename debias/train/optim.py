"""AdamW with Pythia's parameter groups, and where its state comes from (`trainer.optimizer_state`).

Groups: `debias.model.parameter_groups` (decay on weight matrices only, GPT-NeoX's order).

State, one of three treatments:
  fresh   a new Adam (Hugging Face checkpoints hold weights only), the default;
  warmup  a new Adam whose moments are first warmed by `adam_warmup_steps` zero-learning-rate steps
          on the window's first batches (see `loop.py`): with lr = 0 AdamW changes no weight (its
          decoupled decay is lr * wd * w too), so the first real updates are not an empty Adam's
          oversized steps;
  <path>  Adam's moments imported from GPT-NeoX ZeRO-1 shards (`debias.model.neox_import`): a
          checkpoint folder `global_step<N>/`, or the output folder of `python -m
          debias.model.neox_import`. The shards must be from the window's first step. (EleutherAI
          publishes shards for Pythia's final step only.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from debias.errors import UserError
from debias.model import GPTNeoX, adamw_state_dict, parameter_groups, read_zero_state
from debias.model.neox_import import OPTIM_FILE, checkpoint_step

__all__ = ["build_optimizer", "import_optimizer_state", "load_optimizer_state", "optimizer_state_step", "parameter_groups"]


def build_optimizer(
    model: nn.Module, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.1,
    decay_biases: bool = False, fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`; lr starts at 0 and is set by the loop before every update."""
    groups = parameter_groups(model, weight_decay, decay_biases)
    return torch.optim.AdamW(groups, lr=0.0, betas=tuple(betas), eps=eps, fused=fused)


def import_optimizer_state(optimizer: torch.optim.Optimizer, model: GPTNeoX, source: str | Path,
                           start_step: int) -> dict:
    """Load Adam's moments for `model` from `source` (see the module docstring), after checking that
    they belong to `start_step` and, for raw shards, to the model's weights. Returns what
    summary.json records about it."""
    source = Path(source).expanduser()
    form, step = optimizer_state_step(source)
    check_step(f"trainer.optimizer_state={source}", step, start_step)
    if form == "imported":
        load_optimizer_state(optimizer, source / "optimizer_state.pt")
        adam_step = json.loads((source / "import.json").read_text()).get("adam_step")
    else:
        zero = read_zero_state(source, model.config)
        check_weights_match(model, zero.master, source)
        optimizer.load_state_dict(adamw_state_dict(optimizer, model, zero))
        adam_step = zero.step
    return {"treatment": "imported", "source": str(source), "checkpoint_step": step, "adam_step": adam_step}


def optimizer_state_step(source: str | Path) -> tuple[str, int | None]:
    """(form, step) of a `trainer.optimizer_state` folder without loading its moments: "imported"
    (a debias.model.neox_import output, step from its import.json) or "shards" (GPT-NeoX ZeRO-1
    shards, step from the checkpoint). Cheap enough to check before any heavy work."""
    source = Path(source).expanduser()
    setting = f"trainer.optimizer_state={source}"
    if (source / "import.json").is_file() and (source / "optimizer_state.pt").is_file():
        try:
            record = json.loads((source / "import.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{source / 'import.json'}: not valid JSON ({err}); import the shards again") from None
        return "imported", record.get("step") if isinstance(record, dict) else None
    if source.is_dir() and any(OPTIM_FILE.match(p.name) for p in source.iterdir()):
        return "shards", checkpoint_step(source)
    raise UserError(f"{setting}: holds no ZeRO optimizer shards (zero_pp_rank_*_optim_states.pt) and is no "
                    "debias.model.neox_import output; give the GPT-NeoX checkpoint folder global_step<N>/")


def check_step(setting: str, step: int | None, start_step: int) -> None:
    if step is None:
        raise UserError(f"{setting}: cannot tell which step the shards are from (no global_steps in "
                        "mp_rank_00_model_states.pt and no global_step<N> folder name); keep GPT-NeoX's folder layout")
    if step != start_step:
        raise UserError(f"{setting}: the shards are from step {step}, the window starts at step {start_step}; "
                        f"use the shards of step {start_step}, or optimizer_state=fresh")


def check_weights_match(model: nn.Module, master: dict[str, torch.Tensor], source: Path) -> None:
    """The model being trained must be the one the shards belong to (its weights may be a
    half-precision copy of the shards' fp32 master weights)."""
    for name, param in model.named_parameters():
        theirs = master.get(name)
        if theirs is None or not torch.allclose(param.detach().float().cpu(), theirs, rtol=1e-2, atol=1e-3):
            raise UserError(f"{source}: the shards' master weights differ from the model being trained at {name!r}; "
                            "load the checkpoint of the same step as the shards")


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Load an imported optimizer state_dict (tensors only; never unpickles arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: optimizer state not found (give a torch optimizer state_dict file)")
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
