"""Numeric precision of training: resolving `precision: auto`, and fp16's dynamic loss scaling.

bf16 (autocast over fp32 master weights) is the default on GPUs that have it: no loss scaling, the
range of fp32. fp16 is how Pythia trained, and the fidelity choice when a run must reproduce it:
both engines then scale the loss with Pythia's own settings, which its GPT-NeoX configs give as
`"fp16": {"loss_scale": 0, "initial_scale_power": 12, "loss_scale_window": 1000, "hysteresis": 2,
"min_loss_scale": 1}` (the same for every model size): a dynamic scale starting at 2^12 that
halves after `hysteresis` overflowing steps (each skipped) and doubles after `loss_scale_window`
clean steps in a row. (torch's GradScaler starts at 2^16 and has no hysteresis, so the torch
engine uses `DynamicLossScale` below, and DeepSpeed gets the same numbers in its own config.)
"""

from __future__ import annotations

import torch

from debias.errors import UserError

# Pythia's fp16 loss-scale settings, under DeepSpeed's key names ("loss_scale": 0 = dynamic).
PYTHIA_FP16 = {"loss_scale": 0, "initial_scale_power": 12, "loss_scale_window": 1000, "hysteresis": 2,
               "min_loss_scale": 1}
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 on a GPU that has it (fp16 on older ones), fp32 on CPU."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise UserError("trainer.precision=fp16: needs a GPU; use fp32 (or bf16) on CPU")
    return precision


def autocast(device: torch.device, precision: str):
    """The context the forward pass runs under: bf16 / fp16 autocast, or nothing for fp32."""
    dtype = AUTOCAST_DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def loss_scale_settings(precision: str) -> dict | None:
    """What summary.json records: the loss-scale settings in force, None without loss scaling."""
    return dict(PYTHIA_FP16) if precision == "fp16" else None


class DynamicLossScale:
    """Dynamic loss scaling with DeepSpeed's semantics (non-consecutive hysteresis).

    An overflowing step is skipped; while hysteresis is left it only uses one up, after that the
    scale halves (never below the minimum). `window` clean steps in a row double the scale and
    restore the hysteresis. Disabled (scale 1, never skips) for bf16 and fp32.
    """

    def __init__(self, enabled: bool, initial_scale_power: int = 12, loss_scale_window: int = 1000,
                 hysteresis: int = 2, min_loss_scale: float = 1.0, **_ignored):
        self.enabled = enabled
        self.window, self.hysteresis, self.min_scale = loss_scale_window, hysteresis, float(min_loss_scale)
        self.scale = float(2**initial_scale_power) if enabled else 1.0
        self.hysteresis_left = hysteresis
        self.clean_steps = 0   # since the last overflow or growth
        self.skipped_steps = 0

    def update(self, overflow: bool) -> None:
        if not self.enabled:
            return
        if overflow:
            self.skipped_steps += 1
            self.clean_steps = 0
            if self.hysteresis_left > 1:
                self.hysteresis_left -= 1
            else:
                self.scale = max(self.scale / 2, self.min_scale)
            return
        self.clean_steps += 1
        if self.clean_steps == self.window:
            self.scale *= 2
            self.hysteresis_left = self.hysteresis
            self.clean_steps = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "hysteresis_left": self.hysteresis_left, "clean_steps": self.clean_steps,
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.hysteresis_left = float(state["scale"]), int(state["hysteresis_left"])
        self.clean_steps, self.skipped_steps = int(state["clean_steps"]), int(state["skipped_steps"])
