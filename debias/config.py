"""The settings of a run: one dataclass per Hydra config group, the schema Hydra checks them against.

    model         ModelConfig          conf/model/*.yaml
    data          StreamDataConfig     conf/data/pile-*.yaml   (a pre-tokenized Pythia stream)
                  DemoDataConfig       conf/data/demo.yaml     (the embedded miniature suite, debias.demo)
    intervention  InterventionConfig   conf/intervention/*.yaml
    trainer       TrainerConfig        conf/trainer/*.yaml     (debias.train.config)
    eval          EvalConfig           conf/eval/*.yaml
    (root)        RunConfig            conf/config.yaml        seed, cache_dir, threads, plan, plan_device

Every default and every check of a setting lives here, once: the YAML presets only override, and
constructing a dataclass validates it (`__post_init__`), so `to_run_config(cfg)` hands the library
checked, typed objects. Unknown keys and wrongly typed values are refused by Hydra while it
composes (debias.app turns its page of text into one line), and by `to_run_config` when they were
added with `+key=value`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

from debias.cache import DEFAULT_DIR as DEFAULT_CACHE_DIR, ENV_VAR as CACHE_DIR_ENV
from debias.errors import UserError
from debias.model.gpt_neox import GPTNeoXConfig
from debias.rewrite.checker import DEFAULT_SAMPLE_WORDS, TAGGER_CHOICES
from debias.rewrite.lexicon import DIRECTIONS as REWRITE_DIRECTIONS
from debias.rewrite.resolvers import RESOLVERS
from debias.stream.geometry import Geometry
from debias.train.config import OptimizerConfig, TrainerConfig


def _positive_int(setting: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{setting}={value!r}: must be a positive integer")


def _non_negative_int(setting: str, value: Any, meaning: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{setting}={value!r}: must be an integer >= 0" + (f" ({meaning})" if meaning else ""))


def _one_of(setting: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise UserError(f"{setting}={value!r}: not one of {', '.join(map(str, allowed))}")


# ---- model --------------------------------------------------------------------------------------

@dataclass
class ArchitectureConfig:
    """The GPT-NeoX shape (debias.model.GPTNeoXConfig keys). The defaults are what every Pythia
    size shares; a preset sets its size."""

    hidden_size: int = MISSING
    num_layers: int = MISSING
    num_heads: int = MISSING
    intermediate_size: int = MISSING          # 4 x hidden_size in every Pythia size
    vocab_size: int = GPTNeoXConfig.vocab_size  # embedding rows: the tokenizer's 50,277 ids padded
    rotary_pct: float = GPTNeoXConfig.rotary_pct  # rotary on the first quarter of each head's dimensions
    rotary_base: int = int(GPTNeoXConfig.rotary_base)
    max_position_embeddings: int = GPTNeoXConfig.max_position_embeddings
    gelu: str = GPTNeoXConfig.gelu            # Pythia trained with tanh GELU; 'exact' is what transformers evaluates
    use_parallel_residual: bool = GPTNeoXConfig.use_parallel_residual

    def __post_init__(self) -> None:
        GPTNeoXConfig.from_dict(dataclasses.asdict(self))  # the model's own checks (heads, rotary, gelu)


@dataclass
class ModelConfig:
    """Which model: a Pythia size on the hub, a local copy of its checkpoints, or the demo's."""

    name: str = MISSING
    hub_repo: Optional[str] = None            # Hugging Face repository; checkpoint for step N = revision step<N>
    # A local Hugging Face folder instead of the hub; may contain {step}. On the command line quote
    # the value for Hydra: 'model.checkpoint="/ckpt/pythia-70m/step{step}"'.
    checkpoint: Optional[str] = None
    architecture: ArchitectureConfig = MISSING
    peak_lr: float = MISSING                  # Pythia's peak learning rate for this size; floor 0.1 x peak

    def __post_init__(self) -> None:
        if not self.peak_lr > 0:
            raise UserError(f"model.peak_lr={self.peak_lr}: must be > 0 (Pythia: 1e-3 for 70m ... 1.2e-4 for 12b)")


# ---- data ---------------------------------------------------------------------------------------

@dataclass
class GeometryConfig:
    """Which rows each step reads (debias.stream.Geometry): step s reads rows [s*batch_size, (s+1)*batch_size)."""

    batch_size: int = Geometry.batch_size                    # rows per step (Pythia: 1024)
    row_length: int = Geometry.row_length                    # tokens per row: 2048 inputs + 1 shifted label
    total_steps: int = Geometry.total_steps                  # 7% window = steps 133000..143000, 21% = 113000..143000
    checkpoint_interval: int = Geometry.checkpoint_interval  # window starts round to this grid (Pythia's stepN checkpoints)

    def __post_init__(self) -> None:
        self.to_geometry()  # the stream library's checks

    def to_geometry(self) -> Geometry:
        return Geometry(**dataclasses.asdict(self))


@dataclass
class DataConfig:
    """What every data source has: a name, the stream and tokenizer, the training geometry."""

    name: str = MISSING
    stream: Optional[str] = None              # prefix of the .idx and its .bin shards
    tokenizer: Optional[str] = None           # tokenizer.json the stream was made with
    geometry: GeometryConfig = field(default_factory=GeometryConfig)


@dataclass
class StreamDataConfig(DataConfig):
    """A pre-tokenized Pythia stream read in place (conf/data/pile-*.yaml)."""

    hub_repo: Optional[str] = None            # the dataset `python -m debias.stream download` fetches
    # Rows scored for held-out perplexity: the stream's rows after the window's end (no arm and no
    # checkpoint saw them), else this many rows packed from eval.perplexity.text (see
    # debias.evaluate.choose_heldout_source; the pipeline chooses when eval.perplexity.stream is unset).
    heldout_rows: int = 256

    def __post_init__(self) -> None:
        if not self.stream:
            fetch = f"python -m debias.stream download {self.hub_repo or 'deduped'} DIR"
            raise UserError(f"data.stream is required: the prefix of document.idx and its .bin shards for "
                            f"data={self.name} (fetch them with `{fetch}`, then pass data.stream=DIR/document)")
        if not self.tokenizer:
            raise UserError(f"data.tokenizer is required for data={self.name}: the tokenizer.json the stream was made with")
        _positive_int("data.heldout_rows", self.heldout_rows)


@dataclass
class DemoTokenizerConfig:
    vocab_size: int = 2000                    # byte-level BPE ids (model.architecture.vocab_size pads them)
    train_documents: int = 3000               # documents the BPE is learned from


@dataclass
class DemoProbesConfig:
    winobias_lines_per_file: int = 200        # x 8 files (pro/anti x type1/type2 x dev/test)
    crows_pairs_frames_per_occupation: int = 8  # x 40 occupations = 320 pairs


@dataclass
class DemoConfig:
    """The embedded miniature Pythia suite (debias.demo.build_demo_suite), built once per setting."""

    seed: int = 1234                          # corpus, probes and pretraining
    tokenizer: DemoTokenizerConfig = field(default_factory=DemoTokenizerConfig)
    heldout_rows: int = 64                    # rows of a separately seeded corpus after the training rows (perplexity)
    probes: DemoProbesConfig = field(default_factory=DemoProbesConfig)
    # torch CPU threads while pretraining (None = torch's default): one is as fast for a model this
    # small, and far faster on a shared machine, where idle OpenMP threads spin against other jobs.
    threads: Optional[int] = 1
    # TrainerConfig overrides for pretraining the suite
    pretrain: dict[str, Any] = field(default_factory=lambda: {"micro_batch": 16, "device": "cpu"})
    # What the suite is built for; conf/data/demo.yaml points them at the run's own settings.
    geometry: Any = None                      # GeometryConfig: ${data.geometry}
    model: Any = None                         # ModelConfig (its architecture and peak_lr): ${model}
    cache_dir: Optional[str] = None           # ${cache_dir}

    def __post_init__(self) -> None:
        _non_negative_int("data.demo.seed", self.seed)
        _positive_int("data.demo.heldout_rows", self.heldout_rows)
        _positive_int("data.demo.tokenizer.vocab_size", self.tokenizer.vocab_size)
        _positive_int("data.demo.tokenizer.train_documents", self.tokenizer.train_documents)
        _positive_int("data.demo.probes.winobias_lines_per_file", self.probes.winobias_lines_per_file)
        _positive_int("data.demo.probes.crows_pairs_frames_per_occupation", self.probes.crows_pairs_frames_per_occupation)
        if self.threads is not None:
            _positive_int("data.demo.threads", self.threads)
        self.pretrain_trainer()  # unknown or bad trainer overrides fail now, not after the corpus is built
        if not isinstance(self.geometry, GeometryConfig):
            raise UserError("data.demo.geometry: not set; conf/data/demo.yaml sets geometry: ${data.geometry}")
        if not isinstance(self.model, ModelConfig):
            raise UserError("data.demo.model: needs the model preset's `architecture` and `peak_lr` "
                            "(conf/data/demo.yaml sets model: ${model}; use model=pythia-demo)")
        self._check_fits()

    def pretrain_trainer(self, **fixed: Any) -> TrainerConfig:
        """The TrainerConfig that pretrains the suite: `pretrain` overrides, then `fixed` ones."""
        for key in self.pretrain:
            if key not in {f.name for f in dataclasses.fields(TrainerConfig)}:
                raise UserError(unknown_key_line(f"data.demo.pretrain.{key}", TrainerConfig).replace(
                    "did you mean data.demo.pretrain.", "did you mean trainer setting "))
        return TrainerConfig(**{**self.pretrain, **fixed})

    def _check_fits(self) -> None:
        from debias.stream import Window

        geometry = self.geometry.to_geometry()
        for ratio in (0.07, 0.21):  # the study's two windows must start on a saved checkpoint
            window = Window.from_ratio(geometry, ratio)
            if abs(window.ratio - ratio) > 1e-9:
                raise UserError(f"data.geometry: the {ratio:.0%} window rounds to {window.num_steps} of "
                                f"{geometry.total_steps} steps ({window.ratio:.2%}); choose total_steps and "
                                f"checkpoint_interval so that {ratio} x total_steps is a multiple of the "
                                f"interval (e.g. 1000 and 10)")
        architecture = self.model.architecture
        if self.tokenizer.vocab_size > architecture.vocab_size:
            raise UserError(f"data.demo.tokenizer.vocab_size={self.tokenizer.vocab_size}: larger than the "
                            f"model's vocab_size {architecture.vocab_size}; lower it or raise "
                            f"model.architecture.vocab_size")
        if geometry.row_length - 1 > architecture.max_position_embeddings:
            raise UserError(f"model.architecture.max_position_embeddings={architecture.max_position_embeddings}: "
                            f"shorter than the demo rows ({geometry.row_length - 1} inputs); raise it")


@dataclass
class DemoDataConfig(DataConfig):
    """The demo: the suite supplies the stream, the tokenizer and the checkpoints (conf/data/demo.yaml)."""

    demo: DemoConfig = MISSING


# ---- intervention -------------------------------------------------------------------------------

DIRECTIONS = (*REWRITE_DIRECTIONS, "none")  # none = the control arm alone


@dataclass
class InterventionConfig:
    """Rewrite the last `ratio` of training (start rounded to the checkpoint grid) in `direction`."""

    direction: str = MISSING                  # m2f | f2m | swap | none (control only: the same job on untouched rows)
    ratio: float = 0.07                       # 0.07 -> Pythia step 133000; 0.21 -> step 113000
    start_step: Optional[int] = None          # set to start at an explicit step instead of a ratio
    fraction: float = 1.0                     # share of the window's rows rewritten (chosen reproducibly from seed)
    seed: int = 1234
    resolver: str = "rules"                   # ambiguous his/her: rules | spacy | learned
    workers: Optional[int] = None             # rewrite processes (None: all cores)
    block_rows: int = 4096                    # rows per block: the unit of parallel work and of resuming after a kill
    # The independent check of the rewrite (debias.rewrite.checker, seeded by `seed`): rows are
    # sampled until this many changed words are judged (9604 bounds a 95% interval to +-1%); 0 = off.
    check_words: int = DEFAULT_SAMPLE_WORDS
    check_tagger: str = "auto"                # auto (spaCy's tagger where installed) | spacy | none

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise UserError(f"intervention.direction={self.direction}: unknown; allowed: {', '.join(DIRECTIONS)}")
        if self.start_step is None and not 0 < self.ratio < 1:
            raise UserError(f"intervention.ratio={self.ratio}: must be strictly between 0 and 1 "
                            "(e.g. 0.07 or 0.21), or set intervention.start_step")
        if self.start_step is not None and self.start_step < 0:
            raise UserError(f"intervention.start_step={self.start_step}: must be a step >= 0 on the checkpoint grid")
        if not 0 <= self.fraction <= 1:
            raise UserError(f"intervention.fraction={self.fraction}: must be in [0, 1]")
        _one_of("intervention.resolver", self.resolver, tuple(RESOLVERS))
        if self.workers is not None:
            _positive_int("intervention.workers", self.workers)
        _positive_int("intervention.block_rows", self.block_rows)
        _non_negative_int("intervention.check_words", self.check_words,
                          "changed words the independent check judges; 0 = no check")
        _one_of("intervention.check_tagger", self.check_tagger, TAGGER_CHOICES)


# ---- evaluation ---------------------------------------------------------------------------------

EVAL_DTYPES = ("float32", "bfloat16", "float64")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass
class CrowsPairsConfig:
    enabled: bool = True
    path: Optional[str] = None                # crows_pairs_anonymized.csv, or a hub name such as nyu-mll/crows_pairs
    hub_config: Optional[str] = None          # e.g. "english" for BigScienceBiasEval/crows_pairs_multilingual
    split: str = "test"                       # hub copies only
    bias_type: Optional[str] = "gender"       # None = every bias type


@dataclass
class WinoBiasConfig:
    enabled: bool = True
    path: Optional[str] = None                # folder of the 8 bracket files, or uclanlp/wino_bias
    splits: list[str] = field(default_factory=lambda: ["dev", "test"])

    def __post_init__(self) -> None:
        if not self.splits or not set(self.splits) <= {"dev", "test"}:
            raise UserError(f"eval.winobias.splits={list(self.splits)}: choose from [dev, test]")


@dataclass
class LambadaConfig:
    enabled: bool = True
    path: Optional[str] = None                # lambada_test.jsonl (OpenAI's version)
    limit: Optional[int] = None               # first N passages only (None = all 5,153)

    def __post_init__(self) -> None:
        if self.limit is not None:
            _positive_int("eval.lambada.limit", self.limit)


@dataclass
class PerplexityConfig:
    """Held-out perplexity: stream rows [start, stop) when `stream` and `rows` are set, else held-out
    `text` (a .jsonl with `text_field`, a plain-text file, or a datasets name with
    `text_config`/`text_split`) packed with the model's tokenizer into up to `text_rows` rows of
    `row_length` tokens. The intervention pipeline chooses for itself when `stream` is unset
    (debias.stages.heldout_perplexity): the stream's rows after the window, else `text` packed with
    the run's tokenizer into data.heldout_rows rows of the run's row length, else (only with
    `allow_seen_rows`) rows the checkpoint trained on; `rows_label` says which (perplexity.source)."""

    enabled: bool = False
    stream: Optional[str] = None
    rows: Optional[list[int]] = None          # [start, stop)
    rows_label: Optional[str] = None          # where those rows lie, for the report (perplexity.source)
    window: Optional[int] = None              # tokens per scored window (None = the model's context)
    text: Optional[str] = None                # held-out text: .jsonl / .txt file, or a datasets name
    text_field: str = "text"                  # the .jsonl / datasets field holding the text
    text_config: Optional[str] = None         # datasets config name
    text_split: str = "test"                  # datasets split
    text_rows: int = 64                       # rows packed from the text (pipelines/intervene.py packs data.heldout_rows)
    row_length: Optional[int] = None          # tokens per packed row (None = the model's context + 1)
    # Score rows before the window start when no unseen rows or text exist: rows the checkpoint
    # trained on, labelled "seen by all arms" (a fair paired comparison, not held-out text)
    allow_seen_rows: bool = False

    def __post_init__(self) -> None:
        if self.rows is not None and not (len(self.rows) == 2 and 0 <= self.rows[0] < self.rows[1]):
            raise UserError(f"eval.perplexity.rows={list(self.rows)}: must be [start, stop) with 0 <= start < stop")
        if self.window is not None and (isinstance(self.window, bool) or self.window < 2):
            raise UserError(f"eval.perplexity.window={self.window}: must be at least 2 tokens (or null)")
        if self.row_length is not None and (isinstance(self.row_length, bool) or self.row_length < 2):
            raise UserError(f"eval.perplexity.row_length={self.row_length}: must be at least 2 tokens (or null)")
        _positive_int("eval.perplexity.text_rows", self.text_rows)


@dataclass
class ManipulationConfig:
    enabled: bool = True
    templates: Optional[list[str]] = None     # None = the bundled neutral templates (debias.evaluate.DEFAULT_TEMPLATES)


@dataclass
class EvalConfig:
    """Which benchmarks, on which data, scored how (debias.evaluate.evaluate_model)."""

    device: str = "auto"                      # auto = cuda when available, else cpu
    # weights dtype: None (float32) | bfloat16 | float64; CUDA forwards run under bf16 autocast
    dtype: Optional[str] = None
    # None = the folder's config.json (transformers: exact); "tanh" = as Pythia trained
    gelu: Optional[str] = None
    batch_size: int = 32                      # sequences per forward pass
    bootstrap_samples: int = 10_000           # bootstrap resamples for every interval and paired test (p floor 2/(n+1))
    seed: int = 1234                          # bootstrap seed
    check_pinned: bool = True                 # warn when a data file's sha256 differs from the original release's
    crows_pairs: CrowsPairsConfig = field(default_factory=CrowsPairsConfig)
    winobias: WinoBiasConfig = field(default_factory=WinoBiasConfig)
    lambada: LambadaConfig = field(default_factory=LambadaConfig)
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    manipulation: ManipulationConfig = field(default_factory=ManipulationConfig)

    def __post_init__(self) -> None:
        if not DEVICE_PATTERN.fullmatch(str(self.device)):
            raise UserError(f"eval.device={self.device}: not a device; use auto, cpu, cuda or cuda:N")
        if self.dtype is not None:
            _one_of("eval.dtype", self.dtype, EVAL_DTYPES)
        if self.gelu is not None:
            _one_of("eval.gelu", self.gelu, ("tanh", "exact"))
        _positive_int("eval.batch_size", self.batch_size)
        _positive_int("eval.bootstrap_samples", self.bootstrap_samples)
        _non_negative_int("eval.seed", self.seed)


# ---- the run ------------------------------------------------------------------------------------

@dataclass
class RunConfig:
    """The root of conf/config.yaml: the five groups and what every stage shares."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING                # StreamDataConfig or DemoDataConfig, chosen by the preset
    intervention: InterventionConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 1234                          # training (data order is the stream's own)
    # Content-addressed cache shared by every run and sweep job (demo suite, rewrites, trained arms,
    # evaluations); see debias.cache.
    cache_dir: str = f"${{oc.env:{CACHE_DIR_ENV},{DEFAULT_CACHE_DIR}}}"
    # torch CPU threads per job (None = torch's default); sweeps set 1 so parallel jobs share the cores.
    threads: Optional[int] = None
    # plan=true: print the run's cost (tokens per arm, tokens/s, GPU-hours, wall time; debias.train.plan)
    # for trainer.nproc_per_node x trainer.nnodes GPUs of `plan_device`, then exit without training
    plan: bool = False
    plan_device: Optional[str] = None         # H200 | H100 | A100 (None: the visible GPU's kind, else H200)

    def __post_init__(self) -> None:
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if self.plan_device is not None:
            from debias.train.plan import DEVICES

            _one_of("plan_device", self.plan_device, tuple(DEVICES))
        if self.trainer.imports_optimizer_state:  # one absolute path: for worker processes, the report, the key
            self.trainer.optimizer_state = os.path.abspath(os.path.expanduser(str(self.trainer.optimizer_state)))
        if not isinstance(self.data, DemoDataConfig) and not (self.model.checkpoint or self.model.hub_repo):
            raise UserError(f"model={self.model.name}: neither model.hub_repo nor model.checkpoint is set; "
                            f"pass 'model.checkpoint=\"DIR/step{{step}}\"' (a local Hugging Face folder per step)")

    @property
    def demo(self) -> Optional[DemoConfig]:
        """The demo suite's settings, or None for a real stream."""
        return self.data.demo if isinstance(self.data, DemoDataConfig) else None


def as_dict(config: Any) -> dict:
    """A dataclass config as plain data (for reports, cache keys and config.yaml)."""
    return dataclasses.asdict(config)


# ---- reading Hydra's composed config --------------------------------------------------------------------------------------

SHARED_DATA_ENV = "DEBIAS_SHARED_DATA"


def shared_data_path(relative: str = "") -> str:
    """Where the real data lives (tokenizer, benchmarks): $DEBIAS_SHARED_DATA, else the shared/data
    folder beside the project checkout. Beside the checkout, not beside the working directory, so a
    run started from any folder (a SLURM job, a test's temporary folder) finds the same files.
    The presets write it as ${shared_data:crows_pairs/crows_pairs_anonymized.csv}."""
    root = os.environ.get(SHARED_DATA_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(Path(root) / relative) if relative else str(root)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (conf/config.yaml and conf/data/*.yaml name
    them, and conf/evaluate.yaml its own) and the ${shared_data:...} resolver the presets use.
    Call before Hydra composes conf/."""
    from hydra.core.config_store import ConfigStore

    OmegaConf.register_new_resolver("shared_data", shared_data_path, replace=True)
    store = ConfigStore.instance()
    store.store(name="debias_schema", node=RunConfig)
    store.store(name="evaluate_schema", node=EvaluateModelsConfig)  # defined below; called at run time
    store.store(group="schema/data", name="stream", node=StreamDataConfig)
    store.store(group="schema/data", name="demo", node=DemoDataConfig)


def to_config(node: Any, expected: type, path: str = "") -> Any:
    """A composed Hydra config node (at `path`, e.g. "eval.") as its checked, typed dataclass."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    _refuse_unknown_keys(node, path)
    try:
        config = OmegaConf.to_object(node)
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", "") or "a setting"
        raise UserError(f"{key}: required and not set; pass {key}=VALUE or pick a preset that sets it") from None
    except OmegaConfBaseException as err:
        raise UserError(one_line(err)) from None
    if not isinstance(config, expected):
        raise UserError(f"expected {expected.__name__} settings, got {type(config).__name__}; compose conf/config.yaml")
    return config


def _refuse_unknown_keys(node: Any, path: str = "") -> None:
    """Keys a dataclass does not declare (Hydra lets `+key=value` add them) are refused, not ignored."""
    from omegaconf import DictConfig

    kind = OmegaConf.get_type(node)
    declared = {f.name for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else None
    for key in node.keys():
        if declared is not None and key not in declared:
            raise UserError(unknown_key_line(f"{path}{key}", kind))
        if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            continue  # an interpolation points at a node checked in its own place
        if isinstance(node[key], DictConfig):
            _refuse_unknown_keys(node[key], f"{path}{key}.")


def to_run_config(cfg: Any) -> RunConfig:
    """The composed conf/config.yaml (without Hydra's own `hydra` node) as a checked RunConfig."""
    if "hydra" in cfg:
        from omegaconf import open_dict

        cfg = cfg.copy()  # a copy keeps the schema type, which OmegaConf.masked_copy loses
        with open_dict(cfg):
            cfg.pop("hydra")
    return to_config(cfg, RunConfig)


def unknown_key_line(full_key: str, object_type: Any, parent_node: Any = None) -> str:
    """`<key>: unknown setting; did you mean <the nearest declared keys>?` (one line)."""
    parent, _, key = full_key.rpartition(".")
    where = f"{parent}." if parent else ""
    if not dataclasses.is_dataclass(object_type):  # a free-form mapping such as data.demo.pretrain
        held = ", ".join(map(str, parent_node.keys())) if hasattr(parent_node, "keys") else "other keys"
        return (f"{full_key}: not a key of {parent or 'the root'} (it holds {held}); "
                f"a new key is added with +{full_key}=VALUE")
    valid = [f.name for f in dataclasses.fields(object_type)]
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if near:
        hint = "did you mean " + " or ".join(f"{where}{name}" for name in near) + "?"
    else:
        hint = f"valid keys of {parent or 'the root'}: {', '.join(valid)}"
    return f"{full_key}: unknown setting; {hint}"


def schema_class(name: str) -> Optional[type]:
    """The schema dataclass called `name` (Hydra names it only in the text of a preset's error)."""
    classes = [value for value in globals().values() if isinstance(value, type) and dataclasses.is_dataclass(value)]
    return next((cls for cls in [*classes, OptimizerConfig] if cls.__name__ == name), None)


def one_line(err: BaseException) -> str:
    """An OmegaConf/Hydra message on one line, without its object_type/search-path trailers."""
    keep = []
    for line in str(err).splitlines():
        line = line.strip()
        if not line or line.startswith(("object_type=", "reference_type=", "Config search path", "provider=")):
            continue
        keep.append(line)
    return " ".join(keep) or type(err).__name__


# ---- evaluating named models (pipelines/evaluate.py, conf/evaluate.yaml) ------------------------

MODEL_NAME = re.compile(r"^[A-Za-z0-9][\w.@+-]*$")
MODEL_KEYS = ("name", "ref", "gelu", "tokenizer", "reference")
MODELS_EXAMPLE = ("models={base:EleutherAI/pythia-70m-deduped@step143000,"
                  "intervention:EleutherAI/pythia-intervention-70m-deduped@step143000}")


@dataclass(frozen=True)
class ModelSpec:
    """One named model of an evaluate run, as the settings give it (`models` or the audit)."""

    name: str                                 # its label in the report: arms[name], "<name>_vs_<reference>"
    ref: str                                  # a local Hugging Face folder or OWNER/NAME@REVISION
    gelu: Optional[str] = None                # tanh | exact | None (eval.gelu, else tanh for Pythia, else config.json)
    tokenizer: Optional[str] = None           # a tokenizer.json, or the name of another model whose tokenizer to use
    reference: Optional[str] = None           # the model it is compared against (None: none)
    setting: str = ""                         # where it was given, for error lines


def model_specs(models: Any, setting: str = "models") -> list[ModelSpec]:
    """The `models` setting -> ModelSpecs in order. Accepted forms:
    a mapping {name: ref} or {name: {ref, gelu, tokenizer, reference}}; a list of refs (each named
    after its folder, or its hub name and revision) or of {name, ref, ...}. Every model but the
    first is compared against the first unless it names its own `reference`."""
    if models is None or models == {} or models == []:
        raise UserError(f"{setting}: no models given; e.g. {MODELS_EXAMPLE} (the first is the reference), "
                        "or audit=released")
    if isinstance(models, str):
        raise UserError(f"{setting}={models}: give a mapping or a list, e.g. {MODELS_EXAMPLE}")
    if isinstance(models, dict):
        entries = [(f"{setting}.{name}", {**(value if isinstance(value, dict) else {"ref": value}), "name": str(name)})
                   for name, value in models.items()]
    elif isinstance(models, (list, tuple)):
        entries = [(f"{setting}[{i}]", dict(value) if isinstance(value, dict) else {"ref": value})
                   for i, value in enumerate(models)]
    else:
        raise UserError(f"{setting}: a {type(models).__name__}; give a mapping or a list, e.g. {MODELS_EXAMPLE}")
    specs = []
    for where, entry in entries:
        unknown = sorted(set(entry) - set(MODEL_KEYS))
        if unknown:
            near = difflib.get_close_matches(unknown[0], MODEL_KEYS, n=1)
            hint = f"did you mean {near[0]}?" if near else f"keys: {', '.join(MODEL_KEYS)}"
            raise UserError(f"{where}.{unknown[0]}: unknown setting; {hint}")
        ref = entry.get("ref")
        if not isinstance(ref, str) or not ref.strip():
            raise UserError(f"{where}: no ref; give a local Hugging Face folder or OWNER/NAME@REVISION")
        name = str(entry.get("name") or default_model_name(ref))
        if entry.get("gelu") is not None:
            _one_of(f"{where}.gelu", entry["gelu"], ("tanh", "exact"))
        specs.append(ModelSpec(name=name, ref=ref.strip(), gelu=entry.get("gelu"), tokenizer=entry.get("tokenizer"),
                               reference=entry.get("reference"), setting=where))
    first = specs[0].name
    specs = [spec if spec.reference is not None or spec.name == first else dataclasses.replace(spec, reference=first)
             for spec in specs]
    check_model_specs(specs, setting)
    return specs


def default_model_name(ref: str) -> str:
    """`pythia-70m-deduped@step143000` for a hub reference, the folder's name for a local one."""
    text = str(ref).rstrip("/")
    if "@" in text and not text.startswith((".", "/", "~")):
        repo, _, revision = text.partition("@")
        return f"{repo.rsplit('/', 1)[-1]}@{revision}"
    return text.rsplit("/", 1)[-1]


def check_model_specs(specs: list[ModelSpec], setting: str = "models") -> None:
    """Names usable as report labels, unique; each reference another model of the run."""
    names = [spec.name for spec in specs]
    for spec in specs:
        if not MODEL_NAME.match(spec.name) or "_vs_" in spec.name:
            raise UserError(f"{spec.setting}: name {spec.name!r} is not usable as a report label; use letters, "
                            "digits and . _ - + @ (not '_vs_', which joins the names of a comparison)")
        if names.count(spec.name) > 1:
            raise UserError(f"{setting}: two models are named {spec.name!r}; give each its own name, e.g. "
                            f"{MODELS_EXAMPLE}")
        if spec.reference is not None and (spec.reference not in names or spec.reference == spec.name):
            raise UserError(f"{spec.setting}.reference={spec.reference}: not another model of this run; "
                            f"name one of {', '.join(n for n in names if n != spec.name)}")


# The audit of the released Pythia intervention models (conf/audit/released.yaml).

@dataclass
class AuditReleaseConfig:
    """One released intervention model and the baseline it continued."""

    name: str = MISSING                       # e.g. 70m, long-1.4b
    intervention: str = MISSING               # hub repository of the intervention model
    baseline: str = MISSING                   # hub repository of the Pythia model it restarted from
    start_step: int = MISSING                 # the checkpoint the intervention restarted from


AUDIT_REVISIONS = ("final", "window")


@dataclass
class AuditConfig:
    """Each release's intervention model against its baseline at the same revisions, compared in pairs."""

    releases: list[AuditReleaseConfig] = field(default_factory=list)
    only: Optional[list[str]] = None          # names of the releases to audit (None: all)
    # final: step <end_step>; window: every <checkpoint_interval> steps after each release's start_step
    # through end_step; or a list of steps, e.g. [133000, 143000]
    revisions: Any = "final"
    end_step: int = 143000
    checkpoint_interval: int = 1000

    def __post_init__(self) -> None:
        names = [r.name for r in self.releases]
        if self.only is not None:
            unknown = [str(n) for n in self.only if n not in names]
            if unknown or not self.only:
                problem = f"unknown {', '.join(unknown)}" if unknown else "empty"
                raise UserError(f"audit.only={list(self.only)}: {problem}; choose from {', '.join(names)}")
        revisions = self.revisions
        if isinstance(revisions, str):
            _one_of("audit.revisions", revisions, AUDIT_REVISIONS)
        elif isinstance(revisions, (list, tuple)) and revisions and all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in revisions):
            pass
        else:
            raise UserError(f"audit.revisions={revisions!r}: use final, window or a list of steps such as "
                            "[133000,143000]")
        _positive_int("audit.checkpoint_interval", self.checkpoint_interval)

    def selected(self) -> list[AuditReleaseConfig]:
        return [r for r in self.releases if self.only is None or r.name in self.only]

    def steps(self, release: AuditReleaseConfig) -> list[int]:
        if self.revisions == "final":
            return [self.end_step]
        if self.revisions == "window":  # the checkpoints the intervention run wrote after its restart
            interval = self.checkpoint_interval
            return list(range(release.start_step + interval, self.end_step + 1, interval))
        return sorted(set(self.revisions))

    def model_specs(self) -> list[ModelSpec]:
        """Per release and step: the baseline, then the intervention model compared against it and
        scored with the baseline's tokenizer.json (the same token ids for both). A baseline that two
        releases share (1.4b and long-1.4b) is evaluated once."""
        specs: dict[str, ModelSpec] = {}
        for release in self.selected():
            for step in self.steps(release):
                baseline = f"{release.baseline}@step{step}"
                base_name = default_model_name(baseline)
                specs.setdefault(base_name, ModelSpec(base_name, baseline, setting=f"audit ({release.name})"))
                ref = f"{release.intervention}@step{step}"
                name = default_model_name(ref)
                specs[name] = ModelSpec(name, ref, tokenizer=base_name, reference=base_name,
                                        setting=f"audit ({release.name})")
        if not specs:
            raise UserError("audit: no releases selected; check audit.only and audit.releases")
        ordered = list(specs.values())
        check_model_specs(ordered, "audit")
        return ordered


@dataclass
class EvaluateModelsConfig:
    """The root of conf/evaluate.yaml (pipelines/evaluate.py): named models, or the audit, scored
    with the `eval` group and compared in pairs."""

    models: Any = None                        # {name: ref, ...} or [ref, ...] (model_specs()); the first is the reference
    audit: Optional[AuditConfig] = None       # audit=released: the released intervention models (instead of models)
    tokenizer: Optional[str] = None           # tokenizer.json for every model whose folder holds none
    eval: EvalConfig = field(default_factory=EvalConfig)
    plan: bool = False                        # list what would be evaluated (cached or to download), then stop
    cache_dir: str = f"${{oc.env:{CACHE_DIR_ENV},{DEFAULT_CACHE_DIR}}}"
    threads: Optional[int] = None             # torch CPU threads (None = torch's default)

    def __post_init__(self) -> None:
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if self.models not in (None, {}, []) and self.audit is not None:
            raise UserError("models and audit: both set; evaluate your own models (models=...) or audit the released "
                            "ones (audit=released), not both in one run")
        self.model_specs()  # every naming mistake now, before anything is resolved

    def model_specs(self) -> list[ModelSpec]:
        return self.audit.model_specs() if self.audit is not None else model_specs(self.models)
