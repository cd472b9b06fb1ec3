"""Evaluation throughput: the full evaluation (CrowS-Pairs gender, WinoBias dev+test, LAMBADA)
through the batched scorer, beside a plain loop that runs one forward pass per request.

Model: by default a random-weight GPT-NeoX of the demo architecture (conf/model/pythia-demo.yaml:
4 layers of width 64, context 128) with its embedding padded for the real GPT-NeoX-20B tokenizer
(50,304 rows), because the benchmarks are real text tokenized as Pythia sees it. Point
DEBIAS_BENCH_EVAL_MODEL at a Hugging Face folder (e.g. a built demo suite's final checkpoint) to
time that instead. Weights do not change the work: every request is scored either way.
On CUDA the same is done for the pythia-160m shape (random weights, bf16 autocast for the body,
the output layer in fp32 as the scorer runs it).

Both sides score exactly the requests the benchmarks send (recorded from the batched run). The
baseline loop is slow, so by default it runs on a seeded sample of requests of each benchmark
and its time is scaled to the full count; DEBIAS_BENCH_EVAL_FULL=1 times every request and all
5,153 LAMBADA passages (default: the first 500). The two sides' log-probabilities are compared
on the sampled requests as a check.

Figures go to stdout and benchmarks/results/evaluate.json.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from debias.config import (CrowsPairsConfig, EvalConfig, LambadaConfig, ManipulationConfig, WinoBiasConfig,  # noqa: E402
                           shared_data_path)
from debias.evaluate import Scorer, evaluate_with_scorer, load_tokenizer  # noqa: E402
from debias.io import write_json_atomic  # noqa: E402
from debias.model import GPTNeoX, GPTNeoXConfig  # noqa: E402

RESULTS = HERE / "results" / "evaluate.json"
DATA = Path(shared_data_path())
FULL = os.environ.get("DEBIAS_BENCH_EVAL_FULL") == "1"
BASELINE_SAMPLE = int(os.environ.get("DEBIAS_BENCH_EVAL_SAMPLE", "80"))  # requests per benchmark
SHAPES = {  # (layers, width, heads, context)
    "pythia-demo": (4, 64, 4, 128),
    "pythia-160m": (12, 768, 12, 2048),
}


class RecordingScorer(Scorer):
    """A Scorer that remembers what each benchmark asked for and how long scoring took."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, list, list, float]] = []

    def score(self, requests, desc="scoring"):
        started = time.perf_counter()
        scores = super().score(requests, desc)
        self.calls.append((desc, list(requests), scores, time.perf_counter() - started))
        return scores


@torch.no_grad()
def plain_logprob(model, request, device, autocast: bool) -> float:
    """One forward pass over context + continuation, full log-softmax, sum over the continuation.
    As the scorer does: the body under autocast (CUDA), the output layer in fp32."""
    ids = torch.tensor([request.context + request.continuation], device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        hidden = model.hidden_states(ids)[0, :-1]
    logits = hidden.float() @ model.embed_out.weight.float().T
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(request.context) - 1
    targets = torch.tensor(request.continuation, device=device)
    return float(logprobs[start:].gather(1, targets[:, None]).sum())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(shape: str, device: torch.device) -> dict:
    tokenizer_file = DATA / "tokenizers/gpt-neox-20b/tokenizer.json"
    folder = os.environ.get("DEBIAS_BENCH_EVAL_MODEL")
    if folder and shape == "pythia-demo":
        model = GPTNeoX.from_pretrained(folder, device=device).eval()
        tokenizer, described = load_tokenizer(folder), f"{folder}"
    else:
        layers, width, heads, context = SHAPES[shape]
        torch.manual_seed(0)
        model = GPTNeoX(GPTNeoXConfig(vocab_size=50304, hidden_size=width, num_layers=layers, num_heads=heads,
                                      intermediate_size=4 * width, max_position_embeddings=context)).to(device).eval()
        tokenizer = load_tokenizer(tokenizer_file)
        described = f"random-weight GPT-NeoX, {shape} shape ({layers} layers x {width}, context {context}), vocab 50304"
    autocast = device.type == "cuda"
    scorer = RecordingScorer(model, tokenizer, batch_size=64 if device.type == "cuda" else 32,
                             device=device, progress=False)
    lambada_limit = None if FULL else 500
    cfg = EvalConfig(bootstrap_samples=2000, manipulation=ManipulationConfig(enabled=False),
                     crows_pairs=CrowsPairsConfig(path=str(DATA / "crows_pairs/crows_pairs_anonymized.csv")),
                     winobias=WinoBiasConfig(path=str(DATA / "winobias"), splits=["dev", "test"]),
                     lambada=LambadaConfig(enabled=True, path=str(DATA / "lambada/lambada_test.jsonl"), limit=lambada_limit))

    print(f"[{shape} on {device}] batched evaluation ...", flush=True)
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    metrics, _ = evaluate_with_scorer(scorer, cfg)
    synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu

    print(f"[{shape} on {device}] one request at a time ...", flush=True)
    rng = random.Random(1234)
    benchmarks, unbatched, worst = {}, 0.0, 0.0
    for desc, requests, scores, scoring_seconds in scorer.calls:
        picked = list(range(len(requests))) if FULL else sorted(rng.sample(range(len(requests)),
                                                                           min(BASELINE_SAMPLE, len(requests))))
        synchronize(device)
        started = time.perf_counter()
        for i in picked:
            lp = plain_logprob(model, requests[i], device, autocast)
            worst = max(worst, abs(lp - scores[i].logprob))
        synchronize(device)
        measured = time.perf_counter() - started
        estimate = measured * len(requests) / len(picked)
        unbatched += estimate
        benchmarks[desc] = {"requests": len(requests), "unique_requests": len(set(requests)),
                            "batched_scoring_seconds": round(scoring_seconds, 3),
                            "unbatched_seconds": round(estimate, 3), "unbatched_timed_requests": len(picked)}
    return {
        "model": described, "device": str(device), "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3), "unbatched_seconds": round(unbatched, 3),
        "speedup": round(unbatched / seconds, 2),
        "unbatched_extrapolated": not FULL, "lambada_passages": metrics["lambada"]["n"],
        "max_abs_logprob_difference": worst, "benchmarks": benchmarks,
        "note": ("seconds = the whole evaluation (loading, scoring, statistics); unbatched_seconds = "
                 "scoring only, one forward pass per request" + ("" if FULL else
                 f", timed on {BASELINE_SAMPLE} seeded requests per benchmark and scaled to all")),
    }


def main() -> None:
    if not (DATA / "crows_pairs/crows_pairs_anonymized.csv").is_file():
        sys.exit(f"bench_evaluate: real data not found under {DATA} (set DEBIAS_SHARED_DATA)")
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                          f"torch {torch.__version__}, {torch.get_num_threads()} threads",
               "cpu": run("pythia-demo", torch.device("cpu"))}
    if torch.cuda.is_available():
        results["gpu"] = run("pythia-160m", torch.device("cuda"))
        results["gpu"]["device"] = torch.cuda.get_device_name()
    results.update({k: results["cpu"][k] for k in ("seconds", "unbatched_seconds", "speedup")})

    for name in ("cpu", "gpu"):
        if name in results:
            r = results[name]
            print(f"\n{name}: {r['model']}")
            print(f"  {'benchmark':<24}{'requests':>10}{'unique':>10}{'batched s':>12}{'one-by-one s':>14}")
            for desc, b in r["benchmarks"].items():
                print(f"  {desc:<24}{b['requests']:>10}{b['unique_requests']:>10}"
                      f"{b['batched_scoring_seconds']:>12.2f}{b['unbatched_seconds']:>14.2f}")
            print(f"  whole evaluation {r['seconds']:.1f} s (CPU {r['cpu_seconds']:.1f} s) vs one request at a "
                  f"time {r['unbatched_seconds']:.1f} s{' (extrapolated)' if r['unbatched_extrapolated'] else ''}: "
                  f"{r['speedup']:.1f}x; max |log-prob difference| {r['max_abs_logprob_difference']:.2e}")
    write_json_atomic(RESULTS, results)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
