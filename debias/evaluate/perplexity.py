"""Token-level perplexity on held-out rows: rows of a pre-tokenized stream, or held-out text
packed into rows with the model's tokenizer (debias/evaluate/heldout.py says which source a run
should use and how text is packed).

Each row (Pythia: 2049 tokens) is cut into non-overlapping windows the model can take whole;
every token after a window's first is predicted from the tokens before it in that window.
perplexity = exp(total negative log-likelihood / total predicted tokens). Its interval comes from
a bootstrap over rows (rows are the independent units; tokens within a row are not). Every row
predicts the same number of tokens, so exp(mean over rows of the NLL per token) is the same
number: that is the statistic paired comparisons resample (`nll_per_token` per row).

Both sources report `perplexity`, `perplexity_ci95`, `tokens`, `n` (rows) and `source`, a
sentence saying where the tokens came from (e.g. "stream rows 16000..16064 after the window end
(seen by no arm or checkpoint)" or "text file X (..., sha256 ...)").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from debias.config import EvalConfig
from debias.errors import UserError
from debias.evaluate import stats
from debias.evaluate.declarations import (Better, BenchmarkDeclaration, HeadlineRole, MetricDeclaration,
                                          Statistic)
from debias.evaluate.heldout import pack_rows, read_heldout_documents
from debias.evaluate.scorer import Request, Scorer
from debias.stream import IndexedStream

DECLARATION = BenchmarkDeclaration("perplexity", "Held-out perplexity", "row", (
    MetricDeclaration("perplexity", "perplexity", "token perplexity on held-out rows", Better.LOWER,
                      headline=HeadlineRole.LM_QUALITY, item_field="nll_per_token",
                      statistic=Statistic.PERPLEXITY_FROM_NLL),
))


def row_requests(row: np.ndarray, window: int) -> list[Request]:
    """Windows of up to `window` + 1 tokens; the first token of each is context only."""
    ids = [int(t) for t in row]
    return [Request((ids[start],), tuple(ids[start + 1:start + 1 + window]))
            for start in range(0, len(ids) - 1, window)]


def score_rows(scorer: Scorer, rows: Sequence[np.ndarray], row_ids: Sequence[str], source: str,
               window: int | None = None, n_resamples: int = EvalConfig.bootstrap_samples, seed: int = EvalConfig.seed) -> tuple[dict, dict]:
    """Perplexity over `rows` (token id arrays) -> (metrics, items keyed by `row_ids`)."""
    window = int(window or scorer.max_length or 2048)
    if window < 1:
        raise UserError(f"eval.perplexity.window={window}: must be a positive number of tokens")
    requests, owners = [], []
    for index, row in enumerate(rows):
        per_row = row_requests(row, window)
        requests += per_row
        owners += [index] * len(per_row)
    scores = scorer.score(requests, desc="held-out perplexity")
    nll = np.zeros(len(rows))
    tokens = np.zeros(len(rows))
    for owner, score in zip(owners, scores):
        nll[owner] -= score.logprob
        tokens[owner] += score.num_tokens
    per_token = stats.require_finite(nll / tokens, "held-out perplexity NLL per token")
    statistic = DECLARATION.metric("perplexity").statistic_function()
    draws = stats.bootstrap(per_token, statistic, n_resamples=n_resamples, seed=seed) if len(rows) > 1 else None
    value = math.exp(nll.sum() / tokens.sum())
    metrics = {"perplexity": value, "perplexity_ci95": draws["ci95"] if draws else [value, value],
               "n": len(rows), "tokens": int(tokens.sum()), "window": window, "source": source}
    items = {row_id: {"nll_per_token": float(v)} for row_id, v in zip(row_ids, per_token)}
    return metrics, items


def evaluate_stream_perplexity(scorer: Scorer, stream: str | Path, rows: tuple[int, int],
                               window: int | None = None, n_resamples: int = EvalConfig.bootstrap_samples,
                               seed: int = EvalConfig.seed, source: str | None = None) -> tuple[dict, dict]:
    """Perplexity over stream rows [start, stop), which should lie outside any training window;
    `source` says where they lie (default: the rows and the stream, making no claim)."""
    opened = IndexedStream(stream)
    start, stop = (int(x) for x in rows)
    if not 0 <= start < stop <= len(opened):
        raise UserError(f"eval.perplexity.rows: [{start}, {stop}) is not a non-empty range inside "
                        f"{opened.prefix} ({len(opened)} rows); pick held-out rows that exist")
    label = source or f"stream rows {start}..{stop} of {opened.prefix} (whether an arm saw them is not known here)"
    metrics, items = score_rows(scorer, [opened.row(i) for i in range(start, stop)],
                                [str(i) for i in range(start, stop)], label, window, n_resamples, seed)
    metrics.update({"rows": [start, stop], "stream": opened.identity()})
    return metrics, items


def evaluate_text_perplexity(scorer: Scorer, text: str | Path, *, text_field: str = "text",
                             config: str | None = None, split: str = "test", row_length: int | None = None,
                             max_rows: int = 64, window: int | None = None, n_resamples: int = EvalConfig.bootstrap_samples,
                             seed: int = EvalConfig.seed) -> tuple[dict, dict]:
    """Perplexity over held-out text packed into up to `max_rows` rows of `row_length` tokens
    (default: the model's context + 1, as Pythia's 2049-token rows for a 2048 context)."""
    documents, described = read_heldout_documents(text, text_field, config, split)
    length = row_length or (scorer.max_length + 1 if scorer.max_length else 2049)
    rows, packed = pack_rows(documents, scorer.tokenizer, scorer.prefix_id, length, max_rows)
    source = f"{described}: {packed['rows']} rows of {length} tokens from {packed['documents_read']} documents"
    metrics, items = score_rows(scorer, list(rows), [f"text row {i}" for i in range(len(rows))], source,
                                window, n_resamples, seed)
    metrics["text"] = {"source": str(text), "text_field": text_field, "config": config, "split": split, **packed}
    return metrics, items
