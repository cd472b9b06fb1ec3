"""debias.train: Pythia's schedule, optimizer groups, batch layout, exact resume, the two arms,
bad input. Tiny real GPT-NeoX models on small real MMIDIDX streams, CPU, one thread."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import train_fixtures
from safetensors.torch import load_file
from train_fixtures import BATCH, ROW, TINY, random_rows, write_stream

from debias.errors import UserError
from debias.model import GPTNeoX, GPTNeoXConfig, parameter_groups
from debias.stream import IndexedStream
from debias.train import TrainerConfig, TrainingDiverged, TrainJob, lr_at, run_training
from debias.train.data import BatchLayout, WindowBatches
from debias.train.optim import build_optimizer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = TrainerConfig(micro_batch=4, progress=False, tensorboard=False)


@pytest.fixture
def stream(tmp_path) -> str:
    return write_stream(tmp_path / "stream" / "document", random_rows(BATCH * 12))


def tiny_job(stream: str, **overrides) -> TrainJob:
    return train_fixtures.tiny_job(stream, **{"end_step": 6, "total_steps": 12, "warmup_steps": 2, "seed": 7, **overrides})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- schedule (docs/facts.md §5), expected values written independently of debias.train.schedule -------

PYTHIA_PEAK_LR = {"70m": 1e-3, "160m": 6e-4, "410m": 3e-4, "1b": 2.5e-4, "1.4b": 2e-4, "2.8b": 1.6e-4,
                  "6.9b": 1.2e-4, "12b": 1.2e-4}


def facts_lr(n: int, peak: float) -> float:
    """docs/facts.md §5: lr = max(floor, peak/2 * (1 + cos(pi * (n - w) / 143000))), w = 1430, floor = 0.1 peak."""
    return max(0.1 * peak, peak / 2 * (1 + math.cos(math.pi * (n - 1430) / 143000)))


@pytest.mark.parametrize("size", sorted(PYTHIA_PEAK_LR))
@pytest.mark.parametrize("step", [113000, 115139, 133000, 143000])
def test_lr_equals_the_pythia_formula(size, step):
    peak = PYTHIA_PEAK_LR[size]
    assert lr_at(step, peak) == pytest.approx(facts_lr(step, peak), rel=1e-12)


def test_lr_landmarks_of_the_two_windows():
    peak = PYTHIA_PEAK_LR["1.4b"]
    assert lr_at(113000, peak) / (0.1 * peak) == pytest.approx(1.145, abs=5e-4)  # 21% window starts above the floor
    assert lr_at(115138, peak) > 0.1 * peak and lr_at(115139, peak) == 0.1 * peak  # floor reached at 115,139
    assert all(lr_at(s, peak) == 0.1 * peak for s in range(133000, 143000, 997))  # 7% window: all at the floor
    assert lr_at(715, peak) == pytest.approx(peak / 2) and lr_at(1430, peak) == pytest.approx(peak)  # warm-up
    # no re-warm-up: a continued run evaluates the same decreasing function at its global step
    steps = range(1430, 143000, 500)
    assert all(lr_at(a, peak) >= lr_at(b, peak) for a, b in zip(steps, steps[1:]))


# --- optimizer ----------------------------------------------------------------------------------

def test_no_weight_decay_on_layernorms_and_biases():
    model = GPTNeoX(TINY)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = parameter_groups(model, 0.1)
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decayed == {n for n, p in model.named_parameters() if n.endswith("weight") and "layernorm" not in n
                       and "layer_norm" not in n}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    with_biases = {names[id(p)] for p in parameter_groups(model, 0.1, decay_biases=True)[0]["params"]}
    assert with_biases - decayed == {n for n in names.values() if n.endswith("bias") and "norm" not in n}


def test_zero_learning_rate_step_warms_adam_without_moving_weights():
    model = GPTNeoX(TINY)
    optimizer = build_optimizer(model, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randint(0, 64, (2, 16))).float().pow(2).mean().backward()
    optimizer.step()  # lr is 0 until the loop sets it
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(s["exp_avg_sq"].abs().sum() > 0 for s in optimizer.state.values())


# --- data layout ----------------------------------------------------------------------------------

def test_batch_layout_auto_and_refusals():
    assert BatchLayout.resolve(1024, 8, "auto", 4, False).grad_accum == 32
    with pytest.raises(UserError, match="does not divide"):
        BatchLayout.resolve(1024, 24, "auto", 1, False)
    with pytest.raises(UserError, match="allow_batch_override"):
        BatchLayout.resolve(1024, 8, 4, 1, False)
    assert BatchLayout.resolve(1024, 8, 4, 1, True).rows_per_step == 32


def test_ranks_take_disjoint_slices_of_each_step(stream):
    data = IndexedStream(stream)
    layout = BatchLayout.resolve(BATCH, 2, "auto", 2, False)
    ranks = [WindowBatches(data, first_row=BATCH, start_step=3, layout=layout, rank=r) for r in range(2)]
    for step in (3, 4):
        fed = np.concatenate([torch.cat([i for i, _ in r.micro_batches(step)]).numpy() for r in ranks])
        # step 3 is the window's first step and starts at first_row; inputs drop each row's last token
        np.testing.assert_array_equal(fed, data.rows(BATCH * (step - 2), BATCH * (step - 1))[:, :-1])
    labels = torch.cat([l for _, l in ranks[0].micro_batches(3)]).numpy()
    np.testing.assert_array_equal(labels, data.rows(BATCH, BATCH + 4)[:, 1:])


# --- exact resume ---------------------------------------------------------------------------------

def test_stop_and_resume_is_bitwise_equal_to_one_go(stream, tmp_path):
    one_go = run_training(tiny_job(stream), replace(FAST, checkpoint_every=4), tmp_path / "one")
    run_training(tiny_job(stream, end_step=3), replace(FAST, checkpoint_every=4), tmp_path / "two")
    resumed = run_training(tiny_job(stream), replace(FAST, checkpoint_every=4), tmp_path / "two")
    assert_bitwise_equal(weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model"))
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())]
              for d in ("one", "two")]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    assert resumed["mean_loss"] == one_go["mean_loss"]
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["step4", "step6"]  # keep_last 2


def test_a_damaged_checkpoint_is_not_resumed_from(stream, tmp_path, caplog):
    from debias.train.resume import latest_checkpoint

    run_training(tiny_job(stream, end_step=3), replace(FAST, checkpoint_every=1), tmp_path / "run")
    newest = tmp_path / "run" / "checkpoints" / "step3"
    assert latest_checkpoint(tmp_path / "run") == (3, newest)
    state = next(p for p in newest.iterdir() if p.suffix == ".pt" and p.stat().st_size > 1000)
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    assert latest_checkpoint(tmp_path / "run") == (2, tmp_path / "run" / "checkpoints" / "step2")
    assert "step3 is damaged" in caplog.text and state.name in caplog.text


def test_hf_folders_on_a_grid_and_final_model(stream, tmp_path):
    summary = run_training(tiny_job(stream, save_hf_at_steps=[0, 1, 2, 4]), FAST, tmp_path / "run")
    grid = tmp_path / "run" / "checkpoints_hf"
    assert sorted(p.name for p in grid.iterdir()) == ["step0", "step1", "step2", "step4"]
    torch.manual_seed(7)  # the job's seed: step0 is the seeded random init
    assert_bitwise_equal(GPTNeoX.from_pretrained(grid / "step0").state_dict(), GPTNeoX(TINY).state_dict())
    # linear warm-up from 0: Pythia's first update (step 0) has lr 0, so step1 equals step0; step2 moved
    assert_bitwise_equal(weights(grid / "step1"), weights(grid / "step0"))
    assert not torch.equal(weights(grid / "step2")["embed_out.weight"], weights(grid / "step0")["embed_out.weight"])
    reloaded = GPTNeoX.from_pretrained(tmp_path / "run" / "model")
    ids = torch.randint(0, 64, (1, 16))
    assert torch.isfinite(reloaded(ids)).all()
    assert summary["steps"] == 6 and summary["tokens"] == 6 * BATCH * ROW and summary["predicted_tokens"] == 6 * BATCH * (ROW - 1)
    assert summary["engine"] == "torch" and summary["precision"] == "fp32" and summary["world_size"] == 1


# --- treatment and control ------------------------------------------------------------------------

def test_treatment_and_control_differ_exactly_at_rewritten_positions(tmp_path):
    """The control reads the window from the original stream; the treatment from a rewritten copy
    that holds only the window (first_row 0). Each arm's fed tokens must equal its stream, and the
    two differ exactly at the rewritten positions."""
    start_step, steps = 5, 3
    original = random_rows(BATCH * (start_step + steps + 2), seed=1)
    window = original[BATCH * start_step: BATCH * (start_step + steps)].copy()
    rng = np.random.default_rng(2)
    changed = rng.random(window.shape) < 0.05
    rewritten = np.where(changed, (window + 1) % 64, window).astype(np.uint16)
    control_stream = write_stream(tmp_path / "orig" / "document", original)
    treatment_stream = write_stream(tmp_path / "treat" / "document", rewritten)

    fed = {}
    for arm, path, first_row in (("control", control_stream, BATCH * start_step), ("treatment", treatment_stream, 0)):
        rows = {}

        def record(step, input_ids, labels, rows=rows):
            full = torch.cat([input_ids, labels[:, -1:]], dim=1).numpy()
            rows.setdefault(step, []).append(full)

        job = tiny_job(path, first_row=first_row, start_step=start_step, end_step=start_step + steps)
        run_training(job, FAST, tmp_path / arm, on_batch=record)
        fed[arm] = np.concatenate([np.concatenate(rows[s]) for s in sorted(rows)])
    np.testing.assert_array_equal(fed["control"], window)
    np.testing.assert_array_equal(fed["treatment"], rewritten)
    np.testing.assert_array_equal(fed["control"] != fed["treatment"], changed)


# --- bad input --------------------------------------------------------------------------------------

def test_checkpoint_step_must_match_window_start(stream, tmp_path):
    with pytest.raises(UserError, match="step 133000 but the window starts at step 0"):
        run_training(tiny_job(stream, init_step=133000), FAST, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_vocabulary_smaller_than_stream_ids(tmp_path):
    rows = random_rows(BATCH * 8)
    rows[BATCH * 5 + 3, 7] = 99  # one id past the model's 64, in the window's last step
    path = write_stream(tmp_path / "big" / "document", rows)
    with pytest.raises(UserError, match="holds token id 99 in steps 0..5, but the model's vocabulary has 64 ids"):
        run_training(tiny_job(path), FAST, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_batch_that_does_not_divide(stream, tmp_path):
    with pytest.raises(UserError, match="does not divide"):
        run_training(tiny_job(stream), replace(FAST, micro_batch=3), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_run_dir_of_another_configuration_is_refused(stream, tmp_path):
    run_training(tiny_job(stream, end_step=2), FAST, tmp_path / "run")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="another configuration"):
        run_training(tiny_job(stream, end_step=2, peak_lr=1e-2), FAST, tmp_path / "run")
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


def test_command_line_bad_spec_exits_2(tmp_path):
    spec = tmp_path / "train_job.json"
    spec.write_text("{}")
    result = subprocess.run([sys.executable, "-m", "debias.train", str(spec)], capture_output=True, text=True,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(stream, tmp_path, monkeypatch):
    import debias.train.loop as loop

    built = {}
    original_build = loop.build_model

    def capture(job):
        built["model"], identity = original_build(job)
        return built["model"], identity

    def poison(step, input_ids, labels):
        if step == 4:
            with torch.no_grad():
                built["model"].embed_in.weight.fill_(float("nan"))

    monkeypatch.setattr(loop, "build_model", capture)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 4.*checkpoints/step4"):
        run_training(tiny_job(stream), replace(FAST, checkpoint_every=2), tmp_path / "run", on_batch=poison)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step2", "step4"]
    assert not (tmp_path / "run" / "model").exists()
    state = torch.load(tmp_path / "run" / "checkpoints" / "step4" / "engine.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_trainer_config_rejects_unknown_keys():
    with pytest.raises(UserError, match="unknown key"):
        TrainerConfig.from_dict({"micro_bach": 4})
    with pytest.raises(UserError, match="engine"):
        TrainerConfig(engine="jax")


@pytest.mark.shared_data
def test_arms_differ_exactly_where_the_real_rewrite_audit_says(tmp_path, neox_tokenizer_path):
    """The real pipeline pieces: text packed with the GPT-NeoX tokenizer, the window rewritten m2f by
    debias.rewrite, then both arms trained. The fed tokens differ in exactly `changed_tokens`
    positions, in exactly `rows_touched` rows, and every audited sample row is among them."""
    from debias.rewrite import rewrite_window
    from debias.stream import Geometry, Window, pack_texts

    sentences = ["He said that his brother would help him move.", "Heather studied Hebrew with her friend.",
                 "The doctor asked whether he could keep the book of his.", "She told him the plan herself.",
                 "Nobody knew why He Who Waits had left."]
    texts = [" ".join(sentences[(i + k) % len(sentences)] for k in range(4)) for i in range(60)]
    pack_texts(texts, neox_tokenizer_path, seq_len=32, out_prefix=tmp_path / "orig" / "document")
    geometry = Geometry(batch_size=4, row_length=33, total_steps=6, checkpoint_interval=1)
    window = Window.from_start_step(geometry, 3)
    result = rewrite_window(str(tmp_path / "orig" / "document"), window, tmp_path / "rewrite", neox_tokenizer_path,
                            "m2f", progress=False, workers=1)
    model = GPTNeoXConfig(vocab_size=50304, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64,
                          max_position_embeddings=32)
    fed = {}
    for arm, stream, first_row in (("control", str(tmp_path / "orig" / "document"), window.start_row),
                                   ("treatment", str(result.stream), result.first_row)):
        rows = []
        job = TrainJob.for_window(init=model, stream=stream, first_row=first_row, window=window, geometry=geometry,
                                  peak_lr=1e-3, seed=5)
        run_training(job, replace(FAST, micro_batch=2), tmp_path / arm,
                     on_batch=lambda step, ids, labels: rows.append(torch.cat([ids, labels[:, -1:]], 1).numpy()))
        fed[arm] = np.concatenate(rows)
    differs = fed["control"] != fed["treatment"]
    assert result.audit["changed_tokens"] > 0
    assert int(differs.sum()) == result.audit["changed_tokens"]
    assert int(differs.any(axis=1).sum()) == result.audit["rows_touched"]
    touched_rows = {window.start_row + int(r) for r in np.flatnonzero(differs.any(axis=1))}
    assert {s["row"] for s in result.audit["sample"]} <= touched_rows
    np.testing.assert_array_equal(fed["control"], IndexedStream(str(tmp_path / "orig" / "document")).rows(
        window.start_row, window.end_row))


def test_adam_warmup_uses_the_window_batches_at_zero_lr_then_trains_from_the_window_start(stream, tmp_path):
    fed_steps = []
    summary = run_training(tiny_job(stream, start_step=2, end_step=5),
                           replace(FAST, optimizer_state="warmup", adam_warmup_steps=2),
                           tmp_path / "warm", on_batch=lambda step, ids, labels: fed_steps.append(step))
    records = [json.loads(line) for line in (tmp_path / "warm" / "metrics.jsonl").read_text().splitlines()]
    warmup = [r for r in records if r["phase"] == "adam_warmup"]
    assert [(r["step"], r["lr"]) for r in warmup] == [(2, 0.0), (3, 0.0)]
    assert sorted(set(fed_steps)) == [2, 3, 4]  # training still starts at the window's first batch
    assert summary["adam_state"] == "fresh, warmed by 2 zero-lr steps"
    assert summary["optimizer_state"] == {"treatment": "warmup", "warmup_steps": 2}
    cold = run_training(tiny_job(stream, start_step=2, end_step=5), FAST, tmp_path / "cold")
    assert cold["optimizer_state"] == {"treatment": "fresh"}
    # the warm-up's losses are the untouched model's, i.e. the cold run's first loss
    assert warmup[0]["loss"] == [r for r in records if r["phase"] == "train"][0]["loss"]
    assert cold["final_loss"] != summary["final_loss"]  # warmed moments change the updates


def test_bf16_autocast_path_runs_on_cpu(stream, tmp_path):
    summary = run_training(tiny_job(stream, end_step=3), replace(FAST, precision="bf16"), tmp_path / "run")
    assert summary["precision"] == "bf16" and math.isfinite(summary["final_loss"])
    assert GPTNeoX.from_pretrained(tmp_path / "run" / "model").embed_in.weight.dtype == torch.float32  # fp32 master
    with pytest.raises(UserError, match="fp16: needs a GPU"):
        run_training(tiny_job(stream), replace(FAST, precision="fp16"), tmp_path / "fp16")


def test_launch_commands(tmp_path, monkeypatch):
    from debias.train.launch import launch_command

    spec = tmp_path / "train_job.json"
    torchrun = launch_command(TrainerConfig(engine="deepspeed", nproc_per_node=4, master_port=29511), spec)
    assert torchrun[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "4", "--nnodes", "1", "--master_addr",
                            "127.0.0.1", "--master_port", "29511", "-m", "debias.train", str(spec)]
    multi = TrainerConfig(engine="deepspeed", nproc_per_node=8, nnodes=2)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(UserError, match="set MASTER_ADDR and NODE_RANK"):
        launch_command(multi, spec)
    monkeypatch.setenv("MASTER_ADDR", "node0")
    monkeypatch.setenv("NODE_RANK", "1")
    assert "--node_rank" in launch_command(multi, spec) and "node0" in launch_command(multi, spec)
    hostfile = TrainerConfig(engine="deepspeed", launcher="deepspeed", nnodes=2,
                                       hostfile="hosts.txt", master_port=29512)
    command = launch_command(hostfile, spec)
    assert command[1:] == ["-m", "deepspeed.launcher.runner", "--num_nodes", "2", "--hostfile", "hosts.txt", "--master_port", "29512", "--module",
                           "debias.train", str(spec)]


def test_imported_optimizer_state_is_resumed_and_bad_files_are_refused(stream, tmp_path):
    # an optimizer state as debias.model.neox_import writes it: import.json (the checkpoint's step)
    # beside a state_dict of our AdamW groups
    first = run_training(tiny_job(stream, end_step=3, save_hf_at_steps=[3]), FAST, tmp_path / "first")
    engine_state = torch.load(tmp_path / "first" / "checkpoints" / "step3" / "engine.pt", weights_only=True)
    imported = tmp_path / "imported"
    imported.mkdir()
    torch.save(engine_state["optimizer"], imported / "optimizer_state.pt")
    (imported / "import.json").write_text(json.dumps({"step": 3, "adam_step": 3}))
    hf = str(tmp_path / "first" / "checkpoints_hf" / "step3")
    # continuing from the saved weights + imported Adam state reproduces the uninterrupted run exactly
    continued = run_training(tiny_job(stream, init=hf, init_step=3, start_step=3, first_row=3 * BATCH),
                             replace(FAST, optimizer_state=str(imported)), tmp_path / "cont")
    run_training(tiny_job(stream), FAST, tmp_path / "whole")
    assert continued["adam_state"] == "imported" and first["adam_state"] == "fresh"
    assert continued["optimizer_state"] == {"treatment": "imported", "source": str(imported), "checkpoint_step": 3,
                                            "adam_step": 3}
    assert_bitwise_equal(weights(tmp_path / "cont" / "model"), weights(tmp_path / "whole" / "model"))

    # shards of another step: one line, nothing written
    with pytest.raises(UserError, match=r"the shards are from step 3, the window starts at step 2"):
        run_training(tiny_job(stream, init=hf, init_step=2, start_step=2, first_row=2 * BATCH),
                     replace(FAST, optimizer_state=str(imported)), tmp_path / "other_step")
    assert not (tmp_path / "other_step").exists()
    (imported / "optimizer_state.pt").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="optimizer_state.pt: not a loadable optimizer state_dict"):
        run_training(tiny_job(stream, init=hf, init_step=3, start_step=3, first_row=3 * BATCH),
                     replace(FAST, optimizer_state=str(imported)), tmp_path / "junk")
    assert not (tmp_path / "junk").exists()  # refused before the run dir was claimed
    with pytest.raises(UserError, match="optimizer_state=.*absent: neither fresh nor warmup, and no such folder"):
        TrainerConfig.from_dict({"optimizer_state": str(tmp_path / "absent")})
    with pytest.raises(UserError, match="adam_warmup_steps=0"):
        TrainerConfig.from_dict({"optimizer_state": "warmup", "adam_warmup_steps": 0})
