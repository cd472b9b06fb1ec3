"""Evaluate one model folder with the `eval` config group:

    python pipelines/evaluate.py eval=pythia +model_folder=PATH/TO/HF_FOLDER
    python pipelines/evaluate.py eval=pythia model=pythia-160m model.checkpoint=PATH
    python pipelines/evaluate.py                      # demo: the demo suite's final checkpoint

Writes `report.json` (metrics with intervals, data checksums, model identity, the resolved
config) and `items.json` (per-item values for paired comparisons) in the Hydra run folder.
With `data=demo` the demo suite supplies the probe files and held-out rows that eval.* leaves unset.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))  # `python pipelines/evaluate.py` from a plain checkout

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from debias.errors import UserError, exit_on_user_error  # noqa: E402
from debias.io import write_json_atomic  # noqa: E402


def resolve_inputs(cfg: DictConfig) -> tuple[Path, dict]:
    """The model folder and the eval settings, with demo-suite paths filled in for data=demo."""
    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    folder = cfg.get("model_folder") or cfg.model.get("checkpoint")
    if cfg.data.get("demo") is not None:
        from debias.demo import build_demo_suite

        suite = build_demo_suite(cfg)
        eval_cfg = suite.eval_config(eval_cfg)
        folder = folder or suite.checkpoint(suite.checkpoint_steps[-1])
    if not folder:
        raise UserError("model_folder: not set; pass +model_folder=PATH (a Hugging Face GPT-NeoX folder "
                        "with tokenizer.json) or model.checkpoint=PATH")
    return Path(str(folder)), eval_cfg


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from debias.evaluate import evaluate_model

    folder, eval_cfg = resolve_inputs(cfg)
    metrics, items = evaluate_model(folder, eval_cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    report = {**metrics, "config": {"eval": eval_cfg, "model_folder": str(folder)}}
    write_json_atomic(run_dir / "items.json", items)
    write_json_atomic(run_dir / "report.json", report)
    print(f"wrote {run_dir / 'report.json'}")


if __name__ == "__main__":
    main()
