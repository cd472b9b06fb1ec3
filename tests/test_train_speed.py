"""The trainer's speed choices on CPU: micro_batch=auto, activation checkpointing auto, the
compile fallback, fp16 loss scaling, the step prefetcher, and the non-finite-loss guard."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
import train_fixtures
from train_fixtures import BATCH, TINY, random_rows, write_stream

from debias.errors import UserError
from debias.model import GPTNeoX
from debias.stream import IndexedStream
from debias.train import TrainerConfig, TrainingDiverged, TrainJob, run_training
from debias.train.data import BatchLayout, StepPrefetcher, WindowBatches
from debias.train.engine import TorchEngine
from debias.train.memory import StepMemory, choose_micro_batch, divisors
from debias.train.optim import build_optimizer
from debias.train.precision import PYTHIA_FP16, DynamicLossScale

QUIET = TrainerConfig(progress=False, tensorboard=False)
pytestmark = pytest.mark.usefixtures("one_torch_thread")
GiB = 2**30


@pytest.fixture
def stream(tmp_path) -> str:
    return write_stream(tmp_path / "stream" / "document", random_rows(BATCH * 10, seed=0))


def tiny_job(stream: str, **overrides) -> TrainJob:
    return train_fixtures.tiny_job(stream, **{"end_step": 4, "total_steps": 10, "warmup_steps": 1, "seed": 3, **overrides})


# --- micro_batch=auto, activation_checkpointing=auto --------------------------------------------

def memory(budget_gib: float, per_row_gib: float, fixed_gib: float = 10.0, checkpointed_row_gib: float | None = None):
    per_row = {False: int(per_row_gib * GiB), True: int((checkpointed_row_gib or per_row_gib / 8) * GiB)}
    return StepMemory(fixed={False: int(fixed_gib * GiB), True: int(fixed_gib * GiB)}, per_row=per_row,
                      optimizer=int(4 * GiB), budget=int(budget_gib * GiB))


# (recipe batch, world size): Pythia's 1024 on 1, 8 and 32 GPUs, odd-sized batches, a tiny one
GEOMETRIES = [(1024, 1), (1024, 8), (1024, 32), (768, 3), (1000, 8), (96, 12), (7, 1), (2, 2)]


@pytest.mark.parametrize("batch, world", GEOMETRIES)
@pytest.mark.parametrize("budget_gib, per_row_gib", [(80, 0.7), (141, 3.8), (40, 3.8), (24, 9.0), (15.5, 3.0)])
def test_auto_micro_batch_divides_the_batch_and_is_the_largest_that_fits(batch, world, budget_gib, per_row_gib):
    rows_per_rank = batch // world
    step_memory = memory(budget_gib, per_row_gib)
    choice = choose_micro_batch(rows_per_rank, "auto", "auto", step_memory)
    assert rows_per_rank % choice.micro_batch == 0
    layout = BatchLayout.resolve(batch, choice.micro_batch, "auto", world, False)
    assert layout.rows_per_step == batch  # the recipe's batch, exactly
    assert step_memory.fits(choice.micro_batch, choice.activation_checkpointing)
    larger = [d for d in divisors(rows_per_rank) if d > choice.micro_batch]
    assert not any(step_memory.fits(d, choice.activation_checkpointing) for d in larger)
    # checkpointing only when not even one row fits without it
    assert choice.activation_checkpointing == (not step_memory.fits(1, False))


def test_checkpointing_switches_on_only_when_needed_and_nothing_fitting_is_one_line():
    assert choose_micro_batch(1024, "auto", "auto", memory(80, 8)).activation_checkpointing is False
    tight = choose_micro_batch(1024, "auto", "auto", memory(20, 8, checkpointed_row_gib=1))
    assert tight.activation_checkpointing is True and tight.micro_batch == 4  # 10 + 4 + 4 * 1 <= 20 < 10 + 4 + 8
    assert choose_micro_batch(1024, 16, "auto", memory(20, 8, checkpointed_row_gib=0.3)).activation_checkpointing
    assert choose_micro_batch(1024, "auto", False, memory(200, 8)).micro_batch == 16
    with pytest.raises(UserError, match="not even one row fits in GPU memory"):
        choose_micro_batch(1024, "auto", "auto", memory(12, 8, checkpointed_row_gib=1))


@pytest.mark.parametrize("rows, expected", [(1024, 8), (128, 8), (12, 6), (9, 3), (7, 7), (1, 1)])
def test_cpu_default_is_the_largest_divisor_up_to_eight(rows, expected):
    choice = choose_micro_batch(rows, "auto", "auto", None)
    assert (choice.micro_batch, choice.activation_checkpointing) == (expected, False)


def test_trainer_resolves_auto_and_records_the_choice(stream, tmp_path):
    summary = run_training(tiny_job(stream), QUIET, tmp_path / "auto")
    assert (summary["micro_batch"], summary["grad_accum"]) == (8, 1)
    assert summary["activation_checkpointing"] is False and summary["compile"] == "off"
    fixed = run_training(tiny_job(stream), replace(QUIET, grad_accum=4), tmp_path / "accum")
    assert (fixed["micro_batch"], fixed["grad_accum"]) == (2, 4)
    with pytest.raises(UserError, match="grad_accum=3 does not divide the 8 rows"):
        run_training(tiny_job(stream), replace(QUIET, grad_accum=3), tmp_path / "bad")


def test_activation_checkpointing_trains_the_same_weights(stream, tmp_path):
    plain = run_training(tiny_job(stream), replace(QUIET, activation_checkpointing=False), tmp_path / "plain")
    recomputed = run_training(tiny_job(stream), replace(QUIET, activation_checkpointing=True), tmp_path / "ckpt")
    assert recomputed["activation_checkpointing"] is True
    assert recomputed["final_loss"] == plain["final_loss"]


# --- compilation falls back with one log line -----------------------------------------------------

def test_failed_compilation_falls_back_to_eager_with_one_log_line(stream, tmp_path, monkeypatch, caplog):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler here")

    original = GPTNeoX.compile_blocks
    monkeypatch.setattr(GPTNeoX, "compile_blocks", lambda self: original(self, backend=broken_backend))
    with caplog.at_level(logging.WARNING, logger="debias.train"):
        summary = run_training(tiny_job(stream), replace(QUIET, compile=True), tmp_path / "fallback")
    warnings = [r.getMessage() for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(warnings) == 1 and "no C++ compiler here" in warnings[0] and "training eagerly" in warnings[0]
    assert summary["compile"].startswith("eager: compilation failed") and "no C++ compiler here" in summary["compile"]
    eager = run_training(tiny_job(stream), replace(QUIET, compile=False), tmp_path / "eager")
    assert summary["final_loss"] == eager["final_loss"]  # the fallback trains exactly the eager way


# --- fp16: Pythia's loss scaling ------------------------------------------------------------------

def test_loss_scale_follows_pythias_settings():
    scale = DynamicLossScale(True, **PYTHIA_FP16)
    assert scale.scale == 2.0**12
    scale.update(overflow=True)           # hysteresis 2: the first overflow only uses it up
    assert scale.scale == 2.0**12 and scale.skipped_steps == 1
    scale.update(overflow=True)           # the second halves the scale
    assert scale.scale == 2.0**11
    scale.update(overflow=True)           # and, hysteresis spent, so does every further one
    assert scale.scale == 2.0**10
    for _ in range(999):
        scale.update(overflow=False)
    assert scale.scale == 2.0**10
    scale.update(overflow=False)          # 1000 clean steps in a row double it, and restore hysteresis
    assert scale.scale == 2.0**11 and scale.hysteresis_left == 2
    restored = DynamicLossScale(True, **PYTHIA_FP16)
    restored.load_state_dict(scale.state_dict())
    assert restored.state_dict() == scale.state_dict()
    floor = DynamicLossScale(True, **{**PYTHIA_FP16, "initial_scale_power": 1})
    for _ in range(5):
        floor.update(overflow=True)
    assert floor.scale == 1.0  # min_loss_scale


def test_torch_engine_fp16_skips_an_overflowing_step_and_backs_off():
    torch.manual_seed(0)
    model = GPTNeoX(TINY)
    engine = TorchEngine(model, build_optimizer(model), torch.device("cpu"), "fp16", 1.0, 1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = torch.randint(0, 64, (2, 9))
    engine.forward_backward(rows[:, :-1], rows[:, 1:], True)
    model.embed_out.weight.grad[0, 0] = float("inf")  # an fp16 overflow
    grad_norm = engine.step(1e-3)
    assert not np.isfinite(grad_norm)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # skipped
    assert engine.loss_scale_state()["skipped_steps"] == 1 and engine.loss_scale.hysteresis_left == 1
    engine.forward_backward(rows[:, :-1], rows[:, 1:], True)
    assert np.isfinite(engine.step(1e-3))
    assert not torch.equal(before["embed_out.weight"], model.embed_out.weight)  # this one applied
    assert engine.loss_scale.scale == 2.0**12


def test_fp16_is_refused_on_cpu_in_one_line(stream, tmp_path):
    with pytest.raises(UserError, match="precision=fp16: needs a GPU"):
        run_training(tiny_job(stream), replace(QUIET, precision="fp16"), tmp_path / "run")


# --- prefetch -----------------------------------------------------------------------------------

def test_prefetcher_yields_every_step_in_order_and_raises_errors_at_their_step(stream):
    data = IndexedStream(stream)
    layout = BatchLayout.resolve(BATCH, 4, "auto", 1, False)
    batches = WindowBatches(data, first_row=0, start_step=0, layout=layout, vocab_size=64)
    with StepPrefetcher(batches, range(0, 5), pin=False) as prefetched:
        seen = [(step, tokens) for step, tokens in prefetched]
    assert [step for step, _ in seen] == list(range(5))
    for step, tokens in seen:
        np.testing.assert_array_equal(tokens.numpy(), data.rows(step * BATCH, (step + 1) * BATCH))
    small = WindowBatches(data, first_row=0, start_step=0, layout=layout, vocab_size=10, name="the stream")
    got = []
    with pytest.raises(UserError, match="the stream: rows 0..7 hold token id"):
        with StepPrefetcher(small, range(0, 5), pin=False) as prefetched:
            for step, _ in prefetched:
                got.append(step)
    assert got == []
    with StepPrefetcher(batches, range(0, 100), pin=False, depth=1) as prefetched:  # leaving early stops the reader
        next(iter(prefetched))
    assert not prefetched.thread.is_alive()


# --- non-finite loss ----------------------------------------------------------------------------

def test_a_diverging_run_stops_with_one_line_naming_the_step_and_the_run_folder(stream, tmp_path):
    run_dir = tmp_path / "diverged"
    with pytest.raises(TrainingDiverged) as caught:
        run_training(tiny_job(stream, peak_lr=1e12, warmup_steps=0, end_step=6), QUIET, run_dir)
    message = str(caught.value)
    assert "\n" not in message and str(run_dir) in message and "at step " in message
    assert not (run_dir / "model").exists()
