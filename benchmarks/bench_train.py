"""Trainer throughput on one GPU beside the same step in transformers, the DeepSpeed engine on one
GPU, and the evaluation time at 1.4b: what `benchmarks/gpu_check.sh` runs.

    python benchmarks/bench_train.py [--dry-run] [--out benchmarks/results/gpu.json] [--budget 450]

--budget bounds this process from its start (imports included); gpu_check.sh passes what its own
checks and installation left of its budget.

Each measurement runs in a process of its own (a clean GPU, its own compilation), one after the
other, under one time budget; what the budget leaves no time for is recorded as skipped.

  trainer_<shape>       the trainer itself (`python -m debias.train`, torch engine, defaults: bf16,
                        compiled blocks, micro_batch=auto) on a synthetic stream of random tokens
                        from a random initialisation of the shape; tokens/s and MFU are the median
                        of the steady-state lines of its metrics.jsonl (the first steps are left
                        out); the worker is stopped once it has written them (no final checkpoint)
  transformers_<shape>  the same step in transformers: GPTNeoXForCausalLM (sdpa attention, its own
                        loss), bf16 autocast over fp32 weights, fused AdamW, gradient clipping, the
                        same rows per step (its micro-batch halved until it fits)
  deepspeed_<shape>     the trainer with trainer.engine=deepspeed (ZeRO-1) on one GPU
  evaluate_<shape>      `python -m debias.evaluate` on CrowS-Pairs + WinoBias + LAMBADA (the data
                        in ../shared/data or DEBIAS_SHARED_DATA) of a random model of the shape;
                        wall seconds of the whole command (model loading included)

Shapes: pythia-160m, 410m and 1.4b at sequence 2048 on GPU; `--dry-run` runs every item with a
tiny shape on CPU in seconds (what the test suite exercises). Results go to --out with the device
name; targets (issue 13) are checked in `targets`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROCESS_STARTED = time.perf_counter()  # the budget counts from here, torch's import included

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from debias.config import shared_data_path  # noqa: E402
from debias.io import write_json_atomic  # noqa: E402
from debias.model import GPTNeoX, GPTNeoXConfig, config_from_preset, flops_per_token, peak_bf16_flops  # noqa: E402
from debias.train.loop import DISTRIBUTED_ENV  # noqa: E402

RESULTS = HERE / "results" / "gpu.json"
SHARED_DATA = Path(shared_data_path())
TINY = GPTNeoXConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256,
                     max_position_embeddings=64)
TINY_EVAL = GPTNeoXConfig(vocab_size=50304, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64,
                          max_position_embeddings=2048)
GPU_SHAPES = {"pythia-160m": 64, "pythia-410m": 64, "pythia-1.4b": 32}  # shape -> rows per step in the check
WARM_STEPS, MEASURED_STEPS = 2, 6
# Issue 13's targets (bf16, sequence 2048, one H100/H200)
TARGET_MFU = {"pythia-160m": 0.40, "pythia-410m": 0.50, "pythia-1.4b": 0.55}
TARGET_VS_TRANSFORMERS, TARGET_DEEPSPEED_WITHIN, TARGET_EVAL_SECONDS = 1.3, 0.10, 60.0


def shape_config(shape: str) -> GPTNeoXConfig:
    return TINY if shape == "tiny" else config_from_preset(ROOT / "conf" / "model" / f"{shape}-deduped.yaml")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak(dev: torch.device) -> float | None:
    return peak_bf16_flops(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else None


# --- one measurement per process --------------------------------------------------------------

def write_random_stream(prefix: Path, rows: int, row_length: int, vocab: int) -> None:
    from debias.stream import StreamWriter

    tokens = np.random.default_rng(0).integers(0, vocab, size=(rows, row_length)).astype(np.uint16)
    with StreamWriter(prefix, np.uint16) as writer:
        writer.append_rows(tokens)


def measure_trainer(shape: str, engine: str, rows: int, seq: int, timeout: float) -> dict:
    """Run the trainer's worker on a random stream; stop it after the measured steps."""
    from debias.train import TrainerConfig, TrainJob
    from debias.train.launch import write_spec

    config = shape_config(shape)
    steps = WARM_STEPS + MEASURED_STEPS
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp = Path(tmp)
        write_random_stream(tmp / "stream" / "document", rows * (steps + 1), seq + 1, min(config.vocab_size, 50277))
        job = TrainJob(init=config, stream=str(tmp / "stream" / "document"), first_row=0, start_step=0,
                       end_step=steps + 1, peak_lr=1e-4, batch_size=rows, row_length=seq + 1, total_steps=10**6,
                       warmup_steps=0, seed=0)
        trainer = TrainerConfig.from_dict({"engine": engine, "progress": False, "tensorboard": False,
                                          "check_token_ids": False, "checkpoint_every": 10**6})
        spec = write_spec(job, trainer, tmp / "run")
        log_path = tmp / "worker.log"
        started = time.perf_counter()
        with log_path.open("w") as log_file:
            worker = subprocess.Popen([sys.executable, "-m", "debias.train", str(spec)], cwd=ROOT, stdout=log_file,
                                      stderr=subprocess.STDOUT, start_new_session=True)
            records = []
            try:
                while time.perf_counter() - started < timeout:
                    records = read_train_records(tmp / "run" / "metrics.jsonl")
                    if len(records) >= steps or worker.poll() is not None:
                        break
                    time.sleep(0.2)
            finally:
                if worker.poll() is None:
                    os.killpg(worker.pid, signal.SIGKILL)  # the worker this function started, and its children
                worker.wait()
        setup = json.loads((tmp / "run" / "setup.json").read_text()) if (tmp / "run" / "setup.json").exists() else {}
        if len(records) < steps:
            tail = log_path.read_text()[-1500:]
            return {"error": f"{len(records)} of {steps} steps in {time.perf_counter() - started:.0f} s", "log_tail": tail,
                    "setup": setup}
    steady = records[WARM_STEPS:steps]
    mfu = [r["mfu"] for r in steady if r.get("mfu") is not None]
    return {"engine": engine, "rows_per_step": rows, "seq": seq, "steps_measured": len(steady),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
            "step_seconds": statistics.median(r["step_seconds"] for r in steady),
            "mfu": statistics.median(mfu) if mfu else None, "setup": setup,
            "seconds_to_first_step": None if not records else records[0].get("step_seconds")}


def read_train_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if record.get("phase") == "train":
            records.append(record)
    return records


def measure_transformers(shape: str, rows: int, micro_batch: int, seq: int) -> dict:
    """The trainer's step in transformers, as a user of it would write it."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    dev = device()
    config = shape_config(shape)
    hf_config = transformers.GPTNeoXConfig(**config.to_hf_dict(), attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(hf_config).to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                                  fused=dev.type == "cuda")
    bf16 = dev.type == "cuda"
    while True:
        grad_accum = rows // micro_batch
        ids = torch.randint(0, min(config.vocab_size, 50277), (micro_batch, seq + 1), device=dev)

        def step() -> None:
            for _ in range(grad_accum):
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = model(input_ids=ids[:, :-1], labels=ids[:, :-1]).loss
                (loss / grad_accum).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        try:
            times = []
            for index in range(WARM_STEPS + MEASURED_STEPS):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                tick = time.perf_counter()
                step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if index >= WARM_STEPS:
                    times.append(time.perf_counter() - tick)
            break
        except torch.cuda.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if micro_batch == 1:
                return {"error": "out of memory at micro-batch 1"}
            micro_batch //= 2
    seconds = statistics.median(times)
    tokens_per_s = rows * seq / seconds
    device_peak = peak(dev)
    return {"rows_per_step": rows, "seq": seq, "micro_batch": micro_batch, "grad_accum": rows // micro_batch,
            "attention": "sdpa", "step_seconds": seconds, "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * flops_per_token(config, seq) / device_peak if device_peak else None,
            "transformers": transformers.__version__}


def measure_evaluate(shape: str, dry_run: bool) -> dict:
    data = {"tokenizer": SHARED_DATA / "tokenizers" / "gpt-neox-20b" / "tokenizer.json",
            "crows_pairs": SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv",
            "winobias": SHARED_DATA / "winobias", "lambada": SHARED_DATA / "lambada" / "lambada_test.jsonl"}
    missing = [str(path) for path in data.values() if not path.exists()]
    if missing:
        return {"skipped": f"evaluation data not found: {missing[0]} (set DEBIAS_SHARED_DATA)"}
    config = TINY_EVAL if dry_run else shape_config(shape)
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        tmp = Path(tmp)
        with torch.device(device()):  # random weights of the shape; initialised where they will run
            torch.manual_seed(0)
            model = GPTNeoX(config)
        model.save_pretrained(tmp / "model", tokenizer=data["tokenizer"])
        del model
        command = [sys.executable, "-m", "debias.evaluate", "--model", str(tmp / "model"),
                   "--crows-pairs", str(data["crows_pairs"]), "--winobias", str(data["winobias"]),
                   "--lambada", str(data["lambada"]), "--no-progress", "--out", str(tmp / "eval.json")]
        if dry_run:
            command += ["--lambada-limit", "50"]
        tick = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - tick
        if result.returncode != 0:
            return {"error": f"exit {result.returncode}", "log_tail": (result.stdout + result.stderr)[-1500:]}
        metrics = json.loads((tmp / "eval.json").read_text())["metrics"]
    return {"seconds": seconds, "command": "python -m debias.evaluate (CrowS-Pairs, WinoBias, LAMBADA)",
            "n": {k: metrics[k].get("n") for k in ("crows_pairs", "winobias", "lambada") if isinstance(metrics.get(k), dict)},
            "lambada_limit": 50 if dry_run else None}


def run_item(args) -> dict:
    seq = args.seq
    if args.item == "trainer":
        return measure_trainer(args.shape, args.engine, args.rows, seq, args.timeout)
    if args.item == "transformers":
        return measure_transformers(args.shape, args.rows, args.micro_batch, seq)
    return measure_evaluate(args.shape, args.dry_run)


# --- the driver -------------------------------------------------------------------------------

def plan(dry_run: bool) -> list[tuple[str, list[str], float]]:
    """(key, arguments, time cap in seconds), most important first."""
    shapes = {"tiny": 8} if dry_run else GPU_SHAPES
    seq = "32" if dry_run else "2048"
    items = []
    for shape, rows in shapes.items():
        common = ["--shape", shape, "--rows", str(rows), "--seq", seq]
        items.append((f"trainer_{shape}", ["--item", "trainer", "--engine", "torch", *common], 150))
        items.append((f"transformers_{shape}", ["--item", "transformers", *common], 90))
    first = next(iter(shapes))
    items.append((f"deepspeed_{first}", ["--item", "trainer", "--engine", "deepspeed", "--shape", first,
                                          "--rows", str(shapes[first]), "--seq", seq], 150))
    items.append((f"evaluate_{'tiny' if dry_run else 'pythia-1.4b'}", ["--item", "evaluate", "--shape",
                                                                       "tiny" if dry_run else "pythia-1.4b"], 150))
    return items


def missing_module(key: str) -> str | None:
    import importlib.util

    needs = {"transformers": "transformers", "deepspeed": "deepspeed"}
    for prefix, module in needs.items():
        if key.startswith(prefix) and importlib.util.find_spec(module) is None:
            return module
    return None


def drive(args) -> dict:
    dev = device()
    started = PROCESS_STARTED
    deadline = started + args.budget
    results: dict = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "dry_run": args.dry_run, "torch": torch.__version__, "python": sys.version.split()[0],
        "peak_bf16_flops": peak(dev), "budget_seconds": args.budget, "items": {},
    }
    # each measurement is a single process of its own: no inherited torch.distributed rendezvous
    env = {key: value for key, value in os.environ.items()
           if key not in DISTRIBUTED_ENV}
    env |= {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    if args.dry_run:
        env |= {"DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    for key, item_args, cap in plan(args.dry_run):
        module = missing_module(key)
        if module:
            results["items"][key] = {"skipped": f"{module} is not installed (gpu_check.sh --wheels DIR installs it)"}
            print(f"{key}: skipped ({module} not installed)", flush=True)
            continue
        if key.startswith("transformers_"):  # the same micro-batch the trainer chose, to start with
            ours = results["items"].get(key.replace("transformers_", "trainer_"), {})
            item_args = [*item_args, "--micro-batch", str(ours.get("setup", {}).get("micro_batch") or 8)]
        remaining = deadline - time.perf_counter()
        if remaining < 20:
            results["items"][key] = {"skipped": f"time budget of {args.budget:.0f} s spent"}
            print(f"{key}: skipped (time budget spent)", flush=True)
            continue
        timeout = min(cap, remaining)
        command = [sys.executable, __file__, *item_args, "--timeout", str(timeout - 10)]
        if args.dry_run:
            command.append("--dry-run")
        tick = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            lines = done.stdout.strip().splitlines()
            result = json.loads(lines[-1]) if done.returncode == 0 and lines else {
                "error": f"exit {done.returncode}", "log_tail": (done.stdout + done.stderr)[-1500:]}
        except subprocess.TimeoutExpired:
            result = {"error": f"timed out after {timeout:.0f} s"}
        result["wall_seconds"] = time.perf_counter() - tick
        results["items"][key] = result
        print(f"{key}: {describe(result)}", flush=True)
    results["wall_seconds"] = time.perf_counter() - started
    results["targets"] = check_targets(results["items"], args.dry_run)
    return results


def describe(result: dict) -> str:
    if "error" in result or "skipped" in result:
        return result.get("error") or result["skipped"]
    if "tokens_per_s" in result:
        mfu = f", MFU {result['mfu']:.1%}" if result.get("mfu") else ""
        setup = result.get("setup") or {}
        extra = f" (micro-batch {setup.get('micro_batch', result.get('micro_batch'))}, compile {setup.get('compile', '-')})"
        return f"{result['tokens_per_s']:,.0f} tokens/s{mfu}{extra}"
    return f"{result['seconds']:.1f} s"


def check_targets(items: dict, dry_run: bool) -> dict:
    """Issue 13's targets, each {value, target, met}; on CPU (dry run) only the figures."""
    checks = {}
    for shape, target in TARGET_MFU.items():
        ours, theirs = items.get(f"trainer_{shape}", {}), items.get(f"transformers_{shape}", {})
        if ours.get("mfu") is not None:
            checks[f"mfu_{shape}"] = {"value": ours["mfu"], "target": target, "met": ours["mfu"] >= target}
        if ours.get("tokens_per_s") and theirs.get("tokens_per_s"):
            ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
            checks[f"vs_transformers_{shape}"] = {"value": ratio, "target": TARGET_VS_TRANSFORMERS,
                                                  "met": ratio >= TARGET_VS_TRANSFORMERS}
    for key, result in items.items():
        if key.startswith("deepspeed_") and result.get("tokens_per_s"):
            torch_run = items.get(key.replace("deepspeed_", "trainer_"), {})
            if torch_run.get("tokens_per_s"):
                ratio = result["tokens_per_s"] / torch_run["tokens_per_s"]
                checks["deepspeed_vs_torch"] = {"value": ratio, "target": 1 - TARGET_DEEPSPEED_WITHIN,
                                                "met": ratio >= 1 - TARGET_DEEPSPEED_WITHIN}
        if key.startswith("evaluate_") and result.get("seconds") is not None:
            checks["evaluate_seconds"] = {"value": result["seconds"], "target": TARGET_EVAL_SECONDS,
                                          "met": result["seconds"] <= TARGET_EVAL_SECONDS}
    if dry_run:  # tiny CPU shapes say nothing about the targets
        checks = {key: {"value": check["value"]} for key, check in checks.items()}
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all measurements together")
    parser.add_argument("--item", choices=["trainer", "transformers", "evaluate"], help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, default=2048, help=argparse.SUPPRESS)
    parser.add_argument("--micro-batch", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=140.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.item:  # one measurement, in this process; its result is the last line of stdout
        print(json.dumps(run_item(args)))
        return
    if not args.dry_run and not torch.cuda.is_available():
        print("bench_train: skipped: no CUDA device (--dry-run runs tiny shapes on CPU)")
        return
    results = drive(args)
    write_json_atomic(args.out, results)
    print(f"wrote {args.out} ({results['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
