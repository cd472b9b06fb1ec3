"""Audited, length-preserving, token-level pronoun rewriting of a Pythia stream window.

    lexicon.py     the words: pronouns per direction, context word lists (no token ids)
    tables.py      token tables built at run time from any tokenizer.json
    context.py     what the stages share: skip reasons, resolver names, a match's neighbours
    detect.py      find pronoun forms and decide which are pronouns (names, chemistry, code are not)
    resolvers.py   his -> her/hers and her -> him/his: rules, spaCy (tagger.py), learned (learned.py)
    core.py        rewrite a block of rows and count what was done (the audit)
    window.py      the parallel, resumable, reusable pass over a stream window
    checker.py     an independent, text-level re-check of a finished pass (shares no code with the above)
    verify.py      integrity of a finished pass (checksums, ids, allowed changes, audit) and the re-check
    text.py        the same on plain text (the stdin command line, tests)
    train_resolver.py  trains the learned resolver on the tagger's labels
"""

from debias.rewrite.context import REASONS
from debias.rewrite.core import BlockAudit, rewrite_rows, row_selected
from debias.rewrite.lexicon import DIRECTIONS
from debias.rewrite.tables import TokenTables, get_tables
from debias.rewrite.text import rewrite_ids, rewrite_text
from debias.rewrite.verify import verify_pass
from debias.rewrite.window import RewriteResult, rewrite_window

__all__ = [
    "DIRECTIONS", "REASONS", "BlockAudit", "RewriteResult", "TokenTables", "get_tables",
    "rewrite_ids", "rewrite_rows", "rewrite_text", "rewrite_window", "row_selected", "verify_pass",
]
