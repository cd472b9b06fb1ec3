"""Figures for reports, drawn with matplotlib's Agg backend (no display needed).

Each function takes plain report data and returns PNG bytes, or None when the data it needs is
absent (a stage not configured), so callers simply skip the figure.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

from debias.report.metrics import Metric, find_breakdown, main_value, metrics_of

ARM_COLORS = {"baseline": "#7f7f7f", "control": "#1f77b4", "treatment": "#d62728"}
DIRECTION_COLORS = {"control": "#1f77b4", "m2f": "#d62728", "f2m": "#2ca02c", "swap": "#9467bd", "baseline": "#7f7f7f"}


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use (it takes seconds to load,
    and command lines that fail early on bad settings should not pay for it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    # No creation date in the metadata: the same data gives the same bytes.
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    pyplot().close(fig)
    return buffer.getvalue()


def _yerr(values: Sequence[float], intervals: Sequence[tuple[float, float] | None]):
    low = [v - ci[0] if ci else 0.0 for v, ci in zip(values, intervals)]
    high = [ci[1] - v if ci else 0.0 for v, ci in zip(values, intervals)]
    return [low, high]


def training_loss(curves: Mapping[str, Sequence[Sequence[float]]]) -> bytes | None:
    """Loss per step, one line per arm (treatment against control)."""
    curves = {arm: points for arm, points in curves.items() if points}
    if not curves:
        return None
    fig, ax = pyplot().subplots(figsize=(7, 3.6))
    for arm in sorted(curves):
        steps, losses = zip(*[(p[0], p[1]) for p in curves[arm]])
        ax.plot(steps, losses, label=arm, color=ARM_COLORS.get(arm), linewidth=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss: treatment vs control")
    ax.grid(alpha=0.3)
    ax.legend()
    return to_png(fig)


def winobias_per_occupation(arms: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """One horizontal bar group per occupation, one bar per arm, with intervals."""
    tables = {}
    for arm, sections in arms.items():
        winobias = sections.get("winobias", {})
        found = find_breakdown(winobias, "occupation")
        if found:
            # Each occupation's own version of the section's headline (stereotype accuracy).
            prefer = tuple(m.name.split(".", 1)[1] for m in metrics_of({"winobias": winobias}).values())
            labels = {occ: _with_stereotype(occ, entry) for occ, entry in found[1].items()}
            tables[arm] = {labels[occ]: main_value(entry, prefer) for occ, entry in found[1].items()}
    tables = {arm: {k: v for k, v in t.items() if v} for arm, t in tables.items()}
    if not any(tables.values()):
        return None
    occupations = sorted({occ for table in tables.values() for occ in table}, key=lambda o: (o[-3:] if o.endswith(")") else "", o))  # F, then M
    label = next(value[0] for table in tables.values() for value in table.values())
    height = 0.8 / len(tables)
    fig, ax = pyplot().subplots(figsize=(7.5, max(3.0, 0.28 * len(occupations) * max(1, len(tables)) ** 0.5)))
    for i, arm in enumerate(sorted(tables)):
        ys = [j + i * height for j in range(len(occupations))]
        entries = [tables[arm].get(occ) for occ in occupations]
        values = [e[1] if e else float("nan") for e in entries]
        intervals = [e[2] if e else None for e in entries]
        ax.barh(ys, values, height=height, label=arm, color=ARM_COLORS.get(arm),
                xerr=_yerr(values, intervals), error_kw={"elinewidth": 0.6})
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(occupations))], occupations, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(label.replace("_", " "))
    if "accuracy" in label:
        ax.axvline(0.5, color="black", linewidth=0.8, linestyle="--")  # no preference
    ax.set_title("WinoBias per occupation")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def _with_stereotype(occupation: str, entry: Any) -> str:
    """`nurse (F)`: the occupation with its stereotyped gender, when the breakdown records it."""
    stereotype = entry.get("stereotype") if isinstance(entry, Mapping) else None
    return f"{occupation} ({str(stereotype)[0].upper()})" if stereotype else occupation


def _grouped_bars(title: str, groups: Mapping[str, Mapping[str, Metric]], ylabel: str, chance: float | None):
    """Bars for {group label: {arm: metric}} with 95% intervals."""
    labels = list(groups)
    arms = sorted({arm for group in groups.values() for arm in group})
    width = 0.8 / max(1, len(arms))
    fig, ax = pyplot().subplots(figsize=(max(4.5, 1.4 * len(labels) * max(1, len(arms)) ** 0.5), 3.6))
    for i, arm in enumerate(arms):
        metrics = [groups[label].get(arm) for label in labels]
        values = [m.value if m else float("nan") for m in metrics]
        ax.bar([j + i * width for j in range(len(labels))], values, width=width, label=arm,
               color=ARM_COLORS.get(arm), yerr=_yerr(values, [m.ci95 if m else None for m in metrics]),
               capsize=3)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, fontsize=8)
    if chance is not None:
        ax.axhline(chance, color="black", linewidth=0.8, linestyle="--", label=f"no preference ({chance})")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def _crows_subset(name: str) -> str | None:
    """'all pairs', 'stereo' or 'antistereo' for a pct_stereotype metric of either naming style
    (`crows_pairs.stereo.pct_stereotype` or `crows_pairs.pct_stereotype_antistereo`), else None."""
    parts = name.split(".")
    if not parts[-1].startswith("pct_stereotype"):
        return None
    qualifiers = ".".join(parts[1:-1] + [parts[-1][len("pct_stereotype"):]])
    if "antistereo" in qualifiers:
        return "antistereo"
    if "stereo" in qualifiers:
        return "stereo"
    return "all pairs" if not qualifiers else None


def crows_pairs_stereo_antistereo(arms: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """pct_stereotype on all pairs, the stereotypical and the anti-stereotypical ones, per arm."""
    groups: dict[str, dict[str, Metric]] = {}
    for arm, sections in arms.items():
        for metric in metrics_of({"crows_pairs": sections.get("crows_pairs", {})}).values():
            subset = _crows_subset(metric.name)
            if subset:
                groups.setdefault(subset, {})[arm] = metric
    if not groups:
        return None
    ordered = {k: groups[k] for k in ("all pairs", "stereo", "antistereo") if k in groups}
    return _grouped_bars("CrowS-Pairs: stereo vs antistereo pairs", ordered, "pct_stereotype", chance=0.5)


def manipulation_check(arms: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """Every manipulation-check metric (preference for feminine vs masculine pronouns) per arm."""
    groups: dict[str, dict[str, Metric]] = {}
    for arm, sections in arms.items():
        for metric in metrics_of({"manipulation": sections.get("manipulation", {})}).values():
            if metric.ci95 is not None:
                groups.setdefault(metric.name.split(".", 1)[1], {})[arm] = metric
    if not groups:
        return None
    return _grouped_bars("Manipulation check", dict(list(groups.items())[:4]), "value", chance=None)


def metric_vs_ratio(name: str, lines: Mapping[str, Sequence[tuple[float, Metric]]]) -> bytes | None:
    """One bias metric against the intervention ratio, one line per direction (with intervals)."""
    if not any(lines.values()):
        return None
    fig, ax = pyplot().subplots(figsize=(5.5, 3.6))
    for direction in sorted(lines):
        points = sorted(lines[direction], key=lambda point: point[0])
        if not points:
            continue
        ratios = [r for r, _ in points]
        values = [m.value for _, m in points]
        ax.errorbar(ratios, values, yerr=_yerr(values, [m.ci95 for _, m in points]), marker="o",
                    capsize=3, label=direction, color=DIRECTION_COLORS.get(direction),
                    linestyle="--" if direction in ("baseline", "control") else "-")
    ax.set_xlabel("intervention ratio (share of training rewritten)")
    ax.set_ylabel(name.split(".", 1)[-1])
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)
