"""A cost plan before a run: tokens per arm, throughput, GPU-hours and wall time.

    python -m debias.train plan --model pythia-1.4b --ratio 0.07 --gpus 8
    python -m debias.train plan --all --gpus 8           # 160m ... 12b x 7% / 21%

`cost_plan()` takes plain values (parameter counts and FLOPs per token from `debias.model`'s
accounting, the window's rows from `debias.stream.Window`), so a pipeline can print the same table.

Throughput per GPU, in this order: given (`tokens_per_s`); measured for this model size on this
device (`MEASURED`, or a `benchmarks/results/gpu.json` written by `benchmarks/gpu_check.sh`);
otherwise projected. A projection keeps the model-FLOPs utilisation (MFU) measured at the nearest
measured sizes (interpolated in log parameter count between two, the nearest one's beyond the
ends) and converts it: tokens/s = MFU x peak FLOP/s / training FLOPs per token. Where activation
checkpointing must be on (estimated memory), it costs a quarter of the throughput (the forward
pass is recomputed). Several GPUs: data parallel (ZeRO), scaling assumed linear (the gradients
are reduced once per 1024-row step, about 1% of a step at these sizes; not measured). A run is
both arms trained one after the other on the same GPUs plus three evaluations (baseline, control,
treatment) on one GPU each; the rewrite runs on CPUs and is left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from debias.errors import UserError
from debias.model.flops import PEAK_BF16_FLOPS
from debias.train.memory import MEMORY_MARGIN, MEMORY_RESERVE

# Measured by an earlier session on one NVIDIA H200 (bf16, sequence 2048), issue 13's table:
# size -> (tokens/s per GPU, MFU, what was measured).
MEASURED = {
    "H200": {
        "pythia-160m": (300e3, 0.293, "trainer, eager, micro-batch 16"),
        "pythia-410m": (161e3, 0.444, "trainer, compiled, micro-batch 16"),
        "pythia-1.4b": (53.6e3, 0.492, "model forward+backward, eager, batch 8"),
    },
}
MEASURED_SOURCE = "one NVIDIA H200, bf16, seq 2048, measured by an earlier session (issue 13)"
DEVICES = {name: (PEAK_BF16_FLOPS[name], gib) for name, gib in (("H200", 139), ("H100", 79), ("A100", 79))}  # GiB torch sees
CHECKPOINTING_SLOWDOWN = 0.75        # throughput with activation checkpointing (forward recomputed: 8 of 6 units)
# Evaluation: CrowS-Pairs + WinoBias + LAMBADA + held-out perplexity score about 640k tokens;
# LAMBADA's ~390k scored in 2.5 s at 160m on one H200 (issue 13): ~3.9% MFU of forward FLOPs.
EVAL_TOKENS, EVAL_MFU, EVAL_OVERHEAD_S = 640_000, 0.039, 30.0


@dataclass(frozen=True)
class ModelSize:
    name: str
    num_params: int              # all parameters (memory)
    matmul_params: int           # non-embedding + unembedding (forward FLOPs 2 per token each)
    flops_per_token: float       # training FLOPs per token at the sequence length
    hidden_size: int
    num_layers: int


@dataclass(frozen=True)
class ArmPlan:
    model: str
    ratio: float
    gpus: int
    device: str
    tokens_per_arm: int          # predicted tokens (rows x 2048) of one arm's window
    tokens_per_s_per_gpu: float
    mfu: float | None
    basis: str                   # measured / projected, and from what
    zero_stage: int | None       # DeepSpeed ZeRO stage whose memory fits (None: none does)
    activation_checkpointing: bool
    gpu_hours_per_arm: float
    wall_hours_per_arm: float
    eval_hours: float            # one evaluation, one GPU
    gpu_hours_run: float         # both arms + three evaluations
    wall_hours_run: float


def cost_plan(size: ModelSize, ratio: float, window_rows: int, seq_len: int, gpus: int, device: str = "H200",
              tokens_per_s: float | None = None, measured: dict | None = None, arms: int = 2) -> ArmPlan:
    """The plan of one run of `size` on `gpus` GPUs of `device`: `arms` trained arms (2: treatment
    and control; 1 for a control-only run) and their evaluations plus the baseline's."""
    if gpus < 1:
        raise UserError(f"plan: gpus={gpus}: must be at least 1")
    if device not in DEVICES:
        raise UserError(f"plan: device {device!r} unknown; one of {sorted(DEVICES)}")
    peak, memory_gib = DEVICES[device]
    zero_stage, checkpointing = memory_fit(size, seq_len, gpus, memory_gib)
    measured_here = MEASURED.get(device, {}) if measured is None else measured
    if tokens_per_s is not None:
        rate, mfu, basis = tokens_per_s, tokens_per_s * size.flops_per_token / peak, "given"
    elif size.name in measured_here:
        rate, mfu, what = measured_here[size.name]
        basis = f"measured ({what})"
    else:  # another device's MFU when this one has no figures (its peak converts it)
        reference = measured_here or MEASURED["H200"]
        mfu, basis = projected_mfu(size, reference)
        if not measured_here:
            basis = basis[:-1] + " on H200)"
        rate = mfu * peak / size.flops_per_token
        if checkpointing:
            rate *= CHECKPOINTING_SLOWDOWN
            basis += ", activation checkpointing"
    tokens = window_rows * seq_len
    train_s = tokens / (rate * gpus)
    eval_s = EVAL_OVERHEAD_S + EVAL_TOKENS * 2 * size.matmul_params / (EVAL_MFU * peak)
    return ArmPlan(model=size.name, ratio=ratio, gpus=gpus, device=device, tokens_per_arm=tokens,
                   tokens_per_s_per_gpu=rate, mfu=mfu, basis=basis, zero_stage=zero_stage,
                   activation_checkpointing=checkpointing, gpu_hours_per_arm=train_s * gpus / 3600,
                   wall_hours_per_arm=train_s / 3600, eval_hours=eval_s / 3600,
                   gpu_hours_run=(arms * train_s * gpus + (arms + 1) * eval_s) / 3600,
                   wall_hours_run=(arms * train_s + (arms + 1) * eval_s) / 3600)


def projected_mfu(size: ModelSize, measured: dict) -> tuple[float, str]:
    """MFU at the nearest measured sizes, interpolated in log parameter count (see the docstring)."""
    if not measured:
        raise UserError("plan: no measured throughput for this device; give --tokens-per-s or --figures gpu.json")
    points = sorted((matmul_params_of(name), mfu, name) for name, (_, mfu, _) in measured.items())
    x = math.log(size.matmul_params)
    below = [p for p in points if math.log(p[0]) <= x]
    above = [p for p in points if math.log(p[0]) >= x]
    if not below:
        return above[0][1], f"projected (MFU of {above[0][2]})"
    if not above:
        return below[-1][1], f"projected (MFU of {below[-1][2]})"
    (x0, m0, n0), (x1, m1, n1) = below[-1], above[0]
    share = (x - math.log(x0)) / (math.log(x1) - math.log(x0)) if x1 != x0 else 0.0
    return m0 + share * (m1 - m0), f"projected (MFU between {n0} and {n1})"


def memory_fit(size: ModelSize, seq_len: int, gpus: int, memory_gib: float) -> tuple[int | None, bool]:
    """(ZeRO stage, activation checkpointing) for the trainer's bf16 recipe: fp32 weights and
    gradients and autocast's bf16 copy of the weights, fp32 master weights and Adam moments
    sharded over the GPUs; ZeRO-2 also shards the gradients. Activations per row: about 38 bytes
    x sequence x width per layer (checkpointed: the fp32 input of every layer, 4 bytes, plus one
    layer's 38). The same margin as `memory.py` keeps free."""
    budget = (1 - MEMORY_MARGIN) * memory_gib * 2**30 - MEMORY_RESERVE
    p = size.num_params
    per_layer_row = seq_len * size.hidden_size
    rows = {False: 38 * per_layer_row * size.num_layers, True: 4 * per_layer_row * size.num_layers + 38 * per_layer_row}
    for stage, static in ((1, 10 * p + 12 * p / gpus), (2, 6 * p + 16 * p / gpus)):
        for checkpointing in (False, True):
            if static + rows[checkpointing] <= budget:
                return stage, checkpointing
    return None, True


def matmul_params_of(name: str) -> int:
    return model_size(name).matmul_params


def model_size(name: str, seq_len: int = 2048, presets: Path | None = None) -> ModelSize:
    """A ModelSize from the model preset `conf/model/<name>.yaml` (or `<name>-deduped.yaml`)."""
    from debias.model import config_from_preset

    folder = presets or Path(__file__).resolve().parents[2] / "conf" / "model"
    for candidate in (folder / f"{name}.yaml", folder / f"{name}-deduped.yaml"):
        if candidate.is_file():
            return size_of(name, config_from_preset(candidate), seq_len)
    known = sorted(p.stem for p in folder.glob("pythia-*.yaml") if not p.stem.endswith("-deduped"))
    raise UserError(f"plan: model {name!r}: no preset {folder / (name + '.yaml')}; known: {known}")


def size_of(name: str, config, seq_len: int = 2048) -> ModelSize:
    """A ModelSize of a `debias.model.GPTNeoXConfig`; `name` without "-deduped" finds measured figures."""
    from debias.model import flops_per_token, parameter_counts

    counts = parameter_counts(config)
    return ModelSize(name=name.removesuffix("-deduped"), num_params=counts.total,
                     matmul_params=counts.non_embedding + counts.unembedding,
                     flops_per_token=flops_per_token(config, seq_len), hidden_size=config.hidden_size,
                     num_layers=config.num_layers)


def measured_from_results(path: str | Path, device: str) -> dict:
    """Trainer figures from a `benchmarks/gpu_check.sh` result (gpu.json) for `device`."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a gpu_check result ({err})") from None
    if device not in str(results.get("device", "")):
        raise UserError(f"{path}: measured on {results.get('device')!r}, not {device}; pass --device to match")
    measured = {}
    for key, item in results.get("items", {}).items():
        if key.startswith("trainer_") and item.get("tokens_per_s") and item.get("mfu"):
            measured[key.removeprefix("trainer_")] = (item["tokens_per_s"], item["mfu"], f"trainer, gpu_check {path.name}")
    return measured


def plan_table(plans: list[ArmPlan]) -> str:
    """A Markdown table of plans."""
    header = ("| model | window | tokens/arm | tok/s per GPU | MFU | basis | ZeRO | act. ckpt | GPU-h/arm | wall/arm "
              "| GPU-h run | wall run |")
    lines = [header, "|" + "---|" * 12]
    for p in plans:
        lines.append(
            f"| {p.model} | {p.ratio:.0%} | {p.tokens_per_arm / 1e9:.1f}B | {p.tokens_per_s_per_gpu:,.0f} | "
            f"{'' if p.mfu is None else f'{p.mfu:.1%}'} | {p.basis} | {p.zero_stage or 'none fits'} | "
            f"{'on' if p.activation_checkpointing else 'off'} | {p.gpu_hours_per_arm:,.0f} | "
            f"{duration(p.wall_hours_per_arm)} | {p.gpu_hours_run:,.0f} | {duration(p.wall_hours_run)} |")
    return "\n".join(lines)


def duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def as_dict(plan: ArmPlan) -> dict:
    return asdict(plan)
