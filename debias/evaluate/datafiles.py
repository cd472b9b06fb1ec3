"""Benchmark data files: reading with one-line errors, and checksums against pinned values.

A file whose checksum differs from the pinned one is still evaluated (users may hold a corrected
copy); the report records both values and a warning so that numbers are never compared across
different data unknowingly.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from debias.errors import UserError
from debias.io import sha256_file

# sha256 of the original releases (../shared/data/README.md), keyed by file name.
PINNED_SHA256 = {
    "crows_pairs_anonymized.csv": "dfb36986ce0502abbaf7055b9176da3d08d48e07df1251991b5dfbcbceab9d0c",
    "lambada_test.jsonl": "4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226",
    "anti_stereotyped_type1.txt.dev": "a4e0ebae344e78b56f657a42e8ae684b9db7747d177c5e7149c0907ebb7f3bf6",
    "anti_stereotyped_type1.txt.test": "331db5bd74bfefebf146a60b67645152a4a1991570d2a56f57154103ac361dd2",
    "anti_stereotyped_type2.txt.dev": "763ad829ad724f9a85ead689ba8ca69072020cb1238def6210f0fc6a47b97e59",
    "anti_stereotyped_type2.txt.test": "336571ac1ea8c06cd2aba8e5dd2bd98e00acc0c48da3e4ec5ec7e54eb2633a8f",
    "pro_stereotyped_type1.txt.dev": "dd55a0d220fe4c0ceb63dd4648223fb4fe1a58d5ad95c116a002ad24b0e292a5",
    "pro_stereotyped_type1.txt.test": "db7838907238a758eeb5779e48f38c013b892910d6fe864456c59f04245c6689",
    "pro_stereotyped_type2.txt.dev": "8f0250de723cea9328e3eaf7169e07936f01aa5909ce7aa580db66eb803f4e86",
    "pro_stereotyped_type2.txt.test": "ea1c1fd94fa612e3cc44d7fa3cc4cb76021bb63fdf94f9826f430051e9052438",
}


class ChecksumWarning(UserWarning):
    """A data file differs from the pinned release."""


def read_text(path: str | Path, what: str) -> str:
    """The text of a data file, or a one-line UserError naming it (missing, unreadable, empty)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found (check the path in the eval config or flag)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read {what} file ({err}); expected UTF-8 text") from err
    if not text.strip():
        raise UserError(f"{path}: {what} file is empty; re-download it")
    return text


def checksum(path: str | Path, check_pinned: bool = True) -> dict:
    """`{path, sha256, pinned_sha256, matches_pinned}`; warns (never fails) on a mismatch.

    The pinned value is looked up by file name; `check_pinned=False` skips that for files that
    reuse the real names without being the real data (the demo suite's probes).
    """
    path = Path(path)
    digest = sha256_file(path)
    pinned = PINNED_SHA256.get(path.name) if check_pinned else None
    record = {"path": str(path), "sha256": digest, "pinned_sha256": pinned,
              "matches_pinned": None if pinned is None else digest == pinned}
    if pinned is not None and digest != pinned:
        warnings.warn(f"{path}: sha256 {digest[:12]}… differs from the pinned release {pinned[:12]}…; "
                      "evaluating it anyway and recording both (scores are not comparable with "
                      "published ones)", ChecksumWarning, stacklevel=2)
    return record


# A hub data set name: "owner/name" (e.g. uclanlp/wino_bias, nyu-mll/crows_pairs).
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def local_or_hub(source: str | Path, what: str, local_suffixes: tuple[str, ...] = ()) -> Path | str:
    """An existing local path, or a hub data set name; a one-line UserError for a local path that
    does not exist.

    Only an "owner/name" string whose first part is not a local folder counts as a hub name, so a
    mistyped relative path ("data/winobia", "winobias", "./x") fails at once, naming the path,
    instead of becoming a hub lookup that retries for half a minute.
    """
    path = Path(source)
    if path.exists():
        return path
    text = str(source)
    looks_local = (not _HUB_NAME.fullmatch(text) or Path(text.split("/")[0]).exists()
                   or path.suffix in local_suffixes)
    if looks_local:
        raise UserError(f"{source}: {what} not found (relative paths start from {Path.cwd()}); "
                        "check the path, or give a hub data set as owner/name")
    return text
