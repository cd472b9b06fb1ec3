"""Score any Hugging Face GPT-NeoX folder without Hydra:

    python -m debias.evaluate --model FOLDER [--crows-pairs CSV] [--winobias DIR] [--lambada JSONL]
                              [--out report.json]

Only the benchmarks whose data is given run (the manipulation check needs no data and always
runs). Prints a short table; `--out` writes metrics and per-item values as JSON.
"""

from __future__ import annotations

import argparse
import math

from dataclasses import asdict

from debias.config import CrowsPairsConfig, EvalConfig, LambadaConfig, WinoBiasConfig
from debias.errors import exit_on_user_error
from debias.evaluate.suite import evaluate_model
from debias.io import write_json_atomic


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m debias.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Hugging Face GPT-NeoX folder with tokenizer.json")
    parser.add_argument("--crows-pairs", help="crows_pairs_anonymized.csv, or a hub name such as nyu-mll/crows_pairs")
    parser.add_argument("--bias-type", default="gender", help="CrowS-Pairs bias type ('' for all; default gender)")
    parser.add_argument("--winobias", help="folder of the WinoBias bracket files, or uclanlp/wino_bias")
    parser.add_argument("--lambada", help="lambada_test.jsonl (OpenAI version)")
    parser.add_argument("--lambada-limit", type=int, help="score only the first N passages")
    parser.add_argument("--out", help="write {metrics, items} as JSON here")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float64"], help="weights dtype (default float32)")
    parser.add_argument("--batch-size", type=int, default=EvalConfig.batch_size)
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def summary_rows(metrics: dict) -> list[tuple[str, str]]:
    """(metric, value with interval) rows for the table."""
    wanted = [("crows_pairs", "pct_stereotype"), ("crows_pairs", "likelihood_diff"),
              ("winobias", "stereotype_accuracy"), ("lambada", "perplexity"), ("lambada", "accuracy"),
              ("manipulation", "feminine_preference")]
    rows = []
    for section, name in wanted:
        part = metrics.get(section)
        if not part:
            continue
        low, high = part.get(f"{name}_ci95", (math.nan, math.nan))
        p = part.get(f"{name}_p")
        text = f"{part[name]:.4f}  [{low:.4f}, {high:.4f}]" + (f"  p={p:.3g}" if p is not None else "")
        rows.append((f"{section}.{name} (n={part.get('n', '?')})", text))
    for kind, gap in metrics.get("winobias", {}).get("coreference", {}).items():
        if isinstance(gap, dict):
            rows.append((f"winobias.coreference.{kind}.gap (n={gap['n']})",
                         f"{gap['gap']:+.4f}  [{gap['gap_ci95'][0]:+.4f}, {gap['gap_ci95'][1]:+.4f}]  p={gap['gap_p']:.3g}"))
    return rows


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    eval_cfg = EvalConfig(
        device=args.device, dtype=args.dtype, batch_size=args.batch_size,
        crows_pairs=CrowsPairsConfig(enabled=bool(args.crows_pairs), path=args.crows_pairs,
                                     bias_type=args.bias_type or None),
        winobias=WinoBiasConfig(enabled=bool(args.winobias), path=args.winobias),
        lambada=LambadaConfig(enabled=bool(args.lambada), path=args.lambada, limit=args.lambada_limit),
    )
    metrics, items = evaluate_model(args.model, eval_cfg, progress=not args.no_progress)
    rows = summary_rows(metrics)
    width = max(len(name) for name, _ in rows)
    print(f"model: {args.model}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if args.out:
        write_json_atomic(args.out, {"metrics": metrics, "items": items, "eval_config": asdict(eval_cfg)})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
