"""Shared test fixtures. Real data lives beside the project in ../shared/data (never copied in);
tests that need it skip with a message when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from debias.config import shared_data_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(shared_data_path())  # $DEBIAS_SHARED_DATA, else shared/data beside the checkout


def shared_path(relative: str) -> Path:
    """Path to a file in ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not found: real data lives in ../shared/data (set DEBIAS_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def neox_tokenizer_path() -> Path:
    """The real GPT-NeoX-20B tokenizer.json used by every Pythia model."""
    return shared_path("tokenizers/gpt-neox-20b/tokenizer.json")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not found: real data lives in ../shared/data")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread():
    """Two shared cores: one intra-op thread is ~10x faster for tiny models than two contending."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
