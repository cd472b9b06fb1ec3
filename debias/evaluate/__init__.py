"""Bias and language-modelling evaluation: one batched scorer, the benchmarks, statistics.

    metrics, items = evaluate_model("path/to/hf-folder", eval_cfg)   # a debias.config.EvalConfig
    comparison = compare_items(items_treatment, items_control)   # {benchmark: {metric: paired test}}

Each benchmark declares its metrics once (`BENCHMARKS`, `metric_declarations()`, `PRIMARY_METRIC`;
types in debias/evaluate/declarations.py): which way is better, the headline role (association,
blanket shift, LM quality, manipulation), the per-item field and the paired test. Reports and
comparisons read those declarations instead of key-name patterns.
"""

from debias.evaluate.association import association_metrics
from debias.evaluate.catalog import BENCHMARKS, PRIMARY_METRIC, declaration_of, metric_declarations
from debias.evaluate.crows_pairs import CrowsPair, CrowsPairsData, evaluate_crows_pairs, load_crows_pairs
from debias.evaluate.declarations import (
    Better,
    BenchmarkDeclaration,
    HeadlineRole,
    MetricDeclaration,
    PairedTest,
    Statistic,
)
from debias.evaluate.heldout import HeldoutChoice, choose_heldout_source, pack_rows, read_heldout_documents
from debias.evaluate.lambada import LambadaData, evaluate_lambada, load_lambada
from debias.evaluate.manipulation import DEFAULT_TEMPLATES, evaluate_manipulation
from debias.evaluate.paired import compare_items
from debias.evaluate.perplexity import evaluate_stream_perplexity, evaluate_text_perplexity, score_rows
from debias.evaluate.scorer import Request, Score, Scorer
from debias.evaluate.device import resolve_device
from debias.evaluate.stats import (
    NonFiniteError,
    binomial_test,
    bootstrap,
    holm,
    mcnemar_exact,
    mean_interval,
    paired_bootstrap,
    wilson_interval,
)
from debias.evaluate.suite import evaluate_model, evaluate_with_scorer, load_model
from debias.evaluate.winobias import WinoBiasData, evaluate_winobias, load_winobias
from debias.tokenizer import load_tokenizer

__all__ = [
    "BENCHMARKS", "Better", "BenchmarkDeclaration", "CrowsPair", "CrowsPairsData", "DEFAULT_TEMPLATES", "HeadlineRole", "HeldoutChoice", "LambadaData", "MetricDeclaration",
    "NonFiniteError", "PRIMARY_METRIC", "PairedTest", "Request", "Score", "Scorer", "Statistic",
    "WinoBiasData", "association_metrics", "binomial_test", "bootstrap", "choose_heldout_source",
    "compare_items", "declaration_of", "evaluate_crows_pairs", "evaluate_lambada", "evaluate_manipulation",
    "evaluate_model", "evaluate_stream_perplexity", "evaluate_text_perplexity", "evaluate_winobias",
    "evaluate_with_scorer", "holm", "load_crows_pairs", "load_lambada", "load_model", "load_tokenizer",
    "load_winobias", "mcnemar_exact", "mean_interval", "metric_declarations", "pack_rows",
    "paired_bootstrap", "read_heldout_documents", "resolve_device", "score_rows",
    "wilson_interval",
]
