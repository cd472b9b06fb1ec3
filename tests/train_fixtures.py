"""What the trainer tests share: a tiny GPT-NeoX, streams of random rows in the real format, and a
job over them. Each test module passes its own schedule (steps, warm-up, seed) to `tiny_job`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from debias.model import GPTNeoXConfig
from debias.stream import StreamWriter
from debias.train import TrainJob

TINY = GPTNeoXConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=128,
                     max_position_embeddings=16)
BATCH, ROW = 8, 17  # rows per step, tokens per row (16 predictions)


def random_rows(num_rows: int, seed: int = 0, vocab: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(num_rows, ROW)).astype(np.uint16)


def write_stream(prefix: Path, rows: np.ndarray) -> str:
    with StreamWriter(prefix, np.uint16) as writer:
        writer.append_rows(rows)
    return str(prefix)


def tiny_job(stream: str, *, end_step: int, total_steps: int, warmup_steps: int, seed: int, **overrides) -> TrainJob:
    """Train TINY from random init on `stream` (steps [0, end_step) unless overridden)."""
    values = dict(init=TINY, stream=stream, first_row=0, start_step=0, end_step=end_step, peak_lr=3e-3,
                  batch_size=BATCH, row_length=ROW, total_steps=total_steps, warmup_steps=warmup_steps, seed=seed)
    return TrainJob(**{**values, **overrides})
