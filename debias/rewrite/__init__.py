"""Audited, length-preserving, token-level pronoun rewriting of a Pythia stream window.

    tables.py     token tables built at run time from any tokenizer.json
    core.py       find, decide and replace pronoun forms in blocks of rows; audit counts
    resolvers.py  his -> her/hers and her -> him/his: rules, spaCy, learned
    window.py     the parallel, resumable, reusable pass over a stream window
    verify.py     re-scan a finished pass against its audit
    text.py       the same on plain text (the stdin command line, tests)
"""

from debias.rewrite.core import REASONS, BlockAudit, rewrite_rows, row_selected
from debias.rewrite.lexicon import DIRECTIONS
from debias.rewrite.tables import TokenTables, get_tables
from debias.rewrite.text import rewrite_ids, rewrite_text
from debias.rewrite.verify import verify_pass
from debias.rewrite.window import RewriteResult, rewrite_window

__all__ = [
    "DIRECTIONS", "REASONS", "BlockAudit", "RewriteResult", "TokenTables", "get_tables",
    "rewrite_ids", "rewrite_rows", "rewrite_text", "rewrite_window", "row_selected", "verify_pass",
]
