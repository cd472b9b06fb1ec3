"""The settings schema (debias/config.py) against every preset in conf/: each composes into checked,
typed objects; each setting has one default (presets only override, never repeat a default, never
add a key); bad keys and values are refused with one line (debias/app.py); run folders are unique."""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from debias.app import claim_unique_dir, config_error_line
from debias.config import (DemoDataConfig, EvalConfig, InterventionConfig, ModelConfig, RunConfig, StreamDataConfig,
                           as_dict, register_configs, to_run_config)
from debias.errors import UserError
from debias.train.config import TrainerConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUP_SCHEMA = {"model": ModelConfig, "intervention": InterventionConfig, "trainer": TrainerConfig, "eval": EvalConfig}
DATA_SCHEMA = {"/schema/data/stream@_here_": StreamDataConfig, "/schema/data/demo@_here_": DemoDataConfig}


def presets(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@functools.lru_cache(maxsize=None)  # composing takes ~0.1 s; the tests only read what it returns
def composed(*overrides: str, hydra: bool = False):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def refusal(*overrides: str) -> str:
    """The one line a run with these overrides is refused with (as pipelines/intervene.py prints it)."""
    try:
        to_run_config(composed(*overrides))
    except UserError as err:
        return str(err)
    except (HydraException, OmegaConfBaseException) as err:
        return config_error_line(err, list(overrides))
    raise AssertionError(f"{overrides} was accepted")


# ---- every preset -------------------------------------------------------------------------------

STREAM = "data.stream=/data/pile/document"


@pytest.mark.parametrize("model, data", [(m, d) for m in presets("model") for d in ("demo", "pile-deduped")]
                         + [(m, "pile-standard") for m in ("pythia-70m", "pythia-12b", "pythia-demo")])
def test_every_model_and_data_preset_composes_into_checked_objects(model, data):
    overrides = [f"model={model}", f"data={data}"] + ([STREAM] if data != "demo" else [])
    cfg = composed(*overrides)
    if data != "demo" and model == "pythia-demo":  # the demo model lives only in the demo suite
        with pytest.raises(UserError, match="neither model.hub_repo nor model.checkpoint"):
            to_run_config(cfg)
        return
    config = to_run_config(cfg)
    assert isinstance(config, RunConfig) and config.model.name == model and config.data.name == data
    assert isinstance(config.data, DemoDataConfig if data == "demo" else StreamDataConfig)
    # the typed objects hold exactly what Hydra composed: the report's config echo is unchanged
    assert as_dict(config) == OmegaConf.to_container(cfg, resolve=True)
    if data == "demo":  # the model library's own reader of a preset (parameter accounting) agrees
        from debias.model.flops import config_from_preset

        neox, architecture = dataclasses.asdict(config_from_preset(CONF / "model" / f"{model}.yaml")), as_dict(config.model.architecture)
        assert {key: neox[key] for key in architecture} == architecture
    if model.endswith("-deduped"):  # the twin inherits its base's architecture and recipe
        base = to_run_config(composed(f"model={model.removesuffix('-deduped')}", *overrides[1:]))
        assert config.model.architecture == base.model.architecture and config.model.peak_lr == base.model.peak_lr
        assert config.model.hub_repo == f"EleutherAI/{model}"


@pytest.mark.parametrize("intervention", presets("intervention"))
@pytest.mark.parametrize("trainer", presets("trainer"))
@pytest.mark.parametrize("evaluation", presets("eval"))
def test_every_intervention_trainer_and_eval_preset_composes(intervention, trainer, evaluation):
    cfg = composed(f"intervention={intervention}", f"trainer={trainer}", f"eval={evaluation}")
    config = to_run_config(cfg)
    assert config.intervention.direction == intervention
    assert config.trainer.engine == ("deepspeed" if trainer == "deepspeed" else "torch")
    assert as_dict(config) == OmegaConf.to_container(cfg, resolve=True)


def test_the_sweep_preset_composes():
    config = to_run_config(composed("+sweep=demo"))
    assert config.threads == 1


def leaves(node, prefix: str = ""):
    """(dotted key, value) of every value a YAML file sets, its defaults list aside."""
    for key, value in node.items():
        if key == "defaults":
            continue
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def parent_of(group: str, preset: str):
    """What the preset overrides: the preset it extends, or its group's schema with its defaults."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{preset}.yaml"))
    for entry in raw.get("defaults", []):
        if entry in DATA_SCHEMA:
            return OmegaConf.structured(DATA_SCHEMA[entry])
        if isinstance(entry, str) and entry != "_self_":
            return composed(f"{group}={entry}", *([STREAM] if group == "data" else []))[group]
    return OmegaConf.structured(GROUP_SCHEMA[group])


def plain(node, key: str):
    """The resolved value at `key`, or "<unset>" where the schema has no default (???)."""
    try:
        value = OmegaConf.select(node, key, throw_on_missing=True)
    except OmegaConfBaseException:
        return "<unset>"
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@pytest.mark.parametrize("group, preset", [(g, p) for g in ("model", "data", "intervention", "trainer", "eval")
                                           for p in presets(g)])
def test_presets_only_override_existing_settings_with_new_values(group, preset):
    """Each setting has exactly one default: a preset sets only keys its schema declares, and never
    to the value it would have anyway (that would be a second copy of a default)."""
    raw = OmegaConf.load(CONF / group / f"{preset}.yaml")
    own = composed(f"{group}={preset}", *([STREAM] if group == "data" and preset != "demo" else []))[group]
    parent = parent_of(group, preset)
    for key, _ in leaves(OmegaConf.to_container(raw)):
        # a key outside the schema would not even compose; this names it if it ever does
        assert OmegaConf.select(own, key, default="<absent>") != "<absent>", f"conf/{group}/{preset}.yaml: {key} is not a setting"
        mine, theirs = plain(own, key), plain(parent, key)
        assert mine != theirs, f"conf/{group}/{preset}.yaml repeats the default {key}={theirs!r}"


def test_the_root_config_sets_only_defaults_and_hydra():
    """seed, cache_dir, threads and plan have their defaults in RunConfig, not in conf/config.yaml."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"))
    assert set(raw) == {"defaults", "hydra"} and raw["defaults"][0] == "debias_schema"
    defaults = RunConfig.__dataclass_fields__
    assert defaults["seed"].default == 1234 and defaults["threads"].default is None
    assert defaults["plan"].default is False and defaults["plan_device"].default is None


def test_new_settings_have_one_default_each_and_reach_the_typed_config():
    """The settings the held-out source, the rewrite check and the plan added: a default in the
    schema, none repeated in a preset; perplexity is on for every run through eval=pythia."""
    from debias.rewrite.checker import DEFAULT_SAMPLE_WORDS

    config = to_run_config(composed())
    assert (config.intervention.check_words, config.intervention.check_tagger) == (DEFAULT_SAMPLE_WORDS, "auto") == (9604, "auto")
    assert config.eval.perplexity.enabled is True and config.eval.perplexity.allow_seen_rows is False
    assert (config.plan, config.plan_device) == (False, None)
    assert StreamDataConfig.__dataclass_fields__["heldout_rows"].default == 256
    changed = to_run_config(composed("intervention.check_words=0", "intervention.check_tagger=none", "plan=true",
                                     "plan_device=A100", "eval.perplexity.allow_seen_rows=true"))
    assert (changed.intervention.check_words, changed.intervention.check_tagger) == (0, "none")
    assert (changed.plan, changed.plan_device, changed.eval.perplexity.allow_seen_rows) == (True, "A100", True)
    for preset in (CONF / "eval").glob("*.yaml"):  # no preset fills the source the pipeline chooses
        text = preset.read_text()
        assert "the pipeline fills these" not in text and "rows:" not in text and "stream:" not in text, preset


def test_no_library_module_keeps_its_own_copy_of_eval_or_trainer_defaults():
    """The defaults the issue found five times (eval.batch_size) and four times (the optimizer)."""
    suite = (ROOT / "debias" / "evaluate" / "suite.py").read_text()
    assert "DEFAULTS" not in suite and "resolve_config" not in suite
    loop = (ROOT / "debias" / "train" / "loop.py").read_text()
    assert "0.95" not in loop and "from_any" not in loop
    assert "from_any" not in (ROOT / "debias" / "train" / "config.py").read_text()
    from debias.evaluate.__main__ import parse_args

    assert parse_args(["--model", "x"]).batch_size == EvalConfig.batch_size


def test_result_key_leaves_out_what_only_watches_the_run():
    quiet = TrainerConfig(progress=False, log_every=10, tensorboard=False, checkpoint_every=5, keep_last=1)
    assert quiet.result_key() == TrainerConfig().result_key()
    assert TrainerConfig(micro_batch=4).result_key() != TrainerConfig().result_key()
    assert set(TrainerConfig.RESULT_NEUTRAL) < {f.name for f in dataclasses.fields(TrainerConfig)}


# ---- refused in one line ------------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("eval.batchsize=3", "eval.batchsize: unknown setting; did you mean eval.batch_size?"),
    ("+eval.batchsize=3", "eval.batchsize: unknown setting; did you mean eval.batch_size?"),
    ("model.architecture.hidden=3", "did you mean model.architecture.hidden_size?"),
    ("trainer.optimizer.beta=[0.9,0.9]", "did you mean trainer.optimizer.betas?"),
    ("+foo=1", "foo: unknown setting; valid keys of the root: model, data, intervention"),
    ("data.demo.pretrain.micro_bach=3", "a new key is added with +data.demo.pretrain.micro_bach=VALUE"),
    ("+data.demo.pretrain.micro_bach=3", "did you mean trainer setting micro_batch?"),
    ("model=pythia-3b", "model=pythia-3b: no preset conf/model/pythia-3b.yaml; allowed: pythia-1.4b"),
])
def test_unknown_keys_and_presets_are_refused_with_one_line_naming_the_nearest(override, expected):
    line = refusal(override)
    assert "\n" not in line and expected in line, line


def test_an_unknown_key_in_a_preset_file_is_refused_naming_the_file(tmp_path):
    import shutil

    conf = shutil.copytree(CONF, tmp_path / "conf")
    with open(conf / "eval" / "demo.yaml", "a") as handle:
        handle.write("batchsize: 3\n")
    register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(HydraException) as err:
            compose(config_name="config")
    assert config_error_line(err.value, []) == "conf/eval/demo.yaml: eval.batchsize: unknown setting; did you mean eval.batch_size?"


@pytest.mark.parametrize("overrides, expected", [
    (["seed=abc"], "seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["eval.bootstrap_samples=0"], "eval.bootstrap_samples=0: must be a positive integer"),
    (["eval.batch_size=-1"], "eval.batch_size=-1: must be a positive integer"),
    (["intervention.ratio=2"], "intervention.ratio=2.0: must be strictly between 0 and 1"),
    (["intervention.direction=sideways"], "allowed: m2f, f2m, swap, none"),
    (["eval.device=banana"], "eval.device=banana: not a device"),
    (["data=pile-deduped"], "data.stream is required: the prefix of document.idx"),
    (["model.checkpoint=/ckpt/x/step{step}"], """quote the value inside the shell's quotes: 'model.checkpoint="/ckpt/x/step{step}"'"""),
    (["intervention=m2f,swap"], "several values; add --multirun"),
    (["intervention.check_words=-1"], "intervention.check_words=-1: must be an integer >= 0"),
    (["intervention.check_tagger=stanza"], "intervention.check_tagger='stanza': not one of auto, spacy, none"),
    (["plan_device=B200"], "plan_device='B200': not one of H200, H100, A100"),
    (["plan=maybe"], "plan=maybe: Value 'maybe' is not a valid bool"),
    (["eval.perplexity.allow_seen_rows=sometimes"], "eval.perplexity.allow_seen_rows=sometimes: Value 'sometimes' is not a valid bool"),
    (["+plan=true"], "+plan: already a setting; write plan=true without the +"),
    (["eval.perplexity.allow_seen=true"], "eval.perplexity.allow_seen: unknown setting; did you mean eval.perplexity.allow_seen_rows"),
    (["intervention.check_word=5"], "intervention.check_word: unknown setting; did you mean intervention.check_words"),
])
def test_bad_values_are_refused_with_one_line(overrides, expected):
    line = refusal(*overrides)
    assert "\n" not in line and expected in line, line


def test_the_quoted_checkpoint_pattern_is_accepted():
    config = to_run_config(composed("model=pythia-70m", "data=pile-deduped", STREAM,
                                    'model.checkpoint="/ckpt/x/step{step}"'))
    assert config.model.checkpoint == "/ckpt/x/step{step}"


def test_devices_and_cache_dir_are_checked_before_any_work(monkeypatch, tmp_path):
    import torch

    from debias.cache import Cache
    from debias.stages import check_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = to_run_config(composed("eval.device=cuda"))
    with pytest.raises(UserError, match="eval.device=cuda: no CUDA device is visible"):
        check_devices(config)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write there"):
        Cache(blocker / "cache")
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(UserError, match="cannot write there"):
            Cache(locked / "cache")


# ---- run folders --------------------------------------------------------------------------------

def _claim(path: str) -> str:
    return claim_unique_dir(path)


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    name = str(tmp_path / "runs" / "2026-01-01_00-00-00_m2f_r0.07")
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"  # fork: no re-import of torch
    with multiprocessing.get_context(method).Pool(4) as pool:
        claimed = pool.map(_claim, [name] * 4)
    assert sorted(claimed) == sorted([name, f"{name}_2", f"{name}_3", f"{name}_4"])
    assert all(Path(p).is_dir() for p in claimed)
    assert claim_unique_dir(str(tmp_path / "alone")) == str(tmp_path / "alone")  # a single run keeps Hydra's name


def test_the_run_folder_goes_through_unique_dir():
    cfg = composed(hydra=True)
    raw = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    assert raw.startswith("${unique_dir:'outputs/runs/${now:%Y-%m-%d_%H-%M-%S}_${intervention.direction}_r")


def test_real_data_paths_lie_beside_the_checkout_whatever_the_working_folder(tmp_path, monkeypatch):
    """${shared_data:...} resolves when read, so the folder a run starts in does not move the data,
    and $DEBIAS_SHARED_DATA, read at that moment, wins."""
    overrides = ("data=pile-deduped", "data.stream=/x/document", "eval=pythia", "model=pythia-70m-deduped")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEBIAS_SHARED_DATA", raising=False)
    beside = to_run_config(composed(*overrides))
    assert beside.eval.crows_pairs.path == str(ROOT.parent / "shared" / "data" / "crows_pairs" / "crows_pairs_anonymized.csv")
    assert beside.data.tokenizer == str(ROOT.parent / "shared" / "data" / "tokenizers" / "gpt-neox-20b" / "tokenizer.json")
    monkeypatch.setenv("DEBIAS_SHARED_DATA", str(tmp_path / "mirror"))
    assert to_run_config(composed(*overrides)).eval.winobias.path == str(tmp_path / "mirror" / "winobias")
