"""Uncertainty and significance for every number the evaluation reports.

Thin wrappers over scipy so that each metric carries a 95% interval and, where a test applies,
a p-value (docs/evaluation.md: with n = 262 a proportion is only known to about ±0.06, so
effects between two models must be judged on the same items with paired tests).

Every function refuses non-finite input (`NonFiniteError`, a one-line UserError): an interval
or a p-value over a NaN would be a confident-looking number about nothing. Intervals reflect
item sampling only: one trained model per arm, so training-run variance is not in them.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from debias.config import EvalConfig
from debias.errors import UserError

CONFIDENCE = 0.95


class NonFiniteError(UserError):
    """A NaN or infinity reached a statistic."""


def require_finite(values: Sequence[float], what: str = "values") -> np.ndarray:
    """`values` as a float array, or a NonFiniteError naming `what` and the first bad position."""
    array = np.asarray(values, dtype=float)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise NonFiniteError(f"{what}: {bad.size} non-finite value(s), the first at position {bad[0]} "
                             f"({array.flat[bad[0]]}); no interval or test is computed over them "
                             "(check the model's weights and the scores that fed this statistic)")
    return array


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
    values = require_finite(indicators, name)
    n, successes = len(values), int(round(values.sum()))
    out = {name: float(values.mean()) if n else math.nan,
           f"{name}_ci95": list(wilson_interval(successes, n)), "n": n}
    if null is not None:
        out[f"{name}_p"] = binomial_test(successes, n, null)
    return out


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE,
                  null: float = 0.0) -> tuple[float, tuple[float, float], float]:
    """Mean, its Student-t interval and the one-sample t-test p-value against `null`."""
    values = require_finite(values, "mean_interval")
    if len(values) < 2 or np.all(values == values[0]):  # t undefined: no spread to estimate
        mean = float(values.mean()) if len(values) else math.nan
        return mean, (mean, mean), math.nan
    result = stats.ttest_1samp(values, popmean=null)
    ci = result.confidence_interval(confidence)
    return float(values.mean()), (float(ci.low), float(ci.high)), float(result.pvalue)


def mean_summary(values: Sequence[float], name: str, null: float | None = 0.0) -> dict:
    """`{name, name_ci95, name_p, n}` for a mean with a t-interval (p against `null`)."""
    mean, ci, p = mean_interval(require_finite(values, name), null=0.0 if null is None else null)
    out = {name: mean, f"{name}_ci95": list(ci), "n": len(values)}
    if null is not None:
        out[f"{name}_p"] = p
    return out


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> dict:
    """Exact McNemar test on paired 0/1 indicators of two models on the same items.

    Only discordant items carry information: under the null each is equally likely to favour
    either model, so the count of one kind is Binomial(discordant, 1/2).
    """
    a, b = require_finite(a, "mcnemar_exact a") != 0, require_finite(b, "mcnemar_exact b") != 0
    if a.shape != b.shape:
        raise ValueError(f"paired indicators differ in length: {a.shape} vs {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "n": int(a.size), "p": p}


def resample_indices(n: int, n_resamples: int, rng: np.random.Generator,
                     strata: Sequence | None = None) -> np.ndarray:
    """[n_resamples, n] item indices drawn with replacement. With `strata` (one label per item)
    each stratum is resampled within itself, so position i always holds an item of i's stratum
    and group sizes stay fixed (a statistic that compares groups keeps its meaning)."""
    if strata is None:
        return rng.integers(0, n, size=(n_resamples, n))
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise ValueError(f"strata: expected {n} labels, got shape {strata.shape}")
    index = np.empty((n_resamples, n), dtype=np.intp)
    for label in sorted(set(strata.tolist()), key=str):
        positions = np.flatnonzero(strata == label)
        index[:, positions] = positions[rng.integers(0, positions.size, size=(n_resamples, positions.size))]
    return index


def _two_sided_p(draws: np.ndarray, n_resamples: int) -> float:
    # Twice the share of resampled statistics on the far side of zero; +1 smoothing keeps the
    # p-value honest with a finite number of resamples (its floor is 2/(n_resamples+1)).
    far_side = min(np.sum(draws <= 0), np.sum(draws >= 0))
    return float(min(1.0, 2 * (far_side + 1) / (n_resamples + 1)))


def bootstrap(values: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean, *,
              strata: Sequence | None = None, n_resamples: int = EvalConfig.bootstrap_samples, seed: int = EvalConfig.seed,
              confidence: float = CONFIDENCE) -> dict:
    """statistic(values) with a percentile interval and a two-sided bootstrap p against 0,
    resampling items (within `strata` if given). Same conventions as `paired_bootstrap`."""
    values = require_finite(values, "bootstrap")
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"bootstrap needs a non-empty 1-D array, got shape {values.shape}")
    rng = np.random.default_rng(seed)
    index = resample_indices(values.size, n_resamples, rng, strata)
    draws = np.array([statistic(values[i]) for i in index])
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return {"value": float(statistic(values)), "ci95": [float(low), float(high)],
            "p": _two_sided_p(draws, n_resamples), "n": int(values.size)}


def paired_bootstrap(a: Sequence[float], b: Sequence[float],
                     statistic: Callable[[np.ndarray], float] = np.mean, *,
                     strata: Sequence | None = None, n_resamples: int = EvalConfig.bootstrap_samples, seed: int = EvalConfig.seed,
                     confidence: float = CONFIDENCE) -> dict:
    """Difference statistic(a) − statistic(b) over the same items, resampling items jointly
    (within `strata` when given: see `resample_indices`).

    Returns the observed difference, a percentile interval and a two-sided bootstrap p-value
    (twice the share of resampled differences on the far side of zero). scipy.stats.bootstrap
    gives the interval but no p-value, and its resampling of two statistics of different shape
    is awkward, so the resampling is written out here (a few lines).
    """
    a, b = require_finite(a, "paired_bootstrap a"), require_finite(b, "paired_bootstrap b")
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-D arrays of equal length: {a.shape} vs {b.shape}")
    if a.size == 0:
        return {"diff": math.nan, "ci95": [math.nan, math.nan], "p": math.nan, "n": 0}
    observed = float(statistic(a) - statistic(b))
    rng = np.random.default_rng(seed)
    index = resample_indices(a.size, n_resamples, rng, strata)
    diffs = np.array([statistic(a[i]) - statistic(b[i]) for i in index])
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return {"diff": observed, "ci95": [float(low), float(high)], "p": _two_sided_p(diffs, n_resamples),
            "n": int(a.size)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate), in the input order.

    Written out because scipy offers only false-discovery-rate control
    (`scipy.stats.false_discovery_control`: Benjamini-Hochberg/Yekutieli) and statsmodels'
    `multipletests` is not a dependency; the method is four lines: sort, multiply the k-th
    smallest by (m - k), keep the running maximum, cap at 1.
    """
    p = require_finite(p_values, "holm p-values")
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1]: {p.tolist()}")
    order = np.argsort(p, kind="stable")
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted.tolist()
