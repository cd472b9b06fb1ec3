"""Line up many runs: one table of every arm x metric with intervals, the paired tests, and each
bias metric plotted against the intervention ratio (one line per direction).

Input: run folders (each with report.json) or multirun folders holding them. Arms shared between
runs (the baseline checkpoint, a ratio's control) appear once, recognised by their content key.
Runs of different models or evaluation data are never mixed: each model/data group gets its own
table, and the page says so at the top.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from debias.io import atomic_output, sha256_json, write_text_atomic
from debias.report import plots
from debias.report.metrics import (BIAS_SECTIONS, HEADLINE_FIELDS, P_NOTE, Metric, PairedTest, format_p, metrics_of,
                                   paired_tests)
from debias.report.run_report import ARM_ORDER, html_image, html_page, html_table, markdown_table

MAX_RATIO_PLOTS = 8


@dataclass
class Arm:
    """One evaluated model: the baseline checkpoint, a control or a treatment."""

    kind: str  # baseline | control | treatment
    direction: str  # "baseline", "none" (control) or the rewrite direction
    ratio: float | None
    start_step: int | None
    run_dir: Path
    metrics: dict[str, Metric]
    comparisons: dict[str, list[PairedTest]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.kind == "baseline":
            return f"baseline (step {self.start_step})" if self.start_step is not None else "baseline"
        name = "control" if self.kind == "control" else self.direction
        return f"{name} r={self.ratio}" if self.ratio is not None else name

    def sort_key(self):
        kind_rank = ARM_ORDER.index(self.kind) if self.kind in ARM_ORDER else len(ARM_ORDER)
        return (self.ratio if self.ratio is not None else -1.0, kind_rank, self.direction, str(self.run_dir))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ---- finding and reading runs -----------------------------------------------------------------

def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders among `paths`: a folder with report.json, or the job folders of a multirun
    (sub-folders with report.json or Hydra's .hydra/). Folders with neither are kept so that
    loading names them in a warning."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "report.json").exists() or not path.is_dir():
            found.append(path)
            continue
        jobs = sorted({p.parent for p in path.rglob("report.json")} | {p.parent for p in path.rglob(".hydra")})
        found.extend(jobs if jobs else [path])
    return list(dict.fromkeys(found))


def load_report(run_dir: Path) -> dict[str, Any] | None:
    """The run's report, or None after one warning naming the folder."""
    path = run_dir / "report.json"
    if not path.exists():
        warn(f"{run_dir}: no report.json (run unfinished or not a run folder); skipped")
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        warn(f"{path}: malformed report.json ({type(err).__name__}: {err}); skipped")
        return None
    if not isinstance(report, dict) or not isinstance(report.get("arms"), dict) or not report["arms"]:
        warn(f"{path}: malformed report.json (no 'arms' section with evaluated models); skipped")
        return None
    return report


def run_group(report: Mapping[str, Any]) -> tuple[str, str]:
    """(model, data) a run belongs to; only runs of the same group are compared with each other."""
    model, data = report.get("model", {}), report.get("data", {})
    model_name = str(model.get("name") or model.get("source") or "unknown model")
    data_id = data.get("checksum") or (sha256_json(data)[:12] if data else "unknown data")
    return model_name, str(data_id)


def arms_of(run_dir: Path, report: Mapping[str, Any]) -> list[tuple[str, Arm]]:
    """[(content key, Arm)] for every arm of one run."""
    run = report.get("run", {})
    ratio = run.get("ratio")
    out = []
    for kind, arm in report["arms"].items():
        direction = {"baseline": "baseline", "control": "none"}.get(kind, run.get("direction", kind))
        entry = Arm(kind=kind, direction=direction, ratio=None if kind == "baseline" else ratio,
                    start_step=run.get("start_step"), run_dir=run_dir,
                    metrics=metrics_of(arm.get("metrics", {})))
        if kind == "baseline":  # the baseline's place on the ratio axis is its window's ratio
            entry.ratio = ratio
        if kind == "treatment" or (kind == "control" and "treatment" not in report["arms"]):
            entry.comparisons = {name: paired_tests(section) for name, section in report.get("comparisons", {}).items()}
        key = arm.get("key") or sha256_json([str(run_dir), kind])
        out.append((f"{kind}:{key}", entry))
    return out


# ---- tables -----------------------------------------------------------------------------------

def metric_rows(arms: list[Arm]) -> tuple[list[str], list[list[str]]]:
    names = sorted({name for arm in arms for name in arm.metrics})
    header = ["metric", *[arm.label for arm in arms]]
    rows = [[name, *[(arm.metrics[name].cell() if name in arm.metrics else "") for arm in arms]] for name in names]
    return header, rows


def effect_rows(arms: list[Arm], comparison: str = "treatment_vs_control") -> tuple[list[str], list[list[str]]]:
    """One row per treatment: its effect against its control on each benchmark's headline field
    (difference [95% CI] and the paired p-value)."""
    treated = [arm for arm in arms if comparison in arm.comparisons]
    available = {t.metric.name for arm in treated for t in arm.comparisons[comparison]}
    columns = [name for name in HEADLINE_FIELDS if name in available]
    header = ["treatment", *[f"{name} (vs control)" for name in columns]]
    rows = []
    for arm in treated:
        tests = {t.metric.name: t for t in arm.comparisons[comparison]}
        rows.append([arm.label, *[f"{tests[n].metric.cell()} p={format_p(tests[n].metric.p)}" if n in tests else ""
                                  for n in columns]])
    return header, rows


def paired_rows(arms: list[Arm]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "comparison", "metric", "difference [95% CI]", "p (bootstrap)", "p (McNemar)", "n"]
    rows = []
    for arm in arms:
        for comparison in sorted(arm.comparisons):
            for test in arm.comparisons[comparison]:
                rows.append([arm.label, comparison.replace("_", " "), test.metric.name, test.metric.cell(),
                             format_p(test.metric.p), format_p(test.mcnemar_p),
                             "" if test.metric.n is None else str(test.metric.n)])
    return header, rows


def csv_text(groups: Mapping[tuple[str, str], list[Arm]]) -> str:
    """Long format: one line per (arm, metric) and per (paired test, metric)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "data", "run_dir", "arm", "kind", "direction", "ratio", "start_step",
                     "metric", "value", "ci95_low", "ci95_high", "n", "p"])
    for (model, data), arms in groups.items():
        for arm in arms:
            common = [model, data, str(arm.run_dir), arm.label]
            place = [arm.direction, "" if arm.ratio is None else arm.ratio, "" if arm.start_step is None else arm.start_step]
            for metric in arm.metrics.values():
                writer.writerow([*common, arm.kind, *place, *_metric_fields(metric)])
            for comparison in sorted(arm.comparisons):
                for test in arm.comparisons[comparison]:
                    writer.writerow([*common, f"paired:{comparison}", *place, *_metric_fields(test.metric)])
    return buffer.getvalue()


def _metric_fields(metric: Metric) -> list[Any]:
    low, high = metric.ci95 if metric.ci95 else ("", "")
    return [metric.name, metric.value, low, high, "" if metric.n is None else metric.n,
            "" if metric.p is None else metric.p]


# ---- plots against the ratio ------------------------------------------------------------------

def ratio_figures(arms: list[Arm]) -> dict[str, bytes]:
    """{metric name: PNG} for the headline bias metrics (top-level ones of the bias sections)."""
    names = sorted({name for arm in arms for name, m in arm.metrics.items()
                    if m.section in BIAS_SECTIONS and name.count(".") == 1 and m.ci95 is not None})
    figures = {}
    for name in names[:MAX_RATIO_PLOTS]:
        lines: dict[str, list[tuple[float, Metric]]] = {}
        for arm in arms:
            if arm.ratio is not None and name in arm.metrics:
                line = "control" if arm.kind == "control" else arm.direction
                lines.setdefault(line, []).append((float(arm.ratio), arm.metrics[name]))
        png = plots.metric_vs_ratio(name, lines)
        if png:
            figures[name] = png
    return figures


# ---- entry point ------------------------------------------------------------------------------

def collect(run_dirs: Iterable[str | Path]) -> tuple[dict[tuple[str, str], list[Arm]], list[Path]]:
    """Arms grouped by (model, data), de-duplicated by content key; and the runs that were read."""
    groups: dict[tuple[str, str], dict[str, Arm]] = {}
    used = []
    for run_dir in find_run_dirs(run_dirs):
        report = load_report(run_dir)
        if report is None:
            continue
        used.append(run_dir)
        group = groups.setdefault(run_group(report), {})
        for key, arm in arms_of(run_dir, report):
            if key not in group or (arm.comparisons and not group[key].comparisons):
                group[key] = arm
    ordered = {g: sorted(arms.values(), key=Arm.sort_key) for g, arms in sorted(groups.items())}
    return ordered, used


def compare_runs(run_dirs: Iterable[str | Path], out_dir: str | Path) -> Path:
    """Write comparison.{md,html,csv} and plots/ into out_dir; return the Markdown file's path."""
    from debias.errors import UserError

    out_dir = Path(out_dir)
    groups, used = collect(run_dirs)
    if not groups:
        raise UserError(f"{', '.join(map(str, run_dirs)) or '(no folders)'}: no readable report.json "
                        "(pass run folders or a multirun folder of finished runs)")
    mixed = len(groups) > 1
    notice = (f"These {len(used)} runs come from {len(groups)} different model/data combinations; "
              "each table below holds one combination and nothing is compared across them.")
    md = ["# debias comparison", "", f"Runs: {len(used)}. Cells: value [95% CI]. "
          "Paired tests: McNemar / paired bootstrap on the same items (from each run's report).", "", P_NOTE, ""]
    page = ["<h1>debias comparison</h1>", f"<p>Runs: {len(used)}. Cells: value [95% CI].</p>"]
    if mixed:
        md += [f"**Warning: {notice}**", ""]
        page.append(f'<p class="warning">Warning: {notice}</p>')
    for index, ((model, data), arms) in enumerate(groups.items()):
        # Read top to bottom: the effects, how they grow with the ratio, then every number.
        title = f"model {model}, data {data}"
        md += [f"## {title}", ""]
        page.append(f"<h2>{title}</h2>")
        header, rows = effect_rows(arms)
        if rows and len(header) > 1:
            heading = "Effect of each treatment against its control (difference [95% CI], paired p)"
            md += [f"### {heading}", "", markdown_table(header, rows), ""]
            page += [f"<h3>{heading}</h3>", html_table(header, rows)]
        for name, png in ratio_figures(arms).items():
            relative = f"plots/group{index}_{name.replace('.', '_')}_vs_ratio.png"
            with atomic_output(out_dir / relative) as tmp:
                tmp.write_bytes(png)
            md += [f"![{name} vs ratio]({relative})", ""]
            page.append(html_image(f"{name} vs intervention ratio", png))
        md += ["### Every metric (value [95% CI])", "", markdown_table(*metric_rows(arms)), ""]
        page += ["<h3>Every metric (value [95% CI])</h3>", html_table(*metric_rows(arms))]
        header, rows = paired_rows(arms)
        if rows:
            heading = "Paired tests (treatment vs its control and vs the baseline)"
            md += [f"### {heading}", "", markdown_table(header, rows), ""]
            page += [f"<h3>{heading}</h3>", html_table(header, rows)]
    md += ["## Runs", "", *[f"- {path}" for path in used], ""]
    write_text_atomic(out_dir / "comparison.csv", csv_text(groups))
    write_text_atomic(out_dir / "comparison.html", html_page("debias comparison", page))
    return write_text_atomic(out_dir / "comparison.md", "\n".join(md))
