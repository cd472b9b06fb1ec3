"""Two commands:

    python -m debias.train <run_dir>/train_job.json     a training worker (what launchers start)
    python -m debias.train plan --model pythia-1.4b --ratio 0.07 --gpus 8    the cost of a run

torch.distributed.run / the deepspeed launcher start the worker once per rank (see `launch.py`);
it also runs a job spec by hand in one process. The spec is the record `launch_training` writes
into the run dir. `plan` prints tokens per arm, throughput and GPU-hours (see `plan.py`).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from debias.errors import ArgumentParser, UserError, exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plan"]:
        return plan_command(argv[1:])
    parser = ArgumentParser(prog="python -m debias.train", description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="train_job.json written by debias.train.launch_training")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help="set by the deepspeed launcher (LOCAL_RANK is read from the environment)")
    args = parser.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text())
        job, trainer = spec["job"], spec["trainer"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise UserError(f"{args.spec}: not a train_job.json ({err}); write it with debias.train.launch_training") from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from debias.train.config import TrainerConfig, TrainJob
    from debias.train.loop import EXIT_DIVERGED, TrainingDiverged, run_training

    job, trainer = TrainJob.from_dict(job), TrainerConfig.from_dict(trainer)  # the file is read once, here

    try:
        run_training(job, trainer, args.spec.parent)
    except TrainingDiverged as err:  # not bad input, but still one clear line
        print(f"error: training diverged: {err}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)


def plan_command(argv: list[str]) -> None:
    from debias.stream import Geometry, Window
    from debias.train.plan import (DEVICES, MEASURED_SOURCE, cost_plan, measured_from_results, model_size,
                                   plan_table)

    parser = ArgumentParser(prog="python -m debias.train plan",
                                     description="GPU-hours and wall time of a run (both arms and evaluations), before it starts")
    parser.add_argument("--model", action="append", help="e.g. pythia-1.4b (repeat for several); default with --all: 160m..12b")
    parser.add_argument("--ratio", type=float, action="append", help="window as a share of training, e.g. 0.07 (repeatable)")
    parser.add_argument("--all", action="store_true", help="pythia-160m ... 12b x ratios 0.07 and 0.21")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--device", default="H200", choices=sorted(DEVICES))
    parser.add_argument("--tokens-per-s", type=float, help="measured trainer tokens/s per GPU for this model (overrides)")
    parser.add_argument("--figures", help="benchmarks/results/gpu.json from benchmarks/gpu_check.sh on this device")
    parser.add_argument("--json", action="store_true", help="print the plans as JSON")
    args = parser.parse_args(argv)
    models = args.model or (["pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b", "pythia-2.8b", "pythia-6.9b",
                             "pythia-12b"] if args.all else None)
    if not models:
        raise UserError("plan: give --model (e.g. pythia-1.4b) or --all")
    ratios = args.ratio or [0.07, 0.21]
    measured = measured_from_results(args.figures, args.device) if args.figures else None
    geometry = Geometry()
    plans = []
    for model in models:
        size = model_size(model, seq_len=geometry.row_length - 1)
        for ratio in ratios:
            window = Window.from_ratio(geometry, ratio)
            plans.append(cost_plan(size, ratio, window.num_rows, geometry.row_length - 1, args.gpus, args.device,
                                   args.tokens_per_s, measured))
    if args.json:
        from debias.train.plan import as_dict

        print(json.dumps([as_dict(p) for p in plans], indent=2))
        return
    print(f"Cost plan on {args.gpus} x {args.device}; throughput figures: "
          f"{'given' if args.tokens_per_s else (args.figures or MEASURED_SOURCE)}; projections as described in "
          "debias/train/plan.py. A run = 2 arms + 3 evaluations.")
    print(plan_table(plans))


if __name__ == "__main__":
    main()
