"""debias.stream: bad input (one-line errors, exit 2, nothing written), packing and the CLI."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from debias.errors import UserError
from debias.stream import IndexedStream, StreamWriter, pack_texts, read_documents
from debias.stream.mmidx import HEADER


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "debias.stream", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert str(needle) in lines[0]


def make_stream(folder, rows=12, length=5):
    prefix = folder / "document"
    with StreamWriter(prefix, np.uint16) as writer:
        writer.append_rows(np.arange(rows * length, dtype=np.uint16).reshape(rows, length))
    return prefix


def shard(prefix, cuts):
    """Replace prefix.bin by byte shards cut at `cuts`; return their paths."""
    data = prefix.with_suffix(".bin").read_bytes()
    prefix.with_suffix(".bin").unlink()
    edges, last = [0, *cuts, len(data)], len(cuts)
    paths = []
    for k in range(last + 1):
        path = prefix.with_name(f"{prefix.name}-{k:05d}-of-{last:05d}.bin")
        path.write_bytes(data[edges[k]:edges[k + 1]])
        paths.append(path)
    return paths


def patch_bytes(path, offset, new):
    data = bytearray(path.read_bytes())
    data[offset:offset + len(new)] = new
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------
# Bad streams: the library raises one line naming the file; the CLI exits 2

def corrupt_magic(prefix):
    patch_bytes(prefix.with_suffix(".idx"), 0, b"NOTANIDX\x00")
    return prefix.with_suffix(".idx"), "wrong magic"


def corrupt_version(prefix):
    patch_bytes(prefix.with_suffix(".idx"), 9, struct.pack("<Q", 2))
    return prefix.with_suffix(".idx"), "version 2"


def corrupt_dtype(prefix):
    patch_bytes(prefix.with_suffix(".idx"), 17, struct.pack("<B", 9))
    return prefix.with_suffix(".idx"), "dtype code 9"


def truncate_index(prefix):
    idx = prefix.with_suffix(".idx")
    idx.write_bytes(idx.read_bytes()[:-5])
    return idx, "truncated index"


def truncate_bin(prefix):
    data = prefix.with_suffix(".bin")
    data.write_bytes(data.read_bytes()[:-1])
    return data, "holds 119 bytes"


def negative_length(prefix):
    patch_bytes(prefix.with_suffix(".idx"), HEADER.size + 4 * 2, struct.pack("<i", -3))
    return prefix.with_suffix(".idx"), "row 2 has length -3"


def longer_bin(prefix):
    with open(prefix.with_suffix(".bin"), "ab") as data:
        data.write(b"\x00\x00")
    return prefix.with_suffix(".bin"), "2 trailing bytes"


def missing_shard(prefix):
    paths = shard(prefix, [7, 50, 51])
    paths[2].unlink()
    return paths[2].name, "missing"


def misnumbered_shards(prefix):
    paths = shard(prefix, [7, 50])
    paths[2].rename(paths[2].with_name("document-00002-of-00003.bin"))
    return "-of-00002, -of-00003", "disagree"


def shard_past_the_last(prefix):
    shard(prefix, [7])
    (prefix.parent / "document-00002-of-00001.bin").write_bytes(b"\x00\x00")
    return "document-00002-of-00001.bin", "numbered past the last shard"


def no_data(prefix):
    prefix.with_suffix(".bin").unlink()
    return prefix.with_suffix(".bin"), "data not found"


def no_index(prefix):
    prefix.with_suffix(".idx").unlink()
    return prefix.with_suffix(".idx"), "index not found"


@pytest.mark.parametrize("corrupt", [corrupt_magic, corrupt_version, corrupt_dtype, truncate_index,
                                     truncate_bin, negative_length, longer_bin, missing_shard,
                                     misnumbered_shards, shard_past_the_last, no_data, no_index])
def test_bad_stream(tmp_path, corrupt):
    prefix = make_stream(tmp_path)
    name, what = corrupt(prefix)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(UserError) as err:
        IndexedStream(prefix)
    assert str(name) in str(err.value) and what in str(err.value) and "\n" not in str(err.value)
    assert_one_line_error(run_cli("info", prefix), name, what)
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("row, pointer", [(4, 10 ** 9), (7, -2), (9, 12 * 5 * 2 - 8)])
def test_a_row_pointing_outside_the_data_is_named_when_read(tmp_path, row, pointer):
    """The index opens (its pointers are only read with their rows); reading that row, any block
    holding it, or `info` (which checks every pointer) fails in one line naming it."""
    prefix = make_stream(tmp_path)  # 12 rows of 5 uint16 tokens: 120 bytes
    patch_bytes(prefix.with_suffix(".idx"), HEADER.size + 4 * 12 + 8 * row, struct.pack("<q", pointer))
    stream = IndexedStream(prefix)
    np.testing.assert_array_equal(stream.row(row - 1), np.arange(5 * (row - 1), 5 * row))  # its neighbour reads
    for read in (lambda: stream.row(row), lambda: stream.rows(0, 12), lambda: list(stream.iter_blocks(0, 12, 5)),
                 stream.check_index):
        with pytest.raises(UserError, match=rf"document.idx: row {row} points to bytes {pointer:,}\.\."):
            read()
    assert_one_line_error(run_cli("show", prefix, "--row", row), f"row {row} points to bytes")
    assert_one_line_error(run_cli("info", prefix), f"row {row} points to bytes")


def test_window_past_the_end_and_bad_ratio_from_the_cli(tmp_path):
    prefix = make_stream(tmp_path, rows=12, length=5)
    geometry = ["--batch-size", 4, "--row-length", 5, "--total-steps", 10, "--checkpoint-interval", 2]
    assert_one_line_error(run_cli("show", prefix, "--step", 3, *geometry), "steps 3..4", "rows up to 16", "holds 12")
    assert_one_line_error(run_cli("show", prefix, "--step", 0, "--batch-size", 4, "--row-length", 7),
                          "rows of 5 tokens", "needs rows of 7")  # rows of the wrong length
    assert_one_line_error(run_cli("show", prefix, "--step", 10, *geometry), "steps 10..11", "total_steps=10")
    assert_one_line_error(run_cli("show", prefix, "--row", 12), "--row 12")
    assert_one_line_error(run_cli("info", prefix, "--batch-size", 0), "geometry.batch_size=0")
    info = json.loads(run_cli("info", prefix, "--json", *geometry).stdout)
    assert info["whole_steps"] == 3 and not info["covers_total_steps"]
    assert info["windows"]["0.21"]["start_step"] == 8 and not info["windows"]["0.21"]["fits"]
    assert "needs rows up to 40" in info["windows"]["0.21"]["problem"]


def test_info_describes_shards_and_steps(tmp_path):
    prefix = make_stream(tmp_path, rows=12, length=5)
    shard(prefix, [7, 50])
    result = run_cli("info", prefix, "--json", "--batch-size", 3, "--row-length", 5,
                     "--total-steps", 4, "--checkpoint-interval", 1)
    info = json.loads(result.stdout)
    assert info["rows"] == 12 and info["tokens"] == 60 and info["dtype"] == "uint16"
    assert info["row_length_stats"] == {"min": 5, "max": 5, "mean": 5.0}
    assert info["whole_steps"] == 4 and info["covers_total_steps"] and info["spare_rows"] == 0
    assert [f["bytes"] for f in info["files"]] == [7, 43, 70]
    assert info["windows"]["0.21"]["start_step"] == 3 and info["windows"]["0.21"]["fits"]
    text = run_cli("info", prefix).stdout
    assert "12 (uint16)" in text and "document-00002-of-00002.bin" in text


def test_show_step_rows_as_ids(tmp_path):
    prefix = make_stream(tmp_path, rows=12, length=5)
    shard(prefix, [13])
    out = run_cli("show", prefix, "--step", 1, "--batch-size", 4, "--row-length", 5).stdout.splitlines()
    assert out[0] == "# row 4 (step 1, 1/4): 5 tokens"
    assert out[1] == "20 21 22 23 24" and out[7] == "35 36 37 38 39"


# ---------------------------------------------------------------------------------------------
# Packing with the real GPT-NeoX tokenizer

TEXTS = [
    "He said that his sister would drive him home.",
    "The committee met on Tuesday.\nMinutes were taken by the secretary; she filed them herself.",
    "Short.",
    "A longer document about the Hebrew calendar and Heather's visit to the Hispanic heritage museum. " * 3,
]


def expected_rows(tokenizer_path, texts, seq_len):
    """Megatron's packing, from per-document encodings: rows of seq_len + 1 sharing one token."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    eos = tokenizer.token_to_id("<|endoftext|>")
    tokens = [t for text in texts for t in tokenizer.encode(text, add_special_tokens=False).ids + [eos]]
    count = (len(tokens) - 1) // seq_len
    rows = np.array([tokens[k * seq_len: k * seq_len + seq_len + 1] for k in range(count)])
    return rows, len(tokens), eos


@pytest.mark.parametrize("seq_len, batch", [(7, 1), (16, 2), (64, 1024)])
def test_pack_texts_matches_megatron_packing(tmp_path, neox_tokenizer_path, seq_len, batch):
    summary = pack_texts(TEXTS, neox_tokenizer_path, seq_len, tmp_path / "p", batch_documents=batch)
    rows, total, eos = expected_rows(neox_tokenizer_path, TEXTS, seq_len)
    stream = IndexedStream(tmp_path / "p")
    assert stream.dtype == np.uint16 and stream.row_length == seq_len + 1
    np.testing.assert_array_equal(stream.rows(0, len(stream)), rows)
    assert summary["rows"] == len(rows) and summary["tokens"] == total and summary["eos_id"] == eos
    assert summary["dropped_tokens"] == total - (len(rows) * seq_len + 1)
    assert summary["documents"] == len(TEXTS)


def test_read_documents(tmp_path):
    (tmp_path / "a.txt").write_text("one\ncontinued\n\n\ntwo\n\nthree\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "x\n\ny"}) + "\n\n" + json.dumps({"text": "z", "id": 3}) + "\n")
    assert list(read_documents([tmp_path / "a.txt", tmp_path / "b.jsonl"])) == ["one\ncontinued", "two", "three", "x\n\ny", "z"]
    assert list(read_documents([tmp_path / "a.txt"], "line")) == ["one", "continued", "two", "three"]


def test_pack_cli_and_show_decoded(tmp_path, neox_tokenizer_path):
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    result = run_cli("pack", "--tokenizer", neox_tokenizer_path, "--seq-len", 2048, tmp_path / "docs.jsonl",
                     tmp_path / "out" / "p")
    assert result.returncode == 2 and "fewer than one row of 2049" in result.stderr  # too little text
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    result = run_cli("pack", "--tokenizer", neox_tokenizer_path, "--seq-len", 32, tmp_path / "docs.jsonl",
                     tmp_path / "out" / "p")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["row_length"] == 33 and summary["rows"] == len(IndexedStream(tmp_path / "out" / "p"))
    shown = run_cli("show", tmp_path / "out" / "p", "--row", 0, "--tokenizer", neox_tokenizer_path).stdout
    assert "He said that his sister would drive him home.<|endoftext|>The committee" in shown


@pytest.mark.parametrize("make_input, needle", [
    (lambda d: (d / "x.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n'), "x.jsonl:2"),
    (lambda d: (d / "x.jsonl").write_text('{"text": 5}\n'), "x.jsonl:1"),
    (lambda d: None, "x.jsonl: input file not found"),
])
def test_pack_bad_input_writes_nothing(tmp_path, neox_tokenizer_path, make_input, needle):
    make_input(tmp_path)
    before = sorted(tmp_path.iterdir())
    result = run_cli("pack", "--tokenizer", neox_tokenizer_path, "--seq-len", 4, tmp_path / "x.jsonl", tmp_path / "p")
    assert_one_line_error(result, needle)
    assert sorted(tmp_path.iterdir()) == before


def test_pack_bad_tokenizer(tmp_path):
    (tmp_path / "a.txt").write_text("text\n")
    (tmp_path / "bad.json").write_text("{}")
    assert_one_line_error(run_cli("pack", "--tokenizer", tmp_path / "none.json", "--seq-len", 4,
                                  tmp_path / "a.txt", tmp_path / "p"), "none.json", "not found")
    assert_one_line_error(run_cli("pack", "--tokenizer", tmp_path / "bad.json", "--seq-len", 4,
                                  tmp_path / "a.txt", tmp_path / "p"), "bad.json")
    assert_one_line_error(run_cli("pack", "--tokenizer", tmp_path / "bad.json", "--seq-len", 0,
                                  tmp_path / "a.txt", tmp_path / "p"), "seq_len=0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "bad.json"]


def test_download_offline_fails_in_one_line(tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "debias.stream", "download", "deduped", str(tmp_path / "dl")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(result, "EleutherAI/pile-deduped-pythia-preshuffled", "hf download")
    assert not (tmp_path / "dl").exists()
