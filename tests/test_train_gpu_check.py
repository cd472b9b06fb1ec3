"""benchmarks/gpu_check.sh: skips cleanly without CUDA, and its --dry-run runs every measurement
(trainer, transformers step, DeepSpeed engine, evaluation) with tiny shapes on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT_ROOT / "benchmarks" / "gpu_check.sh"


def run_check(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_without_cuda_it_skips_in_one_line(tmp_path):
    result = run_check("--out", str(tmp_path / "gpu.json"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0
    assert result.stdout.strip().splitlines() == ["gpu_check: skipped: no CUDA device visible to torch "
                                                  "(--dry-run runs tiny shapes on CPU)"]
    assert not (tmp_path / "gpu.json").exists()


def test_bad_arguments_are_one_line_errors(tmp_path):
    result = run_check("--frobnicate")
    assert result.returncode == 2 and result.stderr.strip().startswith("error: gpu_check.sh: unknown argument")
    result = run_check("--dry-run", "--wheels", str(tmp_path / "absent"), env={"PYTHON": "/nonexistent/python"})
    assert result.returncode == 2 and "cannot import torch" in result.stderr


@pytest.mark.slow
def test_dry_run_measures_every_item_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    result = run_check("--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    assert results["dry_run"] is True and results["device"].startswith("cpu")
    items = results["items"]
    for key in ("trainer_tiny", "transformers_tiny", "deepspeed_tiny"):
        assert items[key].get("tokens_per_s", 0) > 0, items[key]
    assert items["trainer_tiny"]["steps_measured"] == 6 and items["trainer_tiny"]["setup"]["micro_batch"] == 8
    assert items["deepspeed_tiny"]["setup"]["engine"] == "deepspeed"
    if (SHARED_DATA / "lambada").exists():
        assert items["evaluate_tiny"]["seconds"] > 0 and items["evaluate_tiny"]["n"]["crows_pairs"] == 262
    assert "deepspeed_vs_torch" in results["targets"]
    assert f"wrote {out}" in result.stdout


@pytest.mark.slow
def test_the_budget_bounds_the_whole_check_and_names_what_it_left_out(tmp_path):
    """--budget covers the script from its first line: a budget too short for every item ends on
    time, with each item left out recorded as skipped (so the default, 460 s, ends within 8 minutes)."""
    out, budget = tmp_path / "gpu.json", 30  # the four tiny items take ~45 s on 2 cores
    started = time.monotonic()
    result = run_check("--dry-run", "--budget", str(budget), "--out", str(out))
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed <= budget + 5, f"{elapsed:.1f} s for a budget of {budget} s"
    items = json.loads(out.read_text())["items"]
    assert set(items) == {"trainer_tiny", "transformers_tiny", "deepspeed_tiny", "evaluate_tiny"}
    left_out = [key for key, item in items.items()
                if "time budget" in item.get("skipped", "") or "timed out" in item.get("error", "")]
    assert left_out and all(key in left_out or items[key].get("wall_seconds") for key in items), items
    refused = run_check("--dry-run", "--budget", "soon")
    assert refused.returncode == 2 and refused.stderr.strip() == \
        "error: gpu_check.sh: --budget soon: give whole seconds, e.g. --budget 460"
