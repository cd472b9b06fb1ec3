"""Paired comparison of two models on the same items, driven by the metric declarations.

For every declared metric with a per-item field (debias/evaluate/catalog.py), over the items both
models were scored on (an item whose field is None for either model is left out, `n` counts the
rest):
- `a`, `b`: the metric's statistic for each model on those items;
- `diff` = a − b with a paired-bootstrap 95% interval (`diff_ci95`) and two-sided p (`diff_p`);
  items are resampled jointly, and within their group for group statistics (association, blanket
  shift), so each resample compares the same items of both models;
- `mcnemar`: the exact McNemar test for metrics declared on 0/1 items;
- `test`, `p`: the declared test and its p-value (McNemar for 0/1 items, else the bootstrap's);
- `p_holm`: `p` Holm-adjusted over every metric of this one comparison (the family is one
  comparison, e.g. treatment vs control); `primary` marks the study's pre-declared test.
A bootstrap p has a floor of 2/(n_resamples + 1): read it as "at most".
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from debias.config import EvalConfig
from debias.errors import UserError
from debias.evaluate import stats
from debias.evaluate.catalog import BENCHMARKS
from debias.evaluate.declarations import GROUP_STATISTICS, MetricDeclaration, PairedTest


def compare_items(items_a: Mapping, items_b: Mapping, *, n_resamples: int = EvalConfig.bootstrap_samples,
                  seed: int = EvalConfig.seed) -> dict:
    """`{benchmark: {metric name: result}}` for model A against model B (see the module doc).
    Benchmarks without declarations are skipped."""
    out: dict[str, dict] = {}
    for bench, declaration in BENCHMARKS.items():
        if bench not in items_a or bench not in items_b:
            continue
        results = {}
        for metric in declaration:
            if metric.comparable:
                result = compare_metric(metric, items_a[bench], items_b[bench], n_resamples, seed)
                if result is not None:
                    results[metric.name] = result
        if results:
            out[bench] = results
    family = [(bench, name) for bench, results in out.items() for name in results]
    adjusted = stats.holm([out[b][n]["p"] for b, n in family]) if family else []
    for (bench, name), p_holm in zip(family, adjusted):
        out[bench][name]["p_holm"] = p_holm
    return out


def compare_metric(metric: MetricDeclaration, items_a: Mapping, items_b: Mapping,
                   n_resamples: int, seed: int) -> dict | None:
    """One declared metric between two models' items of its benchmark (None: no shared items)."""
    field = metric.item_field
    a, b, groups = [], [], []
    for item_id, row_a in items_a.items():
        row_b = items_b.get(item_id)
        if row_b is None or row_a.get(field) is None or row_b.get(field) is None:
            continue
        if metric.group_field:
            group = row_a.get(metric.group_field)
            if group != row_b.get(metric.group_field):
                raise UserError(f"{metric.benchmark} item {item_id}: {metric.group_field} is {group!r} for one "
                                f"model and {row_b.get(metric.group_field)!r} for the other; compare models "
                                "evaluated on the same data")
            if metric.only is not None and group != metric.only:
                continue
            if metric.statistic in GROUP_STATISTICS and group not in metric.groups:
                continue
            groups.append(group)
        a.append(row_a[field])
        b.append(row_b[field])
    if not a:
        return None
    a = stats.require_finite(a, f"{metric.key} ({field}) of model A")
    b = stats.require_finite(b, f"{metric.key} ({field}) of model B")
    grouped = metric.statistic in GROUP_STATISTICS
    strata = np.array(groups, dtype=object) if grouped else None
    if grouped and not all(g in groups for g in metric.groups):
        return None  # the statistic needs items of both groups
    statistic = metric.statistic_function(strata)
    boot = stats.paired_bootstrap(a, b, statistic, strata=strata, n_resamples=n_resamples, seed=seed)
    result = {"metric": metric.name, "field": field, "statistic": metric.statistic.value,
              "a": statistic(a), "b": statistic(b), "diff": boot["diff"], "diff_ci95": boot["ci95"],
              "diff_p": boot["p"], "n": len(a), "test": metric.test.value, "p": boot["p"],
              "better": metric.better.value, "headline": metric.headline.value if metric.headline else None,
              "primary": metric.primary}
    if metric.test is PairedTest.MCNEMAR:
        if not (np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
            raise ValueError(f"{metric.key}: declared for McNemar but {field} holds values other than 0/1")
        result["mcnemar"] = stats.mcnemar_exact(a, b)
        result["p"] = result["mcnemar"]["p"]
    return result
