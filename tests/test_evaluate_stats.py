"""debias.evaluate.stats against textbook formulas computed by hand (and scipy's distributions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from debias.evaluate import compare_items
from debias.evaluate.stats import (
    binomial_test, mcnemar_exact, mean_interval, paired_bootstrap, proportion_summary, wilson_interval,
)

Z95 = sps.norm.ppf(0.975)


def hand_wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return centre - half, centre + half


def hand_two_sided_binomial(k: int, n: int) -> float:
    """Exact test against 1/2: twice the smaller tail (the distribution is symmetric)."""
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("k,n", [(0, 10), (7, 20), (138, 262), (262, 262), (1, 3)])
def test_wilson_matches_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(hand_wilson(k, n), abs=1e-12)


@pytest.mark.parametrize("k,n", [(7, 20), (10, 20), (138, 262), (0, 5), (160, 262)])
def test_binomial_test_matches_exact_sum(k, n):
    assert binomial_test(k, n) == pytest.approx(hand_two_sided_binomial(k, n), rel=1e-9)


def test_proportion_summary_reports_value_interval_and_p():
    out = proportion_summary([1, 1, 0, 1, 0, 1, 1, 1], "acc")
    assert out["acc"] == 6 / 8 and out["n"] == 8
    assert out["acc_ci95"] == pytest.approx(list(hand_wilson(6, 8)))
    assert out["acc_p"] == pytest.approx(hand_two_sided_binomial(6, 8))


def test_mean_interval_matches_student_t():
    values = np.array([0.3, -1.2, 2.5, 0.7, 1.1, -0.4, 0.9])
    mean, (low, high), p = mean_interval(values)
    half = sps.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half))
    t = values.mean() / (values.std(ddof=1) / math.sqrt(len(values)))
    assert p == pytest.approx(2 * sps.t.sf(abs(t), len(values) - 1))


def test_mcnemar_counts_discordant_pairs_only():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0])
    b = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0])
    out = mcnemar_exact(a, b)
    assert (out["only_a"], out["only_b"], out["n"]) == (6, 1, 12)
    assert out["p"] == pytest.approx(hand_two_sided_binomial(1, 7))  # 2 * 8/128 = 0.125
    assert mcnemar_exact(a, a)["p"] == 1.0


def test_paired_bootstrap_is_seeded_and_sensible():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 1.0, 300)
    b = a - 0.5 + rng.normal(0, 0.1, 300)  # A is higher by 0.5 on every item, tightly paired
    out = paired_bootstrap(a, b, n_resamples=1000, seed=7)
    assert out["diff"] == pytest.approx(np.mean(a - b))
    assert out["ci95"][0] < out["diff"] < out["ci95"][1]
    assert 0.45 < out["ci95"][0] and out["ci95"][1] < 0.55  # pairing removes the item spread
    assert out["p"] == pytest.approx(2 / 1001)  # no resample crosses zero: the smallest p possible
    assert paired_bootstrap(a, b, n_resamples=1000, seed=7) == out
    # Same items resampled by hand with the same generator give the same interval.
    index = np.random.default_rng(7).integers(0, 300, size=(1000, 300))
    diffs = (a[index] - b[index]).mean(axis=1)
    assert out["ci95"] == pytest.approx(list(np.quantile(diffs, [0.025, 0.975])))
    assert paired_bootstrap(a, a, n_resamples=200)["p"] == 1.0


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_paired_bootstrap_p_agrees_with_paired_t_test_on_normal_data(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, 300)
    b = a + rng.normal(0.1, 1, 300)
    assert paired_bootstrap(a, b, n_resamples=2000, seed=7)["p"] == pytest.approx(
        sps.ttest_rel(a, b).pvalue, abs=0.03)


def test_compare_items_pairs_by_id_and_tests_each_field():
    items_a = {"crows_pairs": {str(i): {"stereotype": float(i % 2), "ll_diff": i * 0.1} for i in range(40)},
               "lambada": {str(i): {"ll": -2.0, "correct": 1.0} for i in range(10)}}
    items_b = {"crows_pairs": {str(i): {"stereotype": 0.0, "ll_diff": i * 0.1} for i in range(1, 41)},
               "lambada": {str(i): {"ll": -3.0, "correct": 0.0} for i in range(10)}}
    out = compare_items(items_a, items_b, n_resamples=200)
    crows = out["crows_pairs"]
    assert crows["stereotype"]["n"] == 39  # ids 1..39 only
    assert crows["stereotype"]["mcnemar"]["only_a"] == 20 and crows["stereotype"]["mcnemar"]["only_b"] == 0
    assert crows["ll_diff"]["diff"] == pytest.approx(0.0) and "mcnemar" not in crows["ll_diff"]
    lam = out["lambada"]["ll"]
    assert lam["metric"] == "perplexity"
    assert (lam["a"], lam["b"]) == pytest.approx((math.exp(2.0), math.exp(3.0)))
