"""Assemble the intervention pipeline's report dict from the stages' outputs (the contract is in
debias/report/__init__.py), run its paired tests, and sum it up in a few terminal lines.

What legitimately differs between two runs of the same configuration goes under `timing` where it
is produced, by name: the stages' durations (debias.stages.run passes them) and the trainer's
throughput and wall time (TRAINER_TIMING), so the rest of report.json is reproducible.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Mapping, Optional

from debias.config import EvalConfig
from debias.report.reading import arm_names, comparison_label, format_number, headline_rows, primary_comparison

# summary.json fields that measure the machine, not the result (debias/train/loop.py writes them).
TRAINER_TIMING = ("wall_seconds", "tokens_per_s")
PRIMARY_ARMS = ("treatment", "control", "baseline")  # the arm whose sections are copied to the top level


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


def comparison_pairs(arms) -> list[tuple[str, str]]:
    """The intervention's comparisons, its primary one first: the treatment against its control
    and against the untrained baseline; for a control-only run, the control against the baseline."""
    pairs = [("treatment", "control"), ("treatment", "baseline")] if "treatment" in arms else [("control", "baseline")]
    return [(a, b) for a, b in pairs if a in arms and b in arms]


def paired_comparisons(items: Mapping[str, Mapping], n_resamples: int = EvalConfig.bootstrap_samples,
                       seed: int = EvalConfig.seed, pairs: Optional[list[tuple[str, str]]] = None) -> dict:
    """Paired tests on the same items for `pairs` (model, reference), by default the arms'
    `comparison_pairs`, with `n_resamples` bootstrap resamples from `seed` (the run's
    eval.bootstrap_samples and eval.seed)."""
    from debias.evaluate import compare_items

    return {f"{a}_vs_{b}": compare_items(items[a], items[b], n_resamples=n_resamples, seed=seed)
            for a, b in (comparison_pairs(items) if pairs is None else pairs)}


def run_report(*, cfg: Mapping, prepared, rewrite, training: Mapping, arms: Mapping, comparisons: Mapping,
               timing: Mapping, rewrite_check: Optional[Mapping] = None) -> dict:
    """The report dict: identity, configuration, audit (with the independent check of the rewrite,
    debias.rewrite.checker), training, arms, comparisons, timing."""
    iv = cfg.get("intervention", {})
    primary_arm = next((arm for arm in PRIMARY_ARMS if arm in arms), None)
    pairs = [f"{a}_vs_{b}" for a, b in comparison_pairs(arms)]
    report: dict[str, Any] = {
        "run": {"direction": iv.get("direction"), "ratio": iv.get("ratio"), "fraction": iv.get("fraction"),
                "primary_arm": primary_arm},
        "config": cfg,
        "arms": {arm: dict(entry) for arm, entry in arms.items()},
        "comparisons": dict(comparisons),
        "primary_comparison": next((name for name in pairs if name in comparisons), None),
    }
    if prepared is not None:  # the window the run trained on, not the preset's ratio (start_step may set it)
        window = prepared.window
        report["run"].update(ratio=window.ratio, start_step=window.start_step, end_step=window.end_step,
                             num_steps=window.num_steps)
        report["model"], report["data"] = prepared.model, prepared.data
    if rewrite is not None:
        report["rewrite"] = {"audit": rewrite.audit, "manifest": rewrite.manifest, "stream": str(rewrite.stream),
                             "first_row": rewrite.first_row}
        if rewrite_check is not None:
            report["rewrite"]["independent_check"] = dict(rewrite_check)
    report["training"], trainer_timing = {}, {}
    for arm, summary in training.items():
        report["training"][arm] = {k: v for k, v in summary.items() if k not in TRAINER_TIMING}
        trainer_timing[arm] = {k: summary[k] for k in TRAINER_TIMING if k in summary}
    if primary_arm:  # the headline arm's sections at the top level, as docs/architecture.md promises
        report.update({k: v for k, v in report["arms"][primary_arm]["metrics"].items() if k not in report})
    report["timing"] = {**timing, "training": trainer_timing}
    return report


def summary_lines(report: Mapping) -> list[str]:
    """The terminal summary: the headline effects (primary association first, then blanket shift,
    LM quality, the manipulation check), the rewrite, training, and what ran."""
    lines = []
    primary = primary_comparison(report)
    versus = f" ({comparison_label(primary, arm_names(report))})" if primary else ""
    for role, rows in itertools.groupby(headline_rows(report), key=lambda row: row.role):
        cells = []
        for row in rows:
            result = row.paired.get(primary)
            if result is not None:
                values = (f" ({format_number(result.b)} -> {format_number(result.a)})"
                          if result.a is not None and result.b is not None else "")
                cells.append(f"{row.declaration.key} {result.cell()}{values}"
                             + (" [primary]" if row.declaration.primary else ""))
            elif row.arms:
                cells.append(f"{row.declaration.key} " + "; ".join(f"{arm} {m.cell()}" for arm, m in row.arms.items()))
        if cells:
            lines.append(f"{role.value}{versus}: " + " | ".join(cells))
    run = report.get("run") or {}
    audit = (report.get("rewrite") or {}).get("audit") or {}
    if "changed_tokens" in audit:  # the audit counts exactly the window's rows, also when a larger pass was reused
        rows = audit.get("window_rows") or report["rewrite"].get("manifest", {}).get("rows")
        scope = f" in rows {rows[0]}..{rows[1]}" if rows else ""
        reused = " (from a larger pass, reused)" if audit.get("derived_from") else ""
        skipped = sum((audit.get("skipped_tokens") or {}).values())
        lines.append(f"rewrite: {audit['changed_tokens']} tokens changed{scope}{reused}, {skipped} left unchanged by policy")
    elif run.get("direction") == "none":
        lines.append("rewrite: none (control run)")
    losses = {arm: s.get("final_loss") for arm, s in (report.get("training") or {}).items() if isinstance(s, Mapping)}
    losses = {arm: loss for arm, loss in losses.items() if isinstance(loss, (int, float))}
    if losses:
        lines.append("training: " + ", ".join(f"{arm} final loss {loss:.4f}" for arm, loss in losses.items()))
    if run:
        lines.append(f"run: direction={run.get('direction')} ratio={run.get('ratio')} steps "
                     f"{run.get('start_step')}..{run.get('end_step')} model={(report.get('model') or {}).get('name')}")
    return lines
