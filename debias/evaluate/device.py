"""The evaluation device, checked against this machine before any model is loaded or item scored
(the other `eval.*` settings are checked when `debias.config.EvalConfig` is constructed)."""

from __future__ import annotations

import torch

from debias.errors import UserError


def resolve_device(device: str | None) -> torch.device:
    """"auto" (or None) -> cuda when available, else cpu; anything else must name a device this
    machine has."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(str(device))
    except (RuntimeError, ValueError):
        raise UserError(f"eval.device={device!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"eval.device={device!r}: this machine has no CUDA device; use auto or cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise UserError(f"eval.device={device!r}: only {torch.cuda.device_count()} CUDA device(s) here "
                            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"eval.device={device!r}: MPS is not available here; use auto or cpu")
    elif resolved.type != "cpu":
        raise UserError(f"eval.device={device!r}: evaluation runs on cpu, cuda or mps; use auto, cpu or cuda")
    return resolved
