"""The pass: rewrite a window of a stream into a new stream, with a manifest and an audit.

Layout of `out_dir` when done:
    rewritten.bin / rewritten.idx   exactly the window's rows, same dtype and row length
    manifest.json                   what was done to what (source identity, window, tokenizer, config)
    audit.json                      counts that prove it (see core.BlockAudit)
    blocks.jsonl                    the audit of each block (rows [start, stop)): audit.json is their sum
While running, `out_dir/.partial/` holds `rewritten.bin`, preallocated to the window's size, into
which each block writes its rows once at its own byte offset (rows have a fixed length, so the
offset is known before any block runs), and one `block-i.json` per finished block with its audit
and a crc32 of its bytes, written after its rows. A killed pass resumes from the finished blocks
(checksums checked against the bytes at their offsets), and since a block's content depends only
on its rows and the config, the result is byte-identical to a pass that was never interrupted.
When all blocks are in, the file is renamed into place: the rows are written once, never copied.

Reuse: a finished pass with the same configuration whose window covers this one (in `out_dir`, or
one of the folders the caller passes as `reuse`; the pipeline finds them with a cache query) serves
its rows, with `first_row` pointing at this window's first row inside it: the 21% pass serves the
7% run. `load_result(out_dir)` reads either kind of finished folder back. The
audit returned counts this window's rows only (`window_audit`): the pass's blocks that lie inside
it are summed from `blocks.jsonl` and the partial blocks at its edges are rewritten again in
memory. Every count equals that of a fresh pass over the window; only `sample` may differ (its
snippets come from the first rows of each block, and block boundaries differ). A reusing `out_dir`
gets `reused.json` (where its rows live) and that `audit.json`; `verify` checks either kind.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import zlib
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from debias.errors import UserError
from debias.io import check_writable, sha256_file, sha256_json, write_json_atomic, write_text_atomic
from debias.rewrite import lexicon
from debias.rewrite.context import REASONS
from debias.rewrite.core import BlockAudit, rewrite_rows
from debias.rewrite.resolvers import check_resolver
from debias.rewrite.tables import get_tables, tokenizer_sha256
from debias.tokenizer import load_tokenizer, tokenizer_path
from debias.stream import IndexedStream, Window
from debias.stream.mmidx import write_index

REWRITER_VERSION = 2  # bump when a change alters what a pass writes: old caches stop matching
STREAM_NAME = "rewritten"
DEFAULT_BLOCK_ROWS = 4096  # ~16 MB of uint16 per block: big enough to amortise, small enough to resume
SAMPLE_PER_BLOCK, SAMPLE_TOTAL = 2, 40
BLOCKS_FILE, REUSED_FILE = "blocks.jsonl", "reused.json"


@dataclass
class RewriteResult:
    stream: Path  # prefix of the stream holding the window's rows (maybe a larger reused pass)
    first_row: int  # row in `stream` of the window's first global row
    manifest: dict
    audit: dict


# --- checking the request -------------------------------------------------------------------------

def check_fraction(fraction) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0.0 <= float(fraction) <= 1.0:
        raise UserError(f"fraction={fraction!r}: must be a number in [0, 1] (the share of rows rewritten)")
    return float(fraction)


def _check_output_is_not_input(source: IndexedStream, out_dir: Path) -> None:
    inputs = {source.prefix.resolve(), source.idx_path.resolve(), *(p.resolve() for p in source.data_paths)}
    out_prefix = (out_dir / STREAM_NAME).resolve()
    if out_dir.resolve() in inputs or out_prefix in inputs:
        raise UserError(f"{out_dir}: the output is the input stream; pass a new folder for the rewritten window")


def _check_vocabulary(source: IndexedStream, window: Window, vocab_size: int, tokenizer: str) -> None:
    """Cheap early check on the window's first and last rows; every block checks its own rows too."""
    for start in (window.start_row, max(window.start_row, window.end_row - 64)):
        rows = source.rows(start, min(start + 64, window.end_row))
        _check_ids(rows, vocab_size, source, tokenizer, start)


def _check_ids(rows: np.ndarray, vocab_size: int, source_name, tokenizer: str, first_row: int) -> None:
    if rows.size and (int(rows.max()) >= vocab_size or int(rows.min()) < 0):
        bad = int(rows.max()) if int(rows.max()) >= vocab_size else int(rows.min())
        raise UserError(f"{getattr(source_name, 'idx_path', source_name)}: token id {bad} near row {first_row} is "
                        f"outside the vocabulary of {tokenizer} ({vocab_size} ids); pass the tokenizer the "
                        f"stream was made with")


# --- the pass -------------------------------------------------------------------------------------

def pass_config(source: IndexedStream, tokenizer: str, direction: str, fraction: float, seed: int,
                resolver: str) -> dict:
    """Everything that determines the rewritten rows, except the window."""
    identity = source.identity()
    return {
        "rewriter_version": REWRITER_VERSION,
        "source": {"index_sha256": identity["index_sha256"],
                   "data_bytes": [d["bytes"] for d in identity["data"]],
                   "rows": identity["rows"], "dtype": identity["dtype"]},
        "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "direction": direction,
        "fraction": fraction,
        "seed": int(seed),
        "resolver": resolver,
    }


def rewrite_window(source, window: Window, out_dir, tokenizer, direction: str, fraction: float = 1.0,
                   seed: int = 1234, resolver: str = "rules", workers: int | None = None,
                   block_rows: int = DEFAULT_BLOCK_ROWS, progress: bool = True,
                   reuse: Iterable[str | os.PathLike] = ()) -> RewriteResult:
    """Rewrite rows [window.start_row, window.end_row) of `source` into `out_dir` (see module doc).

    `reuse`: folders of finished passes that may cover the window; the first with this
    configuration that does serves the rows instead of a new pass."""
    direction = lexicon.check_direction(direction)
    fraction = check_fraction(fraction)
    resolver = check_resolver(resolver)
    if block_rows <= 0:
        raise UserError(f"block_rows={block_rows}: must be a positive number of rows")
    tokenizer = str(tokenizer_path(tokenizer))
    vocab_size = load_tokenizer(tokenizer).get_vocab_size(with_added_tokens=True)
    stream = source if isinstance(source, IndexedStream) else IndexedStream(source)
    out_dir = Path(out_dir)
    check_writable(out_dir)
    _check_output_is_not_input(stream, out_dir)
    window.check_fits(stream)
    _check_vocabulary(stream, window, vocab_size, tokenizer)

    get_tables(tokenizer, direction)  # build once here; forked workers inherit them
    config = pass_config(stream, tokenizer, direction, fraction, seed, resolver)
    key = sha256_json(config)
    folder = find_reusable(out_dir, key, window, [Path(p) for p in reuse])
    if folder != out_dir:  # a new pass, or a record of another folder's rows: either would mix with this output
        _refuse_other_output(out_dir, key, window)
    if folder is not None:
        if folder != out_dir and (out_dir / ".partial").is_dir():
            _remove_partial(out_dir / ".partial")  # an interrupted pass of this window, served from `folder` now
        return _reuse(folder, out_dir, window, stream, get_tables(tokenizer, direction), resolver, seed,
                      fraction, progress)

    span = (window.start_row, window.end_row)
    row_bytes = window.geometry.row_length * stream.dtype.itemsize
    blocks = [(b, min(b + block_rows, span[1])) for b in range(span[0], span[1], block_rows)]
    partial = out_dir / ".partial"
    _open_partial(partial, {"config": config, "key": key, "rows": list(span), "block_rows": block_rows})
    rows_file = partial / f"{STREAM_NAME}.bin"
    _preallocate(rows_file, (span[1] - span[0]) * row_bytes)
    done = {i for i, (start, stop) in enumerate(blocks)
            if _block_done(partial, i, (start - span[0]) * row_bytes, (stop - start) * row_bytes)}
    todo = [(i, *blocks[i]) for i in range(len(blocks)) if i not in done]
    job = dict(source=str(stream.idx_path), tokenizer=tokenizer, direction=direction, fraction=fraction,
               seed=int(seed), resolver=resolver, partial=str(partial), vocab_size=vocab_size,
               first_row=span[0], row_bytes=row_bytes)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    bar = tqdm(total=window.num_tokens, initial=sum(blocks[i][1] - blocks[i][0] for i in done) * window.geometry.row_length,
               unit="tok", unit_scale=True, desc=f"rewrite {direction}", disable=not progress)
    output_digest = None
    with bar:
        if workers == 1:
            _init_worker(job)
            # blocks run in order here: a fresh pass hashes its output as it goes instead of
            # reading the whole file back at the end (a resumed pass hashes the file)
            output_digest = _JOB["digest"] = None if done else hashlib.sha256()
            try:
                for item in todo:
                    bar.update(_run_block(item))
            finally:
                os.close(_JOB.pop("rows_fd"))
        else:
            # fork: workers inherit the built tables and need no importable __main__
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with multiprocessing.get_context(method).Pool(workers, _init_worker, (job,)) as pool:
                for n in pool.imap_unordered(_run_block, todo):
                    bar.update(n)

    audit, journal = BlockAudit(), []
    for i in range(len(blocks)):
        block_audit = json.loads((partial / f"block-{i:06d}.json").read_text())["audit"]
        audit.merge(BlockAudit.from_dict(block_audit), max_sample=SAMPLE_TOTAL)
        journal.append(json.dumps({"rows": list(blocks[i]), "audit": block_audit}, sort_keys=True))
    stream_prefix = out_dir / STREAM_NAME
    digest = output_digest.hexdigest() if output_digest is not None else sha256_file(rows_file)
    os.replace(rows_file, stream_prefix.with_suffix(".bin"))  # same file system: atomic, no copy
    write_index(stream_prefix, stream.dtype, span[1] - span[0], window.geometry.row_length)
    tables = get_tables(tokenizer, direction)
    manifest = {
        "config_key": key,
        **config,
        "source": {**stream.identity(), **config["source"]},
        "window": window.describe(),
        "rows": list(span),
        "stream": str(stream_prefix),
        "output_bin_sha256": digest,
        "tokenizer": tokenizer,
        "block_rows": block_rows,
        "policies": {
            **tables.policies(),
            "fraction": "a row is rewritten when a hash of (seed, global row index) falls below "
                        "`fraction`, so any window selects the same rows as a larger one around it",
            "skip_reasons": list(REASONS[1:]),
        },
        "forms": tables.describe(),
    }
    audit_dict = {**audit.to_dict(), "window_rows": list(span)}
    (out_dir / REUSED_FILE).unlink(missing_ok=True)  # a record of an earlier reuse no longer holds
    write_text_atomic(out_dir / BLOCKS_FILE, "".join(line + "\n" for line in journal))
    write_json_atomic(out_dir / "audit.json", audit_dict)
    write_json_atomic(out_dir / "manifest.json", manifest)  # last: its presence marks a finished pass
    _remove_partial(partial)
    return RewriteResult(stream_prefix, 0, manifest, audit_dict)


# --- blocks (run in worker processes) ------------------------------------------------------------

_JOB: dict = {}


def _init_worker(job: dict) -> None:
    _JOB.clear()
    _JOB.update(job)
    _JOB["stream"] = IndexedStream(job["source"])
    _JOB["tables"] = get_tables(job["tokenizer"], job["direction"])
    # each process opens its own descriptor (never shared across fork); closed when the process ends
    _JOB["rows_fd"] = os.open(Path(job["partial"]) / f"{STREAM_NAME}.bin", os.O_WRONLY)


def _run_block(item: tuple[int, int, int]) -> int:
    """Rewrite one block into its place in `.partial/rewritten.bin`, then record it; returns its token count."""
    i, start, stop = item
    j = _JOB
    rows = j["stream"].rows(start, stop)
    _check_ids(rows, j["vocab_size"], j["source"], j["tokenizer"], start)
    if j.get("buffer") is None or j["buffer"].shape != rows.shape:
        j["buffer"] = np.empty_like(rows)  # reused by every block of this size in this process
    out, audit = rewrite_rows(rows, j["tables"], j["resolver"], first_row=start, seed=j["seed"],
                              fraction=j["fraction"], sample=SAMPLE_PER_BLOCK, out=j["buffer"])
    data, offset = memoryview(out).cast("B"), (start - j["first_row"]) * j["row_bytes"]
    while data:  # pwrite may write less than asked (large blocks, signals): write the rest
        written = os.pwrite(j["rows_fd"], data, offset)
        data, offset = data[written:], offset + written
    if j.get("digest") is not None:
        j["digest"].update(out.data)
    # the .json appears after the rows are in place: it is what marks the block as finished
    write_json_atomic(Path(j["partial"]) / f"block-{i:06d}.json",
                      {"rows": [start, stop], "crc32": zlib.crc32(out.data),
                       "audit": audit.to_dict()})
    return rows.size


def _preallocate(path: Path, size: int) -> None:
    """Make `path` a file of `size` bytes, keeping what an interrupted pass wrote into it."""
    with open(path, "ab") as f:  # creates it if missing, never truncates existing rows
        if f.tell() != size:
            f.truncate(size)
        if size and hasattr(os, "posix_fallocate"):
            # reserve the disk blocks now: a full disk fails here, not mid-pass, and writes into
            # allocated blocks are cheaper than into a sparse file's holes
            os.posix_fallocate(f.fileno(), 0, size)


def _block_done(partial: Path, i: int, offset: int, size: int) -> bool:
    """Whether block `i` is recorded as finished and its bytes in the rows file still match the record.

    A crc32, not a sha256: it guards against a block torn by a crash, not against tampering (the
    manifest's sha256 of the whole output does that), at a third of the cost on the hot path.
    """
    meta = partial / f"block-{i:06d}.json"
    if not meta.is_file():
        return False
    try:
        expected = json.loads(meta.read_text())["crc32"]
    except (ValueError, KeyError):
        return False
    with open(partial / f"{STREAM_NAME}.bin", "rb") as f:
        f.seek(offset)
        return zlib.crc32(f.read(size)) == expected


def _open_partial(partial: Path, spec: dict) -> None:
    spec_path = partial / "pass.json"
    if spec_path.is_file():
        existing = json.loads(spec_path.read_text())
        if existing != json.loads(json.dumps(spec)):
            raise UserError(f"{partial}: holds an unfinished pass of a different configuration "
                            f"(rows {existing.get('rows')}, direction {existing['config'].get('direction')}); "
                            f"delete that folder or choose another output folder")
        return
    partial.mkdir(parents=True, exist_ok=True)
    write_json_atomic(spec_path, spec)


def _remove_partial(partial: Path) -> None:
    for path in sorted(partial.glob("*")):
        path.unlink()
    partial.rmdir()


# --- reuse ----------------------------------------------------------------------------------------

def _read_manifest(folder: Path) -> dict | None:
    path = folder / "manifest.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def find_reusable(out_dir: Path, key: str, window: Window, candidates: list[Path] = ()) -> Path | None:
    """A finished pass's folder with this config whose rows cover the window: `out_dir` first, then `candidates`."""
    for folder in [out_dir, *candidates]:
        manifest = _read_manifest(folder)
        if not manifest or manifest.get("config_key") != key or manifest.get("reused_from"):
            continue
        start, stop = manifest["rows"]
        if start <= window.start_row and window.end_row <= stop and (folder / f"{STREAM_NAME}.idx").is_file():
            return folder
    return None


def _reuse(folder: Path, out_dir: Path, window: Window, source: IndexedStream, tables, resolver: str,
           seed: int, fraction: float, progress: bool) -> RewriteResult:
    """Serve `window` from the finished pass in `folder`, with an audit of the window's rows only."""
    manifest = _read_manifest(folder)
    start, stop = manifest["rows"]
    span = (window.start_row, window.end_row)
    if folder == out_dir and span == (start, stop):  # this very pass, finished before
        return RewriteResult(folder / STREAM_NAME, 0, manifest, json.loads((folder / "audit.json").read_text()))
    audit = window_audit(folder, span, source, tables, resolver, seed, fraction, progress=progress)
    if folder != out_dir:  # leave a record in out_dir of where this window's rows live, and their audit
        write_json_atomic(out_dir / "audit.json", audit)
        write_json_atomic(out_dir / REUSED_FILE, {"reused_from": str(folder), "stream": str(folder / STREAM_NAME),
                                                  "first_row": span[0] - start, "rows": list(span),
                                                  "config_key": manifest["config_key"],
                                                  "window": window.describe()})
        manifest = {**manifest, "reused_for_window": window.describe(), "reused_from": str(folder)}
    return RewriteResult(folder / STREAM_NAME, span[0] - start, manifest, audit)


def load_result(out_dir) -> RewriteResult:
    """The result of a finished `rewrite_window` into `out_dir`: its own pass, or its record of the
    larger pass that serves it (`reused.json`, with the audit of this window)."""
    out_dir = Path(out_dir)
    record_path = out_dir / REUSED_FILE
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        folder = Path(record["reused_from"])
        manifest = _read_manifest(folder)
        if manifest is None:
            raise UserError(f"{out_dir}: reuses the pass in {folder}, which is gone; delete {out_dir} and rerun")
        manifest = {**manifest, "reused_for_window": record["window"], "reused_from": str(folder)}
        return RewriteResult(Path(record["stream"]), int(record["first_row"]), manifest,
                             json.loads((out_dir / "audit.json").read_text()))
    manifest = _read_manifest(out_dir)
    if manifest is None:
        raise UserError(f"{out_dir}: holds no finished pass (no manifest.json); rerun the rewrite")
    return RewriteResult(out_dir / STREAM_NAME, 0, manifest, json.loads((out_dir / "audit.json").read_text()))


def window_audit(folder: Path, rows: tuple[int, int], source: IndexedStream, tables, resolver: str,
                 seed: int, fraction: float, progress: bool = False) -> dict:
    """The audit of global rows [rows[0], rows[1]) inside the finished pass at `folder`.

    Blocks of the pass wholly inside are summed from its `blocks.jsonl`; the rest (partial blocks
    at the edges, or everything for a pass without the journal) is rewritten again from the source
    rows, in memory. A row's rewrite and counts depend only on the row, its global index (which
    picks it under `fraction`) and the config, so every count equals a fresh pass's over these rows.
    The rows rewritten again must equal the pass's stored rows, or the pass is not what it claims.
    """
    manifest = _read_manifest(folder)
    first, stop_all = manifest["rows"]
    a, b = rows
    inside = sorted((r for r in _read_journal(folder) if a <= r["rows"][0] and r["rows"][1] <= b),
                    key=lambda r: r["rows"][0])
    block_rows = int(manifest.get("block_rows", DEFAULT_BLOCK_ROWS))
    pieces = []  # (start, stop, audit from the journal or None: rewrite again), in row order

    def rewrite_again(lo: int, hi: int) -> None:
        pieces.extend((c, min(c + block_rows, hi), None) for c in range(lo, hi, block_rows))

    cursor = a
    for record in inside:
        rewrite_again(cursor, record["rows"][0])
        pieces.append((*record["rows"], record["audit"]))
        cursor = record["rows"][1]
    rewrite_again(cursor, b)
    rows_again = sum(hi - lo for lo, hi, known in pieces if known is None)
    output = IndexedStream(folder / STREAM_NAME)
    audit = BlockAudit()
    with tqdm(total=rows_again * output.row_length, unit="tok", unit_scale=True, desc="audit window edges",
              disable=not progress or not rows_again) as bar:
        for lo, hi, known in pieces:
            if known is not None:
                audit.merge(BlockAudit.from_dict(known), max_sample=SAMPLE_TOTAL)
                continue
            out, block = rewrite_rows(source.rows(lo, hi), tables, resolver, first_row=lo, seed=seed,
                                      fraction=fraction, sample=SAMPLE_PER_BLOCK)
            if not np.array_equal(out, output.rows(lo - first, hi - first)):
                raise UserError(f"{folder}: its rows {lo}..{hi} differ from a fresh rewrite of the source; "
                                f"the pass is stale or damaged: delete that folder and rerun")
            audit.merge(block, max_sample=SAMPLE_TOTAL)
            bar.update(out.size)
    return {**audit.to_dict(), "window_rows": [a, b],
            "derived_from": {"pass": str(folder), "pass_rows": [first, stop_all],
                             "rows_from_block_audits": sum(r["rows"][1] - r["rows"][0] for r in inside),
                             "rows_rewritten_again": rows_again,
                             "sample_note": "snippets of the first rows of each block: may differ from a "
                                            "fresh pass over these rows, whose blocks start elsewhere"}}


def _read_journal(folder: Path) -> list[dict]:
    """The per-block audits of a finished pass ([] for a pass written before they were kept)."""
    path = folder / BLOCKS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _refuse_other_output(out_dir: Path, key: str, window: Window) -> None:
    manifest = _read_manifest(out_dir)
    if manifest is not None:
        raise UserError(f"{out_dir}: holds a finished pass of a different configuration or window "
                        f"(direction {manifest.get('direction')}, rows {manifest.get('rows')}); "
                        f"choose another output folder or delete it")
