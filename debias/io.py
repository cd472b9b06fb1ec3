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
from pathlib import Path
from typing import Any, Iterator


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
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
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
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(f"{label}: cannot write in {existing} ({err.strerror or err}); choose a writable folder") from None


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
