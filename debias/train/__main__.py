"""Worker entry point: `python -m debias.train <run_dir>/train_job.json`.

torchrun / the deepspeed launcher start this once per rank (see `launch.py`); it also runs a job
spec by hand in one process. The spec is the record `launch_training` writes into the run dir.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from debias.errors import UserError, exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m debias.train", description=__doc__.splitlines()[0])
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


if __name__ == "__main__":
    main()
