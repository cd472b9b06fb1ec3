"""debias.report: run reports (JSON / Markdown / HTML), determinism, headless-browser rendering,
and comparisons across run folders (including malformed and mixed-model ones)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from debias.errors import UserError
from debias.io import write_json_atomic
from debias.report import compare_runs, write_run_report
from debias.report.metrics import metrics_of

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
OCCUPATIONS = ["carpenter", "nurse", "engineer", "secretary", "mechanic", "librarian"]


def _proportion(rng, p: float, n: int) -> dict:
    """A proportion in the report convention with a normal-approximation interval."""
    value = float(rng.binomial(n, p) / n)
    half = 1.96 * (value * (1 - value) / n) ** 0.5
    return {"value": value, "ci95": [value - half, value + half]}


def _section(rng, n: int, **means: float) -> dict:
    section: dict = {"n": n}
    for name, mean in means.items():
        metric = _proportion(rng, mean, n)
        section[name], section[f"{name}_ci95"] = metric["value"], metric["ci95"]
        section[f"{name}_p"] = float(rng.uniform(0, 0.05))
    return section


def synthetic_metrics(rng, skew: float) -> dict:
    crows = _section(rng, 262, pct_stereotype=0.5 + skew, pct_stereotype_norm=0.5 + skew / 2)
    crows["likelihood_diff"] = float(3 + rng.normal())
    crows["likelihood_diff_ci95"] = [crows["likelihood_diff"] - 0.4, crows["likelihood_diff"] + 0.4]
    crows["checksum"] = {"sha256": "abc", "size": 12345}
    crows["stereo"] = _section(rng, 159, pct_stereotype=0.5 + skew * 1.2)
    crows["antistereo"] = _section(rng, 103, pct_stereotype=0.5 + skew * 0.6)
    winobias = _section(rng, 792, stereotype_accuracy=0.5 + skew)
    winobias["per_occupation"] = {occ: _section(rng, 20, stereotype_accuracy=0.5 + skew) for occ in OCCUPATIONS}
    return {
        "crows_pairs": crows,
        "winobias": winobias,
        "perplexity": {"perplexity": float(20 + rng.normal()), "perplexity_ci95": [19.0, 22.0], "n": 64},
        "manipulation": _section(rng, 200, feminine_preference=0.5 - skew),
    }


def synthetic_report(direction="m2f", ratio=0.07, model="pythia-demo", seed=0) -> dict:
    rng = np.random.default_rng(seed)
    start = int(round((1 - ratio) * 100))
    arms = {
        "baseline": {"key": f"base-{model}-{start}", "metrics": synthetic_metrics(rng, 0.15)},
        "control": {"key": f"ctrl-{model}-{ratio}", "metrics": synthetic_metrics(rng, 0.14)},
        "treatment": {"key": f"{direction}-{model}-{ratio}", "metrics": synthetic_metrics(rng, 0.15 - ratio)},
    }
    # debias.evaluate.compare_items' shape: per benchmark, per item field.
    diff = {"crows_pairs": {"stereotype": {"metric": "stereotype", "a": 0.6, "b": 0.65, "diff": -0.05,
                                           "diff_ci95": [-0.09, -0.01], "diff_p": 0.012, "n": 262,
                                           "mcnemar": {"only_a": 10, "only_b": 23, "n": 262, "p": 0.036}}}}
    return {
        "run": {"direction": direction, "ratio": ratio, "start_step": start, "end_step": 100},
        "model": {"name": model, "checkpoint": f"/cache/{model}/step{start}", "step": start},
        "data": {"checksum": "abc123", "crows_pairs_sha256": "abc"},
        "config": {"intervention": {"direction": direction, "ratio": ratio}, "seed": 1234},
        "rewrite": {"changed_tokens": 1234, "rows_touched": 56, "counts": {" he -> she": 1000}},
        "training": {arm: {"steps": 7, "final_loss": 3.0,
                           "loss_curve": [[s, float(4 - 0.1 * s + rng.normal() * 0.01)] for s in range(7)]}
                     for arm in ("control", "treatment")},
        "arms": arms,
        "comparisons": {"treatment_vs_control": diff, "treatment_vs_baseline": diff},
        "timing": {"started": "2026-01-01T00:00:00", "seconds": float(rng.uniform())},
    }


def test_run_report_files_hold_every_metric(tmp_path):
    report = synthetic_report()
    path = write_run_report(tmp_path, report)
    assert path == tmp_path / "report.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    for name in ("report.md", "report.html", "plots/training_loss.png", "plots/winobias_per_occupation.png",
                 "plots/crows_pairs_stereo_antistereo.png", "plots/manipulation_check.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    markdown = (tmp_path / "report.md").read_text()
    treatment = report["arms"]["treatment"]["metrics"]["crows_pairs"]
    low, high = treatment["pct_stereotype_ci95"]
    assert f"{treatment['pct_stereotype']:.3f} [{low:.3f}, {high:.3f}]" in markdown
    assert "treatment vs control" in markdown and "| -0.050 [-0.090, -0.010] | 0.0120 | 0.0360 | 262 |" in markdown
    headline = next(line for line in markdown.splitlines() if line.startswith("| crows_pairs.pct_stereotype"))
    assert headline.endswith("| crows_pairs.stereotype: -0.050 [-0.090, -0.010] p=0.0120 |")
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "src=\"http" not in html and "<script" not in html  # self-contained


def test_metric_convention_is_read_with_intervals_and_n():
    metrics = metrics_of(synthetic_report()["arms"]["baseline"]["metrics"])
    metric = metrics["crows_pairs.stereo.pct_stereotype"]
    assert metric.n == 159 and metric.ci95 is not None and metric.p is not None
    assert metrics["crows_pairs.likelihood_diff"].n == 262
    assert not any("occupation" in name for name in metrics)  # breakdowns are plotted, not tabled
    assert "crows_pairs.checksum.size" not in metrics  # a description, not a measurement


def test_same_report_twice_is_identical_apart_from_timing(tmp_path):
    first, second = synthetic_report(seed=3), synthetic_report(seed=3)
    second["timing"] = {"started": "2027-05-05T10:00:00", "seconds": 99.0}
    a = json.loads(write_run_report(tmp_path / "a", first).read_text())
    b = json.loads(write_run_report(tmp_path / "b", second).read_text())
    assert a != b
    a.pop("timing"), b.pop("timing")
    assert a == b
    assert (tmp_path / "a/report.md").read_bytes() == (tmp_path / "b/report.md").read_bytes()
    assert (tmp_path / "a/plots/training_loss.png").read_bytes() == (tmp_path / "b/plots/training_loss.png").read_bytes()


def test_report_without_optional_stages_still_renders(tmp_path):
    report = {"arms": {"baseline": {"metrics": {"perplexity": {"perplexity": 12.5, "perplexity_ci95": [11, 14], "n": 10}}}}}
    write_run_report(tmp_path, report)
    assert "12.5" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "plots").exists()


def _screenshot(html: Path, png: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium not installed (Debian: apt-get install -y chromium); HTML rendering not checked")
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
               f"--screenshot={png}", "--window-size=1200,2400", "--hide-scrollbars", html.resolve().as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def test_html_report_renders_in_headless_chromium(tmp_path):
    write_run_report(tmp_path / "run", synthetic_report())
    png = tmp_path / "screenshot.png"
    _screenshot(tmp_path / "run/report.html", png, tmp_path)
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1100
    non_white = (pixels < 0.9).any(axis=-1)
    # Table text and four figures: a large share of rows carry ink, and the page has colour
    # (the red/blue bars of the plots), not just black text.
    assert non_white.any(axis=1).mean() > 0.5
    colourful = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.3
    assert colourful.sum() > 5000


# ---- comparisons ------------------------------------------------------------------------------

def _write_runs(root: Path, model="pythia-demo", directions=("m2f", "swap"), ratios=(0.07, 0.21)) -> list[Path]:
    dirs = []
    for i, (ratio, direction) in enumerate((r, d) for r in ratios for d in directions):
        run_dir = root / f"{i}_{direction}_r{ratio}"
        (run_dir / ".hydra").mkdir(parents=True)  # report.json alone: comparisons read nothing else
        write_json_atomic(run_dir / "report.json", synthetic_report(direction, ratio, model=model, seed=i))
        dirs.append(run_dir)
    return dirs


def test_compare_multirun_folder_dedups_shared_arms(tmp_path):
    _write_runs(tmp_path / "multirun")
    md_path = compare_runs([tmp_path / "multirun"], tmp_path / "cmp")
    markdown = md_path.read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| metric"))
    # 2 ratios x (baseline + control + m2f + swap): shared baselines and controls appear once.
    assert header.count("baseline") == 2 and header.count("control") == 2
    assert "m2f r=0.07" in header and "swap r=0.21" in header
    assert markdown.count("treatment vs control") == 4 and markdown.count("treatment vs baseline") == 4
    effects = markdown.split("### Effect of each treatment")[1].split("###")[0]
    assert "crows_pairs.stereotype (vs control)" in effects
    assert sum(line.startswith("| m2f r=") or line.startswith("| swap r=") for line in effects.splitlines()) == 4
    assert "-0.050 [-0.090, -0.010] p=0.0120" in effects
    rows = list(csv.DictReader((tmp_path / "cmp/comparison.csv").open()))
    metric_rows = [r for r in rows if r["kind"] in ("baseline", "control", "treatment")]
    assert len({r["arm"] for r in metric_rows}) == 8
    assert all(r["ci95_low"] for r in metric_rows if r["metric"] == "crows_pairs.pct_stereotype")
    assert sum(r["kind"] == "paired:treatment_vs_control" for r in rows) == 4
    plots = sorted(p.name for p in (tmp_path / "cmp/plots").iterdir())
    assert "group0_crows_pairs_pct_stereotype_vs_ratio.png" in plots
    assert "data:image/png;base64," in (tmp_path / "cmp/comparison.html").read_text()


def test_compare_warns_once_per_bad_folder_and_skips_it(tmp_path, capsys):
    runs = _write_runs(tmp_path / "multirun", ratios=(0.07,))
    (runs[0] / "report.json").write_text("{ not json")
    empty = tmp_path / "multirun" / "9_crashed"
    (empty / ".hydra").mkdir(parents=True)
    compare_runs([tmp_path / "multirun", tmp_path / "missing"], tmp_path / "cmp")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3
    assert sum(str(runs[0]) in w and "malformed" in w for w in warnings) == 1
    assert sum(str(empty) in w for w in warnings) == 1
    assert sum(str(tmp_path / "missing") in w for w in warnings) == 1
    markdown = (tmp_path / "cmp/comparison.md").read_text()
    assert "swap r=0.07" in markdown and "m2f r=0.07" not in markdown


def test_compare_keeps_different_models_apart(tmp_path):
    _write_runs(tmp_path / "a", model="pythia-demo", ratios=(0.07,))
    _write_runs(tmp_path / "b", model="pythia-70m-deduped", ratios=(0.07,))
    markdown = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp").read_text()
    assert "2 different model/data combinations" in markdown
    assert "## model pythia-demo" in markdown and "## model pythia-70m-deduped" in markdown
    tables = [line for line in markdown.splitlines() if line.startswith("| metric")]
    assert len(tables) == 2 and all(t.count("baseline") == 1 for t in tables)
    models = {r["model"] for r in csv.DictReader((tmp_path / "cmp/comparison.csv").open())}
    assert models == {"pythia-demo", "pythia-70m-deduped"}


def test_compare_with_nothing_readable_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no readable report.json"):
        compare_runs([tmp_path / "empty"], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_volatile_keys_move_to_timing_and_the_rest_stays():
    from debias.report.assemble import split_volatile

    stable, volatile = split_volatile({"final_loss": 2.5, "wall_seconds": 12.0, "tokens_per_s": 900.0,
                                       "engine": {"name": "torch", "started_utc": "2026-01-01"},
                                       "update_every": 3, "candidates": 2})
    assert stable == {"final_loss": 2.5, "engine": {"name": "torch"}, "update_every": 3, "candidates": 2}
    assert volatile == {"wall_seconds": 12.0, "tokens_per_s": 900.0, "engine.started_utc": "2026-01-01"}


def test_compare_command_line(tmp_path):
    _write_runs(tmp_path / "multirun", ratios=(0.07,))
    command = [sys.executable, str(ROOT / "pipelines" / "compare.py")]
    result = subprocess.run([*command, str(tmp_path / "multirun")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    markdown = tmp_path / "multirun" / "comparison" / "comparison.md"
    assert result.stdout.strip().splitlines()[-1] == f"comparison: {markdown}" and markdown.is_file()
    empty = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1 and "RUNS" in empty.stderr
