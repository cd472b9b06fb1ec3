"""Training metrics: a tqdm progress bar, `metrics.jsonl` (one line per logged step) and
TensorBoard scalars when `tensorboard` is installed. Only rank 0 writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm import tqdm

from debias.io import write_text_atomic
from debias.model.flops import peak_bf16_flops


def peak_flops(setting, device: torch.device) -> float | None:
    """Peak FLOP/s for MFU: TFLOP/s from the config, or the GPU's dense bf16 peak by name
    (debias.model.flops); None on CPU or an unknown GPU (MFU is then not reported)."""
    if setting not in (None, "auto", "none"):
        return float(setting) * 1e12
    if setting == "none" or device.type != "cuda":
        return None
    return peak_bf16_flops(torch.cuda.get_device_name(device))


class Metrics:
    def __init__(self, run_dir: Path, start_step: int, end_step: int, first_step: int, tokens_per_step: int,
                 flops_per_token: float, peak_flops: float | None, enabled: bool, progress: bool,
                 tensorboard: bool):
        self.path = run_dir / "metrics.jsonl"
        self.tokens_per_step, self.flops_per_token, self.peak = tokens_per_step, flops_per_token, peak_flops
        self.enabled = enabled
        self.bar = tqdm(total=end_step - start_step, initial=first_step - start_step, desc="train",
                        unit="step", disable=not (enabled and progress), dynamic_ncols=True)
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                pass

    def forget_after(self, step: int) -> None:
        """On resume: drop lines of steps >= `step` (they are trained again) and any torn last line."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("phase") == "train" and record["step"] < step:
                kept.append(line)
        write_text_atomic(self.path, "".join(k + "\n" for k in kept))

    def log(self, phase: str, step: int, loss: float, lr: float, grad_norm: float, seconds: float, write: bool) -> dict:
        tokens_per_s = self.tokens_per_step / seconds if seconds > 0 else math.nan
        mfu = tokens_per_s * self.flops_per_token / self.peak if self.peak else None
        record = {"phase": phase, "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                  "tokens_per_s": tokens_per_s, "step_seconds": seconds, "mfu": mfu}
        if not self.enabled:
            return record
        if phase == "train":
            self.bar.update(1)
        postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.3g}", "gnorm": f"{grad_norm:.3g}", "tok/s": f"{tokens_per_s:,.0f}"}
        if mfu is not None:
            postfix["mfu"] = f"{100 * mfu:.1f}%"
        self.bar.set_postfix(postfix, refresh=False)
        if write:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.writer is not None:
                for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
                    if record[key] is not None:
                        self.writer.add_scalar(f"{phase}/{key}", record[key], step)
        return record

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: Path, phase: str = "train") -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("phase") == phase]
