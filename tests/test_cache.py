"""debias.cache: built once under concurrency, served only when intact (damaged entries rebuilt with
a warning), sampled hashes for large files, dependencies between entries, resuming, the CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import debias.cache as cache_module
from debias.cache import Cache, collect_garbage, verify_entries
from debias.errors import UserError
from debias.io import default_file_mode

ROOT = Path(__file__).resolve().parents[1]


def builder(log: list, content: bytes = b"result"):
    """A build that records each call and writes two files."""
    def build(folder: Path) -> None:
        log.append(folder)
        (folder / "sub").mkdir(exist_ok=True)
        (folder / "sub" / "data.bin").write_bytes(content)
        (folder / "metrics.json").write_text(json.dumps({"value": 1}))
    return build


def flip_byte(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_entry_is_built_once_and_served_with_its_manifest(tmp_path):
    cache, log = Cache(tmp_path), []
    first = cache.get_or_build("thing", {"a": 1}, builder(log), label="a thing")
    again = cache.get_or_build("thing", {"a": 1}, builder(log))
    other = cache.get_or_build("thing", {"a": 2}, builder(log))
    assert first == again != other and len(log) == 2
    assert first.parent == tmp_path / "thing" and json.loads((first / "key.json").read_text()) == {"a": 1}
    manifest = json.loads((first / ".done").read_text())
    assert set(manifest["files"]) == {"key.json", "metrics.json", "sub/data.bin"} and manifest["label"] == "a thing"
    assert manifest["files"]["sub/data.bin"]["size"] == len(b"result")
    for path in first.rglob("*"):  # everything in an entry has the mode of any new file
        if path.is_file():
            assert path.stat().st_mode & 0o777 == default_file_mode(), path


def _build_in_process(args):
    root, log = args

    def build(folder: Path) -> None:
        with open(log, "a") as handle:  # one line per build actually run
            handle.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # long enough for the other jobs to arrive while this one builds
        (folder / "result.txt").write_text("built")

    folder = Cache(root).get_or_build("thing", {"a": 1}, build)
    return str(folder), (folder / "result.txt").read_text()


def test_jobs_racing_for_an_entry_build_it_once(tmp_path):
    log = tmp_path / "builds.log"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_build_in_process, [(str(tmp_path / "cache"), str(log))] * 3)
    assert len(log.read_text().splitlines()) == 1
    assert len({folder for folder, _ in results}) == 1 and all(text == "built" for _, text in results)


@pytest.mark.parametrize("damage", ["flipped byte", "deleted file", "truncated file", "edited key", "no manifest"])
def test_a_damaged_entry_is_rebuilt_with_a_warning_naming_it(tmp_path, capsys, damage):
    cache, log = Cache(tmp_path), []
    folder = cache.get_or_build("eval", {"a": 1}, builder(log))
    capsys.readouterr()
    if damage == "flipped byte":
        flip_byte(folder / "sub" / "data.bin", 3)
    elif damage == "deleted file":
        (folder / "metrics.json").unlink()
    elif damage == "truncated file":
        (folder / "metrics.json").write_text('{"val')
    elif damage == "edited key":
        (folder / "key.json").write_text(json.dumps({"a": 2}))
    else:
        (folder / ".done").write_text("{not json")
    again = cache.get_or_build("eval", {"a": 1}, builder(log))
    assert again == folder and len(log) == 2  # rebuilt in place, never served
    assert (folder / "sub" / "data.bin").read_bytes() == b"result" and json.loads((folder / "metrics.json").read_text())
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: cache entry {folder} ") and "rebuilding" in warnings[0]
    assert cache.entry("eval", {"a": 1}).verify() == []


def test_large_files_are_checked_by_size_and_a_sampled_hash_and_whole_on_demand(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "FULL_HASH_LIMIT", 1000)
    monkeypatch.setattr(cache_module, "SAMPLE_CHUNKS", 4)
    monkeypatch.setattr(cache_module, "SAMPLE_BYTES", 100)
    cache, log = Cache(tmp_path), []
    folder = cache.get_or_build("train", {"a": 1}, builder(log, bytes(range(256)) * 40))  # 10,240 bytes
    entry = cache.entry("train", {"a": 1})
    record = json.loads((folder / ".done").read_text())["files"]["sub/data.bin"]
    assert "sampled_sha256" in record and "sha256" in record
    data = folder / "sub" / "data.bin"
    flip_byte(data, 5000)  # between the sampled chunks (0, 3380, 6760, 10140): only a full hash sees it
    assert entry.verify() == [] and any("sha256 differs" in p for p in entry.verify(full=True))
    assert verify_entries(cache, full=True) and not verify_entries(cache, full=False)
    flip_byte(data, 5000)
    flip_byte(data, 10)  # inside the first sampled chunk
    assert any("sampled sha256 differs" in p for p in entry.verify())
    data.write_bytes(data.read_bytes()[:-1])
    assert any("10239 bytes" in p for p in entry.verify())


def test_an_entry_that_refers_to_another_is_rebuilt_when_that_one_changes(tmp_path, capsys):
    cache, log = Cache(tmp_path), []
    base = cache.get_or_build("rewrite", {"rows": [0, 100]}, builder(log, b"pass"))
    base_entry = cache.entry("rewrite", {"rows": [0, 100]})

    def reuse(folder: Path):
        log.append(folder)
        (folder / "reused.json").write_text(json.dumps({"from": str(base)}))
        return [base_entry]

    small = cache.get_or_build("rewrite", {"rows": [50, 100]}, reuse)
    assert cache.get_or_build("rewrite", {"rows": [50, 100]}, reuse) == small and len(log) == 2
    flip_byte(base / "sub" / "data.bin")  # the pass it serves from is damaged
    assert any("uses rewrite/" in p for p in cache.entry("rewrite", {"rows": [50, 100]}).verify())
    cache.get_or_build("rewrite", {"rows": [0, 100]}, builder(log, b"other pass"))  # rebuilt, other bytes
    cache.get_or_build("rewrite", {"rows": [50, 100]}, reuse)
    assert len(log) == 4 and "was rebuilt" in capsys.readouterr().err


def test_find_returns_intact_finished_entries_whose_key_matches(tmp_path, capsys):
    cache, log = Cache(tmp_path), []
    for rows in ([0, 100], [50, 100], [0, 30]):
        cache.get_or_build("rewrite", {"rows": rows}, builder(log))
    (tmp_path / "rewrite" / "unfinished").mkdir()  # a killed build: no key, no manifest
    covers = lambda key: key["rows"][0] <= 60 and key["rows"][1] >= 100  # noqa: E731
    assert sorted(e.key()["rows"][0] for e in cache.find("rewrite", covers)) == [0, 50]
    flip_byte(cache.entry("rewrite", {"rows": [0, 100]}).folder / "sub" / "data.bin")
    assert [e.key()["rows"] for e in cache.find("rewrite", covers)] == [[50, 100]]
    assert "is damaged" in capsys.readouterr().err


def test_a_killed_build_resumes_in_its_folder_unless_fresh(tmp_path):
    cache = Cache(tmp_path)
    seen = []

    def killed(folder: Path) -> None:
        (folder / "part-1").write_text("done before the kill")
        raise KeyboardInterrupt

    def resuming(folder: Path) -> None:
        seen.append(sorted(p.name for p in folder.iterdir()))
        (folder / "part-2").write_text("the rest")

    for fresh, expected in ((False, ["key.json", "part-1"]), (True, ["key.json"])):
        key = {"fresh": fresh}
        with pytest.raises(KeyboardInterrupt):
            cache.get_or_build("train", key, killed)
        assert not cache.entry("train", key).done
        cache.get_or_build("train", key, resuming, fresh=fresh)
        assert seen[-1] == expected and cache.entry("train", key).done


def test_a_cache_that_cannot_be_written_is_refused_in_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"cache_dir=.*: cannot write there") as err:
        Cache(tmp_path / "file" / "cache")
    assert "\n" not in str(err.value)


def test_model_files_get_the_same_permissions_as_everything_else(tmp_path):
    """safetensors writes model.safetensors 0600; a shared cache needs it readable like the rest."""
    from debias.model import GPTNeoX, GPTNeoXConfig

    model = GPTNeoX(GPTNeoXConfig(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32))
    folder = model.save_pretrained(tmp_path / "model")
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert set(modes.values()) == {default_file_mode()}, modes


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "debias.cache", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_command_line_lists_verifies_and_collects_garbage(tmp_path):
    cache, log = Cache(tmp_path), []
    kept = cache.get_or_build("eval", {"a": 1}, builder(log), label="evaluate baseline")
    damaged = cache.get_or_build("eval", {"a": 2}, builder(log))
    partial = tmp_path / "train" / ("0" * 20)
    partial.mkdir(parents=True)
    listing = run_cli("--cache-dir", str(tmp_path), "ls")
    assert listing.returncode == 0 and "evaluate baseline" in listing.stdout and "partial" in listing.stdout
    assert run_cli("--cache-dir", str(tmp_path), "verify").returncode == 0
    flip_byte(damaged / "metrics.json")
    checked = run_cli("--cache-dir", str(tmp_path), "verify", "--full")
    assert checked.returncode == 1 and f"damaged: {damaged}" in checked.stdout and "1 of 2" in checked.stdout
    assert sorted(collect_garbage(cache, None, dry_run=True)) == sorted([f"{damaged}: damaged",
                                                                        f"{partial}: unfinished (its partial state goes too)"])
    assert damaged.exists()
    cleaned = run_cli("--cache-dir", str(tmp_path), "gc")
    assert cleaned.returncode == 0 and not damaged.exists() and not partial.exists() and kept.exists()
    assert "2 entries removed" in cleaned.stdout
    missing = run_cli("--cache-dir", str(tmp_path / "nowhere"), "ls")
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
