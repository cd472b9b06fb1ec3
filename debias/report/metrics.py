"""Read metrics written in the report convention into flat rows.

Convention (docs/architecture.md): a metric's value sits under its name, its 95% interval under
`<name>_ci95: [low, high]`, its p-value under `<name>_p`, and the sample size under `<name>_n` or,
for the whole section, `n`. Sections nest (e.g. `winobias.type1.gap`); every number that is not a
companion key is a metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

COMPANION_SUFFIXES = ("_ci95", "_p", "_n")
# Breakdowns with one entry per item or per occupation are plotted, not put in tables.
BREAKDOWN_HINTS = ("occupation", "items", "per_", "samples", "snippets", "curve", "by_")
# Sections that measure bias (plotted against the intervention ratio in comparisons).
BIAS_SECTIONS = ("crows_pairs", "winobias", "manipulation")
# The headline of each benchmark: its metric, and the per-item field its paired tests use.
HEADLINE_METRICS = ("manipulation.feminine_preference", "crows_pairs.pct_stereotype", "winobias.stereotype_accuracy",
                    "perplexity.perplexity", "lambada.perplexity", "lambada.accuracy")
HEADLINE_FIELDS = ("manipulation.feminine_preference", "crows_pairs.stereotype", "winobias.stereotype",
                   "perplexity.nll_per_token", "lambada.ll")


@dataclass(frozen=True)
class Metric:
    name: str  # dotted path, e.g. "crows_pairs.pct_stereotype"
    value: float
    ci95: tuple[float, float] | None = None
    p: float | None = None
    n: int | None = None

    @property
    def section(self) -> str:
        return self.name.split(".", 1)[0]

    def cell(self, digits: int = 3) -> str:
        """`0.612 [0.551, 0.670]`, the form every table uses."""
        text = format_number(self.value, digits)
        if self.ci95 is not None:
            text += f" [{format_number(self.ci95[0], digits)}, {format_number(self.ci95[1], digits)}]"
        return text


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_breakdown(key: str) -> bool:
    return any(hint in key for hint in BREAKDOWN_HINTS)


def format_number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 100):
        return str(int(value))  # counts
    if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e5):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.{max(digits - 2, 1)}f}"


# Printed beside every table of paired tests, so that nobody reads a bootstrap p at its floor as exact.
P_NOTE = "p (bootstrap) is two-sided with a floor of 2/(resamples+1), 0.0010 at the default 2,000 resamples: read it as 'at most'; p (McNemar) is exact."


def format_p(p: float | None) -> str:
    if p is None:
        return ""
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value):
        return float(value[0]), float(value[1])
    return None


def iter_metrics(section: Mapping[str, Any], prefix: str = "", n: int | None = None) -> Iterator[Metric]:
    """Every metric in a (nested) section, in sorted key order so tables are deterministic."""
    n = int(section["n"]) if is_number(section.get("n")) else n
    for key in sorted(section):
        value = section[key]
        if key == "n" or key.endswith(COMPANION_SUFFIXES) or is_breakdown(key):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from iter_metrics(value, prefix=f"{name}.", n=n)
        elif is_number(value):
            own_n = section.get(f"{key}_n")
            yield Metric(
                name=name,
                value=float(value),
                ci95=_interval(section.get(f"{key}_ci95")),
                p=float(section[f"{key}_p"]) if is_number(section.get(f"{key}_p")) else None,
                n=int(own_n) if is_number(own_n) else n,
            )


def metrics_of(sections: Mapping[str, Any]) -> dict[str, Metric]:
    """The statistics of an arm's evaluation (`{"crows_pairs": {...}, "winobias": {...}, ...}`):
    every number with an interval or a p-value. Bare numbers (counts, sizes, settings) are
    descriptions, not measurements, and stay out of tables."""
    return {m.name: m for m in iter_metrics(sections) if m.ci95 is not None or m.p is not None}


def find_breakdown(section: Mapping[str, Any], hint: str) -> tuple[str, Mapping[str, Any]] | None:
    """The first nested mapping whose key contains `hint` (e.g. WinoBias' per-occupation table)."""
    for key in sorted(section):
        value = section[key]
        if isinstance(value, Mapping):
            if hint in key and value:
                return key, value
            found = find_breakdown(value, hint)
            if found:
                return found
    return None


def main_value(entry: Any, prefer: tuple[str, ...] = ()) -> tuple[str, float, tuple[float, float] | None] | None:
    """The headline number of a breakdown entry: a bare number, or of a mapping's metrics the
    first named in `prefer` (e.g. the section's own headline), else the first with an interval."""
    if is_number(entry):
        return "value", float(entry), None
    if isinstance(entry, Mapping):
        metrics = {m.name: m for m in iter_metrics(entry)}
        chosen = next((metrics[n] for n in prefer if n in metrics), None) or \
            next((m for m in metrics.values() if m.ci95 is not None), None)
        if chosen:
            return chosen.name, chosen.value, chosen.ci95
    return None


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison of two models on one per-item field (debias.evaluate.compare_items)."""

    metric: Metric  # the difference A - B with its bootstrap interval, p-value and n
    mcnemar_p: float | None = None


def paired_tests(comparison: Mapping[str, Any]) -> list[PairedTest]:
    """Rows of a comparison section: `{benchmark: {field: {diff, diff_ci95, diff_p, n, mcnemar}}}`
    as compare_items writes it, or any section in the metric convention."""
    tests = []
    for bench in sorted(comparison):
        fields = comparison[bench]
        if not isinstance(fields, Mapping):
            continue
        for field in sorted(fields):
            result = fields[field]
            if isinstance(result, Mapping) and is_number(result.get("diff")):
                mcnemar = result.get("mcnemar") or {}
                tests.append(PairedTest(
                    Metric(name=f"{bench}.{field}", value=float(result["diff"]), ci95=_interval(result.get("diff_ci95")),
                           p=float(result["diff_p"]) if is_number(result.get("diff_p")) else None,
                           n=int(result["n"]) if is_number(result.get("n")) else None),
                    mcnemar_p=float(mcnemar["p"]) if is_number(mcnemar.get("p")) else None))
        if not any(t.metric.name.startswith(f"{bench}.") for t in tests):
            tests.extend(PairedTest(m) for m in iter_metrics(fields, prefix=f"{bench}."))
    return tests
