"""Look at, build and fetch pre-tokenized training streams (Megatron / GPT-NeoX MMIDIDX).

examples:
  python -m debias.stream info DIR/document                 rows, tokens, steps, 7%/21% windows, shards
  python -m debias.stream show DIR/document --step 133000 --tokenizer tokenizer.json
  python -m debias.stream pack --tokenizer tokenizer.json --seq-len 2048 corpus.jsonl out/document
  python -m debias.stream download deduped DIR              EleutherAI/pile-deduped-pythia-preshuffled
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import numpy as np

from debias.errors import ArgumentParser, UserError, exit_on_user_error
from debias.stream.geometry import Geometry, Window
from debias.stream.mmidx import IndexedStream


def add_geometry_flags(parser: argparse.ArgumentParser) -> None:
    pythia = Geometry()
    group = parser.add_argument_group("geometry (defaults: Pythia)")
    group.add_argument("--batch-size", type=int, default=pythia.batch_size, help="rows per training step")
    group.add_argument("--row-length", type=int, default=pythia.row_length, help="tokens per row")
    group.add_argument("--total-steps", type=int, default=pythia.total_steps, help="steps of the full run")
    group.add_argument("--checkpoint-interval", type=int, default=pythia.checkpoint_interval,
                       help="steps between checkpoints (the window start's grid)")


def geometry_from(args: argparse.Namespace) -> Geometry:
    return Geometry(args.batch_size, args.row_length, args.total_steps, args.checkpoint_interval)


# ----------------------------------------------------------------------------------------------
# info

def describe_stream(stream: IndexedStream, geometry: Geometry, ratios=(0.07, 0.21)) -> dict:
    sizes = stream.sizes
    whole_steps = geometry.steps_in(len(stream))
    windows = {}
    for ratio in ratios:
        try:
            window = Window.from_ratio(geometry, ratio)
        except UserError as err:  # e.g. a geometry too short for this ratio: report, don't fail
            windows[str(ratio)] = {"fits": False, "problem": str(err)}
            continue
        try:
            window.check_fits(stream)
            problem = None
        except UserError as err:
            problem = str(err)
        windows[str(ratio)] = {**window.describe(), "bytes": window.num_bytes(stream.dtype),
                               "fits": problem is None, "problem": problem}
    return {
        **stream.identity(),
        "documents": stream.num_documents,
        "tokens": stream.num_tokens,
        "row_length_stats": ({"min": int(sizes.min()), "max": int(sizes.max()),
                              "mean": float(sizes.mean(dtype=np.float64))} if len(stream) else None),
        "geometry": asdict(geometry),
        "whole_steps": whole_steps,
        "covers_total_steps": whole_steps >= geometry.total_steps,
        # rows after the run's last step (covered) or of the trailing partial step (not covered)
        "spare_rows": len(stream) - geometry.first_row(min(whole_steps, geometry.total_steps)),
        "windows": windows,
        "files": stream.shard_layout(),
    }


def print_info(info: dict) -> None:
    g, stats = info["geometry"], info["row_length_stats"]
    print(f"stream      {info['prefix']}")
    print(f"index       {info['index']} ({info['index_bytes']:,} bytes, sha256 {info['index_sha256'][:16]}…)")
    print(f"rows        {info['rows']:,} ({info['dtype']}), {info['tokens']:,} tokens, "
          f"{info['documents']:,} documents")
    if stats:
        fixed = "all rows equal" if stats["min"] == stats["max"] else "rows differ"
        print(f"row length  min {stats['min']:,}  mean {stats['mean']:,.1f}  max {stats['max']:,} ({fixed})")
    print(f"geometry    batch {g['batch_size']:,} rows x {g['row_length']:,} tokens, "
          f"{g['total_steps']:,} steps, checkpoints every {g['checkpoint_interval']:,}")
    if info["covers_total_steps"]:
        coverage = f"covers all {g['total_steps']:,}; {info['spare_rows']:,} rows after the last step"
    else:
        coverage = f"does NOT cover all {g['total_steps']:,}; {info['spare_rows']:,} rows of a partial step"
    print(f"steps       {info['whole_steps']:,} whole steps in the stream ({coverage})")
    for ratio, w in info["windows"].items():
        if "start_step" not in w:
            print(f"window {ratio:<5}{w['problem']}")
            continue
        verdict = "fits" if w["fits"] else f"does not fit: {w['problem']}"
        print(f"window {ratio:<5}steps {w['start_step']:,}..{w['end_step']:,} = rows "
              f"{w['start_row']:,}..{w['end_row']:,} ({w['num_rows']:,} rows, {w['num_tokens']:,} tokens, "
              f"{w['bytes'] / 1e9:.2f} GB): {verdict}")
    print(f"files       {len(info['files'])}")
    for f in info["files"]:
        first, last = f["rows_starting"]
        print(f"  {f['path']}  {f['bytes']:,} bytes from byte {f['first_byte']:,}, rows starting here {first:,}..{last:,}")


# ----------------------------------------------------------------------------------------------
# show

def show_rows(stream: IndexedStream, rows: range, ids: bool, tokenizer, step: int | None) -> None:
    for k, index in enumerate(rows):
        row = stream.row(index)
        where = f" (step {step}, {k + 1}/{len(rows)})" if step is not None else ""
        print(f"# row {index:,}{where}: {len(row)} tokens")
        if ids or tokenizer is None:
            print(" ".join(map(str, row.tolist())))
        if tokenizer is not None:
            print(tokenizer.decode(row.tolist(), skip_special_tokens=False))


# ----------------------------------------------------------------------------------------------
# argument parsing

def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m debias.stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="rows, dtype, tokens, steps covered, shard layout")
    info.add_argument("path", help="stream prefix, .idx file, or prefix of byte shards")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_geometry_flags(info)

    show = commands.add_parser("show", help="one row, or a step's rows, as ids or text")
    show.add_argument("path", help="stream prefix, .idx file, or prefix of byte shards")
    which = show.add_mutually_exclusive_group(required=True)
    which.add_argument("--row", type=int, help="row index (0-based)")
    which.add_argument("--step", type=int, help="training step (0-based): its batch-size rows")
    show.add_argument("--ids", action="store_true", help="print token ids (the default without --tokenizer)")
    show.add_argument("--tokenizer", help="tokenizer.json to decode rows to text")
    add_geometry_flags(show)

    pack = commands.add_parser(
        "pack", help="tokenize text into rows of seq-len + 1 tokens",
        description="Tokenize documents, end each with <|endoftext|> and cut the token sequence into rows "
                    "of SEQ_LEN + 1 tokens (Pythia: --seq-len 2048 gives rows of 2049); consecutive rows "
                    "share one token as in Megatron's GPT dataset; the tail short of a row is dropped. "
                    "Inputs: .jsonl/.json with a \"text\" field per line, or plain text where blank lines "
                    "separate documents (--documents line: one document per line).")
    pack.add_argument("--tokenizer", required=True, help="tokenizer.json (Hugging Face tokenizers)")
    pack.add_argument("--seq-len", type=int, required=True, help="inputs per row; rows hold seq-len + 1 tokens")
    pack.add_argument("--eos-id", type=int, help="end-of-text id (default: the tokenizer's <|endoftext|>)")
    pack.add_argument("--documents", choices=("paragraph", "line"), default="paragraph",
                      help="how plain text splits into documents (default: blank-line separated)")
    pack.add_argument("inputs", nargs="+", metavar="INPUT", help="text or JSONL files")
    pack.add_argument("output", metavar="OUTPUT_PREFIX", help="writes OUTPUT_PREFIX.bin and .idx")

    download = commands.add_parser("download", help="fetch a pre-shuffled Pythia stream from the hub")
    download.add_argument("repo", help="deduped, standard, or a hub dataset id")
    download.add_argument("local_dir", help="folder to download into (resumes a partial download)")
    download.add_argument("--index-only", action="store_true", help="fetch document.idx alone")
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        stream = IndexedStream(args.path)
        stream.check_index()  # info describes rows it never reads: check where they all point
        info = describe_stream(stream, geometry_from(args))
        print(json.dumps(info, indent=2)) if args.json else print_info(info)
    elif args.command == "show":
        stream, geometry = IndexedStream(args.path), geometry_from(args)
        if args.step is not None:  # one step is a window of one: same checks as a training window
            step = Window.from_start_step(geometry, args.step, args.step + 1)
            step.check_fits(stream)
            rows = range(step.start_row, step.end_row)
        else:
            rows = range(args.row, args.row + 1)
            if not 0 <= args.row < len(stream):
                raise UserError(f"--row {args.row}: the stream holds rows 0..{len(stream) - 1:,}")
        tokenizer = None
        if args.tokenizer:
            from debias.tokenizer import load_tokenizer
            tokenizer = load_tokenizer(args.tokenizer)
        show_rows(stream, rows, args.ids, tokenizer, args.step)
    elif args.command == "pack":
        from debias.stream.pack import pack_texts, read_documents
        summary = pack_texts(read_documents(args.inputs, args.documents), args.tokenizer, args.seq_len,
                             args.output, eos_id=args.eos_id)
        print(json.dumps(summary, indent=2))
        if summary["dropped_tokens"]:
            print(f"dropped the last {summary['dropped_tokens']:,} tokens (short of a full row)", file=sys.stderr)
    elif args.command == "download":
        from debias.stream.download import download_stream
        print(download_stream(args.repo, args.local_dir, index_only=args.index_only))
