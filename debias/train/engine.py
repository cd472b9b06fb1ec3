"""Two engines with one small interface: plain PyTorch on one device, and DeepSpeed ZeRO.

    loss = engine.forward_backward(input_ids, labels, last_micro_batch)  # mean token loss (detached)
    grad_norm = engine.step(lr)                                          # clip, update, zero grads

Both compute the loss the same way (cross-entropy in fp32 over every predicted token, averaged over
the micro-batch, divided by grad_accum), so on the same global batch they follow the same curve.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from debias.errors import UserError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"trainer.device={device}: no CUDA device is visible; use device=cpu or auto")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank)
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 autocast on a GPU that has it (fp16 on older ones), fp32 on CPU."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy, computed in fp32 whatever the compute dtype."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())


class TorchEngine:
    """One process, one device. bf16: autocast with fp32 master weights (SDPA then runs the flash
    kernels on GPU); fp16: autocast plus dynamic loss scaling (torch.amp.GradScaler)."""

    name = "torch"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 precision: str, grad_clip: float, grad_accum: int, compile: bool = False):
        self.model = model.to(device)
        self.optimizer, self.device, self.precision = optimizer, device, precision
        self.grad_clip, self.grad_accum = grad_clip, grad_accum
        self.autocast_dtype = AUTOCAST_DTYPES[precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.forward = torch.compile(self.model) if compile else self.model

    def forward_backward(self, input_ids: torch.Tensor, labels: torch.Tensor, last_micro_batch: bool) -> torch.Tensor:
        input_ids = input_ids.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            logits = self.forward(input_ids)
        loss = token_loss(logits, labels)
        self.scaler.scale(loss / self.grad_accum).backward()
        return loss.detach()

    def step(self, lr: float) -> float:
        """Clip and apply the accumulated gradients at learning rate `lr`; returns the gradient
        norm before clipping. With fp16 an overflowing step is skipped (the scaler backs off)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(f"gradient norm is {grad_norm}")
        self.scaler.step(self.optimizer)  # skips the update when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    # checkpoints: one file holds everything this engine owns
    def save(self, folder: Path, rank: int) -> None:
        if rank == 0:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scaler": self.scaler.state_dict()}, folder / "engine.pt")

    def load(self, folder: Path) -> None:
        state = torch.load(folder / "engine.pt", map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])

    def full_state_dict(self, folder: Path | None = None) -> dict[str, torch.Tensor]:
        """fp32 weights of the whole model (for Hugging Face folders)."""
        return {k: v.detach().float().cpu() for k, v in self.model.state_dict().items()}


class DeepSpeedEngine:
    """DeepSpeed ZeRO (stage 1 by default) over a torch optimizer, launched by torchrun or the
    deepspeed launcher. DeepSpeed averages gradients over ranks, divides the loss by
    grad_accum, clips and (bf16/fp16) keeps fp32 master weights partitioned over ranks."""

    name = "deepspeed"
    CHECKPOINT_TAG = "deepspeed"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 precision: str, grad_clip: float, micro_batch: int, grad_accum: int, world_size: int,
                 zero_stage: int = 1, extra_config: dict | None = None):
        import deepspeed

        self.device, self.precision, self.zero_stage = device, precision, zero_stage
        bucket = int(min(5e8, sum(p.numel() for p in model.parameters())))
        config = {
            "train_batch_size": micro_batch * grad_accum * world_size,
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": grad_accum,
            "gradient_clipping": grad_clip,
            # DeepSpeed's buckets default to 5e8 elements; a bucket larger than the model only costs
            # allocation time (seconds per step on CPU), so cap them at the model's size.
            "zero_optimization": {"stage": zero_stage, "reduce_bucket_size": bucket, "allgather_bucket_size": bucket},
            "bf16": {"enabled": precision == "bf16"},
            # loss_scale 0 = dynamic loss scaling, as Pythia trained
            "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
        config = _merge(config, extra_config or {})
        self.ds, self.optimizer, _, _ = deepspeed.initialize(model=model.to(device), optimizer=optimizer, config=config)
        self.model = self.ds.module

    def forward_backward(self, input_ids: torch.Tensor, labels: torch.Tensor, last_micro_batch: bool) -> torch.Tensor:
        logits = self.ds(input_ids.to(self.device, non_blocking=True))
        loss = token_loss(logits, labels.to(self.device, non_blocking=True))
        self.ds.backward(loss)  # scales by 1/grad_accum, reduces gradients at the boundary
        if not last_micro_batch:
            self.ds.step()  # DeepSpeed counts micro-steps here; it updates only at the boundary
        return loss.detach()

    def step(self, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.ds.step()
        grad_norm = self.ds.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        if not math.isfinite(grad_norm) and self.precision != "fp16":
            raise FloatingPointError(f"gradient norm is {grad_norm}")
        return grad_norm

    def save(self, folder: Path, rank: int) -> None:
        self.ds.save_checkpoint(str(folder), tag=self.CHECKPOINT_TAG)  # collective: every rank writes its shard

    def load(self, folder: Path) -> None:
        path, _ = self.ds.load_checkpoint(str(folder), tag=self.CHECKPOINT_TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=False)
        if path is None:
            raise UserError(f"{folder}: no DeepSpeed checkpoint inside; delete this folder to restart from the previous checkpoint")

    def full_state_dict(self, folder: Path | None = None) -> dict[str, torch.Tensor]:
        """fp32 weights of the whole model, consolidated from a saved ZeRO checkpoint (`folder`)."""
        if self.precision == "fp32" and self.zero_stage < 3:  # the module holds them, whole and in fp32
            return {k: v.detach().float().cpu() for k, v in self.model.state_dict().items()}
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=self.CHECKPOINT_TAG)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
