"""pipelines/intervene.py and the sweep: configuration composition, bad settings (one line,
exit 2) and the make targets. (The cache: tests/test_cache.py; the schema: tests/test_config.py;
the whole pipeline on a tiny demo: tests/test_pipeline_e2e.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from debias.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def run_pipeline(*args: str, cwd: Path, env_extra: dict | None = None, timeout: int = 600):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([PYTHON, str(ROOT / "pipelines" / "intervene.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def composed(*overrides: str, hydra: bool = False):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


# ---- configuration ----------------------------------------------------------------------------

def test_intervention_overrides_compose():
    cfg = composed("intervention=swap", "intervention.ratio=0.21")
    assert cfg.intervention.direction == "swap" and cfg.intervention.ratio == 0.21
    assert composed().intervention.direction == "m2f"
    assert composed("intervention=none").intervention.direction == "none"


def test_sweep_config_is_ratios_by_directions_on_the_local_launcher():
    cfg = composed("+sweep=demo", hydra=True)
    params = cfg.hydra.sweeper.params
    assert sorted(params["intervention.ratio"].split(",")) == ["0.07", "0.21"]
    assert sorted(params["intervention"].split(",")) == ["m2f", "swap"]
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    assert cfg.hydra.callbacks.compare._target_ == "debias.report.callbacks.CompareOnMultirunEnd"
    slurm = composed("hydra/launcher=slurm", hydra=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")


@pytest.mark.parametrize("args, named", [
    (["intervention.ratio=1.5"], "intervention.ratio=1.5"),
    (["intervention.direction=sideways"], "intervention.direction=sideways"),
    (["model=pythia-3b"], "model=pythia-3b"),
    (["--multirun", "intervention=m2f,sideways"], "intervention=sideways"),
])
def test_bad_settings_give_one_line_and_exit_2(tmp_path, args, named):
    result = run_pipeline(*args, f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr
    assert "allowed" in lines[0] or "between 0 and 1" in lines[0]
    assert not (tmp_path / "cache").exists()  # nothing heavy started
    left = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert not left, f"a refused run left files behind: {left}"


def test_unknown_preset_lists_the_allowed_ones(tmp_path):
    line = run_pipeline("model=pythia-3b", cwd=tmp_path, timeout=120).stderr.strip()
    assert "pythia-70m-deduped" in line and "pythia-12b" in line


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_targets_pass_overrides_to_the_pipeline():
    def dry_run(*args: str) -> str:
        return subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout

    assert "pipelines/intervene.py intervention=swap intervention.ratio=0.21" in \
        dry_run("intervene", "ARGS=intervention=swap intervention.ratio=0.21")
    assert "pipelines/intervene.py --multirun +sweep=demo" in dry_run("sweep")
    assert "pipelines/compare.py outputs/multirun/x" in dry_run("compare", "RUNS=outputs/multirun/x")
