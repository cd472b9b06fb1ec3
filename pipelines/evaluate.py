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
from pathlib import Path

from omegaconf import DictConfig

from debias.app import hydra_app


def evaluate(cfg: DictConfig, run_dir: Path) -> None:
    from debias import stages  # after Hydra has composed and checked the settings
    from debias.config import EvaluateModelsConfig, to_config

    config = to_config(cfg, EvaluateModelsConfig)
    if config.plan:
        lines = stages.models_plan(config)
        shutil.rmtree(run_dir, ignore_errors=True)  # a plan writes nothing
        print("\n".join(lines))
        return
    stages.evaluate_models(config, run_dir)


if __name__ == "__main__":
    hydra_app("evaluate", evaluate)()
