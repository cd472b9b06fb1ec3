"""LAMBADA (OpenAI's detokenized test set), as lm-evaluation-harness's `lambada_openai` scores it.

Each passage splits at its last space: context = the text before it, target = " " + last word.
  perplexity = exp(−mean over passages of LL(target | context))
  accuracy   = share of passages whose every target token is the greedy argmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from debias.errors import UserError
from debias.evaluate import stats
from debias.evaluate.datafiles import checksum, read_text
from debias.evaluate.declarations import (Better, BenchmarkDeclaration, HeadlineRole, MetricDeclaration,
                                          PairedTest, Statistic)
from debias.evaluate.scorer import Scorer
from debias.io import jsonl_strings

DECLARATION = BenchmarkDeclaration("lambada", "LAMBADA (OpenAI), last-word prediction", "passage", (
    MetricDeclaration("lambada", "perplexity", "exp(-mean log-likelihood of the last word)", Better.LOWER,
                      headline=HeadlineRole.LM_QUALITY, item_field="ll",
                      statistic=Statistic.PERPLEXITY_FROM_LOGLIKELIHOOD),
    MetricDeclaration("lambada", "accuracy", "share of passages whose last word is the greedy continuation",
                      Better.HIGHER, headline=HeadlineRole.LM_QUALITY, item_field="correct",
                      test=PairedTest.MCNEMAR),
))


@dataclass(frozen=True)
class LambadaPassage:
    context: str
    target: str  # " " + last word


@dataclass
class LambadaData:
    passages: list[LambadaPassage]
    dataset: str
    identity: dict


def split_passage(text: str) -> LambadaPassage:
    """lm-eval: context = text.split(' ')[:-1] joined by ' ', target = ' ' + the last piece."""
    words = text.split(" ")
    return LambadaPassage(" ".join(words[:-1]), " " + words[-1])


def load_lambada(path: str | Path, limit: int | None = None, check_pinned: bool = True) -> LambadaData:
    """Passages from a JSONL file of `{"text": ...}` lines (the first `limit` if given)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserError(f"lambada limit={limit!r}: must be a positive number of passages (or null for all)")
    path = Path(path)
    passages = []
    lines = read_text(path, "LAMBADA JSONL").splitlines()
    for number, text in jsonl_strings(lines, path, "text", "use lambada_test.jsonl from OpenAI's release"):
        if " " not in text.strip():
            raise UserError(f"{path}:{number}: passage has no context before its last word")
        passages.append(split_passage(text))
        if limit is not None and len(passages) >= limit:
            break
    identity = checksum(path, check_pinned)
    return LambadaData(passages, str(path), identity if limit is None else {**identity, "limit": limit})


def evaluate_lambada(scorer: Scorer, data: LambadaData) -> tuple[dict, dict]:
    scores = scorer.score([scorer.text_request(p.context, p.target) for p in data.passages],
                          desc="lambada")
    ll = np.array([s.logprob for s in scores])
    greedy = np.array([s.greedy for s in scores], dtype=float)
    mean_ll, (low, high), _ = stats.mean_interval(ll)
    metrics = {"dataset": data.dataset, "checksum": data.identity, "n": len(ll),
               "perplexity": math.exp(-mean_ll),
               # perplexity falls as the mean log-likelihood rises: the bounds swap.
               "perplexity_ci95": [math.exp(-high), math.exp(-low)]}
    accuracy = stats.proportion_summary(greedy, "accuracy", null=None)
    accuracy.pop("n")
    metrics.update(accuracy)
    items = {str(i): {"ll": float(ll[i]), "correct": float(greedy[i])} for i in range(len(ll))}
    return metrics, items
