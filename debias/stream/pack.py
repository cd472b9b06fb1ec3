"""Pack text into a stream the way the Pythia stream was built.

Each document is tokenized (the `tokenizers` library, in batches), followed by the end-of-text
token, and the token sequence is cut into rows of `seq_len + 1` tokens. As in Megatron's GPT
dataset, consecutive rows share one token: the last token of row k (its final label) is the
first input of row k+1, so every token after the first is a training target exactly once.
Pythia: seq_len 2048 -> rows of 2049. Tokens after the last full row are dropped (reported).

Inputs: JSONL (`.jsonl`, `.json`: one object per line with a `text` field) or plain text (any
other name), where a document is a block of lines separated by blank lines (`paragraph`, the
default) or a single line (`line`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from debias.errors import UserError
from debias.io import jsonl_strings, sha256_file
from debias.stream.mmidx import StreamWriter, dtype_for_vocab
from debias.tokenizer import load_tokenizer

EOS_TOKEN = "<|endoftext|>"
DOCUMENT_SPLITS = ("paragraph", "line")


def read_documents(paths: Iterable[str | os.PathLike], split: str = "paragraph") -> Iterator[str]:
    """Documents from JSONL files (`text` field) and plain text files (see the module doc)."""
    if split not in DOCUMENT_SPLITS:
        raise UserError(f"documents={split!r}: choose one of {', '.join(DOCUMENT_SPLITS)}")
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"{path}: input file not found")
        if path.suffix in (".jsonl", ".json"):
            yield from _jsonl_documents(path)
        else:
            yield from _text_documents(path, split)


def _jsonl_documents(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for _, text in jsonl_strings(handle, path, "text", 'write one {"text": ...} object per line'):
            if text:
                yield text


def _text_documents(path: Path, split: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        if split == "line":
            yield from (line.rstrip("\n") for line in handle if line.strip())
            return
        block: list[str] = []
        for line in handle:
            if line.strip():
                block.append(line)
            elif block:
                yield "".join(block).rstrip("\n")
                block = []
        if block:
            yield "".join(block).rstrip("\n")


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pack_texts(texts: Iterable[str], tokenizer_path: str | os.PathLike, seq_len: int,
               out_prefix: str | os.PathLike, eos_id: int | None = None,
               batch_documents: int = 1024) -> dict:
    """Tokenize `texts`, join them with end-of-text and write rows of `seq_len + 1` tokens.

    Returns a summary: rows, row_length, documents, tokens, dropped_tokens, eos_id, dtype, ...
    Writes nothing when the text does not fill one row.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise UserError(f"seq_len={seq_len!r}: must be a positive integer (Pythia: 2048)")
    tokenizer = load_tokenizer(tokenizer_path)
    if eos_id is None:
        eos_id = tokenizer.token_to_id(EOS_TOKEN)
        if eos_id is None:
            raise UserError(f"{tokenizer_path}: no {EOS_TOKEN} token; pass the end-of-text id (--eos-id)")
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = dtype_for_vocab(vocab_size)
    row_length = seq_len + 1

    documents = tokens = 0
    pending = np.empty(0, dtype)  # tokens not yet in a row, the shared boundary token first
    with StreamWriter(out_prefix, dtype, row_length=row_length) as writer:
        progress = tqdm(desc="pack", unit=" doc", disable=None)
        for batch in _batches(texts, batch_documents):
            encodings = tokenizer.encode_batch(batch, add_special_tokens=False)
            pieces = [pending]
            for encoding in encodings:
                pieces += [np.asarray(encoding.ids, dtype), np.array([eos_id], dtype)]
            pending = np.concatenate(pieces)
            documents += len(batch)
            tokens += len(pending) - len(pieces[0])
            full = (len(pending) - 1) // seq_len  # rows of row_length starting every seq_len tokens
            if full:
                windows = np.lib.stride_tricks.sliding_window_view(pending, row_length)[::seq_len]
                writer.append_rows(windows[:full])
                pending = pending[full * seq_len:].copy()
            progress.update(len(batch))
        progress.close()
        if writer.num_rows == 0:
            raise UserError(f"{out_prefix}: the input holds {tokens} tokens, fewer than one row of "
                            f"{row_length}; give more text or a smaller --seq-len")
        rows = writer.num_rows

    return {
        "prefix": str(out_prefix),
        "rows": rows,
        "row_length": row_length,
        "seq_len": seq_len,
        "documents": documents,
        "tokens": tokens,
        "dropped_tokens": len(pending) - 1,  # the first pending token is already the last row's label
        "eos_id": int(eos_id),
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "tokenizer": str(tokenizer_path),
        "tokenizer_sha256": sha256_file(tokenizer_path),
        "row_overlap_tokens": 1,
    }
