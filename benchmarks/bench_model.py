"""Model throughput: forward + backward tokens/s of our GPT-NeoX beside transformers' GPTNeoXForCausalLM.

Both models hold the same weights (ours is loaded from the folder transformers saves), run the
same batches and are timed in turns, so load from other processes on a shared machine falls on
both alike; the fastest step counts (wall clock, and CPU time as a second view). Each computes the
next-token cross-entropy its training way: transformers from logits [B, T, V] cast to fp32, ours
with `model(ids, labels)`, the chunked loss the trainer uses (debias.model.lm_loss).

CPU (always): the demo shape (conf/model/pythia-demo.yaml; a small stand-in when that preset is
absent) and the pythia-70m shape, fp32, transformers with attn_implementation="sdpa".
GPU (when CUDA is available): the pythia-160m and 410m shapes at sequence 2048 in bf16 autocast,
every attention call forced onto FlashAttention (`sdpa_kernel(SDPBackend.FLASH_ATTENTION)` fails
rather than fall back), tokens/s and MFU; ours also with compiled blocks (what the trainer runs).
The trainer's own figures (optimizer, data, micro-batch=auto) come from benchmarks/gpu_check.sh.

Figures go to stdout and benchmarks/results/model.json. Bigger runs: --cpu-seq, --cpu-batch,
--repeats, --gpu-batch (or DEBIAS_BENCH_MODEL_REPEATS).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from debias.io import write_json_atomic
from debias.model import GPTNeoX, GPTNeoXConfig, config_from_preset, flops_per_token, peak_bf16_flops

HERE = Path(__file__).resolve().parent
PRESETS = HERE.parent / "conf" / "model"
RESULTS = HERE / "results" / "model.json"
DEMO_STAND_IN = GPTNeoXConfig(vocab_size=2048, hidden_size=64, num_layers=4, num_heads=4, intermediate_size=256, max_position_embeddings=128)


def reference_and_ours(config: GPTNeoXConfig, dtype: torch.dtype, device: str):
    """transformers' model (sdpa attention) with random weights, and ours loaded from its folder."""
    import transformers  # benchmark reference only; the product never imports it

    transformers.utils.logging.disable_progress_bar()

    hf_config = transformers.GPTNeoXConfig(**config.to_hf_dict(), attn_implementation="sdpa")
    torch.manual_seed(0)
    reference = transformers.GPTNeoXForCausalLM(hf_config)
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        ours = GPTNeoX.from_pretrained(folder, dtype=dtype, device=device)
    return reference.to(device=device, dtype=dtype).train(), ours.train()


def ours_loss(model, ids):
    return model(ids[:, :-1], ids[:, 1:])


def reference_loss(model, ids):
    logits = model(input_ids=ids[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())


def train_step(model, loss_of, ids: torch.Tensor, autocast: bool = False) -> None:
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = loss_of(model, ids)
    loss.backward()
    model.zero_grad(set_to_none=True)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def race(contenders: dict, ids: torch.Tensor, repeats: int, device: str, warmup: int = 2,
         autocast: bool = False) -> dict[str, dict[str, float]]:
    """Seconds per step of each (model, loss_of), measured in turns: the fastest wall-clock
    step (least disturbed by other processes on a shared machine) and the fastest CPU-time step
    (this process's work, whatever the waiting)."""
    for model, loss_of in contenders.values():
        for _ in range(warmup):
            train_step(model, loss_of, ids, autocast)
    wall = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (model, loss_of) in contenders.items():
            synchronize(device)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            train_step(model, loss_of, ids, autocast)
            synchronize(device)
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: {"wall": min(wall[name]), "cpu": min(cpu[name])} for name in contenders}


def cpu_shapes() -> dict[str, tuple[GPTNeoXConfig, str]]:
    demo_preset = PRESETS / "pythia-demo.yaml"
    if demo_preset.is_file():
        demo = (config_from_preset(demo_preset), "conf/model/pythia-demo.yaml")
    else:
        demo = (DEMO_STAND_IN, "stand-in (conf/model/pythia-demo.yaml absent)")
    return {"demo": demo, "pythia-70m": (config_from_preset(PRESETS / "pythia-70m-deduped.yaml"), "conf/model/pythia-70m-deduped.yaml")}


def bench_cpu(args) -> dict:
    # One intra-op thread by default: on a busy shared machine OpenMP threads spin waiting for
    # each other and the figures swing several-fold; --cpu-threads 2 uses both cores.
    torch.set_num_threads(args.cpu_threads)
    results = {}
    for shape, (config, source) in cpu_shapes().items():
        seq = min(args.cpu_seq, config.max_position_embeddings)
        batch = args.cpu_batch if shape != "demo" else 16  # the demo trains many short rows
        ids = torch.randint(0, config.vocab_size, (batch, seq + 1), generator=torch.Generator().manual_seed(0))
        reference, ours = reference_and_ours(config, torch.float32, "cpu")
        repeats = args.repeats * (4 if shape == "demo" else 1)  # demo steps are cheap: more turns, less noise
        seconds = race({"ours": (ours, ours_loss), "transformers": (reference, reference_loss)}, ids, repeats, "cpu")
        tokens = batch * seq
        row = {
            "config_source": source,
            "batch": batch,
            "seq": seq,
            "repeats": repeats,
            "threads": args.cpu_threads,
            "cpu_tokens_per_s": tokens / seconds["ours"]["wall"],
            "cpu_transformers_tokens_per_s": tokens / seconds["transformers"]["wall"],
            "cpu_tokens_per_cpu_second": tokens / seconds["ours"]["cpu"],
            "cpu_transformers_tokens_per_cpu_second": tokens / seconds["transformers"]["cpu"],
        }
        row["cpu_ratio"] = row["cpu_tokens_per_s"] / row["cpu_transformers_tokens_per_s"]
        row["cpu_ratio_by_cpu_time"] = row["cpu_tokens_per_cpu_second"] / row["cpu_transformers_tokens_per_cpu_second"]
        results[shape] = row
        print(
            f"cpu {shape:11s} batch {batch:3d} x seq {seq:4d} fp32: ours {row['cpu_tokens_per_s']:9.0f} tok/s | "
            f"transformers(sdpa) {row['cpu_transformers_tokens_per_s']:9.0f} tok/s | ratio {row['cpu_ratio']:.2f}x "
            f"(by CPU time {row['cpu_ratio_by_cpu_time']:.2f}x)  [{source}]"
        )
    return results


def bench_gpu(args) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device, name = "cuda", torch.cuda.get_device_name()
    peak = peak_bf16_flops(name)
    results = {"device": name, "peak_bf16_flops": peak, "seq": args.gpu_seq, "batch": args.gpu_batch}
    for shape in ("pythia-160m", "pythia-410m"):
        config = config_from_preset(PRESETS / f"{shape}-deduped.yaml")
        ids = torch.randint(0, config.vocab_size, (args.gpu_batch, args.gpu_seq + 1), device=device)
        # fp32 master weights under bf16 autocast, as the trainer runs them
        reference, ours = reference_and_ours(config, torch.float32, device)
        contenders = {"ours": (ours, ours_loss)}
        if args.compile:
            compiled = GPTNeoX(config).to(device).train()
            compiled.load_state_dict(ours.state_dict())
            compiled.compile_blocks()
            contenders["ours_compiled"] = (compiled, ours_loss)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises instead of falling back to another kernel
            seconds = race(contenders, ids, args.repeats, device, warmup=3, autocast=True)
        reference_contender = {"transformers": (reference, reference_loss)}
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                seconds |= race(reference_contender, ids, args.repeats, device, warmup=3, autocast=True)
            reference_attention = "sdpa, FlashAttention kernel"
        except RuntimeError as err:  # e.g. it passes an explicit mask, which flash kernels refuse
            seconds |= race(reference_contender, ids, args.repeats, device, warmup=3, autocast=True)
            reference_attention = f"sdpa, kernel of its choice (flash-only failed: {str(err).splitlines()[0][:120]})"

        tokens, per_token = args.gpu_batch * args.gpu_seq, flops_per_token(config, args.gpu_seq)
        row = {"transformers_attention": reference_attention, "flops_per_token": per_token, "precision": "bf16 autocast"}
        for contender, times in seconds.items():
            row[f"{contender}_tokens_per_s"] = tokens / times["wall"]
            row[f"{contender}_mfu"] = tokens / times["wall"] * per_token / peak if peak else None
        best = max(row.get("ours_compiled_tokens_per_s", 0.0), row["ours_tokens_per_s"])
        row["ratio"] = best / row["transformers_tokens_per_s"]
        results[shape] = row
        print(f"gpu {shape:11s} bf16 batch {args.gpu_batch} x seq {args.gpu_seq}: " + " | ".join(
            f"{contender} {row[f'{contender}_tokens_per_s']:9.0f} tok/s (MFU {percent(row[f'{contender}_mfu'])})"
            for contender in seconds
        ) + f" | ratio {row['ratio']:.2f}x  [transformers: {reference_attention}]")
        del reference, ours, contenders, reference_contender
        torch.cuda.empty_cache()
    return results


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-seq", type=int, default=256)
    parser.add_argument("--cpu-batch", type=int, default=1, help="rows per step for the pythia-70m shape")
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch intra-op threads for the CPU runs")
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("DEBIAS_BENCH_MODEL_REPEATS", 5)))
    parser.add_argument("--gpu-seq", type=int, default=2048)
    parser.add_argument("--gpu-batch", type=int, default=8)
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="GPU: skip the torch.compile run")
    args = parser.parse_args()

    results = {
        "machine": {"platform": platform.platform(), "cpu_cores": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0]},
        "cpu": bench_cpu(args),
    }
    if torch.cuda.is_available():
        results["gpu"] = bench_gpu(args)
    else:
        print("gpu: skipped (no CUDA device); the bf16 FlashAttention figures need a GPU machine")
        results["gpu"] = {"skipped": "no CUDA device"}
    write_json_atomic(RESULTS, results)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
