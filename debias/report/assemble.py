"""Assemble one run's report dict from the stages' outputs (the layout write_run_report expects).

Everything that legitimately differs between two runs of the same configuration (wall times,
throughput, dates) is moved under `timing`, so the rest of report.json is reproducible.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from debias.report.metrics import format_p, metrics_of, paired_tests

VOLATILE = re.compile(r"(^|_)(seconds|time|date|utc|duration|elapsed|hostname|pid|mfu)($|_)|_per_s(ec)?$")
PRIMARY_ARMS = ("treatment", "control", "baseline")  # the run's headline arm, first present
HEADLINE = ("crows_pairs.pct_stereotype", "winobias.stereotype_accuracy", "manipulation.feminine_preference")


def split_volatile(obj: Any) -> tuple[Any, dict]:
    """(obj without volatile keys, {dotted key: value} of the removed ones)."""
    if not isinstance(obj, Mapping):
        return obj, {}
    stable, volatile = {}, {}
    for key, value in obj.items():
        if VOLATILE.search(str(key)):
            volatile[str(key)] = value
            continue
        stable[key], inner = split_volatile(value)
        volatile.update({f"{key}.{k}": v for k, v in inner.items()})
    return stable, volatile


def loss_curve(train_dir: Path) -> list[list[float]]:
    """[[step, loss], ...] of the training phase from the trainer's metrics.jsonl."""
    path = train_dir / "metrics.jsonl"
    if not path.exists():
        return []
    curve = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("phase", "train") == "train" and "loss" in record:
            curve.append([record["step"], record["loss"]])
    return curve


def training_summary(train_dir: Path) -> dict:
    summary = json.loads((train_dir / "summary.json").read_text())
    return {**summary, "run_dir": str(train_dir), "loss_curve": loss_curve(train_dir)}


def paired_comparisons(items: Mapping[str, Mapping], n_resamples: int = 2000, seed: int = 1234) -> dict:
    """Paired tests on the same items: the treatment against its control and against the
    untrained baseline (or, for a control-only run, the control against the baseline), with
    `n_resamples` bootstrap resamples from `seed` (the run's eval.bootstrap_samples and eval.seed)."""
    from debias.evaluate import compare_items

    pairs = [("treatment", "control"), ("treatment", "baseline")]
    if "treatment" not in items:
        pairs = [("control", "baseline")]
    return {f"{a}_vs_{b}": compare_items(items[a], items[b], n_resamples=n_resamples, seed=seed)
            for a, b in pairs if a in items and b in items}


def run_report(*, cfg: Mapping, prepared, rewrite, training: Mapping, arms: Mapping, comparisons: Mapping,
               timing: Mapping) -> dict:
    """The report dict: identity, configuration, audit, training, arms, comparisons, timing."""
    volatile: dict[str, Any] = dict(timing)
    iv = cfg.get("intervention", {})
    primary = next((arm for arm in PRIMARY_ARMS if arm in arms), None)
    report: dict[str, Any] = {
        "run": {"direction": iv.get("direction"), "ratio": iv.get("ratio"), "fraction": iv.get("fraction"),
                "primary_arm": primary},
        "config": cfg,
        "arms": {},
        "comparisons": dict(comparisons),
    }
    if prepared is not None:  # the window the run trained on, not the preset's ratio (start_step may set it)
        window = prepared.window
        report["run"].update(ratio=window.ratio, start_step=window.start_step, end_step=window.end_step,
                             num_steps=window.num_steps)
        report["model"], report["data"] = prepared.model, prepared.data
    if rewrite is not None:
        audit, moved = split_volatile({"audit": rewrite.audit, "manifest": rewrite.manifest})
        report["rewrite"] = {**audit, "stream": str(rewrite.stream), "first_row": rewrite.first_row}
        volatile.update({f"rewrite.{k}": v for k, v in moved.items()})
    report["training"] = {}
    for arm, summary in training.items():
        report["training"][arm], moved = split_volatile(summary)
        volatile.update({f"training.{arm}.{k}": v for k, v in moved.items()})
    for arm, entry in arms.items():
        report["arms"][arm], moved = split_volatile(entry)
        volatile.update({f"arms.{arm}.{k}": v for k, v in moved.items()})
    if primary:  # the headline sections at the top level, as docs/architecture.md promises
        report.update({k: v for k, v in report["arms"][primary]["metrics"].items() if k not in report})
    report["timing"] = volatile
    return report


def _cells(report: Mapping, name: str) -> str:
    cells = []
    for arm, entry in report.get("arms", {}).items():
        metric = metrics_of(entry.get("metrics", {})).get(name)
        if metric:
            cells.append(f"{arm} {metric.cell()}")
    return "; ".join(cells) or "not measured"


def summary_lines(report: Mapping) -> list[str]:
    """Five lines for the terminal: what ran, the rewrite, training, bias, language modelling."""
    run = report.get("run", {})
    lines = [f"run: direction={run.get('direction')} ratio={run.get('ratio')} steps "
             f"{run.get('start_step')}..{run.get('end_step')} model={report.get('model', {}).get('name')}"]
    audit = report.get("rewrite", {}).get("audit", {})
    changed = next((audit[k] for k in ("changed_tokens", "tokens_changed", "changed") if k in audit), None)
    if changed is None:
        lines.append(f"rewrite: {'none (control run)' if run.get('direction') == 'none' else 'not run'}")
    else:  # the audit counts exactly the window's rows, also when a larger pass was reused
        rows = audit.get("window_rows") or report["rewrite"].get("manifest", {}).get("rows")
        scope = f" in rows {rows[0]}..{rows[1]}" if rows else ""
        reused = " (from a larger pass, reused)" if audit.get("derived_from") else ""
        lines.append(f"rewrite: {changed} tokens changed{scope}{reused}")
    losses = {arm: s.get("final_loss") for arm, s in report.get("training", {}).items()}
    lines.append("training: " + (", ".join(f"{arm} final loss {loss:.4f}" for arm, loss in losses.items()
                                           if isinstance(loss, (int, float))) or "not run"))
    bias = [f"{name}: {_cells(report, name)}" for name in HEADLINE[:1]]
    comparisons = report.get("comparisons", {})
    name = next((n for n in ("treatment_vs_control", "control_vs_baseline") if n in comparisons), None)
    manipulation = [t for t in paired_tests(comparisons.get(name, {})) if t.metric.name.startswith("manipulation")]
    if manipulation:
        t = manipulation[0]
        versus = name.replace("_vs_", " - ")
        bias.append(f"{t.metric.name} {versus} {t.metric.cell()} p={format_p(t.metric.p)}")
    lines.append("bias: " + " | ".join(bias))
    perplexity = next((n for n in ("perplexity.perplexity", "lambada.perplexity")
                       if any(n in metrics_of(e.get("metrics", {})) for e in report.get("arms", {}).values())),
                      "perplexity.perplexity")
    lines.append(f"{perplexity}: {_cells(report, perplexity)}")
    return lines
