"""The intervention pipeline, one Hydra app:  python pipelines/intervene.py [overrides]

prepare -> rewrite (and its independent check) -> train (treatment, control) -> evaluate
(baseline, control, treatment) -> report; with plan=true only the run's cost is printed (tokens per
arm, tokens/s, GPU-hours, wall time), nothing is read or trained. The stages are library functions
in debias/stages.py, the settings and their checks are dataclasses in debias/config.py, every
expensive result is a debias.cache entry. This file only hands Hydra's config to them, and turns
bad settings into one line on stderr and exit status 2.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from debias.app import hydra_app


def intervene(cfg: DictConfig, run_dir: Path) -> None:
    from debias import stages  # after Hydra has composed and checked the settings
    from debias.config import to_run_config

    stages.run(to_run_config(cfg), run_dir)


if __name__ == "__main__":
    hydra_app("config", intervene)()
