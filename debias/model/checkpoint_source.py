"""Where a checkpoint comes from: a local Hugging Face folder, or a hub repository at a revision.

Pythia's checkpoint after step N is revision `stepN` of `EleutherAI/pythia-<size>[-deduped]`. Downloads go through huggingface_hub and its cache, so a folder fetched once (or
ahead of time with `hf download`) is found again offline (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

from debias.errors import UserError

HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
METADATA_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
# One weight format only: safetensors when the revision has it, else the legacy .bin files.
WEIGHT_PATTERNS = (["model*.safetensors", "model.safetensors.index.json"], ["pytorch_model*.bin", "pytorch_model.bin.index.json"])
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def pythia_checkpoint_steps() -> list[int]:
    """The 154 published Pythia checkpoints: 0, 1, 2, 4, ..., 512, then every 1000 to 143000."""
    return [0] + [2**i for i in range(10)] + list(range(1000, 143_001, 1000))


def hub_revision(step: int | None) -> str:
    return "main" if step is None else f"step{step}"


def resolve_checkpoint(source: str | Path, step: int | None = None, cache_dir: str | Path | None = None) -> Path:
    """A local folder holding the checkpoint after `step`.

    source: a local folder (its name may contain `{step}`), or a hub repository `owner/name`,
        fetched at revision `step<N>` (`main` when step is None).
    """
    text = str(source)
    if "{step}" in text:
        if step is None:
            raise UserError(f"checkpoint {text!r}: contains {{step}} but no step was given")
        text = text.replace("{step}", str(step))
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if HUB_REPO.match(text) and not text.startswith((".", "/", "~")):
        return download_checkpoint(text, step, cache_dir)
    raise UserError(
        f"{text}: no such folder; give a local Hugging Face model folder or a hub repository such as "
        "EleutherAI/pythia-70m-deduped"
    )


def download_checkpoint(repo: str, step: int | None, cache_dir: str | Path | None = None) -> Path:
    revision = hub_revision(step)
    if repo.startswith("EleutherAI/pythia-") and step is not None and step not in pythia_checkpoint_steps():
        raise UserError(
            f"{repo}: step {step} is not a published checkpoint; Pythia has steps 0, 1, 2, 4, ..., 512 "
            "and every 1000 up to 143000"
        )
    ahead_of_time = (
        f"download it ahead of time with `hf download {repo} --revision {revision}` "
        f"(or `huggingface-cli download ...`), then run with HF_HUB_OFFLINE=1, or set model.checkpoint to a local folder"
    )
    try:
        for weights in WEIGHT_PATTERNS:
            folder = Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir, allow_patterns=METADATA_FILES + weights))
            if any((folder / name).is_file() for name in WEIGHT_FILES):
                return folder
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise UserError(f"{repo} revision {revision}: not in the Hugging Face cache and the hub is unreachable or offline ({type(err).__name__}); {ahead_of_time}") from None
    except HfHubHTTPError as err:
        raise UserError(f"{repo} revision {revision}: the hub refused ({str(err).splitlines()[0]}); check the repository and revision, or {ahead_of_time}") from None
    except OSError as err:  # connection errors and full disks
        raise UserError(f"{repo} revision {revision}: download failed ({err}); {ahead_of_time}") from None
    raise UserError(f"{repo} revision {revision}: holds no model weights (no safetensors or pytorch_model.bin)")
