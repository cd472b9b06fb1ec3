"""The pipeline on a stream in the real Pythia format (MMIDIDX, uint16, the real GPT-NeoX tokenizer),
small enough for a CPU: where held-out perplexity gets its tokens (rows after the window; else a
named text packed with the run's tokenizer; rows the checkpoint saw only on request; otherwise a
one-line refusal before any heavy work), optimizer state from a folder checked against the
window's start, and the cost plan. The last test runs every stage end to end (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from debias.cache import Cache
from debias.config import register_configs, to_run_config
from debias.errors import UserError
from debias.io import write_json_atomic
from debias.stream import IndexedStream, StreamWriter, pack_texts

ROOT = Path(__file__).resolve().parents[1]
START, TOTAL, BATCH, ROW = 90, 100, 4, 65      # the 7% window: steps 90..100, rows 360..400
END_ROW = TOTAL * BATCH
TINY_MODEL = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def world(tmp_path_factory, neox_tokenizer_path):
    """Two streams cut from one packing of generated English with the real tokenizer: `long` holds
    16 rows after the training rows, `short` ends with them; a held-out .jsonl; the checkpoint at
    the window's start (a tiny GPT-NeoX with Pythia's padded vocabulary)."""
    from debias.demo.corpus import CorpusGenerator
    from debias.model import GPTNeoX, GPTNeoXConfig

    root = tmp_path_factory.mktemp("real-format")
    texts = (document.text for document in CorpusGenerator(7).documents())
    pack_texts(texts_until(texts, (END_ROW + 16) * (ROW - 1) * 6), neox_tokenizer_path, ROW - 1, root / "packed")
    packed = IndexedStream(root / "packed")
    assert len(packed) >= END_ROW + 16 and packed.dtype == np.uint16
    for name, rows in (("long", END_ROW + 16), ("short", END_ROW)):
        with StreamWriter(root / name / "document", packed.dtype, row_length=ROW) as writer:
            writer.append_rows(np.asarray(packed.rows(0, rows)))
    with open(root / "pile_test.jsonl", "w") as handle:
        for document in CorpusGenerator(8).documents(60):
            handle.write(json.dumps({"text": document.text}) + "\n")
    torch.manual_seed(0)
    config = GPTNeoXConfig.from_dict({**TINY_MODEL, "vocab_size": 50304, "gelu": "tanh"})
    GPTNeoX(config).save_pretrained(root / "ckpt" / f"step{START}", tokenizer=neox_tokenizer_path)
    return root, neox_tokenizer_path


def texts_until(texts, characters: int):
    total = 0
    for text in texts:
        yield text
        total += len(text)
        if total >= characters:
            return


def overrides(world, stream: str = "long", *extra: str) -> list[str]:
    """The run on `stream`; a cache_dir in `extra` replaces the module's shared one."""
    root, tokenizer = world
    cache = [] if any(e.startswith("cache_dir=") for e in extra) else [f"cache_dir={root / 'cache'}"]
    return ["model=pythia-70m-deduped", f'model.checkpoint="{root}/ckpt/step{{step}}"',
            *(f"model.architecture.{k}={v}" for k, v in TINY_MODEL.items()),
            "data=pile-deduped", f"data.stream={root / stream / 'document'}", f"data.tokenizer={tokenizer}",
            f"data.geometry.batch_size={BATCH}", f"data.geometry.row_length={ROW}",
            f"data.geometry.total_steps={TOTAL}", "data.geometry.checkpoint_interval=10", "data.heldout_rows=16",
            "eval=pythia", *cache, *extra]


def run_config(world, stream: str = "long", *extra: str):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_run_config(compose(config_name="config", overrides=overrides(world, stream, *extra)))


def prepared(world, stream: str = "long", *extra: str):
    from debias.stages import prepare

    config = run_config(world, stream, *extra)
    return prepare(config, Cache(config.cache_dir))


# ---- held-out perplexity ------------------------------------------------------------------------

def test_rows_after_the_window_are_scored_when_the_stream_holds_them(world):
    perplexity = prepared(world, "long", f"eval.perplexity.text={world[0] / 'pile_test.jsonl'}").eval_config.perplexity
    assert perplexity.enabled and perplexity.rows == [END_ROW, END_ROW + 16]
    assert IndexedStream(perplexity.stream).idx_path == (world[0] / "long" / "document.idx")
    assert perplexity.rows_label == f"stream rows {END_ROW}..{END_ROW + 16} after the window end (seen by no arm or checkpoint)"


def test_a_stream_that_ends_with_the_window_scores_the_named_text_packed_with_the_runs_tokenizer(world):
    from debias.tokenizer import load_tokenizer

    text = world[0] / "pile_test.jsonl"
    first = prepared(world, "short", f"eval.perplexity.text={text}").eval_config.perplexity
    rows = IndexedStream(first.stream)
    assert first.rows == [0, 16] and len(rows) == 16 and rows.row_length == ROW  # data.heldout_rows of the run's length
    assert first.rows_label.startswith(f"held-out text: text file {text} (field 'text'), 16 rows of {ROW} tokens")
    # the rows are the text's own tokens, joined by end-of-text as the training stream is
    tokenizer = load_tokenizer(world[1])
    eos = tokenizer.token_to_id("<|endoftext|>")
    documents = [json.loads(line)["text"] for line in text.read_text().splitlines()]
    ids = [t for d in documents for t in tokenizer.encode(d, add_special_tokens=False).ids + [eos]]
    assert rows.row(0).tolist() == ids[:ROW] and rows.row(1).tolist() == ids[ROW - 1: 2 * ROW - 1]
    # packed once: a second run reads the same cache entry; another text content is another entry
    assert prepared(world, "short", f"eval.perplexity.text={text}").eval_config.perplexity.stream == first.stream
    other = world[0] / "other.jsonl"
    other.write_text("\n".join(text.read_text().splitlines()[::-1]) + "\n")
    assert prepared(world, "short", f"eval.perplexity.text={other}").eval_config.perplexity.stream != first.stream


def test_without_unseen_rows_or_a_text_the_run_is_refused_before_any_heavy_work(world, tmp_path):
    # the checkpoint pattern points nowhere: the refusal comes before it is looked up
    missing = [f'model.checkpoint="{tmp_path}/none/step{{step}}"']
    with pytest.raises(UserError) as err:
        prepared(world, "short", *missing)
    line = str(err.value)
    assert "\n" not in line and "no rows after the window end" in line
    assert "eval.perplexity.text=FILE" in line and "Pile test split as .jsonl" in line and "enabled=false" in line
    assert not list((world[0] / "cache").glob("train/*")) and not list((world[0] / "cache").glob("rewrite/*"))
    # disabled on request: the run goes on (and fails on the missing checkpoint instead)
    with pytest.raises(UserError, match="none/step90"):
        prepared(world, "short", "eval.perplexity.enabled=false", *missing)


def test_rows_the_checkpoint_trained_on_only_on_request_and_labelled_seen_by_all_arms(world):
    perplexity = prepared(world, "short", "eval.perplexity.allow_seen_rows=true").eval_config.perplexity
    assert perplexity.rows == [START * BATCH - 16, START * BATCH] and "seen by all arms" in perplexity.rows_label
    named = [f"eval.perplexity.stream={world[0] / 'short' / 'document'}", "eval.perplexity.rows=[100,120]"]
    with pytest.raises(UserError, match=r"eval.perplexity.rows=\[100, 120\]: rows of the training stream before the "
                                        r"window end .* eval.perplexity.allow_seen_rows=true"):
        prepared(world, "short", *named)
    allowed = prepared(world, "short", *named, "eval.perplexity.allow_seen_rows=true").eval_config.perplexity
    assert allowed.rows == [100, 120] and "seen by all arms" in allowed.rows_label


# ---- optimizer state ----------------------------------------------------------------------------

def imported_optimizer_state(world, folder: Path, step: int) -> Path:
    """A `python -m debias.model.neox_import` output for the checkpoint: Adam moments after one step."""
    from debias.model import GPTNeoX
    from debias.train.optim import build_optimizer

    model = GPTNeoX.from_pretrained(world[0] / "ckpt" / f"step{START}")
    optimizer = build_optimizer(model)
    ids = torch.as_tensor(IndexedStream(world[0] / "long" / "document").rows(0, 2)[:, :-1].astype(np.int64))
    model(ids).float().logsumexp(-1).mean().backward()
    optimizer.step()
    folder.mkdir(parents=True)
    torch.save(optimizer.state_dict(), folder / "optimizer_state.pt")
    write_json_atomic(folder / "import.json", {"step": step, "adam_step": 1, "weights": "fp32 master weights"})
    return folder


def test_optimizer_state_from_another_step_is_refused_before_training(world, tmp_path):
    state = imported_optimizer_state(world, tmp_path / "step80", 80)
    with pytest.raises(UserError) as err:
        prepared(world, "long", f"trainer.optimizer_state={state}")
    assert "\n" not in str(err.value)
    assert str(err.value) == (f"trainer.optimizer_state={state}: the shards are from step 80, the window starts at "
                              f"step {START}; use the shards of step {START}, or optimizer_state=fresh")
    with pytest.raises(UserError, match="trainer.engine=deepspeed: not supported"):
        prepared(world, "long", f"trainer.optimizer_state={state}", "trainer=deepspeed")
    # GPT-NeoX's own folder of ZeRO-1 shards: the step is read without loading a shard
    shards = tmp_path / "global_step80"
    shards.mkdir()
    (shards / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"not read before the step is checked")
    with pytest.raises(UserError, match=f"the shards are from step 80, the window starts at step {START}"):
        prepared(world, "long", f"trainer.optimizer_state={shards}")
    with pytest.raises(UserError, match="holds no ZeRO optimizer shards"):
        prepared(world, "long", f"trainer.optimizer_state={tmp_path}")


def test_the_trained_arms_key_holds_what_the_shards_are_not_where_they_lie(world, tmp_path, monkeypatch):
    from debias import stages

    state = imported_optimizer_state(world, tmp_path / "a" / "global_step90", START)
    moved = shutil.copytree(state, tmp_path / "b" / "elsewhere")
    monkeypatch.chdir(tmp_path)  # a relative path is made absolute, for worker processes and the report
    config = run_config(world, "long", "trainer.optimizer_state=b/elsewhere")
    assert config.trainer.optimizer_state == str(moved)
    keys = []
    monkeypatch.setattr(Cache, "get_or_build", lambda self, kind, key, build, **kw: keys.append(key) or Path("x"))

    def trained_key(path: Path) -> dict:
        config = run_config(world, "long", f"trainer.optimizer_state={path}")
        ready = stages.prepare(config, Cache(config.cache_dir))
        stages.train_arm(config, ready, Cache(config.cache_dir), "control", ready.stream, ready.window.start_row, "rows")
        return keys[-1]["trainer"]

    here, there = trained_key(state), trained_key(moved)
    assert here["optimizer_state"] == there["optimizer_state"] and here["optimizer_state"]["step"] == START
    torch.save({"state": {}, "param_groups": []}, moved / "optimizer_state.pt")  # other moments, same path
    assert trained_key(moved)["optimizer_state"] != there["optimizer_state"]


# ---- precision ----------------------------------------------------------------------------------

def test_trainer_presets_leave_the_auto_defaults_and_fp16_is_a_command_line_choice(world, monkeypatch):
    from debias.stages import check_devices

    for preset in ("default", "deepspeed"):
        trainer = run_config(world, "long", f"trainer={preset}").trainer
        assert (trainer.micro_batch, trainer.compile, trainer.activation_checkpointing, trainer.precision) == \
            ("auto", "auto", "auto", "auto")
    config = run_config(world, "long", "trainer.precision=fp16")
    assert config.trainer.precision == "fp16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="trainer.precision=fp16: needs a GPU, and trainer.device=auto trains on the CPU"):
        check_devices(config)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_devices(config)  # with a GPU visible fp16 goes ahead


# ---- the cost plan ------------------------------------------------------------------------------

def intervene(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "intervene.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_plan_prints_the_cost_and_exits_without_data_or_cache(tmp_path):
    result = intervene("plan=true", "model=pythia-1.4b-deduped", "data=pile-deduped",
                       f"data.stream={tmp_path / 'not-fetched-yet' / 'document'}", "trainer=deepspeed",
                       "trainer.nproc_per_node=8", "trainer.nnodes=2", "plan_device=H100",
                       f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "steps 133000..143000" in out and "20.97B (10,240,000 rows x 2048 predicted tokens)" in out
    assert "16 x H100 (trainer.nproc_per_node=8 x trainer.nnodes=2; plan_device)" in out
    assert "measured (model forward+backward" not in out and "projected (MFU" in out  # no H100 figures: projected
    plan_path = Path(out.strip().splitlines()[-1].removeprefix("plan: "))
    plan = json.loads(plan_path.read_text())
    assert plan["gpus"] == 16 and plan["tokens_per_arm"] == 10_240_000 * 2048
    assert plan["run"]["gpu_hours"] == pytest.approx(2 * plan["per_arm"]["gpu_hours"] + 3 * plan["evaluation"]["gpu_hours_each"])
    assert plan["per_arm"]["gpu_hours"] == pytest.approx(plan["per_arm"]["wall_hours"] * 16)
    assert f"{plan['run']['gpu_hours']:,.1f} GPU-hours" in out
    assert not (tmp_path / "cache").exists() and not (plan_path.parent / "report.json").exists()


def test_plan_uses_measured_figures_where_they_exist_and_counts_one_arm_for_a_control_run(tmp_path):
    from debias.train.plan import MEASURED

    result = intervene("plan=true", "model=pythia-160m", "data=pile-standard", "data.stream=/x/document",
                       "intervention=none", "intervention.ratio=0.21", "plan_device=H200", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{MEASURED['H200']['pythia-160m'][0]:,.0f} (" in result.stdout and "measured (trainer" in result.stdout
    assert "steps 113000..143000" in result.stdout and "1 arm + 2 evaluations" in result.stdout
    # the preset's name with another architecture does not borrow its measured figures
    changed = intervene("plan=true", "model=pythia-160m", "data=pile-standard", "data.stream=/x/document",
                        "model.architecture.num_layers=6", "plan_device=H200", cwd=tmp_path, timeout=120)
    assert changed.returncode == 0 and "projected (MFU of pythia-160m)" in changed.stdout and "measured (" not in changed.stdout


def test_plus_plan_names_the_setting_to_use(tmp_path):
    result = intervene("+plan=true", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == "error: +plan: already a setting; write plan=true without the +"


# ---- every stage end to end ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_real_format_run_reports_where_its_perplexity_came_from_and_the_independent_check(world, tmp_path, shared_data):
    """data=pile-deduped on a stream that ends with the window, the real benchmarks (LAMBADA cut
    short), held-out text, imported optimizer state: every stage, and the report says so."""
    state = imported_optimizer_state(world, tmp_path / "global_step90", START)
    text = world[0] / "pile_test.jsonl"
    args = overrides(world, "short", f"eval.perplexity.text={text}", f"trainer.optimizer_state={state}",
                     f"cache_dir={tmp_path / 'cache'}", "eval.lambada.limit=40", "eval.bootstrap_samples=100",
                     "eval.device=cpu", "trainer.device=cpu", "trainer.micro_batch=4", "trainer.tensorboard=false",
                     "trainer.progress=false", "intervention.workers=1", "intervention.check_tagger=none")
    result = intervene(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(Path(result.stdout.strip().splitlines()[-1].removeprefix("report: ")).read_text())
    for arm in ("baseline", "control", "treatment"):
        perplexity = report["arms"][arm]["metrics"]["perplexity"]
        assert perplexity["source"].startswith(f"held-out text: text file {text}")
        assert perplexity["tokens"] == 16 * (ROW - 1) and perplexity["n"] == 16
    assert report["perplexity"]["source"] == report["arms"]["treatment"]["metrics"]["perplexity"]["source"]
    check = report["rewrite"]["independent_check"]
    assert check["changed_words"] > 0 and 0.9 <= check["precision"] <= 1 and len(check["precision_ci95"]) == 2
    assert check["checker"]["tagger"] is None and check["seed"] == 1234
    treatment = report["training"]["treatment"]
    assert treatment["optimizer_state"]["treatment"] == "imported" and treatment["optimizer_state"]["checkpoint_step"] == START
    assert report["config"]["trainer"]["optimizer_state"] == str(state)
