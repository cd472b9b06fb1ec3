"""Launch a training job in this process or as torchrun / deepspeed worker processes."""

from __future__ import annotations

from pathlib import Path

from debias.train.config import TrainerConfig, TrainJob


def launch_training(job: TrainJob, trainer_cfg=None, run_dir: str | Path = ".") -> dict:
    """Run `job` and return its summary.

    One process (engine torch, or deepspeed with nproc_per_node = nnodes = 1 is still launched
    in-process) runs here; otherwise the job spec is written to `<run_dir>/train_job.json` and
    `torchrun --nproc_per_node N -m debias.train <run_dir>/train_job.json` (or the `deepspeed`
    launcher with `hostfile` for several nodes) is spawned and waited for.
    """
    raise NotImplementedError("being written (issue 5)")
