"""Checkpoint sources: local folders (with {step}), the Hugging Face cache, and offline failures."""

from __future__ import annotations

import os
import subprocess
import sys

import huggingface_hub
import pytest

from debias.errors import UserError
from debias.model.checkpoint_source import pythia_checkpoint_steps, resolve_checkpoint


def test_local_folder_with_step(tmp_path):
    (tmp_path / "step133000").mkdir()
    assert resolve_checkpoint(tmp_path / "step{step}", step=133000) == tmp_path / "step133000"
    assert resolve_checkpoint(str(tmp_path)) == tmp_path
    with pytest.raises(UserError, match="contains {step} but no step was given"):
        resolve_checkpoint(tmp_path / "step{step}")
    with pytest.raises(UserError, match="no such folder"):
        resolve_checkpoint(tmp_path / "step{step}", step=1000)


def test_offline_without_cache_fails_with_instructions(tmp_path):
    code = (
        "from debias.model.checkpoint_source import resolve_checkpoint\n"
        f"resolve_checkpoint('EleutherAI/pythia-70m-deduped', step=133000, cache_dir={str(tmp_path)!r})\n"
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("debias.errors.UserError: EleutherAI/pythia-70m-deduped revision step133000:")
    assert "hf download EleutherAI/pythia-70m-deduped --revision step133000" in last_line
    assert "HF_HUB_OFFLINE=1" in last_line


def test_offline_finds_a_cached_revision(tmp_path, monkeypatch):
    """A snapshot in huggingface_hub's own cache layout (refs/<revision> -> snapshots/<commit>)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = tmp_path / "models--EleutherAI--pythia-70m-deduped"
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "step133000").write_text(commit)
    snapshot = repo_cache / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert resolve_checkpoint("EleutherAI/pythia-70m-deduped", step=133000, cache_dir=tmp_path) == snapshot


def test_unpublished_pythia_step_is_refused_before_any_download(tmp_path):
    assert len(pythia_checkpoint_steps()) == 154
    with pytest.raises(UserError, match="step 133500 is not a published checkpoint"):
        resolve_checkpoint("EleutherAI/pythia-410m-deduped", step=133500, cache_dir=tmp_path)
