"""Evaluate one model folder with the `eval` config group:

    python pipelines/evaluate.py eval=pythia +model_folder=PATH/TO/HF_FOLDER
    python pipelines/evaluate.py eval=pythia model=pythia-160m 'model.checkpoint="PATH"'
    python pipelines/evaluate.py                      # demo: the demo suite's final checkpoint

Writes `report.json` (metrics with intervals, data checksums, model identity, the resolved
config) and `items.json` (per-item values for paired comparisons) in the Hydra run folder.
With `data=demo` the demo suite supplies the probe files and held-out rows that eval.* leaves unset.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python pipelines/evaluate.py` from a plain checkout

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from debias.app import refused_runs_leave_nothing, run_hydra_app  # noqa: E402
from debias.config import EvalConfig, to_config, to_run_config  # noqa: E402
from debias.errors import UserError, exit_on_user_error  # noqa: E402
from debias.io import write_json_atomic  # noqa: E402


def resolve_inputs(cfg: DictConfig) -> tuple[Path, EvalConfig]:
    """The model folder and the eval settings, with demo-suite paths filled in for data=demo.
    Only the groups this needs are checked: a model folder is scored without a training stream."""
    folder = cfg.get("model_folder") or cfg.model.get("checkpoint")
    if folder and not Path(str(folder)).is_dir():  # before the demo suite is built (minutes)
        raise UserError(f"{folder}: model folder not found; pass a Hugging Face GPT-NeoX folder "
                        "(config.json, model.safetensors, tokenizer.json)")
    if cfg.data.get("demo") is not None:
        from debias.demo import build_demo_suite

        config = to_run_config(cfg, drop=("hydra", "model_folder"))
        suite = build_demo_suite(config.demo, config.cache_dir)
        return Path(str(folder or suite.checkpoint(suite.checkpoint_steps[-1]))), suite.eval_config(config.eval)
    if not folder:
        raise UserError("model_folder: not set; pass +model_folder=PATH (a Hugging Face GPT-NeoX folder "
                        "with tokenizer.json) or 'model.checkpoint=\"PATH\"'")
    return Path(str(folder)), to_config(cfg.eval, EvalConfig, "eval.")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from debias.evaluate import evaluate_model

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with refused_runs_leave_nothing(run_dir):
        folder, eval_config = resolve_inputs(cfg)
        metrics, items = evaluate_model(folder, eval_config)
    report = {**metrics, "config": {"eval": asdict(eval_config), "model_folder": str(folder)}}
    write_json_atomic(run_dir / "items.json", items)
    write_json_atomic(run_dir / "report.json", report)
    print(f"wrote {run_dir / 'report.json'}")


if __name__ == "__main__":
    run_hydra_app(main)
