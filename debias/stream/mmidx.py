"""The MMIDIDX stream format of Megatron / GPT-NeoX (`MMapIndexedDataset`): read and write.

A stream is a prefix with two parts: `prefix.idx` (header, row lengths, byte offsets, document
index) and the row tokens, either one `prefix.bin` or byte shards `prefix-00000-of-00020.bin` ...
`prefix-00020-of-00020.bin` (the number after "of" is the index of the LAST shard, as on the hub).
Shards are cut at byte offsets, so one row can straddle two files; we map every file and treat
them as one address space whose offsets come from the real file sizes.

`.idx` layout, little-endian: magic b"MMIDIDX\\x00\\x00" | <Q version=1 | <B dtype code |
<Q rows | <Q document-index length | int32[rows] lengths | int64[rows] byte offsets |
int64[document-index length] document index.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import mmap
import os
import re
import struct
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np

from debias.errors import UserError
from debias.io import atomic_output, check_writable, sha256_file

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, rows, document-index length
DTYPE_CODES = {
    1: np.dtype("u1"),
    2: np.dtype("i1"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("<i8"),
    6: np.dtype("<f4"),
    7: np.dtype("<f8"),
    8: np.dtype("<u2"),
}
CODE_OF_DTYPE = {dtype: code for code, dtype in DTYPE_CODES.items()}
SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d+)-of-(?P<last>\d+)\.bin$")


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Megatron's rule (`best_fitting_dtype`): vocabularies under 65,500 ids are stored as uint16."""
    return np.dtype("<u2") if vocab_size < 65500 else np.dtype("<i4")


def dtype_code(dtype) -> int:
    """The MMIDIDX code of `dtype` (stored little-endian whatever the byte order given)."""
    dtype = np.dtype(dtype).newbyteorder("<")
    if dtype not in CODE_OF_DTYPE:
        names = ", ".join(str(d) for d in DTYPE_CODES.values())
        raise UserError(f"dtype {dtype}: not storable in MMIDIDX; use one of {names}")
    return CODE_OF_DTYPE[dtype]


# ----------------------------------------------------------------------------------------------
# Finding the files of a stream

def split_stream_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """(prefix, idx path) for a prefix, an `.idx` file, a `.bin` file or one byte shard."""
    path = Path(path)
    if path.suffix == ".idx":
        prefix = path.with_suffix("")
    elif path.suffix == ".bin":
        shard = SHARD_NAME.match(path.name)
        prefix = path.with_name(shard["stem"]) if shard else path.with_suffix("")
    else:
        prefix = path
    idx_path = prefix.with_name(prefix.name + ".idx")
    if not idx_path.is_file():
        raise UserError(f"{idx_path}: index not found; pass the stream prefix (PREFIX for "
                        f"PREFIX.idx + PREFIX.bin or PREFIX-00000-of-000NN.bin shards)")
    return prefix, idx_path


def find_data_files(prefix: Path) -> list[Path]:
    """`prefix.bin` if present, else the complete, consistently numbered list of byte shards."""
    single = prefix.with_name(prefix.name + ".bin")
    if single.is_file():
        return [single]
    shards: dict[int, Path] = {}
    lasts: set[str] = set()
    for candidate in prefix.parent.glob(f"{glob.escape(prefix.name)}-*-of-*.bin"):
        match = SHARD_NAME.match(candidate.name)
        if match and match["stem"] == prefix.name:
            shards[int(match["index"])] = candidate
            lasts.add(match["last"])
    if not shards:
        raise UserError(f"{single}: data not found, and no byte shards {prefix.name}-00000-of-000NN.bin "
                        f"beside it; put the .bin (or every shard) next to {prefix.name}.idx")
    if len(lasts) > 1:
        raise UserError(f"{prefix}: shards disagree on their count (-of-{', -of-'.join(sorted(lasts))}); "
                        f"keep only the shards of one download")
    last_text = lasts.pop()
    last = int(last_text)

    def shard_name(index: int) -> str:
        return f"{prefix.name}-{index:0{len(last_text)}d}-of-{last_text}.bin"

    missing = [i for i in range(last + 1) if i not in shards]
    if missing:
        listed = ", ".join(map(shard_name, missing[:3])) + (" ..." if len(missing) > 3 else "")
        raise UserError(f"{prefix.parent}: byte shards missing: {listed} (expected {last + 1} shards "
                        f"numbered 0..{last}); download the complete set")
    extra = sorted(i for i in shards if i > last)
    if extra:
        raise UserError(f"{prefix.parent}: byte shards numbered past the last shard: "
                        f"{', '.join(map(shard_name, extra[:3]))} (expected {last + 1} shards numbered "
                        f"0..{last}); remove them or download the complete set")
    return [shards[i] for i in range(last + 1)]


def _map_read_only(path: Path) -> np.ndarray:
    """A read-only uint8 view of a whole file through mmap (mmap refuses empty files)."""
    if path.stat().st_size == 0:
        return np.empty(0, np.uint8)
    with open(path, "rb") as handle:
        return np.frombuffer(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)


# ----------------------------------------------------------------------------------------------
# Reading

class IndexedStream:
    """Memory-mapped reader of an MMIDIDX stream over one `.bin` or its byte shards.

    `path` is the prefix (`.../document`), its `.idx`, its `.bin` or any one of its shards; when
    both `prefix.bin` and shards exist, `prefix.bin` is read. Rows come back as new arrays (safe
    to modify); nothing is read until asked for.
    """

    def __init__(self, path: str | os.PathLike):
        self.prefix, self.idx_path = split_stream_path(path)
        self._index = _map_read_only(self.idx_path)
        self.dtype, num_rows, num_docs = self._read_header()
        offset = HEADER.size
        self.sizes = np.frombuffer(self._index, np.dtype("<i4"), num_rows, offset)
        offset += self.sizes.nbytes
        self.pointers = np.frombuffer(self._index, np.dtype("<i8"), num_rows, offset)
        offset += self.pointers.nbytes
        self.document_index = np.frombuffer(self._index, np.dtype("<i8"), num_docs, offset)

        self.data_paths = find_data_files(self.prefix)
        self._maps = [_map_read_only(p) for p in self.data_paths]
        file_bytes = np.array([m.size for m in self._maps], dtype=np.int64)
        self.file_starts = np.concatenate([[0], np.cumsum(file_bytes)]).astype(np.int64)
        self._check_data_length()

    def _read_header(self) -> tuple[np.dtype, int, int]:
        if self._index.size < HEADER.size or bytes(self._index[: len(MAGIC)]) != MAGIC:
            raise UserError(f"{self.idx_path}: not an MMIDIDX index (wrong magic bytes); pass the "
                            f".idx written by Megatron / GPT-NeoX or `python -m debias.stream pack`")
        _, version, code, num_rows, num_docs = HEADER.unpack(bytes(self._index[: HEADER.size]))
        if version != VERSION:
            raise UserError(f"{self.idx_path}: MMIDIDX version {version} is not supported (only "
                            f"version {VERSION}); convert it with a Megatron / GPT-NeoX tool")
        if code not in DTYPE_CODES:
            raise UserError(f"{self.idx_path}: unknown dtype code {code} (known: "
                            f"{', '.join(f'{c}={d}' for c, d in DTYPE_CODES.items())}); the index is "
                            f"corrupt or from another format")
        expected = HEADER.size + 12 * num_rows + 8 * num_docs
        if self._index.size < expected:
            raise UserError(f"{self.idx_path}: truncated index ({self._index.size:,} bytes, the header "
                            f"promises {expected:,}); copy or download it again")
        return DTYPE_CODES[code], num_rows, num_docs

    def _check_sizes(self) -> None:
        """Row lengths are read at open: a negative one is a corrupt index, named here in one line
        (one vectorised pass over the lengths; the rows' byte ranges are checked as they are read)."""
        if len(self) and int(self.sizes.min()) < 0:
            row = int(np.flatnonzero(self.sizes < 0)[0])
            raise UserError(f"{self.idx_path}: row {row:,} has length {int(self.sizes[row])}; the index is "
                            f"corrupt (copy or download it again, or re-pack the stream)")

    def _check_data_length(self) -> None:
        """The data ends where the index's last row ends: shorter is truncated data; longer is data
        the index does not describe (another index's data, or bytes appended to it), refused rather
        than read as if it matched."""
        self._check_sizes()
        needed = int(self.pointers[-1]) + int(self.sizes[-1]) * self.dtype.itemsize if len(self) else 0
        have = int(self.file_starts[-1])
        where = self.data_paths[0] if len(self.data_paths) == 1 else f"{self.prefix}-*-of-*.bin"
        if have < needed:
            raise UserError(f"{where}: holds {have:,} bytes but {self.idx_path.name} points to {needed:,}; "
                            f"the data is truncated or belongs to another index (copy or download it again)")
        if have > needed:
            raise UserError(f"{where}: holds {have:,} bytes but {self.idx_path.name} describes only {needed:,} "
                            f"(its last row ends there); the data has {have - needed:,} trailing bytes or belongs "
                            f"to another index (copy or download both files again, or re-pack the stream)")

    def _check_extent(self, first_row: int, pointers: np.ndarray, row_bytes: int | np.ndarray) -> None:
        """Rows from `first_row` start at `pointers` and span `row_bytes` (each, or one value for
        all): every byte inside the data, or one line naming the first row that points outside it."""
        total = int(self.file_starts[-1])
        outside = np.flatnonzero((pointers < 0) | (pointers > total - row_bytes))
        if outside.size:
            row, pointer = first_row + int(outside[0]), int(pointers[outside[0]])
            end = pointer + int(np.broadcast_to(row_bytes, pointers.shape)[outside[0]])
            raise UserError(f"{self.idx_path}: row {row:,} points to bytes {pointer:,}..{end:,}, outside the "
                            f"{total:,} bytes of data; the index is corrupt or belongs to other data (copy or "
                            f"download it again)")

    def check_index(self, piece_rows: int = 1 << 22) -> None:
        """Every row's byte range checked at once (rows are otherwise checked as they are read):
        for tools that describe a stream without reading its rows (0.17 s per 10M rows on 2 cores)."""
        for start in range(0, len(self), piece_rows):
            stop = min(start + piece_rows, len(self))
            self._check_extent(start, self.pointers[start:stop],
                               self.sizes[start:stop].astype(np.int64) * self.dtype.itemsize)

    # -- sizes -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sizes)

    @cached_property
    def row_length(self) -> int | None:
        """The common row length, or None when rows differ (or the stream is empty)."""
        if len(self) == 0:
            return None
        first = int(self.sizes[0])
        return first if bool(np.all(self.sizes == first)) else None

    @cached_property
    def num_tokens(self) -> int:
        return int(self.sizes.sum(dtype=np.int64))

    @property
    def num_documents(self) -> int:
        return max(len(self.document_index) - 1, 0)

    # -- rows ------------------------------------------------------------------------------------
    def row(self, i: int) -> np.ndarray:
        """Row `i` as a new 1-D array."""
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for a stream of {len(self)} rows")
        out = np.empty(int(self.sizes[i]), self.dtype)
        self._check_extent(i, self.pointers[i:i + 1], out.nbytes)
        self._copy_bytes(int(self.pointers[i]), out.view(np.uint8))
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of equal length as a new array [stop - start, row_length]."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"rows {start}..{stop} out of range for a stream of {len(self)} rows")
        sizes = self.sizes[start:stop]
        length = int(sizes[0]) if len(sizes) else (self.row_length or 0)
        if np.any(sizes != length):
            raise UserError(f"{self.idx_path}: rows {start}..{stop} have different lengths "
                            f"({sizes.min()}..{sizes.max()}); read them one at a time with row(i)")
        out = np.empty((stop - start, length), self.dtype)
        if stop == start:
            return out
        row_bytes = length * self.dtype.itemsize
        self._check_extent(start, self.pointers[start:stop], row_bytes)
        first, last = int(self.pointers[start]), int(self.pointers[stop - 1])
        if last - first == (stop - 1 - start) * row_bytes:  # contiguous on disk: one read
            self._copy_bytes(first, out.reshape(-1).view(np.uint8))
        else:
            for k, pointer in enumerate(self.pointers[start:stop]):
                self._copy_bytes(int(pointer), out[k].view(np.uint8))
        return out

    def iter_blocks(self, start: int, stop: int, block_rows: int = 1024) -> Iterator[np.ndarray]:
        """Rows [start, stop) in blocks of `block_rows` (the last one may be shorter)."""
        for begin in range(start, stop, block_rows):
            yield self.rows(begin, min(begin + block_rows, stop))

    def _copy_bytes(self, begin: int, out: np.ndarray) -> None:
        """Fill `out` (uint8) with the bytes at global offset `begin`, crossing shards as needed."""
        filled = 0
        shard = int(np.searchsorted(self.file_starts, begin, side="right")) - 1
        while filled < out.size:
            local = begin + filled - int(self.file_starts[shard])
            source = self._maps[shard][local: local + out.size - filled]
            out[filled: filled + source.size] = source
            filled += source.size
            shard += 1

    # -- description -----------------------------------------------------------------------------
    @cached_property
    def index_sha256(self) -> str:
        return sha256_file(self.idx_path)

    def identity(self) -> dict:
        """What a manifest or report needs to name this stream exactly."""
        return {
            "prefix": str(self.prefix),
            "index": str(self.idx_path),
            "index_bytes": int(self._index.size),
            "index_sha256": self.index_sha256,
            "data": [{"path": str(p), "bytes": int(m.size)} for p, m in zip(self.data_paths, self._maps)],
            "rows": len(self),
            "dtype": self.dtype.name,
            "row_length": self.row_length,
        }

    def shard_layout(self) -> list[dict]:
        """Each data file with its byte range and the rows that start in it."""
        # bisect, not np.searchsorted: the pointers sit unaligned in the index and numpy would copy them
        row_starts = [bisect.bisect_left(self.pointers, start) for start in self.file_starts]
        return [
            {"path": str(path), "bytes": int(self.file_starts[k + 1] - self.file_starts[k]),
             "first_byte": int(self.file_starts[k]),
             "rows_starting": [row_starts[k], row_starts[k + 1]]}
            for k, path in enumerate(self.data_paths)
        ]

    def __repr__(self) -> str:
        return (f"IndexedStream({str(self.prefix)!r}, rows={len(self)}, dtype={self.dtype.name}, "
                f"row_length={self.row_length}, files={len(self.data_paths)})")


# ----------------------------------------------------------------------------------------------
# Writing

class StreamWriter:
    """Write a stream row by row or block by block; `prefix.bin` and `prefix.idx` appear on a clean exit.

    Each row is one document in the document index, as Megatron's builder writes it when every item
    is followed by `end_document()`. With `row_length` set, rows of any other length are refused.
    Row lengths are kept as runs (count, length), so a fixed-length stream of any size costs no memory.
    """

    INDEX_PIECE_ROWS = 1 << 20  # the index is written in pieces of this many rows

    def __init__(self, prefix: str | os.PathLike, dtype, row_length: int | None = None):
        self.prefix = Path(prefix)
        self.code = dtype_code(dtype)
        self.dtype = DTYPE_CODES[self.code]
        self.row_length = row_length
        self.bin_path = self.prefix.with_name(self.prefix.name + ".bin")
        self.idx_path = self.prefix.with_name(self.prefix.name + ".idx")
        self.num_rows = 0
        self._runs: list[list[int]] = []  # [count, length] of consecutive rows
        self._stack: contextlib.ExitStack | None = None
        self._data = None

    def __enter__(self) -> "StreamWriter":
        check_writable(self.prefix.parent, str(self.prefix))  # before the caller's work (e.g. tokenizing a corpus), not after
        self._stack = contextlib.ExitStack()
        # The index is renamed into place last: a reader never sees a new index beside old data.
        self._tmp_idx = self._stack.enter_context(atomic_output(self.idx_path))
        self._tmp_bin = self._stack.enter_context(atomic_output(self.bin_path))
        self._data = self._stack.enter_context(open(self._tmp_bin, "wb"))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        stack, self._stack = self._stack, None
        if exc_type is not None:  # the caller failed: remove both temporaries, keep its exception
            stack.__exit__(exc_type, exc, tb)
            return
        with stack:  # renames into place, or removes the temporaries if finishing fails
            self._data.close()
            self._write_index(self._tmp_idx)

    def append_rows(self, rows: np.ndarray) -> None:
        """Append a block of equal-length rows, shape [n, L]."""
        rows = np.asarray(rows)
        if rows.ndim != 2:
            raise UserError(f"{self.prefix}: rows of shape {rows.shape}; append_rows takes a 2-D block "
                            f"[n, L]; use append(row) for single rows")
        self._add(rows, *rows.shape)

    def append(self, row: np.ndarray) -> None:
        """Append one row (1-D); rows may differ in length unless `row_length` was given."""
        row = np.asarray(row)
        if row.ndim != 1:
            raise UserError(f"{self.prefix}: a row of shape {row.shape}; append takes a 1-D row, "
                            f"use append_rows for blocks")
        self._add(row, 1, row.shape[0])

    def _add(self, values: np.ndarray, count: int, length: int) -> None:
        if self._data is None:
            raise RuntimeError("StreamWriter must be used as a context manager")
        if self.row_length is not None and length != self.row_length:
            raise UserError(f"{self.prefix}: a row of {length} tokens, but this stream holds rows of "
                            f"{self.row_length}; re-pack the rows to {self.row_length} tokens")
        if count == 0:
            return
        if values.dtype != self.dtype:
            self._check_fits_dtype(values)
        self._data.write(memoryview(np.ascontiguousarray(values, dtype=self.dtype)).cast("B"))
        if self._runs and self._runs[-1][1] == length:
            self._runs[-1][0] += count
        else:
            self._runs.append([count, length])
        self.num_rows += count

    def _check_fits_dtype(self, values: np.ndarray) -> None:
        if values.size == 0 or self.dtype.kind == "f":
            return
        if values.dtype.kind == "f":
            raise UserError(f"{self.prefix}: float values for an integer {self.dtype} stream; pass token ids")
        info = np.iinfo(self.dtype)
        low, high = values.min(), values.max()
        if low < info.min or high > info.max:
            raise UserError(f"{self.prefix}: value {low if low < info.min else high} does not fit "
                            f"{self.dtype}; write with a wider dtype (dtype_for_vocab(vocab_size))")

    def _write_index(self, path: Path) -> None:
        _write_index_file(path, self.code, self.num_rows, self._runs, self.INDEX_PIECE_ROWS)


def write_index(prefix: str | os.PathLike, dtype, num_rows: int, row_length: int) -> Path:
    """Write `prefix.idx` for `num_rows` rows of `row_length` tokens already in `prefix.bin`.

    For data written without a StreamWriter (e.g. blocks written in place by parallel workers);
    the index is byte-identical to the one StreamWriter writes for the same rows, and appears
    atomically. Returns the index path.
    """
    if num_rows < 0 or row_length <= 0:
        raise UserError(f"{prefix}: {num_rows} rows of {row_length} tokens; need num_rows >= 0 and row_length > 0")
    idx_path = Path(prefix).with_name(Path(prefix).name + ".idx")
    runs = [[num_rows, row_length]] if num_rows else []
    with atomic_output(idx_path) as tmp:
        _write_index_file(tmp, dtype_code(dtype), num_rows, runs, StreamWriter.INDEX_PIECE_ROWS)
    return idx_path


def _size_pieces(runs: list[list[int]], piece_rows: int) -> Iterator[np.ndarray]:
    """The row lengths of `runs` ([count, length] of consecutive rows) as int32 arrays of at most `piece_rows`."""
    piece, filled = np.empty(piece_rows, np.int32), 0
    for count, length in runs:
        while count:
            take = min(count, len(piece) - filled)
            piece[filled: filled + take] = length
            filled, count = filled + take, count - take
            if filled == len(piece):
                yield piece
                piece, filled = np.empty(piece_rows, np.int32), 0
    if filled:
        yield piece[:filled]


def _write_index_file(path: Path, code: int, rows: int, runs: list[list[int]], piece_rows: int) -> None:
    """The one writer of the `.idx` format (module doc), in pieces of `piece_rows` rows: bounded memory."""
    itemsize = DTYPE_CODES[code].itemsize
    with open(path, "wb") as out:
        out.write(HEADER.pack(MAGIC, VERSION, code, rows, rows + 1))
        for sizes in _size_pieces(runs, piece_rows):
            out.write(sizes.astype("<i4").tobytes())
        offset = 0
        for sizes in _size_pieces(runs, piece_rows):  # byte offsets: a running sum of the row sizes in bytes
            ends = offset + np.cumsum(sizes, dtype=np.int64) * itemsize
            out.write(np.concatenate([[offset], ends[:-1]]).astype("<i8").tobytes())
            offset = int(ends[-1])
        for begin in range(0, rows + 1, piece_rows):  # row k is document k
            out.write(np.arange(begin, min(begin + piece_rows, rows + 1), dtype="<i8").tobytes())
