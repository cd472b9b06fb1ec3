"""Two engines with one small interface: plain PyTorch on one device, and DeepSpeed ZeRO.

    loss = engine.forward_backward(input_ids, labels, last_micro_batch)  # mean token loss (detached)
    grad_norm = engine.step(lr)                                          # clip, update, zero grads

Both take the loss from `model(ids, labels)` (cross-entropy in fp32 over every predicted token,
averaged over the micro-batch, in chunks that never hold the whole batch's logits), divide it by
grad_accum and accumulate the micro-batches' gradients in fp32, so on the same global batch they
follow the same recipe. bf16 is the same in both: autocast over fp32 weights and fp32 gradients
(DeepSpeed's `torch_autocast` mode, its gradients reduced in fp32), so the two engines agree to
round-off. fp16 uses Pythia's dynamic loss scaling in both (`precision.py`); DeepSpeed then holds
the module in fp16 with fp32 master weights, exactly as Pythia trained, and sums micro-batch
gradients in fp32 (`data_types.grad_accum_dtype`), as the torch engine does.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from debias.errors import UserError
from debias.train.precision import PYTHIA_FP16, DynamicLossScale, autocast


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"trainer.device={device}: no CUDA device is visible; use device=cpu or auto")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank)
    return resolved


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy from whole logits, in fp32 (ZeRO-3, whose partitioned output
    weight cannot be read outside its module's forward, goes this way)."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())


class TorchEngine:
    """One process, one device. bf16: autocast with fp32 master weights (SDPA then runs the flash
    kernels on GPU); fp16: autocast plus Pythia's dynamic loss scaling."""

    name = "torch"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 precision: str, grad_clip: float, grad_accum: int):
        self.model = model.to(device)
        self.optimizer, self.device, self.precision = optimizer, device, precision
        self.grad_clip, self.grad_accum = grad_clip, grad_accum
        self.loss_scale = DynamicLossScale(precision == "fp16", **PYTHIA_FP16)

    def compute_context(self):
        """What the forward pass runs under (also used to probe memory and compilation)."""
        return autocast(self.device, self.precision)

    def forward_backward(self, input_ids: torch.Tensor, labels: torch.Tensor, last_micro_batch: bool) -> torch.Tensor:
        with self.compute_context():
            loss = self.model(input_ids, labels)
        (loss * self.loss_scale.scale / self.grad_accum).backward()
        return loss.detach()

    def step(self, lr: float) -> float:
        """Clip and apply the accumulated gradients at learning rate `lr`; returns the gradient
        norm before clipping. With fp16 an overflowing step is skipped (the loss scale backs off)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.loss_scale.enabled:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            torch._foreach_mul_(grads, 1.0 / self.loss_scale.scale)
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        overflow = not math.isfinite(grad_norm)
        if overflow and not self.loss_scale.enabled:
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(f"gradient norm is {grad_norm}")
        if not overflow:
            self.optimizer.step()
        self.loss_scale.update(overflow)
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def loss_scale_state(self) -> dict | None:
        return self.loss_scale.state_dict() if self.loss_scale.enabled else None

    # checkpoints: one file holds everything this engine owns
    def save(self, folder: Path, rank: int) -> None:
        if rank == 0:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "loss_scale": self.loss_scale.state_dict()}, folder / "engine.pt")

    def load(self, folder: Path) -> None:
        state = torch.load(folder / "engine.pt", map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "loss_scale" in state:
            self.loss_scale.load_state_dict(state["loss_scale"])

    def full_state_dict(self) -> dict[str, torch.Tensor]:
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
        config = deepspeed_config(precision, grad_clip, micro_batch, grad_accum, world_size, zero_stage,
                                  sum(p.numel() for p in model.parameters()), extra_config or {})
        self.ds, self.optimizer, _, _ = deepspeed.initialize(model=model.to(device), optimizer=optimizer, config=config)
        self.model = self.ds.module
        # DeepSpeed would unpickle its checkpoint files with weights_only=False: a file planted in a
        # shared cache could run code. Every file it reads goes through `load_without_code` instead.
        self.ds.checkpoint_engine.load = load_without_code

    def compute_context(self):
        """For calls of the module outside DeepSpeed's forward (probes): its autocast, if any."""
        return autocast(self.device, self.precision) if self.precision == "bf16" else contextlib.nullcontext()

    def forward_backward(self, input_ids: torch.Tensor, labels: torch.Tensor, last_micro_batch: bool) -> torch.Tensor:
        if self.zero_stage < 3:  # through DeepSpeed's forward: it hooks the backward of its output
            loss = self.ds(input_ids, labels)
        else:
            loss = token_loss(self.ds(input_ids), labels)
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

    def loss_scale_state(self) -> dict | None:
        if self.precision != "fp16":
            return None
        scaler = getattr(self.optimizer, "loss_scaler", None)
        return {"scale": float(getattr(scaler, "cur_scale", float("nan"))), "skipped_steps": int(self.ds.skipped_steps)}

    def save(self, folder: Path, rank: int) -> None:
        self.ds.save_checkpoint(str(folder), tag=self.CHECKPOINT_TAG)  # collective: every rank writes its shard

    def load(self, folder: Path) -> None:
        path, _ = self.ds.load_checkpoint(str(folder), tag=self.CHECKPOINT_TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=False)
        if path is None:
            raise UserError(f"{folder}: no DeepSpeed checkpoint inside; delete this folder to restart from the previous checkpoint")

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """fp32 weights of the whole model. A collective: every rank calls it. With fp32 weights
        (fp32, bf16 autocast) and ZeRO-1/2 the module holds them whole; otherwise they are gathered
        from the optimizer's fp32 master partitions (exact, unlike an fp16 module's copy)."""
        if self.precision in ("fp32", "bf16") and self.zero_stage < 3:
            return {k: v.detach().float().cpu() for k, v in self.model.state_dict().items()}
        from deepspeed.utils import safe_get_full_fp32_param

        return {name: safe_get_full_fp32_param(param).detach().float().cpu()
                for name, param in self.model.named_parameters()}


# The only objects other than tensors and plain containers that DeepSpeed writes into the
# checkpoints of this trainer (ZeRO-1/2; fp32, bf16 autocast, fp16): inert records of its state.
DEEPSPEED_CHECKPOINT_CLASSES = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def load_without_code(path, map_location=None):
    """torch.load(weights_only=True) of a DeepSpeed checkpoint file, allowing only the classes
    above: a file that names any other class or function is refused before anything in it runs."""
    found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    foreign = sorted(set(found) - set(DEEPSPEED_CHECKPOINT_CLASSES))
    if foreign:
        raise UserError(f"{path}: refused to unpickle: it names {', '.join(foreign)}, which no checkpoint of this "
                        f"trainer holds; delete {Path(path).parent.parent} to resume from the previous checkpoint")
    classes = []
    for name in found:
        module, _, attribute = name.rpartition(".")
        classes.append(getattr(importlib.import_module(module), attribute))
    with torch.serialization.safe_globals(classes):
        return torch.load(path, map_location=map_location, weights_only=True)


def deepspeed_config(precision: str, grad_clip: float, micro_batch: int, grad_accum: int, world_size: int,
                     zero_stage: int, num_params: int, extra: dict) -> dict:
    """The DeepSpeed config of our recipe; `extra` (trainer.deepspeed) is merged last."""
    bucket = int(min(5e8, num_params))
    config = {
        "train_batch_size": micro_batch * grad_accum * world_size,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": grad_clip,
        # DeepSpeed's buckets default to 5e8 elements; a bucket larger than the model only costs
        # allocation time (seconds per step on CPU), so cap them at the model's size.
        "zero_optimization": {"stage": zero_stage, "reduce_bucket_size": bucket, "allgather_bucket_size": bucket},
        # bf16 as the torch engine runs it: autocast over the fp32 module; no module class is
        # "lower-precision safe", so every gradient is reduced in fp32 (DeepSpeed's default list
        # would reduce Linear gradients in bf16)
        "torch_autocast": {"enabled": precision == "bf16", "dtype": "bfloat16", "lower_precision_safe_modules": []},
        "fp16": {"enabled": precision == "fp16", **PYTHIA_FP16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if precision == "fp16":
        # Sum micro-batch gradients in fp32, as the torch engine does; DeepSpeed's default is the
        # module's dtype. (bf16 and fp32 modules are fp32: their gradients are fp32 already.)
        config["data_types"] = {"grad_accum_dtype": "fp32"}
    return _merge(config, extra)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
