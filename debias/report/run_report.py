"""One run's report files: report.json (machines), report.md and report.html (people), plots/.

The report dict's contract is in debias/report/__init__.py. `write_run_report` adds two derived
sections to report.json, both computed from the rest of the dict: `headline` (the primary test
and the headline rows) and `caveats` ("Read this first"). Markdown and HTML read in this order:
what ran; the headline; read this first; figures; every declared metric; breakdowns; every
paired test; the rewrite audit; training (and, in HTML, the resolved configuration).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Mapping

from debias.io import atomic_output, write_json_atomic, write_text_atomic
from debias.report import plots, tables
from debias.report.caveats import build_caveats
from debias.report.reading import HOLM_NOTE, arm_metrics, arm_names, p_note

TITLE = "debias run report"
TRAINING = "Training"
FIGURE_CAPTIONS = {
    "association_groups": "Association vs blanket shift: each stereotype group's mean feminine preference per arm",
    "winobias_occupations": "WinoBias: feminine preference per occupation",
    "crows_pairs_splits": "CrowS-Pairs pct_stereotype and its splits",
    "manipulation_check": "Manipulation check",
    "training_loss": "Training loss",
}


def figures(report: Mapping[str, Any]) -> dict[str, bytes]:
    """{file stem: PNG bytes} for every figure the report's data supports."""
    arms = arm_metrics(report)
    curves = {arm: summary.get("loss_curve") for arm, summary in (report.get("training") or {}).items()
              if isinstance(summary, Mapping)}
    drawn = {
        "association_groups": plots.association_groups(arms),
        "winobias_occupations": plots.winobias_occupations(arms),
        "crows_pairs_splits": plots.crows_pairs_splits(arms),
        "manipulation_check": plots.manipulation_check(arms),
        "training_loss": plots.training_loss(curves),
    }
    return {name: png for name, png in drawn.items() if png}


def full_sections(report: Mapping[str, Any]) -> list[tuple[str, list[str], tables.Table]]:
    """The full tables after the headline, caveats and figures: (heading, notes, table), non-empty only."""
    rewrite_title = "Rewrite audit"
    candidates = [
        ("Every declared metric (value [95% CI])", [], tables.declared_table(report)),
        ("Breakdowns (value [95% CI]; not tested between arms)", [], tables.breakdown_table(report)),
        ("Every paired test (A - B on the same items)",
         [p_note(((report.get("config") or {}).get("eval") or {}).get("bootstrap_samples")), HOLM_NOTE],
         tables.paired_table(report)),
        (rewrite_title, tables.rewrite_lines(report), tables.forms_table(report)),
        (f"{rewrite_title}: pronoun forms left unchanged, by policy reason", [], tables.skips_table(report)),
        (f"{rewrite_title}: independent check", [], tables.check_table(report)),
        (f"{rewrite_title}: sample (changed words in [brackets])", [], tables.samples_table(report)),
        (TRAINING, ["tokens/s and wall time come from report.json's `timing`, the one part that differs between "
                      "identical runs."],
         tables.training_table(report)),
    ]
    return [entry for entry in candidates if entry[2]]


# ---- Markdown ------------------------------------------------------------------------------------

def render_markdown(report: Mapping[str, Any], figure_files: Mapping[str, str], notes: list[dict]) -> str:
    parts = [f"# {TITLE}", ""]
    parts += [f"- {line}" for line in tables.run_lines(report)]
    parts += ["", "## Headline", "", tables.primary_sentence(report), ""]
    shift = tables.shift_sentence(report)
    parts += [shift, ""] if shift else []
    headline = tables.headline_table(report)
    if headline:
        parts += [headline.markdown(), ""]
    parts += [*[f"- {note}" for note in tables.headline_notes(report) + tables.heldout_lines(report)], ""]
    if notes:
        parts += ["## Read this first", ""]
        parts += [f"- **{note['topic']}**: {note['text']}" for note in notes]
        parts.append("")
    if figure_files:
        parts += ["## Figures", ""]
        parts += [f"![{FIGURE_CAPTIONS.get(name, name)}]({path})" for name, path in figure_files.items()]
        parts.append("")
    for heading, paragraphs, table in full_sections(report):
        parts += [f"## {heading}", ""]
        parts += [*[f"- {p}" for p in paragraphs], ""] if paragraphs else []
        parts += [table.markdown(), ""]
    return "\n".join(parts).rstrip("\n") + "\n"


# ---- HTML ----------------------------------------------------------------------------------------

CAVEAT_BORDER = (230, 149, 0)   # the "Read this first" box's border (RGB)
TRAINING_ACCENT = (46, 125, 50)  # the training section's left rule (RGB)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


CSS = f"""
body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
td.num {{ font-family: monospace; }}
img {{ max-width: 100%; margin: 0.5em 0; border: 1px solid #eee; }}
pre {{ background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.8em; }}
.primary {{ font-size: 1.05em; background: #eef5ff; border-left: 4px solid #1f77b4; padding: 0.6em 1em; }}
.caveats {{ background: #fff7e6; border: 3px solid {_hex(CAVEAT_BORDER)}; padding: 0.4em 1.2em; margin: 1em 0; }}
.caveats h2 {{ color: #a35f00; }}
.caveats li {{ margin: 0.4em 0; }}
.training {{ border-left: 6px solid {_hex(TRAINING_ACCENT)}; padding-left: 1em; }}
.warning {{ color: #a60; font-weight: bold; }}
"""


def html_image(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>")


def html_page(title: str, body: list[str]) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _paragraphs(lines: list[str]) -> list[str]:
    return [f"<p>{html.escape(line)}</p>" for line in lines]


def render_html(report: Mapping[str, Any], pngs: Mapping[str, bytes], notes: list[dict]) -> str:
    body = [f"<h1>{TITLE}</h1>", "<ul>", *[f"<li>{html.escape(line)}</li>" for line in tables.run_lines(report)], "</ul>"]
    body += ["<h2>Headline</h2>", f'<p class="primary">{html.escape(tables.primary_sentence(report))}</p>']
    shift = tables.shift_sentence(report)
    body += _paragraphs([shift]) if shift else []
    headline = tables.headline_table(report)
    if headline:
        body.append(headline.html())
    body += _paragraphs(tables.headline_notes(report) + tables.heldout_lines(report))
    if notes:
        body += ['<section class="caveats" id="read-this-first"><h2>Read this first</h2><ul>',
                 *[f"<li><b>{html.escape(note['topic'])}</b>: {html.escape(note['text'])}</li>" for note in notes],
                 "</ul></section>"]
    if pngs:
        body += ["<h2>Figures</h2>", *[html_image(FIGURE_CAPTIONS.get(name, name), png) for name, png in pngs.items()]]
    for heading, paragraphs, table in full_sections(report):
        section = [f"<h2>{html.escape(heading)}</h2>", *_paragraphs(paragraphs), table.html()]
        if heading == TRAINING:  # per arm: loss, precision, optimizer state, tokens/s, steps
            section = ['<section class="training" id="training">', *section, "</section>"]
        body += section
    if report.get("config"):
        body += ["<h2>Resolved configuration</h2>",
                 f"<pre>{html.escape(json.dumps(report['config'], indent=2, sort_keys=True, default=str))}</pre>"]
    return html_page(TITLE, body)


# ---- entry point ---------------------------------------------------------------------------------

def write_run_report(run_dir: str | Path, report: Mapping[str, Any]) -> Path:
    """Write report.json, report.md, report.html and plots/*.png into run_dir; return report.json.

    report.json is the input dict (sorted keys) with the derived `headline` and `caveats`, so
    identical runs give identical files apart from the `timing` section.
    """
    if not arm_names(report):
        from debias.errors import UserError

        raise UserError(f"{run_dir}: the report holds no evaluated arm (report['arms'] is empty); nothing to report")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    notes = build_caveats(report)
    full = {**report, "headline": tables.headline_json(report), "caveats": notes}
    pngs = figures(report)
    figure_files = {}
    for name, png in pngs.items():
        path = run_dir / "plots" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        with atomic_output(path) as tmp:
            tmp.write_bytes(png)
        figure_files[name] = f"plots/{name}.png"
    write_text_atomic(run_dir / "report.md", render_markdown(report, figure_files, notes))
    write_text_atomic(run_dir / "report.html", render_html(report, pngs, notes))
    # report.json last: its presence means the whole report is there.
    return write_json_atomic(run_dir / "report.json", full)
