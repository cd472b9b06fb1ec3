"""Line up many runs: the headline metrics (association, blanket shift, LM quality, manipulation)
against the intervention ratio with intervals, each run's paired effects with p and p_holm, the
plots against the ratio, then every metric and every paired test.

Input: run folders (each with report.json) or multirun folders holding them. Arms shared between
runs (the baseline checkpoint, a ratio's control) appear once, recognised by their content key.
Runs of different models or evaluation data are never mixed: each model/data group gets its own
tables, and the page says so at the top. Metrics and their roles come from the benchmarks'
declarations (debias.evaluate.metric_declarations), as in the run report.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from debias.evaluate import PRIMARY_METRIC, metric_declarations
from debias.io import atomic_output, sha256_json, write_text_atomic
from debias.report import plots
from debias.report.reading import (ARM_ORDER, HEADLINE_ROLES, HOLM_NOTE, P_NOTE, Metric, PairedResult, arm_names,
                                   breakdown_metrics, comparison_label, declared_metrics, format_p, p_note,
                                   primary_comparison, report_paired_results, split_comparison)
from debias.report.run_report import html_image, html_page
from debias.report.tables import html_table, markdown_table

MAX_RATIO_PLOTS = 8
HEADLINE_KEYS = [d.key for role in HEADLINE_ROLES for d in metric_declarations(headline=role)]


@dataclass
class Arm:
    """One evaluated model: the baseline checkpoint, a control, a treatment, or a named model."""

    name: str  # the arm's name in its report (baseline | control | treatment | a model label)
    direction: str  # "baseline", "none" (control), the rewrite direction, or the arm's name
    ratio: float | None
    start_step: int | None
    run_dir: Path
    metrics: dict[str, Metric]  # declared metrics, then breakdowns
    comparisons: dict[str, dict[str, PairedResult]] = field(default_factory=dict)  # those with this arm as A
    primary_comparison: str | None = None

    @property
    def label(self) -> str:
        if self.name == "baseline":
            return f"baseline (step {self.start_step})" if self.start_step is not None else "baseline"
        if self.name not in ARM_ORDER:
            return self.name
        name = "control" if self.name == "control" else self.direction
        return f"{name} r={self.ratio}" if self.ratio is not None else name

    @property
    def line(self) -> str:
        """The line this arm belongs to in plots against the ratio."""
        return "control" if self.name == "control" else self.direction

    def sort_key(self):
        kind_rank = ARM_ORDER.index(self.name) if self.name in ARM_ORDER else len(ARM_ORDER)
        return (self.ratio if self.ratio is not None else -1.0, kind_rank, self.direction, str(self.run_dir))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ---- finding and reading runs ----------------------------------------------------------------------

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
    model, data, run = report.get("model") or {}, report.get("data") or {}, report.get("run") or {}
    if run.get("kind") == "models":  # pipelines/evaluate.py: named models against a reference
        model_name = f"models (reference {run.get('reference')})"
    else:
        model_name = str(model.get("name") or model.get("source") or "unknown model")
    data_id = data.get("checksum") or (sha256_json(data)[:12] if data else "unknown data")
    return model_name, str(data_id)


def arms_of(run_dir: Path, report: Mapping[str, Any]) -> list[tuple[str, Arm]]:
    """[(content key, Arm)] for every arm of one run; each comparison "<a>_vs_<b>" goes with arm a."""
    run = report.get("run") or {}
    names = arm_names(report)
    primary = primary_comparison(report)
    out = []
    paired = report_paired_results(report)
    for name in names:
        arm = report["arms"][name]
        sections = arm.get("metrics", {})
        direction = {"baseline": "baseline", "control": "none"}.get(name, run.get("direction") or name)
        if name not in ARM_ORDER:
            direction = name
        entry = Arm(name=name, direction=direction, ratio=run.get("ratio"), start_step=run.get("start_step"),
                    run_dir=run_dir, metrics={**declared_metrics(sections), **breakdown_metrics(sections)})
        entry.comparisons.update({comparison: results for comparison, results in paired.items()
                                  if results and split_comparison(comparison, names)[0] == name})
        entry.primary_comparison = primary if primary in entry.comparisons else None
        key = arm.get("key") or sha256_json([str(run_dir), name])
        out.append((f"{name}:{key}", entry))
    return out


# ---- tables ----------------------------------------------------------------------------------------

def headline_rows(arms: list[Arm]) -> tuple[list[str], list[list[str]]]:
    """One row per arm: ratio, then each headline metric's value [95% CI]."""
    keys = [k for k in HEADLINE_KEYS if any(k in arm.metrics for arm in arms)]
    header = ["arm", "ratio", *[k + (" (primary)" if k == PRIMARY_METRIC else "") for k in keys]]
    rows = [[arm.label, "" if arm.ratio is None else str(arm.ratio),
             *[arm.metrics[k].cell() if k in arm.metrics else "" for k in keys]] for arm in arms]
    return header, rows


def effect_rows(arms: list[Arm]) -> tuple[list[str], list[list[str]]]:
    """One row per run's primary comparison (each treatment against its control): the paired
    effect on each headline metric, difference [95% CI] with p and p_holm."""
    compared = [arm for arm in arms if arm.primary_comparison]
    keys = [k for k in HEADLINE_KEYS if any(k in arm.comparisons[arm.primary_comparison] for arm in compared)]
    header = ["arm", "comparison", *[k + (" (primary)" if k == PRIMARY_METRIC else "") for k in keys]]
    rows = []
    for arm in compared:
        results = arm.comparisons[arm.primary_comparison]
        rows.append([arm.label, comparison_label(arm.primary_comparison),
                     *[results[k].cell() if k in results else "" for k in keys]])
    return header, rows


def metric_rows(arms: list[Arm]) -> tuple[list[str], list[list[str]]]:
    """Every metric (declared ones first, in declaration order) x every arm, value [95% CI]."""
    declared = [k for k in (d.key for d in metric_declarations()) if any(k in arm.metrics for arm in arms)]
    others = sorted({name for arm in arms for name in arm.metrics} - set(declared))
    header = ["metric", *[arm.label for arm in arms]]
    rows = [[name, *[(arm.metrics[name].cell() if name in arm.metrics else "") for arm in arms]]
            for name in declared + others]
    return header, rows


def paired_rows(arms: list[Arm]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "comparison", "metric", "A - B [95% CI]", "test", "p", "p_holm", "n"]
    rows = []
    for arm in arms:
        for comparison in sorted(arm.comparisons, key=lambda c: (c != arm.primary_comparison, c)):
            for result in arm.comparisons[comparison].values():
                rows.append([arm.label, comparison.replace("_", " "), result.key, result.effect.cell(signed=True),
                             result.test, format_p(result.p), format_p(result.p_holm),
                             "" if result.n is None else str(result.n)])
    return header, rows


def csv_text(groups: Mapping[tuple[str, str], list[Arm]]) -> str:
    """Long format: one line per (arm, metric) and per (paired test, metric)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "data", "run_dir", "arm", "kind", "direction", "ratio", "start_step",
                     "metric", "value", "ci95_low", "ci95_high", "n", "p", "p_holm", "test"])
    for (model, data), arms in groups.items():
        for arm in arms:
            common = [model, data, str(arm.run_dir), arm.label]
            place = [arm.direction, "" if arm.ratio is None else arm.ratio, "" if arm.start_step is None else arm.start_step]
            for metric in arm.metrics.values():
                writer.writerow([*common, arm.name, *place, *_metric_fields(metric), "", ""])
            for comparison in sorted(arm.comparisons):
                for result in arm.comparisons[comparison].values():
                    writer.writerow([*common, f"paired:{comparison}", *place, *_metric_fields(result.effect),
                                     "" if result.p_holm is None else result.p_holm, result.test])
    return buffer.getvalue()


def _metric_fields(metric: Metric) -> list[Any]:
    low, high = metric.ci95 if metric.ci95 else ("", "")
    return [metric.name, metric.value, low, high, "" if metric.n is None else metric.n,
            "" if metric.p is None else metric.p]


# ---- plots against the ratio -----------------------------------------------------------------------

def ratio_figures(arms: list[Arm]) -> dict[str, bytes]:
    """{metric key: PNG} for the headline metrics, in headline order, against the ratio."""
    figures = {}
    keys = [k for k in HEADLINE_KEYS if any(k in arm.metrics and arm.ratio is not None for arm in arms)]
    for key in keys[:MAX_RATIO_PLOTS]:
        lines: dict[str, list[tuple[float, Metric]]] = {}
        for arm in arms:
            if arm.ratio is not None and key in arm.metrics:
                lines.setdefault(arm.line, []).append((float(arm.ratio), arm.metrics[key]))
        png = plots.metric_vs_ratio(key, lines)
        if png:
            figures[key] = png
    return figures


# ---- entry point -----------------------------------------------------------------------------------

def collect(run_dirs: Iterable[str | Path]) -> tuple[dict[tuple[str, str], list[Arm]], list[Path], set]:
    """Arms grouped by (model, data), de-duplicated by content key; the runs that were read; and
    their numbers of bootstrap resamples (eval.bootstrap_samples)."""
    groups: dict[tuple[str, str], dict[str, Arm]] = {}
    used, resamples = [], set()
    for run_dir in find_run_dirs(run_dirs):
        report = load_report(run_dir)
        if report is None:
            continue
        used.append(run_dir)
        resamples.add(((report.get("config") or {}).get("eval") or {}).get("bootstrap_samples"))
        group = groups.setdefault(run_group(report), {})
        for key, arm in arms_of(run_dir, report):
            if key not in group or (arm.comparisons and not group[key].comparisons):
                group[key] = arm
    ordered = {g: sorted(arms.values(), key=Arm.sort_key) for g, arms in sorted(groups.items())}
    return ordered, used, resamples


def compare_runs(run_dirs: Iterable[str | Path], out_dir: str | Path) -> Path:
    """Write comparison.{md,html,csv} and plots/ into out_dir; return the Markdown file's path."""
    from debias.errors import UserError

    out_dir = Path(out_dir)
    groups, used, resamples = collect(run_dirs)
    if not groups:
        raise UserError(f"{', '.join(map(str, run_dirs)) or '(no folders)'}: no readable report.json "
                        "(pass run folders or a multirun folder of finished runs)")
    intro = (f"Runs: {len(used)}. Cells: value [95% CI]. Paired effects: A - B on the same items, from each run's "
             f"report, with the declared test's p and p_holm. The primary metric ({PRIMARY_METRIC}, each treatment "
             "against its control) was declared before the runs.")
    floor = p_note(resamples.pop(), "these runs'") if len(resamples) == 1 else P_NOTE  # the runs' own floor when they share it
    md = ["# debias comparison", "", intro, "", HOLM_NOTE, "", floor, ""]
    page = ["<h1>debias comparison</h1>", f"<p>{intro}</p>", f"<p>{HOLM_NOTE}</p>", f"<p>{floor}</p>"]
    if len(groups) > 1:
        notice = (f"These {len(used)} runs come from {len(groups)} different model/data combinations; "
                  "each table below holds one combination and nothing is compared across them.")
        md += [f"**Warning: {notice}**", ""]
        page.append(f'<p class="warning">Warning: {notice}</p>')
    for index, ((model, data), arms) in enumerate(groups.items()):
        # Read top to bottom: the headline per arm, the paired effects, the plots, then every number.
        title = f"model {model}, data {data}"
        md += [f"## {title}", ""]
        page.append(f"<h2>{title}</h2>")
        tables = [("Headline metrics per arm, against the intervention ratio (value [95% CI])", headline_rows(arms)),
                  ("Paired effects on the headline metrics (A - B [95% CI], p, p_holm)", effect_rows(arms))]
        for heading, (header, rows) in tables:
            if rows and len(header) > 2:
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
            heading = "Every paired test (each run's comparisons)"
            md += [f"### {heading}", "", markdown_table(header, rows), ""]
            page += [f"<h3>{heading}</h3>", html_table(header, rows)]
    md += ["## Runs", "", *[f"- {path}" for path in used], ""]
    write_text_atomic(out_dir / "comparison.csv", csv_text(groups))
    write_text_atomic(out_dir / "comparison.html", html_page("debias comparison", page))
    return write_text_atomic(out_dir / "comparison.md", "\n".join(md))

