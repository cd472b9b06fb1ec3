"""Held-out perplexity sources: the order of preference, their labels, and text packing."""

from __future__ import annotations

import json

import pytest

from debias.errors import UserError
from debias.evaluate import choose_heldout_source, pack_rows, read_heldout_documents
from debias.tokenizer import load_tokenizer


def test_rows_after_the_window_come_first():
    choice = choose_heldout_source(window_start_row=1000, window_end_row=2000, stream_rows=2100, rows_wanted=64,
                                   text="pile_test.jsonl")
    assert choice.kind == "stream rows" and choice.rows == (2000, 2064)
    assert choice.label == "stream rows 2000..2064 after the window end (seen by no arm or checkpoint)"
    assert choice.text is None


def test_text_when_the_stream_ends_with_the_window():
    choice = choose_heldout_source(window_start_row=1000, window_end_row=2000, stream_rows=2000, rows_wanted=64,
                                   text="pile_test.jsonl")
    assert choice.kind == "text" and choice.text == "pile_test.jsonl" and choice.rows is None
    # fewer rows after the window than wanted and a text: the text, whole rows of unseen data
    choice = choose_heldout_source(window_start_row=1000, window_end_row=2000, stream_rows=2010, rows_wanted=64,
                                   text="t.txt")
    assert choice.kind == "text"


def test_seen_rows_only_on_request_and_labelled():
    with pytest.raises(UserError, match="eval.perplexity.text"):
        choose_heldout_source(window_start_row=1000, window_end_row=2000, stream_rows=2000, rows_wanted=64)
    choice = choose_heldout_source(window_start_row=1000, window_end_row=2000, stream_rows=2000, rows_wanted=64,
                                   allow_seen_rows=True)
    assert choice.rows == (936, 1000) and "seen by all arms" in choice.label
    partial = choose_heldout_source(window_start_row=1000, window_end_row=2000, stream_rows=2010, rows_wanted=64)
    assert partial.rows == (2000, 2010) and "only 10 of the 64" in partial.label


def test_pack_rows_shares_one_token_between_rows(neox_tokenizer_path):
    tokenizer = load_tokenizer(neox_tokenizer_path)
    eos = tokenizer.token_to_id("<|endoftext|>")
    documents = [f"Document number {i} says something short." for i in range(40)]
    rows, counts = pack_rows(iter(documents), tokenizer, eos, row_length=9, max_rows=5, batch_documents=3)
    ids = [t for d in documents for t in tokenizer.encode(d, add_special_tokens=False).ids + [eos]]
    assert rows.shape == (5, 9) and counts["rows"] == 5
    for k in range(5):
        assert rows[k].tolist() == ids[k * 8:k * 8 + 9]
    assert counts["documents_read"] < len(documents)  # stops reading once the rows are full
    with pytest.raises(UserError, match="fewer than one row"):
        pack_rows(iter(["hi"]), tokenizer, eos, row_length=50, max_rows=2)


def test_reading_text_sources(tmp_path):
    jsonl = tmp_path / "h.jsonl"
    jsonl.write_text(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    documents, described = read_heldout_documents(jsonl, "body")
    assert list(documents) == ["one", "two"] and "sha256" in described and "'body'" in described
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": 5}) + "\n")
    with pytest.raises(UserError, match=f"{bad}:1"):
        list(read_heldout_documents(bad, "body")[0])
    text = tmp_path / "h.txt"
    text.write_text("first paragraph\nstill first\n\nsecond\n")
    assert list(read_heldout_documents(text)[0]) == ["first paragraph\nstill first", "second"]
    with pytest.raises(UserError, match="not found"):
        read_heldout_documents(tmp_path / "missing.txt")
