"""Which rows each training step reads, and how they are cut for ranks and micro-batches.

Step s of the window reads the global batch of rows [first_row + (s - start_step) * B, ... + B) of
its stream, in order, exactly as Pythia's step s did. A data-parallel rank r of W takes the r-th
contiguous slice of that batch, and cuts it into `grad_accum` micro-batches of `micro_batch` rows.
Inputs are row[:-1], labels row[1:] (each 2049-token row gives 2048 predictions).

When a user shrinks the global batch below the stream's (`allow_batch_override`), each step reads
the *first* rows of its own Pythia batch, so steps stay aligned with Pythia's data order and both
arms still see the same rows.

`StepPrefetcher` reads the rows of the next steps on a background thread (memory-mapped stream ->
int64 tensor, in pinned memory on CUDA so the copy to the device is asynchronous): the accelerator
never waits for the disk between steps.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from debias.errors import UserError
from debias.stream import IndexedStream


def open_stream(path: str) -> IndexedStream:
    """The stream reader of `debias.stream` (MMIDIDX, memory-mapped)."""
    return IndexedStream(path)


@dataclass(frozen=True)
class BatchLayout:
    """How one global batch is split: rows_per_step = micro_batch * grad_accum * world_size."""

    stream_batch: int      # rows per step in the stream (the recipe's batch, 1024 for Pythia)
    micro_batch: int
    grad_accum: int
    world_size: int = 1

    @property
    def rows_per_step(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    @property
    def rows_per_rank(self) -> int:
        return self.micro_batch * self.grad_accum

    @classmethod
    def resolve(cls, stream_batch: int, micro_batch: int, grad_accum, world_size: int, allow_override: bool) -> "BatchLayout":
        """Fill in grad_accum='auto' and check that the layout divides the recipe's batch."""
        if grad_accum == "auto":
            if stream_batch % (micro_batch * world_size):
                raise UserError(
                    f"trainer.micro_batch={micro_batch} x world size {world_size} does not divide the batch of "
                    f"{stream_batch} rows; choose a micro_batch that divides {stream_batch // world_size}"
                )
            grad_accum = stream_batch // (micro_batch * world_size)
        layout = cls(stream_batch, micro_batch, int(grad_accum), world_size)
        if layout.rows_per_step > stream_batch:
            raise UserError(
                f"trainer: micro_batch {micro_batch} x grad_accum {grad_accum} x world size {world_size} = "
                f"{layout.rows_per_step} rows per step exceeds the stream's batch of {stream_batch}; lower them"
            )
        if layout.rows_per_step != stream_batch and not allow_override:
            raise UserError(
                f"trainer: micro_batch {micro_batch} x grad_accum {grad_accum} x world size {world_size} = "
                f"{layout.rows_per_step} rows per step, but the recipe's batch is {stream_batch}; make them "
                "equal (grad_accum: auto does) or set trainer.allow_batch_override=true"
            )
        return layout


class WindowBatches:
    """The rows a rank trains on at each global step of a window.

    `stream` is anything with `rows(start, stop) -> ndarray[n, L]` and `len()` (an IndexedStream).
    """

    def __init__(self, stream, first_row: int, start_step: int, layout: BatchLayout, rank: int = 0,
                 vocab_size: int | None = None, name: str = "stream"):
        self.stream, self.first_row, self.start_step = stream, first_row, start_step
        self.layout, self.rank, self.vocab_size, self.name = layout, rank, vocab_size, name

    def check_covers(self, end_step: int, row_length: int) -> None:
        """The stream holds every row the window needs, of the right length."""
        last_row = self.first_row + (end_step - self.start_step) * self.layout.stream_batch
        if self.first_row < 0 or len(self.stream) < last_row:
            raise UserError(
                f"{self.name}: holds {len(self.stream)} rows, but steps {self.start_step}..{end_step - 1} from "
                f"first_row {self.first_row} need rows up to {last_row}; pass the stream and first_row of the window"
            )
        stream_length = getattr(self.stream, "row_length", row_length)
        if stream_length != row_length:
            raise UserError(f"{self.name}: rows are {stream_length} tokens long, the geometry says {row_length}; fix data.row_length")

    def global_rows(self, step: int) -> tuple[int, int]:
        """Stream rows [start, stop) this rank reads at global `step`."""
        batch_start = self.first_row + (step - self.start_step) * self.layout.stream_batch
        start = batch_start + self.rank * self.layout.rows_per_rank
        return start, start + self.layout.rows_per_rank

    def rows(self, step: int) -> np.ndarray:
        start, stop = self.global_rows(step)
        rows = np.asarray(self.stream.rows(start, stop))
        if self.vocab_size is not None and rows.size and int(rows.max()) >= self.vocab_size:
            raise UserError(
                f"{self.name}: rows {start}..{stop - 1} hold token id {int(rows.max())}, but the model's vocabulary "
                f"has {self.vocab_size} ids; use the model that matches this stream's tokenizer"
            )
        return rows

    def step_tokens(self, step: int, pin: bool = False) -> torch.Tensor:
        """This rank's rows of `step` as one int64 CPU tensor [rows_per_rank, row_length]."""
        tokens = torch.from_numpy(self.rows(step).astype(np.int64))
        return tokens.pin_memory() if pin else tokens

    def micro_batches(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(input_ids, labels) int64 CPU tensors, `grad_accum` of them, `micro_batch` rows each."""
        yield from split_micro_batches(self.step_tokens(step), self.layout.micro_batch)


def split_micro_batches(tokens: torch.Tensor, micro_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, labels) views of each `micro_batch` rows: row[:-1] and row[1:]."""
    for chunk in tokens.split(micro_batch):
        yield chunk[:, :-1], chunk[:, 1:]


class StepPrefetcher:
    """Iterate (step, tokens) over `steps`, the tokens read `depth` steps ahead on a thread.

    Errors of the reader (a token id past the vocabulary, a damaged stream) are raised in the
    consumer at the step they belong to. Use as a context manager: leaving it stops the thread.
    """

    _DONE = object()

    def __init__(self, batches: WindowBatches, steps: Iterable[int], pin: bool, depth: int = 2):
        self.batches, self.steps, self.pin = batches, list(steps), pin
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, name="debias-prefetch", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for step in self.steps:
            try:
                item = (step, self.batches.step_tokens(step, pin=self.pin))
            except BaseException as err:  # handed to the consumer, raised there
                item = (step, err)
            if not self._put(item) or isinstance(item[1], BaseException):
                return
        self._put((None, self._DONE))

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        while True:
            step, tokens = self.queue.get()
            if tokens is self._DONE:
                return
            if isinstance(tokens, BaseException):
                raise tokens
            yield step, tokens

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()

    def __enter__(self) -> "StepPrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
