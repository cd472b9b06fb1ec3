"""Evaluate one model folder on every configured benchmark.

`evaluate_model` returns the report section (`metrics`) and the per-item values (`items`) that
paired tests need; `compare_items` (debias/evaluate/paired.py) runs those tests between two
models' items, as each benchmark declares them (debias/evaluate/catalog.py). The settings are a
`debias.config.EvalConfig`, checked when it is constructed; the device is checked against this
machine before the model loads.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from debias.config import EvalConfig, PerplexityConfig
from debias.errors import UserError
from debias.evaluate.crows_pairs import evaluate_crows_pairs, load_crows_pairs
from debias.evaluate.datafiles import ChecksumWarning, local_or_hub
from debias.evaluate.device import resolve_device
from debias.evaluate.heldout import TEXT_SUFFIXES
from debias.evaluate.lambada import evaluate_lambada, load_lambada
from debias.evaluate.manipulation import evaluate_manipulation, fill
from debias.evaluate.perplexity import evaluate_stream_perplexity, evaluate_text_perplexity
from debias.evaluate.scorer import Scorer
from debias.evaluate.winobias import evaluate_winobias, load_winobias
from debias.tokenizer import load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def load_model(model_folder: str | Path, device: str = "auto", dtype: str | None = None,
               gelu: str | None = None, tokenizer: str | Path | None = None):
    """(model, tokenizer, device) for a Hugging Face GPT-NeoX folder that holds tokenizer.json
    (or any folder, given the `tokenizer` file to use instead)."""
    from debias.model import GPTNeoX

    folder = Path(model_folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: model folder not found; pass a Hugging Face GPT-NeoX folder "
                        "(config.json, model.safetensors, tokenizer.json)")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: no config.json, so not a Hugging Face model folder; pass the folder "
                        "save_pretrained wrote (config.json, model.safetensors, tokenizer.json)")
    tokenizer = load_tokenizer(tokenizer or folder)  # fails before the weights load, with the file named
    resolved = resolve_device(device)
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"eval.dtype: '{dtype}' is not one of {', '.join(DTYPES)} (or null)")
    model = GPTNeoX.from_pretrained(folder, dtype=DTYPES.get(dtype), device=resolved, gelu=gelu)
    return model.eval(), tokenizer, resolved


def evaluate_model(model_folder: str | Path, eval_cfg: EvalConfig | None = None, *,
                   progress: bool = True, tokenizer: str | Path | None = None) -> tuple[dict, dict]:
    """Run the configured benchmarks on one model folder -> (metrics, items); `tokenizer` replaces
    the folder's tokenizer.json."""
    cfg = eval_cfg or EvalConfig()
    check_inputs(cfg)  # a bad data file fails before the model loads (minutes for the largest)
    model, tokenizer, device = load_model(model_folder, cfg.device, cfg.dtype, cfg.gelu, tokenizer)
    scorer = Scorer(model, tokenizer, batch_size=cfg.batch_size, device=device, progress=progress)
    return evaluate_with_scorer(scorer, cfg, model_identity={
        "folder": str(model_folder), "gelu": model.config.gelu, "device": str(device),
        "dtype": scorer.precision, "parameters": sum(p.numel() for p in model.parameters())})


def check_inputs(cfg: EvalConfig) -> None:
    """Read every enabled benchmark's local data file now, so that a missing or malformed file fails
    in one line before a pipeline trains for hours, not at the evaluation after it. Hub data sets
    are left to the evaluation (they may need a download); nothing is scored."""
    with warnings.catch_warnings():  # a differing checksum is reported once, by the evaluation itself
        warnings.simplefilter("ignore", ChecksumWarning)
        if cfg.crows_pairs.enabled:
            source = _required(cfg.crows_pairs, "path", "crows_pairs")
            if isinstance(local_or_hub(source, "CrowS-Pairs CSV", local_suffixes=(".csv",)), Path):
                load_crows_pairs(source, cfg.crows_pairs.bias_type, check_pinned=False)
        if cfg.winobias.enabled:
            source = _required(cfg.winobias, "path", "winobias")
            if isinstance(local_or_hub(source, "WinoBias folder"), Path):
                load_winobias(source, splits=tuple(cfg.winobias.splits), check_pinned=False)
        if cfg.lambada.enabled:
            load_lambada(_required(cfg.lambada, "path", "lambada"), cfg.lambada.limit, check_pinned=False)
        templates = cfg.manipulation.templates
        if cfg.manipulation.enabled and templates is not None:
            if not templates:  # an empty list would silently mean the bundled templates
                raise UserError("eval.manipulation.templates=[]: no templates; give at least one, null for the "
                                "bundled ones, or set eval.manipulation.enabled=false")
            for template in templates:
                fill(template)
        text = cfg.perplexity.text
        if cfg.perplexity.enabled and not (cfg.perplexity.stream and cfg.perplexity.rows) and text:
            located = local_or_hub(text, "held-out text (eval.perplexity.text)", local_suffixes=TEXT_SUFFIXES)
            if isinstance(located, Path) and not located.is_file():
                raise UserError(f"{located}: eval.perplexity.text must be a file (.jsonl or plain text), not a folder")


def evaluate_with_scorer(scorer: Scorer, eval_cfg: EvalConfig | None = None,
                         model_identity: dict | None = None) -> tuple[dict, dict]:
    """The benchmarks on an already built scorer (any model callable)."""
    cfg = eval_cfg or EvalConfig()
    resamples, seed, pinned = cfg.bootstrap_samples, cfg.seed, cfg.check_pinned
    metrics: dict[str, Any] = {"model": model_identity or {"dtype": scorer.precision}}
    items: dict[str, Any] = {}

    section = cfg.crows_pairs
    if section.enabled:
        data = load_crows_pairs(_required(section, "path", "crows_pairs"), section.bias_type,
                                section.hub_config, section.split, pinned)
        metrics["crows_pairs"], items["crows_pairs"] = evaluate_crows_pairs(scorer, data, resamples, seed)
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
        metrics["perplexity"], items["perplexity"] = _heldout_perplexity(scorer, section, resamples, seed)
    section = cfg.manipulation
    if section.enabled:
        metrics["manipulation"], items["manipulation"] = evaluate_manipulation(scorer, section.templates)
    return metrics, items


def _heldout_perplexity(scorer: Scorer, section: PerplexityConfig, resamples: int, seed: int) -> tuple[dict, dict]:
    """Stream rows when `stream` and `rows` are set, else the held-out `text` (see PerplexityConfig)."""
    if section.stream and section.rows:
        return evaluate_stream_perplexity(scorer, section.stream, tuple(section.rows), section.window,
                                          resamples, seed, source=section.rows_label)
    if section.text:
        return evaluate_text_perplexity(scorer, section.text, text_field=section.text_field,
                                        config=section.text_config, split=section.text_split,
                                        row_length=section.row_length, max_rows=section.text_rows,
                                        window=section.window, n_resamples=resamples, seed=seed)
    raise UserError("eval.perplexity: set stream and rows (held-out stream rows) or text (a held-out .jsonl/.txt "
                    "file or datasets name), or eval.perplexity.enabled=false")


def _required(section: Any, key: str, name: str):
    value = getattr(section, key)
    if value in (None, ""):
        raise UserError(f"eval.{name}.{key} is not set; give the data path (or set "
                        f"eval.{name}.enabled=false)")
    return value
