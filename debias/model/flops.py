"""Parameter and FLOP accounting for GPT-NeoX, for model-FLOPs utilisation (MFU).

Pythia's published "non-embedding" counts leave out both the input embedding and the output
unembedding matrix (e.g. 18,915,328 for the 70M model); `parameter_counts` does the same.
FLOPs per trained token follow Kaplan et al. / PaLM: 6 per matmul weight (2 forward, 4 backward)
plus the attention scores and weighted sum, 12 * layers * width * sequence (a causal kernel
skips about half of those, which MFU by convention does not credit).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from debias.errors import UserError
from debias.model.architecture import GPTNeoXConfig

# Dense bf16 peak of common accelerators, FLOP/s (vendor data sheets, without sparsity).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12}


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    embedding: int  # input embedding rows x width
    unembedding: int  # output projection (untied), width x rows
    non_embedding: int  # everything else: what Pythia's model names and tables count


def parameter_counts(config: GPTNeoXConfig) -> ParameterCounts:
    d, ffn = config.hidden_size, config.intermediate_size
    attention = (d * 3 * d + 3 * d) + (d * d + d)  # fused QKV, output dense (with biases)
    mlp = (d * ffn + ffn) + (ffn * d + d)
    norms = 2 * 2 * d  # two LayerNorms, weight and bias
    non_embedding = config.num_layers * (attention + mlp + norms) + 2 * d  # + final LayerNorm
    embedding = unembedding = config.vocab_size * d
    return ParameterCounts(non_embedding + embedding + unembedding, embedding, unembedding, non_embedding)


def flops_per_token(config: GPTNeoXConfig, sequence_length: int) -> float:
    """Training FLOPs (forward + backward) per token at this sequence length. The input
    embedding is a lookup, not a matmul, so it adds nothing; the unembedding does."""
    counts = parameter_counts(config)
    matmul_weights = counts.non_embedding + counts.unembedding
    attention = 12 * config.num_layers * config.hidden_size * sequence_length
    return 6 * matmul_weights + attention


def mfu(tokens_per_second: float, config: GPTNeoXConfig, sequence_length: int, peak_flops: float) -> float:
    """Share of the device's peak that the model's FLOPs use."""
    return tokens_per_second * flops_per_token(config, sequence_length) / peak_flops


def peak_bf16_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s for a device name such as torch.cuda.get_device_name(); None if unknown."""
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in device_name), None)


def config_from_preset(path: str | Path) -> GPTNeoXConfig:
    """The GPTNeoXConfig of a conf/model preset YAML (its `architecture:` block)."""
    from omegaconf import OmegaConf  # Hydra's config library, already a dependency

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model preset not found")
    preset = OmegaConf.load(path)
    for base in preset.get("defaults", []):  # a -deduped twin extends its base preset (same folder)
        if base != "_self_":
            preset = OmegaConf.merge(OmegaConf.load(path.parent / f"{base}.yaml"), preset)
    # keys a preset leaves out take debias.config.ArchitectureConfig's defaults, which are GPTNeoXConfig's
    preset = OmegaConf.to_container(preset, resolve=True)
    if not isinstance(preset, dict) or not isinstance(preset.get("architecture"), dict):
        raise UserError(f"{path}: no 'architecture:' block; see conf/model/pythia-70m-deduped.yaml")
    return GPTNeoXConfig.from_dict(preset["architecture"])


def preset_accounting(path: str | Path, sequence_length: int = 2048) -> dict:
    """Parameter counts and training FLOPs per token straight from a preset YAML."""
    config = config_from_preset(path)
    counts = parameter_counts(config)
    return {
        "preset": Path(path).stem,
        "total_params": counts.total,
        "non_embedding_params": counts.non_embedding,
        "flops_per_token": flops_per_token(config, sequence_length),
        "sequence_length": sequence_length,
    }
