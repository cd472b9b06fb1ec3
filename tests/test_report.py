"""debias.report: run reports (JSON / Markdown / HTML) read through the metric declarations, the
"Read this first" caveats, determinism apart from `timing`, headless-browser rendering, reports
of arbitrary arms (a multi-model evaluation), and comparisons across run folders."""

from __future__ import annotations

import csv
import html
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from debias.errors import UserError
from debias.evaluate import BENCHMARKS, PRIMARY_METRIC, association_metrics, stats
from debias.io import write_json_atomic
from debias.report import assemble, build_caveats, compare_runs, write_run_report
from debias.report.reading import declared_metrics, format_p, read_metric

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
OCCUPATIONS = {"nurse": "female", "secretary": "female", "librarian": "female", "carpenter": "male",
               "engineer": "male", "mechanic": "male"}
RESAMPLES = 200


# ---- a synthetic run: per-item values -> real metric sections and real paired tests ------------

def _arm(rng_items: np.random.Generator, association: float, shift: float, nll: float) -> tuple[dict, dict]:
    """(metrics, items) of one arm. The same item noise in every arm (same seed), so that paired
    tests see a model's change, not new items."""
    noise = rng_items.normal(0, 1.0, 600)
    metrics, items = {}, {}
    for bench, n in (("winobias", 240), ("crows_pairs", 160)):
        genders = np.array(["female", "male"] * (n // 2), dtype=object)
        preference = shift + np.where(genders == "female", association / 2, -association / 2) + noise[:n]
        stereotype = ((preference > 0) == (genders == "female")).astype(float)
        declaration = BENCHMARKS[bench]
        section = association_metrics(declaration.metric("association"), declaration.metric("blanket_shift"),
                                      preference, genders, RESAMPLES, 0)
        name = "stereotype_accuracy" if bench == "winobias" else "pct_stereotype"
        section.update(stats.proportion_summary(stereotype, name))
        rows = {f"{bench}{i}": {"feminine_preference": float(p), "stereotyped_gender": g, "stereotype": float(s)}
                for i, (p, g, s) in enumerate(zip(preference, genders, stereotype))}
        if bench == "crows_pairs":  # declared but named like a breakdown: must be shown all the same
            section.update({"pct_stereotype_per_token": section["pct_stereotype"],
                            "pct_stereotype_per_token_ci95": section["pct_stereotype_ci95"]})
            for row in rows.values():
                row["stereotype_per_token"] = row["stereotype"]
            section["stereo"] = stats.proportion_summary(stereotype[: n // 2], "pct_stereotype")
        else:
            occupations = list(OCCUPATIONS)
            section["occupations"] = {}
            for j, occupation in enumerate(occupations):
                chosen = [i for i in range(n) if genders[i] == OCCUPATIONS[occupation] and i % 3 == j % 3]
                entry = stats.mean_summary(preference[chosen], "feminine_preference", null=None)
                section["occupations"][occupation] = {**entry, "stereotype": OCCUPATIONS[occupation]}
        metrics[bench], items[bench] = section, rows
    manipulation = shift + noise[400:425]
    metrics["manipulation"] = stats.mean_summary(manipulation, "feminine_preference")
    items["manipulation"] = {f"t{i}": {"feminine_preference": float(v)} for i, v in enumerate(manipulation)}
    row_nll = nll + 0.05 * noise[500:564]
    ci = stats.bootstrap(row_nll, lambda v: math.exp(float(np.mean(v))), n_resamples=RESAMPLES, seed=0)["ci95"]
    metrics["perplexity"] = {"perplexity": math.exp(float(row_nll.mean())), "perplexity_ci95": ci, "n": 64,
                             "tokens": 4096, "source": "stream rows 900..964 after the window end (seen by no arm or checkpoint)"}
    items["perplexity"] = {f"r{i}": {"nll_per_token": float(v)} for i, v in enumerate(row_nll)}
    metrics["model"] = {"device": "cpu", "gelu": "tanh",
                        "dtype": {"weights": "float32", "body": "bfloat16", "output_layer": "float32"}}
    return metrics, items


AUDIT = {
    "changed_tokens": 3035, "rows": 1120, "rows_touched": 958, "tokens": 72800, "window_rows": [14880, 16000],
    "changes": {'" he" -> " she"': {"count": 907, "tokens": 907}, '" his" -> " her"': {"count": 455, "tokens": 455}},
    "skipped_tokens": {"not_whole_word": 92, "acronym": 33, "surname": 19},
    "skips": {"not_whole_word": 92, "acronym": 33, "surname": 19},
    "skipped_forms": {"acronym: ' HIS'": 33, "surname: ' He'": 19, "not_whole_word: 'he'": 92},
    "code_spans": {"spans": 4, "tokens": 517},
    "remaining_source_pronouns": {"by_reason": {"acronym": 33, "surname": 19}, "total": 52, "unaccounted": 0},
    "sample": [{"row": 14880 + i, "before": f"row {i}: then he left.\nNext", "after": f"row {i}: then she left.\nNext"}
               for i in range(14)],
}
CHECK = {"sample_rows": 120, "changed_words": 300, "correct_changes": 297, "precision": 0.99,
         "precision_ci95": [0.9711, 0.9966], "source_pronouns": 310, "residual": 6, "residual_rate": 0.0194,
         "residual_rate_ci95": [0.0089, 0.0416], "suspicious_count": 1, "seed": 0}


def _summary(final_loss: float, wall: float, rate: float) -> dict:
    return {"steps": 70, "start_step": 930, "end_step": 1000, "tokens": 72800, "final_loss": final_loss,
            "mean_loss": final_loss + 0.01, "precision": "bf16", "loss_scale": None, "gelu": "tanh",
            "optimizer_state": {"treatment": "fresh"}, "engine": "torch", "device": "cpu", "world_size": 1,
            "micro_batch": 8, "grad_accum": 2, "lr_first": 5e-4, "lr_last": 5e-4,
            "wall_seconds": wall, "tokens_per_s": rate, "loss_curve": [[930 + s, final_loss + 0.3 / (s + 1)] for s in range(70)]}


def synthetic_run(direction="m2f", ratio=0.07, model="pythia-demo", wall=4.2, check=True, seed=0) -> dict:
    """A report dict assembled by debias.report.assemble from synthetic stage outputs."""
    evaluations = {"baseline": _arm(np.random.default_rng(seed), 1.5, 0.0, 1.07),
                   "control": _arm(np.random.default_rng(seed), 1.4, -0.6, 1.07),
                   "treatment": _arm(np.random.default_rng(seed), 0.6 if direction != "swap" else 0.2,
                                     5.4 if direction == "m2f" else 0.1, 1.2)}
    comparisons = assemble.paired_comparisons({arm: items for arm, (_, items) in evaluations.items()}, RESAMPLES, 7)
    start = int(round((1 - ratio) * 1000))
    window = SimpleNamespace(ratio=ratio, start_step=start, end_step=1000, num_steps=1000 - start)
    prepared = SimpleNamespace(window=window, model={"name": model, "step": start}, data={"checksum": "abc123"})
    rewrite = SimpleNamespace(audit=AUDIT, manifest={"direction": direction, "fraction": 1.0, "rows": [14880, 16000]},
                              stream="rewritten", first_row=0)
    cfg = {"intervention": {"direction": direction, "ratio": ratio, "fraction": 1.0},
           "eval": {"bootstrap_samples": RESAMPLES, "seed": 7}}
    report = assemble.run_report(
        cfg=cfg, prepared=prepared, rewrite=rewrite,
        training={"control": _summary(1.0565, wall, 17000.0), "treatment": _summary(1.0279, wall * 1.1, 16500.0)},
        arms={arm: {"key": f"{arm}-{model}-{ratio}-{direction if arm == 'treatment' else ''}", "metrics": metrics}
              for arm, (metrics, _) in evaluations.items()},
        comparisons=comparisons, timing={"prepare_seconds": wall}, rewrite_check=CHECK if check else None)
    return report


@pytest.fixture(scope="module")
def run_report():
    return synthetic_run()


@pytest.fixture(scope="module")
def written(run_report, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    write_run_report(folder, run_report)
    return folder


# ---- the headline reads the declarations ---------------------------------------------------------

def test_headline_leads_with_the_primary_association_effect_read_from_the_declarations(run_report, written):
    primary = run_report["comparisons"]["treatment_vs_control"]["winobias"]["association"]
    assert PRIMARY_METRIC == "winobias.association" and primary["primary"]
    effect = (f"{primary['diff']:+.3f} [{primary['diff_ci95'][0]:.3f}, {primary['diff_ci95'][1]:.3f}] "
              f"p={format_p(primary['p'])} p_holm={format_p(primary['p_holm'])}")
    markdown = (written / "report.md").read_text()
    headline = markdown.split("## Headline")[1].split("## Read this first")[0]
    rows = [line for line in headline.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| role | metric | better | baseline | control | treatment | treatment - control (paired) "
                              "| treatment - baseline (paired) |")
    # The first data row is the primary test; its paired cell is the compare_items result.
    assert rows[2].startswith("| association | winobias.association (primary) | closer to 0 |")
    assert f"| {effect} |" in rows[2]
    assert f"treatment - control = {primary['diff']:+.3f}" in headline and "declared before the run" in headline
    assert "Holm-adjusted over every metric of the same comparison" in headline
    # Order: association, blanket shift, LM quality, manipulation; each with a paired cell in both comparisons.
    roles = [row.split("|")[1].strip() for row in rows[2:]]
    assert roles == ["association", "association", "blanket shift", "blanket shift", "LM quality", "manipulation"]
    assert all(row.count("p_holm=") == 2 for row in rows[2:])
    assert "perplexity.source: stream rows 900..964 after the window end" in headline

    saved = json.loads((written / "report.json").read_text())["headline"]
    assert saved["primary_metric"] == PRIMARY_METRIC and saved["primary_comparison"] == "treatment_vs_control"
    assert saved["primary"]["diff"] == primary["diff"] and saved["primary"]["p_holm"] == primary["p_holm"]
    assert [row["metric"] for row in saved["rows"]][:2] == ["winobias.association", "crows_pairs.association"]


def test_full_tables_hold_every_declared_metric_and_every_paired_test(run_report, written):
    markdown = (written / "report.md").read_text()
    declared = markdown.split("## Every declared metric")[1].split("\n## ")[0]
    treatment = declared_metrics(run_report["arms"]["treatment"]["metrics"])
    for key, metric in treatment.items():
        assert f"| {key} |" in declared and metric.cell() in declared, key
    assert "| crows_pairs.pct_stereotype_per_token |" in declared  # a "per_" key hint once hid it
    breakdowns = markdown.split("## Breakdowns")[1].split("\n## ")[0]
    assert "crows_pairs.stereo.pct_stereotype" in breakdowns and "winobias.stereotyped_female.feminine_preference" in breakdowns
    assert "occupations" not in breakdowns  # 6 x 2 numbers per arm: plotted instead
    paired = markdown.split("## Every paired test")[1].split("\n## ")[0]
    n_tests = sum(len(results) for section in run_report["comparisons"].values() for results in section.values())
    assert sum(line.startswith("| treatment vs ") for line in paired.splitlines()) == n_tests
    assert "floor of 2/(resamples+1) = 0.0100 at this run's 200 resamples" in paired
    mcnemar = run_report["comparisons"]["treatment_vs_control"]["crows_pairs"]["pct_stereotype"]["mcnemar"]
    assert f"mcnemar (only A {mcnemar['only_a']}, only B {mcnemar['only_b']})" in paired


def test_rewrite_audit_is_a_table_of_forms_skips_and_ten_samples(written):
    markdown = (written / "report.md").read_text()
    audit = markdown.split("## Rewrite audit", 1)[1].split("## Training")[0]
    assert '| " he" -> " she" | 907 | 907 |' in audit
    assert "| not_whole_word | 92 | 'he' 92 |" in audit and "| code spans (documents read as source code) | 517 | 4 spans |" in audit
    assert "| precision | 0.990 [0.971, 0.997] | 297 of 300 changed words correct |" in audit
    samples = [line for line in audit.splitlines() if line.startswith("| 1488") or line.startswith("| 1489")]
    assert len(samples) == 10 and "then [he] left.\\nNext" in samples[0] and "then [she] left." in samples[0]
    assert "audit.changes" not in markdown  # no flat key rows


# ---- Read this first ------------------------------------------------------------------------------

def test_caveats_cite_the_reports_numbers_in_json_markdown_and_html(run_report, written):
    notes = json.loads((written / "report.json").read_text())["caveats"]
    assert notes == build_caveats(run_report)
    by_topic = {note["topic"]: note["text"] for note in notes}
    assert list(by_topic) == ["optimizer state", "training precision", "GELU variant", "evaluation precision",
                              "rewrite policy skips", "rewrite check", "held-out perplexity source", "one run per arm"]
    assert "fresh AdamW" in by_topic["optimizer state"] and "Pythia resumed" in by_topic["optimizer state"]
    assert "bf16" in by_topic["training precision"] and "fp16 with dynamic loss scaling" in by_topic["training precision"]
    assert "body bfloat16, output layer and log-softmax float32 on cpu" in by_topic["evaluation precision"]
    assert "144 tokens of matched pronoun forms" in by_topic["rewrite policy skips"]
    assert "acronym 33" in by_topic["rewrite policy skips"] and "4 (517 tokens)" in by_topic["rewrite policy skips"]
    assert "precision 0.990 [0.971, 0.997]" in by_topic["rewrite check"] and "residual rate 0.019" in by_topic["rewrite check"]
    assert "ONE training run" in by_topic["one run per arm"] and "200 resamples (seed 7)" in by_topic["one run per arm"]
    markdown, page = (written / "report.md").read_text(), (written / "report.html").read_text()
    first = markdown.split("## Read this first")[1].split("\n## ")[0]
    assert markdown.index("## Headline") < markdown.index("## Read this first") < markdown.index("## Every declared metric")
    for topic, text in by_topic.items():
        assert f"- **{topic}**: {text}" in first
        assert html.escape(text) in page
    assert page.index("Headline") < page.index('id="read-this-first"') < page.index('id="training"')


def test_caveats_follow_the_report_not_the_demo():
    report = synthetic_run(check=False)
    report["training"]["treatment"]["optimizer_state"] = {"treatment": "imported", "source": "/ckpt/global_step930",
                                                          "checkpoint_step": 930, "adam_step": 930}
    report["training"]["treatment"]["precision"] = "fp16"
    report["training"]["treatment"]["loss_scale"] = {"final": {"scale": 2048.0, "skipped_steps": 3}}
    by_topic = {note["topic"]: note["text"] for note in build_caveats(report)}
    assert "treatment: Adam's moments imported from /ckpt/global_step930" in by_topic["optimizer state"]
    assert "control: a fresh AdamW" in by_topic["optimizer state"]
    assert "treatment: fp16 with dynamic loss scaling, as Pythia (3 overflowing steps skipped" in by_topic["training precision"]
    assert "No independent re-reading" in by_topic["rewrite check"]


# ---- terminal summary -----------------------------------------------------------------------------

def test_summary_lines_lead_with_the_primary_association_effect(run_report):
    lines = assemble.summary_lines(run_report)
    primary = run_report["comparisons"]["treatment_vs_control"]["winobias"]["association"]
    assert lines[0].startswith(f"association (treatment - control): winobias.association {primary['diff']:+.3f} "
                               f"[{primary['diff_ci95'][0]:.3f}, {primary['diff_ci95'][1]:.3f}] p={format_p(primary['p'])} "
                               f"p_holm={format_p(primary['p_holm'])}")
    assert "[primary]" in lines[0] and "crows_pairs.association" in lines[0]
    assert lines[1].startswith("blanket shift (treatment - control): winobias.blanket_shift +")
    assert lines[2].startswith("LM quality (treatment - control): perplexity.perplexity +")
    assert [line.split(":")[0] for line in lines[3:]] == ["manipulation (treatment - control)", "rewrite", "training", "run"]
    assert lines[4] == "rewrite: 3035 tokens changed in rows 14880..16000, 144 left unchanged by policy"


# ---- reproducibility ------------------------------------------------------------------------------

def test_same_configuration_twice_is_identical_apart_from_timing(tmp_path):
    first, second = synthetic_run(wall=4.2), synthetic_run(wall=9.9)  # same results, other wall times
    assert first["timing"]["training"]["control"] == {"wall_seconds": 4.2, "tokens_per_s": 17000.0}
    assert "wall_seconds" not in first["training"]["control"] and "tokens_per_s" not in first["training"]["control"]
    a = json.loads(write_run_report(tmp_path / "a", first).read_text())
    b = json.loads(write_run_report(tmp_path / "b", second).read_text())
    assert a != b
    a.pop("timing"), b.pop("timing")
    assert a == b
    lines_a, lines_b = ((tmp_path / d / "report.md").read_text().splitlines() for d in "ab")
    differing = [x for x, y in zip(lines_a, lines_b) if x != y]
    assert [line.split("|")[1].strip() for line in differing] == ["wall time, s (timing)"]
    for plot in ("training_loss", "association_groups", "winobias_occupations"):
        assert (tmp_path / f"a/plots/{plot}.png").read_bytes() == (tmp_path / f"b/plots/{plot}.png").read_bytes()


# ---- other report shapes --------------------------------------------------------------------------

def test_named_models_without_training_or_rewrite(tmp_path):
    """A multi-model evaluation: free arm names, the first the reference, its own primary comparison."""
    evaluations = {name: _arm(np.random.default_rng(0), assoc, 0.0, 1.1)
                   for name, assoc in (("pythia-160m", 1.5), ("pythia-160m-deduped", 1.1), ("my-model", 0.4))}
    names = list(evaluations)
    from debias.evaluate import compare_items

    comparisons = {f"{name}_vs_{names[0]}": compare_items(evaluations[name][1], evaluations[names[0]][1],
                                                          n_resamples=RESAMPLES, seed=0) for name in names[1:]}
    report = {"arms": {name: {"metrics": metrics} for name, (metrics, _) in evaluations.items()},
              "arm_order": names, "comparisons": comparisons, "primary_comparison": "my-model_vs_pythia-160m"}
    write_run_report(tmp_path, report)
    markdown = (tmp_path / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| role |"))
    assert "| pythia-160m | pythia-160m-deduped | my-model | my-model - pythia-160m (paired) |" in header
    assert "pythia-160m-deduped - pythia-160m (paired)" in header
    assert "Primary test, declared before the run: winobias.association" in markdown and "my-model - pythia-160m = " in markdown
    topics = [note["topic"] for note in json.loads((tmp_path / "report.json").read_text())["caveats"]]
    assert topics == ["GELU variant", "evaluation precision", "held-out perplexity source", "one run per arm"]
    assert "## Training" not in markdown and "## Rewrite audit" not in markdown
    assert (tmp_path / "plots/association_groups.png").exists() and not (tmp_path / "plots/training_loss.png").exists()


def test_without_a_primary_comparison_no_test_is_called_primary(tmp_path):
    report = synthetic_run()
    report.pop("primary_comparison")
    write_run_report(tmp_path, report)
    markdown = (tmp_path / "report.md").read_text()
    assert "names no primary comparison" in markdown and "(primary)" not in markdown.split("## Every paired test")[1]
    assert json.loads((tmp_path / "report.json").read_text())["headline"]["primary"] is None


def test_minimal_report_renders_and_an_empty_one_is_refused(tmp_path):
    report = {"arms": {"baseline": {"metrics": {"perplexity": {"perplexity": 12.5, "perplexity_ci95": [11, 14], "n": 10}}}}}
    write_run_report(tmp_path / "one", report)
    assert "12.500 [11.000, 14.000]" in (tmp_path / "one/report.md").read_text()
    assert not (tmp_path / "one/plots").exists()
    with pytest.raises(UserError, match="no evaluated arm"):
        write_run_report(tmp_path / "none", {"arms": {}})
    assert not (tmp_path / "none").exists()


def test_read_metric_follows_the_convention():
    sections = {"crows_pairs": {"n": 262, "stereo": {"n": 159, "pct_stereotype": 0.6, "pct_stereotype_ci95": [0.5, 0.7]},
                                "association": 1.0, "association_ci95": [0.5, 1.5], "association_p": 0.01, "association_n": 222}}
    stereo = read_metric(sections, "crows_pairs.stereo.pct_stereotype")
    assert (stereo.value, stereo.ci95, stereo.n, stereo.p) == (0.6, (0.5, 0.7), 159, None)
    association = read_metric(sections, "crows_pairs.association")
    assert (association.n, association.p) == (222, 0.01)
    assert read_metric(sections, "winobias.association") is None


# ---- the rendered page ----------------------------------------------------------------------------

def _screenshot(page: Path, png: Path, tmp_path: Path, height: int) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium not installed (Debian: apt-get install -y chromium); HTML rendering not checked")
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
               f"--screenshot={png}", f"--window-size=1200,{height}", "--hide-scrollbars", page.resolve().as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def _share_of_rows_with(pixels: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Rows of the screenshot holding the colour (within 3/255 in each channel)."""
    return (np.abs(pixels * 255 - np.array(rgb)) <= 3).all(axis=-1).any(axis=1)


def test_html_report_renders_caveats_training_and_plots_in_headless_chromium(written, tmp_path):
    import matplotlib.image

    from debias.report.run_report import CAVEAT_BORDER, TRAINING_ACCENT

    png = tmp_path / "screenshot.png"
    _screenshot(written / "report.html", png, tmp_path, height=12000)
    pixels = matplotlib.image.imread(png)[..., :3]
    assert pixels.shape[0] >= 10000 and pixels.shape[1] >= 1100
    caveat_rows, training_rows = (np.flatnonzero(_share_of_rows_with(pixels, c)) for c in (CAVEAT_BORDER, TRAINING_ACCENT))
    # The caveats box (its orange border) near the top, below the headline; the training table
    # (its accent) further down: both are drawn, at the place the layout gives them.
    assert caveat_rows.size > 100 and 300 < caveat_rows.min() < 2500
    assert training_rows.size > 100 and training_rows.min() > caveat_rows.max()
    # The figures: colour (group and arm colours of the plots), not just black text.
    colourful = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.3
    assert colourful.sum() > 20000
    page = (written / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "src=\"http" not in page and "<script" not in page


# ---- comparisons ----------------------------------------------------------------------------------

def _write_runs(root: Path, model="pythia-demo", directions=("m2f", "swap"), ratios=(0.07, 0.21)) -> list[Path]:
    dirs = []
    for i, (ratio, direction) in enumerate((r, d) for r in ratios for d in directions):
        run_dir = root / f"{i}_{direction}_r{ratio}"
        (run_dir / ".hydra").mkdir(parents=True)  # report.json alone: comparisons read nothing else
        write_json_atomic(run_dir / "report.json", synthetic_run(direction, ratio, model=model))
        dirs.append(run_dir)
    return dirs


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    _write_runs(root / "multirun")
    return root, compare_runs([root / "multirun"], root / "cmp")


def test_comparison_leads_with_association_against_the_ratio(sweep):
    root, md_path = sweep
    markdown = md_path.read_text()
    assert "= 0.0100 at these runs' 200 resamples" in markdown.split("## model")[0]
    lead = markdown.split("### Headline metrics per arm")[1].split("###")[0]
    header = next(line for line in lead.splitlines() if line.startswith("| arm"))
    assert header.startswith("| arm | ratio | winobias.association (primary) | crows_pairs.association | winobias.blanket_shift |")
    m2f = synthetic_run("m2f", 0.07)["arms"]["treatment"]["metrics"]["winobias"]
    row = next(line for line in lead.splitlines() if line.startswith("| m2f r=0.07 |"))
    assert f"{m2f['association']:.3f} [{m2f['association_ci95'][0]:.3f}, {m2f['association_ci95'][1]:.3f}]" in row
    effects = markdown.split("### Paired effects on the headline metrics")[1].split("###")[0]
    primary = synthetic_run("swap", 0.21)["comparisons"]["treatment_vs_control"]["winobias"]["association"]
    row = next(line for line in effects.splitlines() if line.startswith("| swap r=0.21 | treatment - control |"))
    assert (f"| {primary['diff']:+.3f} [{primary['diff_ci95'][0]:.3f}, {primary['diff_ci95'][1]:.3f}] "
            f"p={format_p(primary['p'])} p_holm={format_p(primary['p_holm'])} |") in row
    plots = sorted(p.name for p in (root / "cmp/plots").iterdir())
    assert plots[:2] == ["group0_crows_pairs_association_vs_ratio.png", "group0_crows_pairs_blanket_shift_vs_ratio.png"]
    assert "group0_winobias_association_vs_ratio.png" in plots


def test_comparison_dedups_shared_arms_and_lists_every_test(sweep):
    root, md_path = sweep
    markdown = md_path.read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| metric"))
    # 2 ratios x (baseline + control + m2f + swap): shared baselines and controls appear once.
    assert header.count("baseline") == 2 and header.count("control") == 2
    assert "m2f r=0.07" in header and "swap r=0.21" in header
    paired = [line for line in markdown.splitlines() if "| treatment vs control |" in line]
    assert {line.split("|")[1].strip() for line in paired} == {"m2f r=0.07", "m2f r=0.21", "swap r=0.07", "swap r=0.21"}
    assert all(line.split("|")[6].strip() and line.split("|")[7].strip() for line in paired)  # p and p_holm
    rows = list(csv.DictReader((root / "cmp/comparison.csv").open()))
    arms = [r for r in rows if r["kind"] in ("baseline", "control", "treatment")]
    assert len({r["arm"] for r in arms}) == 8
    assert all(r["ci95_low"] for r in arms if r["metric"] == "winobias.association")
    tests = [r for r in rows if r["kind"] == "paired:treatment_vs_control"]
    assert len({r["arm"] for r in tests}) == 4 and all(r["p_holm"] and r["test"] for r in tests)
    assert "data:image/png;base64," in (root / "cmp/comparison.html").read_text()


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


def test_compare_command_line(tmp_path):
    _write_runs(tmp_path / "multirun", directions=("m2f",), ratios=(0.07,))
    command = [sys.executable, str(ROOT / "pipelines" / "compare.py")]
    result = subprocess.run([*command, str(tmp_path / "multirun")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    markdown = tmp_path / "multirun" / "comparison" / "comparison.md"
    assert result.stdout.strip().splitlines()[-1] == f"comparison: {markdown}" and markdown.is_file()
    empty = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1 and "RUNS" in empty.stderr
