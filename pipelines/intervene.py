"""The intervention pipeline, one Hydra app:  python pipelines/intervene.py [overrides]

    prepare   the checkpoint at the window start S, the stream, the tokenizer; check they fit
    rewrite   the window's rows, pronouns rewritten (debias.rewrite), audited
    train     treatment (rewritten rows) and control (the same rows untouched), same seeds
    evaluate  baseline (checkpoint S, untrained), control and treatment (debias.evaluate)
    report    metrics with intervals, paired tests, report.{json,md,html} (debias.report)

Every expensive result (rewrite, trained arm, evaluation) is cached under `cache_dir`, keyed by
the content that determines it, and built under a file lock: the parallel jobs of a sweep share
the baseline evaluation, each ratio's control, and the rewriter reuses its larger passes.
The script only wires library calls; every stage's logic lives in `debias/`.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))  # `python pipelines/intervene.py` from a plain checkout

import hydra  # noqa: E402
from filelock import FileLock  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from debias.errors import UserError, exit_on_user_error  # noqa: E402
from debias.io import sha256_file, sha256_json, write_json_atomic, write_text_atomic  # noqa: E402
from debias.report import assemble, write_run_report  # noqa: E402

CONF_DIR = PROJECT_ROOT / "conf"
CONFIG_GROUPS = ("model", "data", "intervention", "trainer", "eval", "sweep")
DIRECTIONS = ("m2f", "f2m", "swap", "none")  # none = the control arm alone


# ---- validation (before Hydra composes, and before any heavy work) ---------------------------

def check_group_choices(argv: list[str]) -> None:
    """`model=nope` -> a one-line error naming the allowed presets (Hydra's own error is a page)."""
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if not sep or key not in CONFIG_GROUPS:
            continue
        allowed = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
        for choice in value.split(","):  # a multirun sweeps comma-separated choices
            if choice not in allowed:
                raise UserError(f"{key}={choice}: no preset conf/{key}/{choice}.yaml; allowed: {', '.join(allowed)}")


def check_settings(cfg: DictConfig) -> None:
    """The settings every stage relies on, checked up front with their allowed values."""
    iv = cfg.intervention
    if iv.direction not in DIRECTIONS:
        raise UserError(f"intervention.direction={iv.direction}: unknown; allowed: {', '.join(DIRECTIONS)}")
    if iv.start_step is None and not (isinstance(iv.ratio, (int, float)) and 0 < iv.ratio < 1):
        raise UserError(f"intervention.ratio={iv.ratio}: must be strictly between 0 and 1 "
                        "(e.g. 0.07 or 0.21), or set intervention.start_step")
    if not (isinstance(iv.fraction, (int, float)) and 0 <= iv.fraction <= 1):
        raise UserError(f"intervention.fraction={iv.fraction}: must be in [0, 1]")


# ---- content-addressed cache ------------------------------------------------------------------

def cached(cfg: DictConfig, kind: str, key: Any, build: Callable[[Path], None]) -> Path:
    """The folder `<cache_dir>/<kind>/<hash of key>`, built once by `build(folder)`.

    A file lock makes concurrent jobs wait for the one that builds; `.done` marks a finished
    folder (a killed build leaves none, and the stages resume their own partial work).
    """
    folder = Path(cfg.cache_dir) / kind / sha256_json(key)[:20]
    done = folder / ".done"
    if not done.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{folder}.lock"):
            if not done.exists():
                folder.mkdir(exist_ok=True)
                write_json_atomic(folder / "key.json", key)
                build(folder)
                done.touch()
    return folder


# ---- stages -----------------------------------------------------------------------------------

STREAM_CONTENT = ("index_sha256", "index_bytes", "rows", "dtype", "row_length")


def eval_file_checksums(eval_cfg: dict) -> dict:
    """sha256 of each benchmark's data file (or of a folder's files) named by `<section>.path`."""
    sums = {}
    for section, settings in sorted(eval_cfg.items()):
        path = Path(settings["path"]) if isinstance(settings, dict) and settings.get("path") else None
        if path is None or not path.exists() or not settings.get("enabled", True):
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        sums[section] = sha256_json({str(f.relative_to(path) if path.is_dir() else f.name): sha256_file(f) for f in files})
    return sums


@dataclass
class Prepared:
    """What the prepare stage resolved: everything later stages read."""

    geometry: Any
    window: Any
    checkpoint: Path  # Hugging Face folder of the model at the window start
    stream: str  # prefix of the full training stream
    tokenizer: str  # tokenizer.json
    eval_cfg: Any  # the `eval` node, with data paths resolved (demo probes)
    model: dict  # identity for the report
    data: dict  # identity and checksums for the report


def prepare(cfg: DictConfig) -> Prepared:
    from debias.stream import Geometry, IndexedStream, Window

    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    if cfg.data.get("demo") is not None:  # the embedded miniature Pythia suite
        from debias.demo import build_demo_suite

        suite = build_demo_suite(cfg)  # built once per demo configuration, then loaded from the cache
        geometry = Geometry.from_config(suite.geometry)
        window = Window.from_config(geometry, cfg.intervention.ratio, cfg.intervention.start_step)
        checkpoint, stream, tokenizer = suite.checkpoint(window.start_step), str(suite.stream), str(suite.tokenizer)
        eval_cfg = suite.eval_config(eval_cfg)
        source = f"demo suite {suite.key}"
    else:
        from debias.model import resolve_checkpoint

        geometry = Geometry.from_config(OmegaConf.to_container(cfg.data.geometry, resolve=True))
        window = Window.from_config(geometry, cfg.intervention.ratio, cfg.intervention.start_step)
        source = cfg.model.checkpoint or cfg.model.hub_repo
        checkpoint = Path(resolve_checkpoint(source, window.start_step))
        stream, tokenizer = str(cfg.data.stream), str(cfg.data.tokenizer)

    # One activation for every arm: Pythia trained with tanh GELU, while a Hugging Face config.json
    # says exact; the preset decides (eval.gelu may still override) and the report records it.
    eval_cfg["gelu"] = eval_cfg.get("gelu") or cfg.model.architecture.get("gelu")

    # Fit checks before heavy work: rows long enough for the window, ids inside the vocabulary.
    opened = IndexedStream(stream)
    window.check_fits(opened)
    model_config = json.loads((checkpoint / "config.json").read_text())
    from debias.tokenizer import load_tokenizer

    vocab = load_tokenizer(tokenizer).get_vocab_size()
    if model_config.get("vocab_size", vocab) < vocab:
        raise UserError(f"{checkpoint}: vocab_size {model_config['vocab_size']} is smaller than the tokenizer's "
                        f"{vocab} ids ({tokenizer}); pick the matching model preset")
    stream_identity = opened.identity()
    model = {"name": cfg.model.name, "source": str(source), "checkpoint": str(checkpoint),
             "step": window.start_step, "architecture": model_config}
    data = {"stream": stream_identity, "tokenizer": tokenizer, "tokenizer_sha256": sha256_file(tokenizer),
            "eval_files": eval_file_checksums(eval_cfg), "window": window.describe()}
    # What the data *are*, not where they lie: runs on the same data in other folders compare.
    data["checksum"] = sha256_json({"stream": {k: v for k, v in stream_identity.items() if k in STREAM_CONTENT},
                                    "tokenizer": data["tokenizer_sha256"], "eval": data["eval_files"]})[:16]
    return Prepared(geometry, window, checkpoint, stream, tokenizer, eval_cfg, model, data)


def rewrite(cfg: DictConfig, prep: Prepared):
    """The treatment's rows; None for a control-only run."""
    iv = cfg.intervention
    if iv.direction == "none":
        return None
    from debias.rewrite import rewrite_window

    # One folder per (settings, window) side by side in <cache>/rewrite: the rewriter returns a
    # finished sibling pass of the same settings that covers the window (the 21% pass serves the
    # 7% one). One lock per settings makes a 7% job wait for a running 21% pass, then reuse it.
    settings = sha256_json({"stream": prep.data["stream"], "tokenizer": prep.tokenizer, "direction": iv.direction,
                            "fraction": iv.fraction, "seed": iv.seed, "resolver": iv.resolver})[:16]
    window = prep.window
    out_dir = Path(cfg.cache_dir) / "rewrite" / f"{settings}_rows{window.start_row}-{window.end_row}"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir.parent / f"{settings}.lock")):
        return rewrite_window(prep.stream, window, out_dir, prep.tokenizer, iv.direction,
                              fraction=iv.fraction, seed=iv.seed, resolver=iv.resolver,
                              workers=iv.get("workers"), block_rows=iv.get("block_rows", 4096))


def train_arm(cfg: DictConfig, prep: Prepared, stream: str, first_row: int, rows_identity: Any) -> Path:
    """Continue the checkpoint on the given rows; the run folder (cached by the job, the trainer
    settings and the identity of the rows, so each ratio's control trains once per sweep)."""
    from debias.train import TrainerConfig, TrainJob, launch_training

    job = TrainJob.for_window(init=str(prep.checkpoint), stream=stream, first_row=first_row, window=prep.window,
                              geometry=prep.geometry, peak_lr=float(cfg.model.peak_lr), seed=int(cfg.seed),
                              init_step=prep.window.start_step, tokenizer=prep.tokenizer,
                              gelu=cfg.model.architecture.get("gelu"))
    trainer = TrainerConfig.from_any(cfg.trainer)
    key = {"job": job.to_dict(), "rows": rows_identity, "trainer": trainer.to_dict()}
    return cached(cfg, "train", key, lambda folder: launch_training(job, trainer, folder))


def evaluate(cfg: DictConfig, prep: Prepared, model_folder: Path, model_identity: Any) -> tuple[dict, dict]:
    """(metrics, per-item values) of one model, cached by model identity and eval settings."""
    from debias.evaluate import evaluate_model

    def build(folder: Path) -> None:
        metrics, items = evaluate_model(model_folder, prep.eval_cfg)
        write_json_atomic(folder / "items.json", items)
        write_json_atomic(folder / "metrics.json", metrics)

    folder = cached(cfg, "eval", {"model": model_identity, "eval": prep.eval_cfg}, build)
    return (json.loads((folder / "metrics.json").read_text()), json.loads((folder / "items.json").read_text()))


# ---- the app ----------------------------------------------------------------------------------

def run(cfg: DictConfig, run_dir: Path) -> Path:
    check_settings(cfg)
    # Tiny demo models run several times faster on one thread than on two contending ones.
    threads = cfg.get("threads") or cfg.data.get("demo", {}).get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    timing: dict[str, Any] = {}

    def timed(name: str, fn: Callable, *args):
        tick = time.perf_counter()
        result = fn(*args)
        timing[f"{name}_seconds"] = round(time.perf_counter() - tick, 3)
        return result

    prep = timed("prepare", prepare, cfg)
    rewritten = timed("rewrite", rewrite, cfg, prep)  # None for a control-only run
    window = prep.window
    trained = {"control": timed("train_control", train_arm, cfg, prep, prep.stream, window.start_row, prep.data["stream"])}
    if rewritten is not None:
        rows = assemble.split_volatile(rewritten.manifest)[0]
        trained["treatment"] = timed("train_treatment", train_arm, cfg, prep, str(rewritten.stream), rewritten.first_row, rows)

    # (model folder, identity) of each arm; the identity keys its cached evaluation.
    models = {"baseline": (prep.checkpoint, {"checkpoint": str(prep.checkpoint), "step": window.start_step})}
    models.update({arm: (folder / "model", {"trained": folder.name}) for arm, folder in trained.items()})
    evaluations = {arm: timed(f"evaluate_{arm}", evaluate, cfg, prep, folder, identity)
                   for arm, (folder, identity) in models.items()}
    comparisons = timed("compare", assemble.paired_comparisons, {arm: items for arm, (_, items) in evaluations.items()})

    report = assemble.run_report(
        cfg=OmegaConf.to_container(cfg, resolve=True), prepared=prep, rewrite=rewritten,
        training={arm: assemble.training_summary(folder) for arm, folder in trained.items()},
        arms={arm: {"key": sha256_json(models[arm][1])[:20], "model": str(models[arm][0]), "metrics": metrics}
              for arm, (metrics, _) in evaluations.items()},
        comparisons=comparisons,
        timing={**timing, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    path = write_run_report(run_dir, report)
    for line in assemble.summary_lines(report):
        print(line)
    print(f"report: {path}")
    return path


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, run_dir)
    except UserError:
        # Hydra made the run folder before the settings could be checked: a run refused for bad
        # input leaves no folder behind (everything it built is in the cache, keyed by content).
        if not (run_dir / "report.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


if __name__ == "__main__":
    exit_on_user_error(check_group_choices)(sys.argv[1:])
    main()
