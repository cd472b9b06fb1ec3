"""Bias and language-modelling evaluation: one batched scorer, the benchmarks, statistics.

    metrics, items = evaluate_model("path/to/hf-folder", eval_cfg)   # a debias.config.EvalConfig
    comparison = compare_items(items_treatment, items_control)
"""

from debias.evaluate.crows_pairs import CrowsPair, CrowsPairsData, evaluate_crows_pairs, load_crows_pairs
from debias.evaluate.lambada import LambadaData, evaluate_lambada, load_lambada
from debias.evaluate.manipulation import DEFAULT_TEMPLATES, evaluate_manipulation
from debias.evaluate.perplexity import evaluate_stream_perplexity
from debias.evaluate.scorer import Request, Score, Scorer
from debias.tokenizer import load_tokenizer
from debias.evaluate.stats import (
    binomial_test,
    mcnemar_exact,
    mean_interval,
    paired_bootstrap,
    wilson_interval,
)
from debias.evaluate.suite import compare_items, evaluate_model, evaluate_with_scorer, load_model
from debias.evaluate.winobias import WinoBiasData, evaluate_winobias, load_winobias

__all__ = [
    "CrowsPair", "CrowsPairsData", "DEFAULT_TEMPLATES", "LambadaData", "Request", "Score", "Scorer",
    "WinoBiasData", "binomial_test", "compare_items", "evaluate_crows_pairs", "evaluate_lambada",
    "evaluate_manipulation", "evaluate_model", "evaluate_stream_perplexity", "evaluate_winobias",
    "evaluate_with_scorer", "load_crows_pairs", "load_lambada", "load_model", "load_tokenizer",
    "load_winobias", "mcnemar_exact", "mean_interval", "paired_bootstrap",
    "wilson_interval",
]
