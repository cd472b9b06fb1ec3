"""Evaluate one model folder on every configured benchmark; compare two models item by item.

`evaluate_model` returns the report section (`metrics`) and the per-item values (`items`) that
paired tests need; `compare_items` runs those tests between two models' items.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from debias.config import EvalConfig
from debias.errors import UserError
from debias.evaluate import stats
from debias.evaluate.crows_pairs import evaluate_crows_pairs, load_crows_pairs
from debias.evaluate.lambada import evaluate_lambada, load_lambada
from debias.evaluate.manipulation import evaluate_manipulation
from debias.evaluate.perplexity import evaluate_stream_perplexity
from debias.evaluate.scorer import Scorer
from debias.tokenizer import load_tokenizer
from debias.evaluate.winobias import evaluate_winobias, load_winobias

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}

def load_model(model_folder: str | Path, device: str = "auto", dtype: str | None = None,
               gelu: str | None = None):
    """(model, tokenizer, device) for a Hugging Face GPT-NeoX folder that holds tokenizer.json."""
    from debias.model import GPTNeoX

    folder = Path(model_folder)
    tokenizer = load_tokenizer(folder)  # fails first, with the file named, if it is missing
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"eval.dtype: '{dtype}' is not one of {', '.join(DTYPES)} (or null)")
    model = GPTNeoX.from_pretrained(folder, dtype=DTYPES.get(dtype), device=device, gelu=gelu)
    return model.eval(), tokenizer, torch.device(device)


def evaluate_model(model_folder: str | Path, eval_cfg: EvalConfig | None = None, *,
                   progress: bool = True) -> tuple[dict, dict]:
    """Run the configured benchmarks on one model folder -> (metrics, items)."""
    cfg = eval_cfg or EvalConfig()
    model, tokenizer, device = load_model(model_folder, cfg.device, cfg.dtype, cfg.gelu)
    scorer = Scorer(model, tokenizer, batch_size=cfg.batch_size, device=device, progress=progress)
    return evaluate_with_scorer(scorer, cfg, model_identity={
        "folder": str(model_folder), "gelu": model.config.gelu, "device": str(device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.parameters())})


def evaluate_with_scorer(scorer: Scorer, eval_cfg: EvalConfig | None = None,
                         model_identity: dict | None = None) -> tuple[dict, dict]:
    """The benchmarks on an already built scorer (any model callable)."""
    cfg = eval_cfg or EvalConfig()
    resamples, seed, pinned = cfg.bootstrap_samples, cfg.seed, cfg.check_pinned
    metrics: dict[str, Any] = {"model": model_identity or {}}
    items: dict[str, Any] = {}

    section = cfg.crows_pairs
    if section.enabled:
        data = load_crows_pairs(_required(section, "path", "crows_pairs"), section.bias_type,
                                section.hub_config, section.split, pinned)
        metrics["crows_pairs"], items["crows_pairs"] = evaluate_crows_pairs(scorer, data)
    section = cfg.winobias
    if section.enabled:
        data = load_winobias(_required(section, "path", "winobias"), splits=tuple(section.splits),
                             check_pinned=pinned)
        metrics["winobias"], items["winobias"] = evaluate_winobias(scorer, data, resamples, seed)
    section = cfg.lambada
    if section.enabled:
        data = load_lambada(_required(section, "path", "lambada"), section.limit, pinned)
        metrics["lambada"], items["lambada"] = evaluate_lambada(scorer, data)
    section = cfg.perplexity
    if section.enabled:
        if not section.rows or len(section.rows) != 2:
            raise UserError("eval.perplexity.rows: set [start, stop] of held-out stream rows")
        metrics["perplexity"], items["perplexity"] = evaluate_stream_perplexity(
            scorer, _required(section, "stream", "perplexity"), tuple(section.rows), section.window,
            resamples, seed)
    section = cfg.manipulation
    if section.enabled:
        metrics["manipulation"], items["manipulation"] = evaluate_manipulation(scorer, section.templates)
    return metrics, items


def _required(section: Any, key: str, name: str):
    value = getattr(section, key)
    if value in (None, ""):
        raise UserError(f"eval.{name}.{key} is not set; give the data path (or set "
                        f"eval.{name}.enabled=false)")
    return value


# -- paired comparison of two models -----------------------------------------------------------

# Per-item fields whose benchmark-level metric is not their mean: name and statistic.
SPECIAL_STATISTICS = {("lambada", "ll"): ("perplexity", lambda ll: math.exp(-np.mean(ll)))}


def compare_items(items_a: Mapping, items_b: Mapping, *, n_resamples: int = 2000,
                  seed: int = 1234) -> dict:
    """Paired tests of model A against model B on the items both were scored on.

    For every benchmark and per-item field: means of A and B, the difference A − B with a paired
    bootstrap interval and p-value, and for 0/1 fields the exact McNemar test. Items missing in
    either model, or None for either, are left out (the count is `n`).
    """
    out: dict[str, dict] = {}
    for bench in sorted(set(items_a) & set(items_b)):
        shared = [k for k in items_a[bench] if k in items_b[bench]]
        if not shared:
            continue
        fields = sorted(set(items_a[bench][shared[0]]) & set(items_b[bench][shared[0]]))
        out[bench] = {}
        for name in fields:
            pairs = [(items_a[bench][k].get(name), items_b[bench][k].get(name)) for k in shared]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if not pairs:
                continue
            a, b = (np.array(x, dtype=float) for x in zip(*pairs))
            label, statistic = SPECIAL_STATISTICS.get((bench, name), (name, np.mean))
            boot = stats.paired_bootstrap(a, b, statistic, n_resamples=n_resamples, seed=seed)
            result = {"metric": label, "a": float(statistic(a)), "b": float(statistic(b)),
                      "diff": boot["diff"], "diff_ci95": boot["ci95"], "diff_p": boot["p"], "n": len(a)}
            if np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all():
                result["mcnemar"] = stats.mcnemar_exact(a, b)
            out[bench][name] = result
    return out
