"""Uncertainty and significance for every number the evaluation reports.

Thin wrappers over scipy so that each metric carries a 95% interval and, where a test applies,
a p-value (FACTS §7: with n = 262 a proportion is only known to about ±0.06, so effects between
two models must be judged on the same items with paired tests).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a proportion (well-behaved near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def binomial_test(successes: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test p-value of `successes` out of `n` against rate `p`."""
    if n == 0:
        return math.nan
    return float(stats.binomtest(int(successes), int(n), p).pvalue)


def proportion_summary(indicators: Sequence[float], name: str, null: float | None = 0.5) -> dict:
    """`{name, name_ci95, name_p, n}` for a share of 0/1 indicators (p against `null` if given)."""
    values = np.asarray(indicators, dtype=float)
    n, successes = len(values), int(round(values.sum()))
    out = {name: float(values.mean()) if n else math.nan,
           f"{name}_ci95": list(wilson_interval(successes, n)), "n": n}
    if null is not None:
        out[f"{name}_p"] = binomial_test(successes, n, null)
    return out


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE,
                  null: float = 0.0) -> tuple[float, tuple[float, float], float]:
    """Mean, its Student-t interval and the one-sample t-test p-value against `null`."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.all(values == values[0]):  # t undefined: no spread to estimate
        mean = float(values.mean()) if len(values) else math.nan
        return mean, (mean, mean), math.nan
    result = stats.ttest_1samp(values, popmean=null)
    ci = result.confidence_interval(confidence)
    return float(values.mean()), (float(ci.low), float(ci.high)), float(result.pvalue)


def mean_summary(values: Sequence[float], name: str, null: float | None = 0.0) -> dict:
    """`{name, name_ci95, name_p, n}` for a mean with a t-interval (p against `null`)."""
    mean, ci, p = mean_interval(values, null=0.0 if null is None else null)
    out = {name: mean, f"{name}_ci95": list(ci), "n": len(values)}
    if null is not None:
        out[f"{name}_p"] = p
    return out


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> dict:
    """Exact McNemar test on paired 0/1 indicators of two models on the same items.

    Only discordant items carry information: under the null each is equally likely to favour
    either model, so the count of one kind is Binomial(discordant, 1/2).
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired indicators differ in length: {a.shape} vs {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "n": int(a.size), "p": p}


def paired_bootstrap(a: Sequence[float], b: Sequence[float],
                     statistic: Callable[[np.ndarray], float] = np.mean, *,
                     n_resamples: int = 2000, seed: int = 1234,
                     confidence: float = CONFIDENCE) -> dict:
    """Difference statistic(a) − statistic(b) over the same items, resampling items jointly.

    Returns the observed difference, a percentile interval and a two-sided bootstrap p-value
    (twice the share of resampled differences on the far side of zero). scipy.stats.bootstrap
    gives the interval but no p-value, and its resampling of two statistics of different shape
    is awkward, so the resampling is written out here (a few lines).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-D arrays of equal length: {a.shape} vs {b.shape}")
    observed = float(statistic(a) - statistic(b))
    if a.size == 0:
        return {"diff": math.nan, "ci95": [math.nan, math.nan], "p": math.nan, "n": 0}
    rng = np.random.default_rng(seed)
    index = rng.integers(0, a.size, size=(n_resamples, a.size))
    diffs = np.array([statistic(a[i]) - statistic(b[i]) for i in index])
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    # +1 smoothing keeps the p-value honest with a finite number of resamples.
    far_side = min(np.sum(diffs <= 0), np.sum(diffs >= 0))
    p = min(1.0, 2 * (far_side + 1) / (n_resamples + 1))
    return {"diff": observed, "ci95": [float(low), float(high)], "p": float(p), "n": int(a.size)}
