"""Issue 15, "nothing wrong is ever reported as right": each defect it found, reproduced on a tiny
demo run, with the fixed behaviour asserted (a correct report, rebuilt, or one `error:` line and
exit 2; never exit 0 with changed numbers), and a table of bad inputs driven through every
command line and the pipeline.

One tiny demo run (module fixture, ~11 s on 2 cores) supplies the cache, the suite's tokenizer,
stream, checkpoints and probes, and a rewrite pass; the tests that damage that cache leave it
rebuilt for the next one. Slow as a module (116 s on a quiet 2-core machine, the table 44 s of
it): `make test` runs it.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from debias.cache import Entry
from debias.demo.build import DemoSuite
from debias.io import default_file_mode, sha256_file
from debias.stream import IndexedStream
from debias.stream.mmidx import HEADER

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
INTERVENE = str(ROOT / "pipelines" / "intervene.py")

# The demo in miniature: 100 steps of 8 rows x 65 tokens, a 2-layer width-32 model, small probe
# sets; the 7% window is steps 93..100.
GEOMETRY = ["data.geometry.batch_size=8", "data.geometry.row_length=65", "data.geometry.total_steps=100",
            "data.geometry.checkpoint_interval=1"]
ARCHITECTURE = ["model.architecture.hidden_size=32", "model.architecture.intermediate_size=128",
                "model.architecture.num_layers=2", "model.architecture.max_position_embeddings=64"]
TINY = [*GEOMETRY, *ARCHITECTURE, "data.demo.heldout_rows=16", "data.demo.tokenizer.train_documents=500",
        "data.demo.probes.winobias_lines_per_file=24", "data.demo.probes.crows_pairs_frames_per_occupation=2",
        "data.demo.pretrain.micro_batch=8", "trainer.micro_batch=8", "trainer.tensorboard=false",
        "eval.bootstrap_samples=200"]
START_STEP = 93


def environment() -> dict:
    """This checkout's code, offline, and no cache folder inherited from the caller's shell: a run
    without cache_dir uses .cache/debias in its own working folder."""
    env = {k: v for k, v in os.environ.items() if k != "DEBIAS_CACHE_DIR"}
    return {**env, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def intervene(*args: str, cwd: Path, cache: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("--")]  # Hydra's flags go before the overrides
    overrides = [a for a in args if not a.startswith("--")]
    result = subprocess.run([PYTHON, INTERVENE, *flags, *TINY, f"cache_dir={cache}", *overrides], cwd=cwd,
                            env=environment(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def report_of(result: subprocess.CompletedProcess) -> Path:
    return Path(result.stdout.strip().splitlines()[-1].removeprefix("report: "))


def comparable(report_path: Path, cache: Path) -> dict:
    """report.json without its timing and with the cache folder's name neutralised."""
    report = json.loads(report_path.read_text().replace(str(cache), "<cache>"))
    report.pop("timing")
    return report


def warnings_of(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def finished_entries(cache: Path) -> dict[str, str]:
    """Every finished cache entry and its manifest (rewritten only when the entry is rebuilt)."""
    return {str(p.parent.relative_to(cache)): p.read_text() for p in cache.glob("*/*/.done")}


def run_folders(cwd: Path) -> list[Path]:
    runs = cwd / "outputs" / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


@dataclass
class DemoRun:
    workdir: Path
    cache: Path
    report: Path
    suite: DemoSuite
    rewrite: Path             # the run's rewrite pass (a cache entry)

    def entry(self, kind: str, where: Callable[[dict], bool]) -> Entry:
        found = [Entry(self.cache, kind, p.parent.name) for p in (self.cache / kind).glob("*/key.json")
                 if where(json.loads(p.read_text()))]
        assert len(found) == 1, (kind, found)
        return found[0]

    def train_entry(self, arm: str) -> Entry:
        run_dir = Path(json.loads(self.report.read_text())["training"][arm]["run_dir"])
        return Entry(self.cache, "train", run_dir.name)

    def eval_entry(self, arm: str) -> Entry:
        if arm == "baseline":
            return self.entry("eval", lambda key: "checkpoint" in key["model"])
        trained = self.train_entry(arm).digest
        return self.entry("eval", lambda key: key["model"].get("trained") == trained)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoRun:
    """One full tiny run: builds the demo suite and every cache entry the tests damage."""
    workdir = tmp_path_factory.mktemp("faults")
    cache = workdir / "cache"
    report = report_of(intervene(cwd=workdir, cache=cache))
    suite = DemoSuite.load(next((cache / "demo").glob("*/suite.json")).parent)
    rewrite = next((cache / "rewrite").glob("*/manifest.json")).parent
    return DemoRun(workdir, cache, report, suite, rewrite)


def rerun(demo: DemoRun, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return intervene(*args, cwd=demo.workdir, cache=demo.cache, check=check)


# ---- 1. cached results are checked before they are served ---------------------------------------

def test_1_changed_token_ids_in_a_cached_rewrite_are_rebuilt_not_served(demo):
    """500 token ids changed in rewritten.bin: the issue's run served them (pct_stereotype moved,
    the report kept the old changed-token count). Now the entry is rebuilt with one warning."""
    before = json.loads(demo.report.read_text())
    rewritten = Path(before["rewrite"]["stream"] + ".bin")
    ids = np.fromfile(rewritten, dtype=np.uint16)
    changed = ids.copy()
    changed[1000:1500] = (changed[1000:1500] + 7) % 1000  # another id, inside the vocabulary
    assert int((changed != ids).sum()) == 500
    changed.tofile(rewritten)

    result = rerun(demo)
    warnings = warnings_of(result)
    assert len(warnings) == 1, warnings
    assert str(demo.rewrite) in warnings[0] and "rewritten.bin: sha256 differs" in warnings[0]
    assert "rebuilding it" in warnings[0]
    assert np.array_equal(np.fromfile(rewritten, dtype=np.uint16), ids)
    assert comparable(report_of(result), demo.cache) == comparable(demo.report, demo.cache)


def test_1_flipped_model_bytes_with_the_evaluation_removed_are_rebuilt(demo):
    """Bits flipped in a trained arm's model.safetensors and its evaluation deleted: the issue's
    run evaluated the damaged weights (pct_stereotype 0.000, perplexity nan, effects nan)."""
    model = demo.train_entry("treatment").folder / "model" / "model.safetensors"
    data = bytearray(model.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 64, 4):
        data[offset + 3] ^= 0x7F  # the exponent bits of 16 float32 weights: wildly wrong values
    model.write_bytes(bytes(data))
    shutil.rmtree(demo.eval_entry("treatment").folder)

    result = rerun(demo)
    warnings = warnings_of(result)
    assert len(warnings) == 1 and str(demo.train_entry("treatment").folder) in warnings[0], warnings
    assert "model/model.safetensors: sha256 differs" in warnings[0] and "rebuilding it" in warnings[0]
    text = report_of(result).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert comparable(report_of(result), demo.cache) == comparable(demo.report, demo.cache)


def nan_weight(safetensors_file: Path) -> None:
    """One MLP weight set to NaN, the file otherwise intact."""
    from safetensors.torch import load_file, save_file

    weights = load_file(safetensors_file)
    name = next(k for k in weights if "dense_h_to_4h.weight" in k)
    weights[name][0, 0] = float("nan")
    save_file(weights, safetensors_file, metadata={"format": "pt"})


def test_1_non_finite_weights_past_the_cache_check_stop_the_run_naming_arm_benchmark_and_item(demo):
    """Damage the manifest cannot see (a flipped byte between the sampled chunks of a multi-GB
    file, or a manifest rewritten to match): the evaluation's guard stops the run in one line
    naming the arm, the benchmark and the item, and no report is written."""
    train = demo.train_entry("treatment")
    nan_weight(train.folder / "model" / "model.safetensors")
    train.finish()  # the manifest now records the damaged file
    evaluation = demo.eval_entry("treatment")
    shutil.rmtree(evaluation.folder)
    runs_before = run_folders(demo.workdir)
    try:
        result = rerun(demo, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        errors = error_lines(result.stderr)
        assert len(errors) == 1, result.stderr[-2000:]
        assert errors[0].startswith("error: treatment arm: crows-pairs: the model gave a non-finite log-probability")
        assert "for '" in errors[0]  # the item: the sentence pair's text
        assert run_folders(demo.workdir) == runs_before  # the refused run left no folder
        assert not evaluation.done
    finally:  # the next test finds the arm retrained
        shutil.rmtree(train.folder)
        shutil.rmtree(evaluation.folder, ignore_errors=True)


def test_1_a_nan_loss_stops_the_run_naming_the_arm(demo, tmp_path):
    """A starting checkpoint with a NaN weight (a local copy of the suite's checkpoints, read as a
    real stream's): training stops at its first step with one line naming the arm."""
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(demo.suite.checkpoint(START_STEP), checkpoints / f"step{START_STEP}")
    nan_weight(checkpoints / f"step{START_STEP}" / "model.safetensors")
    result = subprocess.run(
        [PYTHON, INTERVENE, *stream_run(demo.suite, f'"{checkpoints}/step{{step}}"'), f"cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"error: control arm: loss is nan at step {START_STEP}"), errors
    assert not run_folders(tmp_path)


def stream_run(suite: DemoSuite, checkpoint: str, stream: object = None, tokenizer: object = None) -> list[str]:
    """Overrides that run the pipeline on the suite's files as if they were a real stream's."""
    return ["model=pythia-demo", "data=pile-deduped", f"data.stream={stream or suite.stream}",
            f"data.tokenizer={tokenizer or suite.tokenizer}", f"model.checkpoint={checkpoint}", *GEOMETRY,
            *ARCHITECTURE, "data.heldout_rows=16",
            f"eval.crows_pairs.path={suite.crows_pairs_csv}", f"eval.winobias.path={suite.winobias_dir}",
            "eval.check_pinned=false", "trainer.micro_batch=8", "trainer.tensorboard=false",
            "eval.bootstrap_samples=200"]


# ---- 2. verify catches flipped bytes and wrong pronouns -----------------------------------------

def verify(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "debias.rewrite", "verify", str(folder), "--sample", "0", "--quiet"],
                          env=environment(), capture_output=True, text=True, timeout=300)


def assert_verify_fails(folder: Path, *needles: str) -> None:
    result = verify(folder)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: verify failed: "), result.stderr
    assert all(needle in errors[0] for needle in needles), (needles, errors[0])
    assert "verified" not in result.stdout


def test_2_verify_refuses_a_flipped_byte_and_a_target_pronoun_replaced_by_another(demo):
    from debias.tokenizer import load_tokenizer

    manifest_path = demo.rewrite / "manifest.json"
    manifest_text = manifest_path.read_text()
    bin_path = Path(json.loads(manifest_text)["stream"] + ".bin")
    original = bin_path.read_bytes()
    assert verify(demo.rewrite).returncode == 0  # the intact pass checks out

    def with_recorded_checksum() -> None:  # as if whoever changed the rows also updated the manifest
        manifest = json.loads(manifest_text)
        manifest["output_bin_sha256"] = sha256_file(bin_path)
        manifest_path.write_text(json.dumps(manifest))

    try:
        # One XOR-ed byte: the high byte of a uint16 id, so the id leaves the 2,000-id vocabulary.
        data = bytearray(original)
        data[2 * 100 + 1] ^= 0x80
        bin_path.write_bytes(bytes(data))
        assert_verify_fails(demo.rewrite, str(bin_path), "sha256", "differs from the manifest")
        with_recorded_checksum()
        assert_verify_fails(demo.rewrite, "outside the vocabulary")
        manifest_path.write_text(manifest_text)

        # A target pronoun replaced by another: a ' he' the pass made ' she' now reads ' her'.
        tokenizer = load_tokenizer(demo.suite.tokenizer)
        he, she, her = (tokenizer.token_to_id(tokenizer.encode(w).tokens[0]) for w in (" he", " she", " her"))
        start, stop = json.loads(manifest_text)["rows"]
        before = IndexedStream(demo.suite.stream).rows(start, stop).reshape(-1)
        output = np.frombuffer(original, dtype=before.dtype).copy()
        swapped = np.flatnonzero((before == he) & (output == she))
        assert swapped.size, "the window holds no ' he' -> ' she' rewrite"
        output[swapped[0]] = her
        bin_path.write_bytes(output.tobytes())
        assert_verify_fails(demo.rewrite, "sha256")
        with_recorded_checksum()
        assert_verify_fails(demo.rewrite, "became ' her', not a m2f pronoun rewrite")
    finally:
        bin_path.write_bytes(original)
        manifest_path.write_text(manifest_text)
    assert verify(demo.rewrite).returncode == 0


# ---- 3. a damaged entry is rebuilt, named ---------------------------------------------------------

def test_3_a_truncated_or_deleted_metrics_file_is_rebuilt_with_a_warning_naming_the_folder(demo):
    """The issue's reruns failed with FileNotFoundError / JSONDecodeError, nothing rebuilt."""
    truncated, deleted = demo.eval_entry("baseline").folder, demo.eval_entry("control").folder
    text = (truncated / "metrics.json").read_text()
    (truncated / "metrics.json").write_text(text[: len(text) // 2])
    (deleted / "metrics.json").unlink()

    result = rerun(demo)
    warnings = warnings_of(result)
    assert len(warnings) == 2, warnings
    for folder, problem in ((truncated, "metrics.json: "), (deleted, "metrics.json: missing")):
        named = [w for w in warnings if str(folder) in w]
        assert len(named) == 1 and problem in named[0] and "rebuilding it" in named[0], warnings
    assert (truncated / "metrics.json").read_text() == text
    assert comparable(report_of(result), demo.cache) == comparable(demo.report, demo.cache)
    assert not warnings_of(rerun(demo))  # rebuilt entries are served quietly


# ---- 7. run folders ---------------------------------------------------------------------------------

def test_7_two_runs_started_in_the_same_second_get_their_own_folders(demo):
    """Both runs name their folder as Hydra would in the same second; each keeps its report."""
    command = [PYTHON, INTERVENE, *TINY, f"cache_dir={demo.cache}", "hydra.run.dir=${unique_dir:'outputs/same-second/run'}"]
    jobs = [subprocess.Popen(command, cwd=demo.workdir, env=environment(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [job.communicate(timeout=600) for job in jobs]
    assert all(job.returncode == 0 for job in jobs), [err[-2000:] for _, err in outputs]
    reports = sorted(Path(out.strip().splitlines()[-1].removeprefix("report: ")) for out, _ in outputs)
    assert [r.parent.name for r in reports] == ["run", "run_2"]
    assert comparable(reports[0], demo.cache) == comparable(reports[1], demo.cache) == comparable(demo.report, demo.cache)
    assert demo.report.parent.name.endswith("_m2f_r0.07")  # a single run keeps Hydra's name, no suffix


# ---- 8. shared caches ---------------------------------------------------------------------------------

def test_8_cache_files_all_have_the_mode_of_a_new_file(demo):
    """The issue found model.safetensors written 0600 among 0644 files."""
    modes = {path.relative_to(demo.cache).as_posix(): path.stat().st_mode & 0o777
             for path in demo.cache.rglob("*") if path.is_file() and not path.name.endswith(".lock")}
    models = [name for name in modes if name.endswith("model.safetensors")]
    assert len(models) >= 3  # the suite's checkpoints and both trained arms
    assert {mode for mode in modes.values()} == {default_file_mode()}, \
        {name: oct(mode) for name, mode in modes.items() if mode != default_file_mode()}


class Planted:
    """A pickle that, if ever loaded, creates a file: what a stranger could plant in a shared cache."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_8_a_planted_pickle_in_a_deepspeed_checkpoint_of_the_cache_never_runs(demo, tmp_path):
    """DeepSpeed's own resume unpickles with weights_only=False. A file planted in the checkpoint of
    an unfinished entry (a run killed before it finished) fails the checkpoint's record, so the
    trainer does not resume from it; with the record rewritten too, the loader refuses the file.
    (In a finished entry it fails the entry's manifest and is removed with it: test 1.)"""
    import torch

    from debias.cache import file_records

    cache, marker = tmp_path / "cache", tmp_path / "planted-code-ran"
    shutil.copytree(demo.cache / "demo", cache / "demo")
    first = intervene("trainer=deepspeed", cwd=tmp_path, cache=cache)
    control = Path(json.loads(report_of(first).read_text())["training"]["control"]["run_dir"])
    checkpoint = control / "checkpoints" / "step100"
    states = checkpoint / "deepspeed" / "mp_rank_00_model_states.pt"
    assert states.is_file()

    torch.save({"module": Planted(marker)}, states)
    (control / ".done").unlink()
    unfinished = intervene("trainer=deepspeed", cwd=tmp_path, cache=cache)
    logged = unfinished.stdout + unfinished.stderr  # the trainer's log goes where Hydra's handlers send it
    assert f"checkpoint {checkpoint} is damaged" in logged and "not resuming from it" in logged
    assert comparable(report_of(unfinished), cache) == comparable(report_of(first), cache)

    torch.save({"module": Planted(marker)}, states)
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta["files"] = file_records(checkpoint, skip={"meta.json"}, whole=False)  # the record made to match
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    (control / ".done").unlink()
    refused = intervene("trainer=deepspeed", cwd=tmp_path, cache=cache, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    errors = error_lines(refused.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: control arm: ") and "refused to unpickle" in errors[0]
    assert not marker.exists()


# ---- 4, 5, 6 and more: the table of bad inputs ------------------------------------------------------
#
# Each row runs one command and must end with exit 2, exactly one `error:` line holding every
# `expect` text (the file or setting, the value, the fix), no traceback, and nothing left in its
# own working folder (no run folder, no half-written output). The defect of issue 15 a row
# reproduces is its first tag: 4 (a traceback before), 5 (accepted silently), 6 (pointed at the
# wrong thing); "new" rows were found while probing for this table.

@dataclass
class Inputs:
    """The files rows point at (made once from the demo run) and a folder per row."""

    demo: DemoRun
    root: Path
    unwritable: Optional[Path]

    @property
    def suite(self) -> DemoSuite:
        return self.demo.suite

    @property
    def model(self) -> Path:
        return self.suite.checkpoint(START_STEP)

    def folder(self, name: str) -> Path:
        path = self.root / "inputs" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stream_copy(self, name: str) -> Path:
        folder = self.folder(name)
        for suffix in (".bin", ".idx"):
            shutil.copy(self.suite.stream.with_suffix(suffix), folder / f"document{suffix}")
        return folder / "document"


@dataclass
class Row:
    id: str
    build: Callable[[Inputs, Path], tuple]  # (inputs, its own empty folder) -> (argv, expect[, stdin])
    needs_unwritable: bool = False
    also_allowed: Optional[str] = None      # the start of other stderr lines this row may print


def pipeline(*overrides: str, cache: Optional[Path] = None) -> list[str]:
    """intervene.py on the tiny demo; `cache` None: .cache/debias in the row's folder (must stay empty)."""
    return [INTERVENE, *TINY, *([f"cache_dir={cache}"] if cache else []), *overrides]


def module(name: str, *args) -> list[str]:
    return ["-m", name, *map(str, args)]


def patch(path: Path, offset: int, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset: offset + len(new)] = new
    path.write_bytes(bytes(data))


def rows_in(prefix: Path) -> int:
    return HEADER.unpack(prefix.with_suffix(".idx").read_bytes()[: HEADER.size])[3]


def crows_short_row(inp: Inputs) -> Path:
    rows = list(csv.reader(io.StringIO(inp.suite.crows_pairs_csv.read_text())))
    rows[3] = rows[3][:-1]  # the row on line 4 loses its last column
    path = inp.folder("crows") / "short_row.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return path


def winobias_duplicate_index(inp: Inputs) -> Path:
    folder = inp.folder("winobias_duplicate")
    for path in inp.suite.winobias_dir.iterdir():
        shutil.copy(path, folder / path.name)
    dev = folder / "pro_stereotyped_type1.txt.dev"
    lines = dev.read_text().splitlines()
    lines[2] = "2 " + lines[2].split(" ", 1)[1]  # line 3 repeats index 2: one pair would vanish
    dev.write_text("\n".join(lines) + "\n")
    return folder


def lambada(inp: Inputs, name: str, text: str) -> Path:
    path = inp.folder("lambada") / name
    path.write_text(text)
    return path


def model_copy(inp: Inputs, name: str, change: Callable[[Path], None]) -> Path:
    folder = inp.folder("models") / name
    shutil.copytree(inp.model, folder)
    change(folder)
    return folder


def pass_copy(inp: Inputs, name: str, change: Callable[[Path], None]) -> Path:
    folder = inp.folder("passes") / name
    shutil.copytree(inp.demo.rewrite, folder)
    change(folder)
    return folder


def empty_folder(inp: Inputs, name: str) -> Path:
    return inp.folder(name)


ROWS = [
    # -- the pipeline: settings (refused before any work; the row's cache is never created) ----------
    Row("4-cache-dir-read-only", lambda i, d: (pipeline(f"cache_dir={i.unwritable}"),
                                                [f"cache_dir={i.unwritable}: cannot write there", "set cache_dir"]),
        needs_unwritable=True),
    Row("new-cache-dir-under-a-file", lambda i, d: (pipeline("cache_dir=/dev/null/cache"),
                                                    ["cache_dir=/dev/null/cache: cannot write there", "set cache_dir"])),
    Row("4-eval-device-cuda-without-cuda", lambda i, d: (pipeline("eval.device=cuda"),
                                                         ["eval.device=cuda: no CUDA device", "use eval.device=cpu"])),
    Row("new-trainer-device-cuda-without-cuda", lambda i, d: (pipeline("trainer.device=cuda"),
                                                              ["trainer.device=cuda", "use trainer.device=cpu"])),
    Row("4-seed-abc", lambda i, d: (pipeline("seed=abc"), ["seed=abc", "give a whole number"])),
    Row("4-eval-bootstrap-samples-0", lambda i, d: (pipeline("eval.bootstrap_samples=0"),
                                                    ["eval.bootstrap_samples=0", "positive integer"])),
    Row("5-eval-batch-size-negative", lambda i, d: (pipeline("eval.batch_size=-1"), ["eval.batch_size=-1", "positive integer"])),
    Row("4-unknown-key", lambda i, d: (pipeline("eval.batchsize=3"), ["eval.batchsize: unknown setting", "eval.batch_size"])),
    Row("4-unknown-key-added-with-plus", lambda i, d: (pipeline("+eval.batchsize=3"), ["eval.batchsize", "eval.batch_size"])),
    Row("4-unknown-nested-key", lambda i, d: (pipeline("trainer.micro_bach=4"), ["trainer.micro_bach", "trainer.micro_batch"])),
    Row("6-pile-deduped-without-data-stream", lambda i, d: ([INTERVENE, "data=pile-deduped", "model=pythia-70m"],
                                                            ["data.stream is required", "data.stream=DIR/document"])),
    Row("6-checkpoint-with-step-unquoted", lambda i, d: (pipeline("model.checkpoint=/ckpt/x/step{step}"),
                                                         ["model.checkpoint=/ckpt/x/step{step}", "quote the value"])),
    Row("new-ratio-0", lambda i, d: (pipeline("intervention.ratio=0"), ["intervention.ratio=0", "between 0 and 1"])),
    Row("new-fraction-1.5", lambda i, d: (pipeline("intervention.fraction=1.5"), ["intervention.fraction=1.5", "[0, 1]"])),
    Row("new-trainer-micro-batch-0", lambda i, d: (pipeline("trainer.micro_batch=0"), ["trainer.micro_batch=0", "positive integer"])),
    Row("new-trainer-grad-clip-negative", lambda i, d: (pipeline("trainer.grad_clip=-1"),
                                                        ["trainer.grad_clip=-1.0", "0 turns clipping off"])),
    Row("new-model-preset-typo", lambda i, d: (pipeline("model=pythia-70m-dedupd"),
                                               ["model=pythia-70m-dedupd: no preset", "pythia-70m-deduped"])),
    Row("new-sweep-with-an-unknown-direction", lambda i, d: (
        [INTERVENE, "--multirun", "intervention=m2f,sideways"], ["intervention=sideways", "allowed: f2m, m2f"])),
    Row("new-sweep-refused-by-a-jobs-settings-check", lambda i, d: (
        [*pipeline("intervention.ratio=1.5"), "--multirun"], ["intervention.ratio=1.5", "between 0 and 1"])),
    Row("new-stream-missing", lambda i, d: ([INTERVENE, *stream_run(i.suite, str(i.model), stream="/no/such/document")],
                                            ["/no/such/document.idx: index not found", "pass the stream prefix"])),
    Row("new-tokenizer-folder-without-tokenizer-json", lambda i, d: (
        [INTERVENE, *stream_run(i.suite, str(i.model), tokenizer=empty_folder(i, "tokenizer_folder"))],
        [f"{i.root}/inputs/tokenizer_folder/tokenizer.json: tokenizer file not found", "pass a tokenizer.json"])),
    Row("new-stream-rows-do-not-match-the-geometry", lambda i, d: (
        [INTERVENE, *stream_run(i.suite, str(i.model)), "data.geometry.row_length=2049"],
        [f"{i.suite.stream}.idx: rows of 65 tokens, but the geometry needs rows of 2049", "set geometry.row_length"])),
    Row("6-missing-model-checkpoint-folder", lambda i, d: (
        [INTERVENE, *stream_run(i.suite, f'"{i.root}/no_checkpoints/step{{step}}"')],
        [f"{i.root}/no_checkpoints/step{START_STEP}: no such folder", "local Hugging Face model folder"])),
    Row("5-bin-longer-than-its-index", lambda i, d: (
        [INTERVENE, *stream_run(i.suite, str(i.model), stream=longer_bin(i))],
        ["document.bin: holds", "trailing bytes", "download both files again"])),
    # -- the pipeline's benchmark files: refused in prepare, before the rewrite and training ------------
    Row("4-crows-pairs-row-missing-its-last-column", lambda i, d: (
        pipeline(f"eval.crows_pairs.path={crows_short_row(i)}", cache=i.demo.cache),
        [f"{i.root}/inputs/crows/short_row.csv:4", "missing/extra columns"])),
    Row("5-winobias-duplicated-line-index", lambda i, d: (
        pipeline(f"eval.winobias.path={winobias_duplicate_index(i)}", cache=i.demo.cache),
        [f"{i.root}/inputs/winobias_duplicate/pro_stereotyped_type1.txt.dev:3"])),
    Row("6-winobias-folder-mistyped", lambda i, d: (
        pipeline("eval.winobias.path=shared/data/winobias_typo", cache=i.demo.cache),
        ["shared/data/winobias_typo: WinoBias folder not found", "check the path"])),
    Row("4-lambada-text-5", lambda i, d: (
        pipeline("eval.lambada.enabled=true", f"eval.lambada.path={lambada(i, 'int.jsonl', LAMBADA_INT)}",
                 cache=i.demo.cache), [f"{i.root}/inputs/lambada/int.jsonl:2", "not a string"])),
    Row("new-manipulation-templates-empty", lambda i, d: (
        pipeline("eval.manipulation.templates=[]", cache=i.demo.cache),
        ["eval.manipulation.templates=[]: no templates", "null for the bundled ones"])),
    Row("new-manipulation-template-without-a-pronoun", lambda i, d: (
        pipeline('eval.manipulation.templates=["The cook left early."]', cache=i.demo.cache),
        ["eval.manipulation.templates: 'The cook left early.' must hold exactly one of {subject}"])),
    # -- python -m debias.evaluate (every row refused before the model loads) ------------------------------
    Row("4-evaluate-device-banana", lambda i, d: (module("debias.evaluate", "--model", i.model, "--device", "banana"),
                                                  ["eval.device=banana: not a device", "use auto, cpu"])),
    Row("4-evaluate-out-unwritable", lambda i, d: (
        module("debias.evaluate", "--model", d / "not-reached", "--out", f"{i.unwritable}/report.json"),
        [f"--out {i.unwritable}/report.json: cannot write in", "choose a writable folder"]), needs_unwritable=True),
    Row("new-evaluate-out-is-a-folder", lambda i, d: (module("debias.evaluate", "--model", i.model, "--out", d),
                                                      [f"--out {d}: is a folder", "give a file name"])),
    Row("5-evaluate-batch-size-negative", lambda i, d: (module("debias.evaluate", "--model", i.model, "--batch-size", "-1"),
                                                        ["eval.batch_size=-1", "positive integer"])),
    Row("5-evaluate-lambada-limit-0", lambda i, d: (
        module("debias.evaluate", "--model", i.model, "--lambada", lambada(i, "ok.jsonl", LAMBADA_OK), "--lambada-limit", "0"),
        ["eval.lambada.limit=0", "positive integer"])),
    Row("4-evaluate-lambada-text-5", lambda i, d: (
        module("debias.evaluate", "--model", i.model, "--lambada", lambada(i, "int.jsonl", LAMBADA_INT), "--out", d / "r.json"),
        [f"{i.root}/inputs/lambada/int.jsonl:2", "not a string"])),
    Row("4-evaluate-lambada-text-null", lambda i, d: (
        module("debias.evaluate", "--model", i.model, "--lambada", lambada(i, "null.jsonl", '{"text": null}\n')),
        [f"{i.root}/inputs/lambada/null.jsonl:1", "not a string"])),
    Row("4-evaluate-crows-pairs-row-missing-its-last-column", lambda i, d: (
        module("debias.evaluate", "--model", i.model, "--crows-pairs", crows_short_row(i), "--bias-type", ""),
        [f"{i.root}/inputs/crows/short_row.csv:4", "missing/extra columns"])),
    Row("5-evaluate-winobias-duplicated-line-index", lambda i, d: (
        module("debias.evaluate", "--model", i.model, "--winobias", winobias_duplicate_index(i)),
        [f"{i.root}/inputs/winobias_duplicate/pro_stereotyped_type1.txt.dev:3"])),
    Row("6-evaluate-missing-model-folder", lambda i, d: (module("debias.evaluate", "--model", d / "no-model"),
                                                         [f"{d}/no-model: model folder not found", "Hugging Face GPT-NeoX folder"])),
    Row("6-evaluate-winobias-folder-mistyped", lambda i, d: (
        module("debias.evaluate", "--model", i.model, "--winobias", "winobias_typo"),
        ["winobias_typo: WinoBias folder not found", "check the path"])),
    Row("new-evaluate-perplexity-text-missing", lambda i, d: (
        module("debias.evaluate", "--model", i.model, "--perplexity-text", "held/out.txt"),
        ["held/out.txt: held-out text", "check the path"])),
    Row("new-evaluate-model-without-tokenizer", lambda i, d: (
        module("debias.evaluate", "--model", model_copy(i, "no_tokenizer", lambda f: (f / "tokenizer.json").unlink())),
        ["no_tokenizer/tokenizer.json: tokenizer file not found"])),
    Row("new-evaluate-unknown-dtype", lambda i, d: (module("debias.evaluate", "--model", i.model, "--dtype", "float16"),
                                                    ["argument --dtype: invalid choice: 'float16'", "--help"])),
    Row("new-evaluate-model-config-not-json", lambda i, d: (
        module("debias.evaluate", "--model", model_copy(i, "bad_config", lambda f: (f / "config.json").write_text("{oops"))),
        ["bad_config/config.json: not valid JSON"])),
    Row("new-evaluate-weights-not-safetensors", lambda i, d: (
        module("debias.evaluate", "--model", model_copy(i, "bad_weights", lambda f: (f / "model.safetensors").write_bytes(b"x" * 64))),
        ["bad_weights/model.safetensors: cannot be read as safetensors"])),
    # -- python -m debias.rewrite ----------------------------------------------------------------------
    Row("4-rewrite-binary-bytes-on-stdin", lambda i, d: (
        module("debias.rewrite", "--tokenizer", i.suite.tokenizer, "--direction", "m2f"),
        ["stdin: line 2 is not UTF-8 text", "the rewriter reads text"], b"He left.\n\xff\xfe\x00binary\n")),
    Row("new-rewrite-tokenizer-folder", lambda i, d: (
        module("debias.rewrite", "--tokenizer", empty_folder(i, "tokenizer_folder"), "--direction", "m2f"),
        ["tokenizer_folder/tokenizer.json: tokenizer file not found"], b"He left.\n")),
    Row("new-rewrite-direction-unknown", lambda i, d: (
        module("debias.rewrite", "--tokenizer", i.suite.tokenizer, "--direction", "up"),
        ["direction 'up'", "m2f, f2m, swap"], b"He left.\n")),
    Row("4-verify-invalid-manifest", lambda i, d: (
        module("debias.rewrite", "verify", pass_copy(i, "bad_manifest", lambda f: (f / "manifest.json").write_text("{oops"))),
        ["bad_manifest/manifest.json: not readable JSON", "rewrite the window again"])),
    Row("4-verify-without-audit", lambda i, d: (
        module("debias.rewrite", "verify", pass_copy(i, "no_audit", lambda f: (f / "audit.json").unlink())),
        ["no_audit/audit.json: not found", "rewrite the window again"])),
    Row("new-verify-json-unwritable", lambda i, d: (
        module("debias.rewrite", "verify", i.demo.rewrite, "--json", f"{i.unwritable}/check.json"),
        [f"--json {i.unwritable}/check.json: cannot write", "writable folder"]), needs_unwritable=True),
    Row("new-rewrite-window-fraction-1.5", lambda i, d: (
        module("debias.rewrite", "window", "--source", i.suite.stream, "--out", d / "pass", "--tokenizer", i.suite.tokenizer,
               "--direction", "m2f", "--ratio", "0.07", "--fraction", "1.5"), ["fraction=1.5", "[0, 1]"])),
    Row("new-rewrite-window-out-unwritable", lambda i, d: (
        module("debias.rewrite", "window", "--source", i.suite.stream, "--out", f"{i.unwritable}/pass", "--tokenizer",
               i.suite.tokenizer, "--direction", "m2f", "--start-step", "93", *SMALL_GEOMETRY_FLAGS),
        [f"{i.unwritable}/pass: cannot write in {i.unwritable}", "choose a writable folder"]), needs_unwritable=True),
    # -- python -m debias.stream ------------------------------------------------------------------------
    Row("4-stream-show-negative-size", lambda i, d: (module("debias.stream", "show", negative_size(i), "--row", "0"),
                                                     ["negative_size/document.idx: row 3 has length -5", "download it again"])),
    Row("4-stream-show-pointer-out-of-range", lambda i, d: (
        module("debias.stream", "show", pointer_out_of_range(i), "--row", "5"),
        ["pointer/document.idx: row 5 points to bytes 1,000,000,000,000", "outside the", "download it again"])),
    Row("new-stream-info-pointer-out-of-range", lambda i, d: (
        module("debias.stream", "info", pointer_out_of_range(i)), ["pointer/document.idx: row 5 points to bytes"])),
    Row("5-stream-bin-longer-than-its-index", lambda i, d: (module("debias.stream", "info", longer_bin(i)),
                                                            ["longer_bin/document.bin: holds", "100 trailing bytes"])),
    Row("new-stream-index-truncated", lambda i, d: (module("debias.stream", "show", truncated_index(i), "--row", "0"),
                                                    ["truncated/document.idx: truncated index", "download it again"])),
    Row("new-stream-index-wrong-magic", lambda i, d: (module("debias.stream", "info", wrong_magic(i)),
                                                      ["magic/document.idx: not an MMIDIDX index"])),
    Row("new-stream-show-row-out-of-range", lambda i, d: (module("debias.stream", "show", i.suite.stream, "--row", "99999"),
                                                          ["--row 99999: the stream holds rows 0.."])),
    Row("new-stream-show-rows-do-not-match-the-geometry", lambda i, d: (
        module("debias.stream", "show", i.suite.stream, "--step", "3"),
        ["rows of 65 tokens, but the geometry needs rows of 2049", "set geometry.row_length"])),
    Row("new-stream-pack-seq-len-0", lambda i, d: (
        module("debias.stream", "pack", "--tokenizer", i.suite.tokenizer, "--seq-len", "0", i.suite.root / "corpus_sample.txt",
               d / "packed"), ["seq_len=0", "positive integer"])),
    Row("new-stream-pack-output-unwritable", lambda i, d: (
        module("debias.stream", "pack", "--tokenizer", i.suite.tokenizer, "--seq-len", "64",
               i.suite.root / "corpus_sample.txt", f"{i.unwritable}/packed"),
        [f"{i.unwritable}/packed: cannot write in", "choose a writable folder"]), needs_unwritable=True),
    # -- the other command lines ----------------------------------------------------------------------
    Row("new-cache-ls-no-cache", lambda i, d: (module("debias.cache", "--cache-dir", d / "none", "ls"),
                                               [f"{d}/none: no cache there", "--cache-dir"])),
    Row("new-demo-build-unknown-key", lambda i, d: (module("debias.demo", "build", "--cache-dir", d / "cache", "data.demo.sed=3"),
                                                    ["data.demo.sed: unknown setting", "data.demo.seed"])),
    Row("new-train-missing-job", lambda i, d: (module("debias.train", d / "train_job.json"),
                                               ["train_job.json: not a train_job.json"])),
    Row("new-compare-missing-run", lambda i, d: ([str(ROOT / "pipelines" / "compare.py"), d / "no-run"],
                                                 ["no-run: no readable report.json"]),
        also_allowed="warning: "),  # debias.report.compare also warns about the folder it skips
    Row("new-compare-out-is-a-file", lambda i, d: (
        [str(ROOT / "pipelines" / "compare.py"), i.demo.report.parent, "--out", a_file(i)],
        ["a_file: is a file, not a folder", "choose another output path"])),
    Row("6-evaluate-pipeline-missing-model-folder", lambda i, d: (
        [str(ROOT / "pipelines" / "evaluate.py"), f"models={{a:{d / 'no-model'}}}", *local_benchmarks(i)],
        [f"models.a={d}/no-model: no such folder", "local Hugging Face model folder"])),
    Row("new-evaluate-sweep-refused-by-a-jobs-check", lambda i, d: (
        [str(ROOT / "pipelines" / "evaluate.py"), "--multirun", f"models={{a:{d / 'no-model'}}}", *local_benchmarks(i)],
        [f"models.a={d}/no-model: no such folder", "local Hugging Face model folder"])),
    Row("4-evaluate-pipeline-crows-pairs-row-missing-its-last-column", lambda i, d: (
        [str(ROOT / "pipelines" / "evaluate.py"), f"models={{a:{i.model}}}", *local_benchmarks(i),
         f"eval.crows_pairs.path={crows_short_row(i)}"],
        [f"{i.root}/inputs/crows/short_row.csv:4", "missing/extra columns"])),
]

LAMBADA_OK = '{"text": "she said so to him"}\n'
LAMBADA_INT = '{"text": "a b c"}\n{"text": 5}\n'


def local_benchmarks(inp: Inputs) -> list[str]:
    """pipelines/evaluate.py on the suite's probes, not ../shared/data (which a CI machine may lack)."""
    return [f"eval.crows_pairs.path={inp.suite.crows_pairs_csv}", f"eval.winobias.path={inp.suite.winobias_dir}",
            "eval.lambada.enabled=false", "eval.check_pinned=false"]


SMALL_GEOMETRY_FLAGS = ["--batch-size", "8", "--row-length", "65", "--total-steps", "100", "--checkpoint-interval", "1"]


def a_file(inp: Inputs) -> Path:
    path = inp.folder("files") / "a_file"
    path.write_text("not a folder\n")
    return path


def negative_size(inp: Inputs) -> Path:
    prefix = inp.stream_copy("negative_size")
    patch(prefix.with_suffix(".idx"), HEADER.size + 4 * 3, struct.pack("<i", -5))
    return prefix


def pointer_out_of_range(inp: Inputs) -> Path:
    prefix = inp.stream_copy("pointer")
    patch(prefix.with_suffix(".idx"), HEADER.size + 4 * rows_in(prefix) + 8 * 5, struct.pack("<q", 10 ** 12))
    return prefix


def longer_bin(inp: Inputs) -> Path:
    prefix = inp.stream_copy("longer_bin")
    with open(prefix.with_suffix(".bin"), "ab") as handle:
        handle.write(bytes(100))
    return prefix


def truncated_index(inp: Inputs) -> Path:
    prefix = inp.stream_copy("truncated")
    data = prefix.with_suffix(".idx").read_bytes()
    prefix.with_suffix(".idx").write_bytes(data[: len(data) // 2])
    return prefix


def wrong_magic(inp: Inputs) -> Path:
    prefix = inp.stream_copy("magic")
    patch(prefix.with_suffix(".idx"), 0, b"NOTANIDX\x00")
    return prefix


def unwritable_folder(root: Path) -> Optional[Path]:
    """A folder this process cannot create files in: a 0555 folder, or (as root, who writes
    through modes) a read-only kernel file system; None if neither holds."""
    folder = root / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys/kernel")):
        try:
            with open(candidate / ".probe", "w"):
                pass
            (candidate / ".probe").unlink()
        except OSError:
            return candidate
    return None


@dataclass
class Outcome:
    row: Row
    cwd: Path                                       # the row's own empty working folder
    argv: list = field(default_factory=list)        # after `python`; empty: the row cannot run here
    expect: list = field(default_factory=list)
    stdin: bytes = b""
    returncode: Optional[int] = None
    stderr: str = ""
    seconds: float = 0.0


@dataclass
class Table:
    outcomes: dict[str, Outcome]
    entries_before: dict[str, str]                  # the shared cache's finished entries
    entries_after: dict[str, str]


# The argparse command lines (every `python -m ...` row and pipelines/compare.py) keep no state
# between calls, so the rows of one entry point share an interpreter: each row runs as
# `python -m MODULE ARGS` would (run as __main__ afresh, its own folder, stdin, captured stdout and
# stderr, the exit status from SystemExit, a traceback printed for anything else), and torch is
# imported once per entry point instead of once per row. The Hydra pipelines, which keep global
# state between runs, get a process per row.
DRIVER = """
import contextlib, io, json, os, runpy, sys, time, traceback, warnings
filters = warnings.filters[:]
results = []
for row in json.load(sys.stdin):
    os.chdir(row["cwd"])
    warnings.filters[:] = filters
    warnings._filters_mutated()  # every row sees its warnings as a fresh process would
    out, err = io.StringIO(), io.StringIO()
    sys.stdin = io.TextIOWrapper(io.BytesIO(bytes.fromhex(row["stdin"])))
    started, code = time.perf_counter(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if row["argv"][0] == "-m":
                sys.argv = [row["argv"][1], *row["argv"][2:]]
                runpy.run_module(row["argv"][1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = list(row["argv"])
                runpy.run_path(row["argv"][0], run_name="__main__")
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"returncode": code, "stderr": err.getvalue(), "seconds": time.perf_counter() - started})
sys.__stdout__.write(json.dumps(results))
"""


def run_own_process(outcome: Outcome) -> None:
    started = time.perf_counter()
    result = subprocess.run([PYTHON, *outcome.argv], input=outcome.stdin, cwd=outcome.cwd, env=environment(),
                            capture_output=True, timeout=600)
    outcome.returncode, outcome.stderr = result.returncode, result.stderr.decode(errors="replace")
    outcome.seconds = time.perf_counter() - started


def run_in_one_interpreter(outcomes: list[Outcome]) -> None:
    rows = [{"argv": o.argv, "cwd": str(o.cwd), "stdin": o.stdin.hex()} for o in outcomes]
    result = subprocess.run([PYTHON, "-c", DRIVER], input=json.dumps(rows).encode(), cwd=ROOT, env=environment(),
                            capture_output=True, timeout=900)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    for outcome, record in zip(outcomes, json.loads(result.stdout)):
        outcome.returncode, outcome.stderr, outcome.seconds = record["returncode"], record["stderr"], record["seconds"]


def entry_point(argv: list[str]) -> Optional[str]:
    """The argparse entry point a row calls (rows of one share an interpreter), None for a Hydra app."""
    if argv[0] == "-m":
        return argv[1]
    return argv[0] if argv[0].endswith("compare.py") else None


@pytest.fixture(scope="module")
def table(demo, tmp_path_factory) -> Table:
    """Every row run once: the Hydra rows a process each, the others an interpreter per entry point,
    three jobs at a time."""
    root = tmp_path_factory.mktemp("bad-inputs")
    inputs = Inputs(demo, root, unwritable_folder(root))
    outcomes = {}
    for row in ROWS:
        cwd = root / "cwd" / row.id
        cwd.mkdir(parents=True)
        outcome = outcomes[row.id] = Outcome(row, cwd)
        if not row.needs_unwritable or inputs.unwritable is not None:
            argv, outcome.expect, *stdin = row.build(inputs, cwd)
            outcome.argv, outcome.stdin = [str(a) for a in argv], (stdin[0] if stdin else b"")
    runnable = [o for o in outcomes.values() if o.argv]
    grouped: dict[str, list[Outcome]] = {}
    for outcome in runnable:
        if entry_point(outcome.argv):
            grouped.setdefault(entry_point(outcome.argv), []).append(outcome)
    jobs = [(run_in_one_interpreter, group) for group in grouped.values()]
    jobs += [(run_own_process, o) for o in runnable if not entry_point(o.argv)]
    before = finished_entries(demo.cache)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        for done in [pool.submit(job, argument) for job, argument in jobs]:
            done.result()
    return Table(outcomes, before, finished_entries(demo.cache))


def test_no_bad_input_built_anything_in_the_shared_cache(table):
    assert table.entries_after == table.entries_before


def test_the_table_has_at_least_40_rows_and_every_input_issue_15_names():
    ids = {row.id for row in ROWS}
    assert len(ids) == len(ROWS) >= 40
    named = ["cache-dir-read-only", "eval-device-cuda", "seed-abc", "bootstrap-samples-0", "eval-batch-size-negative",
             "lambada-text-5", "lambada-text-null", "crows-pairs-row-missing", "binary-bytes-on-stdin",
             "verify-invalid-manifest", "verify-without-audit", "show-negative-size", "show-pointer-out-of-range",
             "evaluate-device-banana", "evaluate-out-unwritable", "unknown-key", "lambada-limit-0",
             "winobias-duplicated-line-index", "bin-longer-than-its-index", "pile-deduped-without-data-stream",
             "missing-model", "winobias-folder-mistyped", "step-unquoted"]
    assert all(any(name in row_id for row_id in ids) for name in named), [n for n in named if not any(n in i for i in ids)]


@pytest.mark.parametrize("row_id", [row.id for row in ROWS])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(table, row_id):
    outcome = table.outcomes[row_id]
    if outcome.returncode is None:
        pytest.skip("no folder here that this process cannot write (root on a machine without a read-only file system)")
    stderr = outcome.stderr
    assert outcome.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = error_lines(stderr)
    others = [line for line in stderr.splitlines() if line.strip() and line not in errors
              and not line.startswith(outcome.row.also_allowed or "\0")]
    assert len(errors) == 1 and not others, stderr[-2000:]  # that line alone
    missing = [text for text in outcome.expect if text not in errors[0]]
    assert not missing, (missing, errors[0])
    left = [p.relative_to(outcome.cwd).as_posix() for p in outcome.cwd.rglob("*")
            if p.is_file() or (p.is_dir() and p.parent.name == "runs")]
    assert not left, f"left behind: {left}"
    if "mistyped" in row_id:  # a local path, never a hub lookup that retries for half a minute
        assert outcome.seconds < 30, outcome.seconds
