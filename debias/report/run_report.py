"""One run's report: report.json (machines), report.md and report.html (people).

The report dict is assembled by the pipeline; this module only lays it out. Expected keys (all
optional except `arms`):
  run          {direction, ratio, start_step, end_step, ...}
  model, data  identities and checksums
  config       the resolved Hydra configuration
  rewrite      the rewrite audit summary
  training     {arm: training summary, ...}; `loss_curve: [[step, loss], ...]` inside each
  arms         {baseline|control|treatment: {"metrics": {section: {...}}, ...}}
  comparisons  {"treatment_vs_control": {section: {...}}, ...}  (paired tests)
  timing       timestamps and durations: the only part allowed to differ between identical runs
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Mapping

from debias.io import atomic_output, write_json_atomic, write_text_atomic
from debias.report import plots
from debias.report.metrics import (HEADLINE_FIELDS, HEADLINE_METRICS, P_NOTE, Metric, format_p, metrics_of,
                                   paired_tests)

ARM_ORDER = ("baseline", "control", "treatment")


def ordered_arms(arms: Mapping[str, Any]) -> list[str]:
    return [a for a in ARM_ORDER if a in arms] + sorted(a for a in arms if a not in ARM_ORDER)


def arm_metrics(report: Mapping[str, Any]) -> dict[str, dict[str, Metric]]:
    arms = report.get("arms", {})
    return {arm: metrics_of(arms[arm].get("metrics", {})) for arm in ordered_arms(arms)}


def figures(report: Mapping[str, Any]) -> dict[str, bytes]:
    """{file stem: PNG bytes} for every figure the report's data supports."""
    arms = {arm: report["arms"][arm].get("metrics", {}) for arm in ordered_arms(report.get("arms", {}))}
    curves = {arm: summary.get("loss_curve") for arm, summary in report.get("training", {}).items()
              if isinstance(summary, Mapping)}
    drawn = {
        "training_loss": plots.training_loss(curves),
        "winobias_per_occupation": plots.winobias_per_occupation(arms),
        "crows_pairs_stereo_antistereo": plots.crows_pairs_stereo_antistereo(arms),
        "manipulation_check": plots.manipulation_check(arms),
    }
    return {name: png for name, png in drawn.items() if png}


# ---- tables shared by Markdown and HTML -------------------------------------------------------

def metrics_table(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows = metrics, columns = arms; each cell `value [low, high]`, plus n."""
    by_arm = arm_metrics(report)
    names = sorted({name for metrics in by_arm.values() for name in metrics})
    header = ["metric", "n", *by_arm]
    rows = []
    for name in names:
        ns = {m.n for metrics in by_arm.values() if (m := metrics.get(name)) and m.n is not None}
        n = str(ns.pop()) if len(ns) == 1 else "/".join(str(x) for x in sorted(ns))
        rows.append([name, n, *[(metrics[name].cell() if name in metrics else "") for metrics in by_arm.values()]])
    return header, rows


def headline_table(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each benchmark's headline metric per arm, and the treatment's paired effect on it."""
    by_arm = arm_metrics(report)
    versus = next((c for c in ("treatment_vs_control", "control_vs_baseline") if c in report.get("comparisons", {})), None)
    tests = {t.metric.name.split(".")[0]: t for t in paired_tests(report["comparisons"][versus])
             if t.metric.name in HEADLINE_FIELDS} if versus else {}
    header = ["metric", *by_arm] + ([f"{versus.replace('_vs_', ' - ')} (paired)"] if tests else [])
    rows = []
    for name in HEADLINE_METRICS:
        if any(name in metrics for metrics in by_arm.values()):
            test = tests.get(name.split(".")[0])
            effect = [f"{test.metric.name}: {test.metric.cell()} p={format_p(test.metric.p)}" if test else ""] if tests else []
            rows.append([name, *[(metrics[name].cell() if name in metrics else "") for metrics in by_arm.values()], *effect])
    return header, rows


def comparisons_table(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per paired test: which arms, which per-item field, A - B with its interval, p."""
    header = ["comparison", "metric", "difference [95% CI]", "p (bootstrap)", "p (McNemar)", "n"]
    rows = []
    for comparison in sorted(report.get("comparisons", {})):
        for test in paired_tests(report["comparisons"][comparison]):
            rows.append([comparison.replace("_", " "), test.metric.name, test.metric.cell(), format_p(test.metric.p),
                         format_p(test.mcnemar_p), "" if test.metric.n is None else str(test.metric.n)])
    return header, rows


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """Short key: value lines for the run's identity (used at the top of both formats)."""
    run, model = report.get("run", {}), report.get("model", {})
    lines = []
    if run:
        lines.append("intervention: " + ", ".join(f"{k}={run[k]}" for k in sorted(run) if not isinstance(run[k], (dict, list))))
    if model:
        lines.append("model: " + ", ".join(f"{k}={model[k]}" for k in sorted(model) if not isinstance(model[k], (dict, list))))
    return lines


def _flat(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> [(dotted key, value)] for small summaries (audit, training)."""
    if isinstance(obj, Mapping):
        out = []
        for key in sorted(obj, key=str):
            out.extend(_flat(obj[key], f"{prefix}{key}."))
        return out
    if isinstance(obj, list) and len(obj) > 8:
        return [(prefix[:-1], f"[{len(obj)} entries]")]
    return [(prefix[:-1], json.dumps(obj, default=str) if not isinstance(obj, str) else obj)]


# ---- Markdown ---------------------------------------------------------------------------------

def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])



def render_markdown(report: Mapping[str, Any], figure_files: Mapping[str, str]) -> str:
    parts = ["# debias run report", ""]
    parts += [f"- {line}" for line in summary_lines(report)]
    header, rows = headline_table(report)
    if rows:
        parts += ["", "## Headline (value [95% CI])", "", markdown_table(header, rows)]
    parts += ["", "## All metrics (value [95% CI])", "", markdown_table(*metrics_table(report))]
    header, rows = comparisons_table(report)
    if rows:
        parts += ["", "## Paired comparisons", "", P_NOTE, "", markdown_table(header, rows)]
    for title, key in (("Rewrite audit", "rewrite"),):
        if report.get(key):
            parts += ["", f"## {title}", "", markdown_table(["key", "value"], [list(kv) for kv in _flat(report[key])])]
    training = {arm: {k: v for k, v in s.items() if k != "loss_curve"} for arm, s in report.get("training", {}).items()
                if isinstance(s, Mapping)}
    if training:
        parts += ["", "## Training", "", markdown_table(["key", "value"], [list(kv) for kv in _flat(training)])]
    if figure_files:
        parts += ["", "## Figures", ""]
        parts += [f"![{name}]({path})" for name, path in figure_files.items()]
    return "\n".join(parts) + "\n"


# ---- HTML -------------------------------------------------------------------------------------

CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f0f0f0; }
td.num { font-family: monospace; }
img { max-width: 100%; margin: 0.5em 0; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.8em; }
.warning { color: #a60; font-weight: bold; }
"""


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"num\">{html.escape(str(c))}</td>" if i else f"<td>{html.escape(str(c))}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_image(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(name.replace("_", " "))}</figcaption></figure>'


def html_page(title: str, body: list[str]) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def render_html(report: Mapping[str, Any], pngs: Mapping[str, bytes]) -> str:
    body = ["<h1>debias run report</h1>", "<ul>"]
    body += [f"<li>{html.escape(line)}</li>" for line in summary_lines(report)]
    body.append("</ul>")
    header, rows = headline_table(report)
    if rows:
        body += ["<h2>Headline (value [95% CI])</h2>", html_table(header, rows)]
    body += ["<h2>All metrics (value [95% CI])</h2>", html_table(*metrics_table(report))]
    header, rows = comparisons_table(report)
    if rows:
        body += ["<h2>Paired comparisons</h2>", f"<p>{P_NOTE}</p>", html_table(header, rows)]
    if pngs:
        body += ["<h2>Figures</h2>", *[html_image(name, png) for name, png in pngs.items()]]
    if report.get("rewrite"):
        body += ["<h2>Rewrite audit</h2>", html_table(["key", "value"], [list(kv) for kv in _flat(report["rewrite"])])]
    if report.get("config"):
        body += ["<h2>Resolved configuration</h2>",
                 f"<pre>{html.escape(json.dumps(report['config'], indent=2, sort_keys=True, default=str))}</pre>"]
    return html_page("debias run report", body)


# ---- entry point ------------------------------------------------------------------------------

def write_run_report(run_dir: str | Path, report: Mapping[str, Any]) -> Path:
    """Write report.json, report.md, report.html and plots/*.png into run_dir; return report.json.

    report.json is the input dict itself (sorted keys), so identical runs give identical files
    apart from the `timing` section.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pngs = figures(report)
    figure_files = {}
    for name, png in pngs.items():
        path = run_dir / "plots" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        with atomic_output(path) as tmp:
            tmp.write_bytes(png)
        figure_files[name] = f"plots/{name}.png"
    write_text_atomic(run_dir / "report.md", render_markdown(report, figure_files))
    write_text_atomic(run_dir / "report.html", render_html(report, pngs))
    # report.json last: its presence means the whole report is there.
    return write_json_atomic(run_dir / "report.json", report)

