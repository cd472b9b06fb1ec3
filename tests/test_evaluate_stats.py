"""debias.evaluate.stats against textbook formulas computed by hand (and scipy's distributions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from debias.errors import UserError
from debias.evaluate import BENCHMARKS, PRIMARY_METRIC, HeadlineRole, compare_items, metric_declarations
from debias.evaluate.stats import (
    NonFiniteError, binomial_test, bootstrap, holm, mcnemar_exact, mean_interval, paired_bootstrap,
    proportion_summary, resample_indices, wilson_interval,
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


def test_compare_items_pairs_by_id_and_runs_each_declared_test():
    items_a = {"crows_pairs": {str(i): {"stereotype": float(i % 2), "abs_ll_diff": i * 0.1} for i in range(40)},
               "lambada": {str(i): {"ll": -2.0, "correct": 1.0} for i in range(10)}}
    items_b = {"crows_pairs": {str(i): {"stereotype": 0.0, "abs_ll_diff": i * 0.1} for i in range(1, 41)},
               "lambada": {str(i): {"ll": -3.0, "correct": 0.0} for i in range(10)}}
    out = compare_items(items_a, items_b, n_resamples=200)
    pct = out["crows_pairs"]["pct_stereotype"]  # keyed by the declared metric, field "stereotype"
    assert pct["n"] == 39 and pct["field"] == "stereotype"  # ids 1..39 only
    assert pct["mcnemar"]["only_a"] == 20 and pct["mcnemar"]["only_b"] == 0
    assert pct["test"] == "mcnemar" and pct["p"] == pct["mcnemar"]["p"]
    diff = out["crows_pairs"]["likelihood_diff"]
    assert diff["diff"] == pytest.approx(0.0) and "mcnemar" not in diff and diff["p"] == diff["diff_p"]
    lam = out["lambada"]["perplexity"]
    assert lam["field"] == "ll" and lam["test"] == "paired bootstrap"
    assert (lam["a"], lam["b"]) == pytest.approx((math.exp(2.0), math.exp(3.0)))
    # Holm over the comparison's family of declared p-values, beside each raw p.
    family = [r for bench in out.values() for r in bench.values()]
    assert len(family) == 4
    assert [r["p_holm"] for r in family] == pytest.approx(holm([r["p"] for r in family]))
    assert all(r["p_holm"] >= r["p"] for r in family)


def test_compare_items_resamples_group_statistics_within_groups():
    """Association between two models: B = A plus a constant on every item (a blanket shift)
    leaves the association difference exactly 0 in every resample, and the blanket-shift
    difference exactly the constant."""
    rng = np.random.default_rng(3)
    gender = ["female"] * 30 + ["male"] * 50
    a = {str(i): {"feminine_preference": float(v), "stereotyped_gender": g}
         for i, (v, g) in enumerate(zip(rng.normal(0.4, 1.0, 80), gender))}
    b = {k: {**v, "feminine_preference": v["feminine_preference"] + 2.0} for k, v in a.items()}
    out = compare_items({"winobias": a}, {"winobias": b}, n_resamples=300)["winobias"]
    assert out["association"]["diff"] == pytest.approx(0.0, abs=1e-12)
    assert out["association"]["diff_ci95"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert out["blanket_shift"]["diff"] == pytest.approx(-2.0)
    assert out["blanket_shift"]["diff_ci95"] == pytest.approx([-2.0, -2.0])
    assert out["association"]["primary"] and out["association"]["headline"] == "association"
    assert out["association"]["n"] == 80


def test_compare_items_refuses_items_whose_groups_disagree():
    a = {"0": {"feminine_preference": 0.1, "stereotyped_gender": "female"},
         "1": {"feminine_preference": 0.2, "stereotyped_gender": "male"}}
    b = {"0": {"feminine_preference": 0.1, "stereotyped_gender": "male"},
         "1": {"feminine_preference": 0.2, "stereotyped_gender": "male"}}
    with pytest.raises(UserError, match="same data"):
        compare_items({"winobias": a}, {"winobias": b}, n_resamples=10)


def test_holm_matches_the_step_down_by_hand():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.2]) == [0.2]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_statistics_refuse_non_finite_values(bad):
    values = [0.1, 0.2, bad, 0.4]
    for call in (lambda: proportion_summary(values, "x"), lambda: mean_interval(values),
                 lambda: paired_bootstrap(values, [0.0] * 4, n_resamples=10),
                 lambda: bootstrap(values, n_resamples=10), lambda: mcnemar_exact(values, [0, 0, 0, 0]),
                 lambda: holm([0.1, bad])):
        with pytest.raises(NonFiniteError, match="position"):
            call()


def test_stratified_resampling_keeps_each_position_in_its_group():
    strata = np.array(["f", "m", "m", "f", "m"])
    index = resample_indices(5, 200, np.random.default_rng(0), strata)
    assert (strata[index] == strata).all()
    assert len(np.unique(index[:, 0])) == 2  # position 0 draws from the two "f" items


def test_declarations_are_complete_and_consistent():
    assert PRIMARY_METRIC == "winobias.association"
    keys = [m.key for m in metric_declarations()]
    assert len(keys) == len(set(keys))
    for role in HeadlineRole:
        assert metric_declarations(headline=role), role
    for bench in ("winobias", "crows_pairs"):
        names = {m.name for m in BENCHMARKS[bench]}
        assert {"association", "blanket_shift"} <= names
    for metric in metric_declarations(comparable=True):
        if metric.test.value == "mcnemar":
            assert metric.statistic.value == "mean"  # McNemar compares shares of 0/1 items
