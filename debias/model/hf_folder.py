"""Hugging Face GPT-NeoX folders: read them into a GPTNeoX, write them from one.

A folder holds config.json and the weights in one of four layouts, tried in this order:
model.safetensors; model.safetensors.index.json (sharded); pytorch_model.bin; and
pytorch_model.bin.index.json. Pickled .bin files are only ever opened with
`torch.load(weights_only=True)`, which refuses (without running it) any pickle that holds more
than tensors and plain containers.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from debias.errors import UserError
from debias.io import atomic_output, with_default_mode
from debias.model.architecture import GPTNeoXConfig
from debias.tokenizer import tokenizer_path

CONFIG_FILE = "config.json"
WEIGHT_LAYOUTS = (  # (file name, is an index of shards)
    ("model.safetensors", False),
    ("model.safetensors.index.json", True),
    ("pytorch_model.bin", False),
    ("pytorch_model.bin.index.json", True),
)
# Buffers that older transformers versions saved beside the weights; we recompute them.
LEGACY_BUFFERS = ("attention.bias", "attention.masked_bias", "attention.rotary_emb.inv_freq")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


# --- key names: ours are the Hugging Face keys without the `gpt_neox.` prefix -------------------


def hf_key(name: str) -> str:
    return name if name == "embed_out.weight" else f"gpt_neox.{name}"


def our_key(key: str) -> str:
    if key == "lm_head.weight":  # transformers 5's in-memory name for embed_out
        return "embed_out.weight"
    return key.removeprefix("gpt_neox.")


# --- reading --------------------------------------------------------------------------------------


def read_config(folder: str | Path) -> GPTNeoXConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; a Hugging Face model folder needs config.json beside its weights")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(hf, dict):
        raise UserError(f"{path}: expected a JSON object")
    return GPTNeoXConfig.from_hf_dict(hf, source=path)


def load_torch_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A pickled {name: tensor} file, opened with weights_only=True so a malicious pickle is
    refused before any of its code runs. Anything but a flat dict of tensors is an error."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"{path}: refused to unpickle: it holds objects other than tensors ({', '.join(foreign_globals(path))}); "
            "only weights are loaded from .bin files, convert it to safetensors from a trusted source"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(f"{path}: cannot be read as a torch checkpoint ({str(err).splitlines()[0]})") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path}: holds a {type(payload).__name__}, expected a dict of tensors")
    for name, value in payload.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; expected a dict of tensors")
    return payload


def foreign_globals(path: Path) -> list[str]:
    """Names of the classes and functions a pickle would call, read without running it."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path) or ["unknown"]
    except Exception:  # a damaged or non-zip file: the names are only for the message
        return ["unreadable"]


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(path, framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path}: cannot be read as safetensors ({err})") from None


def read_weights(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """All tensors of a folder under their stored keys, and the file each came from."""
    folder = Path(folder)
    for name, is_index in WEIGHT_LAYOUTS:
        if (folder / name).is_file():
            files = shard_files(folder / name) if is_index else [folder / name]
            break
    else:
        raise UserError(f"{folder}: no weights found; expected one of {[name for name, _ in WEIGHT_LAYOUTS]}")
    tensors, origin = {}, {}
    for file in files:
        loaded = load_safetensors(file) if file.suffix == ".safetensors" else load_torch_tensors(file)
        tensors.update(loaded)
        origin.update(dict.fromkeys(loaded, file))
    return tensors, origin


def shard_files(index_path: Path) -> list[Path]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{index_path}: not a shard index with a 'weight_map' ({err})") from None
    files = [index_path.parent / name for name in dict.fromkeys(weight_map.values())]
    for file in files:
        if not file.is_file():
            raise UserError(f"{index_path}: lists shard {file.name}, which is missing from {index_path.parent}")
    return files


def load_pretrained(
    cls: type[nn.Module],
    folder: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    gelu: str | None = None,
) -> nn.Module:
    """A `cls` (GPTNeoX, which imports this module and so is passed in) holding the folder's weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; expected a Hugging Face GPT-NeoX model folder")
    config = read_config(folder)
    if gelu is not None:
        config = GPTNeoXConfig.from_dict({**config.to_dict(), "gelu": gelu})
    stored, origin = read_weights(folder)

    with torch.device("meta"):  # no memory and no random init for weights about to be replaced
        model = cls(config)
    expected = model.state_dict()
    weights, stored_key = {}, {}
    for key, tensor in stored.items():
        name = our_key(key)
        if name in expected:
            weights[name], stored_key[name] = tensor, key
        elif not name.endswith(LEGACY_BUFFERS):
            raise UserError(f"{origin[key]}: unexpected tensor {key!r}; is this a GPT-NeoX causal LM checkpoint?")
    for name, meta in expected.items():
        if name not in weights:
            raise UserError(f"{folder}: tensor {hf_key(name)!r} is missing from the weights; the checkpoint is incomplete")
        if weights[name].shape != meta.shape:
            key = stored_key[name]
            raise UserError(
                f"{origin[key]}: tensor {key!r} has shape {tuple(weights[name].shape)}, "
                f"config.json implies {tuple(meta.shape)}"
            )
        weights[name] = weights[name].to(device=device, dtype=dtype or torch.float32)
    model.load_state_dict(weights, assign=True)
    if (folder / "tokenizer.json").is_file():
        model.tokenizer_file = folder / "tokenizer.json"
    return model.eval()


# --- writing --------------------------------------------------------------------------------------


def save_pretrained(model: nn.Module, folder: str | Path, tokenizer: str | Path | None = None) -> Path:
    """Write model.safetensors, config.json and, when known, the tokenizer, as one atomic folder.
    An existing model folder at `folder` is replaced; any other non-empty folder is refused."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / CONFIG_FILE).is_file():
        raise UserError(f"{folder}: exists and does not hold a model; choose an empty or new folder")
    tokenizer_file = tokenizer_path(tokenizer) if tokenizer is not None else model.tokenizer_file
    tensors = {hf_key(name): t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    dtype = next(iter(tensors.values())).dtype
    config = model.config.to_hf_dict() | {"dtype": str(dtype).removeprefix("torch."), "torch_dtype": str(dtype).removeprefix("torch.")}

    with atomic_output(folder) as tmp:
        tmp.mkdir()
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        with_default_mode(tmp / "model.safetensors")  # safetensors writes it 0600
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if tokenizer_file is not None:
            write_tokenizer(tokenizer_file, tmp, model.config)
    return folder


def write_tokenizer(tokenizer_file: Path, folder: Path, config: GPTNeoXConfig) -> None:
    """Copy tokenizer.json (and its tokenizer_config.json / special_tokens_map.json when they sit
    beside it); otherwise write a tokenizer_config.json so AutoTokenizer can load the folder."""
    for name in TOKENIZER_FILES:
        source = tokenizer_file if name == "tokenizer.json" else tokenizer_file.parent / name
        if source.is_file():
            shutil.copyfile(source, folder / name)
    if (folder / "tokenizer_config.json").is_file():
        return
    try:
        spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{tokenizer_file}: not a tokenizers JSON file ({err})") from None
    special = {token["id"]: token["content"] for token in spec.get("added_tokens", [])}
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.max_position_embeddings}
    if config.bos_token_id in special:
        tokenizer_config["bos_token"] = special[config.bos_token_id]
    if config.eos_token_id in special:  # Pythia: <|endoftext|> is bos, eos and unk alike
        tokenizer_config["eos_token"] = tokenizer_config["unk_token"] = special[config.eos_token_id]
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
