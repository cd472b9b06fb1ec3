"""Non-pronoun uses left alone (names, chemistry, code), counted; replacement spellings; module structure."""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from debias.rewrite import get_tables, lexicon, rewrite_rows, rewrite_text
from debias.rewrite.detect import CodeSpans

from conftest import shared_path
from test_rewrite import train_tiny_tokenizer

DATA = Path(__file__).parent / "data"
PACKAGE = Path(__file__).resolve().parents[1] / "debias" / "rewrite"


def read_labelled(name: str) -> list[tuple[str, str, str, str]]:
    """(style, direction, input, expected) rows; a literal "\\n" in a field is a line break."""
    rows = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            style, direction, text, expected = line.split("\t")
            rows.append((style, direction, text.replace("\\n", "\n"), expected.replace("\\n", "\n")))
    return rows


# written first and used to shape the rules / written after, to measure them / written last, measured once
LABELLED = {name: read_labelled(f"rewrite_non_pronouns{name}.tsv") for name in ("", "_heldout", "_fresh")}


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


def precision(rows, tokenizer) -> tuple[float, dict, list]:
    """Share of sentences rewritten exactly as expected, per style, and the misses."""
    per_style: dict[str, list[int]] = {}
    misses = []
    for style, direction, text, expected in rows:
        out = rewrite_text(text, tokenizer, direction)
        per_style.setdefault(style, [0, 0])[1] += 1
        if out == expected:
            per_style[style][0] += 1
        else:
            misses.append((text, out))
    exact = sum(v[0] for v in per_style.values())
    return exact / len(rows), {k: tuple(v) for k, v in per_style.items()}, misses


def test_labelled_sets_are_big_and_varied():
    every = [row for rows in LABELLED.values() for row in rows]
    assert len(LABELLED[""]) >= 40 and len(every) >= 120
    assert {style for style, *_ in every} == {"citation", "chemistry", "code", "mixed"}
    assert {direction for _, direction, *_ in every} == {"m2f", "f2m", "swap"}
    # mixed sentences hold real pronouns that must change next to the non-pronoun uses
    assert sum(1 for style, _, text, expected in every if style == "mixed" and text != expected) >= 25


def test_precision_on_labelled_sentences(neox_tokenizer_path):
    every = [row for rows in LABELLED.values() for row in rows]
    overall, _, misses = precision(every, neox_tokenizer_path)
    for name, rows in LABELLED.items():
        share, styles, _ = precision(rows, neox_tokenizer_path)
        print(f"\nrewrite_non_pronouns{name}.tsv: {share:.3f} of {len(rows)} exact; by style {styles}")
    print(f"all {len(every)}: {overall:.3f}; misses: {misses}")
    assert overall >= 0.95
    # the set written last was measured once, with the rules as they are: it must not fall back
    assert precision(LABELLED["_fresh"], neox_tokenizer_path)[0] >= 0.85


@pytest.mark.parametrize("text,expected", [
    ("He K, Zhang X, Ren S, Sun J. Deep residual learning.", None),
    ("Work by Kaiming He and colleagues.", None),
    ("Li and He (2020) disagree.", None),
    ("He, K. and Sun, J. (2015) Convolutional networks.", None),
    ("Kaiming He's paper.", None),
    ("Dr. He Wei spoke.", None),
    ("20% He and 80% Ne", None),
    ("for he in range(3): print(he)", None),
    ("his = [x for x in data]", None),
    ("He cited Kaiming He in his thesis", "She cited Kaiming He in her thesis"),
])
def test_issue_examples(neox_tokenizer_path, text, expected):
    assert rewrite_text(text, neox_tokenizer_path, "m2f") == (expected or text)


def test_ordinary_prose_gets_no_policy_skips(neox_tokenizer_path):
    """LAMBADA's novels: names, chemistry and code skips must be (nearly) absent."""
    tables = get_tables(str(neox_tokenizer_path), "m2f")
    eot = tables.tokenizer.token_to_id("<|endoftext|>")
    lines = shared_path("lambada/lambada_test.jsonl").read_text(encoding="utf-8").splitlines()
    ids = []
    for enc in tables.tokenizer.encode_batch([json.loads(line)["text"] for line in lines], add_special_tokens=False):
        ids += enc.ids + [eot]
    row_length = 2049
    flat = np.asarray(ids[: len(ids) // row_length * row_length], dtype=np.uint16)
    _, audit = rewrite_rows(flat.reshape(-1, row_length), tables)
    policy = sum(audit.skips[r] for r in ("surname", "chemistry", "code", "code_identifier"))
    pronouns = sum(audit.changes.values())
    print(f"\nLAMBADA: {pronouns} pronouns rewritten, policy skips {dict(audit.skips)}")
    assert pronouns > 5000 and policy <= 0.001 * pronouns


def test_skips_are_counted_in_tokens_and_code_spans(neox_tokenizer_path):
    """A row holding a prose document and a code document: the prose changes, the code is counted."""
    tables = get_tables(str(neox_tokenizer_path), "m2f")
    enc = tables.tokenizer
    eot = enc.token_to_id("<|endoftext|>")
    prose = enc.encode("He cited Kaiming He and 20% He in his thesis.").ids
    code = enc.encode("def f(he):\n    his = he + 1\n    return his\n").ids
    row = np.asarray(prose + [eot] + code, dtype=np.int64).reshape(1, -1)
    out, audit = rewrite_rows(row, tables)
    text = enc.decode(out[0].tolist(), skip_special_tokens=False)
    assert text.startswith("She cited Kaiming He and 20% He in her thesis.<|endoftext|>def f(he):")
    assert audit.skips["surname"] == 1 and audit.skips["chemistry"] == 1 and audit.skips["code"] == 4
    d = audit.to_dict()
    assert d["skipped_tokens"]["code"] == 4 and d["skipped_tokens"]["surname"] == 1
    assert d["code_spans"] == {"spans": 1, "tokens": len(code)}
    # the code span ends where the row ends; a span starts after end-of-text
    spans = CodeSpans(row.reshape(-1), row.shape[1], tables)
    assert spans.at(np.array([0, len(prose) + 1])).tolist() == [False, True]


def test_code_spans_are_cut_at_row_edges(neox_tokenizer_path):
    """Decisions depend on the row alone: the same code split over two rows is judged per row."""
    tables = get_tables(str(neox_tokenizer_path), "m2f")
    code = tables.tokenizer.encode("x = {he: 1};\nif (he == 2) { y = he; }\n").ids
    rows = np.asarray(code * 2, dtype=np.int64).reshape(2, -1)
    spans = CodeSpans(rows.reshape(-1), rows.shape[1], tables)
    assert spans.spans == 2 and spans.tokens == rows.size


def _pronoun_ids(tables, words) -> set[int]:
    return {i for i, s in enumerate(tables.strings) if s.strip().lower() in words}


def _scan_replacements(tables) -> int:
    """Every replacement's tokens: none may be a pronoun token of the source form's gender."""
    genders = {"masculine": set(lexicon.MASCULINE_TO_FEMININE), "feminine": set(lexicon.FEMININE_TO_MASCULINE)}
    same = {g: _pronoun_ids(tables, words) for g, words in genders.items()}
    checked = 0
    for form in tables.forms:
        gender = "masculine" if form.word in genders["masculine"] else "feminine"
        for text, ids in zip(form.target_texts, form.targets):
            if ids is None:
                continue
            carried = [tables.strings[i] for i in ids if i in same[gender]]
            assert not carried, f"{tables.direction}: {form.text!r} -> {text!r} spelled with {carried}"
            checked += 1
    return checked


@pytest.mark.parametrize("direction", ["m2f", "f2m", "swap"])
def test_replacements_never_carry_a_source_gender_token(neox_tokenizer_path, tiny_tokenizer, direction):
    for tokenizer in (neox_tokenizer_path, tiny_tokenizer):
        assert _scan_replacements(get_tables(str(tokenizer), direction)) > 20
    # the cases that used to carry one: "Him" -> "He"+"r", "HIM" -> "HE"+"R"
    if direction in ("m2f", "swap"):
        tables = get_tables(str(neox_tokenizer_path), direction)
        him = next(f for f in tables.forms if f.text == "Him")
        assert [tables.strings[i] for i in him.targets[0]] == ["H", "er"]
        assert rewrite_text("Him? No.", neox_tokenizer_path, direction) == "Her? No."
        assert rewrite_text("I SAW HIM AND HIS WIFE.", neox_tokenizer_path, direction) == "I SAW HER AND HER WIFE."


def test_second_tokenizer_policies(tiny_tokenizer):
    """The policies come from the vocabulary, not from GPT-NeoX ids: a 3,000-token BPE serves too,
    less precisely (its words split into pieces that the token rules cannot always see)."""
    every = [row for rows in LABELLED.values() for row in rows]
    share, styles, _ = precision(every, tiny_tokenizer)
    print(f"\nsecond tokenizer: {share:.3f} of {len(every)} exact; by style {styles}")
    assert share >= 0.85


def _imports(path: Path) -> tuple[set[str], list[str]]:
    """debias.rewrite modules imported at module level, and those imported inside functions."""
    tree = ast.parse(path.read_text())
    top, local = set(), []

    def names(node) -> list[str]:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "debias.rewrite":
                return [alias.name for alias in node.names]
            if node.module.startswith("debias.rewrite."):
                return [node.module.split(".")[2]]
        if isinstance(node, ast.Import):
            return [a.name.split(".")[2] for a in node.names if a.name.startswith("debias.rewrite.")]
        return []

    for node in tree.body:
        top.update(names(node))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                local += names(inner)
    return top, local


def test_no_import_circle_in_the_rewriter():
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    graph = {}
    for name, path in modules.items():
        top, local = _imports(path)
        graph[name] = {m for m in top if m in modules}
        assert not [m for m in local if m in modules], f"{name}.py imports rewriter modules inside functions"
    state: Counter = Counter()

    def visit(node, trail):
        assert state[node] != 1, f"import circle: {' -> '.join(trail + [node])}"
        if state[node] == 0:
            state[node] = 1
            for nxt in graph[node]:
                visit(nxt, trail + [node])
            state[node] = 2

    for name in graph:
        visit(name, [])
    # the checker shares no code with the rewriter
    assert graph["checker"] == set()
