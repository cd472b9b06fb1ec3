"""Launch a training job: in this process, or as torchrun / deepspeed worker processes.

One Hydra job is one launch: the job spec goes to `<run_dir>/train_job.json` (which also claims
the run dir), the launcher starts `python -m debias.train <run_dir>/train_job.json` once per rank,
and this waits for it. Several nodes: `launcher: deepspeed` with a DeepSpeed `hostfile`
("hostname slots=N" lines; it reaches the nodes over ssh/pdsh), or `launcher: torchrun` started on
every node by the scheduler (e.g. `srun`) with MASTER_ADDR/MASTER_PORT and NODE_RANK set.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from debias.errors import EXIT_BAD_INPUT, UserError
from debias.train.resume import JOB_RECORD, claim_run_dir, fingerprint
from debias.train.config import TrainerConfig, TrainJob
from debias.train.loop import EXIT_DIVERGED, TrainingDiverged, free_port, run_training

log = logging.getLogger("debias.train")


def launch_training(job: TrainJob, trainer_cfg: TrainerConfig | None = None, run_dir: str | Path = ".") -> dict:
    """Run `job` and return its summary (also in `<run_dir>/summary.json`).

    engine torch, or deepspeed with one process on one node: runs here, in-process.
    Otherwise spawns `torchrun --nproc_per_node N [--nnodes M ...] -m debias.train SPEC` (or
    `deepspeed [--hostfile H] --module debias.train SPEC`) and waits for it.
    """
    cfg = trainer_cfg or TrainerConfig()
    run_dir = Path(run_dir)
    if cfg.engine == "torch" or (cfg.world_size == 1 and not cfg.hostfile):
        if cfg.engine == "torch" and cfg.world_size > 1:
            raise UserError(f"trainer.engine=torch with nproc_per_node={cfg.nproc_per_node}, nnodes={cfg.nnodes}: "
                            "the torch engine runs one process; use trainer=deepspeed for several")
        return run_training(job, cfg, run_dir)

    spec = write_spec(job, cfg, run_dir)
    command = launch_command(cfg, spec)
    log.info("launching %s", " ".join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, env=env)
    if result.returncode == EXIT_BAD_INPUT:
        raise UserError(f"{spec}: the training workers refused their input (their error is printed above)")
    if result.returncode == EXIT_DIVERGED:
        raise TrainingDiverged(f"{spec}: training diverged (details above); the last good checkpoint is kept")
    if result.returncode != 0:
        raise RuntimeError(f"{spec}: training workers exited with code {result.returncode} (output above); "
                           "rerun the same command to resume from the last checkpoint")
    return json.loads((run_dir / "summary.json").read_text())


def write_spec(job: TrainJob, cfg: TrainerConfig, run_dir: Path) -> Path:
    """Claim the run dir with the job record; the workers read it back."""
    job_dict, cfg_dict = job.to_dict(), cfg.to_dict()
    record = {"fingerprint": fingerprint(job_dict, cfg_dict, cfg.world_size), "job": job_dict, "trainer": cfg_dict,
              "world_size": cfg.world_size}
    claim_run_dir(run_dir, record)
    return run_dir / JOB_RECORD


def launch_command(cfg: TrainerConfig, spec: Path) -> list[str]:
    if cfg.launcher == "deepspeed":
        # the module behind the `deepspeed` command, run by this interpreter (no reliance on PATH)
        command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus" if cfg.nnodes == 1 else "--num_nodes",
                   str(cfg.nproc_per_node if cfg.nnodes == 1 else cfg.nnodes)]
        if cfg.hostfile:
            command += ["--hostfile", str(cfg.hostfile)]
        command += ["--master_port", str(cfg.master_port or free_port())]
        return command + ["--module", "debias.train", str(spec)]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(cfg.nproc_per_node),
               "--nnodes", str(cfg.nnodes)]
    if cfg.nnodes == 1:
        command += ["--master_addr", "127.0.0.1", "--master_port", str(cfg.master_port or free_port())]
    else:  # every node runs this same command; the scheduler provides the rendezvous address and node rank
        node_rank = os.environ.get("NODE_RANK", os.environ.get("SLURM_NODEID"))
        if "MASTER_ADDR" not in os.environ or node_rank is None:
            raise UserError(f"trainer.nnodes={cfg.nnodes} with launcher=torchrun: set MASTER_ADDR and NODE_RANK "
                            "(or run under SLURM) on every node, or use launcher=deepspeed with a hostfile")
        command += ["--node_rank", node_rank, "--master_addr", os.environ["MASTER_ADDR"],
                    "--master_port", str(cfg.master_port or os.environ.get("MASTER_PORT", 29500))]
    return command + ["-m", "debias.train", str(spec)]
