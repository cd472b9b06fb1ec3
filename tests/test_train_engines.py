"""debias.train across processes: DeepSpeed ZeRO-1 on 2 CPU processes (torchrun, gloo) follows the
single-process torch engine's loss curve; a job killed with SIGKILL and rerun ends bitwise equal
to an uninterrupted one."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import BATCH, random_rows, tiny_job, write_stream

from debias.cache import file_records
from debias.errors import UserError
from debias.train import TrainJob, launch_training
from debias.train.config import TrainerConfig
from debias.train.resume import claim_run_dir, fingerprint, latest_checkpoint

PROJECT_ROOT = Path(__file__).resolve().parents[1]
QUIET = TrainerConfig(progress=False, tensorboard=False)


@pytest.fixture(autouse=True)
def cpu_workers(monkeypatch):
    """Workers run on CPU with one thread each (2 shared cores), whatever the machine has."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def stream(tmp_path) -> str:
    return write_stream(tmp_path / "stream" / "document", random_rows(BATCH * 8, seed=3))


def job_for(stream: str, **overrides) -> TrainJob:
    return tiny_job(stream, **{"end_step": 5, "total_steps": 10, "warmup_steps": 1, "seed": 11, **overrides})


def losses(run_dir: Path, key: str = "loss") -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r[key] for r in map(json.loads, lines) if r["phase"] == "train"]


def grad_norms(run_dir: Path) -> list[float]:
    return losses(run_dir, "grad_norm")


@pytest.mark.slow
def test_deepspeed_two_processes_match_the_torch_engine(stream, tmp_path):
    single = launch_training(job_for(stream), replace(QUIET, engine="torch", micro_batch=2), tmp_path / "torch")
    # 2 ranks x micro-batch 2 x grad_accum 2: the same global batch of 8 rows
    distributed = launch_training(job_for(stream), replace(QUIET, engine="deepspeed", zero_stage=1,
                                                    nproc_per_node=2, micro_batch=2), tmp_path / "ds")
    assert distributed["world_size"] == 2 and distributed["grad_accum"] == 2 and single["grad_accum"] == 4
    reference, curve = losses(tmp_path / "torch"), losses(tmp_path / "ds")
    assert len(curve) == len(reference) == 5
    np.testing.assert_allclose(curve, reference, rtol=1e-4, atol=0)
    np.testing.assert_allclose(grad_norms(tmp_path / "ds"), grad_norms(tmp_path / "torch"), rtol=1e-4, atol=0)
    assert reference[-1] != reference[0]  # the model did train
    # The DeepSpeed run's Hugging Face folder holds its trained weights. Elementwise they agree with the
    # torch run only to about one Adam step (lr): where a gradient is ~0, Adam turns rounding noise of the
    # gradient all-reduce into a full-size step of either sign.
    ours, theirs = (load_file(str(tmp_path / d / "model" / "model.safetensors")) for d in ("torch", "ds"))
    for key in ours:
        torch.testing.assert_close(theirs[key], ours[key], rtol=0, atol=2 * 3e-3)
    assert (tmp_path / "ds" / "checkpoints" / "step5" / "deepspeed").is_dir()


def read_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_rerun_is_bitwise_equal(stream, tmp_path):
    job = job_for(stream, end_step=7)
    trainer = replace(QUIET, micro_batch=4, checkpoint_every=1, keep_last=2)
    launch_training(job, trainer, tmp_path / "whole")  # in this process, one thread like the worker

    killed = tmp_path / "killed"
    claim_run_dir(killed, {"fingerprint": fingerprint(job.to_dict(), trainer.to_dict(), 1),
                           "job": job.to_dict(), "trainer": trainer.to_dict(), "world_size": 1})
    command = [sys.executable, "-m", "debias.train", str(killed / "train_job.json")]
    kill_after = random.Random().randint(1, 5)  # steps completed before SIGKILL
    worker = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while read_steps(killed) < kill_after and worker.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert not (killed / "model").exists(), f"killed after {kill_after} steps, but it had finished"

    subprocess.run(command, check=True, cwd=PROJECT_ROOT, capture_output=True)  # the same command again
    whole, resumed = (load_file(str(d / "model" / "model.safetensors")) for d in (tmp_path / "whole", killed))
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), f"differs after a kill at step {kill_after}"
    assert losses(tmp_path / "whole") == losses(killed)


def assert_engines_agree(reference_dir: Path, other_dir: Path, lr: float, loss_rtol: float) -> None:
    np.testing.assert_allclose(losses(other_dir), losses(reference_dir), rtol=loss_rtol, atol=0)
    ours, theirs = (load_file(str(d / "model" / "model.safetensors")) for d in (reference_dir, other_dir))
    for key in ours:  # the fp32 case's tolerance: one Adam step of either sign (see above)
        torch.testing.assert_close(theirs[key], ours[key], rtol=0, atol=2 * lr)


def test_bf16_engines_are_one_recipe_in_one_process(stream, tmp_path):
    """bf16 in both engines is autocast over fp32 weights with fp32 gradients: on the same layout
    the DeepSpeed engine follows the torch engine to round-off."""
    settings = replace(QUIET, precision="bf16", micro_batch=2)
    torch_run = launch_training(job_for(stream), replace(settings, engine="torch"), tmp_path / "torch")
    had_port = "MASTER_PORT" in os.environ
    ds_run = launch_training(job_for(stream), replace(settings, engine="deepspeed"), tmp_path / "ds")
    assert ("MASTER_PORT" in os.environ) == had_port  # a later child process must not inherit the rendezvous
    assert torch_run["precision"] == ds_run["precision"] == "bf16" and ds_run["loss_scale"] is None
    np.testing.assert_allclose(losses(tmp_path / "ds"), losses(tmp_path / "torch"), rtol=1e-6, atol=0)
    ours, theirs = (load_file(str(tmp_path / d / "model" / "model.safetensors")) for d in ("torch", "ds"))
    for key in ours:
        torch.testing.assert_close(theirs[key], ours[key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_bf16_deepspeed_two_processes_agree_with_torch_to_the_fp32_tolerance(stream, tmp_path):
    settings = replace(QUIET, precision="bf16", micro_batch=2)
    launch_training(job_for(stream), replace(settings, engine="torch"), tmp_path / "torch")
    distributed = launch_training(job_for(stream), replace(settings, engine="deepspeed", nproc_per_node=2),
                                  tmp_path / "ds")
    assert distributed["world_size"] == 2 and distributed["precision"] == "bf16"
    assert_engines_agree(tmp_path / "torch", tmp_path / "ds", lr=3e-3, loss_rtol=1e-3)


def test_deepspeed_resume_never_unpickles_a_planted_file(stream, tmp_path, caplog):
    """DeepSpeed's own loader unpickles with weights_only=False; ours refuses any file that names a
    class or function a checkpoint of this trainer never holds, before any of it runs."""
    settings = replace(QUIET, engine="deepspeed", micro_batch=4, checkpoint_every=1)
    launch_training(job_for(stream, end_step=2), settings, tmp_path / "run")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    checkpoint = tmp_path / "run" / "checkpoints" / "step2"
    planted = checkpoint / "deepspeed" / "mp_rank_00_model_states.pt"
    assert planted.is_file()
    torch.save({"module": Payload()}, planted)
    # First line of defence: the file no longer matches the checkpoint's record, so it is not resumed from.
    with caplog.at_level(logging.WARNING, logger="debias.train"):
        assert latest_checkpoint(tmp_path / "run") is None or latest_checkpoint(tmp_path / "run")[0] != 2
    assert "is damaged" in caplog.text
    # Second: someone who can write the cache also rewrote the record; the loader still refuses the
    # file before any of it runs.
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta["files"] = file_records(checkpoint, skip={"meta.json"}, whole=False)
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="mp_rank_00_model_states.pt: refused to unpickle: it names io.open"):
        launch_training(job_for(stream, end_step=3), settings, tmp_path / "run")
    assert not marker.exists()
