"""Figures for reports, drawn with matplotlib's Agg backend (no display needed).

Each function takes plain report data and returns PNG bytes, or None when the data it needs is
absent (a stage not configured), so callers simply skip the figure. Arms are drawn in the order
given; colours follow the intervention's arm names, other arms (e.g. model labels) take the
default cycle.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

from debias.evaluate import HeadlineRole, metric_declarations
from debias.report.reading import Metric, interval, is_number, read_metric

ARM_COLORS = {"baseline": "#7f7f7f", "control": "#1f77b4", "treatment": "#d62728"}
DIRECTION_COLORS = {"control": "#1f77b4", "m2f": "#d62728", "f2m": "#2ca02c", "swap": "#9467bd", "baseline": "#7f7f7f"}
GROUP_COLORS = {"female": "#c2185b", "male": "#1565c0"}
# The pct_stereotype splits of CrowS-Pairs (docs/evaluation.md, "Report keys"): a blanket shift
# pushes the two sent_more genders apart while the overall share can stay near 0.5.
CROWS_SPLITS = {"all pairs": "crows_pairs.pct_stereotype", "stereo": "crows_pairs.stereo.pct_stereotype",
                "antistereo": "crows_pairs.antistereo.pct_stereotype",
                "sent_more feminine": "crows_pairs.sent_more_feminine.pct_stereotype",
                "sent_more masculine": "crows_pairs.sent_more_masculine.pct_stereotype"}


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


def _arm_color(arm: str, index: int) -> str:
    return ARM_COLORS.get(arm) or f"C{index % 10}"


def training_loss(curves: Mapping[str, Sequence[Sequence[float]]]) -> bytes | None:
    """Loss per step, one line per trained arm."""
    curves = {arm: points for arm, points in curves.items() if points}
    if not curves:
        return None
    fig, ax = pyplot().subplots(figsize=(7, 3.6))
    for i, arm in enumerate(curves):
        steps, losses = zip(*[(p[0], p[1]) for p in curves[arm]])
        ax.plot(steps, losses, label=arm, color=_arm_color(arm, i), linewidth=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss per arm")
    ax.grid(alpha=0.3)
    ax.legend()
    return to_png(fig)


def group_mean_key(benchmark: str, group: str, item_field: str) -> str:
    """The report key of one stereotype group's mean (docs/evaluation.md, "Report keys")."""
    return f"{benchmark}.stereotyped_{group}.{item_field}"


def association_groups(arms: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """Per benchmark with an association metric: for each arm, the mean feminine preference of the
    female- and the male-stereotyped items (95% intervals). The vertical gap between the two is
    the association; their midpoint is the blanket shift, so a run that shifts every item towards
    one gender moves both points together and leaves the gap."""
    panels = []
    for declaration in metric_declarations(headline=HeadlineRole.ASSOCIATION):
        if not declaration.groups:
            continue
        points = {arm: [read_metric(sections, group_mean_key(declaration.benchmark, g, declaration.item_field))
                        for g in declaration.groups] for arm, sections in arms.items()}
        points = {arm: groups for arm, groups in points.items() if all(groups)}
        if points:
            panels.append((declaration, points))
    if not panels:
        return None
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels) + 0.8, 3.8), squeeze=False)
    for ax, (declaration, points) in zip(axes[0], panels):
        names = list(points)
        for g, group in enumerate(declaration.groups):
            xs = [i + (g - 0.5) * 0.18 for i in range(len(names))]
            metrics = [points[arm][g] for arm in names]
            values = [m.value for m in metrics]
            ax.errorbar(xs, values, yerr=_yerr(values, [m.ci95 for m in metrics]), fmt="o", capsize=3,
                        color=GROUP_COLORS.get(group), label=f"{group}-stereotyped")
        for i, arm in enumerate(names):
            first, second = points[arm]
            ax.plot([i - 0.09, i + 0.09], [first.value, second.value], color="black", linewidth=0.8)
            association = read_metric(arms[arm], declaration.key)
            if association is not None:
                ax.annotate(f"gap {association.value:.2f}", (i, max(first.value, second.value)),
                            textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
        ax.axhline(0.0, color="black", linewidth=0.6, linestyle="--")
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylabel("mean feminine preference (nats)")
        ax.set_title(f"{declaration.benchmark}: association = gap,\nblanket shift = midpoint", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return to_png(fig)


def winobias_occupations(arms: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """Each WinoBias occupation's mean feminine preference per arm (95% intervals), female-
    stereotyped occupations first: a blanket shift moves every occupation, an association
    separates the two groups."""
    tables = {}
    for arm, sections in arms.items():
        occupations = (sections.get("winobias") or {}).get("occupations")
        if isinstance(occupations, Mapping):
            rows = {occ: entry for occ, entry in occupations.items()
                    if isinstance(entry, Mapping) and is_number(entry.get("feminine_preference"))}
            if rows:
                tables[arm] = rows
    if not tables:
        return None
    stereotype = {occ: str(entry.get("stereotype") or "") for table in tables.values() for occ, entry in table.items()}
    occupations = sorted(stereotype, key=lambda o: (stereotype[o] != "female", stereotype[o], o))
    labels = [f"{occ} ({stereotype[occ][:1].upper()})" if stereotype[occ] else occ for occ in occupations]
    fig, ax = pyplot().subplots(figsize=(7.5, max(3.0, 0.22 * len(occupations) + 1)))
    offset = 0.6 / max(1, len(tables))
    for i, (arm, table) in enumerate(tables.items()):
        ys, values, intervals = [], [], []
        for j, occ in enumerate(occupations):
            if occ in table:
                ys.append(j + (i - (len(tables) - 1) / 2) * offset)
                values.append(float(table[occ]["feminine_preference"]))
                intervals.append(interval(table[occ].get("feminine_preference_ci95")))
        ax.errorbar(values, ys, xerr=_yerr(values, intervals), fmt="o", markersize=3, capsize=0, elinewidth=0.6,
                    color=_arm_color(arm, i), label=arm)
    boundary = sum(stereotype[o] == "female" for o in occupations)
    if 0 < boundary < len(occupations):
        ax.axhline(boundary - 0.5, color="grey", linewidth=0.6)
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(occupations)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("feminine preference (nats): LL(feminine) - LL(masculine)")
    ax.set_title("WinoBias per occupation (F: female-, M: male-stereotyped)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def _grouped_bars(title: str, groups: Mapping[str, Mapping[str, Metric]], arm_order: Sequence[str], ylabel: str,
                  chance: float | None):
    """Bars for {group label: {arm: metric}} with 95% intervals."""
    labels = list(groups)
    arms = [arm for arm in arm_order if any(arm in group for group in groups.values())]
    width = 0.8 / max(1, len(arms))
    fig, ax = pyplot().subplots(figsize=(max(4.5, 1.4 * len(labels) * max(1, len(arms)) ** 0.5), 3.6))
    for i, arm in enumerate(arms):
        metrics = [groups[label].get(arm) for label in labels]
        values = [m.value if m else float("nan") for m in metrics]
        ax.bar([j + i * width for j in range(len(labels))], values, width=width, label=arm,
               color=_arm_color(arm, i), yerr=_yerr(values, [m.ci95 if m else None for m in metrics]), capsize=3)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, fontsize=8)
    if chance is not None:
        ax.axhline(chance, color="black", linewidth=0.8, linestyle="--", label=f"no preference ({chance})")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def crows_pairs_splits(arms: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """pct_stereotype on all pairs and on its splits (stereo/antistereo, gender of sent_more), per arm."""
    groups: dict[str, dict[str, Metric]] = {}
    for label, key in CROWS_SPLITS.items():
        for arm, sections in arms.items():
            metric = read_metric(sections, key)
            if metric is not None:
                groups.setdefault(label, {})[arm] = metric
    if not groups:
        return None
    return _grouped_bars("CrowS-Pairs pct_stereotype: a threshold count that a blanket shift moves", groups,
                         list(arms), "pct_stereotype", chance=0.5)


def manipulation_check(arms: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """The manipulation check's feminine preference per arm: overall and per pronoun role."""
    groups: dict[str, dict[str, Metric]] = {}
    for arm, sections in arms.items():
        section = sections.get("manipulation") or {}
        overall = read_metric(sections, "manipulation.feminine_preference")
        if overall is not None:
            groups.setdefault("all templates", {})[arm] = overall
        for role in sorted(section.get("by_role") or {}):
            metric = read_metric(sections, f"manipulation.by_role.{role}.feminine_preference")
            if metric is not None:
                groups.setdefault(role, {})[arm] = metric
    if not groups:
        return None
    return _grouped_bars("Manipulation check: preference for the feminine pronoun", groups, list(arms),
                         "feminine preference (nats)", chance=0.0)


def metric_vs_ratio(name: str, lines: Mapping[str, Sequence[tuple[float, Metric]]]) -> bytes | None:
    """One metric against the intervention ratio, one line per direction (with intervals)."""
    if not any(lines.values()):
        return None
    fig, ax = pyplot().subplots(figsize=(5.5, 3.6))
    for i, direction in enumerate(sorted(lines)):
        points = sorted(lines[direction], key=lambda point: point[0])
        if not points:
            continue
        ratios = [r for r, _ in points]
        values = [m.value for _, m in points]
        ax.errorbar(ratios, values, yerr=_yerr(values, [m.ci95 for _, m in points]), marker="o",
                    capsize=3, label=direction, color=DIRECTION_COLORS.get(direction, f"C{i % 10}"),
                    linestyle="--" if direction in ("baseline", "control") else "-")
    ax.set_xlabel("intervention ratio (share of training rewritten)")
    ax.set_ylabel(name.split(".", 1)[-1])
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)
