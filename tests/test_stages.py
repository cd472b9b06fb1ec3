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


def test_the_check_tagger_setting_names_the_installed_pipeline_or_refuses_in_one_line(monkeypatch):
    """auto = spaCy's pipeline where installed, else none; spacy without one installed is refused."""
    import importlib.util

    from debias.errors import UserError
    from debias.rewrite.checker import TAGGER_MODELS
    from debias.stages import installed_tagger

    assert installed_tagger("none") is None
    found = installed_tagger("auto")
    assert found is None or found.split()[0] in TAGGER_MODELS  # "<package> <version>": the check's cache key
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert installed_tagger("auto") is None
    try:
        installed_tagger("spacy")
    except UserError as err:
        assert "\n" not in str(err) and str(err).startswith("intervention.check_tagger=spacy: none of spaCy's")
    else:
        raise AssertionError("check_tagger=spacy was accepted without spaCy")


def test_the_report_carries_the_independent_check_under_rewrite(tmp_path, monkeypatch):
    from debias import stages
    from debias.config import InterventionConfig

    written = {}
    monkeypatch.setattr("debias.report.write_run_report", lambda run_dir, report: written.update(report) or run_dir / "report.json")
    monkeypatch.setattr(assemble, "summary_lines", lambda report: [])
    window = Window.from_start_step(Geometry(batch_size=4, row_length=9, total_steps=1000, checkpoint_interval=10), 930)
    prepared = SimpleNamespace(window=window, model={}, data={})
    rewritten = SimpleNamespace(audit={"changed_tokens": 3}, manifest={}, stream="s", first_row=0)
    config = SimpleNamespace(intervention=InterventionConfig(direction="m2f"))
    monkeypatch.setattr(stages, "as_dict", lambda config: {"intervention": {"direction": "m2f"}})
    check = {"precision": 0.99, "precision_ci95": [0.98, 1.0]}
    stages.report(config, prepared, rewritten, {}, {}, {}, {}, tmp_path, {}, rewrite_check=check)
    assert written["rewrite"]["independent_check"] == check and written["rewrite"]["audit"] == {"changed_tokens": 3}
