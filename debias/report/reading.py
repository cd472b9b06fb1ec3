"""Read a report dict: each arm's metrics by their declarations, and the paired tests between arms.

Metrics follow the report convention (docs/architecture.md): a metric's value under its name, its
95% interval under `<name>_ci95: [low, high]`, its p-value under `<name>_p`, its sample size
under `<name>_n` or, for the whole section, `n`. Which numbers are metrics, which way is better
and which are headlines comes from the benchmarks' declarations (`debias.evaluate.
metric_declarations()`), never from the shape of a key's name. Other numbers with an interval
(breakdowns such as `winobias.pronoun_choice.type1.gap`) are read by the same convention and
shown in their own table, without paired tests.

Paired tests are `debias.evaluate.compare_items` results: `{benchmark: {metric name: {a, b,
diff, diff_ci95, diff_p, test, p, p_holm, n, mcnemar?, primary, headline, better}}}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from debias.evaluate import Better, HeadlineRole, MetricDeclaration, declaration_of, metric_declarations

COMPANIONS = ("_ci95", "_p", "_n")
ARM_ORDER = ("baseline", "control", "treatment")  # the intervention's arms, in reading order
HEADLINE_ROLES = (HeadlineRole.ASSOCIATION, HeadlineRole.BLANKET_SHIFT, HeadlineRole.LM_QUALITY,
                  HeadlineRole.MANIPULATION)
# A breakdown with one entry per occupation (40 x 8 numbers per arm) is drawn
# (plots.winobias_occupations), not tabled.
PLOTTED_BREAKDOWNS = ("winobias.occupations",)

# Printed beside every table of paired tests, so that nobody reads a bootstrap p at its floor as exact.
P_NOTE = ("p (bootstrap) is two-sided with a floor of 2/(resamples+1) (eval.bootstrap_samples): "
          "read it as 'at most'; p (McNemar) is exact.")


def p_floor(resamples: int) -> float:
    """The smallest two-sided bootstrap p of `resamples` resamples (debias.evaluate.stats)."""
    return 2 / (int(resamples) + 1)


def p_note(resamples: Any = None, whose: str = "this run's") -> str:
    """P_NOTE with the run's own floor when its number of resamples is known."""
    if not is_number(resamples) or resamples <= 0:
        return P_NOTE
    floor = p_floor(resamples)
    return (f"p (bootstrap) is two-sided with a floor of 2/(resamples+1) = {format_p(floor)} at {whose} "
            f"{int(resamples)} resamples: read it as 'at most' (a p_holm built on it is at most the floor times the "
            "family's size; more eval.bootstrap_samples resolve smaller p). p (McNemar) is exact.")


HOLM_NOTE = ("p_holm: Holm-adjusted over every metric of the same comparison (each comparison, e.g. "
             "treatment - control, is its own family).")


# ---- numbers and their cells ---------------------------------------------------------------------

def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_number(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    sign = "+" if signed and value > 0 else ""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 100):
        return f"{sign}{int(value)}"  # counts
    if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e5):
        return f"{sign}{value:.{digits - 1}e}"
    return f"{sign}{value:.{digits}f}" if abs(value) < 100 else f"{sign}{value:.{max(digits - 2, 1)}f}"


def format_p(p: float | None) -> str:
    if p is None:
        return ""
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value):
        return float(value[0]), float(value[1])
    return None


@dataclass(frozen=True)
class Metric:
    """One number of one arm with its interval, p-value and sample size."""

    name: str  # report key, e.g. "winobias.association"
    value: float
    ci95: tuple[float, float] | None = None
    p: float | None = None
    n: int | None = None

    @property
    def section(self) -> str:
        return self.name.split(".", 1)[0]

    def cell(self, digits: int = 3, signed: bool = False) -> str:
        """`0.612 [0.551, 0.670]`, the form every table uses."""
        text = format_number(self.value, digits, signed)
        if self.ci95 is not None:
            text += f" [{format_number(self.ci95[0], digits)}, {format_number(self.ci95[1], digits)}]"
        return text


def better_text(declaration: MetricDeclaration | None) -> str:
    """Which way is good, in words for a table cell."""
    if declaration is None:
        return ""
    if declaration.better is Better.CLOSER_TO_IDEAL:
        return f"closer to {declaration.ideal:g}"
    return {Better.HIGHER: "higher", Better.LOWER: "lower"}.get(declaration.better, "no direction")


def declaration_or_none(key: str) -> MetricDeclaration | None:
    try:
        return declaration_of(key)
    except KeyError:
        return None


# ---- one arm's metrics -----------------------------------------------------------------------------

def _section_at(sections: Mapping[str, Any], path: list[str]) -> tuple[Mapping[str, Any] | None, int | None]:
    """The mapping at `path` and the innermost `n` on the way (a section's sample size)."""
    section: Any = sections
    n = None
    for part in path:
        section = section.get(part) if isinstance(section, Mapping) else None
        if not isinstance(section, Mapping):
            return None, n
        n = int(section["n"]) if is_number(section.get("n")) else n
    return section, n


def read_metric(sections: Mapping[str, Any], key: str) -> Metric | None:
    """The metric under `key` ("benchmark.name", nested names dotted) in an arm's metrics, or None
    when that arm did not measure it."""
    *path, leaf = key.split(".")
    section, n = _section_at(sections, path)
    if section is None or not is_number(section.get(leaf)):
        return None
    own_n, p = section.get(f"{leaf}_n"), section.get(f"{leaf}_p")
    return Metric(name=key, value=float(section[leaf]), ci95=interval(section.get(f"{leaf}_ci95")),
                  p=float(p) if is_number(p) else None, n=int(own_n) if is_number(own_n) else n)


def declared_metrics(sections: Mapping[str, Any]) -> dict[str, Metric]:
    """{report key: Metric} for every declared metric the arm measured, in declaration order."""
    found = {}
    for declaration in metric_declarations():
        metric = read_metric(sections, declaration.key)
        if metric is not None:
            found[declaration.key] = metric
    return found


def _is_companion(key: str, section: Mapping[str, Any]) -> bool:
    return any(key.endswith(suffix) and key[: -len(suffix)] in section for suffix in COMPANIONS)


def _walk(section: Mapping[str, Any], prefix: str, n: int | None) -> Iterator[Metric]:
    n = int(section["n"]) if is_number(section.get("n")) else n
    for key in sorted(section):
        name, value = f"{prefix}{key}", section[key]
        if key == "n" or _is_companion(key, section) or name in PLOTTED_BREAKDOWNS:
            continue
        if isinstance(value, Mapping):
            yield from _walk(value, f"{name}.", n)
        elif is_number(value) and (interval(section.get(f"{key}_ci95")) or is_number(section.get(f"{key}_p"))):
            own_n, p = section.get(f"{key}_n"), section.get(f"{key}_p")
            yield Metric(name=name, value=float(value), ci95=interval(section.get(f"{key}_ci95")),
                         p=float(p) if is_number(p) else None, n=int(own_n) if is_number(own_n) else n)


def breakdown_metrics(sections: Mapping[str, Any]) -> dict[str, Metric]:
    """Every other statistic of the arm (a number with an interval or a p-value that no declaration
    names), in key order: breakdowns of the declared metrics, shown but not tested between arms.
    Bare numbers (counts, sizes, settings) are descriptions and stay out."""
    declared = {d.key for d in metric_declarations()}
    return {m.name: m for m in _walk(sections, "", None) if m.name not in declared}


# ---- arms and comparisons --------------------------------------------------------------------------

def arm_names(report: Mapping[str, Any]) -> list[str]:
    """The arms in reading order: `arm_order` when the report gives one (the first is the
    reference), else baseline, control, treatment, then any other in name order."""
    arms = report.get("arms", {})
    given = [a for a in report.get("arm_order") or () if a in arms]
    known = given or [a for a in ARM_ORDER if a in arms]
    return known + sorted(a for a in arms if a not in known)


def arm_metrics(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """{arm: its metric sections} in reading order."""
    return {arm: report["arms"][arm].get("metrics", {}) for arm in arm_names(report)}


def split_comparison(name: str, arms: list[str] | tuple[str, ...] = ()) -> tuple[str, str]:
    """("treatment", "control") for "treatment_vs_control"; arm names may themselves hold "_vs_"."""
    parts = name.split("_vs_")
    for i in range(1, len(parts)):
        a, b = "_vs_".join(parts[:i]), "_vs_".join(parts[i:])
        if a in arms and b in arms:
            return a, b
    return parts[0], "_vs_".join(parts[1:])


def comparison_label(name: str, arms: list[str] | tuple[str, ...] = ()) -> str:
    a, b = split_comparison(name, arms)
    return f"{a} - {b}" if b else a


def comparison_names(report: Mapping[str, Any]) -> list[str]:
    """The report's comparisons: the primary one first, then by the arms' reading order."""
    names = list(report.get("comparisons", {}))
    arms = arm_names(report)
    primary = primary_comparison(report)

    def rank(name: str):
        a, b = split_comparison(name, arms)
        return (name != primary, arms.index(a) if a in arms else len(arms), arms.index(b) if b in arms else len(arms), name)

    return sorted(names, key=rank)


def primary_comparison(report: Mapping[str, Any]) -> str | None:
    """The comparison the report names as its primary one (`primary_comparison`), if it holds it."""
    name = report.get("primary_comparison")
    return name if name in report.get("comparisons", {}) else None


@dataclass(frozen=True)
class PairedResult:
    """One metric compared between two arms on the same items (debias.evaluate.compare_items)."""

    comparison: str  # e.g. "treatment_vs_control"
    key: str         # report key, e.g. "winobias.association"
    diff: float
    diff_ci95: tuple[float, float] | None
    test: str        # the declared test whose p is `p`
    p: float | None
    p_holm: float | None
    n: int | None
    a: float | None = None
    b: float | None = None
    mcnemar: Mapping[str, Any] | None = None
    declaration: MetricDeclaration | None = None

    @property
    def primary(self) -> bool:
        return bool(self.declaration and self.declaration.primary)

    @property
    def effect(self) -> Metric:
        """The difference a - b as a metric (its interval, the declared test's p)."""
        return Metric(name=self.key, value=self.diff, ci95=self.diff_ci95, p=self.p, n=self.n)

    def cell(self) -> str:
        """`-0.783 [-0.870, -0.689] p=0.0020 p_holm=0.0200`: the effect and both p-values."""
        text = f"{self.effect.cell(signed=True)} p={format_p(self.p)}"
        return text + (f" p_holm={format_p(self.p_holm)}" if self.p_holm is not None else "")


def _number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def paired_results(comparison: str, section: Mapping[str, Any]) -> list[PairedResult]:
    """The results of one comparison, in declaration order (undeclared ones after, by key)."""
    order = {d.key: i for i, d in enumerate(metric_declarations())}
    results = []
    for bench, metrics in section.items():
        if not isinstance(metrics, Mapping):
            continue
        for name, result in metrics.items():
            if not isinstance(result, Mapping) or not is_number(result.get("diff")):
                continue
            key = f"{bench}.{name}"
            mcnemar = result.get("mcnemar") if isinstance(result.get("mcnemar"), Mapping) else None
            p = _number(result.get("p"))
            results.append(PairedResult(
                comparison=comparison, key=key, diff=float(result["diff"]), diff_ci95=interval(result.get("diff_ci95")),
                test=str(result.get("test") or "paired bootstrap"), p=p if p is not None else _number(result.get("diff_p")),
                p_holm=_number(result.get("p_holm")), n=int(result["n"]) if is_number(result.get("n")) else None,
                a=_number(result.get("a")), b=_number(result.get("b")), mcnemar=mcnemar,
                declaration=declaration_or_none(key)))
    return sorted(results, key=lambda r: (order.get(r.key, len(order)), r.key))


def report_paired_results(report: Mapping[str, Any]) -> dict[str, dict[str, PairedResult]]:
    """{comparison: {report key: result}} for every comparison, primary first."""
    comparisons = report.get("comparisons", {})
    return {name: {r.key: r for r in paired_results(name, comparisons[name])} for name in comparison_names(report)}


@dataclass(frozen=True)
class HeadlineRow:
    """One headline metric: the arms that measured it and the comparisons that tested it."""

    role: HeadlineRole
    declaration: MetricDeclaration
    arms: dict[str, Metric]                # in reading order (arm_names)
    paired: dict[str, PairedResult]        # in comparison order, the primary first


def headline_rows(report: Mapping[str, Any]) -> list[HeadlineRow]:
    """The headline in role order (association, blanket shift, LM quality, manipulation), each
    declared metric that some arm or comparison holds: what the headline table, report.json's
    headline and the terminal summary show."""
    by_arm, paired = arm_metrics(report), report_paired_results(report)
    rows = []
    for role in HEADLINE_ROLES:
        for declaration in metric_declarations(headline=role):
            values = {arm: m for arm, sections in by_arm.items() if (m := read_metric(sections, declaration.key))}
            effects = {c: r for c, results in paired.items() if (r := results.get(declaration.key))}
            if values or effects:
                rows.append(HeadlineRow(role, declaration, values, effects))
    return rows
