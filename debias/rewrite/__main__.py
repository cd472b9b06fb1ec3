"""Command line of the rewriter.

    python -m debias.rewrite --tokenizer T --direction {m2f,f2m,swap} [--resolver R] < in.txt
        rewrite each stdin line (tokenize -> rewrite ids -> decode) to stdout
    python -m debias.rewrite window --source S --out DIR --tokenizer T --direction D (--ratio R | --start-step N)
        rewrite a window of a stream (manifest.json, audit.json and the rewritten stream in DIR)
    python -m debias.rewrite verify DIR [--sample WORDS] [--seed S] [--tagger auto|spacy|none] [--json FILE]
        check a finished pass (checksum, token ids, every change, audit): one error line and exit 2
        on the first thing wrong; then re-read a seeded sample independently and print its rates
"""

from __future__ import annotations

import argparse
import json
import sys

from debias.errors import ArgumentParser, UserError, exit_on_user_error
from debias.io import check_writable_file, write_json_atomic
from debias.rewrite.checker import DEFAULT_SAMPLE_WORDS, TAGGER_CHOICES, check_pass
from debias.rewrite.lexicon import DIRECTIONS, check_direction
from debias.rewrite.resolvers import RESOLVERS, check_resolver
from debias.rewrite.tables import get_tables
from debias.rewrite.text import rewrite_ids
from debias.rewrite.verify import verify_pass
from debias.rewrite.window import DEFAULT_BLOCK_ROWS, rewrite_window
from debias.stream.cli import add_geometry_flags, geometry_from
from debias.stream.geometry import Window
from debias.tokenizer import tokenizer_path

def text_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m debias.rewrite", description="Rewrite pronouns in stdin lines.",
                                epilog="Subcommands: window (rewrite a stream window), verify DIR.")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json (or its folder)")
    p.add_argument("--direction", required=True, help=f"one of {', '.join(DIRECTIONS)}")
    p.add_argument("--resolver", default="rules", help=f"his/her decisions: {', '.join(RESOLVERS)}")
    return p


def window_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m debias.rewrite window", description="Rewrite a stream window.")
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
    args = text_parser().parse_args(argv)
    tables = get_tables(str(tokenizer_path(args.tokenizer)), check_direction(args.direction))
    resolver = check_resolver(args.resolver)
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"stdin: line {number} is not UTF-8 text (byte {raw[err.start]:#04x} at column "
                            f"{err.start + 1}); the rewriter reads text, one document per line") from None
        body = line.rstrip("\n")
        ids = tables.tokenizer.encode(body, add_special_tokens=False).ids
        out = rewrite_ids(ids, tables, resolver)
        sys.stdout.write(tables.tokenizer.decode(out.tolist(), skip_special_tokens=False) + line[len(body):])
        sys.stdout.flush()


def run_window(argv: list[str]) -> None:
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


def verify_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m debias.rewrite verify",
                                description="Check a finished pass, then re-read a sample of it independently.")
    p.add_argument("out", help="output folder of a finished pass")
    p.add_argument("--sample", type=int, default=DEFAULT_SAMPLE_WORDS,
                   help=f"changed words to re-read (default {DEFAULT_SAMPLE_WORDS}: +-1%% at 95%%); 0 skips it")
    p.add_argument("--seed", type=int, default=0, help="seed of the row sample")
    p.add_argument("--tagger", default="auto", help="spaCy's tagger as a second reader: auto (where installed), "
                                                    "spacy, none")
    p.add_argument("--json", help="also write the re-check's figures to this file")
    p.add_argument("--quiet", action="store_true")
    return p


def run_verify(argv: list[str]) -> None:
    args = verify_parser().parse_args(argv)
    if args.sample < 0:
        raise UserError(f"--sample {args.sample}: must be a number of words, 0 or more")
    if args.tagger not in TAGGER_CHOICES:  # before the long pass over every row
        raise UserError(f"--tagger {args.tagger}: use one of {', '.join(TAGGER_CHOICES)}")
    if args.json:
        check_writable_file(args.json, f"--json {args.json}")
    problems = verify_pass(args.out, progress=not args.quiet)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise UserError(f"verify failed: {problems[0]}{more}")
    print(f"verified: {args.out} (checksum, token ids, every change an allowed pronoun rewrite, audit)")
    if args.sample == 0:
        return
    report = check_pass(args.out, sample_words=args.sample, seed=args.seed, tagger=args.tagger)
    if args.json:
        write_json_atomic(args.json, report)
    print(independent_summary(report))


def independent_summary(r: dict) -> str:
    """The re-check's rates in a few lines."""
    def rate(name):
        value, ci = r[name], r[f"{name}_ci95"]
        return "n/a" if value is None else f"{value:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"

    lines = [f"independent re-check ({r['checker']['tagger'] or 'rules only'}; seed {r['seed']}): "
             f"{r['sample_rows']} rows, {r['changed_words']} changed words",
             f"  precision (changed words that are {r['direction']} pronoun rewrites): {rate('precision')}",
             f"  residual source-gender pronouns: {r['residual']} of {r['source_pronouns']} = {rate('residual_rate')}",
             f"  suspicious changes: {r['suspicious_count']}"]
    lines += [f"    row {s['row']}: {s['word']!r} -> {s['after']!r} ({s['why']}): ...{s['context']}..."
              for s in r["suspicious"][:5]]
    return "\n".join(lines)


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
