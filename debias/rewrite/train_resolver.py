"""Train the learned his/her resolver on the tagger's labels (deterministic).

    python -m debias.rewrite.train_resolver --text ../shared/data/lambada/lambada_test.jsonl \
        --tokenizer ../shared/data/tokenizers/gpt-neox-20b/tokenizer.json

writes `data/learned_resolver.json` (read by `learned.py`) and prints its agreement with the tagger.
LAMBADA's passages (novels) are the only plain English prose at hand; the model only learns where
"her"/"his" are determiners, it never sees the language-model targets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from debias.errors import ArgumentParser, UserError, exit_on_user_error
from debias.io import write_json_atomic
from debias.rewrite.context import REWRITE
from debias.rewrite.detect import classify, find_forms
from debias.rewrite.learned import MODEL_PATH, neighbours, token_features
from debias.rewrite.resolvers import RulesResolver
from debias.rewrite.tables import get_tables
from debias.rewrite.tagger import decoded_windows, spacy_is_determiner


def collect(texts, tokenizer: str, word: str):
    """Feature dicts and tagger labels (1 = choice 1) for every whole-word `word` in `texts`."""
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
    parser = ArgumentParser(prog="python -m debias.rewrite.train_resolver", description=__doc__.split("\n\n")[0])
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
