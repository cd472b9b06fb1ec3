"""debias.stages, the parts that need no model: the report is labelled with the run's window, the
paired tests use the run's bootstrap settings, the benchmark files are checksummed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from debias.config import CrowsPairsConfig, EvalConfig, LambadaConfig, WinoBiasConfig
from debias.report import assemble
from debias.stages import eval_file_checksums
from debias.stream import Geometry, Window


def test_the_report_is_labelled_with_the_window_it_trained_on():
    """A run started at intervention.start_step is not labelled with the preset's ratio."""
    window = Window.from_start_step(Geometry(batch_size=4, row_length=9, total_steps=1000, checkpoint_interval=10), 800)
    prepared = SimpleNamespace(window=window, model={}, data={})
    cfg = {"intervention": {"direction": "m2f", "ratio": 0.07, "start_step": 800, "fraction": 1.0}}
    run = assemble.run_report(cfg=cfg, prepared=prepared, rewrite=None, training={}, arms={}, comparisons={},
                              timing={})["run"]
    assert (run["ratio"], run["start_step"], run["end_step"], run["num_steps"]) == (0.2, 800, 1000, 200)


def test_paired_comparisons_use_the_runs_bootstrap_settings():
    rng = np.random.default_rng(0)
    items = {arm: {"manipulation": {f"t{i}": {"feminine_preference": float(v)} for i, v in enumerate(rng.normal(shift, 1, 30))}}
             for arm, shift in (("treatment", 0.5), ("control", 0.0), ("baseline", 0.0))}

    def test(n_resamples, seed):
        result = assemble.paired_comparisons(items, n_resamples=n_resamples, seed=seed)
        return result["treatment_vs_control"]["manipulation"]["feminine_preference"]

    assert test(200, 1) == test(200, 1)
    assert test(200, 1)["diff_ci95"] != test(200, 2)["diff_ci95"]  # eval.seed reaches the test
    assert test(200, 1)["diff_ci95"] != test(2000, 1)["diff_ci95"]  # eval.bootstrap_samples too
    assert test(200, 1)["diff"] == test(2000, 1)["diff"]


def test_benchmark_files_of_enabled_sections_are_checksummed(tmp_path):
    (tmp_path / "wino").mkdir()
    (tmp_path / "wino" / "a.txt").write_text("1 The [nurse] said [she] would.")
    (tmp_path / "crows.csv").write_text("x")
    config = EvalConfig(crows_pairs=CrowsPairsConfig(path=str(tmp_path / "crows.csv")),
                        winobias=WinoBiasConfig(path=str(tmp_path / "wino")),
                        lambada=LambadaConfig(enabled=False, path=str(tmp_path / "crows.csv")))
    sums = eval_file_checksums(config)
    assert set(sums) == {"crows_pairs", "winobias"}
    (tmp_path / "wino" / "a.txt").write_text("1 The [nurse] said [he] would.")
    assert eval_file_checksums(config)["winobias"] != sums["winobias"]  # content, not names, keys the evaluation
