"""Token-level perplexity on held-out rows of a pre-tokenized stream (no external data needed).

Each row (Pythia: 2049 tokens) is cut into non-overlapping windows the model can take whole;
every token after a window's first is predicted from the tokens before it in that window.
perplexity = exp(total negative log-likelihood / total predicted tokens). Its interval comes from
a paired bootstrap over rows (rows are the independent units; tokens within a row are not).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from debias.errors import UserError
from debias.evaluate.scorer import Request, Scorer


def row_requests(row: np.ndarray, window: int) -> list[Request]:
    """Windows of up to `window` + 1 tokens; the first token of each is context only."""
    ids = [int(t) for t in row]
    return [Request((ids[start],), tuple(ids[start + 1:start + 1 + window]))
            for start in range(0, len(ids) - 1, window)]


def evaluate_stream_perplexity(scorer: Scorer, stream: str | Path, rows: tuple[int, int],
                               window: int | None = None, n_resamples: int = 2000,
                               seed: int = 1234) -> tuple[dict, dict]:
    """Perplexity over stream rows [start, stop), which should lie outside any training window."""
    from debias.stream import IndexedStream

    source = IndexedStream(stream)
    start, stop = (int(x) for x in rows)
    if not 0 <= start < stop <= len(source):
        raise UserError(f"eval.perplexity.rows: [{start}, {stop}) is not a non-empty range inside "
                        f"{source.prefix} ({len(source)} rows); pick held-out rows that exist")
    window = window or scorer.max_length or 2048
    per_row, owners = [], []
    for index in range(start, stop):
        requests = row_requests(source.row(index), window)
        per_row += requests
        owners += [index - start] * len(requests)
    scores = scorer.score(per_row, desc="held-out perplexity")
    nll = np.zeros(stop - start)
    tokens = np.zeros(stop - start)
    for owner, score in zip(owners, scores):
        nll[owner] -= score.logprob
        tokens[owner] += score.num_tokens

    def token_perplexity(nll_and_tokens: np.ndarray) -> float:
        return math.exp(nll_and_tokens[:, 0].sum() / nll_and_tokens[:, 1].sum())

    # Resample rows (a ratio statistic, so resampled directly rather than via scipy's bootstrap).
    table = np.stack([nll, tokens], axis=1)
    rng = np.random.default_rng(seed)
    draws = [token_perplexity(table[rng.integers(0, len(table), len(table))]) for _ in range(n_resamples)]
    metrics = {"perplexity": token_perplexity(table),
               "perplexity_ci95": [float(q) for q in np.quantile(draws, [0.025, 0.975])],
               "n": int(stop - start), "tokens": int(tokens.sum()), "window": int(window),
               "rows": [start, stop], "stream": source.identity()}
    items = {str(start + i): {"nll_per_token": float(nll[i] / tokens[i])} for i in range(len(nll))}
    return metrics, items

