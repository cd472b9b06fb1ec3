"""Re-scan a finished pass and check it against its audit.

Independent of the code path that wrote the rows: it scans the OUTPUT for source-gender pronouns
left unchanged, finds for each a reason it may stay (excluded use, unselected row, no equal-length
spelling), and fails when one has no reason or the counts differ from `audit.json`. With the source
stream at hand it also checks that rows keep their lengths, that exactly `changed_tokens`
positions differ, and that special tokens (end-of-text) never move. A pass's `blocks.jsonl` must
add up to its audit. A folder that reused a larger pass (`reused.json`) is checked on its window's
rows inside that pass, against its own audit.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from debias.errors import UserError
from debias.rewrite.core import BlockAudit, remaining_source_pronouns
from debias.rewrite.tables import get_tables
from debias.stream import IndexedStream

VERIFY_BLOCK_ROWS = 4096


def verify_pass(out_dir, progress: bool = True) -> list[str]:
    """Problems found in the pass at `out_dir` (an empty list means it checks out)."""
    out_dir = Path(out_dir)
    manifest_path, reused = out_dir / "manifest.json", None
    if not manifest_path.is_file() and (out_dir / "reused.json").is_file():
        reused = json.loads((out_dir / "reused.json").read_text())
        manifest_path = Path(reused["reused_from"]) / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{manifest_path}: not found; pass the output folder of a finished rewrite")
    manifest = json.loads(manifest_path.read_text())
    audit = json.loads((out_dir / "audit.json").read_text())
    tokenizer = manifest["tokenizer"]
    if not Path(tokenizer).is_file():
        raise UserError(f"{tokenizer}: the pass's tokenizer is missing; verify needs it to re-scan")
    tables = get_tables(tokenizer, manifest["direction"])
    output = IndexedStream(manifest_path.parent / "rewritten")
    start, stop = manifest["rows"] if reused is None else reused["rows"]
    first = 0 if reused is None else reused["first_row"]  # row of `start` in the output
    source = _open_source(manifest)
    if source is None and manifest["direction"] == "swap":
        raise UserError(f"{manifest['source']['index']}: the source stream is needed to verify a swap "
                        f"(its targets are source-gender words too)")
    problems: list[str] = []
    if (len(output) != stop - start) if reused is None else (len(output) < first + stop - start):
        problems.append(f"output holds {len(output)} rows, the window {stop - start} from row {first}")
        return problems
    problems += _journal_problems(out_dir, audit)
    if output.row_length != manifest["window"]["geometry"]["row_length"]:
        problems.append(f"output rows are {output.row_length} tokens, not {manifest['window']['geometry']['row_length']}")
    special = np.zeros(tables.lut_size, dtype=bool)
    special[: tables.vocab_size] = tables.is_empty[: tables.vocab_size]
    remaining, changed = Counter(), 0
    first_unaccounted = None
    blocks = range(0, stop - start, VERIFY_BLOCK_ROWS)
    for b in tqdm(blocks, desc="verify", disable=not progress):
        after = output.rows(first + b, first + min(b + VERIFY_BLOCK_ROWS, stop - start))
        before = source.rows(start + b, start + b + len(after)) if source is not None else None
        found = remaining_source_pronouns(before, after, tables, start + b, manifest["seed"], manifest["fraction"])
        if found.get("rewrite") and first_unaccounted is None:
            first_unaccounted = start + b
        remaining.update(found)
        if before is not None:
            changed += int((before != after).sum())
            if np.any((special[before] | special[after]) & (before != after)):
                problems.append(f"rows from {start + b}: a special token (e.g. end-of-text) changed")
    if remaining.get("rewrite"):
        problems.append(f"{remaining['rewrite']} source-gender pronoun(s) remain that no skip reason "
                        f"accounts for (first in the block from row {first_unaccounted})")
    expected = Counter(audit["remaining_source_pronouns"]["by_reason"])
    if +remaining != +expected:
        problems.append(f"remaining source pronouns {dict(remaining)} differ from the audit's {dict(expected)}")
    if source is not None and changed != audit["changed_tokens"]:
        problems.append(f"{changed} positions differ from the source, the audit says {audit['changed_tokens']}")
    by_form = sum(v["tokens"] for v in audit["changes"].values())
    if by_form != audit["changed_tokens"]:
        problems.append(f"per-form changes add up to {by_form} tokens, the audit's total is {audit['changed_tokens']}")
    return problems


def _journal_problems(out_dir: Path, audit: dict) -> list[str]:
    """The per-block audits of a pass must sum to its audit in every count (samples aside)."""
    path = out_dir / "blocks.jsonl"
    if not path.is_file():
        return []
    total = BlockAudit()
    for line in path.read_text().splitlines():
        total.merge(BlockAudit.from_dict(json.loads(line)["audit"]), max_sample=0)
    summed = {k: v for k, v in total.to_dict().items() if k != "sample"}
    differ = sorted(k for k, v in summed.items() if audit.get(k) != v)
    return [f"{path.name}: the block audits do not add up to audit.json in {', '.join(differ)}"] if differ else []


def _open_source(manifest: dict) -> IndexedStream | None:
    try:
        source = IndexedStream(manifest["source"]["index"])
    except UserError:
        return None
    if source.index_sha256 != manifest["source"]["index_sha256"]:
        raise UserError(f"{source.idx_path}: differs from the stream this pass read (index sha256 changed)")
    return source
