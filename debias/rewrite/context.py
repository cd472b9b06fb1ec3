"""What every stage of the rewriter shares: why a found form is left alone, who decided an
ambiguous choice, and the view of a match's neighbouring tokens.

A module of its own so that detection (`detect.py`), the resolvers and the rewrite itself
(`core.py`) depend on it and never on each other in a circle.
"""

from __future__ import annotations

import numpy as np

# Why a found form was left alone; "rewrite" (0) means it was replaced.
REASONS = (
    "rewrite",
    "not_whole_word",  # a piece of a longer word: Heather, Hispanic, hebrew
    "surname",  # "He et al.", "Kaiming He", "He K, Zhang X", "Li and He (2020)", "Dr. He Wei"
    "chemistry",  # "liquid He", "20% He", "3He", "He-4", "He, Ne and Ar", "Asp, His and Ser"
    "code",  # inside a document span (between end-of-text tokens) that reads as source code
    "url_or_markup",  # /he/, lang="he", he.wikipedia
    "code_identifier",  # self.his, his.append(, his(
    "acronym",  # HIS = hospital information system, inside mixed-case text
    "hyphen_compound",  # He-Ne laser, His-tag
    "row_not_selected",  # outside the `fraction` of rows chosen for rewriting
    "no_equal_length_target",  # the vocabulary cannot spell the target at the same length
)
REWRITE, NOT_WHOLE_WORD = 0, 1
R = {name: code for code, name in enumerate(REASONS)}
# Who decided an ambiguous pronoun's target (his -> her | hers, her -> him | his).
METHODS = ("none", "rules", "spacy", "learned")


class Context:
    """Neighbouring token ids of each match, with masks for neighbours outside the row."""

    def __init__(self, flat: np.ndarray, row_length: int, pos: np.ndarray, length: np.ndarray):
        self.flat, self.row_length, self.pos = flat, row_length, pos
        self.col = pos % row_length
        self.length = length

    def before(self, d: int, idx=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Ids `d` tokens before the matches `idx` (all by default) and whether they are inside the row."""
        pos = self.pos[idx]
        valid = self.col[idx] - d >= 0
        return self.flat[np.where(valid, pos - d, pos)], valid

    def after(self, d: int, idx=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Ids `d` tokens after the last token of the matches `idx` and whether they are inside the row."""
        pos, off = self.pos[idx], self.length[idx] - 1 + d
        valid = self.col[idx] + off < self.row_length
        return self.flat[np.where(valid, pos + off, pos)], valid

    def text(self, strings: list[str], i: int, lo: int, hi: int, stop: frozenset[int]) -> str:
        """Decoded tokens [lo, hi) beside match `i` (wholly before or wholly after it), clipped
        to its row and cut at a `stop` token (end-of-text: beyond it lies another document)."""
        row_start = int(self.pos[i] - self.col[i])
        lo, hi = max(lo, row_start), min(hi, row_start + self.row_length)
        ids = self.flat[lo:hi].tolist()
        cuts = [k for k, token in enumerate(ids) if token in stop]
        if cuts:
            ids = ids[cuts[-1] + 1:] if hi <= self.pos[i] else ids[:cuts[0]]
        return "".join(strings[k] for k in ids)
