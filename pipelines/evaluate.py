"""Evaluate named models and compare them in pairs (the first is the reference):

    python pipelines/evaluate.py 'models={base:EleutherAI/pythia-70m-deduped@step143000,intervention:EleutherAI/pythia-intervention-70m-deduped@step143000}'
    python pipelines/evaluate.py 'models={base:/ckpt/base,treated:/ckpt/treated}' tokenizer=/data/tokenizer.json
    python pipelines/evaluate.py audit=released plan=true     # the released intervention models: what it would evaluate
    python pipelines/evaluate.py audit=released audit.revisions=window

Each model is a local Hugging Face folder or a hub name at a revision (`OWNER/NAME@REVISION`,
fetched through the Hugging Face cache), evaluated once through the project cache and keyed by
what it is. The Hydra run folder gets the report a pipeline run writes (report.json/md/html,
plots, config.yaml): every metric with its interval, and the paired tests of every model against
its reference. Settings: conf/evaluate.yaml (debias.config.EvaluateModelsConfig); the library
functions: debias.stages.evaluate_models and models_plan.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python pipelines/evaluate.py` from a plain checkout

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from debias.app import refused_runs_leave_nothing, run_hydra_app  # noqa: E402
from debias.config import EvaluateModelsConfig, register_evaluate_configs, to_config  # noqa: E402
from debias.errors import exit_on_user_error  # noqa: E402


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from debias import stages

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with refused_runs_leave_nothing(run_dir):
        config = to_config(cfg, EvaluateModelsConfig)
        if config.plan:
            lines = stages.models_plan(config)
            shutil.rmtree(run_dir, ignore_errors=True)  # a plan writes nothing
            print("\n".join(lines))
            return
        stages.evaluate_models(config, run_dir)


if __name__ == "__main__":
    register_evaluate_configs()  # the schema conf/evaluate.yaml names
    run_hydra_app(main)
