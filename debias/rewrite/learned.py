"""A small logistic regression that decides his/her at scan speed, trained on the tagger's labels.

Features of a pronoun: the lower-cased text of the two tokens before and after it, the shape of
the next token (capitalised, -ing, -ed, -ly, punctuation) and the rules' decision, so the model
learns where the tagger disagrees with the rules. Only `her` (object vs determiner) gets a model:
for `his` the next-word rule already agrees with the tagger on 99% of cases and the independent
class is too rare (about 1%) to learn from the tagger's labels. At run time every feature becomes a
weight table over the vocabulary, so scoring is four table lookups and a sum per pronoun, like the
rules. Features are token *texts*, not ids, so a model trained with one tokenizer serves others.

Train (deterministic; writes `data/learned_resolver.json` and its agreement with the tagger):
    python -m debias.rewrite.learned --text ../shared/data/lambada/lambada_test.jsonl \
        --tokenizer ../shared/data/tokenizers/gpt-neox-20b/tokenizer.json
LAMBADA's passages (novels) are the only plain English prose at hand; the model only learns where
"her"/"his" are determiners, it never sees the language-model targets.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np

from debias.errors import UserError, exit_on_user_error
from debias.io import write_json_atomic
from debias.rewrite.core import REWRITE, Context, classify, find_forms
from debias.rewrite.tables import TokenTables, get_tables

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
        raise UserError(f"{path}: learned resolver missing (train it with python -m debias.rewrite.learned, "
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


def score(model: dict, flat, row_length, pos, form, t: TokenTables) -> np.ndarray:
    """Logit of choice 1 (her: determiner) for each pronoun."""
    from debias.rewrite.resolvers import RulesResolver

    rule = RulesResolver().choose(flat, row_length, pos, form, t)[0]
    w = model["weights"]
    out = model["bias"] + np.where(rule == 1, w.get("rule=1", 0.0), w.get("rule=0", 0.0)).astype(np.float32)
    for slot, (ids, inside) in neighbours(flat, row_length, pos, form, t).items():
        lut, edge = weight_tables(model, t)[slot]
        out += np.where(inside, lut[ids], edge)
    return out


# --- training ------------------------------------------------------------------------------------

def collect(texts, tokenizer: str, word: str):
    """Feature dicts and tagger labels (1 = choice 1) for every whole-word `word` in `texts`."""
    from debias.rewrite.resolvers import RulesResolver, decoded_windows, spacy_is_determiner

    t = get_tables(tokenizer, "m2f" if word == "his" else "f2m")
    feats, windows, spans, rule_choice = [], [], [], []
    for text in texts:
        ids = np.asarray(t.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        if ids.size == 0:
            continue
        pos, form = find_forms(ids, ids.size, t)
        reason, _ = classify(ids, ids.size, pos, form, t)
        keep = (reason == REWRITE) & (np.array(t.form_word)[form] == word) if pos.size else pos.astype(bool)
        pos, form = pos[keep], form[keep]
        if pos.size == 0:
            continue
        nb = neighbours(ids, ids.size, pos, form, t)
        rules = RulesResolver().choose(ids, ids.size, pos, form, t)[0].tolist()
        rule_choice += rules
        for i in range(pos.size):
            f = {f"rule={rules[i]}": 1.0}
            for slot, (nids, inside) in nb.items():
                for name in token_features(slot, t.strings[nids[i]] if inside[i] else None):
                    f[name] = 1.0
            feats.append(f)
        w, s = decoded_windows(ids, ids.size, pos, form, t)
        windows += w
        spans += s
    det = spacy_is_determiner(windows, spans)
    labels = (~det if word == "his" else det).astype(int)
    return feats, labels, np.array(rule_choice)


def train(texts: list[str], tokenizer: str, seed: int = 0, min_weight: float = 0.05) -> dict:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    out = {}
    feats, labels, rules = collect(texts, tokenizer, "his")
    out["his"] = {"model": None, "uses": "rules", "agreement_with_tagger": {
        "n": int(labels.size), "tagger_choice1_share": round(float(labels.mean()), 4),
        "rules": round(float((rules == labels).mean()), 4)}}
    for word in ("her",):
        feats, labels, rules = collect(texts, tokenizer, word)
        vec = DictVectorizer()
        x = vec.fit_transform(feats)
        clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
        held_out = cross_val_predict(clf, x, labels, cv=5)
        clf.fit(x, labels)
        weights = {name: round(float(w), 4) for name, w in zip(vec.get_feature_names_out(), clf.coef_[0])
                   if abs(w) >= min_weight}
        out[word] = {
            "bias": round(float(clf.intercept_[0]), 4),
            "weights": weights,
            "agreement_with_tagger": {
                "n": int(labels.size),
                "tagger_choice1_share": round(float(labels.mean()), 4),
                "learned_5fold": round(float((held_out == labels).mean()), 4),
                "rules": round(float((rules == labels).mean()), 4),
            },
        }
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m debias.rewrite.learned", description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", required=True, help="JSONL with a 'text' field per line")
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N texts")
    parser.add_argument("--out", default=str(MODEL_PATH))
    args = parser.parse_args(argv)
    path = Path(args.text)
    if not path.is_file():
        raise UserError(f"{path}: text file not found")
    texts = [json.loads(line)["text"] for line in path.open(encoding="utf-8") if line.strip()][: args.limit]
    model = train(texts, args.tokenizer)
    model["trained_on"] = {"file": path.name, "texts": len(texts)}
    write_json_atomic(args.out, model)
    for word in ("his", "her"):
        print(word, json.dumps(model[word]["agreement_with_tagger"]))


if __name__ == "__main__":
    main()
