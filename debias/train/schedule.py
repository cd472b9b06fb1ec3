"""Pythia's learning-rate schedule, evaluated at any step.

Linear warm-up over the first `warmup_steps` (1% of the horizon by default), then a cosine decay
whose horizon is the whole run (143,000 steps for Pythia) with a floor at `min_lr_ratio * peak`:

    lr(n) = peak * n / w                                     for n < w
    lr(n) = max(floor, peak/2 * (1 + cos(pi * (n - w) / total)))   otherwise

The cosine is divided by `total`, not `total - w`, exactly as GPT-NeoX computes it; that is why
Pythia reaches its floor at step 115,139 and never climbs back. A continued run evaluates the same
function at its own global step, so resuming never re-warms.
"""

from __future__ import annotations

import math


def default_warmup_steps(total_steps: int) -> int:
    """1% of the horizon (1,430 steps for Pythia's 143,000)."""
    return int(0.01 * total_steps)


def lr_at(
    step: int,
    peak_lr: float,
    total_steps: int = 143_000,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.1,
) -> float:
    """Learning rate of the update made at global step `step` (0-based)."""
    warmup = default_warmup_steps(total_steps) if warmup_steps is None else warmup_steps
    if step < warmup:
        return peak_lr * step / warmup
    cosine = peak_lr / 2 * (1 + math.cos(math.pi * (step - warmup) / total_steps))
    return max(min_lr_ratio * peak_lr, cosine)
