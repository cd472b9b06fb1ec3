"""Small file helpers shared by every stage: atomic outputs and checksums.

Nothing half-written is ever left behind: outputs are written under a temporary name in the
same folder and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A temporary name beside `path` (same file system, so the final rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write a file or a folder to; rename it to `path` on success.

    On an exception the temporary output is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    remove_path(tmp, ignore_errors=True)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        remove_path(tmp, ignore_errors=True)


def remove_path(path: Path, ignore_errors: bool = False) -> None:
    """Remove a file, a link (not what it points to) or a folder with everything in it, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_writable(folder: str | os.PathLike, label: str | None = None) -> None:
    """A one-line UserError, starting with `label` (default: the folder), unless files can be created
    in `folder` (or, while it does not exist, in the nearest folder above it that does). Called
    before long work, so that an output path that cannot be written fails first, not after hours;
    creates nothing."""
    from debias.errors import UserError

    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    label = label or str(folder)
    if not existing.is_dir():
        where = "" if existing == folder else f"{existing} "
        raise UserError(f"{label}: {where}is a file, not a folder; choose another output path")
    _try_writing_in(existing, label)


def _try_writing_in(folder: Path, label: str) -> None:
    """Create and drop a file in `folder` (os.access answers yes to root where the write then fails)."""
    from debias.errors import UserError

    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(f"{label}: cannot write in {folder} ({err.strerror or err}); choose a writable folder") from None


def check_writable_file(path: str | os.PathLike, label: str) -> None:
    """A one-line UserError, starting with `label` (e.g. "--out report.json"), unless a file can be
    written at `path`: not a folder, in a folder that exists and takes new files. Creates nothing."""
    from debias.errors import UserError

    target = Path(path)
    if target.is_dir():
        raise UserError(f"{label}: is a folder; give a file name inside it, e.g. {target / 'out.json'}")
    folder = target.absolute().parent
    if not folder.is_dir():
        raise UserError(f"{label}: folder {folder} does not exist; create it first")
    _try_writing_in(folder, label)


def jsonl_strings(lines: Iterable[str], path: str | os.PathLike, field: str, fix: str) -> Iterator[tuple[int, str]]:
    """(line number, the string in `field`) for every non-blank line of a JSONL file; a one-line
    UserError naming the file, the line and `fix` for a line that is not an object holding a string
    there. The one reader of JSONL text (training documents, held-out text, LAMBADA)."""
    from debias.errors import UserError

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number}: not a JSON object; {fix}") from None
        if not isinstance(record, dict) or field not in record:
            raise UserError(f"{path}:{number}: no {field!r} field; {fix}")
        text = record[field]
        if not isinstance(text, str):
            raise UserError(f"{path}:{number}: {field!r} is {type(text).__name__}, not a string; {fix}")
        yield number, text


def utc_now() -> str:
    """The time now, as the reports and cache manifests record it (ISO 8601, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def default_file_mode() -> int:
    """The mode `open()` gives a new file under the process umask (0644 under the usual 022)."""
    try:  # Linux reports the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def with_default_mode(path: str | os.PathLike) -> Path:
    """Give a file the mode of any other new file. Some writers create private files (safetensors
    writes through a 0600 temporary file and renames it), which on a shared cache would make one
    model unreadable to the group that can read everything around it."""
    os.chmod(path, default_file_mode())
    return Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    """Hashed straight from the file's pages: a buffered read would copy every byte first, which
    shows on streams of tens of GB."""
    digest = hashlib.sha256()
    if os.path.getsize(path):
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as pages:
            digest.update(pages)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """A stable content hash of a JSON-able object (used as a cache key)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
