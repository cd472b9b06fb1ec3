"""Build the demo suite: a miniature Pythia, made once and cached by its configuration.

    suite = build_demo_suite(cfg.data.demo)          # or (params, cache_dir)
    suite.checkpoint(930)                            # Hugging Face folder of the model at step 930

Steps, each with the project's own parts:
1. corpus   `corpus.CorpusGenerator` (seeded English with the planted occupational skew; its
            first documents are kept in corpus_sample.txt, the planted counts in corpus_stats.json);
2. tokenizer a byte-level BPE like GPT-NeoX-20B's, trained on the first documents;
3. stream   the corpus packed into Pythia-format rows by `debias.stream.pack_texts`; the stream
            holds exactly `total_steps * batch_size` training rows and then `heldout_rows` rows
            of a separately seeded corpus, which no training window ever reaches (they are the
            rows `Window.heldout_rows` picks after the end of training);
4. probes   WinoBias and CrowS-Pairs files over the demo occupations (`probes`);
5. pretrain a tiny GPT-NeoX from random init by `debias.train.run_training`, with Hugging Face
            folders `checkpoints/step<N>/` on a Pythia-like grid: 0, 1, 2, 4, ... below the
            checkpoint interval, then every interval up to total_steps.

The suite folder is `<cache_dir>/demo/<key>` where key is the content hash of the demo settings.
It is built in a temporary sibling folder and renamed into place when complete; a file lock makes
parallel sweep jobs wait for one build instead of racing.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from filelock import FileLock

from debias.demo.corpus import FEMALE_PERCENT, CorpusGenerator, Document
from debias.demo.probes import write_crows_pairs, write_winobias
from debias.demo.tokenizer import train_tokenizer
from debias.errors import UserError
from debias.io import atomic_output, sha256_json, write_json_atomic, write_text_atomic

# Bump when the generator, probes or build change what a suite holds: old caches are then ignored.
DEMO_FORMAT_VERSION = 1
SUITE_RECORD = "suite.json"

DEFAULTS: dict[str, Any] = {
    "seed": 1234,
    "geometry": {"batch_size": 16, "row_length": 65, "total_steps": 1000, "checkpoint_interval": 10},
    "tokenizer": {"vocab_size": 2000, "train_documents": 3000},
    "heldout_rows": 64,
    "probes": {"winobias_lines_per_file": 200, "crows_pairs_frames_per_occupation": 8},
    "pretrain": {"micro_batch": 16, "device": "cpu"},
    # torch CPU threads while pretraining: one is as fast for a model this small, and far faster
    # on a shared machine, where idle OpenMP threads spin against other jobs.
    "threads": 1,
}
MODEL_KEYS = ("architecture", "peak_lr")


@dataclass(frozen=True)
class DemoSuite:
    """Paths of a built suite (all inside `root`) and the settings that made it."""

    root: Path
    key: str
    tokenizer: Path                 # tokenizer.json
    stream: Path                    # prefix of the training stream (`<prefix>.bin`, `.idx`)
    checkpoints: Path               # folder of `step<N>/` Hugging Face folders
    checkpoint_steps: tuple[int, ...]
    winobias_dir: Path
    crows_pairs_csv: Path
    heldout_stream: Path            # stream prefix holding the held-out rows
    heldout_rows: tuple[int, int]   # [start, stop) rows of `heldout_stream` no window trains on
    geometry: dict                  # batch_size, row_length, total_steps, checkpoint_interval
    model: dict                     # architecture (debias.model.GPTNeoXConfig keys) and peak_lr
    params: dict                    # every setting the key was computed from

    def checkpoint(self, step: int) -> Path:
        """The Hugging Face folder of the model after `step` steps."""
        if step not in self.checkpoint_steps:
            grid = self.checkpoint_steps
            raise UserError(f"demo suite {self.root}: no checkpoint at step {step}; the grid is "
                            f"{list(grid[:8])} ... every {self.geometry['checkpoint_interval']} up to {grid[-1]}; "
                            f"pick a ratio or start_step on the grid")
        return self.checkpoints / f"step{step}"

    @property
    def checkpoint_pattern(self) -> str:
        """`<checkpoints>/step{step}`: a local source for `debias.model.resolve_checkpoint`."""
        return str(self.checkpoints / "step{step}")

    def eval_config(self, eval_cfg: Mapping | None = None) -> dict:
        """`eval_cfg` (the Hydra `eval` node as a dict) with the demo probes filled in where the
        paths are unset: CrowS-Pairs CSV, WinoBias folder, held-out perplexity rows."""
        cfg = json.loads(json.dumps(dict(eval_cfg or {}), default=_plain))
        crows, wino = cfg.setdefault("crows_pairs", {}), cfg.setdefault("winobias", {})
        crows["path"] = crows.get("path") or str(self.crows_pairs_csv)
        wino["path"] = wino.get("path") or str(self.winobias_dir)
        perplexity = cfg.setdefault("perplexity", {})
        if not perplexity.get("stream"):
            perplexity.update(enabled=perplexity.get("enabled", True), stream=str(self.heldout_stream),
                              rows=list(self.heldout_rows))
        return cfg

    def to_dict(self) -> dict:
        return {"key": self.key, "tokenizer": str(self.tokenizer), "stream": str(self.stream),
                "checkpoints": str(self.checkpoints), "checkpoint_steps": list(self.checkpoint_steps),
                "winobias_dir": str(self.winobias_dir), "crows_pairs_csv": str(self.crows_pairs_csv),
                "heldout_stream": str(self.heldout_stream), "heldout_rows": list(self.heldout_rows),
                "geometry": self.geometry, "model": self.model, "params": self.params}

    @classmethod
    def load(cls, root: str | os.PathLike) -> "DemoSuite":
        """A built suite from its folder (paths in suite.json are relative to it)."""
        root = Path(root)
        record = json.loads((root / SUITE_RECORD).read_text())
        return cls(root=root, key=record["key"], tokenizer=root / record["tokenizer"],
                   stream=root / record["stream"], checkpoints=root / record["checkpoints"],
                   checkpoint_steps=tuple(record["checkpoint_steps"]),
                   winobias_dir=root / record["winobias_dir"], crows_pairs_csv=root / record["crows_pairs_csv"],
                   heldout_stream=root / record["heldout_stream"], heldout_rows=tuple(record["heldout_rows"]),
                   geometry=record["geometry"], model=record["model"], params=record["params"])


def _plain(value):
    """json.dumps fallback for OmegaConf containers."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True)


# ---- settings -----------------------------------------------------------------------------------

def demo_params(cfg: Mapping | Any) -> tuple[dict, str | None]:
    """(settings the suite depends on, cache_dir or None) from the `data.demo` node, the Hydra root
    config (with `data.demo` and `model`), or a plain dict. Missing settings take DEFAULTS."""
    if not isinstance(cfg, dict):
        cfg = _plain(cfg)
    if "data" in cfg:  # the root config
        cfg = {**cfg["data"].get("demo", {}), "model": cfg.get("model"), "cache_dir": cfg.get("cache_dir")}
    params = {key: (dict(value) if isinstance(value, dict) else value) for key, value in DEFAULTS.items()}
    unknown = set(cfg) - set(DEFAULTS) - {"model", "cache_dir"}
    if unknown:
        raise UserError(f"data.demo: unknown key(s) {sorted(unknown)}; known: {sorted([*DEFAULTS, 'model', 'cache_dir'])}")
    for key, value in cfg.items():
        if isinstance(params.get(key), dict) and isinstance(value, Mapping):
            params[key] = {**params[key], **value}
        elif key not in ("model", "cache_dir"):
            params[key] = value
    model = cfg.get("model")
    if not model or any(k not in model for k in MODEL_KEYS):
        raise UserError("data.demo.model: needs the model preset's `architecture` and `peak_lr` "
                        "(conf/data/demo.yaml sets model: ${model}; use model=pythia-demo)")
    params["model"] = {"architecture": dict(model["architecture"]), "peak_lr": float(model["peak_lr"])}
    check_params(params)
    return params, cfg.get("cache_dir")


def check_params(params: dict) -> None:
    from debias.stream import Geometry, Window

    geometry = Geometry.from_config(params["geometry"])
    for ratio in (0.07, 0.21):  # the study's two windows must start on a saved checkpoint
        window = Window.from_ratio(geometry, ratio)
        if abs(window.ratio - ratio) > 1e-9:
            raise UserError(f"data.geometry: the {ratio:.0%} window rounds to {window.num_steps} of "
                            f"{geometry.total_steps} steps ({window.ratio:.2%}); choose total_steps and "
                            f"checkpoint_interval so that {ratio} x total_steps is a multiple of the interval "
                            f"(e.g. 1000 and 10)")
    vocab = params["model"]["architecture"]["vocab_size"]
    if params["tokenizer"]["vocab_size"] > vocab:
        raise UserError(f"data.demo.tokenizer.vocab_size={params['tokenizer']['vocab_size']}: larger than the "
                        f"model's vocab_size {vocab}; lower it or raise model.architecture.vocab_size")
    if params["geometry"]["row_length"] - 1 > params["model"]["architecture"]["max_position_embeddings"]:
        raise UserError(f"model.architecture.max_position_embeddings: shorter than the demo rows "
                        f"({params['geometry']['row_length'] - 1} inputs); raise it")


def checkpoint_steps(total_steps: int, interval: int) -> list[int]:
    """Pythia's grid: 0 and powers of two below the interval, then every interval to the end."""
    early = [0] + [2 ** k for k in range(interval.bit_length()) if 2 ** k < interval]
    return sorted(set(early + list(range(interval, total_steps + 1, interval))))


# ---- building -----------------------------------------------------------------------------------

def say(message: str, started: float | None = None) -> None:
    """A progress line on stderr, with the seconds since `started` when given."""
    clock = f" {time.time() - started:4.0f}s" if started is not None else ""
    print(f"[demo{clock}] {message}", file=sys.stderr, flush=True)


def build_demo_suite(cfg: Mapping | Any, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> DemoSuite:
    """The demo suite for these settings: loaded from the cache, or built once and cached."""
    params, configured_cache = demo_params(cfg)
    cache_dir = Path(cache_dir or configured_cache or os.environ.get("DEBIAS_CACHE_DIR", ".cache/debias"))
    key = sha256_json({"version": DEMO_FORMAT_VERSION, **params})[:16]
    root = cache_dir / "demo" / key
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not (root / SUITE_RECORD).is_file():
            for stale in root.parent.glob(f".{key}.tmp-*"):  # a killed build's leftovers (we hold the lock)
                _remove_tree(stale)
            started = time.time()
            say(f"building the demo suite {key} in {root} (once; later runs reuse it)")
            with atomic_output(root) as tmp:
                _build(params, key, tmp, progress)
            say(f"demo suite built in {time.time() - started:.0f} s")
    return DemoSuite.load(root)


def _build(params: dict, key: str, out: Path, progress: bool) -> None:
    import torch

    from debias.model import GPTNeoXConfig
    from debias.stream import Geometry
    from debias.train import TrainerConfig, TrainJob, run_training

    started = time.time()
    out.mkdir(parents=True)
    geometry = Geometry.from_config(params["geometry"])
    seed = int(params["seed"])
    train_rows = geometry.total_steps * geometry.batch_size

    say("1/5 corpus and tokenizer", started)
    generator = CorpusGenerator(seed)
    sample = list(generator.documents(params["tokenizer"]["train_documents"]))
    tokenizer = train_tokenizer([d.text for d in sample], params["tokenizer"]["vocab_size"], out / "tokenizer.json")
    write_text_atomic(out / "corpus_sample.txt", "\n<|endoftext|>\n".join(d.text for d in sample[:30]) + "\n")

    say(f"2/5 stream: {train_rows:,} training rows + {params['heldout_rows']} held-out rows of "
        f"{geometry.row_length} tokens", started)
    corpus_stats = _pack_stream(sample, generator, tokenizer, geometry, params["heldout_rows"], seed, out)

    say("3/5 probes (WinoBias and CrowS-Pairs formats)", started)
    write_winobias(out / "winobias", seed + 2, params["probes"]["winobias_lines_per_file"])
    write_crows_pairs(out / "crows_pairs" / "crows_pairs_demo.csv", seed + 3,
                      params["probes"]["crows_pairs_frames_per_occupation"])

    steps = checkpoint_steps(geometry.total_steps, geometry.checkpoint_interval)
    say(f"4/5 pretraining {geometry.total_steps} steps from random init; {len(steps)} checkpoints", started)
    config = GPTNeoXConfig.from_dict(params["model"]["architecture"])
    job = TrainJob(init=config, stream=str(out / "stream" / "document"), first_row=0, start_step=0,
                   end_step=geometry.total_steps, peak_lr=params["model"]["peak_lr"],
                   batch_size=geometry.batch_size, row_length=geometry.row_length,
                   total_steps=geometry.total_steps, seed=seed, tokenizer=str(tokenizer),
                   save_hf_at_steps=steps, hf_dir=str(out / "checkpoints"))
    trainer = TrainerConfig.from_any({**params["pretrain"], "checkpoint_every": geometry.total_steps,
                                      "keep_last": 1, "tensorboard": False, "progress": progress})
    threads = torch.get_num_threads()
    torch.set_num_threads(int(params["threads"] or threads))
    try:
        summary = run_training(job, trainer, out / "pretrain")
    finally:
        torch.set_num_threads(threads)
    for leftover in ("checkpoints", "model"):  # resumable state and a copy of the last step: not needed
        _remove_tree(out / "pretrain" / leftover)

    say("5/5 writing suite.json", started)
    suite = DemoSuite(root=out, key=key, tokenizer=Path("tokenizer.json"), stream=Path("stream/document"),
                      checkpoints=Path("checkpoints"), checkpoint_steps=tuple(steps),
                      winobias_dir=Path("winobias"), crows_pairs_csv=Path("crows_pairs/crows_pairs_demo.csv"),
                      heldout_stream=Path("stream/document"), heldout_rows=(train_rows, train_rows + params["heldout_rows"]),
                      geometry=params["geometry"], model=params["model"], params=params)
    write_json_atomic(out / "corpus_stats.json", corpus_stats)
    write_json_atomic(out / "pretrain_summary.json", summary)
    write_json_atomic(out / SUITE_RECORD, suite.to_dict())


def _pack_stream(sample: list[Document], generator: CorpusGenerator, tokenizer: Path, geometry,
                 heldout_rows: int, seed: int, out: Path) -> dict:
    """Training rows, then held-out rows of another seed's corpus, in one stream.

    Returns the corpus statistics: documents, tokens and the planted (occupation, gender) counts.
    """
    import numpy as np
    from debias.stream import IndexedStream, StreamWriter
    from debias.stream.pack import pack_texts
    from debias.tokenizer import load_tokenizer

    encoder = load_tokenizer(tokenizer)
    seq_len, train_rows = geometry.row_length - 1, geometry.total_steps * geometry.batch_size
    counts = {occupation: {"female": 0, "male": 0} for occupation in FEMALE_PERCENT}

    def counted(documents: Iterator[Document]) -> Iterator[str]:
        for document in documents:
            for mention in document.mentions:
                counts[mention.occupation][mention.gender] += 1
            yield document.text

    scratch = out / "scratch"
    training = take_tokens(itertools.chain(sample, generator.documents()), encoder, train_rows * seq_len + 1)
    train_summary = pack_texts(counted(training), tokenizer, seq_len, scratch / "train")
    heldout = take_tokens(CorpusGenerator(seed + 1).documents(), encoder, heldout_rows * seq_len + 1)
    pack_texts((document.text for document in heldout), tokenizer, seq_len, scratch / "heldout")

    train, held = IndexedStream(scratch / "train"), IndexedStream(scratch / "heldout")
    with StreamWriter(out / "stream" / "document", train.dtype, row_length=geometry.row_length) as writer:
        for start in range(0, train_rows, 4096):
            writer.append_rows(np.asarray(train.rows(start, min(start + 4096, train_rows))))
        writer.append_rows(np.asarray(held.rows(0, heldout_rows)))
    _remove_tree(scratch)
    return {"documents": train_summary["documents"], "tokens": train_summary["tokens"],
            "training_rows": train_rows, "heldout_rows": heldout_rows,
            "planted_female_percent": FEMALE_PERCENT, "mentions": counts}


def take_tokens(documents: Iterator[Document], encoder, needed: int, batch: int = 256) -> Iterator[Document]:
    """Documents until, each followed by an end-of-text token, they hold at least `needed` tokens."""
    total = 0
    while total < needed:
        chunk = list(itertools.islice(documents, batch))
        if not chunk:
            return
        total += sum(len(e.ids) + 1 for e in encoder.encode_batch([d.text for d in chunk]))
        yield from chunk


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
