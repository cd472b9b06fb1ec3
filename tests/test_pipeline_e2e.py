"""The whole pipeline on a tiny demo suite, for real: every stage, the report, determinism, and a
sweep that shares its work and ends with the comparison. Slow (minutes on 2 cores)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    summary = lines[-6:-1]
    assert [line.split(":")[0] for line in summary] == ["run", "rewrite", "training", "bias", "perplexity.perplexity"]
    report = json.loads(report_path.read_text())
    assert set(report["arms"]) == {"baseline", "control", "treatment"}
    for arm in report["arms"].values():
        crows = arm["metrics"]["crows_pairs"]
        assert 0 <= crows["pct_stereotype"] <= 1 and len(crows["pct_stereotype_ci95"]) == 2 and crows["n"] > 0
        assert "likelihood_diff" in crows and "winobias" in arm["metrics"]
    assert report["crows_pairs"] == report["arms"]["treatment"]["metrics"]["crows_pairs"]  # headline arm
    assert report["rewrite"]["audit"]["changed_tokens"] > 0
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
                 **{kind: len(list((cache / kind).glob("*/.done"))) for kind in ("train", "eval")}}
    finally:
        shutil.rmtree(cache)
        kept.rename(cache)
    assert built == {"rewrite": 1, "train": 2, "eval": 3}  # rewritten, both arms retrained, all re-evaluated
    third = Path(recomputed.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert comparable(first, cache) == comparable(third, cache)


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
