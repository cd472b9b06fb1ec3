"""Rewriter throughput on real English in Pythia-shaped rows, beside baselines measured in the same run.

LAMBADA passages are tokenized once with the GPT-NeoX tokenizer, joined with end-of-text and tiled
into 2049-token rows, written as an MMIDIDX stream under benchmarks/data/ (git-ignored). Then, on
ONE worker process (so figures are per core):
  m2f / f2m / swap   rewrite_window end to end: read the rows, rewrite, audit, write each block once
                     at its offset in the output stream, record it for resume, hash the output
  (a) copy           read the same rows and write them as a stream (numpy, StreamWriter)
  (b) scan           read the rows the same way (same blocks, same read call) and look every token
                     up in the pronoun table (the least work a correct rewriter must do); also the
                     lookup alone on rows already in memory
  (c) retokenize     decode -> whole-word string replace -> re-tokenize, on a sample of rows
Size: DEBIAS_BENCH_TOKENS (default 200M); e.g. DEBIAS_BENCH_TOKENS=20e6 for a quick run.
The machine is shared, so every contender, baselines included, runs DEBIAS_BENCH_REPEATS times
(default 3) from the same state and reports its fastest run, the one least disturbed (as timeit does).
Writes benchmarks/results/rewrite.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from debias.config import shared_data_path  # noqa: E402
from debias.io import write_json_atomic  # noqa: E402
from debias.rewrite import get_tables, rewrite_window  # noqa: E402
from debias.stream import Geometry, IndexedStream, StreamWriter, Window  # noqa: E402

SHARED = Path(shared_data_path())
TOKENIZER = SHARED / "tokenizers/gpt-neox-20b/tokenizer.json"
LAMBADA = SHARED / "lambada/lambada_test.jsonl"
DATA = ROOT / "benchmarks/data"
RESULT = ROOT / "benchmarks/results/rewrite.json"
ROW_LENGTH = 2049
BLOCK_ROWS = 4096
RETOKENIZE_ROWS = 200
REPEATS = int(os.environ.get("DEBIAS_BENCH_REPEATS", 3))


def build_stream(tokens: int) -> Path:
    """LAMBADA ids tiled into rows; rebuilt only when the size changes."""
    rows = -(-tokens // ROW_LENGTH)
    rows += -rows % 8  # whole steps of the bench geometry
    prefix = DATA / f"lambada_tiled_{rows}"
    if Path(str(prefix) + ".idx").is_file():
        return prefix
    tables = get_tables(str(TOKENIZER), "m2f")
    eot = tables.tokenizer.token_to_id("<|endoftext|>")
    texts = [json.loads(line)["text"] for line in LAMBADA.read_text(encoding="utf-8").splitlines()]
    ids = []
    for enc in tables.tokenizer.encode_batch(texts, add_special_tokens=False):
        ids += enc.ids + [eot]
    ids = np.asarray(ids, dtype=np.uint16)
    DATA.mkdir(parents=True, exist_ok=True)
    with StreamWriter(prefix, np.uint16, row_length=ROW_LENGTH) as writer:
        for start in range(0, rows, BLOCK_ROWS):
            n = min(BLOCK_ROWS, rows - start)
            tiled = ids[np.arange(start * ROW_LENGTH, (start + n) * ROW_LENGTH) % ids.size]
            writer.append_rows(tiled.reshape(n, ROW_LENGTH))
    return prefix


CPU_SECONDS: dict = {}


def timed(fn, name: str | None = None, reset=None):
    """Fastest wall seconds of REPEATS runs of fn() and its value; under `name`, that run's CPU seconds.

    `reset()` runs untimed before each run (a rewriter must not find its previous output to reuse).
    """
    best = None
    for _ in range(REPEATS):
        if reset:
            reset()
        os.sync()  # no run pays for writing back an earlier one's output
        start, cpu = time.perf_counter(), time.process_time()
        value = fn()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        if best is None or wall < best[0]:
            best = (wall, cpu, value)
    if name:
        CPU_SECONDS[name] = best[1]
    return best[0], best[2]


def copy_rows(stream: IndexedStream, out: Path) -> None:
    with StreamWriter(out, stream.dtype, row_length=ROW_LENGTH) as writer:
        for block in stream.iter_blocks(0, len(stream), BLOCK_ROWS):
            writer.append_rows(block)


def scan_rows(stream: IndexedStream, is_head: np.ndarray) -> int:
    found = 0
    for block in stream.iter_blocks(0, len(stream), BLOCK_ROWS):
        found += np.flatnonzero(is_head[block]).size
    return found


WORDS_M2F = {"he": "she", "him": "her", "his": "her", "himself": "herself"}
WORD_RE = re.compile(r"\b(he|him|his|himself)\b", re.IGNORECASE)


def retokenize(rows: np.ndarray, tokenizer) -> None:
    """The approach the issue warns about, done right: decode, replace whole words, re-encode."""
    def swap(match):
        word = match.group(0)
        target = WORDS_M2F[word.lower()]
        return target.upper() if word.isupper() and len(word) > 1 else (
            target.capitalize() if word[0].isupper() else target)

    texts = tokenizer.decode_batch([row.tolist() for row in rows], skip_special_tokens=False)
    tokenizer.encode_batch([WORD_RE.sub(swap, text) for text in texts], add_special_tokens=False)


def main() -> None:
    if not (TOKENIZER.is_file() and LAMBADA.is_file()):
        print(f"skipped: {TOKENIZER} or {LAMBADA} not found (set DEBIAS_SHARED_DATA)")
        return
    tokens = int(float(os.environ.get("DEBIAS_BENCH_TOKENS", 200e6)))
    prefix = build_stream(tokens)
    stream = IndexedStream(prefix)
    n_tokens = stream.num_tokens
    geometry = Geometry(batch_size=8, row_length=ROW_LENGTH, total_steps=len(stream) // 8, checkpoint_interval=1)
    window = Window.from_start_step(geometry, 0)
    work = DATA / "rewrite_runs"
    shutil.rmtree(work, ignore_errors=True)

    tables = {d: get_tables(str(TOKENIZER), d) for d in ("m2f", "f2m", "swap")}  # built once per process
    # warm the page cache so every contender reads the same cached rows
    scan_rows(stream, tables["m2f"].is_head)

    results = {"tokens": n_tokens, "rows": len(stream), "row_length": ROW_LENGTH,
               "device": f"CPU, 1 worker process ({os.cpu_count()} cores on the machine, shared)",
               "timing": f"fastest of {REPEATS} runs for every contender, baselines included"}
    # every run's output goes before the next run and once measured (the rewriters' below too), so
    # each writer starts from the same page cache instead of paying for memory an earlier one holds
    t_copy, _ = timed(lambda: copy_rows(stream, work / "copy" / "rows"), "copy",
                      reset=lambda: shutil.rmtree(work / "copy", ignore_errors=True))
    shutil.rmtree(work / "copy")
    t_scan, found = timed(lambda: scan_rows(stream, tables["m2f"].is_head), "scan")
    block = stream.rows(0, min(BLOCK_ROWS, len(stream)))
    t_mem, _ = timed(lambda: [np.flatnonzero(tables["m2f"].is_head[block]) for _ in range(5)])
    results.update(copy_tokens_per_s=n_tokens / t_copy, scan_tokens_per_s=n_tokens / t_scan,
                   scan_in_memory_tokens_per_s=5 * block.size / t_mem,
                   copy_tokens_per_cpu_s=n_tokens / CPU_SECONDS["copy"],
                   scan_tokens_per_cpu_s=n_tokens / CPU_SECONDS["scan"],
                   pronoun_candidates_per_1000_tokens=1000 * found / n_tokens)

    audits = {}
    for direction, resolver in (("m2f", "rules"), ("f2m", "rules"), ("swap", "rules"), ("f2m", "learned")):
        out = work / f"{direction}_{resolver}"
        name = direction if resolver == "rules" else f"{direction}_{resolver}"
        seconds, result = timed(lambda: rewrite_window(stream, window, out, TOKENIZER, direction,
                                                       resolver=resolver, workers=1,
                                                       block_rows=BLOCK_ROWS, progress=False), name,
                                reset=lambda: shutil.rmtree(out, ignore_errors=True))
        results[f"{name}_tokens_per_s_per_core"] = n_tokens / seconds
        # the machine is shared: CPU seconds show the work itself, wall seconds include waiting
        results[f"{name}_tokens_per_cpu_s"] = n_tokens / CPU_SECONDS[name]
        audits[name] = {k: result.audit[k] for k in ("changed_tokens", "rows_touched", "skips", "decisions")}
        audits[name]["remaining"] = result.audit["remaining_source_pronouns"]
        shutil.rmtree(out)

    sample = stream.rows(0, min(RETOKENIZE_ROWS, len(stream)))
    t_retok, _ = timed(lambda: retokenize(sample, tables["m2f"].tokenizer))
    results["retokenize_tokens_per_s"] = sample.size / t_retok
    results["m2f_time_over_scan_time"] = results["scan_tokens_per_s"] / results["m2f_tokens_per_s_per_core"]
    results["m2f_speedup_over_retokenize"] = results["m2f_tokens_per_s_per_core"] / results["retokenize_tokens_per_s"]
    results["targets"] = {"m2f_tokens_per_s_per_core": 30e6, "m2f_time_over_scan_time": 5.0,
                          "f2m_tokens_per_s_per_core": 2e6, "swap_tokens_per_s_per_core": 2e6,
                          "speedup_over_retokenize": 100.0}
    results["audits"] = audits
    shutil.rmtree(work, ignore_errors=True)

    print(f"rewrite benchmark: {n_tokens / 1e6:.0f}M tokens of LAMBADA in {len(stream)} rows of {ROW_LENGTH}, "
          f"{results['pronoun_candidates_per_1000_tokens']:.1f} candidate tokens per 1000")
    print(f"{'':34}{'M tokens/s':>12}{'M tokens/CPU-s':>16}")
    for label, key in [("m2f end to end (1 core)", "m2f"), ("f2m end to end (1 core)", "f2m"),
                       ("swap end to end (1 core)", "swap"), ("f2m learned resolver (1 core)", "f2m_learned"),
                       ("(a) numpy read + write copy", "copy"), ("(b) read + lookup-table scan", "scan"),
                       ("(b') lookup-table scan in memory", "scan_in_memory"),
                       ("(c) decode/replace/re-tokenize", "retokenize")]:
        wall = results.get(f"{key}_tokens_per_s_per_core", results.get(f"{key}_tokens_per_s"))
        cpu = results.get(f"{key}_tokens_per_cpu_s")
        print(f"{label:34}{wall / 1e6:12.2f}{'' if cpu is None else f'{cpu / 1e6:16.2f}'}")
    print(f"m2f time / scan time: {results['m2f_time_over_scan_time']:.2f}x (target <= 5); "
          f"m2f / re-tokenize: {results['m2f_speedup_over_retokenize']:.0f}x (target >= 100)")
    write_json_atomic(RESULT, results)
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
