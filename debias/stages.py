"""The intervention pipeline as library functions, one per stage, chained by `run`:

    prepare   the checkpoint at the window start S, the stream, the tokenizer, the held-out
              perplexity source, the optimizer state; check they fit before any heavy work
    rewrite   the window's rows, pronouns rewritten (debias.rewrite), audited, and re-checked
              independently on a sample (debias.rewrite.checker)
    train     treatment (rewritten rows) and control (the same rows untouched), same seeds
    evaluate  baseline (checkpoint S, untrained), control and treatment (debias.evaluate)
    report    metrics with intervals, paired tests, report.{json,md,html} (debias.report)

Each stage takes the checked, typed run configuration (debias.config.RunConfig), the cache
(debias.cache.Cache) and what the earlier stages returned. Every expensive result (demo suite,
rewrite, trained arm, evaluation) is a cache entry keyed by what determines it, so the parallel
jobs of a sweep share the baseline evaluation and each ratio's control, and a rewrite pass over
the 21% window serves the 7% runs (a cache query for a finished pass that covers the window).
With `plan=true`, `run` prints the run's cost instead (`plan`) and touches neither data nor cache.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from debias.cache import Cache, Entry, file_records
from debias.config import EvalConfig, EvaluateModelsConfig, ModelSpec, PerplexityConfig, RunConfig, as_dict
from debias.errors import UserError
from debias.io import sha256_file, sha256_json, utc_now, write_json_atomic, write_text_atomic
from debias.stream import Geometry, IndexedStream, Window

ARMS = ("baseline", "control", "treatment")
STREAM_CONTENT = ("index_sha256", "index_bytes", "rows", "dtype", "row_length")  # what a stream *is*


@dataclass
class Prepared:
    """What the prepare stage resolved: everything later stages read."""

    geometry: Geometry
    window: Window                # the steps the arms train on; the report is labelled with it
    checkpoint: Path              # Hugging Face folder of the model at the window start
    stream: str                   # prefix of the full training stream
    source: IndexedStream         # that stream, opened (its identity is hashed once)
    tokenizer: str                # tokenizer.json
    eval_config: EvalConfig       # with the demo probes / held-out rows and the activation filled in
    model: dict                   # identity for the report
    data: dict                    # identity and checksums for the report
    optimizer_state: Optional[dict] = None  # what trainer.optimizer_state=<path> holds (its files' content)


# ---- prepare ------------------------------------------------------------------------------------

def check_devices(config: RunConfig) -> None:
    """A CUDA device asked for on a machine without one fails now, not after hours of rewriting;
    so does fp16 training (Pythia's loss scaling) where the trainer would run on the CPU."""
    import torch

    for setting, device in (("trainer.device", config.trainer.device), ("eval.device", config.eval.device)):
        check_cuda(setting, device)
    device = str(config.trainer.device)
    if config.trainer.precision == "fp16" and (device == "cpu" or (device == "auto" and not torch.cuda.is_available())):
        raise UserError(f"trainer.precision=fp16: needs a GPU, and trainer.device={device} trains on the CPU here; "
                        "use trainer.precision=fp32 (or bf16) on a CPU")


def check_cuda(setting: str, device: str) -> None:
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{setting}={device}: no CUDA device is visible on this machine; use {setting}=cpu (or auto)")


def eval_file_checksums(eval_config: EvalConfig) -> dict:
    """sha256 of each enabled benchmark's data file (or of a folder's files) named by `<section>.path`."""
    sums = {}
    for section, settings in sorted(asdict(eval_config).items()):
        path = Path(settings["path"]) if isinstance(settings, dict) and settings.get("path") else None
        if path is None or not path.exists() or not settings.get("enabled", True):
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        sums[section] = sha256_json({str(f.relative_to(path) if path.is_dir() else f.name): sha256_file(f) for f in files})
    return sums


def prepare(config: RunConfig, cache: Cache) -> Prepared:
    from debias.evaluate.suite import check_inputs  # benchmark files read before any heavy work

    check_devices(config)
    iv, eval_config = config.intervention, config.eval
    if config.demo is not None:  # the embedded miniature Pythia suite
        from debias.demo import build_demo_suite

        suite = build_demo_suite(config.demo, cache.root)  # built once per demo configuration
        geometry = Geometry.from_config(suite.geometry)
        window = Window.from_config(geometry, iv.ratio, iv.start_step)
        stream, tokenizer = str(suite.stream), str(suite.tokenizer)
        # The suite fills in its probe files; held-out perplexity is chosen below, as for any stream.
        eval_config = replace(suite.eval_config(eval_config), perplexity=eval_config.perplexity)
        heldout_wanted = suite.heldout_rows[1] - suite.heldout_rows[0]
        heldout_note = "; the demo suite's held-out rows, from a separately seeded corpus"
        source = f"demo suite {suite.key}"
    else:
        geometry = config.data.geometry.to_geometry()
        window = Window.from_config(geometry, iv.ratio, iv.start_step)
        stream, tokenizer = str(config.data.stream), str(config.data.tokenizer)
        heldout_wanted, heldout_note = config.data.heldout_rows, ""
        source = config.model.checkpoint or config.model.hub_repo
    check_inputs(eval_config)  # the benchmark files: a bad one fails now, not at the evaluation after training

    # Fit checks before heavy work (a checkpoint download, the rewrite, training): rows long enough
    # for the window, a held-out perplexity source, optimizer state from the window's start.
    opened = IndexedStream(stream)
    window.check_fits(opened)
    eval_config = replace(eval_config, perplexity=heldout_perplexity(
        eval_config.perplexity, cache, window, opened, tokenizer, heldout_wanted, heldout_note))
    optimizer_state = optimizer_state_identity(config, window)
    if config.demo is not None:
        checkpoint = suite.checkpoint(window.start_step)
    else:
        from debias.model import resolve_checkpoint

        checkpoint = Path(resolve_checkpoint(source, window.start_step))

    # One activation for every arm: Pythia trained with tanh GELU, while a Hugging Face config.json
    # says exact; the preset decides (eval.gelu may still override) and the report records it.
    eval_config = replace(eval_config, gelu=eval_config.gelu or config.model.architecture.gelu)
    model_config = json.loads((checkpoint / "config.json").read_text())
    from debias.tokenizer import load_tokenizer

    vocab = load_tokenizer(tokenizer).get_vocab_size()
    if model_config.get("vocab_size", vocab) < vocab:
        raise UserError(f"{checkpoint}: vocab_size {model_config['vocab_size']} is smaller than the tokenizer's "
                        f"{vocab} ids ({tokenizer}); pick the matching model preset")
    stream_identity = opened.identity()
    model = {"name": config.model.name, "source": str(source), "checkpoint": str(checkpoint),
             "step": window.start_step, "architecture": model_config}
    data = {"stream": stream_identity, "tokenizer": tokenizer, "tokenizer_sha256": sha256_file(tokenizer),
            "eval_files": eval_file_checksums(eval_config), "window": window.describe()}
    # What the data *are*, not where they lie: runs on the same data in other folders compare.
    data["checksum"] = sha256_json({"stream": {k: v for k, v in stream_identity.items() if k in STREAM_CONTENT},
                                    "tokenizer": data["tokenizer_sha256"], "eval": data["eval_files"]})[:16]
    return Prepared(geometry, window, checkpoint, stream, opened, tokenizer, eval_config, model, data, optimizer_state)


# ---- prepare: held-out perplexity ---------------------------------------------------------------

SEEN_BY_ALL_ARMS = "seen by all arms: the checkpoint or the arms trained on them; not held-out text"


def heldout_perplexity(section: PerplexityConfig, cache: Cache, window: Window, stream: IndexedStream,
                       tokenizer: str, rows_wanted: int, note: str = "") -> PerplexityConfig:
    """`eval.perplexity` with its source filled in and labelled (`rows_label`, the report's
    `perplexity.source`), by debias.evaluate.choose_heldout_source: the stream's rows after the
    window end, which no arm and no checkpoint saw; else `text`, packed with the run's tokenizer
    into `rows_wanted` rows of the run's row length; rows the checkpoint trained on only when
    `allow_seen_rows` asks for them. Refused in one line when none applies. Rows the user names
    (`stream` and `rows`) are kept, and refused when the run trains on them unless allowed."""
    from debias.evaluate import choose_heldout_source

    if not section.enabled:
        return section
    if section.stream or section.rows:
        return named_heldout_rows(section, window, stream)
    choice = choose_heldout_source(window_start_row=window.start_row, window_end_row=window.end_row,
                                   stream_rows=len(stream), rows_wanted=rows_wanted, text=section.text,
                                   allow_seen_rows=section.allow_seen_rows)
    if choice.kind == "text":
        return packed_heldout_text(section, cache, tokenizer, window.geometry.row_length, rows_wanted)
    return replace(section, stream=str(stream.prefix), rows=list(choice.rows), rows_label=choice.label + note)


def named_heldout_rows(section: PerplexityConfig, window: Window, stream: IndexedStream) -> PerplexityConfig:
    """Rows the user named: labelled by where they lie; refused if the run trained on them, unless allowed."""
    if not (section.stream and section.rows):
        raise UserError("eval.perplexity.stream / eval.perplexity.rows: set both (the stream rows to score) or "
                        "neither (the pipeline then picks held-out rows or eval.perplexity.text)")
    start, stop = section.rows
    named = IndexedStream(section.stream)
    if named.idx_path.resolve() != stream.idx_path.resolve():
        return replace(section, rows_label=section.rows_label or
                       f"stream rows {start}..{stop} of {named.prefix} (not the training stream)")
    if start >= window.end_row:
        return replace(section, rows_label=f"stream rows {start}..{stop} after the window end (seen by no arm or checkpoint)")
    if not section.allow_seen_rows:
        raise UserError(f"eval.perplexity.rows=[{start}, {stop}]: rows of the training stream before the window end "
                        f"(row {window.end_row}), which the checkpoint or the arms trained on; pick rows from "
                        f"{window.end_row} on, or set eval.perplexity.allow_seen_rows=true to score them labelled so")
    return replace(section, rows_label=f"stream rows {start}..{stop} of the training stream ({SEEN_BY_ALL_ARMS})")


def packed_heldout_text(section: PerplexityConfig, cache: Cache, tokenizer: str, row_length: int,
                        rows: int) -> PerplexityConfig:
    """`section.text` packed with the run's tokenizer into up to `rows` rows of `row_length` tokens:
    a stream in the cache entry `heldout/<key>` (key: the text's content or datasets name, the
    field, the tokenizer's sha256, the row length and count), so every arm scores the same rows."""
    from debias.evaluate.datafiles import local_or_hub
    from debias.evaluate.heldout import TEXT_SUFFIXES, pack_rows, read_heldout_documents
    from debias.evaluate.scorer import END_OF_TEXT
    from debias.stream import StreamWriter, dtype_for_vocab
    from debias.tokenizer import load_tokenizer

    located = local_or_hub(section.text, "held-out text (eval.perplexity.text)", local_suffixes=TEXT_SUFFIXES)
    if isinstance(located, Path):
        if not located.is_file():
            raise UserError(f"eval.perplexity.text={located}: a folder; give a file (.jsonl or plain text)")
        text = {"sha256": sha256_file(located)}
    else:
        text = {"datasets": located, "config": section.text_config, "split": section.text_split}
    key = {"text": text, "field": section.text_field, "tokenizer_sha256": sha256_file(tokenizer),
           "row_length": row_length, "rows": rows}

    def build(folder: Path) -> None:
        documents, described = read_heldout_documents(located, section.text_field, section.text_config,
                                                      section.text_split)
        tok = load_tokenizer(tokenizer)
        eos = tok.token_to_id(END_OF_TEXT)
        if eos is None:
            raise UserError(f"{tokenizer}: no {END_OF_TEXT} token to join the held-out documents with")
        ids, counts = pack_rows(documents, tok, eos, row_length, rows)
        with StreamWriter(folder / "rows", dtype_for_vocab(tok.get_vocab_size()), row_length) as writer:
            writer.append_rows(ids)
        write_json_atomic(folder / "packed.json", {**counts, "described": described})

    folder = cache.get_or_build("heldout", key, build, label=f"held-out text {section.text}")
    packed = json.loads((folder / "packed.json").read_text())
    where = f"text file {located}" if isinstance(located, Path) else packed["described"]
    label = (f"held-out text: {where} (field {section.text_field!r}), {packed['rows']} rows of {row_length} tokens "
             f"from {packed['documents_read']} documents, packed with the run's tokenizer")
    return replace(section, stream=str(folder / "rows"), rows=[0, packed["rows"]], rows_label=label)


# ---- prepare: optimizer state -------------------------------------------------------------------

def optimizer_state_identity(config: RunConfig, window: Window) -> Optional[dict]:
    """For trainer.optimizer_state=<path>: the shards' step, checked against the window's start
    before any work, and their content (file sizes and hashes) for the trained arms' cache key."""
    trainer = config.trainer
    if not trainer.imports_optimizer_state:
        return None
    from debias.train.optim import check_step, optimizer_state_step

    setting = f"trainer.optimizer_state={trainer.optimizer_state}"  # engine=torch: TrainerConfig.validate refuses deepspeed
    form, step = optimizer_state_step(trainer.optimizer_state)
    check_step(setting, step, window.start_step)
    return {"form": form, "step": step, "files": sha256_json(file_records(Path(trainer.optimizer_state), whole=False))}


# ---- rewrite ------------------------------------------------------------------------------------

def rewrite(config: RunConfig, prepared: Prepared, cache: Cache):
    """The treatment's rows (a debias.rewrite.RewriteResult); None for a control-only run.

    The entry's key is the pass configuration (debias.rewrite.window.pass_config: the source's
    content, tokenizer, direction, fraction, seed, resolver) and the window's rows. A finished
    entry of the same configuration whose rows cover the window serves it; one lock per
    configuration makes a 7% job wait for a running 21% pass, then reuse it.
    """
    iv = config.intervention
    if iv.direction == "none":
        return None
    from debias.rewrite import rewrite_window
    from debias.rewrite.window import load_result

    key = rewrite_key(config, prepared)
    settings, rows = key["pass"], key["rows"]

    def covers(key: Any) -> bool:
        return (isinstance(key, dict) and key.get("pass") == settings and key["rows"] != rows
                and key["rows"][0] <= rows[0] and rows[1] <= key["rows"][1])

    def build(folder: Path) -> list[Entry]:
        larger = sorted(cache.find("rewrite", covers), key=lambda e: e.key()["rows"][1] - e.key()["rows"][0])
        result = rewrite_window(prepared.source, prepared.window, folder, prepared.tokenizer, iv.direction,
                                fraction=iv.fraction, seed=iv.seed, resolver=iv.resolver, workers=iv.workers,
                                block_rows=iv.block_rows, reuse=[e.folder for e in larger])
        used = result.manifest.get("reused_from")
        return [e for e in larger if str(e.folder) == used]  # served from it: checked whenever this entry is

    with cache.lock("rewrite", sha256_json(settings)[:16]):
        folder = cache.get_or_build("rewrite", key, build, label=f"rewrite {iv.direction} rows {rows[0]}..{rows[1]}")
    return load_result(folder)


def rewrite_key(config: RunConfig, prepared: Prepared) -> dict:
    """The rewrite entry's key: the pass configuration and the window's rows."""
    from debias.rewrite.window import pass_config

    iv = config.intervention
    settings = pass_config(prepared.source, prepared.tokenizer, iv.direction, iv.fraction, iv.seed, iv.resolver)
    return {"pass": settings, "rows": [prepared.window.start_row, prepared.window.end_row]}


def check_rewrite(config: RunConfig, prepared: Prepared, cache: Cache, rewritten) -> Optional[dict]:
    """The independent check of the treatment's rows (debias.rewrite.checker.check_streams: decoded
    text judged by rules and a tagger that share no code with the rewriter) on a sample seeded by
    intervention.seed, until intervention.check_words changed words are judged; None when there is
    no rewrite or check_words=0. Cached beside the rewrite: keyed by its entry's key and the check
    settings, served only while that entry is intact. The report carries it as
    `rewrite.independent_check` (precision and residual rate with 95% intervals, snippets)."""
    iv = config.intervention
    if rewritten is None or iv.check_words == 0:
        return None
    from debias.rewrite.checker import check_streams

    tagger = installed_tagger(iv.check_tagger)
    rewrite_entry = rewrite_key(config, prepared)
    key = {"rewrite": rewrite_entry, "sample_words": iv.check_words, "seed": iv.seed, "tagger": tagger}
    window = prepared.window

    def build(folder: Path) -> list[Entry]:
        result = check_streams(prepared.source, IndexedStream(rewritten.stream), (window.start_row, window.end_row),
                               rewritten.first_row, prepared.tokenizer, iv.direction, fraction=iv.fraction,
                               pass_seed=iv.seed, sample_words=iv.check_words, seed=iv.seed,
                               tagger="none" if tagger is None else "spacy")
        write_json_atomic(folder / "check.json", result)
        return [cache.entry("rewrite", rewrite_entry)]

    folder = cache.get_or_build("rewrite_check", key, build, label=f"independent check of rewrite {iv.direction}")
    return json.loads((folder / "check.json").read_text())


def installed_tagger(choice: str) -> Optional[str]:
    """The spaCy pipeline intervention.check_tagger stands for ("<package> <version>"), or None for
    no tagger: auto = the one debias.rewrite.checker loads where installed. Found without importing
    spaCy (seconds), so a cached check is served at once and a newly installed tagger makes a new one."""
    import importlib.metadata
    import importlib.util

    from debias.rewrite.checker import TAGGER_MODELS

    if choice == "none":
        return None
    if importlib.util.find_spec("spacy") is not None:
        for name in TAGGER_MODELS:
            if importlib.util.find_spec(name) is not None:
                return f"{name} {importlib.metadata.version(name)}"
    if choice == "spacy":
        raise UserError(f"intervention.check_tagger=spacy: none of spaCy's {', '.join(TAGGER_MODELS)} is installed; "
                        "install en_core_web_sm, or use intervention.check_tagger=auto (or none)")
    return None


# ---- train --------------------------------------------------------------------------------------

@contextlib.contextmanager
def naming_arm(arm: str) -> Iterator[None]:
    """A one-line error from an arm's training or evaluation (a NaN loss, a non-finite score naming
    its benchmark and item, a bad file) also names the arm it stopped."""
    try:
        yield
    except UserError as err:
        err.args = (f"{arm} arm: {err}",)  # same exception, same type: only the message gains the arm
        raise


def arm_rows(prepared: Prepared, rewritten) -> dict[str, tuple[str, int, Any]]:
    """For each trained arm: (stream, row of the window's first row in it, identity of the rows)."""
    arms = {"control": (prepared.stream, prepared.window.start_row, prepared.data["stream"])}
    if rewritten is not None:
        arms["treatment"] = (str(rewritten.stream), rewritten.first_row, rewritten.manifest)
    return arms


def train_arm(config: RunConfig, prepared: Prepared, cache: Cache, arm: str, stream: str, first_row: int,
              rows_identity: Any) -> Path:
    """Continue the checkpoint on the given rows -> the trainer's run folder (a cache entry keyed by
    the job, the identity of the rows and the trainer's result_key(), so each ratio's control
    trains once per sweep and trainer.progress=false reuses both arms)."""
    from debias.train import TrainJob, launch_training

    window = prepared.window
    job = TrainJob.for_window(init=str(prepared.checkpoint), stream=stream, first_row=first_row, window=window,
                              geometry=prepared.geometry, peak_lr=float(config.model.peak_lr), seed=config.seed,
                              init_step=window.start_step, tokenizer=prepared.tokenizer,
                              gelu=config.model.architecture.gelu)
    def build(folder: Path) -> None:  # a killed build resumes from the trainer's own checkpoints in folder
        with naming_arm(arm):
            launch_training(job, config.trainer, folder)

    trainer = config.trainer.result_key()
    if prepared.optimizer_state is not None:  # what the shards are, not where they lie
        trainer["optimizer_state"] = prepared.optimizer_state
    key = {"job": job.to_dict(), "rows": rows_identity, "trainer": trainer}
    return cache.get_or_build("train", key, build, label=f"train {arm} steps {window.start_step}..{window.end_step}")


# ---- evaluate -----------------------------------------------------------------------------------

def evaluate_arm(prepared: Prepared, cache: Cache, model_folder: Path, model_identity: Any,
                 label: str = "") -> tuple[dict, dict]:
    """(metrics, per-item values) of one model, cached by the model's identity, the eval settings
    and the checksums of the benchmark files."""
    from debias.evaluate import evaluate_model

    def evaluate() -> tuple[dict, dict]:
        with naming_arm(label or str(model_folder)):
            return evaluate_model(model_folder, prepared.eval_config)

    return cached_evaluation(cache, model_identity, prepared.eval_config, prepared.data["eval_files"],
                             f"evaluate {label}".strip(), evaluate)


def cached_evaluation(cache: Cache, model_identity: Any, eval_config: EvalConfig, eval_files: dict, label: str,
                      evaluate: Callable[[], tuple[dict, dict]]) -> tuple[dict, dict]:
    """(metrics, per-item values) from the evaluation cache entry keyed by the model's identity, the
    eval settings and the benchmark files' checksums; `evaluate()` builds a missing one."""
    def build(folder: Path) -> None:
        metrics, items = evaluate()
        write_json_atomic(folder / "items.json", items)
        write_json_atomic(folder / "metrics.json", metrics)

    key = {"model": model_identity, "eval": asdict(eval_config), "eval_files": eval_files}
    folder = cache.get_or_build("eval", key, build, label=label)
    return json.loads((folder / "metrics.json").read_text()), json.loads((folder / "items.json").read_text())


def arm_models(prepared: Prepared, trained: dict[str, Path]) -> dict[str, tuple[Path, dict]]:
    """(model folder, identity) of each arm; the identity keys its cached evaluation."""
    models = {"baseline": (prepared.checkpoint, {"checkpoint": str(prepared.checkpoint), "step": prepared.window.start_step})}
    models.update({arm: (folder / "model", {"trained": folder.name}) for arm, folder in trained.items()})
    return models


# ---- report -------------------------------------------------------------------------------------

def report(config: RunConfig, prepared: Prepared, rewritten, trained: dict[str, Path],
           models: dict[str, tuple[Path, dict]], evaluations: dict[str, tuple[dict, dict]],
           comparisons: dict, run_dir: Path, timing: dict, rewrite_check: Optional[dict] = None) -> Path:
    """report.{json,md,html} and config.yaml in `run_dir`; returns the path of report.json.
    `rewrite_check` (check_rewrite) is the rewrite's independent check."""
    from omegaconf import OmegaConf

    from debias.report import assemble, write_run_report

    settings = as_dict(config)
    report_dict = assemble.run_report(
        cfg=settings, prepared=prepared, rewrite=rewritten,
        training={arm: assemble.training_summary(folder) for arm, folder in trained.items()},
        arms={arm: {"key": sha256_json(models[arm][1])[:20], "model": str(models[arm][0]), "metrics": metrics}
              for arm, (metrics, _) in evaluations.items()},
        comparisons=comparisons,
        timing={**timing, "finished_utc": utc_now()},
        rewrite_check=rewrite_check,
    )
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(settings)))
    path = write_run_report(run_dir, report_dict)
    for line in assemble.summary_lines(report_dict):
        print(line)
    print(f"report: {path}")
    return path


# ---- plan ---------------------------------------------------------------------------------------

def plan(config: RunConfig, run_dir: Path) -> Path:
    """plan=true: print what the run would cost and write it to `run_dir`/plan.json, without
    reading the data, building the demo suite or touching the cache (a user sizes an allocation
    before fetching 600 GB). Figures from debias.train.plan: the window's tokens per arm, tokens/s
    per GPU for the model's size (measured, or projected from measured MFU, and labelled so),
    GPU-hours and wall time per arm and for the run: each trained arm on
    trainer.nproc_per_node x trainer.nnodes GPUs, one after the other, plus the evaluations
    (baseline, control, treatment) on one GPU each. Nothing cached is subtracted."""
    from debias.model import GPTNeoXConfig
    from debias.train.plan import MEASURED, MEASURED_SOURCE, cost_plan, measured_from_results, model_size, size_of

    geometry = config.data.geometry.to_geometry()
    iv, trainer = config.intervention, config.trainer
    window = Window.from_config(geometry, iv.ratio, iv.start_step)
    seq_len = geometry.row_length - 1
    size = size_of(config.model.name, GPTNeoXConfig.from_dict(asdict(config.model.architecture)), seq_len)
    try:  # a preset's name with another architecture must not borrow the preset's measured figures
        if model_size(config.model.name, seq_len) != size:
            size = replace(size, name=f"{size.name} (architecture changed)")
    except UserError:  # no preset of that name: nothing measured under it either
        pass
    device, device_basis = plan_device(config.plan_device)
    figures = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu.json"
    measured, measured_source = MEASURED.get(device, {}), MEASURED_SOURCE
    if figures.is_file():
        try:
            measured, measured_source = measured_from_results(figures, device), str(figures)
        except UserError:  # figures of another device: keep the built-in ones
            pass
    gpus = trainer.world_size
    arms = 1 if iv.direction == "none" else 2
    cost = cost_plan(size, window.ratio, window.num_rows, seq_len, gpus, device, measured=measured or None, arms=arms)
    basis = cost.basis if cost.basis.startswith("projected") else f"{cost.basis}; {measured_source}"
    result = {
        "model": config.model.name, "direction": iv.direction,
        "window": {"start_step": window.start_step, "end_step": window.end_step, "num_steps": window.num_steps,
                   "ratio": window.ratio, "rows_per_arm": window.num_rows},
        "tokens_per_arm": cost.tokens_per_arm, "device": device, "device_basis": device_basis, "gpus": gpus,
        "tokens_per_s_per_gpu": cost.tokens_per_s_per_gpu, "mfu": cost.mfu, "throughput_basis": basis,
        "zero_stage": cost.zero_stage, "activation_checkpointing": cost.activation_checkpointing,
        "per_arm": {"gpu_hours": cost.gpu_hours_per_arm, "wall_hours": cost.wall_hours_per_arm},
        "evaluation": {"count": arms + 1, "gpu_hours_each": cost.eval_hours},
        "run": {"arms": arms, "gpu_hours": cost.gpu_hours_run, "wall_hours": cost.wall_hours_run},
    }
    lines = [
        f"plan: {config.model.name}, intervention {iv.direction}, steps {window.start_step}..{window.end_step} "
        f"({window.ratio:.1%} of {geometry.total_steps} steps); nothing trained, nothing cached",
        f"  tokens per arm     {count(cost.tokens_per_arm)} ({window.num_rows:,} rows x {seq_len} predicted tokens)",
        f"  GPUs               {gpus} x {device} (trainer.nproc_per_node={trainer.nproc_per_node} x "
        f"trainer.nnodes={trainer.nnodes}; {device_basis})",
        f"  tokens/s per GPU   {cost.tokens_per_s_per_gpu:,.0f}" + (f" ({cost.mfu:.1%} MFU)" if cost.mfu else "")
        + f", {basis}",
        "  memory             " + (f"ZeRO-{cost.zero_stage}" if cost.zero_stage else "no ZeRO stage fits")
        + f", activation checkpointing {'on' if cost.activation_checkpointing else 'off'} (estimated)",
        f"  per arm            {gpu_hours_text(cost.gpu_hours_per_arm)}, wall {wall_text(cost.wall_hours_per_arm)}",
        f"  evaluation         {arms + 1} x {wall_text(cost.eval_hours)} on one GPU each (estimated)",
        f"  whole run          {arms} arm{'s' if arms > 1 else ''} + {arms + 1} evaluations: "
        f"{gpu_hours_text(cost.gpu_hours_run)}, wall {wall_text(cost.wall_hours_run)} (the rewrite runs on CPUs: not counted)",
    ]
    print("\n".join(lines))
    path = write_json_atomic(run_dir / "plan.json", result)
    print(f"plan: {path}")
    return path


def count(tokens: int) -> str:
    return f"{tokens / 1e9:,.2f}B" if tokens >= 10**8 else f"{tokens:,}"


def gpu_hours_text(hours: float) -> str:
    return f"{hours:,.1f} GPU-hours" if hours >= 1 else f"{hours * 3600:,.1f} GPU-seconds"


def wall_text(hours: float) -> str:
    from debias.train.plan import duration

    return duration(hours) if hours >= 1 else f"{hours * 60:.1f} min" if hours * 60 >= 1 else f"{hours * 3600:.1f} s"


def plan_device(setting: Optional[str]) -> tuple[str, str]:
    """(device kind, why): plan_device when set, else the visible GPU's kind, else an assumed H200."""
    from debias.train.plan import DEVICES

    if setting:
        return setting, "plan_device"
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        kind = next((kind for kind in DEVICES if kind in name), None)
        if kind:
            return kind, f"the visible {name}"
        return "H200", f"assumed: {name} has no figures here; set plan_device"
    return "H200", "assumed: no GPU visible here; set plan_device=H100 or A100 for those"


# ---- the whole run ------------------------------------------------------------------------------

def set_threads(threads: Optional[int]) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def timed_stage(timing: dict, name: str, fn: Callable, *args):
    """fn(*args), its seconds recorded as timing["<name>_seconds"] (the report's timing section)."""
    tick = time.perf_counter()
    result = fn(*args)
    timing[f"{name}_seconds"] = round(time.perf_counter() - tick, 3)
    return result


def run(config: RunConfig, run_dir: Path) -> Path:
    """Every stage for one configuration; the report in `run_dir` (with plan=true: the cost plan only)."""
    if config.plan:
        return plan(config, run_dir)
    from debias.report import assemble

    cache = Cache(config.cache_dir)  # refused here, before any work, when it cannot be written
    # Tiny demo models run several times faster on one thread than on two contending ones.
    set_threads(config.threads or (config.demo.threads if config.demo is not None else None))
    timing: dict[str, float] = {}

    def timed(name: str, fn: Callable, *args):
        return timed_stage(timing, name, fn, *args)

    prepared = timed("prepare", prepare, config, cache)
    rewritten = timed("rewrite", rewrite, config, prepared, cache)  # None for a control-only run
    rewrite_check = timed("rewrite_check", check_rewrite, config, prepared, cache, rewritten)
    trained = {arm: timed(f"train_{arm}", train_arm, config, prepared, cache, arm, *rows)
               for arm, rows in arm_rows(prepared, rewritten).items()}
    models = arm_models(prepared, trained)
    evaluations = {arm: timed(f"evaluate_{arm}", evaluate_arm, prepared, cache, folder, identity, arm)
                   for arm, (folder, identity) in models.items()}
    comparisons = timed("compare", assemble.paired_comparisons, {arm: items for arm, (_, items) in evaluations.items()},
                        config.eval.bootstrap_samples, config.eval.seed)
    return report(config, prepared, rewritten, trained, models, evaluations, comparisons, run_dir, timing,
                  rewrite_check)


# ---- evaluating named models (pipelines/evaluate.py) ---------------------------------------------
# Models trained elsewhere (or released, such as Pythia's intervention models) get the pipeline's
# evaluation, intervals and paired tests: each model is evaluated once through the cache, keyed by
# what it is (a hub commit, or its files' hashes), and every model is compared with its reference.

@dataclass
class NamedModel:
    """One model of an evaluate run, resolved to a local folder."""

    spec: ModelSpec               # name, ref, reference, ... as the settings give them
    folder: Path                  # Hugging Face folder (a hub snapshot in the Hugging Face cache, or local)
    tokenizer: Path               # the tokenizer.json it is scored with
    identity: dict                # keys its evaluation: hub repository, revision and commit, or its files' hashes
    gelu: str                     # the activation it is evaluated with
    gelu_source: str              # the setting or fact that decided it

    @property
    def name(self) -> str:
        return self.spec.name


def model_pairs(specs: list[ModelSpec]) -> list[tuple[str, str]]:
    """(model, reference) in the order the models were given; the first is the primary comparison."""
    return [(spec.name, spec.reference) for spec in specs if spec.reference is not None]


def check_eval_inputs(eval_config: EvalConfig) -> None:
    """Every enabled benchmark names its data before any model is fetched or loaded."""
    from debias.model.checkpoint_source import HUB_REPO

    check_cuda("eval.device", eval_config.device)
    for section in ("crows_pairs", "winobias", "lambada"):
        settings = getattr(eval_config, section)
        if not settings.enabled:
            continue
        if not settings.path:
            raise UserError(f"eval.{section}.path is not set; give its data (eval=pythia reads $DEBIAS_SHARED_DATA, "
                            f"else shared/data beside the checkout) or set eval.{section}.enabled=false")
        if not Path(settings.path).exists() and not HUB_REPO.match(str(settings.path)):
            raise UserError(f"eval.{section}.path={settings.path}: no such file or folder; set DEBIAS_SHARED_DATA to "
                            f"the folder holding the benchmark data, or eval.{section}.enabled=false")
    perplexity = eval_config.perplexity
    if perplexity.enabled and not (perplexity.text or (perplexity.stream and perplexity.rows)):
        raise UserError("eval.perplexity: enabled without held-out data; set eval.perplexity.text=FILE (a .jsonl or "
                        ".txt file, or a datasets name) or eval.perplexity.enabled=false")
    from debias.evaluate.suite import check_inputs

    check_inputs(eval_config)  # and what the local files hold (a short CrowS-Pairs row, a repeated WinoBias index)


def _model_tokenizer(spec: ModelSpec, folder: Path, folders: dict[str, Path], fallback: str | None) -> Path:
    """The tokenizer.json a model is scored with: its `tokenizer` setting (a file, or another model
    of the run), else the folder's own, else the run's `tokenizer` setting."""
    from debias.cache import warn
    from debias.tokenizer import tokenizer_path

    own = folder / "tokenizer.json"
    if spec.tokenizer in folders:
        chosen = folders[spec.tokenizer] / "tokenizer.json"
        if not chosen.is_file():
            raise UserError(f"{spec.setting}.tokenizer={spec.tokenizer}: that model's folder {folders[spec.tokenizer]} "
                            "holds no tokenizer.json; give a tokenizer.json file instead")
        if own.is_file() and sha256_file(own) != sha256_file(chosen):
            warn(f"{spec.name}: scored with {spec.tokenizer}'s tokenizer.json, which differs from its own ({own})")
        return chosen
    if spec.tokenizer:
        try:
            return tokenizer_path(spec.tokenizer)
        except UserError as err:
            raise UserError(f"{spec.setting}.tokenizer: {err}") from None
    if own.is_file():
        return own
    if fallback:
        try:
            return tokenizer_path(fallback)
        except UserError as err:
            raise UserError(f"tokenizer: {err}") from None
    raise UserError(f"{spec.setting}: {folder} holds no tokenizer.json (a model folder from the hub holds one); "
                    "for a local folder without one pass tokenizer=PATH/tokenizer.json, used for every model whose "
                    "folder has none (Pythia: ../shared/data/tokenizers/gpt-neox-20b/tokenizer.json)")


def resolve_named_models(config: EvaluateModelsConfig) -> list[NamedModel]:
    """Each model of an evaluate run as a local folder with its tokenizer,
    activation and identity. Hub revisions come from the Hugging Face cache; every one missing
    while the hub is unreachable is named in one error line with its download command."""
    from debias.model.checkpoint_source import folder_identity, resolve_model_refs, trained_gelu

    specs = config.model_specs()
    resolved = resolve_model_refs([(spec.setting, spec.ref) for spec in specs])
    folders = {spec.name: ref.folder for spec, ref in zip(specs, resolved)}
    models = []
    for spec, ref in zip(specs, resolved):
        tokenizer = _model_tokenizer(spec, ref.folder, folders, config.tokenizer)
        if spec.gelu is not None:
            gelu, why = spec.gelu, f"{spec.setting}.gelu"
        elif config.eval.gelu is not None:
            gelu, why = config.eval.gelu, "eval.gelu"
        else:
            gelu, why = trained_gelu(ref.folder, ref.hub)
        models.append(NamedModel(spec, ref.folder, tokenizer, folder_identity(ref, tokenizer), gelu, why))
    return models


def models_plan(config: EvaluateModelsConfig) -> list[str]:
    """What an evaluate run would do, read from the settings and the Hugging Face cache only:
    each model with where it comes from, the comparisons, and the downloads still needed."""
    from debias.model.checkpoint_source import (HubRevision, cached_revision, check_model_folder, parse_model_ref,
                                                trained_gelu)

    specs = config.model_specs()
    pairs = model_pairs(specs)
    lines = [f"plan: {len(specs)} models, {len(pairs)} paired comparisons; nothing is downloaded or evaluated"]
    downloads = []
    for spec in specs:
        ref = parse_model_ref(spec.ref, spec.setting)
        folder = ref if isinstance(ref, Path) else cached_revision(ref)
        if isinstance(ref, HubRevision):
            where = "in the Hugging Face cache" if folder is not None else "not cached"
            if folder is None:
                downloads.append(ref.download_command)
        else:
            check_model_folder(ref, spec.setting)
            where = "local folder"
        gelu = spec.gelu or config.eval.gelu
        if gelu is None and (folder is not None or isinstance(ref, HubRevision)):
            try:
                gelu = trained_gelu(folder or Path(spec.ref), ref if isinstance(ref, HubRevision) else None)[0]
            except UserError:
                gelu = None
        role = f"compared with {spec.reference}" if spec.reference else "reference"
        lines.append(f"  {spec.name}: {spec.ref} ({where}; gelu {gelu or 'from config.json once fetched'}; {role})")
    for number, (model, reference) in enumerate(pairs):
        lines.append(f"  comparison {model}_vs_{reference}" + (" (primary)" if number == 0 else ""))
    if downloads:
        lines.append(f"to download ({len(downloads)}): " + "; ".join(downloads))
    return lines


def evaluate_named_model(cache: Cache, model: NamedModel, eval_config: EvalConfig,
                         eval_files: dict) -> tuple[dict, dict]:
    """(metrics, per-item values) of one named model, a cache entry keyed as an arm's
    (cached_evaluation), its eval settings with the model's activation."""
    from debias.evaluate import evaluate_model

    settings = replace(eval_config, gelu=model.gelu)
    metrics, items = cached_evaluation(cache, model.identity, settings, eval_files, f"evaluate {model.name}",
                                       lambda: evaluate_model(model.folder, settings, tokenizer=model.tokenizer))
    # The entry may have been built from a byte-identical copy in another folder: name this one.
    metrics["model"] = {**metrics.get("model", {}), "folder": str(model.folder)}
    return metrics, items


def comparison_lines(comparisons: dict) -> list[str]:
    """The headline of each paired comparison for the terminal: the manipulation check first (did
    the treatment reach the pronouns at all?), then association, blanket shift and LM quality, as
    the metric declarations assign these roles."""
    from debias.evaluate import HeadlineRole

    order = [HeadlineRole.MANIPULATION, HeadlineRole.ASSOCIATION, HeadlineRole.BLANKET_SHIFT, HeadlineRole.LM_QUALITY]
    lines = []
    for name, comparison in comparisons.items():
        versus = name.replace("_vs_", " - ")
        for role in (r.value for r in order):
            for bench, results in comparison.items():
                for metric, r in results.items():
                    if r.get("headline") == role:
                        low, high = r["diff_ci95"]
                        lines.append(f"{versus}: {bench}.{metric} {r['diff']:+.4f} [{low:+.4f}, {high:+.4f}] "
                                     f"p={r['p']:.3g} ({role})")
    return lines


def models_report(config: EvaluateModelsConfig, models: list[NamedModel], evaluations: dict, comparisons: dict,
                  eval_files: dict, timing: dict) -> dict:
    """The report dict of an evaluate run: arms keyed by model name, comparisons against each
    model's reference, `primary_comparison` the first of them; no training or rewrite sections."""
    arms = {model.name: {"key": sha256_json({"model": model.identity, "gelu": model.gelu})[:20],
                         "model": model.spec.ref, "folder": str(model.folder), "identity": model.identity,
                         "tokenizer": str(model.tokenizer), "gelu": model.gelu, "gelu_source": model.gelu_source,
                         "reference": model.spec.reference, "metrics": evaluations[model.name][0]}
            for model in models}
    run: dict[str, Any] = {"kind": "models", "models": [m.name for m in models], "reference": models[0].name,
                           "comparisons": list(comparisons)}
    if config.audit is not None:
        run["audit"] = {"releases": [r.name for r in config.audit.selected()], "revisions": config.audit.revisions,
                        "steps": {r.name: config.audit.steps(r) for r in config.audit.selected()}}
    return {
        "run": run,
        "config": as_dict(config),
        "data": {"eval_files": eval_files, "checksum": sha256_json({"eval": eval_files})[:16]},
        "arms": arms,
        "arm_order": [m.name for m in models],
        "comparisons": comparisons,
        "primary_comparison": next(iter(comparisons), None),
        "timing": dict(timing),
    }


def evaluate_models(config: EvaluateModelsConfig, run_dir: Path) -> Path:
    """Evaluate the named models of an evaluate run and write report.{json,md,html}
    (+ plots, config.yaml) in `run_dir`; returns the path of report.json. One model gives a report
    without comparisons."""
    from omegaconf import OmegaConf

    from debias.report import assemble, write_run_report

    cache = Cache(config.cache_dir)  # refused here, before any work, when it cannot be written
    set_threads(config.threads)
    check_eval_inputs(config.eval)
    timing: dict[str, float] = {}
    models = timed_stage(timing, "resolve", resolve_named_models, config)
    eval_files = eval_file_checksums(config.eval)
    evaluations = {model.name: timed_stage(timing, f"evaluate_{model.name}", evaluate_named_model, cache, model,
                                           config.eval, eval_files) for model in models}
    comparisons = timed_stage(timing, "compare", assemble.paired_comparisons,
                              {name: items for name, (_, items) in evaluations.items()},
                              config.eval.bootstrap_samples, config.eval.seed, model_pairs([m.spec for m in models]))
    timing["finished_utc"] = utc_now()
    report_dict = models_report(config, models, evaluations, comparisons, eval_files, timing)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(as_dict(config))))
    path = write_run_report(run_dir, report_dict)
    print(f"models: {', '.join(m.name for m in models)} (reference {models[0].name})")
    for line in comparison_lines(comparisons):
        print(line)
    print(f"report: {path}")
    return path
