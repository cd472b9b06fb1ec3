"""Where held-out perplexity gets its tokens, and held-out text packed into rows.

Held-out perplexity needs tokens that neither the starting checkpoint nor any arm trained on.
`choose_heldout_source` applies the order of preference:
  1. stream rows after the window's end (the checkpoint sits at the window's start and every arm
     stops at its end, so nobody saw them);
  2. otherwise a held-out text the user names (`eval.perplexity.text`: a .jsonl file with a text
     field, a plain-text file whose blank-line-separated paragraphs are documents, or a
     `datasets` name such as a Pile test split), packed with the model's tokenizer;
  3. rows before the window's start only when the user asks for them (`allow_seen_rows`), and
     then labelled "seen by all arms" (the checkpoint trained on them), never silently.
The chosen label travels into the report as `perplexity.source`.

Text is packed as the training stream is (debias/stream/pack.py): each document's tokens, then
end-of-text, cut into rows of `row_length` tokens where consecutive rows share one token, so every
token after the first is predicted exactly once. Only full rows are kept; reading stops once
`max_rows` rows are filled, so a large text is never tokenized whole.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer

from debias.errors import UserError
from debias.evaluate.datafiles import local_or_hub
from debias.io import jsonl_strings, sha256_file
from debias.stream import read_documents  # the paragraph reader that packs training text

TEXT_SUFFIXES = (".jsonl", ".json", ".txt", ".text", ".md")


# -- choosing the source ----------------------------------------------------------------------

@dataclass(frozen=True)
class HeldoutChoice:
    kind: str                       # "stream rows" | "text"
    rows: tuple[int, int] | None    # [start, stop) of the stream (kind "stream rows")
    text: str | None                # the text source (kind "text")
    label: str                      # `perplexity.source` in the report


def choose_heldout_source(*, window_start_row: int, window_end_row: int, stream_rows: int, rows_wanted: int,
                          text: str | None = None, allow_seen_rows: bool = False) -> HeldoutChoice:
    """The held-out source for a run whose arms train on stream rows [window_start_row,
    window_end_row) from a checkpoint at window_start_row, in a stream of `stream_rows` rows."""
    if isinstance(rows_wanted, bool) or not isinstance(rows_wanted, int) or rows_wanted < 1:
        raise UserError(f"eval.perplexity rows wanted={rows_wanted!r}: must be a positive number of rows")
    after = stream_rows - window_end_row
    if after >= rows_wanted:
        start, stop = window_end_row, window_end_row + rows_wanted
        return HeldoutChoice("stream rows", (start, stop), None,
                             f"stream rows {start}..{stop} after the window end (seen by no arm or checkpoint)")
    if text:
        return HeldoutChoice("text", None, str(text), f"text {text}")
    if after > 0:
        start, stop = window_end_row, stream_rows
        return HeldoutChoice("stream rows", (start, stop), None,
                             f"stream rows {start}..{stop} after the window end (seen by no arm or checkpoint; "
                             f"only {after} of the {rows_wanted} rows wanted exist)")
    if allow_seen_rows and window_start_row > 0:
        start = max(0, window_start_row - rows_wanted)
        return HeldoutChoice("stream rows", (start, window_start_row), None,
                             f"stream rows {start}..{window_start_row} before the window start "
                             "(seen by all arms: the checkpoint trained on them; not held-out text)")
    raise UserError(f"held-out perplexity: the stream has no rows after the window end (row {window_end_row} of "
                    f"{stream_rows}) and eval.perplexity.text is not set; pass eval.perplexity.text=FILE (a held-out "
                    "text, e.g. a Pile test split as .jsonl, a .txt, or a datasets name), or "
                    "eval.perplexity.enabled=false")


# -- reading and packing held-out text --------------------------------------------------------

def read_heldout_documents(source: str | Path, text_field: str = "text", config: str | None = None,
                           split: str = "test") -> tuple[Iterator[str], str]:
    """(documents, description) for a .jsonl file (`text_field` of each line's object), a
    plain-text file (paragraphs separated by blank lines), or a `datasets` name/config/split."""
    located = local_or_hub(source, "held-out text (eval.perplexity.text)", local_suffixes=TEXT_SUFFIXES)
    if isinstance(located, Path):
        if not located.is_file():
            raise UserError(f"{located}: eval.perplexity.text must be a file (.jsonl or plain text), not a folder")
        digest = sha256_file(located)
        if located.suffix in (".jsonl", ".json"):
            return _jsonl_documents(located, text_field), f"text file {located} (field {text_field!r}, sha256 {digest})"
        return read_documents([located], "paragraph"), f"text file {located} (paragraphs, sha256 {digest})"
    return _hub_documents(located, text_field, config, split), \
        f"datasets {located}" + (f" config {config}" if config else "") + f" split {split} (field {text_field!r})"


def _jsonl_documents(path: Path, field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for _, text in jsonl_strings(handle, path, field, "set eval.perplexity.text_field to the field holding the text"):
            if text:
                yield text


def _hub_documents(name: str, field: str, config: str | None, split: str) -> Iterator[str]:
    import datasets  # only hub sources need it

    try:
        table = datasets.load_dataset(name, config, split=split)
    except Exception as err:
        raise UserError(f"{name}: no such local file, and cannot load it as a hub data set "
                        f"({type(err).__name__}: {err}); pre-download it where "
                        f"there is network with `python -c \"import datasets; datasets.load_dataset('{name}')\"` "
                        "(then set HF_DATASETS_OFFLINE=1) or pass a .jsonl/.txt file") from None
    if field not in table.column_names:
        raise UserError(f"{name}: no column {field!r} (columns: {', '.join(table.column_names)}); "
                        "set eval.perplexity.text_field")
    for number, text in enumerate(table[field]):
        if not isinstance(text, str):
            raise UserError(f"{name} row {number}: {field!r} is {type(text).__name__}, not a string")
        if text:
            yield text


def pack_rows(documents: Iterable[str], tokenizer: Tokenizer, eos_id: int, row_length: int,
              max_rows: int, batch_documents: int = 256) -> tuple[np.ndarray, dict]:
    """Up to `max_rows` rows [n, row_length] of int64 ids, and counts of what was read."""
    if isinstance(row_length, bool) or not isinstance(row_length, int) or row_length < 2:
        raise UserError(f"eval.perplexity.row_length={row_length!r}: must be an integer of at least 2")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise UserError(f"eval.perplexity.text_rows={max_rows!r}: must be a positive number of rows")
    seq_len = row_length - 1
    needed = max_rows * seq_len + 1
    pieces, total, read = [], 0, 0
    documents = iter(documents)
    while total < needed:
        batch = list(itertools.islice(documents, batch_documents))
        if not batch:
            break
        for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
            pieces += [np.asarray(encoding.ids, dtype=np.int64), np.array([eos_id], dtype=np.int64)]
            total += len(encoding.ids) + 1
        read += len(batch)
    tokens = np.concatenate(pieces) if pieces else np.empty(0, np.int64)
    full = min(max_rows, max(0, (len(tokens) - 1) // seq_len))
    if full == 0:
        raise UserError(f"held-out text holds {len(tokens)} tokens, fewer than one row of {row_length}; "
                        "give more text or a smaller eval.perplexity.row_length")
    rows = np.lib.stride_tricks.sliding_window_view(tokens, row_length)[::seq_len][:full].copy()
    return rows, {"documents_read": read, "rows": int(full), "row_length": row_length}
