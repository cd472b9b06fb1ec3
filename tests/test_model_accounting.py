"""Parameter counts from conf/model against Pythia's published figures, and FLOP accounting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from debias.errors import UserError
from debias.model import GPTNeoX
from debias.model.flops import config_from_preset, flops_per_token, mfu, parameter_counts, peak_bf16_flops, preset_accounting

PRESETS = Path(__file__).resolve().parents[1] / "conf" / "model"

# Non-embedding parameters as Pythia publishes them (Biderman et al. 2023, Table 1).
PUBLISHED_NON_EMBEDDING = {
    "70m": 18_915_328,
    "160m": 85_056_000,
    "410m": 302_311_424,
    "1b": 805_736_448,
    "1.4b": 1_208_602_624,
    "2.8b": 2_517_652_480,
    "6.9b": 6_444_163_072,
    "12b": 11_327_027_200,
}


@pytest.mark.parametrize("size", PUBLISHED_NON_EMBEDDING)
@pytest.mark.parametrize("suffix", ["-deduped", ""])
def test_presets_match_published_non_embedding_counts(size, suffix):
    preset = PRESETS / f"pythia-{size}{suffix}.yaml"
    assert preset_accounting(preset)["non_embedding_params"] == PUBLISHED_NON_EMBEDDING[size]


def test_counts_agree_with_the_module():
    config = config_from_preset(PRESETS / "pythia-70m-deduped.yaml")
    with torch.device("meta"):
        model = GPTNeoX(config)
    counts = parameter_counts(config)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.embedding == model.embed_in.weight.numel() and counts.unembedding == model.embed_out.weight.numel()


def test_flops_per_token_and_mfu():
    config = config_from_preset(PRESETS / "pythia-410m-deduped.yaml")
    counts = parameter_counts(config)
    per_token = flops_per_token(config, 2048)
    assert per_token == 6 * (counts.non_embedding + counts.unembedding) + 12 * 24 * 1024 * 2048
    assert flops_per_token(config, 4096) > per_token  # attention grows with the sequence
    assert mfu(1e5, config, 2048, 989e12) == pytest.approx(1e5 * per_token / 989e12)
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("Some CPU") is None


def test_bad_presets(tmp_path):
    with pytest.raises(UserError, match="model preset not found"):
        config_from_preset(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("name: x\narchitecture:\n  hidden_size: 64\n  num_heads: 4\n  n_layer: 2\n")
    with pytest.raises(UserError, match=r"unknown keys \['n_layer'\]"):
        config_from_preset(tmp_path / "bad.yaml")
