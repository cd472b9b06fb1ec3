"""Check a finished pass: its integrity, every change it made, and that its audit holds.

    1. integrity   the output's sha256 equals the manifest's; every token id lies in the vocabulary;
                   rows keep their length and special tokens (end-of-text) never move
    2. changes     every changed position, widened to its whole word, turned a source pronoun into a
                   target the direction allows, in the same case (`checker.changed_word_problems`,
                   text-level rules that share no code with the rewriter)
    3. audit       re-scanned with the rewriter's own tables, the source-gender pronouns left in
                   the output all have a skip reason, their counts and the changed-token count
                   equal audit.json's, and a pass's blocks.jsonl adds up to its audit
A folder that reused a larger pass (`reused.json`) is checked on its window's rows inside that
pass, against its own audit. The independent, sampled re-reading of the text with rates is
`checker.check_pass`; `python -m debias.rewrite verify` runs both.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from debias.errors import UserError
from debias.io import sha256_file
from debias.rewrite.checker import WordPieces, changed_word_problems, read_pass_manifest
from debias.rewrite.core import BlockAudit, remaining_source_pronouns
from debias.rewrite.tables import get_tables
from debias.stream import IndexedStream

VERIFY_BLOCK_ROWS = 4096


def verify_pass(out_dir, progress: bool = True) -> list[str]:
    """Problems found in the pass at `out_dir`, each naming the file and what is wrong (empty: it checks out)."""
    out_dir = Path(out_dir)
    manifest, reused = read_pass_manifest(out_dir)
    audit_path = out_dir / "audit.json"
    audit = _read_audit(audit_path)
    tokenizer = manifest["tokenizer"]
    if not Path(tokenizer).is_file():
        raise UserError(f"{tokenizer}: the pass's tokenizer is missing; verify needs it to re-scan")
    tables = get_tables(tokenizer, manifest["direction"])
    prefix = Path(manifest["stream"])
    bin_path = prefix.with_suffix(".bin")
    if not bin_path.is_file() or not prefix.with_suffix(".idx").is_file():
        raise UserError(f"{prefix}.bin/.idx: the rewritten stream is missing; rewrite the window again")
    problems: list[str] = []
    digest = sha256_file(bin_path)
    if digest != manifest["output_bin_sha256"]:
        problems.append(f"{bin_path}: sha256 {digest[:16]}... differs from the manifest's "
                        f"{str(manifest['output_bin_sha256'])[:16]}... (the rows were changed after the pass)")
    output = IndexedStream(prefix)
    start, stop = manifest["rows"] if reused is None else reused["rows"]
    first = 0 if reused is None else reused["first_row"]  # row of `start` in the output
    source = _open_source(manifest)  # every change is checked against the row it came from
    if (len(output) != stop - start) if reused is None else (len(output) < first + stop - start):
        problems.append(f"{bin_path}: holds {len(output)} rows, the window {stop - start} from row {first}")
        return problems
    problems += _journal_problems(out_dir, audit)
    if output.row_length != manifest["window"]["geometry"]["row_length"]:
        problems.append(f"{bin_path}: rows are {output.row_length} tokens, not "
                        f"{manifest['window']['geometry']['row_length']}")
    special = tables.is_special
    pieces = WordPieces(tables.tokenizer)
    remaining, changed = Counter(), 0
    first_unaccounted = None
    for b in tqdm(range(0, stop - start, VERIFY_BLOCK_ROWS), desc="verify", disable=not progress):
        after = output.rows(first + b, first + min(b + VERIFY_BLOCK_ROWS, stop - start))
        if after.size and int(after.max()) >= tables.vocab_size:
            row = start + b + int(np.flatnonzero((after >= tables.vocab_size).any(axis=1))[0])
            problems.append(f"{bin_path}: token id {int(after.max())} in row {row} is outside the vocabulary "
                            f"of {tokenizer} ({tables.vocab_size} ids)")
            return problems  # every later check reads these ids
        before = source.rows(start + b, start + b + len(after))
        found = remaining_source_pronouns(before, after, tables, start + b, manifest["seed"], manifest["fraction"])
        if found.get("rewrite") and first_unaccounted is None:
            first_unaccounted = start + b
        remaining.update(found)
        changed += int((before != after).sum())
        if np.any((special[before] | special[after]) & (before != after)):
            problems.append(f"{bin_path}: rows from {start + b}: a special token (e.g. end-of-text) changed")
        problems += [f"{bin_path}: {p}" for p in
                     changed_word_problems(before, after, pieces, manifest["direction"], start + b)]
    if remaining.get("rewrite"):
        problems.append(f"{bin_path}: {remaining['rewrite']} source-gender pronoun(s) remain that no skip reason "
                        f"accounts for (first in the block from row {first_unaccounted})")
    expected = Counter(audit["remaining_source_pronouns"]["by_reason"])
    if +remaining != +expected:
        problems.append(f"{audit_path}: remaining source pronouns {dict(remaining)} differ from the audit's "
                        f"{dict(expected)}")
    if changed != audit["changed_tokens"]:
        problems.append(f"{audit_path}: {changed} positions differ from the source, the audit says "
                        f"{audit['changed_tokens']}")
    by_form = sum(v["tokens"] for v in audit["changes"].values())
    if by_form != audit["changed_tokens"]:
        problems.append(f"{audit_path}: per-form changes add up to {by_form} tokens, its total is "
                        f"{audit['changed_tokens']}")
    return problems


def _read_audit(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: not found; a finished pass writes it beside manifest.json (rewrite the window again)")
    try:
        audit = json.loads(path.read_text(encoding="utf-8"))
        audit["remaining_source_pronouns"]["by_reason"], audit["changed_tokens"], audit["changes"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a rewrite audit ({type(err).__name__}: {err}); rewrite the window again") from None
    return audit


def _journal_problems(out_dir: Path, audit: dict) -> list[str]:
    """The per-block audits of a pass must sum to its audit in every count (samples aside)."""
    path = out_dir / "blocks.jsonl"
    if not path.is_file():
        return []
    total = BlockAudit()
    try:
        for line in path.read_text().splitlines():
            total.merge(BlockAudit.from_dict(json.loads(line)["audit"]), max_sample=0)
    except (ValueError, KeyError, TypeError) as err:
        return [f"{path}: unreadable ({type(err).__name__}: {err})"]
    summed = {k: v for k, v in total.to_dict().items() if k != "sample"}
    differ = sorted(k for k, v in summed.items() if audit.get(k) != v)
    return [f"{path}: the block audits do not add up to audit.json in {', '.join(differ)}"] if differ else []


def _open_source(manifest: dict) -> IndexedStream:
    try:
        source = IndexedStream(manifest["source"]["index"])
    except UserError as err:
        raise UserError(f"{err} (verify compares every changed position with the source row)") from None
    if source.index_sha256 != manifest["source"].get("index_sha256"):
        raise UserError(f"{source.idx_path}: differs from the stream this pass read (index sha256 changed)")
    return source
