"""One content-addressed cache for every expensive result: the demo suite, rewrite passes, trained
arms, evaluations.

    cache = Cache(cache_dir)
    folder = cache.get_or_build("eval", key, build)    # build(folder) writes the result into folder

An entry is `<cache_dir>/<kind>/<digest>/`, where digest is the sha256 of `key`: a JSON-able
description of exactly what determines the result (never progress bars, log intervals or thread
counts, so changing those reuses the entry). The folder holds what `build` wrote, `key.json`, and,
written last and atomically, `.done`: the manifest of every file's size and sha256 (plus a sampled
hash of files over FULL_HASH_LIMIT) and of the entries this one refers to.

- One builder at a time: `<kind>/<digest>.lock` is held while an entry is built or checked, so
  parallel sweep jobs wait for the one that builds and then use its result.
- Nothing damaged is served: before an entry is returned its files are checked against the
  manifest (sizes always; sha256 of files up to FULL_HASH_LIMIT; a sampled hash of larger ones,
  whose full hash `python -m debias.cache verify --full` checks). A damaged entry is removed and
  rebuilt with a one-line warning naming it.
- A killed build leaves its folder without `.done`; the next `get_or_build` calls `build` on the
  same folder again, and the stage resumes from its own partial state (the rewriter's block
  records, the trainer's checkpoints), which it checks itself.
- `find(kind, where)` queries finished entries by key: the rewriter's larger pass that covers a
  smaller window is found this way.

`python -m debias.cache ls | verify [--full] | gc [--unused-days N] [--dry-run]` lists, checks and
cleans a cache. Anyone who can write the cache folder can change what runs read from it: share it
only with people you trust (README "Shared caches").
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from filelock import FileLock, Timeout

from debias.errors import ArgumentParser, UserError, exit_on_user_error
from debias.io import remove_path, sha256_file, sha256_json, utc_now, write_json_atomic

ENV_VAR, DEFAULT_DIR = "DEBIAS_CACHE_DIR", ".cache/debias"
KEY_FILE, MANIFEST = "key.json", ".done"
DIGEST_LENGTH = 20  # hex digits of the key's sha256 naming an entry (80 bits)
FULL_HASH_LIMIT = 1 << 30  # files up to 1 GiB are hashed whole each time their entry is served
SAMPLE_CHUNKS, SAMPLE_BYTES = 64, 1 << 16  # a larger file: 64 chunks of 64 KiB spread over it


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def sampled_sha256(path: str | os.PathLike, size: int | None = None) -> str:
    """sha256 of the size and SAMPLE_CHUNKS chunks at evenly spaced offsets, first and last included:
    catches a truncated or replaced multi-GB file in milliseconds (not a flipped byte between chunks)."""
    size = os.path.getsize(path) if size is None else size
    digest = hashlib.sha256(str(size).encode())
    last = max(size - SAMPLE_BYTES, 0)
    offsets = sorted({last * i // (SAMPLE_CHUNKS - 1) for i in range(SAMPLE_CHUNKS)})
    with open(path, "rb") as handle:
        for offset in offsets:
            handle.seek(offset)
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def file_records(folder: Path, skip: Iterable[str] = (), whole: bool = True) -> dict:
    """{relative path: size, sha256 (files up to FULL_HASH_LIMIT, or every file when `whole`) and a
    sampled sha256 (larger files)} of every regular file under `folder`, but `skip`."""
    records = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if not path.is_file() or path.is_symlink() or name in skip:
            continue
        size = path.stat().st_size
        records[name] = {"size": size}
        if whole or size <= FULL_HASH_LIMIT:
            records[name]["sha256"] = sha256_file(path)
        if size > FULL_HASH_LIMIT:
            records[name]["sampled_sha256"] = sampled_sha256(path, size)
    return records


def check_files(folder: Path, records: Mapping, full: bool = False) -> list[str]:
    """What differs between the files under `folder` and their `records` ([] when all match)."""
    problems = []
    for name, record in sorted(records.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != record["size"]:
            problems.append(f"{name}: {size} bytes, the manifest says {record['size']}")
        elif "sha256" in record and (full or "sampled_sha256" not in record):
            if sha256_file(path) != record["sha256"]:
                problems.append(f"{name}: sha256 differs from the manifest")
        elif sampled_sha256(path, size) != record["sampled_sha256"]:
            problems.append(f"{name}: sampled sha256 differs from the manifest")
    return problems


@dataclass(frozen=True)
class Entry:
    """One cache entry (it may not exist yet)."""

    root: Path
    kind: str
    digest: str

    @property
    def folder(self) -> Path:
        return self.root / self.kind / self.digest

    @property
    def lock_path(self) -> Path:
        return self.root / self.kind / f"{self.digest}.lock"

    @property
    def done(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def key(self) -> Any:
        """The stored key, or None when missing or unreadable."""
        try:
            return json.loads((self.folder / KEY_FILE).read_text())
        except (OSError, ValueError):
            return None

    def manifest(self) -> dict | None:
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None

    def files_sha256(self) -> str | None:
        """A digest of the manifest's file records: what a dependent entry pins."""
        manifest = self.manifest()
        return sha256_json(manifest["files"]) if manifest else None

    def verify(self, full: bool = False) -> list[str]:
        """Problems of a finished entry ([] when it is intact)."""
        manifest = self.manifest()
        if manifest is None:
            return [f"{MANIFEST}: missing or unreadable"]
        key = self.key()
        if key is None or sha256_json(key)[:DIGEST_LENGTH] != self.digest:
            return [f"{KEY_FILE}: missing or not the key this entry is named after"]
        problems = check_files(self.folder, manifest["files"], full)
        for used in manifest.get("uses", []):
            other = Entry(self.root, used["kind"], used["digest"])
            if other.files_sha256() != used["files_sha256"]:
                problems.append(f"uses {used['kind']}/{used['digest']}, which is gone or was rebuilt")
            else:
                problems += [f"uses {used['kind']}/{used['digest']}: {p}" for p in other.verify(full)]
        return problems

    def finish(self, uses: Iterable["Entry"] = (), label: str = "") -> None:
        """Record the manifest of everything in the folder; from now on the entry is served."""
        files = file_records(self.folder, skip={MANIFEST})
        uses = [{"kind": e.kind, "digest": e.digest, "files_sha256": e.files_sha256()} for e in uses]
        write_json_atomic(self.folder / MANIFEST, {"kind": self.kind, "label": label, "files": files, "uses": uses,
                                                   "finished_utc": utc_now()})

    def mark_used(self) -> None:
        """The `.done` file's mtime records the last use (gc --unused-days reads it)."""
        try:
            os.utime(self.folder / MANIFEST)
        except OSError:  # a shared cache entry of another user: not ours to touch
            pass

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file() and not p.is_symlink())


class Cache:
    """The cache under `root` (created if missing; refused with one line if not writable)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root, prefix=".write-test-"):  # a name of its own per call
                pass
        except OSError as err:
            raise UserError(f"cache_dir={root}: cannot write there ({err.strerror or err}); set cache_dir "
                            f"(or {ENV_VAR}) to a folder you can write") from None

    @classmethod
    def default_root(cls) -> Path:
        return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)

    def entry(self, kind: str, key: Any) -> Entry:
        return Entry(self.root, kind, sha256_json(key)[:DIGEST_LENGTH])

    def lock(self, kind: str, name: str) -> FileLock:
        """A lock shared by every job working on `name` (e.g. one rewrite configuration)."""
        (self.root / kind).mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / kind / f"{name}.lock"))

    def get_or_build(self, kind: str, key: Any, build: Callable[[Path], Iterable[Entry] | None], *,
                     label: str = "", fresh: bool = False) -> Path:
        """The folder of the intact finished entry for `key`, built by `build(folder)` if needed.

        `build` writes the result into the folder it is given; it may return the entries whose
        files the result refers to (they are checked whenever this one is served). A folder left by
        a killed build is handed to `build` again to resume, or emptied first when `fresh`.
        """
        entry = self.entry(kind, key)
        entry.folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(entry.lock_path)):
            if entry.done:
                problems = entry.verify()
                if not problems:
                    entry.mark_used()
                    return entry.folder
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                warn(f"cache entry {entry.folder} ({label or kind}) is damaged: {problems[0]}{more}; rebuilding it")
                remove_path(entry.folder)
            elif entry.folder.exists() and (fresh or entry.key() not in (None, json.loads(json.dumps(key, default=str)))):
                remove_path(entry.folder)
            entry.folder.mkdir(exist_ok=True)
            write_json_atomic(entry.folder / KEY_FILE, key)
            uses = build(entry.folder) or ()
            entry.finish(uses, label)
        return entry.folder

    def find(self, kind: str, where: Callable[[Any], bool]) -> list[Entry]:
        """Finished, intact entries of `kind` whose key satisfies `where` (damaged ones are skipped
        with a warning; the next get_or_build of their key rebuilds them)."""
        found = []
        for entry in self.entries(kind):
            if not entry.done or not where(entry.key()):
                continue
            with FileLock(str(entry.lock_path)):
                problems = entry.verify()
            if problems:
                warn(f"cache entry {entry.folder} is damaged ({problems[0]}); not used")
            else:
                found.append(entry)
        return found

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else sorted(p.name for p in self.root.iterdir() if p.is_dir())
        return [Entry(self.root, k, p.name) for k in kinds if (self.root / k).is_dir()
                for p in sorted((self.root / k).iterdir()) if p.is_dir()]


# ---- python -m debias.cache ---------------------------------------------------------------------

def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def list_entries(cache: Cache) -> list[str]:
    lines = []
    for entry in cache.entries():
        manifest = entry.manifest() if entry.done else None
        state = "done" if manifest else "partial"
        used = (time.time() - (entry.folder / MANIFEST).stat().st_mtime) / 86400 if manifest else None
        age = f"used {used:.0f} d ago" if used is not None else "unfinished"
        label = (manifest or {}).get("label", "")
        lines.append(f"{entry.kind}/{entry.digest}  {state:<7} {_human(entry.size()):>9}  {age:<16} {label}")
    return lines


def verify_entries(cache: Cache, full: bool) -> list[str]:
    """One line per finished entry that is damaged."""
    damaged = []
    for entry in cache.entries():
        if entry.done:
            with FileLock(str(entry.lock_path)):
                problems = entry.verify(full)
            if problems:
                damaged.append(f"{entry.folder}: {'; '.join(problems)}")
    return damaged


def collect_garbage(cache: Cache, unused_days: float | None, dry_run: bool) -> list[str]:
    """Remove unfinished entries nobody is building, damaged entries (fast check), entries unused
    for `unused_days`, and lock files without an entry. Returns what was (or would be) removed."""
    removed = []
    for entry in cache.entries():
        lock = FileLock(str(entry.lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:  # being built or read right now
            continue
        try:
            reason = None
            if not entry.done:
                reason = "unfinished (its partial state goes too)"
            elif entry.verify():
                reason = "damaged"
            elif unused_days is not None and time.time() - (entry.folder / MANIFEST).stat().st_mtime > unused_days * 86400:
                reason = f"unused for more than {unused_days:g} days"
            if reason:
                removed.append(f"{entry.folder}: {reason}")
                if not dry_run:
                    remove_path(entry.folder)
        finally:
            lock.release()
    for kind in (p for p in cache.root.iterdir() if p.is_dir()):
        for lock_file in kind.glob("*.lock"):
            if not (kind / lock_file.stem).exists() and len(lock_file.stem) == DIGEST_LENGTH:
                if not dry_run:
                    lock_file.unlink(missing_ok=True)
    return removed


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m debias.cache", description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"the cache (default: ${ENV_VAR} or {DEFAULT_DIR})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ls", help="list entries: kind/digest, state, size, last use, what it holds")
    verify = commands.add_parser("verify", help="check every finished entry against its manifest (exit 1 if damaged)")
    verify.add_argument("--full", action="store_true", help="hash every file whole, multi-GB ones too")
    gc = commands.add_parser("gc", help="remove unfinished, damaged and (with --unused-days) old entries")
    gc.add_argument("--unused-days", type=float, default=None, help="also remove entries not used for N days")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    args = parser.parse_args(argv)
    root = args.cache_dir or Cache.default_root()
    if not root.is_dir():
        raise UserError(f"{root}: no cache there; pass --cache-dir DIR (or set {ENV_VAR})")
    cache = Cache(root)
    if args.command == "ls":
        print("\n".join(list_entries(cache)) or f"{root}: empty")
    elif args.command == "verify":
        damaged = verify_entries(cache, args.full)
        for line in damaged:
            print(f"damaged: {line}")
        done = sum(e.done for e in cache.entries())
        print(f"{done - len(damaged)} of {done} finished entries intact ({'full' if args.full else 'fast'} check)")
        if damaged:
            sys.exit(1)
    else:
        removed = collect_garbage(cache, args.unused_days, args.dry_run)
        for line in removed:
            print(("would remove " if args.dry_run else "removed ") + line)
        print(f"{len(removed)} entries {'to remove' if args.dry_run else 'removed'}")


if __name__ == "__main__":
    main()
