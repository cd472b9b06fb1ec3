"""The window pass over a real MMIDIDX stream: output, audit, verify, reuse, resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from debias.errors import UserError
from debias.io import sha256_file
from debias.rewrite import get_tables, rewrite_rows, rewrite_window, row_selected, verify_pass
from debias.rewrite.checker import check_pass, check_streams, load_tagger, selected
from debias.rewrite.window import load_result
from debias.stream import Geometry, IndexedStream, StreamWriter, Window, pack_texts
from debias.stream.mmidx import write_index

from conftest import shared_path

PROJECT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SEQ_LEN = 128  # rows of 129 tokens keep the stream small; the code never assumes 2049


def labelled_documents() -> list[str]:
    """The citation, chemistry, code and mixed sentences of the labelled sets, as documents."""
    docs = []
    for path in sorted(DATA.glob("rewrite_non_pronouns*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                docs.append(line.split("\t")[2].replace("\\n", "\n"))
    return docs


@pytest.fixture(scope="module")
def stream(tmp_path_factory, neox_tokenizer_path) -> Path:
    """LAMBADA passages packed like the Pythia stream (end-of-text between documents), with the
    labelled non-pronoun sentences among them so every pass meets names, chemistry and code."""
    lines = shared_path("lambada/lambada_test.jsonl").read_text(encoding="utf-8").splitlines()[:1200]
    texts = [json.loads(line)["text"] for line in lines]
    for k, doc in enumerate(labelled_documents()):
        texts.insert(7 * k, doc)
    prefix = tmp_path_factory.mktemp("stream") / "document"
    pack_texts(texts, neox_tokenizer_path, SEQ_LEN, prefix)
    return prefix


def geometry(stream_prefix) -> Geometry:
    rows = len(IndexedStream(stream_prefix))
    return Geometry(batch_size=8, row_length=SEQ_LEN + 1, total_steps=rows // 8, checkpoint_interval=10)


def input_hashes(prefix: Path) -> dict:
    return {p.name: sha256_file(p) for p in prefix.parent.glob(prefix.name + ".*")}


@pytest.mark.parametrize("direction", ["m2f", "swap"])
def test_pass_writes_window_rows_and_verifies(stream, neox_tokenizer_path, tmp_path, direction):
    before = input_hashes(stream)
    window = Window.from_ratio(geometry(stream), 0.21)
    result = rewrite_window(stream, window, tmp_path / "out", neox_tokenizer_path, direction,
                            workers=2, block_rows=32, progress=False)
    assert input_hashes(stream) == before
    source, out = IndexedStream(stream), IndexedStream(result.stream)
    assert result.first_row == 0 and len(out) == window.num_rows
    assert out.dtype == source.dtype and out.row_length == source.row_length
    rows_in = source.rows(window.start_row, window.end_row)
    rows_out = out.rows(0, len(out))
    # the same as rewriting the rows in one go: blocks and workers change nothing
    expected, _ = rewrite_rows(rows_in, get_tables(str(neox_tokenizer_path), direction),
                               first_row=window.start_row)
    assert np.array_equal(rows_out, expected)
    audit = result.audit
    assert audit["changed_tokens"] == int((rows_in != rows_out).sum()) > 100
    assert sum(v["tokens"] for v in audit["changes"].values()) == audit["changed_tokens"]
    assert audit["remaining_source_pronouns"]["unaccounted"] == 0
    assert audit["rows"] == window.num_rows and len(audit["sample"]) > 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["direction"] == direction and manifest["window"]["start_row"] == window.start_row
    assert manifest["source"]["index_sha256"] == source.index_sha256
    assert manifest["output_bin_sha256"] == sha256_file(Path(str(result.stream) + ".bin"))
    assert json.loads((tmp_path / "out" / "audit.json").read_text()) == json.loads(json.dumps(audit))
    assert verify_pass(tmp_path / "out", progress=False) == []


def test_larger_pass_is_reused_for_a_smaller_window(stream, neox_tokenizer_path, tmp_path):
    g = geometry(stream)
    big, small = Window.from_ratio(g, 0.21), Window.from_ratio(g, 0.07)
    first = rewrite_window(stream, big, tmp_path / "r21", neox_tokenizer_path, "m2f", workers=1,
                           block_rows=64, progress=False)
    mtime = os.stat(str(first.stream) + ".bin").st_mtime_ns
    second = rewrite_window(stream, small, tmp_path / "r07", neox_tokenizer_path, "m2f", workers=1,
                            block_rows=64, progress=False, reuse=[tmp_path / "r21"])
    assert second.stream == first.stream
    assert second.first_row == small.start_row - big.start_row > 0
    assert os.stat(str(first.stream) + ".bin").st_mtime_ns == mtime
    assert not (tmp_path / "r07" / "rewritten.bin").exists()
    # the reused rows are exactly what a fresh pass over the small window writes
    fresh = rewrite_window(stream, small, tmp_path / "other" / "r07", neox_tokenizer_path, "m2f",
                           workers=1, block_rows=64, progress=False)
    reused_rows = IndexedStream(second.stream).rows(second.first_row, second.first_row + small.num_rows)
    assert np.array_equal(reused_rows, IndexedStream(fresh.stream).rows(0, small.num_rows))
    # a different config is not reused
    other = rewrite_window(stream, small, tmp_path / "r07f", neox_tokenizer_path, "f2m", workers=1,
                           block_rows=64, progress=False, reuse=[tmp_path / "r21"])
    assert other.stream != first.stream and other.first_row == 0


def test_reuse_clears_an_interrupted_pass_and_never_mixes_with_another(stream, neox_tokenizer_path, tmp_path):
    """A window whose own pass was killed, then served by a finished larger pass, keeps no partial
    rows; a folder that holds a finished pass of another configuration is refused, not overwritten."""
    g = geometry(stream)
    big, small = Window.from_ratio(g, 0.21), Window.from_ratio(g, 0.07)
    options = dict(workers=1, block_rows=64, progress=False)
    rewrite_window(stream, big, tmp_path / "r21", neox_tokenizer_path, "m2f", **options)
    interrupted = tmp_path / "r07" / ".partial"
    interrupted.mkdir(parents=True)
    (interrupted / "rewritten.bin").write_bytes(bytes(4096))
    (interrupted / "block-000000.json").write_text("{}")
    served = rewrite_window(stream, small, tmp_path / "r07", neox_tokenizer_path, "m2f", reuse=[tmp_path / "r21"],
                            **options)
    assert served.stream == tmp_path / "r21" / "rewritten" and not interrupted.exists()
    other = tmp_path / "f2m"
    rewrite_window(stream, small, other, neox_tokenizer_path, "f2m", **options)
    before = {path.name: path.read_bytes() for path in other.iterdir() if path.is_file()}
    with pytest.raises(UserError, match=f"{other}: holds a finished pass of a different configuration"):
        rewrite_window(stream, small, other, neox_tokenizer_path, "m2f", reuse=[tmp_path / "r21"], **options)
    assert {path.name: path.read_bytes() for path in other.iterdir() if path.is_file()} == before


def counts(audit: dict) -> dict:
    """Everything an audit counts: all but its snippets and the note on where it came from."""
    return {k: v for k, v in audit.items() if k not in ("sample", "derived_from")}


@pytest.mark.parametrize("direction,fraction", [("m2f", 1.0), ("swap", 0.5)])
def test_reused_window_audit_counts_only_the_window(stream, neox_tokenizer_path, tmp_path, direction, fraction):
    g, block_rows = geometry(stream), 20
    big = Window.from_ratio(g, 0.21)
    small = Window(g, big.start_step + 3, big.end_step - 2)  # both edges cut a block of the big pass
    assert (small.start_row - big.start_row) % block_rows and (small.end_row - big.start_row) % block_rows
    options = dict(direction=direction, fraction=fraction, seed=5, workers=1, progress=False)
    cache = tmp_path / "cache"
    first = rewrite_window(stream, big, cache / "big", neox_tokenizer_path, block_rows=block_rows, **options)
    reused = rewrite_window(stream, small, cache / "small", neox_tokenizer_path, block_rows=block_rows,
                            reuse=[cache / "big"], **options)
    served = load_result(cache / "small")  # read back from its record, as the cache serves it
    plain = lambda obj: json.loads(json.dumps(obj))  # noqa: E731
    assert (served.stream, served.first_row) == (reused.stream, reused.first_row)
    assert plain(served.audit) == plain(reused.audit) and plain(served.manifest) == plain(reused.manifest)
    assert reused.stream == first.stream and reused.first_row == small.start_row - big.start_row
    fresh = rewrite_window(stream, small, tmp_path / "elsewhere" / "small", neox_tokenizer_path, block_rows=32,
                           **options)
    assert fresh.stream != first.stream  # really a pass of its own
    assert counts(reused.audit) == counts(fresh.audit)
    assert reused.audit["rows"] == small.num_rows < first.audit["rows"]
    assert reused.audit["changed_tokens"] < first.audit["changed_tokens"]
    if fraction < 1:
        assert reused.audit["skips"]["row_not_selected"] > 0
    derived = reused.audit["derived_from"]
    assert derived["pass"] == str(cache / "big") and derived["pass_rows"] == [big.start_row, big.end_row]
    assert 0 < derived["rows_rewritten_again"] < small.num_rows  # only the edges were rewritten again
    assert derived["rows_from_block_audits"] + derived["rows_rewritten_again"] == small.num_rows
    assert reused.audit["sample"] and all(small.start_row <= s["row"] < small.end_row
                                          for s in reused.audit["sample"])
    # the reusing folder records its audit; verify checks both kinds of folder
    assert json.loads((cache / "small" / "audit.json").read_text()) == json.loads(json.dumps(reused.audit))
    assert verify_pass(cache / "big", progress=False) == []
    assert verify_pass(cache / "small", progress=False) == []
    wrong = {**reused.audit, "changed_tokens": reused.audit["changed_tokens"] + 1}
    (cache / "small" / "audit.json").write_text(json.dumps(wrong))
    assert any("positions differ" in p for p in verify_pass(cache / "small", progress=False))
    # a pass without its block journal (written before it was kept) is rewritten again in full
    (cache / "big" / "blocks.jsonl").unlink()
    again = rewrite_window(stream, small, cache / "small2", neox_tokenizer_path, block_rows=block_rows,
                           reuse=[cache / "big"], **options)
    assert again.stream == first.stream and counts(again.audit) == counts(fresh.audit)
    assert again.audit["derived_from"]["rows_rewritten_again"] == small.num_rows


@pytest.mark.parametrize("num_rows", [0, 1, 7, 23])
def test_write_index_matches_stream_writer(tmp_path, monkeypatch, num_rows):
    """The pass writes its index with mmidx.write_index: byte-identical to StreamWriter's, in pieces too."""
    monkeypatch.setattr(StreamWriter, "INDEX_PIECE_ROWS", 5)
    rows = np.arange(num_rows * 9, dtype=np.uint16).reshape(num_rows, 9)
    with StreamWriter(tmp_path / "written", np.uint16, row_length=9) as writer:
        writer.append_rows(rows)
    (tmp_path / "placed.bin").write_bytes(rows.tobytes())
    write_index(tmp_path / "placed", np.uint16, num_rows, 9)
    assert (tmp_path / "placed.idx").read_bytes() == (tmp_path / "written.idx").read_bytes()
    assert np.array_equal(IndexedStream(tmp_path / "placed").rows(0, num_rows).reshape(-1), rows.reshape(-1))


def test_fraction_selects_rows_reproducibly(stream, neox_tokenizer_path, tmp_path):
    window = Window.from_ratio(geometry(stream), 0.21)
    source = IndexedStream(stream).rows(window.start_row, window.end_row)
    half = rewrite_window(stream, window, tmp_path / "half", neox_tokenizer_path, "m2f", fraction=0.5,
                          seed=7, workers=1, block_rows=50, progress=False)
    again = rewrite_window(stream, window, tmp_path / "x" / "half", neox_tokenizer_path, "m2f",
                           fraction=0.5, seed=7, workers=2, block_rows=17, progress=False)
    rows_half = IndexedStream(half.stream).rows(0, window.num_rows)
    assert np.array_equal(rows_half, IndexedStream(again.stream).rows(0, window.num_rows))
    assert 0.35 < half.audit["rows_selected"] / window.num_rows < 0.65
    touched = (rows_half != source).any(axis=1)
    assert 0 < touched.sum() <= half.audit["rows_selected"]
    assert half.audit["skips"]["row_not_selected"] > 0
    assert verify_pass(tmp_path / "half", progress=False) == []
    none = rewrite_window(stream, window, tmp_path / "none", neox_tokenizer_path, "m2f", fraction=0.0,
                          workers=1, progress=False)
    assert np.array_equal(IndexedStream(none.stream).rows(0, window.num_rows), source)


def test_bad_input_is_refused_and_input_untouched(stream, neox_tokenizer_path, tmp_path):
    before = input_hashes(stream)
    window = Window.from_ratio(geometry(stream), 0.21)
    tok = neox_tokenizer_path
    with pytest.raises(UserError, match="direction"):
        rewrite_window(stream, window, tmp_path / "a", tok, "male", progress=False)
    with pytest.raises(UserError, match="fraction"):
        rewrite_window(stream, window, tmp_path / "a", tok, "m2f", fraction=1.5, progress=False)
    with pytest.raises(UserError, match="output is the input"):
        rewrite_window(stream, window, stream, tok, "m2f", progress=False)
    # a tokenizer whose vocabulary is smaller than the stream's ids
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    small = Tokenizer(models.BPE())
    small.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    small.train_from_iterator(["he said his name"] * 10, trainers.BpeTrainer(vocab_size=300))
    small.save(str(tmp_path / "small.json"))
    with pytest.raises(UserError, match="outside the vocabulary"):
        rewrite_window(stream, window, tmp_path / "b", tmp_path / "small.json", "m2f", progress=False)
    # an unfinished pass of another configuration in the output folder
    partial = tmp_path / "c" / ".partial"
    partial.mkdir(parents=True)
    (partial / "pass.json").write_text(json.dumps({"config": {"direction": "f2m"}, "rows": [0, 8]}))
    with pytest.raises(UserError, match="different configuration"):
        rewrite_window(stream, window, tmp_path / "c", tok, "m2f", progress=False)
    assert input_hashes(stream) == before
    run = subprocess.run([sys.executable, "-m", "debias.rewrite", "window", "--source", str(stream),
                          "--out", str(tmp_path / "d"), "--tokenizer", str(tok), "--direction", "m2f",
                          "--ratio", "0.21", "--fraction", "2", "--quiet"],
                         capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith("error: fraction=2.0")


def test_verify_fails_on_a_pronoun_the_audit_does_not_explain(stream, neox_tokenizer_path, tmp_path):
    window = Window.from_ratio(geometry(stream), 0.21)
    out_dir = tmp_path / "out"
    result = rewrite_window(stream, window, out_dir, neox_tokenizer_path, "m2f", workers=1, progress=False)
    tables = get_tables(str(neox_tokenizer_path), "m2f")
    she, he = (next(f for f in tables.forms if f.text == " he").targets[0][0],
               next(f for f in tables.forms if f.text == " he").source[0])
    data = np.fromfile(str(result.stream) + ".bin", dtype=np.uint16)
    where = np.flatnonzero(data == she)
    assert where.size
    data[where[0]] = he  # undo one rewrite behind the audit's back
    data.tofile(str(result.stream) + ".bin")
    problems = verify_pass(out_dir, progress=False)
    assert any("no skip reason accounts for" in p for p in problems)
    assert any("sha256" in p for p in problems)
    run = verify_cli(out_dir)
    assert run.returncode == 2 and run.stderr.startswith("error: verify failed: ")
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


@pytest.mark.slow
def test_killed_pass_resumes_to_identical_output(stream, neox_tokenizer_path, tmp_path):
    command = [sys.executable, "-m", "debias.rewrite", "window", "--source", str(stream),
               "--tokenizer", str(neox_tokenizer_path), "--direction", "swap", "--ratio", "0.21",
               "--batch-size", "8", "--row-length", str(SEQ_LEN + 1), "--checkpoint-interval", "10",
               "--total-steps", str(len(IndexedStream(stream)) // 8), "--block-rows", "2",
               "--workers", "1", "--quiet"]
    whole = subprocess.run(command + ["--out", str(tmp_path / "a" / "whole")], capture_output=True, text=True,
                           cwd=PROJECT, timeout=300)
    assert whole.returncode == 0, whole.stderr
    killed_dir = tmp_path / "b" / "killed"
    process = subprocess.Popen(command + ["--out", str(killed_dir)], cwd=PROJECT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and len(list((killed_dir / ".partial").glob("block-*.json"))) < 10:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    finished_before_kill = len(list((killed_dir / ".partial").glob("block-*.json")))
    assert finished_before_kill >= 10
    assert not (killed_dir / "manifest.json").exists()
    resumed = subprocess.run(command + ["--out", str(killed_dir)], capture_output=True, text=True,
                             cwd=PROJECT, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert sha256_file(killed_dir / "rewritten.bin") == sha256_file(tmp_path / "a" / "whole" / "rewritten.bin")
    assert sha256_file(killed_dir / "rewritten.idx") == sha256_file(tmp_path / "a" / "whole" / "rewritten.idx")
    assert json.loads((killed_dir / "audit.json").read_text()) == \
        json.loads((tmp_path / "a" / "whole" / "audit.json").read_text())
    assert not (killed_dir / ".partial").exists()


def verify_cli(out_dir, *flags) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "debias.rewrite", "verify", str(out_dir), "--quiet", *flags],
                          capture_output=True, text=True, cwd=PROJECT, timeout=300)


@pytest.fixture(scope="module")
def m2f_pass(stream, neox_tokenizer_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m2f") / "pass"
    rewrite_window(stream, Window.from_ratio(geometry(stream), 0.21), out, neox_tokenizer_path, "m2f",
                   workers=1, progress=False)
    return out


def damaged_copy(pass_dir: Path, tmp_path: Path, damage, reseal: bool = False) -> Path:
    """A copy of a pass whose rewritten.bin `damage(data)` changed; `reseal`: the manifest's sha256
    then matches the damaged bytes (a pass that wrote wrong ids itself, not one changed after)."""
    out = tmp_path / "damaged"
    shutil.copytree(pass_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["stream"] = str(out / "rewritten")
    data = np.fromfile(out / "rewritten.bin", dtype=np.uint16)
    damage(data)
    data.tofile(out / "rewritten.bin")
    if reseal:
        manifest["output_bin_sha256"] = sha256_file(out / "rewritten.bin")
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_verify_catches_a_flipped_byte(m2f_pass, tmp_path):
    def flip(data):
        # one XOR-ed byte: the high byte of a small id, now far outside the 50,277-token vocabulary
        data[np.flatnonzero(data < 0x100)[10]] ^= 0xFF00

    out = damaged_copy(m2f_pass, tmp_path, flip)
    problems = verify_pass(out, progress=False)
    assert any("sha256" in p for p in problems) and any("outside the vocabulary" in p for p in problems)
    run = verify_cli(out)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "rewritten.bin" in run.stderr and "Traceback" not in run.stderr
    resealed = damaged_copy(m2f_pass, tmp_path / "again", flip, reseal=True)
    assert [p for p in verify_pass(resealed, progress=False) if "outside the vocabulary" in p]


def test_verify_catches_a_target_replaced_by_another(m2f_pass, neox_tokenizer_path, tmp_path):
    tables = get_tables(str(neox_tokenizer_path), "m2f")
    she, her = (tables.tokenizer.token_to_id(t) for t in ("Ġshe", "Ġher"))

    def swap_one(data):
        data[np.flatnonzero(data == she)[0]] = her  # " he" -> " she" became " he" -> " her"

    resealed = damaged_copy(m2f_pass, tmp_path, swap_one, reseal=True)
    problems = verify_pass(resealed, progress=False)
    assert any("' she' became ' her'" in p or "' he' became ' her'" in p for p in problems), problems
    run = verify_cli(resealed)
    assert run.returncode == 2 and "not a m2f pronoun rewrite" in run.stderr


def test_verify_refuses_damaged_folders_in_one_line(m2f_pass, tmp_path):
    bad_manifest = tmp_path / "bad_manifest"
    shutil.copytree(m2f_pass, bad_manifest)
    (bad_manifest / "manifest.json").write_text("{not json")
    no_audit = tmp_path / "no_audit"
    shutil.copytree(m2f_pass, no_audit)
    (no_audit / "audit.json").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [((bad_manifest,), "manifest.json"), ((no_audit,), "audit.json"), ((empty,), "manifest.json"),
             ((m2f_pass, "--tagger", "banana"), "--tagger"), ((m2f_pass, "--json", "/nonexistent/x.json"), "--json")]
    for args, name in cases:
        run = verify_cli(*args)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], run.stderr


def test_verify_prints_independent_rates(m2f_pass, tmp_path):
    run = verify_cli(m2f_pass, "--tagger", "none", "--json", str(tmp_path / "check.json"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("verified: ") and "precision" in run.stdout and "residual" in run.stdout
    report = json.loads((tmp_path / "check.json").read_text())
    rows = json.loads((m2f_pass / "audit.json").read_text())["rows"]
    assert report["sample_rows"] == rows  # the default sample wants more changed words than this window has
    assert report["precision"] >= 0.99 and report["precision_ci95"][0] <= report["precision"]
    assert report["residual_rate"] < 0.02 and len(report["snippets"]) == 20
    small = check_pass(m2f_pass, sample_words=100, seed=3, tagger="none")
    assert 100 <= small["changed_words"] < report["changed_words"] and small["sample_rows"] < rows
    assert check_pass(m2f_pass, sample_words=100, seed=3, tagger="none") == small  # seeded: the same sample


def test_checker_sees_what_a_careless_rewriter_does(stream, neox_tokenizer_path, tmp_path):
    """Rows rewritten by a blind swap of every " He"/" his" token (surnames, helium and code too):
    the checker, which shares no code with the rewriter, counts those changes as suspicious."""
    tables = get_tables(str(neox_tokenizer_path), "m2f")
    ids = {t: tables.tokenizer.token_to_id(t) for t in ("ĠHe", "ĠShe", "He", "She", "Ġhis", "Ġher")}
    docs = ["Residual networks came from Kaiming He and colleagues; he said his idea was simple.",
            "The mixture was 20% He and 80% Ne, and he measured it himself.",
            "for x in range(3):\n    his = [x for x in data]\n    print(his)"]
    before = tmp_path / "before"
    pack_texts(docs * 40, neox_tokenizer_path, 31, before)
    source = IndexedStream(before)
    rows = source.rows(0, len(source))
    blind = rows.copy()
    for a, b in (("ĠHe", "ĠShe"), ("He", "She"), ("Ġhis", "Ġher")):
        blind[rows == ids[a]] = ids[b]
    with StreamWriter(tmp_path / "after", rows.dtype, row_length=rows.shape[1]) as writer:
        writer.append_rows(blind)
    report = check_streams(source, IndexedStream(tmp_path / "after"), (0, len(source)), 0, neox_tokenizer_path,
                           "m2f", tagger="none")
    whys = " ".join(s["why"] for s in report["suspicious"])
    assert report["precision"] < 0.9 and report["suspicious_count"] > 10
    assert "name" in whys and "chemistry" in whys and "code" in whys


def test_checker_selection_rule_matches_the_rewriter():
    """The checker re-implements the documented row selection; both must pick the same rows."""
    rows = np.arange(10_000, 30_000)
    for seed, fraction in ((1234, 0.5), (7, 0.1), (0, 1.0)):
        assert np.array_equal(selected(rows, seed, fraction), row_selected(rows, seed, fraction))


def test_checker_with_the_tagger(m2f_pass):
    if load_tagger() is None:
        pytest.skip("no spaCy English model installed")
    report = check_pass(m2f_pass, sample_words=300, tagger="spacy")
    assert report["checker"]["tagger"] and report["changed_words"] >= 300
    assert report["precision"] >= 0.97
