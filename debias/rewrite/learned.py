"""A small logistic regression that decides her (object | determiner) at scan speed: the run-time half.

Features of a pronoun: the lower-cased text of the two tokens before and after it, the shape of
the next token (capitalised, -ing, -ed, -ly, punctuation) and the rules' decision, so the model
learns where the tagger disagrees with the rules. Only `her` (object vs determiner) gets a model:
for `his` the next-word rule already agrees with the tagger on 99% of cases and the independent
class is too rare (about 1%) to learn from the tagger's labels. At run time every feature becomes a
weight table over the vocabulary, so scoring is four table lookups and a sum per pronoun, like the
rules. Features are token *texts*, not ids, so a model trained with one tokenizer serves others.

The model is trained on the tagger's labels by `train_resolver.py`, which writes
`data/learned_resolver.json`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from debias.errors import UserError
from debias.rewrite.context import Context
from debias.rewrite.tables import TokenTables

MODEL_PATH = Path(__file__).with_name("data") / "learned_resolver.json"
SLOTS = {"p2": -2, "p1": -1, "n1": 1, "n2": 2}
EDGE = "<edge>"  # the neighbour lies outside the row


def norm(text: str) -> str:
    return text.strip().lower() or "<space>"


def shape_features(text: str) -> list[str]:
    word = text.strip()
    out = []
    if not word or not (word[0].isalnum() or word[0] == "_"):
        out.append("n1:punct")
    elif word[0].isupper():
        out.append("n1:cap")
    for suffix in ("ing", "ed", "ly", "s"):
        if word.lower().endswith(suffix) and len(word) > len(suffix) + 1:
            out.append(f"n1:{suffix}")
    return out


def token_features(slot: str, text: str | None) -> list[str]:
    if text is None:
        return [f"{slot}={EDGE}"] + (["n1:punct"] if slot == "n1" else [])
    return [f"{slot}={norm(text)}"] + (shape_features(text) if slot == "n1" else [])


def neighbours(flat, row_length, pos, form, t: TokenTables):
    """For each slot: (ids, inside-the-row mask)."""
    ctx = Context(flat, row_length, pos, t.form_length[form])
    return {slot: (ctx.before(-d) if d < 0 else ctx.after(d)) for slot, d in SLOTS.items()}


# --- run time ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def load_model(path: str | None = None) -> dict:
    path = Path(path) if path else MODEL_PATH
    if not path.is_file():
        raise UserError(f"{path}: learned resolver missing (train it with python -m debias.rewrite.train_resolver, "
                        f"or use resolver=rules|spacy)")
    return json.loads(path.read_text())


_LUT_CACHE: dict = {}


def weight_tables(model: dict, t: TokenTables) -> dict[str, tuple[np.ndarray, float]]:
    """Per slot: a float32 weight for every token id, and the weight when the slot is off the row."""
    key = (id(model), id(t))
    if key not in _LUT_CACHE:
        weights = model["weights"]
        tables = {}
        for slot in SLOTS:
            lut = np.zeros(t.lut_size, dtype=np.float32)
            lut[: t.vocab_size] = [sum(weights.get(f, 0.0) for f in token_features(slot, s)) for s in t.strings]
            tables[slot] = (lut, sum(weights.get(f, 0.0) for f in token_features(slot, None)))
        _LUT_CACHE[key] = tables
    return _LUT_CACHE[key]


def score(model: dict, flat, row_length, pos, form, t: TokenTables, rule_choice: np.ndarray) -> np.ndarray:
    """Logit of choice 1 (her: determiner) for each pronoun; `rule_choice` is the rules' decision."""
    w = model["weights"]
    out = model["bias"] + np.where(rule_choice == 1, w.get("rule=1", 0.0), w.get("rule=0", 0.0)).astype(np.float32)
    for slot, (ids, inside) in neighbours(flat, row_length, pos, form, t).items():
        lut, edge = weight_tables(model, t)[slot]
        out += np.where(inside, lut[ids], edge)
    return out
