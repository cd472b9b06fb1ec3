"""Choosing the micro-batch and activation checkpointing (`micro_batch: auto`,
`activation_checkpointing: auto`).

On a GPU the choice is measured, not guessed: one forward + backward at 1 and at 2 rows of the
real sequence length, under the run's precision, gives the peak memory of a step as
`fixed + rows * per_row` (the difference of the two peaks is what one more row costs; the rest is
weights, gradients and fixed temporaries), with and without activation checkpointing. Adding the
optimizer state the probe has not allocated yet, the micro-batch is the largest divisor of the
rank's rows whose step fits in the device's memory with a margin; checkpointing (about a third
more compute) is switched on only when not even one row fits without it. On CPU (tests, the
demo) the micro-batch is the largest divisor up to 8 and checkpointing is off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from debias.errors import UserError

log = logging.getLogger("debias.train")

CPU_MICRO_BATCH = 8          # a sane size for CPU runs: larger matmuls, bounded memory
MEMORY_MARGIN = 0.10         # of the device's memory, kept free: allocator fragmentation, NCCL, cuBLAS workspaces
MEMORY_RESERVE = 1 << 30     # and one GiB more
NEVER_FITS = 1 << 62         # the fixed cost recorded for a way that ran out of memory while measured


@dataclass(frozen=True)
class StepMemory:
    """Peak bytes of one forward + backward: fixed + rows * per_row, for each checkpointing choice."""

    fixed: dict[bool, int]      # {checkpointing: bytes} weights, gradients, fixed temporaries
    per_row: dict[bool, int]    # {checkpointing: bytes} activations and their gradients per row
    optimizer: int              # optimizer state the probe did not allocate (Adam moments, ZeRO buffers)
    budget: int                 # bytes the step may use on this device

    def fits(self, rows: int, checkpointing: bool) -> bool:
        return self.fixed[checkpointing] + self.optimizer + rows * self.per_row[checkpointing] <= self.budget


@dataclass(frozen=True)
class MicroBatchChoice:
    micro_batch: int
    activation_checkpointing: bool
    reason: str  # one line: how the choice was made


def divisors(n: int) -> list[int]:
    """Every divisor of n, largest first."""
    return sorted((d for d in range(1, n + 1) if n % d == 0), reverse=True)


def choose_micro_batch(rows_per_rank: int, micro_batch, checkpointing, memory: StepMemory | None) -> MicroBatchChoice:
    """Resolve `micro_batch` / `activation_checkpointing` settings ("auto", or a value) for a rank
    that trains `rows_per_rank` rows per step. `memory` None: no measurement (CPU)."""
    candidates = divisors(rows_per_rank)
    if memory is None:
        rows = micro_batch if micro_batch != "auto" else next(d for d in candidates if d <= CPU_MICRO_BATCH)
        return MicroBatchChoice(rows, checkpointing is True, "cpu default" if micro_batch == "auto" else "set")

    def largest_fitting(ckpt: bool) -> int | None:
        return next((d for d in candidates if memory.fits(d, ckpt)), None)

    if micro_batch != "auto":
        ckpt = checkpointing if checkpointing != "auto" else not memory.fits(micro_batch, False)
        if not memory.fits(micro_batch, ckpt):
            log.warning("micro_batch=%d may not fit in GPU memory (estimated %.1f GiB of %.1f); lower it or use "
                        "micro_batch=auto", micro_batch, estimate(memory, micro_batch, ckpt) / 2**30, memory.budget / 2**30)
        return MicroBatchChoice(micro_batch, ckpt, "set")
    choices = [checkpointing] if checkpointing != "auto" else [False, True]
    for ckpt in choices:
        rows = largest_fitting(ckpt)
        if rows is not None:
            return MicroBatchChoice(rows, ckpt, f"largest divisor of {rows_per_rank} rows that fits: "
                                    f"~{estimate(memory, rows, ckpt) / 2**30:.1f} of {memory.budget / 2**30:.1f} GiB")
    need = ("more than the GPU holds" if memory.fixed[True] >= NEVER_FITS
            else f"~{estimate(memory, 1, True) / 2**30:.1f} GiB")
    raise UserError(f"trainer.micro_batch=auto: not even one row fits in GPU memory ({memory.budget / 2**30:.1f} GiB "
                    f"usable, one row needs {need} with activation checkpointing); use more GPUs with "
                    "trainer=deepspeed (ZeRO shards the optimizer state; zero_stage=2 also the gradients) or a larger GPU")


def estimate(memory: StepMemory, rows: int, checkpointing: bool) -> int:
    return memory.fixed[checkpointing] + memory.optimizer + rows * memory.per_row[checkpointing]


def measure_step_memory(model, seq_len: int, compute_context, device: torch.device, optimizer_bytes: int) -> StepMemory:
    """Measure a CUDA step's memory (see the module docstring); the model is on `device`."""
    fixed, per_row = {}, {}
    previous = model.gradient_checkpointing
    try:
        for ckpt in (False, True):
            model.gradient_checkpointing = ckpt
            peaks = []
            try:
                for rows in (1, 2):
                    model.zero_grad(set_to_none=True)
                    torch.cuda.synchronize(device)
                    torch.cuda.reset_peak_memory_stats(device)
                    ids = torch.zeros((rows, seq_len), dtype=torch.long, device=device)
                    with compute_context():
                        loss = model(ids, ids)
                    loss.backward()
                    del loss
                    peaks.append(torch.cuda.max_memory_allocated(device))
            except torch.cuda.OutOfMemoryError:  # two rows do not fit this way: it is never chosen
                model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                fixed[ckpt], per_row[ckpt] = NEVER_FITS, 1
                continue
            per_row[ckpt] = max(peaks[1] - peaks[0], 1)
            fixed[ckpt] = peaks[0] - per_row[ckpt]
    finally:
        model.gradient_checkpointing = previous
        model.zero_grad(set_to_none=True)
    free, total = torch.cuda.mem_get_info(device)
    # CUDA counts what torch's caching allocator holds as used; all of it is ours to fill (the
    # weights, counted in `fixed`, and the blocks the probe freed, which training reuses)
    ours = torch.cuda.memory_reserved(device)
    budget = int(min(free + ours, total) - MEMORY_MARGIN * total - MEMORY_RESERVE)
    return StepMemory(fixed=fixed, per_row=per_row, optimizer=optimizer_bytes, budget=budget)


def optimizer_state_bytes(num_params: int, engine: str, precision: str, world_size: int) -> int:
    """Bytes the probe's fp32-weights step does not hold yet: Adam's two fp32 moments (torch), or
    DeepSpeed's: fp32 master weights and moments sharded over ranks (fp32 and bf16-autocast
    modules), for fp16 also the fp16 module and gradients and the fp32 accumulation buffer,
    minus the fp32 weights and gradients the probe held."""
    if engine == "torch":
        return 8 * num_params
    if precision in ("fp32", "bf16"):
        return 12 * num_params // world_size
    half_module = (2 + 2 + 4) * num_params + 12 * num_params // world_size
    return max(half_module - 8 * num_params, 0)
