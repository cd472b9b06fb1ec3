"""The cost plan (debias.train.plan and `python -m debias.train plan`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from debias.errors import UserError
from debias.stream import Geometry, Window
from debias.train.plan import MEASURED, cost_plan, model_size, plan_table, projected_mfu

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def window_rows(ratio: float) -> int:
    return Window.from_ratio(Geometry(), ratio).num_rows


def test_a_measured_size_uses_its_measured_throughput_and_the_arithmetic_adds_up():
    size = model_size("pythia-1.4b")
    plan = cost_plan(size, 0.07, window_rows(0.07), 2048, gpus=8, device="H200")
    tokens_per_s, mfu, _ = MEASURED["H200"]["pythia-1.4b"]
    assert plan.tokens_per_arm == 10_240_000 * 2048  # 10,000 steps of 1024 rows, 2048 predictions each
    assert plan.tokens_per_s_per_gpu == tokens_per_s and plan.mfu == mfu and plan.basis.startswith("measured")
    assert plan.wall_hours_per_arm == pytest.approx(plan.tokens_per_arm / (8 * tokens_per_s) / 3600)
    assert plan.gpu_hours_per_arm == pytest.approx(8 * plan.wall_hours_per_arm)
    assert plan.gpu_hours_run == pytest.approx(2 * plan.gpu_hours_per_arm + 3 * plan.eval_hours)
    assert plan.wall_hours_run == pytest.approx(2 * plan.wall_hours_per_arm + 3 * plan.eval_hours)
    assert plan.zero_stage == 1 and not plan.activation_checkpointing
    longer = cost_plan(size, 0.21, window_rows(0.21), 2048, gpus=8)
    assert longer.gpu_hours_per_arm == pytest.approx(3 * plan.gpu_hours_per_arm)
    halved = cost_plan(size, 0.07, window_rows(0.07), 2048, gpus=4)
    assert halved.wall_hours_per_arm == pytest.approx(2 * plan.wall_hours_per_arm)


def test_projections_keep_the_measured_mfu_of_the_nearest_sizes():
    measured = MEASURED["H200"]
    mfu_1b, basis = projected_mfu(model_size("pythia-1b"), measured)
    assert measured["pythia-410m"][1] < mfu_1b < measured["pythia-1.4b"][1] and "between" in basis
    assert projected_mfu(model_size("pythia-6.9b"), measured)[0] == measured["pythia-1.4b"][1]
    assert projected_mfu(model_size("pythia-70m"), measured)[0] == measured["pythia-160m"][1]
    plan = cost_plan(model_size("pythia-6.9b"), 0.07, window_rows(0.07), 2048, gpus=8)
    size = model_size("pythia-6.9b")
    assert plan.tokens_per_s_per_gpu == pytest.approx(plan.mfu * 989e12 / size.flops_per_token)
    # 12b does not fit ZeRO-1's unsharded fp32 weights and gradients on 8 x 80 GB next to its activations
    big = cost_plan(model_size("pythia-12b"), 0.07, window_rows(0.07), 2048, gpus=8, device="H100")
    assert big.zero_stage in (2, None)


def test_given_throughput_and_bad_values():
    size = model_size("pythia-160m")
    plan = cost_plan(size, 0.07, window_rows(0.07), 2048, gpus=1, tokens_per_s=1e5)
    assert plan.basis == "given" and plan.wall_hours_per_arm == pytest.approx(plan.tokens_per_arm / 1e5 / 3600)
    with pytest.raises(UserError, match="gpus=0"):
        cost_plan(size, 0.07, window_rows(0.07), 2048, gpus=0)
    with pytest.raises(UserError, match="device 'TPU' unknown"):
        cost_plan(size, 0.07, window_rows(0.07), 2048, gpus=1, device="TPU")
    assert "| pythia-160m | 7% | 21.0B |" in plan_table([plan])


def test_plan_command_prints_the_table_and_refuses_unknown_models_in_one_line():
    command = [sys.executable, "-m", "debias.train", "plan"]
    table = subprocess.run(command + ["--all", "--gpus", "8"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if line.startswith("| pythia-")]
    assert len(rows) == 14  # 160m, 410m, 1b, 1.4b, 2.8b, 6.9b, 12b x 7%, 21%
    bad = subprocess.run(command + ["--model", "pythia-3b"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: plan: model 'pythia-3b'")
    assert len(bad.stderr.strip().splitlines()) == 1
