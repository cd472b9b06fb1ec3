"""The whole pipeline on a tiny demo suite, for real: every stage, the report, determinism, and a
sweep that shares its work and ends with the comparison. Slow (minutes on 2 cores)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# A miniature of the miniature: 100 steps of 8 rows x 64 tokens, a 2-layer width-32 model,
# small probe sets. The 7% window is 7 steps, the 21% window 21.
TINY = [
    "data.geometry.batch_size=8", "data.geometry.row_length=65", "data.geometry.total_steps=100",
    "data.geometry.checkpoint_interval=1", "data.demo.heldout_rows=16", "data.demo.tokenizer.train_documents=500",
    "data.demo.probes.winobias_lines_per_file=24", "data.demo.probes.crows_pairs_frames_per_occupation=2",
    "data.demo.pretrain.micro_batch=8", "trainer.micro_batch=8", "trainer.tensorboard=false",
    "model.architecture.hidden_size=32", "model.architecture.intermediate_size=128",
    "model.architecture.num_layers=2", "model.architecture.max_position_embeddings=64",
    "eval.bootstrap_samples=200",
]

pytestmark = pytest.mark.slow


def intervene(*args: str, cwd: Path, cache: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEBIAS_CACHE_DIR": str(cache)}
    flags = [a for a in args if a.startswith("--")]  # Hydra's flags go before the overrides
    overrides = [a for a in args if not a.startswith("--")]
    result = subprocess.run([sys.executable, str(ROOT / "pipelines" / "intervene.py"), *flags, *TINY, *overrides],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def comparable(report_path: Path, cache: Path) -> dict:
    """report.json without its timing section and with the cache folder's name neutralised."""
    report = json.loads(report_path.read_text().replace(str(cache), "<cache>"))
    report.pop("timing")
    return report


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def first_run(workdir):
    """One full run (it also builds the tiny demo suite that the other tests reuse)."""
    result = intervene(cwd=workdir, cache=workdir / "cache")
    return result, Path(result.stdout.strip().splitlines()[-1].removeprefix("report: "))


def test_pipeline_runs_every_stage_and_reports(first_run):
    result, report_path = first_run
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"report: {report_path}" and report_path.is_file()
    summary = lines[-8:-1]  # the headline effects first, the primary association leading
    assert [line.split(" (")[0].split(":")[0] for line in summary] == [
        "association", "blanket shift", "LM quality", "manipulation", "rewrite", "training", "run"]
    assert summary[0].startswith("association (treatment - control): winobias.association ") and "p_holm=" in summary[0]
    report = json.loads(report_path.read_text())
    assert set(report["arms"]) == {"baseline", "control", "treatment"}
    for arm in report["arms"].values():
        crows = arm["metrics"]["crows_pairs"]
        assert 0 <= crows["pct_stereotype"] <= 1 and len(crows["pct_stereotype_ci95"]) == 2 and crows["n"] > 0
        assert "likelihood_diff" in crows and "winobias" in arm["metrics"]
    assert report["crows_pairs"] == report["arms"]["treatment"]["metrics"]["crows_pairs"]  # headline arm
    assert report["rewrite"]["audit"]["changed_tokens"] > 0
    check = report["rewrite"]["independent_check"]  # the independent checker, on the window's rows
    assert check["changed_words"] > 0 and check["sample_rows"] == 7 * 8 and 0.9 <= check["precision"] <= 1
    assert report["perplexity"]["source"] == ("stream rows 800..816 after the window end (seen by no arm or "
                                              "checkpoint); the demo suite's held-out rows, from a separately seeded corpus")
    assert report["perplexity"]["tokens"] == 16 * 64
    assert report["training"]["treatment"]["steps"] == report["training"]["control"]["steps"] == 7
    paired = report["comparisons"]["treatment_vs_control"]["manipulation"]
    assert all(0 <= test["diff_p"] <= 1 for test in paired.values())
    run_dir = report_path.parent
    for name in ("report.md", "report.html", "config.yaml", ".hydra/config.yaml", "plots/training_loss.png"):
        assert (run_dir / name).exists(), name
    assert report["data"]["checksum"] and report["model"]["name"] == "pythia-demo"


def test_same_configuration_twice_gives_the_same_report(first_run, workdir):
    _, first = first_run
    # From the cache (nothing retrained) ...
    again = intervene(cwd=workdir, cache=workdir / "cache")
    second = Path(again.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert second != first
    assert comparable(first, workdir / "cache") == comparable(second, workdir / "cache")
    # ... and recomputed: the same cache folder emptied of everything but the demo suite, so
    # the rewrite, both trainings and all three evaluations run again.
    cache = workdir / "cache"
    kept = workdir / "first-cache"
    cache.rename(kept)
    shutil.copytree(kept / "demo", cache / "demo")
    try:
        recomputed = intervene(cwd=workdir, cache=cache)
        built = {"rewrite": len(list((cache / "rewrite").glob("*/manifest.json"))),
                 **{kind: len(list((cache / kind).glob("*/.done"))) for kind in ("rewrite_check", "train", "eval")}}
    finally:
        shutil.rmtree(cache)
        kept.rename(cache)
    # rewritten and checked again, both arms retrained, all re-evaluated
    assert built == {"rewrite": 1, "rewrite_check": 1, "train": 2, "eval": 3}
    third = Path(recomputed.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert comparable(first, cache) == comparable(third, cache)


def finished(cache: Path) -> dict:
    """Every finished cache entry and its manifest (rewritten only when the entry is rebuilt)."""
    return {str(p.parent.relative_to(cache)): p.read_text() for p in cache.glob("*/*/.done")}


def report_of(result: subprocess.CompletedProcess) -> Path:
    return Path(result.stdout.strip().splitlines()[-1].removeprefix("report: "))


def test_trainer_progress_off_reuses_the_trained_arms(first_run, workdir):
    """Progress bars, log intervals and checkpoint cadence are not part of the trained arm's key."""
    _, first = first_run
    cache = workdir / "cache"
    before = finished(cache)
    quiet = intervene("trainer.progress=false", "trainer.log_every=5", "trainer.checkpoint_every=3", cwd=workdir, cache=cache)
    assert finished(cache) == before  # nothing built or rebuilt: both arms (and all else) served
    assert "warning" not in quiet.stderr
    mine, theirs = comparable(report_of(quiet), cache), comparable(first, cache)
    assert mine.pop("config")["trainer"]["progress"] is False and theirs.pop("config")["trainer"]["progress"] is True
    assert mine == theirs


def test_damaged_cache_entries_are_rebuilt_with_a_warning_and_the_report_is_unchanged(first_run, workdir):
    """Flipped bytes in a trained model, a deleted metrics.json, changed token ids in a rewritten
    stream: each entry is named in one warning and rebuilt; the report is the undamaged run's."""
    _, first = first_run
    cache = workdir / "cache"
    report = json.loads(first.read_text())
    model = Path(report["training"]["treatment"]["run_dir"]) / "model" / "model.safetensors"
    rewritten = Path(report["rewrite"]["stream"] + ".bin")
    baseline_eval = next(p.parent for p in cache.glob("eval/*/key.json") if "checkpoint" in json.loads(p.read_text())["model"])
    for path in (model, rewritten):
        path = path if path.is_absolute() else workdir / path
        data = bytearray(path.read_bytes())
        if path.suffix == ".bin":  # 500 token ids replaced by another id
            ids = np.frombuffer(data, dtype=np.uint16).copy()
            ids[1000:1500] = 7
            data = bytearray(ids.tobytes())
        else:
            data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    (baseline_eval / "metrics.json").unlink()
    result = intervene(cwd=workdir, cache=cache)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    named = {kind: [w for w in warnings if f"{cache}/{kind}/" in w] for kind in ("train", "rewrite", "eval")}
    assert len(warnings) == 3 and all(len(lines) == 1 and "damaged" in lines[0] and "rebuilding it" in lines[0]
                                      for lines in named.values()), warnings
    assert str(baseline_eval) in named["eval"][0] and "metrics.json: missing" in named["eval"][0]
    assert comparable(report_of(result), cache) == comparable(first, cache)
    assert not [line for line in intervene(cwd=workdir, cache=cache).stderr.splitlines() if line.startswith("warning")]


def test_two_runs_started_together_get_their_own_folders(first_run, workdir):
    _, first = first_run
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEBIAS_CACHE_DIR": str(workdir / "cache")}
    command = [sys.executable, str(ROOT / "pipelines" / "intervene.py"), *TINY,
               "hydra.run.dir=${unique_dir:'outputs/together/run'}"]  # one name for both, as in one second
    jobs = [subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [job.communicate(timeout=900) for job in jobs]
    assert all(job.returncode == 0 for job in jobs), [err[-2000:] for _, err in outputs]
    reports = sorted(Path(out.strip().splitlines()[-1].removeprefix("report: ")) for out, _ in outputs)
    assert [r.parent.name for r in reports] == ["run", "run_2"]
    assert comparable(reports[0], workdir / "cache") == comparable(reports[1], workdir / "cache") == comparable(first, workdir / "cache")


def test_sweep_shares_work_and_ends_with_the_comparison(first_run, workdir):
    cache = workdir / "sweep-cache"
    shutil.copytree(workdir / "cache" / "demo", cache / "demo")
    sweep_dir = workdir / "sweep"
    result = intervene("--multirun", "+sweep=demo", f"hydra.sweep.dir={sweep_dir}", cwd=workdir, cache=cache)
    last = result.stdout.strip().splitlines()[-1]
    markdown = sweep_dir / "comparison" / "comparison.md"
    assert last == f"comparison: {markdown}" and markdown.is_file()
    done = lambda kind: sorted(p.parent.name for p in (cache / kind).glob("*/.done"))  # noqa: E731
    # 2 ratios x (control + m2f + swap) trained once each; + 2 baselines evaluated once each.
    assert len(done("train")) == 6 and len(done("eval")) == 8
    # The 21% passes serve the 7% runs: two passes written, two reused.
    manifests = [json.loads(p.read_text()) for p in (cache / "rewrite").glob("*/manifest.json")]
    assert len(manifests) == 2 and len(list((cache / "rewrite").glob("*/reused.json"))) == 2
    header = next(line for line in markdown.read_text().splitlines() if line.startswith("| metric"))
    for label in ("baseline (step 79)", "baseline (step 93)", "control r=0.07", "control r=0.21",
                  "m2f r=0.07", "m2f r=0.21", "swap r=0.07", "swap r=0.21"):
        assert label in header
    paired = [line for line in markdown.read_text().splitlines() if "treatment vs control" in line]
    assert {line.split("|")[1].strip() for line in paired} == {"m2f r=0.07", "m2f r=0.21", "swap r=0.07", "swap r=0.21"}
