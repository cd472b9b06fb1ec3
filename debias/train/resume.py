"""Resumable checkpoints in `<run_dir>/checkpoints/step<N>/` (N = steps the model has seen).

A checkpoint holds what the engine owns (model, optimizer, loss scaler; DeepSpeed shards for
that engine), every rank's RNG states, and `meta.json` (step, data position, run fingerprint).
It is written under a temporary name and renamed into place when complete, so a job killed at any
moment leaves either the whole checkpoint or none. (`debias.io.atomic_output` names its temporary
after the process id; here every rank writes into one shared folder, so the name is fixed.)

The run dir is claimed by `train_job.json`, which records the job, the trainer settings and their
fingerprint. A run dir claimed by another configuration is refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from debias.cache import check_files, file_records
from debias.errors import UserError
from debias.io import sha256_json, write_json_atomic

CHECKPOINTS = "checkpoints"
JOB_RECORD = "train_job.json"
_STEP_DIR = re.compile(r"^step(\d+)$")
log = logging.getLogger("debias.train")

# Settings that change what is trained. Cadence, logging and launch details are left out, so a run
# can be resumed with other checkpoint/log settings or extended to a later end_step.
_JOB_KEYS_NOT_FINGERPRINTED = {"end_step", "save_hf_at_steps", "hf_dir", "tokenizer"}
_TRAINER_KEYS_FINGERPRINTED = {"engine", "precision", "micro_batch", "grad_accum", "allow_batch_override",
                               "optimizer", "grad_clip", "optimizer_state", "adam_warmup_steps", "zero_stage",
                               "deepspeed"}


def fingerprint(job: dict, trainer: dict, world_size: int) -> str:
    what = {k: v for k, v in job.items() if k not in _JOB_KEYS_NOT_FINGERPRINTED}
    how = {k: v for k, v in trainer.items() if k in _TRAINER_KEYS_FINGERPRINTED}
    if how.get("optimizer_state", "fresh") != "warmup":  # the warm-up's length matters only when it runs
        how.pop("adam_warmup_steps", None)
    return sha256_json({"job": what, "trainer": how, "world_size": world_size})


def claim_run_dir(run_dir: Path, record: dict) -> None:
    """Write `train_job.json`, or check that the run dir already belongs to this configuration."""
    path = run_dir / JOB_RECORD
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = {}
        if previous.get("fingerprint") != record["fingerprint"]:
            raise UserError(
                f"{run_dir}: holds a training run of another configuration (fingerprint "
                f"{str(previous.get('fingerprint'))[:12]} != {record['fingerprint'][:12]}, see {path}); "
                "use a new run dir, or delete this one to start over"
            )
        if previous == record:
            return
    elif any(checkpoint_dirs(run_dir)):
        raise UserError(f"{run_dir}: holds checkpoints without {JOB_RECORD}; use a new run dir or delete it")
    write_json_atomic(path, record)


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (a folder is complete once its meta.json exists)."""
    root = run_dir / CHECKPOINTS
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / "meta.json").is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint whose files still match what was saved (a damaged one is
    skipped with a warning, and training resumes from the one before it, or from the start)."""
    for step, folder in reversed(checkpoint_dirs(run_dir)):
        try:
            recorded = json.loads((folder / "meta.json").read_text()).get("files", {})
        except ValueError:
            recorded, problems = {}, ["meta.json: unreadable"]
        else:
            problems = check_files(folder, recorded)
        if not problems:
            return step, folder
        log.warning("checkpoint %s is damaged (%s); not resuming from it", folder, problems[0])
    return None


def rng_state() -> dict:
    """Every RNG a run may draw from, as tensors and plain values (loadable with weights_only)."""
    name, keys, *rest = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), *rest),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, engine, meta: dict, rank: int, barrier: Callable[[], None],
                    keep_last: int) -> Path:
    """Every rank calls this (DeepSpeed saves collectively); rank 0 publishes and prunes."""
    root = run_dir / CHECKPOINTS
    final = root / f"step{step}"
    partial = root / f".step{step}.partial"
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)  # left by a job killed while saving
        partial.mkdir(parents=True)
    barrier()
    engine.save(partial, rank)
    torch.save(rng_state(), partial / f"rng_rank{rank}.pt")
    barrier()
    if rank == 0:  # the files' sizes and hashes (sampled over 1 GiB), re-checked before a resume
        write_json_atomic(partial / "meta.json", {**meta, "step": step, "saved_at": time.time(),
                                                  "files": file_records(partial, skip={"meta.json"}, whole=False)})
        if final.exists():  # re-saving the same step (e.g. a job extended past its old end)
            shutil.rmtree(final)
        partial.rename(final)
        for _, old in checkpoint_dirs(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{folder / 'meta.json'}: unreadable ({err}); delete {folder} to resume from the previous checkpoint") from None


def load_checkpoint(folder: Path, engine, rank: int, expected_fingerprint: str) -> dict:
    meta = read_meta(folder)
    if meta.get("fingerprint") != expected_fingerprint:
        raise UserError(f"{folder}: checkpoint of another configuration; use a new run dir or delete this one")
    engine.load(folder)
    rng_file = folder / f"rng_rank{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=True))
    return meta
