"""Import GPT-NeoX / DeepSpeed training checkpoints (e.g. EleutherAI/neox-ckpt-pythia-*-v1).

Hugging Face folders hold weights only; a GPT-NeoX checkpoint also holds Adam's state, the only
way to resume Pythia's optimizer exactly. A checkpoint folder `global_step<N>/` holds:

  layer_XX-model_00-model_states.pt   the weights of pipeline layer XX: 0 = embedding,
      2 .. L+1 = transformer blocks, L+3 = final LayerNorm, L+4 = output projection (layers 1
      and L+2 are weightless functions). Keys as in `attention.query_key_value.weight`,
      `word_embeddings.weight`, `norm.weight`, `final_linear.weight`.
  mp_rank_00_model_states.pt          engine state; newer DeepSpeed also stores `param_shapes`,
      the parameters of each optimizer group in flat order, named `<layer>.<key>`.
  zero_pp_rank_<r>_mp_rank_00_optim_states.pt   ZeRO stage 1: each optimizer group's parameters
      are flattened into one fp32 vector, partitioned across the data-parallel ranks; rank r keeps
      its slice of the master weights and of Adam's exp_avg / exp_avg_sq.

Two shard layouts exist: DeepSpeed >= 0.5 (`single_partition_of_fp32_groups`, one slice per rank)
and the older stage-1 optimizer GPT-NeoX ran on DeeperSpeed (`local_sub_partitions_of_fp32_groups`,
a slice per rank per communication interval; sub-partition (interval * ranks + rank) of the flat
vector). Both are reassembled into whole tensors under our parameter names, then into a torch
AdamW state_dict. Tensor-parallel checkpoints (model_01 ...) must be merged first.

DeepSpeed pickles hold objects besides tensors (a loss scaler, enums). They are loaded with
torch's weights-only unpickler, every such object mapped to an inert stand-in, so no class or
function named in the file ever runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from debias.errors import ArgumentParser, UserError, exit_on_user_error
from debias.io import atomic_output, write_json_atomic
from debias.model.architecture import GPTNeoXConfig
from debias.model.flops import config_from_preset
from debias.model.gpt_neox import GPTNeoX
from debias.model.hf_folder import LEGACY_BUFFERS, load_torch_tensors
from debias.model.weight_decay import parameter_groups

LAYER_FILE = re.compile(r"^layer_(\d+)-model_(\d+)-model_states\.pt$")
OPTIM_FILE = re.compile(r"^zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")
MODEL_STATES_FILE = "mp_rank_00_model_states.pt"


# --- names: GPT-NeoX pipeline layers -> ours --------------------------------------------------------


def our_parameter_name(layer: int, key: str, num_layers: int) -> str | None:
    """Our name for `key` of pipeline layer `layer`; None for buffers we recompute."""
    if key.endswith(LEGACY_BUFFERS):
        return None
    if layer == 0 and key == "word_embeddings.weight":
        return "embed_in.weight"
    if 2 <= layer < num_layers + 2:
        return f"layers.{layer - 2}.{key}"
    if layer == num_layers + 3 and key in ("norm.weight", "norm.bias"):
        return key.replace("norm.", "final_layer_norm.")
    if layer == num_layers + 4 and key == "final_linear.weight":
        return "embed_out.weight"
    raise UserError(
        f"GPT-NeoX layer {layer:02d}: unexpected tensor {key!r} for a {num_layers}-layer model; "
        "check that the model preset matches the checkpoint"
    )


def our_name_for_flat_parameter(name: str, num_layers: int) -> str | None:
    """`<layer>.<key>` as DeepSpeed names pipeline parameters -> our name."""
    layer, _, key = name.partition(".")
    if not layer.isdigit():
        raise UserError(f"DeepSpeed parameter {name!r}: expected a pipeline name '<layer>.<key>'")
    return our_parameter_name(int(layer), key, num_layers)


# --- safe loading of DeepSpeed pickles -----------------------------------------------------------


class Inert:
    """Stands in for any non-tensor object in a DeepSpeed pickle; keeps its arguments, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def load_deepspeed_file(path: Path) -> dict[str, Any]:
    """torch.load(weights_only=True) with every foreign global mapped to `Inert`."""
    try:
        foreign = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        with torch.serialization.safe_globals([(Inert, name) for name in foreign]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, not a torch file, ...
        raise UserError(f"{path}: cannot be read as a DeepSpeed checkpoint file ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path}: holds a {type(payload).__name__}, expected a dict")
    return payload


# --- weights from layer files ----------------------------------------------------------------------


def find_layer_files(folder: Path) -> dict[int, Path]:
    files: dict[int, Path] = {}
    for path in folder.iterdir():
        match = LAYER_FILE.match(path.name)
        if not match:
            continue
        if int(match.group(2)) != 0:
            raise UserError(f"{path}: tensor-parallel shard (model_{match.group(2)}); merge tensor-parallel shards first, only model_00 checkpoints are supported")
        files[int(match.group(1))] = path
    if not files:
        raise UserError(f"{folder}: no GPT-NeoX layer files (layer_XX-model_00-model_states.pt); give the global_step<N> folder")
    return files


def read_layer_weights(folder: str | Path, config: GPTNeoXConfig) -> dict[str, torch.Tensor]:
    """All weights of the layer files, under our names (as stored: usually fp16)."""
    folder = Path(folder)
    files = find_layer_files(folder)
    if max(files) != config.num_layers + 4:
        raise UserError(
            f"{folder}: the last layer file is layer_{max(files):02d}, a {config.num_layers}-layer model ends "
            f"at layer_{config.num_layers + 4:02d}; check that the model preset matches the checkpoint"
        )
    weights = {}
    for layer, path in tqdm(sorted(files.items()), desc="layer files", unit="file", leave=False):
        for key, tensor in load_torch_tensors(path).items():
            name = our_parameter_name(layer, key, config.num_layers)
            if name is not None:
                weights[name] = tensor
    return weights


def build_model(config: GPTNeoXConfig, weights: dict[str, torch.Tensor], source: Path, dtype: torch.dtype | None = None) -> GPTNeoX:
    """A GPTNeoX holding `weights` (our names), with clear errors for missing or mis-shaped ones."""
    with torch.device("meta"):
        model = GPTNeoX(config)
    expected = model.state_dict()
    for name, meta in expected.items():
        if name not in weights:
            raise UserError(f"{source}: tensor for {name!r} is missing; the checkpoint is incomplete")
        if weights[name].shape != meta.shape:
            raise UserError(f"{source}: tensor for {name!r} has shape {tuple(weights[name].shape)}, the model preset implies {tuple(meta.shape)}")
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise UserError(f"{source}: unexpected tensors {extra[:3]}; check that the model preset matches the checkpoint")
    model.load_state_dict({n: t.to(dtype or torch.float32) for n, t in weights.items()}, assign=True)
    return model


def load_neox_model(folder: str | Path, config: GPTNeoXConfig, dtype: torch.dtype | None = None) -> GPTNeoX:
    """Our model from GPT-NeoX layer files (the half-precision copy the checkpoint trained with)."""
    return build_model(config, read_layer_weights(folder, config), Path(folder), dtype)


# --- Adam state from ZeRO-1 shards -----------------------------------------------------------------


@dataclass
class ZeroState:
    """Whole tensors under our parameter names, reassembled from every rank's shard."""

    step: int  # Adam's step count (bias correction); updates skipped on fp16 overflow are not counted
    master: dict[str, torch.Tensor] = field(default_factory=dict)  # fp32 master weights
    exp_avg: dict[str, torch.Tensor] = field(default_factory=dict)
    exp_avg_sq: dict[str, torch.Tensor] = field(default_factory=dict)
    ranks: int = 1
    ds_version: str | None = None


def find_optimizer_shards(folder: Path) -> list[Path]:
    shards = {}
    for path in folder.iterdir():
        match = OPTIM_FILE.match(path.name)
        if match:
            if int(match.group(2)) != 0:
                raise UserError(f"{path}: tensor-parallel shard (mp_rank_{match.group(2)}); only model_00 checkpoints are supported")
            shards[int(match.group(1))] = path
    if not shards:
        raise UserError(f"{folder}: no ZeRO optimizer shards (zero_pp_rank_<r>_mp_rank_00_optim_states.pt)")
    if sorted(shards) != list(range(len(shards))):
        missing = sorted(set(range(max(shards) + 1)) - set(shards))
        raise UserError(f"{folder}: ZeRO shards of ranks {missing} are missing; every data-parallel rank's file is needed")
    return [shards[rank] for rank in range(len(shards))]


def read_zero_state(folder: str | Path, config: GPTNeoXConfig) -> ZeroState:
    """Reassemble master weights, Adam moments and step count from every rank's ZeRO-1 shard."""
    folder = Path(folder)
    paths = find_optimizer_shards(folder)
    shards = []
    for path in tqdm(paths, desc="ZeRO shards", unit="rank", leave=False):
        payload = load_deepspeed_file(path)
        if not isinstance(payload.get("optimizer_state_dict"), dict):
            raise UserError(f"{path}: no 'optimizer_state_dict'; not a DeepSpeed ZeRO optimizer shard")
        shards.append(payload)
    states = [shard["optimizer_state_dict"] for shard in shards]
    if "single_partition_of_fp32_groups" in states[0]:
        flat, step = flat_groups_deepspeed(states, paths)
    elif "local_sub_partitions_of_fp32_groups" in states[0]:
        flat, step = flat_groups_legacy_stage1(states, paths)
    else:
        raise UserError(f"{paths[0]}: neither single_partition_of_fp32_groups nor local_sub_partitions_of_fp32_groups; not a ZeRO stage 1/2 shard")

    group_shapes = parameter_shapes(folder, shards[0], len(flat["master"]), config)
    paddings = states[0].get("param_alignment_paddings") or [[0] * len(shapes) for shapes in group_shapes]
    zero = ZeroState(step=step, ranks=len(paths), ds_version=str(shards[0].get("ds_version")))
    for group, shapes in enumerate(group_shapes):
        for kind in ("master", "exp_avg", "exp_avg_sq"):
            split_flat_group(flat[kind][group], shapes, paddings[group], getattr(zero, kind), len(paths), f"{paths[0]} group {group} {kind}")
    return zero


def flat_groups_deepspeed(states: list[dict], paths: list[Path]) -> tuple[dict[str, list[torch.Tensor]], int]:
    """DeepSpeed >= 0.5: rank r holds one contiguous slice of each group's flat vector; the
    padding at the end of the last slice is already cut from the master weights."""
    num_groups = len(states[0]["single_partition_of_fp32_groups"])
    flat = {"master": [], "exp_avg": [], "exp_avg_sq": []}
    step = None
    for group in range(num_groups):
        pieces = {kind: [] for kind in flat}
        for state, path in zip(states, paths):
            master = state["single_partition_of_fp32_groups"][group]
            base = state["base_optimizer_state"]
            if isinstance(base, list):  # elastic checkpoint: per-group states, padding cut
                moments = base[group]
                step = state.get("base_optimizer_state_step", moments.get("step", step))
            else:  # a torch optimizer state_dict over the flat slices, padding included
                moments = base["state"][group]
                step = moments.get("step", step)
            pieces["master"].append(master)
            for kind in ("exp_avg", "exp_avg_sq"):
                if kind not in moments:
                    raise UserError(f"{path}: group {group} has no {kind}; only Adam / AdamW states can be imported")
                pieces[kind].append(moments[kind][: master.numel()])
        for kind in flat:
            flat[kind].append(torch.cat(pieces[kind]).float())
    return flat, adam_step(step, paths[0])


def flat_groups_legacy_stage1(states: list[dict], paths: list[Path]) -> tuple[dict[str, list[torch.Tensor]], int]:
    """The stage-1 optimizer of DeepSpeed < 0.5 (DeeperSpeed): each group's flat vector is cut
    into communication intervals, each split across ranks; rank r holds sub-partition
    (interval * ranks + r) of every interval. Elastic checkpoints (the default) cut the padding."""
    ranks = len(states)
    num_groups = len(states[0]["local_sub_partitions_of_fp32_groups"])
    flat = {"master": [], "exp_avg": [], "exp_avg_sq": []}
    step = None
    for group in range(num_groups):
        intervals = len(states[0]["local_sub_partitions_of_fp32_groups"][group])
        pieces = {kind: [None] * (intervals * ranks) for kind in flat}
        for rank, (state, path) in enumerate(zip(states, paths)):
            base = state["base_optimizer_state"]
            if not isinstance(base, list):
                raise UserError(f"{path}: a rigid (non-elastic) stage-1 checkpoint; re-save it with elastic_checkpoint=true")
            for interval in range(intervals):
                where = interval * ranks + rank
                master = state["local_sub_partitions_of_fp32_groups"][group][interval]
                moments = base[group][interval]
                pieces["master"][where] = master
                for kind in ("exp_avg", "exp_avg_sq"):
                    if kind not in moments:
                        raise UserError(f"{path}: group {group} has no {kind}; only Adam / AdamW states can be imported")
                    pieces[kind][where] = moments[kind][: master.numel()]
                step = moments.get("step", step)
        for kind in flat:
            flat[kind].append(torch.cat(pieces[kind]).float())
    return flat, adam_step(step, paths[0])


def adam_step(step: Any, path: Path) -> int:
    if step is None:
        raise UserError(f"{path}: no Adam step count found in the optimizer state")
    return int(step.item() if torch.is_tensor(step) else step)


def parameter_shapes(folder: Path, shard: dict, num_groups: int, config: GPTNeoXConfig) -> list[dict[str, torch.Size]]:
    """Per optimizer group, {our name: shape} in the group's flat order.

    Newer DeepSpeed writes a list of per-group dicts into mp_rank_00_model_states.pt. Older
    versions write one dict over all parameters (model order) into each shard; GPT-NeoX's groups
    are then rebuilt with its rule: weight decay on everything except LayerNorms and biases."""
    shapes = shard.get("param_shapes")
    if shapes is None and (folder / MODEL_STATES_FILE).is_file():
        shapes = load_deepspeed_file(folder / MODEL_STATES_FILE).get("param_shapes")
    if shapes is None:
        raise UserError(f"{folder}: no 'param_shapes' in the shards or in {MODEL_STATES_FILE}; cannot tell which parameter is where")
    if isinstance(shapes, dict):
        if num_groups == 1:
            shapes = [shapes]
        elif num_groups == 2:
            shapes = [{n: s for n, s in shapes.items() if is_decayed(n)}, {n: s for n, s in shapes.items() if not is_decayed(n)}]
        else:
            raise UserError(f"{folder}: {num_groups} optimizer groups with one param_shapes dict; cannot split them")
    if len(shapes) != num_groups:
        raise UserError(f"{folder}: param_shapes describes {len(shapes)} groups, the shards hold {num_groups}")
    renamed = []
    for group in shapes:
        ours = {}
        for name, shape in group.items():
            our_name = our_name_for_flat_parameter(name, config.num_layers) if name[:1].isdigit() else name
            if our_name is not None:
                ours[our_name] = torch.Size(shape)
        renamed.append(ours)
    return renamed


def is_decayed(name: str) -> bool:
    """GPT-NeoX's weight-decay rule (megatron get_params_for_weight_decay_optimization)."""
    module = name.split(".")[-2] if "." in name else ""
    return "norm" not in module and not name.endswith(".bias")


def split_flat_group(
    flat: torch.Tensor, shapes: dict[str, torch.Size], paddings: list[int], out: dict[str, torch.Tensor], ranks: int, where: str
) -> None:
    """Cut one group's flat vector into its parameters (plus DeepSpeed's per-parameter alignment)."""
    offset = 0
    for (name, shape), padding in zip(shapes.items(), paddings):
        numel = shape.numel()
        if offset + numel > flat.numel():
            raise UserError(f"{where}: ends at {flat.numel()} elements, parameter {name!r} needs {offset + numel}; shards and param_shapes disagree")
        out[name] = flat[offset : offset + numel].view(shape).clone()
        offset += numel + padding
    # DeepSpeed pads each group to a multiple of 2 x ranks; anything beyond that is a mismatch
    if not 0 <= flat.numel() - offset < 2 * ranks:
        raise UserError(f"{where}: holds {flat.numel()} elements, its parameters {offset}; shards and param_shapes disagree")


def adamw_state_dict(optimizer: torch.optim.Optimizer, model: torch.nn.Module, zero: ZeroState) -> dict:
    """`optimizer`'s state_dict with Adam's moments and step taken from `zero`, matched by name,
    so any grouping of the model's parameters works. Load it with optimizer.load_state_dict."""
    names = {id(param): name for name, param in model.named_parameters()}
    current = optimizer.state_dict()
    state = {}
    params = [param for group in optimizer.param_groups for param in group["params"]]
    for index, param in enumerate(params):
        name = names.get(id(param))
        if name is None or name not in zero.exp_avg:
            raise UserError(f"optimizer parameter {name or index!r}: not in the imported ZeRO state; the checkpoint and the model differ")
        if zero.exp_avg[name].shape != param.shape:
            raise UserError(f"ZeRO state for {name!r}: shape {tuple(zero.exp_avg[name].shape)}, the model's is {tuple(param.shape)}")
        state[index] = {
            "step": torch.tensor(float(zero.step)),
            "exp_avg": zero.exp_avg[name].to(param.device),
            "exp_avg_sq": zero.exp_avg_sq[name].to(param.device),
        }
    return {"state": state, "param_groups": current["param_groups"]}


def checkpoint_step(folder: Path) -> int | None:
    """The training step a GPT-NeoX checkpoint was saved at: GPT-NeoX's `iteration` or DeepSpeed's
    `global_steps` in mp_rank_00_model_states.pt, else the folder name `global_step<N>`. (Adam's own
    step count can be lower: fp16 steps skipped on overflow do not count there.)"""
    path = folder / MODEL_STATES_FILE
    if path.is_file():
        states = load_deepspeed_file(path)
        for key in ("iteration", "global_steps"):
            if isinstance(states.get(key), int) and not isinstance(states.get(key), bool):
                return states[key]
    match = re.fullmatch(r"global_step(\d+)", folder.name)
    return int(match.group(1)) if match else None


def check_same_step(layer_model: GPTNeoX, master_model: GPTNeoX, folder: Path) -> None:
    """The layer files hold a half-precision copy of the master weights: they must agree."""
    masters = dict(master_model.named_parameters())
    for name, param in layer_model.named_parameters():
        if not torch.allclose(param, masters[name], rtol=1e-2, atol=1e-3):
            raise UserError(f"{folder}: layer files and ZeRO master weights disagree on {name!r}; are they from the same step?")


# --- command line ----------------------------------------------------------------------------------


def import_checkpoint(folder: str | Path, config: GPTNeoXConfig, out: str | Path, tokenizer: str | Path | None = None) -> dict:
    """Write `out/model` (a Hugging Face folder) and, when the checkpoint has ZeRO shards,
    `out/optimizer_state.pt` (an AdamW state_dict for debias.train's parameter groups). The
    model takes the fp32 master weights when shards exist, else the layer files' weights."""
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; give a GPT-NeoX checkpoint folder global_step<N>/")
    has_shards = any(OPTIM_FILE.match(path.name) for path in folder.iterdir())
    layer_model = load_neox_model(folder, config)
    summary: dict[str, Any] = {"source": str(folder), "step": checkpoint_step(folder), "weights": "layer files"}
    with atomic_output(out) as tmp:
        tmp.mkdir()
        model = layer_model
        if has_shards:
            zero = read_zero_state(folder, config)
            model = build_model(config, zero.master, folder)
            check_same_step(layer_model, model, folder)
            # Pythia's groups as the trainer builds them; hyper-parameters are the trainer's to set
            optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay=0.1), lr=0.0)
            torch.save(adamw_state_dict(optimizer, model, zero), tmp / "optimizer_state.pt")
            summary |= {"weights": "fp32 master weights", "adam_step": zero.step, "ranks": zero.ranks, "ds_version": zero.ds_version}
        model.save_pretrained(tmp / "model", tokenizer=tokenizer)
        write_json_atomic(tmp / "import.json", summary)
    return summary


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m debias.model.neox_import", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="GPT-NeoX checkpoint folder (global_step<N>/)")
    parser.add_argument("--preset", required=True, help="model preset, e.g. conf/model/pythia-70m-deduped.yaml")
    parser.add_argument("--out", required=True, help="output folder: model/ (Hugging Face), optimizer_state.pt")
    parser.add_argument("--tokenizer", help="tokenizer.json to copy into the model folder")
    args = parser.parse_args(argv)
    summary = import_checkpoint(args.checkpoint, config_from_preset(args.preset), args.out, args.tokenizer)
    print(f"wrote {args.out}: {summary}")


if __name__ == "__main__":
    main()
