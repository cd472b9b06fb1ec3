"""Build the demo suite: a miniature Pythia, made once and cached by its configuration.

    suite = build_demo_suite(config.data.demo)       # a debias.config.DemoConfig
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

The suite is the cache entry `<cache_dir>/demo/<key>` (debias.cache), keyed by the settings that
determine it (`suite_params`: not the pretraining threads or progress bar); the cache's lock makes
parallel sweep jobs wait for one build, and a killed build starts over.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

from debias.cache import Cache
from debias.config import DemoConfig, EvalConfig
from debias.demo.corpus import FEMALE_PERCENT, CorpusGenerator, Document
from debias.demo.probes import write_crows_pairs, write_winobias
from debias.demo.tokenizer import train_tokenizer
from debias.errors import UserError
from debias.io import write_json_atomic, write_text_atomic
from debias.train.config import TrainerConfig

# Bump when the generator, probes or build change what a suite holds: old caches are then ignored.
DEMO_FORMAT_VERSION = 1
SUITE_RECORD = "suite.json"


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

    def eval_config(self, eval_cfg: EvalConfig) -> EvalConfig:
        """`eval_cfg` with the demo probes filled in where the paths are unset: CrowS-Pairs CSV,
        WinoBias folder, held-out perplexity rows."""
        perplexity = eval_cfg.perplexity
        if not perplexity.stream:
            perplexity = replace(perplexity, stream=str(self.heldout_stream), rows=list(self.heldout_rows))
        return replace(eval_cfg, perplexity=perplexity,
                       crows_pairs=replace(eval_cfg.crows_pairs, path=eval_cfg.crows_pairs.path or str(self.crows_pairs_csv)),
                       winobias=replace(eval_cfg.winobias, path=eval_cfg.winobias.path or str(self.winobias_dir)))

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


# ---- settings -----------------------------------------------------------------------------------

def suite_params(demo: DemoConfig) -> dict:
    """What determines the suite, and so its cache key: every demo setting and the model's
    architecture and peak_lr; not the pretraining threads, progress bar or logging."""
    return {
        "version": DEMO_FORMAT_VERSION,
        "seed": demo.seed,
        "geometry": asdict(demo.geometry),
        "tokenizer": asdict(demo.tokenizer),
        "heldout_rows": demo.heldout_rows,
        "probes": asdict(demo.probes),
        "pretrain": {k: v for k, v in demo.pretrain.items() if k not in TrainerConfig.RESULT_NEUTRAL},
        "model": {"architecture": asdict(demo.model.architecture), "peak_lr": float(demo.model.peak_lr)},
    }


def checkpoint_steps(total_steps: int, interval: int) -> list[int]:
    """Pythia's grid: 0 and powers of two below the interval, then every interval to the end."""
    early = [0] + [2 ** k for k in range(interval.bit_length()) if 2 ** k < interval]
    return sorted(set(early + list(range(interval, total_steps + 1, interval))))


# ---- building -----------------------------------------------------------------------------------

def say(message: str, started: float | None = None) -> None:
    """A progress line on stderr, with the seconds since `started` when given."""
    clock = f" {time.time() - started:4.0f}s" if started is not None else ""
    print(f"[demo{clock}] {message}", file=sys.stderr, flush=True)


def build_demo_suite(demo: DemoConfig, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> DemoSuite:
    """The demo suite for these settings: served from the cache, or built once into it."""
    cache = Cache(cache_dir or demo.cache_dir or Cache.default_root())
    params = suite_params(demo)
    key = cache.entry("demo", params).digest

    def build(out: Path) -> None:
        started = time.time()
        say(f"building the demo suite {key} in {out} (once; later runs reuse it)")
        _build(demo, params, key, out, progress)
        say(f"demo suite built in {time.time() - started:.0f} s")

    root = cache.get_or_build("demo", params, build, label=f"demo suite, {demo.geometry.total_steps} steps", fresh=True)
    return DemoSuite.load(root)


def _build(demo: DemoConfig, params: dict, key: str, out: Path, progress: bool) -> None:
    import torch

    from debias.model import GPTNeoXConfig
    from debias.train import TrainJob, run_training

    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    geometry = demo.geometry.to_geometry()
    seed = demo.seed
    train_rows = geometry.total_steps * geometry.batch_size

    say("1/5 corpus and tokenizer", started)
    generator = CorpusGenerator(seed)
    sample = list(generator.documents(demo.tokenizer.train_documents))
    tokenizer = train_tokenizer([d.text for d in sample], demo.tokenizer.vocab_size, out / "tokenizer.json")
    write_text_atomic(out / "corpus_sample.txt", "\n<|endoftext|>\n".join(d.text for d in sample[:30]) + "\n")

    say(f"2/5 stream: {train_rows:,} training rows + {demo.heldout_rows} held-out rows of "
        f"{geometry.row_length} tokens", started)
    corpus_stats = _pack_stream(sample, generator, tokenizer, geometry, demo.heldout_rows, seed, out)

    say("3/5 probes (WinoBias and CrowS-Pairs formats)", started)
    write_winobias(out / "winobias", seed + 2, demo.probes.winobias_lines_per_file)
    write_crows_pairs(out / "crows_pairs" / "crows_pairs_demo.csv", seed + 3,
                      demo.probes.crows_pairs_frames_per_occupation)

    steps = checkpoint_steps(geometry.total_steps, geometry.checkpoint_interval)
    say(f"4/5 pretraining {geometry.total_steps} steps from random init; {len(steps)} checkpoints", started)
    config = GPTNeoXConfig.from_dict(asdict(demo.model.architecture))
    job = TrainJob(init=config, stream=str(out / "stream" / "document"), first_row=0, start_step=0,
                   end_step=geometry.total_steps, peak_lr=float(demo.model.peak_lr),
                   batch_size=geometry.batch_size, row_length=geometry.row_length,
                   total_steps=geometry.total_steps, seed=seed, tokenizer=str(tokenizer),
                   save_hf_at_steps=steps, hf_dir=str(out / "checkpoints"))
    trainer = demo.pretrain_trainer(checkpoint_every=geometry.total_steps, keep_last=1, tensorboard=False,
                                    progress=progress)
    threads = torch.get_num_threads()
    torch.set_num_threads(demo.threads or threads)
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
                      heldout_stream=Path("stream/document"), heldout_rows=(train_rows, train_rows + demo.heldout_rows),
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
