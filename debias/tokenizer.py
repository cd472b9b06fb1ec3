"""The one way every part reads a tokenizer: a Hugging Face `tokenizer.json`, or a folder holding
one (a model folder). Errors name the file and the fix in one line."""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer

from debias.errors import UserError


def tokenizer_path(path: str | os.PathLike) -> Path:
    """`path` itself, or `path/tokenizer.json` for a folder; a UserError when there is no such file."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{path}: tokenizer file not found; pass a tokenizer.json or a folder holding one "
                        "(Pythia: ../shared/data/tokenizers/gpt-neox-20b/tokenizer.json)")
    return path


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    path = tokenizer_path(path)
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust side raises a plain Exception with a parse message
        raise UserError(f"{path}: not a Hugging Face tokenizer.json ({err}); pass the model's tokenizer.json") from None
