"""Rewriting plain text: tokenize, rewrite the ids, decode. For people trying the rewriter and
for tests; the stream pass (`window.py`) works on ids and never decodes."""

from __future__ import annotations

import numpy as np

from debias.rewrite.core import BlockAudit, rewrite_rows
from debias.rewrite.tables import TokenTables, get_tables


def rewrite_ids(ids, tables: TokenTables, resolver: str | None = "rules") -> np.ndarray:
    """Rewrite one sequence of token ids (its ends count as word boundaries)."""
    row = np.asarray(ids, dtype=np.int64).reshape(1, -1)
    if row.size == 0:
        return row[0]
    out, _ = rewrite_rows(row, tables, resolver, audit=False)
    return out[0]


def rewrite_text(text: str, tokenizer: str, direction: str, resolver: str | None = "rules",
                 with_audit: bool = False) -> str | tuple[str, BlockAudit]:
    """The text with its pronouns rewritten at token level, decoded back to text."""
    tables = get_tables(str(tokenizer), direction)
    ids = tables.tokenizer.encode(text, add_special_tokens=False).ids
    row = np.asarray(ids, dtype=np.int64).reshape(1, -1)
    if row.size == 0:
        return (text, BlockAudit()) if with_audit else text
    out, audit = rewrite_rows(row, tables, resolver, audit=with_audit)
    decoded = tables.tokenizer.decode(out[0].tolist(), skip_special_tokens=False)
    return (decoded, audit) if with_audit else decoded
