"""Score any Hugging Face GPT-NeoX folder without Hydra:

    python -m debias.evaluate --model FOLDER [--crows-pairs CSV] [--winobias DIR] [--lambada JSONL]
                              [--perplexity-text FILE_OR_DATASET] [--out report.json]

Only the benchmarks whose data is given run (the manipulation check needs no data and always
runs). Prints a short table; `--out` writes metrics and per-item values as JSON (its folder is
checked for writing before any scoring starts).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict

from debias.config import CrowsPairsConfig, EvalConfig, LambadaConfig, PerplexityConfig, WinoBiasConfig
from debias.errors import ArgumentParser, exit_on_user_error
from debias.evaluate.catalog import metric_declarations
from debias.evaluate.suite import evaluate_model
from debias.io import check_writable_file, write_json_atomic


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m debias.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Hugging Face GPT-NeoX folder with tokenizer.json")
    parser.add_argument("--crows-pairs", help="crows_pairs_anonymized.csv, or a hub name such as nyu-mll/crows_pairs")
    parser.add_argument("--bias-type", default="gender", help="CrowS-Pairs bias type ('' for all; default gender)")
    parser.add_argument("--winobias", help="folder of the WinoBias bracket files, or uclanlp/wino_bias")
    parser.add_argument("--lambada", help="lambada_test.jsonl (OpenAI version)")
    parser.add_argument("--lambada-limit", type=int, help="score only the first N passages")
    parser.add_argument("--perplexity-text", help="held-out text for perplexity: .jsonl, plain text, or a datasets name")
    parser.add_argument("--perplexity-text-field", default="text", help="the .jsonl / datasets field holding the text")
    parser.add_argument("--perplexity-rows", type=int, default=64, help="rows to pack from the text (default 64)")
    parser.add_argument("--out", help="write {metrics, items} as JSON here")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float64"], help="weights dtype (default float32)")
    parser.add_argument("--batch-size", type=int, default=EvalConfig.batch_size)
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def summary_rows(metrics: dict) -> list[tuple[str, str]]:
    """(metric, value with interval) rows for the table: every declared metric present, in the
    declarations' order (debias/evaluate/catalog.py), headline roles marked."""
    rows = []
    for declaration in metric_declarations():
        part = declaration.lookup(metrics.get(declaration.benchmark) or {})
        name = declaration.name.rsplit(".", 1)[-1]
        if not part or part.get(name) is None:
            continue
        low, high = part.get(f"{name}_ci95") or (math.nan, math.nan)
        p = part.get(f"{name}_p")
        text = f"{part[name]:+.4f}  [{low:+.4f}, {high:+.4f}]" + (f"  p={p:.3g}" if p is not None else "")
        role = f"  <- {declaration.headline.value}" if declaration.headline else ""
        rows.append((f"{declaration.key} (n={part.get(f'{name}_n', part.get('n', '?'))})", text + role))
    if "perplexity" in metrics:
        rows.append(("perplexity.source", metrics["perplexity"]["source"]))
    return rows


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.out:
        check_writable_file(args.out, f"--out {args.out}")
    eval_cfg = EvalConfig(
        device=args.device, dtype=args.dtype, batch_size=args.batch_size,
        crows_pairs=CrowsPairsConfig(enabled=bool(args.crows_pairs), path=args.crows_pairs,
                                     bias_type=args.bias_type or None),
        winobias=WinoBiasConfig(enabled=bool(args.winobias), path=args.winobias),
        lambada=LambadaConfig(enabled=bool(args.lambada), path=args.lambada, limit=args.lambada_limit),
        perplexity=PerplexityConfig(enabled=bool(args.perplexity_text), text=args.perplexity_text,
                                    text_field=args.perplexity_text_field, text_rows=args.perplexity_rows),
    )
    metrics, items = evaluate_model(args.model, eval_cfg, progress=not args.no_progress)
    rows = summary_rows(metrics)
    width = max(len(name) for name, _ in rows)
    print(f"model: {args.model}  ({', '.join(f'{k} {v}' for k, v in metrics['model']['dtype'].items())})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if args.out:
        write_json_atomic(args.out, {"metrics": metrics, "items": items, "eval_config": asdict(eval_cfg)})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
