"""Hydra callback: compare every job of a multirun when the sweep ends (conf/sweep/*.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from debias.report.comparison import compare_runs


class CompareOnMultirunEnd(Callback):
    """Writes `<sweep dir>/comparison/comparison.{md,html,csv}` and prints, last, its path."""

    def __init__(self, out_subdir: str = "comparison") -> None:
        self.out_subdir = out_subdir

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        markdown = compare_runs([sweep_dir], sweep_dir / self.out_subdir)
        print(f"comparison: {markdown}", flush=True)
