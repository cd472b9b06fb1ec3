"""Where a checkpoint comes from: a local Hugging Face folder, or a hub repository at a revision.

Pythia's checkpoint after step N is revision `stepN` of `EleutherAI/pythia-<size>[-deduped]`.
Downloads go through huggingface_hub and its cache, so a folder fetched once (or ahead of time
with `hf download`) is found again offline (HF_HUB_OFFLINE=1).

Two ways in:
- `resolve_checkpoint(source, step)`: the pipeline's starting checkpoint (a folder that may
  contain `{step}`, or a hub repository at `step<N>`);
- `parse_model_ref(text)` / `resolve_model_refs(refs)`: the named models of pipelines/evaluate.py,
  each a local folder or `OWNER/NAME@REVISION`; every revision missing offline is named in one
  error line with the command that downloads it. `folder_identity` says what a folder *is* (its
  files' hashes, or the hub commit), so an evaluation is cached by content, not by path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

from debias.errors import UserError

HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_REVISION = re.compile(r"^[\w.-]+(/[\w.-]+)*$")  # a branch, tag or commit (branches may hold '/')
PYTHIA_REPO = re.compile(r"^EleutherAI/pythia-")  # the suite and its intervention models
METADATA_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
# One weight format only: safetensors when the revision has it, else the legacy .bin files.
WEIGHT_PATTERNS = (["model*.safetensors", "model.safetensors.index.json"], ["pytorch_model*.bin", "pytorch_model.bin.index.json"])
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def pythia_checkpoint_steps() -> list[int]:
    """The 154 published Pythia checkpoints: 0, 1, 2, 4, ..., 512, then every 1000 to 143000."""
    return [0] + [2**i for i in range(10)] + list(range(1000, 143_001, 1000))


def hub_revision(step: int | None) -> str:
    return "main" if step is None else f"step{step}"


# ---- the pipeline's starting checkpoint ----------------------------------------------------------

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
    revision = HubRevision(repo, hub_revision(step))
    try:
        return fetch_revision(revision, cache_dir)
    except HubUnavailable as missing:
        raise UserError(
            f"{repo} revision {revision.revision}: not in the Hugging Face cache and the hub is unreachable or "
            f"offline ({missing.reason}); download it ahead of time with `{revision.download_command}` "
            f"(or `huggingface-cli download ...`), then run with HF_HUB_OFFLINE=1, or set model.checkpoint to a "
            "local folder") from None


# ---- hub revisions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class HubRevision:
    """`repo` at `revision` (a branch, tag or commit; Pythia's checkpoints are `step<N>`)."""

    repo: str
    revision: str

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision}"

    @property
    def download_command(self) -> str:
        return f"hf download {self.repo} --revision {self.revision}"


class HubUnavailable(Exception):
    """A revision that is not in the Hugging Face cache while the hub cannot be reached."""

    def __init__(self, revision: HubRevision, reason: str):
        super().__init__(f"{revision}: {reason}")
        self.revision, self.reason = revision, reason


def check_published_step(revision: HubRevision) -> None:
    """Pythia publishes steps 0, 1, 2, 4, ..., 512 and every 1000: anything else is refused before a download."""
    match = re.fullmatch(r"step(\d+)", revision.revision)
    if PYTHIA_REPO.match(revision.repo) and match and int(match.group(1)) not in pythia_checkpoint_steps():
        raise UserError(
            f"{revision.repo}: step {int(match.group(1))} is not a published checkpoint; Pythia has steps 0, 1, 2, 4, "
            "..., 512 and every 1000 up to 143000"
        )


def fetch_revision(revision: HubRevision, cache_dir: str | Path | None = None) -> Path:
    """The snapshot folder of `revision` (config, tokenizer and one weight format) from the Hugging
    Face cache, downloading what is missing; HubUnavailable when it is not cached and the hub is
    unreachable or HF_HUB_OFFLINE=1."""
    from huggingface_hub import snapshot_download

    check_published_step(revision)
    try:
        for weights in WEIGHT_PATTERNS:
            folder = Path(snapshot_download(revision.repo, revision=revision.revision, cache_dir=cache_dir,
                                            allow_patterns=METADATA_FILES + weights))
            if any((folder / name).is_file() for name in WEIGHT_FILES):
                return folder
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise HubUnavailable(revision, type(err).__name__) from None
    except HfHubHTTPError as err:
        raise UserError(f"{revision}: the hub refused ({str(err).splitlines()[0]}); check the repository and "
                        f"revision, or download it with `{revision.download_command}`") from None
    except OSError as err:  # connection errors and full disks
        raise UserError(f"{revision}: download failed ({err}); download it with `{revision.download_command}`") from None
    raise UserError(f"{revision}: holds no model weights (no safetensors or pytorch_model.bin), or the cached copy "
                    f"is incomplete; fetch it again with `{revision.download_command}`")


def cached_revision(revision: HubRevision, cache_dir: str | Path | None = None) -> Optional[Path]:
    """The snapshot folder when the revision's config.json is in the Hugging Face cache, else None.
    Reads the cache only: nothing is downloaded."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(revision.repo, "config.json", revision=revision.revision, cache_dir=cache_dir)
    return Path(found).parent if isinstance(found, str) else None


def snapshot_commit(folder: Path) -> Optional[str]:
    """The commit a Hugging Face cache snapshot folder (`.../snapshots/<commit>`) holds, else None."""
    if folder.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", folder.name):
        return folder.name
    return None


# ---- named model references (pipelines/evaluate.py) ----------------------------------------------

def parse_model_ref(text: str, setting: str) -> Path | HubRevision:
    """A local folder (when it exists) or `OWNER/NAME@REVISION` (`OWNER/NAME` alone: revision main).
    `setting` names where the reference was given, for the error line."""
    text = str(text).strip()
    example = "EleutherAI/pythia-70m-deduped@step143000"
    if not text:
        raise UserError(f"{setting}: empty; give a local Hugging Face model folder or a hub name such as {example}")
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if "@" in text:
        repo, _, revision = text.partition("@")
        if not HUB_REPO.match(repo) or not HUB_REVISION.match(revision):
            raise UserError(f"{setting}={text}: not a hub revision and no such folder; write OWNER/NAME@REVISION, "
                            f"e.g. {example}")
        return HubRevision(repo, revision)
    if HUB_REPO.match(text) and not text.startswith((".", "/", "~")):
        return HubRevision(text, "main")
    raise UserError(f"{setting}={text}: no such folder; give a local Hugging Face model folder (config.json, "
                    f"model.safetensors, tokenizer.json) or a hub name such as {example}")


@dataclass(frozen=True)
class ResolvedRef:
    """A model reference resolved to a local folder."""

    folder: Path
    hub: Optional[HubRevision] = None  # the hub revision it came from
    commit: Optional[str] = None       # the commit the revision resolved to (hub snapshots)


def resolve_model_refs(refs: Sequence[tuple[str, str]], cache_dir: str | Path | None = None) -> list[ResolvedRef]:
    """(setting, reference) pairs -> local folders, in order. Hub revisions come from the Hugging
    Face cache (downloaded when the hub is reachable); when some are missing and the hub is not,
    one error line names each with the command that downloads it."""
    parsed = [(setting, parse_model_ref(text, setting)) for setting, text in refs]  # every typo before any download
    resolved: list[Optional[ResolvedRef]] = []
    missing: list[HubRevision] = []
    for setting, ref in parsed:
        if isinstance(ref, Path):
            check_model_folder(ref, setting)
            resolved.append(ResolvedRef(ref))
            continue
        try:
            folder = fetch_revision(ref, cache_dir)
        except HubUnavailable:
            missing.append(ref)
            resolved.append(None)
            continue
        check_model_folder(folder, setting)
        resolved.append(ResolvedRef(folder, ref, snapshot_commit(folder)))
    if missing:
        raise UserError(missing_revisions_line(missing))
    return [r for r in resolved if r is not None]


def missing_revisions_line(missing: Sequence[HubRevision]) -> str:
    unique = list(dict.fromkeys(missing))
    commands = "; ".join(r.download_command for r in unique)
    then = "then copy that Hugging Face cache (HF_HOME) here and run again"
    if len(unique) == 1:
        return (f"{unique[0]}: not in the Hugging Face cache and the hub is unreachable; download it where there "
                f"is network: {commands} ({then})")
    return (f"{len(unique)} model revisions are not in the Hugging Face cache and the hub is unreachable "
            f"({', '.join(map(str, unique))}); download them where there is network: {commands} ({then})")


def check_model_folder(folder: Path, setting: str) -> None:
    """config.json and weights present, or one line saying what the folder lacks."""
    if not (folder / "config.json").is_file():
        raise UserError(f"{setting}: {folder} holds no config.json, so it is not a Hugging Face model folder; pass "
                        "the folder save_pretrained wrote (config.json, model.safetensors, tokenizer.json)")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise UserError(f"{setting}: {folder} holds no weights ({', '.join(WEIGHT_FILES)}); pass a complete "
                        "Hugging Face model folder")


def model_files(folder: Path) -> list[Path]:
    """The files a model's evaluation reads: config.json and its weights (the layout the loader uses)."""
    from debias.model.hf_folder import WEIGHT_LAYOUTS, shard_files

    for name, is_index in WEIGHT_LAYOUTS:
        if (folder / name).is_file():
            weights = [folder / name, *shard_files(folder / name)] if is_index else [folder / name]
            return [folder / "config.json", *weights]
    return [folder / "config.json"]


def file_identity(path: Path) -> dict:
    """Size and sha256 (files up to 1 GiB), else size and a sampled sha256, read through symlinks
    (a Hugging Face cache snapshot is made of them)."""
    from debias.cache import FULL_HASH_LIMIT, sampled_sha256
    from debias.io import sha256_file

    size = path.stat().st_size
    if size <= FULL_HASH_LIMIT:
        return {"size": size, "sha256": sha256_file(path)}
    return {"size": size, "sampled_sha256": sampled_sha256(path, size)}


def folder_identity(resolved: ResolvedRef, tokenizer: Path) -> dict:
    """What a model is, for keying its evaluation: a hub revision's repository, revision and commit
    (a commit fixes every file), else the hashes of its config, weights and tokenizer."""
    tokenizer_id = file_identity(tokenizer)
    if resolved.hub is not None and resolved.commit is not None:
        own_tokenizer = tokenizer.resolve() == (resolved.folder / "tokenizer.json").resolve()
        return {"hub": resolved.hub.repo, "revision": resolved.hub.revision, "commit": resolved.commit,
                "tokenizer": "the revision's own" if own_tokenizer else tokenizer_id}
    return {"files": {path.name: file_identity(path) for path in model_files(resolved.folder)}, "tokenizer": tokenizer_id}


def trained_gelu(folder: Path, hub: Optional[HubRevision]) -> tuple[str, str]:
    """(gelu, why) a model should be evaluated with when no setting says: tanh for Pythia (trained
    with tanh GELU although its config.json says exact "gelu"), else what config.json says."""
    if hub is not None and PYTHIA_REPO.match(hub.repo):
        return "tanh", f"Pythia ({hub.repo}) trained with tanh GELU; its config.json says exact"
    if any(part.startswith("models--EleutherAI--pythia-") for part in folder.resolve().parts + folder.parts):
        return "tanh", "a Pythia snapshot from the Hugging Face cache: Pythia trained with tanh GELU"
    from debias.model.architecture import HF_ACTIVATIONS

    try:
        act = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("hidden_act", "gelu")
    except (OSError, ValueError) as err:
        raise UserError(f"{folder / 'config.json'}: not readable JSON ({err})") from None
    if act not in HF_ACTIVATIONS:
        raise UserError(f"{folder / 'config.json'}: hidden_act {act!r} is not supported; expected one of "
                        f"{sorted(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[act], f"the folder's config.json (hidden_act={act})"
