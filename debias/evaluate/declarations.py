"""What each benchmark reports, declared once, so that reports and comparisons read declarations
instead of guessing from key names (as lm-evaluation-harness tasks declare their metrics).

A `MetricDeclaration` says, for one number in a benchmark's report section:
- where it is: `key` = "<benchmark>.<name>" (e.g. "winobias.association"); its interval and
  p-value sit beside it as `<name>_ci95` / `<name>_p` (the report convention, docs/architecture.md);
- which way is good: `better` (higher, lower, closer to `ideal`, or none: a description);
- its place in the headline: `headline` (association, blanket shift, LM quality, manipulation)
  and `primary` for the one pre-declared test of a study (`PRIMARY_METRIC`);
- how two models are compared on it: the per-item field (`item_field`) that
  `debias.evaluate.compare_items` pairs by item id, the `statistic` that turns those item values
  into the metric, and the paired `test` whose p-value is the comparison's (McNemar for 0/1
  items, else a paired bootstrap of the statistic).

Usage:

    from debias.evaluate import BENCHMARKS, PRIMARY_METRIC, metric_declarations
    for d in metric_declarations(headline=HeadlineRole.ASSOCIATION):
        value = report[d.benchmark][d.name]; low, high = report[d.benchmark][d.name + "_ci95"]

Each benchmark module (winobias.py, crows_pairs.py, lambada.py, perplexity.py, manipulation.py)
holds its own `DECLARATION`; `BENCHMARKS` (debias/evaluate/catalog.py) collects them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Iterator

import numpy as np


class Better(str, Enum):
    """Which way a metric improves."""

    HIGHER = "higher"
    LOWER = "lower"
    CLOSER_TO_IDEAL = "closer to ideal"  # see MetricDeclaration.ideal (0 for association, 0.5 for shares)
    NONE = "none"                        # a description with no good direction (e.g. the manipulation check)


class HeadlineRole(str, Enum):
    """Where a metric stands in a report's headline (docs/architecture.md, "debias.report")."""

    ASSOCIATION = "association"      # stereotype association, blind to a blanket gender shift
    BLANKET_SHIFT = "blanket shift"  # the overall preference for the feminine form
    LM_QUALITY = "LM quality"        # perplexity, LAMBADA
    MANIPULATION = "manipulation"    # did the intervention reach the model's pronouns at all


class PairedTest(str, Enum):
    """The test whose p-value a comparison of two models on the same items reports."""

    PAIRED_BOOTSTRAP = "paired bootstrap"  # resample items jointly; two-sided p of the statistic's difference
    MCNEMAR = "mcnemar"                    # exact McNemar on 0/1 items (only discordant items count)


class Statistic(str, Enum):
    """How the per-item values become the metric (and the statistic the paired bootstrap resamples)."""

    MEAN = "mean"
    PERPLEXITY_FROM_LOGLIKELIHOOD = "exp(-mean)"  # items hold log-likelihoods (LAMBADA)
    PERPLEXITY_FROM_NLL = "exp(mean)"              # items hold equal-size rows' mean NLL per token
    GROUP_DIFFERENCE = "mean(group 1) - mean(group 2)"           # association
    GROUP_BALANCED_MEAN = "(mean(group 1) + mean(group 2)) / 2"  # blanket shift


GROUP_STATISTICS = (Statistic.GROUP_DIFFERENCE, Statistic.GROUP_BALANCED_MEAN)


@dataclass(frozen=True)
class MetricDeclaration:
    benchmark: str               # report section, e.g. "winobias"
    name: str                    # key inside the section; dotted for nested ones ("sent_more_feminine.pct_stereotype")
    description: str
    better: Better
    ideal: float | None = None   # the no-bias value when better is CLOSER_TO_IDEAL
    headline: HeadlineRole | None = None
    primary: bool = False        # the one pre-declared test of the study
    item_field: str | None = None  # per-item field for paired comparisons (None: not compared)
    statistic: Statistic = Statistic.MEAN
    test: PairedTest = PairedTest.PAIRED_BOOTSTRAP
    group_field: str | None = None           # per-item group label (group statistics and `only`)
    groups: tuple[str, str] | None = None    # (group 1, group 2) for the group statistics
    only: str | None = None                  # compare only items whose group_field equals this

    def __post_init__(self) -> None:
        if self.statistic in GROUP_STATISTICS and not (self.group_field and self.groups):
            raise ValueError(f"{self.key}: a group statistic needs group_field and groups")
        if self.only is not None and not self.group_field:
            raise ValueError(f"{self.key}: `only` needs group_field")
        if (self.better is Better.CLOSER_TO_IDEAL) != (self.ideal is not None):
            raise ValueError(f"{self.key}: `ideal` goes with better=CLOSER_TO_IDEAL, and only with it")

    @property
    def key(self) -> str:
        """The report key, "<benchmark>.<name>"."""
        return f"{self.benchmark}.{self.name}"

    @property
    def comparable(self) -> bool:
        return self.item_field is not None

    def lookup(self, section: dict) -> dict | None:
        """The mapping that holds this metric inside its benchmark's section (nested names followed)."""
        *path, _ = self.name.split(".")
        for part in path:
            section = section.get(part) if isinstance(section, dict) else None
        return section if isinstance(section, dict) else None

    def statistic_function(self, groups: np.ndarray | None = None) -> Callable[[np.ndarray], float]:
        """values -> the metric. Group statistics read each value's group from `groups` (same
        order); stratified resampling keeps every position's group, so the function stays valid
        for resampled values."""
        if self.statistic is Statistic.MEAN:
            return lambda values: float(np.mean(values))
        if self.statistic is Statistic.PERPLEXITY_FROM_LOGLIKELIHOOD:
            return lambda values: math.exp(-float(np.mean(values)))
        if self.statistic is Statistic.PERPLEXITY_FROM_NLL:
            return lambda values: math.exp(float(np.mean(values)))
        if groups is None:
            raise ValueError(f"{self.key}: group statistic without groups")
        first, second = (np.asarray(groups) == g for g in self.groups)
        if not first.any() or not second.any():
            raise ValueError(f"{self.key}: needs items of both groups {self.groups}")
        if self.statistic is Statistic.GROUP_DIFFERENCE:
            return lambda values: float(values[first].mean() - values[second].mean())
        return lambda values: float((values[first].mean() + values[second].mean()) / 2)


@dataclass(frozen=True)
class BenchmarkDeclaration:
    name: str          # report section and items key
    title: str         # for people
    item: str          # what one item is ("pair", "passage", "row", "template")
    metrics: tuple[MetricDeclaration, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for metric in self.metrics:
            if metric.benchmark != self.name:
                raise ValueError(f"{metric.key} declared under benchmark {self.name}")

    def metric(self, name: str) -> MetricDeclaration:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"{self.name} declares no metric {name!r}")

    def __iter__(self) -> Iterator[MetricDeclaration]:
        return iter(self.metrics)
