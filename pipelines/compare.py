"""Compare finished runs:  python pipelines/compare.py RUN_OR_MULTIRUN_DIR... [--out DIR]

Writes comparison.md, .html and .csv: first the headline metrics of every arm (association, blanket
shift, LM quality, manipulation check: value [95% CI]) against the intervention ratio and each
treatment's paired effects against its control (difference [95% CI], p, p_holm), read from the
metric declarations; then the plots against the ratio, every metric and every paired test.
Folders without a readable report.json are named in a warning and skipped. The last line printed
is `comparison: <path to comparison.md>`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python pipelines/compare.py` from a checkout

from debias.errors import ArgumentParser, UserError, exit_on_user_error  # noqa: E402
from debias.io import check_writable  # noqa: E402
from debias.report import compare_runs  # noqa: E402


@exit_on_user_error
def main(argv: list[str] | None = None) -> Path:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders and/or multirun folders")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: <multirun>/comparison for one folder, "
                             "else outputs/comparisons/<time>)")
    args = parser.parse_args(argv)
    if not args.runs:
        raise UserError("RUNS: no run folders given; e.g. make compare RUNS=\"outputs/multirun/<time>\" "
                        "or RUNS=\"outputs/runs/a outputs/runs/b\"")
    out = args.out
    if out is None:
        out = (args.runs[0] / "comparison" if len(args.runs) == 1 and not (args.runs[0] / "report.json").exists()
               else Path("outputs/comparisons") / time.strftime("%Y-%m-%d_%H-%M-%S"))
    check_writable(out, f"--out {out}")
    markdown = compare_runs(args.runs, out)
    print(f"comparison: {markdown}")
    return markdown


if __name__ == "__main__":
    main()
