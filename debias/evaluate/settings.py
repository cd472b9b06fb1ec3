"""Checks of the evaluation settings (`eval.*`), run before any model is loaded or item scored, so
that a bad value costs a one-line error and not a finished evaluation."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from debias.errors import UserError

DTYPE_NAMES = ("float32", "bfloat16", "float64")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


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


def check_settings(cfg: Mapping[str, Any]) -> None:
    """A one-line UserError for the first setting that cannot work (a resolved `eval` dict)."""
    if not _positive_int(cfg.get("batch_size")):
        raise UserError(f"eval.batch_size={cfg.get('batch_size')!r}: must be a positive integer "
                        "(sequences per forward pass)")
    if not _positive_int(cfg.get("bootstrap_samples")):
        raise UserError(f"eval.bootstrap_samples={cfg.get('bootstrap_samples')!r}: must be a positive integer "
                        "(2000 is the default)")
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"eval.seed={seed!r}: must be a non-negative integer")
    if cfg.get("dtype") is not None and cfg["dtype"] not in DTYPE_NAMES:
        raise UserError(f"eval.dtype={cfg['dtype']!r}: use one of {', '.join(DTYPE_NAMES)} (or null)")
    resolve_device(cfg.get("device"))
    lambada = cfg.get("lambada") or {}
    if lambada.get("enabled") and lambada.get("limit") is not None and not _positive_int(lambada["limit"]):
        raise UserError(f"eval.lambada.limit={lambada['limit']!r}: must be a positive number of passages "
                        "(or null for all)")
    perplexity = cfg.get("perplexity") or {}
    if perplexity.get("enabled"):
        for key in ("window", "row_length"):
            if perplexity.get(key) is not None and not _positive_int(perplexity[key]):
                raise UserError(f"eval.perplexity.{key}={perplexity[key]!r}: must be a positive integer (or null)")
        if not _positive_int(perplexity.get("text_rows")):
            raise UserError(f"eval.perplexity.text_rows={perplexity.get('text_rows')!r}: must be a positive "
                            "number of rows")
