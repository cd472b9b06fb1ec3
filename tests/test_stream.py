"""debias.stream: MMIDIDX round trips (one .bin and byte shards), byte compatibility, geometry."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from debias.errors import UserError
from debias.stream import DTYPE_CODES, Geometry, IndexedStream, StreamWriter, Window, dtype_for_vocab

# The Megatron / GPT-NeoX dtype table, written out here rather than imported: the test checks it.
MEGATRON_CODES = {1: "u1", 2: "i1", 3: "<i2", 4: "<i4", 5: "<i8", 6: "<f4", 7: "<f8", 8: "<u2"}


def random_rows(rng, dtype, shape):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def write_stream(prefix, rows, dtype, blocks=(3, 10, 1)):
    """Write `rows` in uneven blocks, as a streaming producer would."""
    with StreamWriter(prefix, dtype) as writer:
        start = 0
        for size in blocks:
            writer.append_rows(rows[start:start + size])
            start += size
        writer.append_rows(rows[start:])
    return IndexedStream(prefix)


def cut_into_shards(prefix, folder, cuts, stem="document"):
    """Split prefix.bin at byte offsets `cuts` into Hugging Face style shards next to a copied .idx."""
    data = open(f"{prefix}.bin", "rb").read()
    edges = [0, *cuts, len(data)]
    last = len(edges) - 2
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(last + 1):
        (folder / f"{stem}-{k:05d}-of-{last:05d}.bin").write_bytes(data[edges[k]:edges[k + 1]])
    (folder / f"{stem}.idx").write_bytes(open(f"{prefix}.idx", "rb").read())
    return folder / stem


# ---------------------------------------------------------------------------------------------
# Round trips

def test_dtype_table_matches_megatron():
    assert {code: dtype.str for code, dtype in DTYPE_CODES.items()} == {
        code: np.dtype(s).str for code, s in MEGATRON_CODES.items()}


@pytest.mark.parametrize("code", sorted(MEGATRON_CODES))
def test_round_trip_every_dtype(tmp_path, code):
    dtype = np.dtype(MEGATRON_CODES[code])
    rows = random_rows(np.random.default_rng(code), dtype, (37, 11))
    stream = write_stream(tmp_path / "s", rows, dtype)
    assert len(stream) == 37 and stream.dtype == dtype and stream.row_length == 11
    assert stream.sizes.dtype == np.int32
    np.testing.assert_array_equal(stream.rows(0, 37), rows)
    np.testing.assert_array_equal(stream.rows(5, 9), rows[5:9])
    for i in (0, 13, 36):
        np.testing.assert_array_equal(stream.row(i), rows[i])
    assert open(tmp_path / "s.idx", "rb").read()[17] == code  # dtype byte after magic + version


def test_ragged_rows_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    rows = [rng.integers(0, 50000, size=n).astype(np.uint16) for n in (5, 1, 9, 9, 0, 3)]
    with StreamWriter(tmp_path / "r", np.uint16) as writer:
        for row in rows:
            writer.append(row)
    stream = IndexedStream(tmp_path / "r")
    assert stream.row_length is None
    assert stream.sizes.tolist() == [len(r) for r in rows]
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(stream.row(i), row)
    np.testing.assert_array_equal(stream.rows(2, 4), np.stack(rows[2:4]))  # equal lengths: fine
    with pytest.raises(UserError, match="different lengths"):
        stream.rows(0, 3)


def test_identity_names_files_sizes_and_checksum(tmp_path):
    import hashlib

    rows = random_rows(np.random.default_rng(2), np.uint16, (8, 5))
    stream = write_stream(tmp_path / "s", rows, np.uint16, blocks=())
    identity = stream.identity()
    idx_bytes = (tmp_path / "s.idx").read_bytes()
    assert identity["index_sha256"] == hashlib.sha256(idx_bytes).hexdigest()
    assert identity["index_bytes"] == len(idx_bytes)
    assert identity["data"] == [{"path": str(tmp_path / "s.bin"), "bytes": 8 * 5 * 2}]
    assert identity["rows"] == 8 and identity["row_length"] == 5 and identity["dtype"] == "uint16"


@pytest.mark.parametrize("seed", range(4))
def test_shards_cut_at_arbitrary_byte_offsets(tmp_path, seed):
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, np.uint16, (50, 7))
    write_stream(tmp_path / "s", rows, np.uint16)
    total = rows.nbytes
    # Random cuts, mid-row and mid-token included, plus a cut at an exact row boundary and an empty shard.
    cuts = sorted({*rng.integers(1, total, size=rng.integers(1, 12)).tolist(), 14 * 7 * 2, 3})
    cuts.append(cuts[-1])  # an empty shard between two equal cuts
    prefix = cut_into_shards(tmp_path / "s", tmp_path / f"shards{seed}", cuts)
    for path in (prefix, f"{prefix}.idx", prefix.parent / "document-00000-of-{:05d}.bin".format(len(cuts))):
        stream = IndexedStream(path)
        assert len(stream.data_paths) == len(cuts) + 1
        np.testing.assert_array_equal(stream.rows(0, 50), rows)
        for i in range(50):
            np.testing.assert_array_equal(stream.row(i), rows[i])
        blocks = list(stream.iter_blocks(3, 47, block_rows=6))
        np.testing.assert_array_equal(np.concatenate(blocks), rows[3:47])


def test_shard_layout_reports_rows_starting_in_each_file(tmp_path):
    rows = random_rows(np.random.default_rng(3), np.uint16, (10, 4))  # 8 bytes per row
    write_stream(tmp_path / "s", rows, np.uint16)
    stream = IndexedStream(cut_into_shards(tmp_path / "s", tmp_path / "sh", [20, 44]))
    layout = stream.shard_layout()
    assert [f["bytes"] for f in layout] == [20, 24, 36]
    assert [f["rows_starting"] for f in layout] == [[0, 3], [3, 6], [6, 10]]


# ---------------------------------------------------------------------------------------------
# Byte compatibility with Megatron / GPT-NeoX MMapIndexedDataset

def megatron_index_bytes(sizes, code, itemsize, doc_idx):
    """The `.idx` Megatron's `_Writer.write(sizes, doc_idx)` produces, built with struct alone."""
    out = b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", code)
    out += struct.pack("<Q", len(sizes)) + struct.pack("<Q", len(doc_idx))
    out += b"".join(struct.pack("<i", s) for s in sizes)
    address = 0
    for size in sizes:
        out += struct.pack("<q", address)
        address += size * itemsize
    return out + b"".join(struct.pack("<q", d) for d in doc_idx)


@pytest.mark.parametrize("dtype, piece_rows", [("<u2", 1 << 20), ("<i4", 3), ("<i8", 1)])
def test_index_bytes_match_megatron(tmp_path, monkeypatch, dtype, piece_rows):
    monkeypatch.setattr(StreamWriter, "INDEX_PIECE_ROWS", piece_rows)  # the index is written in pieces
    rng = np.random.default_rng(4)
    rows = random_rows(rng, dtype, (6, 9))
    ragged = [random_rows(rng, dtype, (n,)) for n in (2, 7)]
    with StreamWriter(tmp_path / "m", dtype) as writer:
        writer.append_rows(rows[:4])
        writer.append(ragged[0])
        writer.append_rows(rows[4:])
        writer.append(ragged[1])
    sizes = [9] * 4 + [2] + [9] * 2 + [7]
    code = {v: k for k, v in MEGATRON_CODES.items()}[dtype]
    # Megatron's builder: doc_idx starts at [0] and end_document() appends len(sizes) per document.
    expected = megatron_index_bytes(sizes, code, np.dtype(dtype).itemsize, list(range(len(sizes) + 1)))
    assert (tmp_path / "m.idx").read_bytes() == expected
    data = b"".join(r.astype(dtype).tobytes() for r in [*rows[:4], ragged[0], *rows[4:], ragged[1]])
    assert (tmp_path / "m.bin").read_bytes() == data


def test_reads_an_index_written_independently(tmp_path):
    """Multi-row documents and a gap between rows on disk: nothing the writer itself produces."""
    rows = np.arange(4 * 6, dtype="<u2").reshape(4, 6)
    gap = b"\xff" * 10
    data = rows[0].tobytes() + rows[1].tobytes() + gap + rows[2].tobytes() + rows[3].tobytes()
    pointers = [0, 12, 34, 46]
    index = b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 4, 3) + struct.pack("<4i", *[6] * 4)
    index += struct.pack("<4q", *pointers) + struct.pack("<3q", 0, 1, 4)
    (tmp_path / "x.idx").write_bytes(index)
    (tmp_path / "x.bin").write_bytes(data)
    stream = IndexedStream(tmp_path / "x")
    assert stream.num_documents == 2 and stream.document_index.tolist() == [0, 1, 4]
    np.testing.assert_array_equal(stream.rows(0, 4), rows)  # the gap forces the row-by-row path


def test_dtype_for_vocab_follows_megatron():
    assert dtype_for_vocab(50277) == np.uint16
    assert dtype_for_vocab(65499) == np.uint16
    assert dtype_for_vocab(65500) == np.int32


# ---------------------------------------------------------------------------------------------
# Writer: atomic, refuses bad rows

def test_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with StreamWriter(tmp_path / "w", np.uint16) as writer:
            writer.append_rows(np.zeros((4, 3), np.uint16))
            raise RuntimeError("producer failed")
    assert list(tmp_path.iterdir()) == []


def test_writer_keeps_the_old_stream_until_success(tmp_path):
    write_stream(tmp_path / "w", np.ones((2, 3), np.uint16), np.uint16, blocks=())
    with pytest.raises(RuntimeError):
        with StreamWriter(tmp_path / "w", np.uint16) as writer:
            writer.append_rows(np.zeros((4, 3), np.uint16))
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin", "w.idx"]
    np.testing.assert_array_equal(IndexedStream(tmp_path / "w").rows(0, 2), np.ones((2, 3)))


@pytest.mark.parametrize("bad", [
    lambda w: w.append_rows(np.zeros((2, 4), np.uint16)),    # wrong row length
    lambda w: w.append(np.zeros(5, np.uint16)),              # wrong row length, single row
    lambda w: w.append_rows(np.zeros(3, np.uint16)),         # not 2-D
    lambda w: w.append_rows(np.full((1, 3), 70000)),         # does not fit uint16
    lambda w: w.append_rows(np.full((1, 3), -1)),            # does not fit uint16
])
def test_writer_refuses_bad_rows_and_writes_nothing(tmp_path, bad):
    with pytest.raises(UserError) as err:
        with StreamWriter(tmp_path / "w", np.uint16, row_length=3) as writer:
            writer.append_rows(np.zeros((2, 3), np.uint16))
            bad(writer)
    assert "\n" not in str(err.value) and str(tmp_path / "w") in str(err.value)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Geometry and windows

@pytest.mark.parametrize("ratio, start, steps, rows", [
    (0.07, 133000, 10000, 10_240_000),
    (0.21, 113000, 30000, 30_720_000),
])
def test_pythia_windows(ratio, start, steps, rows):
    window = Window.from_ratio(Geometry(), ratio)
    assert (window.start_step, window.end_step, window.num_steps) == (start, 143000, steps)
    assert window.num_rows == rows and window.start_row == start * 1024
    assert window.end_row == 143000 * 1024
    assert window.num_tokens == rows * 2049
    assert window.num_bytes(np.uint16) == rows * 2049 * 2


def nearest_grid_start(total, interval, ratio):
    """Brute force: the checkpoint closest to the exact start (total - ratio * total), ties earlier."""
    exact = total * (1 - ratio)
    grid = range(0, total + 1, interval)
    return min(grid, key=lambda s: (abs(s - exact), s))


@pytest.mark.parametrize("geometry", [
    Geometry(),
    Geometry(batch_size=8, row_length=129, total_steps=400, checkpoint_interval=20),  # demo-sized
    Geometry(batch_size=4, row_length=65, total_steps=143, checkpoint_interval=10),   # end off-grid
])
def test_window_rule_holds_for_any_geometry(geometry):
    for ratio in np.linspace(0.01, 0.99, 99):
        expected = nearest_grid_start(geometry.total_steps, geometry.checkpoint_interval, ratio)
        if expected >= geometry.total_steps:
            with pytest.raises(UserError, match="rounds to no steps"):
                Window.from_ratio(geometry, float(ratio))
            continue
        window = Window.from_ratio(geometry, float(ratio))
        assert window.start_step == expected and window.end_step == geometry.total_steps
        assert window.start_row == expected * geometry.batch_size
        assert window.num_rows == (geometry.total_steps - expected) * geometry.batch_size
        assert window.num_tokens == window.num_rows * geometry.row_length


@pytest.mark.parametrize("ratio, start, steps", [(0.07, 930, 70), (0.21, 790, 210)])
def test_demo_config_windows(ratio, start, steps):
    """conf/data/demo.yaml: 16 rows of 129 tokens, 1000 steps, checkpoints every 10."""
    window = Window.from_ratio(Geometry(batch_size=16, row_length=129, total_steps=1000, checkpoint_interval=10), ratio)
    assert (window.start_step, window.num_steps) == (start, steps)
    assert (window.start_row, window.num_rows, window.num_tokens) == (start * 16, steps * 16, steps * 16 * 129)


def test_demo_geometry_window_by_hand():
    demo = Geometry(batch_size=8, row_length=129, total_steps=400, checkpoint_interval=20)
    window = Window.from_ratio(demo, 0.07)  # 400 - 28 = 372 -> nearest multiple of 20 is 380
    assert (window.start_step, window.num_steps, window.start_row, window.num_rows) == (380, 20, 3040, 160)
    explicit = Window.from_start_step(demo, 373)
    assert (explicit.start_step, explicit.num_steps, explicit.num_rows) == (373, 27, 216)


def test_steps_and_rows():
    g = Geometry()
    assert g.step_rows(0) == range(0, 1024)
    assert g.first_row(133000) == 136_192_000
    assert g.step_of_row(136_192_000) == 133000 and g.step_of_row(136_192_000 - 1) == 132999
    assert g.steps_in(1024 * 5 + 7) == 5


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5, math.nan, "0.07", True, None])
def test_ratio_outside_open_interval(ratio):
    with pytest.raises(UserError, match="between 0 and 1"):
        Window.from_ratio(Geometry(), ratio)


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("row_length", -1), ("total_steps", 1.5),
                                          ("checkpoint_interval", None)])
def test_geometry_rejects_non_positive_integers(field, value):
    with pytest.raises(UserError, match=f"geometry.{field}"):
        Geometry(**{field: value})


def test_window_start_step_out_of_range():
    with pytest.raises(UserError, match="start < end"):
        Window.from_start_step(Geometry(), 143000)
    with pytest.raises(UserError, match="start < end"):
        Window.from_start_step(Geometry(), -1)


def test_check_fits(tmp_path):
    small = Geometry(batch_size=4, row_length=6, total_steps=10, checkpoint_interval=2)
    stream = write_stream(tmp_path / "s", np.zeros((30, 6), np.uint16), np.uint16, blocks=())
    Window.from_start_step(small, 2, end_step=7).check_fits(stream)  # rows 8..28 of 30: fits
    with pytest.raises(UserError) as err:
        Window.from_ratio(small, 0.3).check_fits(stream)  # steps 7..10 need rows up to 40
    message = str(err.value)
    assert "40" in message and "30" in message and str(tmp_path / "s.idx") in message
    with pytest.raises(UserError, match="rows of 6 tokens, but the geometry needs rows of 9"):
        Window.from_start_step(Geometry(4, 9, 10, 2), 0, 1).check_fits(stream)
    with StreamWriter(tmp_path / "ragged", np.uint16) as writer:
        writer.append(np.zeros(6, np.uint16))
        writer.append(np.zeros(5, np.uint16))
    with pytest.raises(UserError, match="rows of different lengths"):
        Window.from_start_step(small, 0, 1).check_fits(IndexedStream(tmp_path / "ragged"))


def test_heldout_rows_prefer_rows_after_the_window():
    g = Geometry(batch_size=4, row_length=6, total_steps=10, checkpoint_interval=2)
    window = Window.from_start_step(g, 6)  # rows 24..40
    assert window.heldout_rows(8, stream_rows=50) == (range(40, 48), "after")
    assert window.heldout_rows(8, stream_rows=40) == (range(16, 24), "before")
    with pytest.raises(UserError, match="heldout_rows=30"):
        window.heldout_rows(30, stream_rows=40)
