"""What to train (`TrainJob`) and how to train it (`TrainerConfig`).

A `TrainJob` is the science: which model, which rows, which schedule. Treatment and control arms
are the same `TrainJob` except for `stream`/`first_row`. A `TrainerConfig` is the machinery
(engine, precision, micro-batching, checkpoint cadence), read from `conf/trainer/*.yaml`.
Both are plain JSON-able dataclasses, so a launcher can hand them to worker processes in a file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from debias.errors import UserError


@dataclass
class TrainJob:
    """Continue `init` on rows of `stream` for global steps [start_step, end_step).

    init: a Hugging Face GPT-NeoX folder, or a model configuration (`GPTNeoXConfig` or its HF
        dict) for a random initialisation seeded by `seed` (pretraining from step 0).
    stream: prefix of the stream holding the window's rows (`IndexedStream` path).
    first_row: row index in `stream` of the first row of step `start_step`. The rewriter returns
        `(RewriteResult.stream, RewriteResult.first_row)`; the control arm passes the original
        stream and `window.start_row`. Step s reads rows
        [first_row + (s - start_step) * batch_size, ... + batch_size).
    start_step / end_step: global Pythia steps; the model at `init` has seen steps < start_step.
    init_step: the step of the checkpoint the caller loaded into `init` (e.g. 133000 for
        revision `step133000`); when given it must equal `start_step`.
    batch_size / row_length: the stream geometry (1024 rows of 2049 tokens for Pythia).
    peak_lr, total_steps, warmup_steps, min_lr_ratio: the schedule (see `schedule.lr_at`).
    tokenizer: tokenizer.json copied into the final Hugging Face folder.
    save_hf_at_steps: also save the model as a Hugging Face folder `<hf_dir>/step<N>/` after
        N steps have been seen (N in (start_step, end_step]); `step<start_step>` saves `init`.
    hf_dir: where those folders go (default `<run_dir>/checkpoints_hf`).
    gelu: "tanh" (how Pythia trained) or "exact" overrides the folder's activation; None keeps it.
    """

    init: Any
    stream: str
    first_row: int
    start_step: int
    end_step: int
    peak_lr: float
    batch_size: int = 1024
    row_length: int = 2049
    total_steps: int = 143_000
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    seed: int = 1234
    init_step: int | None = None
    tokenizer: str | None = None
    save_hf_at_steps: list[int] = field(default_factory=list)
    hf_dir: str | None = None
    gelu: str | None = None

    def __post_init__(self) -> None:  # accept Paths; the job must stay JSON-able for worker processes
        if isinstance(self.init, os.PathLike):
            self.init = str(self.init)
        for name in ("stream", "tokenizer", "hf_dir"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, str(getattr(self, name)))

    @classmethod
    def for_window(cls, init, stream: str, first_row: int, window, geometry, peak_lr: float, **kw) -> "TrainJob":
        """The job for a `debias.stream.Window` under a `Geometry`."""
        return cls(
            init=init, stream=str(stream), first_row=int(first_row),
            start_step=window.start_step, end_step=window.end_step,
            batch_size=geometry.batch_size, row_length=geometry.row_length,
            total_steps=geometry.total_steps, peak_lr=peak_lr, **kw,
        )

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if not isinstance(self.init, (str, dict)):  # a GPTNeoXConfig
            out["init"] = {"hf_config": self.init.to_hf_dict()}
        elif isinstance(self.init, dict) and "hf_config" not in self.init:
            out["init"] = {"hf_config": dict(self.init)}
        out["save_hf_at_steps"] = sorted(int(s) for s in self.save_hf_at_steps)
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "TrainJob":
        return cls(**_known_fields(cls, data, "train job"))

    @property
    def num_steps(self) -> int:
        return self.end_step - self.start_step


OPTIMIZER_STATE_CHOICES = ("fresh", "warmup")  # or a path: see TrainerConfig.optimizer_state


@dataclass
class OptimizerConfig:
    """AdamW as in Pythia's recipe: no weight decay on LayerNorm weights and on biases."""

    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    decay_biases: bool = False            # GPT-NeoX (what Pythia ran) decays no bias; true decays linear biases

    def __post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"trainer.optimizer.betas={list(self.betas)!r}: two numbers in [0, 1), e.g. [0.9, 0.95]")
        if self.eps <= 0 or self.weight_decay < 0:
            raise UserError(f"trainer.optimizer: eps={self.eps} must be > 0 and weight_decay={self.weight_decay} >= 0")


@dataclass
class TrainerConfig:
    """How to train: engine and loop settings, the schema of the Hydra group `trainer` (conf/trainer/).

    Every default lives here; conf/trainer/*.yaml only override. Fields in `RESULT_NEUTRAL` change
    how a run is watched or launched, not what it computes: they stay out of `result_key()`, so a
    cached arm is reused when only they differ (e.g. trainer.progress=false).
    """

    engine: str = "torch"                 # torch | deepspeed (see trainer=deepspeed)
    device: str = "auto"                  # auto (cuda when available) | cpu | cuda | cuda:N
    # auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32 | fp16 = Pythia's own dynamic loss scaling
    # (initial 2^12, window 1000, hysteresis 2): the fidelity choice
    precision: str = "auto"
    micro_batch: Any = "auto"             # rows per forward/backward; auto = fill GPU memory (CPU: up to 8), dividing batch / world
    grad_accum: Any = "auto"              # auto = batch_size / (micro_batch * world_size); must divide exactly
    allow_batch_override: bool = False    # let micro_batch*grad_accum*world_size differ from the batch (logged loudly)
    checkpoint_every: int = 1000          # steps between resumable checkpoints (one is always written at the end)
    keep_last: int = 2                    # resumable checkpoints kept in <run_dir>/checkpoints
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    grad_clip: float = 1.0                # global gradient-norm clipping (0: none)
    optimizer_state: str = "fresh"        # fresh | warmup | path to GPT-NeoX ZeRO-1 shards (global_step<N>/, or its neox_import output)
    adam_warmup_steps: int = 20           # optimizer_state=warmup: zero-lr steps that warm Adam (20 = 1/(1-beta2))
    compile: Any = "auto"                 # torch.compile each block: auto = on CUDA, off on CPU | true | false
    activation_checkpointing: Any = "auto"  # auto = on only when the micro-batch would not fit in GPU memory otherwise
    log_every: int = 1                    # steps between metrics.jsonl lines
    tensorboard: bool = True              # also log to <run_dir>/tensorboard when tensorboard is installed
    peak_tflops: Any = "auto"             # device peak for MFU: auto = known GPUs (H100/H200/A100 dense bf16), none on CPU
    deterministic: Any = "auto"           # deterministic torch algorithms: auto = on for CPU
    progress: bool = True                 # tqdm progress bar
    check_token_ids: bool = True          # first scan the window's ids against the vocabulary (~1 min per 100 GB)
    # DeepSpeed (engine: deepspeed) and multi-process launch (torch with nproc_per_node > 1 goes through torchrun)
    zero_stage: int = 1                   # 1 (Pythia's recipe), 2 or 3
    nproc_per_node: int = 1               # processes (GPUs) per node
    nnodes: int = 1
    hostfile: str | None = None           # DeepSpeed hostfile ("host slots=N" lines) for several nodes (launcher: deepspeed)
    launcher: str = "torchrun"            # torchrun | deepspeed
    master_port: int | None = None        # None: a free port
    # extra DeepSpeed config keys, merged last, e.g. {zero_optimization: {overlap_comm: true}}
    deepspeed: dict = field(default_factory=dict)

    # Watching and launching, not computing: left out of result_key().
    RESULT_NEUTRAL: ClassVar[frozenset[str]] = frozenset({
        "checkpoint_every", "keep_last", "log_every", "tensorboard", "peak_tflops", "progress",
        "check_token_ids", "hostfile", "launcher", "master_port"})

    def __post_init__(self) -> None:
        if isinstance(self.optimizer, Mapping):  # e.g. read back from a train_job.json
            self.optimizer = OptimizerConfig(**_known_fields(OptimizerConfig, self.optimizer, "trainer.optimizer"))
        if isinstance(self.optimizer_state, os.PathLike):  # a Path is fine here; the record stays JSON-able
            self.optimizer_state = str(self.optimizer_state)
        self.validate()

    @classmethod
    def from_dict(cls, data: Mapping) -> "TrainerConfig":
        """Read back from `to_dict()` (the trainer record in train_job.json)."""
        return cls(**_known_fields(cls, data, "trainer config"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def result_key(self) -> dict:
        """The settings that determine the trained weights (a cache key): all but RESULT_NEUTRAL."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RESULT_NEUTRAL}

    def validate(self) -> None:
        choices = {"engine": ("torch", "deepspeed"), "precision": ("auto", "bf16", "fp16", "fp32"),
                   "launcher": ("torchrun", "deepspeed"), "zero_stage": (1, 2, 3)}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise UserError(f"trainer.{key}={getattr(self, key)!r}: not one of {list(allowed)}")
        for key in ("checkpoint_every", "keep_last", "log_every", "nproc_per_node", "nnodes"):
            if not _positive_int(getattr(self, key)):
                raise UserError(f"trainer.{key}={getattr(self, key)!r}: must be a positive integer")
        for key in ("micro_batch", "grad_accum"):
            if getattr(self, key) != "auto" and not _positive_int(getattr(self, key)):
                raise UserError(f"trainer.{key}={getattr(self, key)!r}: must be a positive integer or 'auto'")
        for key in ("compile", "activation_checkpointing"):
            if getattr(self, key) not in ("auto", True, False):
                raise UserError(f"trainer.{key}={getattr(self, key)!r}: must be true, false or auto")
        if isinstance(self.grad_clip, bool) or not isinstance(self.grad_clip, (int, float)) or not self.grad_clip >= 0:
            raise UserError(f"trainer.grad_clip={self.grad_clip!r}: must be a number >= 0 (Pythia: 1.0; 0 turns clipping off)")
        if isinstance(self.adam_warmup_steps, bool) or not isinstance(self.adam_warmup_steps, int) or self.adam_warmup_steps < 0:
            raise UserError(f"trainer.adam_warmup_steps={self.adam_warmup_steps!r}: must be an integer >= 0")
        if not isinstance(self.optimizer_state, (str, os.PathLike)) or not str(self.optimizer_state):
            raise UserError(f"trainer.optimizer_state={self.optimizer_state!r}: use fresh, warmup, or the path of "
                            "GPT-NeoX ZeRO-1 shards (a global_step<N> folder)")
        if self.optimizer_state == "warmup" and self.adam_warmup_steps < 1:
            raise UserError("trainer.optimizer_state=warmup with adam_warmup_steps=0: set trainer.adam_warmup_steps "
                            "to the number of zero-lr warm-up steps (e.g. 20)")
        if str(self.optimizer_state) not in OPTIMIZER_STATE_CHOICES and not os.path.isdir(os.path.expanduser(str(self.optimizer_state))):
            raise UserError(f"trainer.optimizer_state={self.optimizer_state}: neither fresh nor warmup, and no such folder; "
                            "give a GPT-NeoX checkpoint folder global_step<N>/ holding ZeRO-1 shards")
        if self.imports_optimizer_state and self.engine == "deepspeed":
            raise UserError(f"trainer.optimizer_state={self.optimizer_state} with trainer.engine=deepspeed: not supported "
                            "(ZeRO re-partitions the state); use trainer=default, or trainer.optimizer_state=fresh")

    @property
    def imports_optimizer_state(self) -> bool:
        """optimizer_state names shards to import (not fresh / warmup)."""
        return str(self.optimizer_state) not in OPTIMIZER_STATE_CHOICES

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _known_fields(cls, data: Mapping, what: str) -> dict:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(near)}?" if near else f"allowed: {', '.join(sorted(names))}"
            raise UserError(f"{what}: unknown key {key!r}; {hint}")
    return dict(data)
