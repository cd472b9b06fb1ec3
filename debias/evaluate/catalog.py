"""Every benchmark's metric declarations in one place (each benchmark module declares its own).

    BENCHMARKS["winobias"].metric("association")      -> MetricDeclaration
    metric_declarations(headline=HeadlineRole.LM_QUALITY)
    PRIMARY_METRIC                                     -> "winobias.association"
"""

from __future__ import annotations

from debias.evaluate import crows_pairs, lambada, manipulation, perplexity, winobias
from debias.evaluate.declarations import BenchmarkDeclaration, HeadlineRole, MetricDeclaration

# In report order: bias benchmarks, the manipulation check, LM quality.
BENCHMARKS: dict[str, BenchmarkDeclaration] = {
    d.name: d for d in (winobias.DECLARATION, crows_pairs.DECLARATION, manipulation.DECLARATION,
                        lambada.DECLARATION, perplexity.DECLARATION)
}


def metric_declarations(*, benchmark: str | None = None, headline: HeadlineRole | None = None,
                        comparable: bool | None = None) -> list[MetricDeclaration]:
    """Declared metrics in report order, optionally only one benchmark's, one headline role's, or
    those with (comparable=True) / without a per-item field for paired tests."""
    found = []
    for name, declaration in BENCHMARKS.items():
        if benchmark is not None and name != benchmark:
            continue
        for metric in declaration:
            if headline is not None and metric.headline is not headline:
                continue
            if comparable is not None and metric.comparable != comparable:
                continue
            found.append(metric)
    return found


def declaration_of(key: str) -> MetricDeclaration:
    """The declaration of a report key such as "crows_pairs.association"."""
    benchmark, _, name = key.partition(".")
    if benchmark not in BENCHMARKS:
        raise KeyError(f"no benchmark {benchmark!r} (declared: {', '.join(BENCHMARKS)})")
    return BENCHMARKS[benchmark].metric(name)


_PRIMARY = [m.key for m in metric_declarations() if m.primary]
if len(_PRIMARY) != 1:
    raise RuntimeError(f"exactly one metric must be the study's pre-declared primary test, found {_PRIMARY}")
PRIMARY_METRIC: str = _PRIMARY[0]
