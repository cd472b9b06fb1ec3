"""The train loop: one function that composes data, engine, checkpoints and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from debias.train.config import TrainerConfig, TrainJob


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def run_training(job: TrainJob, trainer_cfg=None, run_dir: str | Path = ".", on_batch: Callable | None = None) -> dict:
    """Train `job` in this process (one rank of a launch when torch.distributed env vars are set).

    Resumes from the newest checkpoint in `<run_dir>/checkpoints` when one exists for the same
    job; refuses (UserError) a run dir holding another configuration's checkpoints.
    `on_batch(step, input_ids, labels)` is called with every micro-batch fed to the model (tests
    use it to check what treatment and control arms consumed).
    Returns the summary dict also written to `<run_dir>/summary.json`.
    """
    raise NotImplementedError("being written (issue 5)")
