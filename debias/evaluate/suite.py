"""Evaluate one model folder on every configured benchmark.

`evaluate_model` returns the report section (`metrics`) and the per-item values (`items`) that
paired tests need; `compare_items` (debias/evaluate/paired.py) runs those tests between two
models' items, as each benchmark declares them (debias/evaluate/catalog.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from debias.errors import UserError
from debias.evaluate.crows_pairs import evaluate_crows_pairs, load_crows_pairs
from debias.evaluate.lambada import evaluate_lambada, load_lambada
from debias.evaluate.manipulation import evaluate_manipulation
from debias.evaluate.paired import compare_items  # noqa: F401  (re-exported: its old home)
from debias.evaluate.perplexity import evaluate_stream_perplexity, evaluate_text_perplexity
from debias.evaluate.scorer import Scorer
from debias.evaluate.settings import check_settings, resolve_device
from debias.evaluate.winobias import evaluate_winobias, load_winobias
from debias.tokenizer import load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}

DEFAULTS: dict[str, Any] = {
    "device": "auto", "dtype": None, "gelu": None, "batch_size": 16,
    "bootstrap_samples": 2000, "seed": 1234, "check_pinned": True,
    "crows_pairs": {"enabled": True, "path": None, "hub_config": None, "split": "test", "bias_type": "gender"},
    "winobias": {"enabled": True, "path": None, "splits": ["dev", "test"]},
    "lambada": {"enabled": False, "path": None, "limit": None},
    # Held-out perplexity: stream rows [start, stop) when `stream` and `rows` are set (`rows_label`
    # says where they lie: debias.evaluate.choose_heldout_source), else held-out `text` (a .jsonl
    # with `text_field`, a plain-text file, or a datasets name with `text_config`/`text_split`)
    # packed into up to `text_rows` rows of `row_length` tokens (null: the model's context + 1).
    "perplexity": {"enabled": False, "stream": None, "rows": None, "window": None, "rows_label": None,
                   "text": None, "text_field": "text", "text_config": None, "text_split": "test",
                   "text_rows": 64, "row_length": None},
    "manipulation": {"enabled": True, "templates": None},
}


def resolve_config(eval_cfg: Mapping | None) -> dict:
    """A plain dict of every setting: DEFAULTS overlaid with `eval_cfg` (dict or DictConfig)."""
    if eval_cfg is not None and not isinstance(eval_cfg, dict):
        from omegaconf import OmegaConf  # Hydra configs

        eval_cfg = OmegaConf.to_container(eval_cfg, resolve=True)
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for key, value in (eval_cfg or {}).items():
        if isinstance(cfg.get(key), dict) and isinstance(value, Mapping):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def load_model(model_folder: str | Path, device: str = "auto", dtype: str | None = None,
               gelu: str | None = None):
    """(model, tokenizer, device) for a Hugging Face GPT-NeoX folder that holds tokenizer.json."""
    from debias.model import GPTNeoX

    folder = Path(model_folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: model folder not found; pass a Hugging Face GPT-NeoX folder "
                        "(config.json, model.safetensors, tokenizer.json)")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: no config.json, so not a Hugging Face model folder; pass the folder "
                        "save_pretrained wrote (config.json, model.safetensors, tokenizer.json)")
    tokenizer = load_tokenizer(folder)  # fails before the weights load, with the file named
    resolved = resolve_device(device)
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"eval.dtype: '{dtype}' is not one of {', '.join(DTYPES)} (or null)")
    model = GPTNeoX.from_pretrained(folder, dtype=DTYPES.get(dtype), device=resolved, gelu=gelu)
    return model.eval(), tokenizer, resolved


def evaluate_model(model_folder: str | Path, eval_cfg: Mapping | None = None, *,
                   progress: bool = True) -> tuple[dict, dict]:
    """Run the configured benchmarks on one model folder -> (metrics, items)."""
    cfg = resolve_config(eval_cfg)
    check_settings(cfg)  # before the model loads
    model, tokenizer, device = load_model(model_folder, cfg["device"], cfg["dtype"], cfg["gelu"])
    scorer = Scorer(model, tokenizer, batch_size=cfg["batch_size"], device=device, progress=progress)
    return evaluate_with_scorer(scorer, cfg, model_identity={
        "folder": str(model_folder), "gelu": model.config.gelu, "device": str(device),
        "dtype": scorer.precision, "parameters": sum(p.numel() for p in model.parameters())})


def evaluate_with_scorer(scorer: Scorer, eval_cfg: Mapping | None = None,
                         model_identity: dict | None = None) -> tuple[dict, dict]:
    """The benchmarks on an already built scorer (any model callable)."""
    cfg = resolve_config(eval_cfg)
    check_settings(cfg)
    resamples, seed, pinned = int(cfg["bootstrap_samples"]), int(cfg["seed"]), bool(cfg["check_pinned"])
    metrics: dict[str, Any] = {"model": model_identity or {"dtype": scorer.precision}}
    items: dict[str, Any] = {}

    section = cfg["crows_pairs"]
    if section["enabled"]:
        data = load_crows_pairs(_required(section, "path", "crows_pairs"), section["bias_type"],
                                section.get("hub_config"), section.get("split", "test"), pinned)
        metrics["crows_pairs"], items["crows_pairs"] = evaluate_crows_pairs(scorer, data, resamples, seed)
    section = cfg["winobias"]
    if section["enabled"]:
        data = load_winobias(_required(section, "path", "winobias"), splits=tuple(section["splits"]),
                             check_pinned=pinned)
        metrics["winobias"], items["winobias"] = evaluate_winobias(scorer, data, resamples, seed)
    section = cfg["lambada"]
    if section["enabled"]:
        data = load_lambada(_required(section, "path", "lambada"), section.get("limit"), pinned)
        metrics["lambada"], items["lambada"] = evaluate_lambada(scorer, data)
    section = cfg["perplexity"]
    if section["enabled"]:
        metrics["perplexity"], items["perplexity"] = _heldout_perplexity(scorer, section, resamples, seed)
    section = cfg["manipulation"]
    if section["enabled"]:
        metrics["manipulation"], items["manipulation"] = evaluate_manipulation(scorer, section.get("templates"))
    return metrics, items


def _heldout_perplexity(scorer: Scorer, section: dict, resamples: int, seed: int) -> tuple[dict, dict]:
    """Stream rows when `stream` and `rows` are set, else the held-out `text` (see DEFAULTS)."""
    rows = section.get("rows")
    if section.get("stream") and rows:
        if len(rows) != 2:
            raise UserError(f"eval.perplexity.rows={rows!r}: set [start, stop] of held-out stream rows")
        return evaluate_stream_perplexity(scorer, section["stream"], tuple(rows), section.get("window"),
                                          resamples, seed, source=section.get("rows_label"))
    if section.get("text"):
        return evaluate_text_perplexity(scorer, section["text"], text_field=section.get("text_field") or "text",
                                        config=section.get("text_config"), split=section.get("text_split") or "test",
                                        row_length=section.get("row_length"), max_rows=section.get("text_rows", 64),
                                        window=section.get("window"), n_resamples=resamples, seed=seed)
    raise UserError("eval.perplexity: set stream and rows (held-out stream rows) or text (a held-out .jsonl/.txt "
                    "file or datasets name), or eval.perplexity.enabled=false")


def _required(section: dict, key: str, name: str):
    value = section.get(key)
    if value in (None, ""):
        raise UserError(f"eval.{name}.{key} is not set; give the data path (or set "
                        f"eval.{name}.enabled=false)")
    return value
