"""The intervention pipeline, one Hydra app:  python pipelines/intervene.py [overrides]

prepare -> rewrite (and its independent check) -> train (treatment, control) -> evaluate
(baseline, control, treatment) -> report; with plan=true only the run's cost is printed (tokens per
arm, tokens/s, GPU-hours, wall time), nothing is read or trained. The stages are library functions
in debias/stages.py, the settings and their checks are dataclasses in debias/config.py, every
expensive result is a debias.cache entry. This file only hands Hydra's config to them, and turns
bad settings into one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python pipelines/intervene.py` from a plain checkout

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from debias.app import refused_runs_leave_nothing, run_hydra_app  # noqa: E402
from debias.config import to_run_config  # noqa: E402
from debias.errors import exit_on_user_error  # noqa: E402


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from debias import stages

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with refused_runs_leave_nothing(run_dir):
        stages.run(to_run_config(cfg), run_dir)


if __name__ == "__main__":
    run_hydra_app(main)
