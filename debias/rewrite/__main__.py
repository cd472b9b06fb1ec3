"""Command line of the rewriter.

    python -m debias.rewrite --tokenizer T --direction {m2f,f2m,swap} [--resolver R] < in.txt
        rewrite each stdin line (tokenize -> rewrite ids -> decode) to stdout
    python -m debias.rewrite window --source S --out DIR --tokenizer T --direction D (--ratio R | --start-step N)
        rewrite a window of a stream (manifest.json, audit.json and the rewritten stream in DIR)
    python -m debias.rewrite verify DIR
        re-scan a finished pass; exit 1 when a source-gender pronoun remains that the audit does not explain
"""

from __future__ import annotations

import argparse
import json
import sys

from debias.errors import exit_on_user_error
from debias.rewrite.lexicon import DIRECTIONS
from debias.rewrite.resolvers import RESOLVERS

EXIT_VERIFY_FAILED = 1


def text_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m debias.rewrite", description="Rewrite pronouns in stdin lines.",
                                epilog="Subcommands: window (rewrite a stream window), verify DIR.")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json (or its folder)")
    p.add_argument("--direction", required=True, help=f"one of {', '.join(DIRECTIONS)}")
    p.add_argument("--resolver", default="rules", help=f"his/her decisions: {', '.join(RESOLVERS)}")
    return p


def window_parser() -> argparse.ArgumentParser:
    from debias.stream.cli import add_geometry_flags

    p = argparse.ArgumentParser(prog="python -m debias.rewrite window", description="Rewrite a stream window.")
    p.add_argument("--source", required=True, help="stream prefix or .idx")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--direction", required=True, help=f"one of {', '.join(DIRECTIONS)}")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--ratio", type=float, help="the last RATIO of training (0.07, 0.21)")
    where.add_argument("--start-step", type=int, help="first step of the window")
    p.add_argument("--fraction", type=float, default=1.0, help="share of rows rewritten")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--resolver", default="rules", help=f"one of {', '.join(RESOLVERS)}")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--block-rows", type=int, default=None, help="rows per block (resume granularity)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_geometry_flags(p)
    return p


def run_text(argv: list[str]) -> None:
    from debias.rewrite.text import rewrite_ids
    from debias.rewrite.tables import get_tables
    from debias.tokenizer import tokenizer_path
    from debias.rewrite.lexicon import check_direction
    from debias.rewrite.resolvers import check_resolver

    args = text_parser().parse_args(argv)
    tables = get_tables(str(tokenizer_path(args.tokenizer)), check_direction(args.direction))
    resolver = check_resolver(args.resolver)
    for line in sys.stdin:
        body = line.rstrip("\n")
        ids = tables.tokenizer.encode(body, add_special_tokens=False).ids
        out = rewrite_ids(ids, tables, resolver)
        sys.stdout.write(tables.tokenizer.decode(out.tolist(), skip_special_tokens=False) + line[len(body):])
        sys.stdout.flush()


def run_window(argv: list[str]) -> None:
    from debias.rewrite.window import DEFAULT_BLOCK_ROWS, rewrite_window
    from debias.stream.cli import geometry_from
    from debias.stream.geometry import Window

    args = window_parser().parse_args(argv)
    window = Window.from_config(geometry_from(args), ratio=args.ratio, start_step=args.start_step)
    result = rewrite_window(args.source, window, args.out, args.tokenizer, args.direction,
                            fraction=args.fraction, seed=args.seed, resolver=args.resolver,
                            workers=args.workers, block_rows=args.block_rows or DEFAULT_BLOCK_ROWS,
                            progress=not args.quiet)
    audit = result.audit
    print(json.dumps({"stream": str(result.stream), "first_row": result.first_row,
                      "changed_tokens": audit["changed_tokens"], "rows_touched": audit["rows_touched"],
                      "remaining_source_pronouns": audit["remaining_source_pronouns"]["total"]}))


def run_verify(argv: list[str]) -> None:
    from debias.rewrite.verify import verify_pass

    p = argparse.ArgumentParser(prog="python -m debias.rewrite verify")
    p.add_argument("out", help="output folder of a finished pass")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    problems = verify_pass(args.out, progress=not args.quiet)
    if problems:
        for problem in problems:
            print(f"verify failed: {args.out}: {problem}", file=sys.stderr)
        sys.exit(EXIT_VERIFY_FAILED)
    print(f"verified: {args.out}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"window": run_window, "verify": run_verify}
    if argv and argv[0] in commands:
        commands[argv[0]](argv[1:])
    else:
        run_text(argv)


if __name__ == "__main__":
    main()
