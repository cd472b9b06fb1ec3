"""pipelines/evaluate.py and debias.stages.evaluate_models: named models (local Hugging Face
folders, hub revisions from the Hugging Face cache) evaluated once each through the cache and
compared in pairs against the first; the audit preset's dry listing; one-line errors.

The models are tiny GPT-NeoX folders in the real format with a byte-level BPE tokenizer built here
(the demo's builder), so nothing needs ../shared/data. One is shifted towards feminine pronouns by
construction: an output-layer column that reads a constant hidden unit adds `SHIFT` nats to the
logit of every feminine pronoun token at every position, and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from debias.config import (AuditConfig, AuditReleaseConfig, CrowsPairsConfig, EvalConfig, EvaluateModelsConfig,
                           LambadaConfig, WinoBiasConfig, model_specs)
from debias.errors import UserError
from debias.evaluate.manipulation import DEFAULT_TEMPLATES, fill
from debias.model import GPTNeoX, GPTNeoXConfig
from debias.model.checkpoint_source import (HubRevision, ResolvedRef, folder_identity, parse_model_ref,
                                            resolve_model_refs, trained_gelu)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIFT = 1.5  # nats added to every feminine pronoun's logit in the shifted model
FEMININE = {"she", "her", "hers", "herself"}
HIDDEN_UNIT = 0  # the hidden unit made constant (1.0) after the final LayerNorm in every model


# ---- tiny models in the Hugging Face format -------------------------------------------------------

@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """Small WinoBias and CrowS-Pairs files (the demo's probe writer) and a few LAMBADA-format passages."""
    from debias.demo.probes import write_crows_pairs, write_winobias

    root = tmp_path_factory.mktemp("probes")
    write_winobias(root / "winobias", seed=3, lines_per_file=6)
    crows = write_crows_pairs(root / "crows.csv", seed=4, frames_per_occupation=1)
    lambada = root / "lambada.jsonl"
    passages = [f"The {w} walked to the market and then the {w} bought some bread for the {w}"
                for w in ("baker", "nurse", "farmer", "teacher", "driver", "clerk", "doctor", "cook")]
    lambada.write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))
    return {"winobias": root / "winobias", "crows": crows, "lambada": lambada}


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory, probes):
    """A byte-level BPE learned from the probes and templates, pronouns as single tokens."""
    from debias.demo.tokenizer import train_tokenizer

    texts = [line.split(" ", 1)[-1] for path in sorted(probes["winobias"].glob("*.txt.*"))
             for line in path.read_text().splitlines()]
    texts += probes["crows"].read_text().splitlines() + probes["lambada"].read_text().splitlines()
    texts += [before + rest for template in DEFAULT_TEMPLATES for _, before, *forms in [fill(template)]
              for rest in forms]
    texts += ["He said she saw him and her; his and hers. He hurt himself, she hurt herself. "
              "Then He and She, His and Her, came.", "Her book fell.", "His book fell.", "He ran.", "She ran."] * 100
    return train_tokenizer(texts, vocab_size=700, out_path=tmp_path_factory.mktemp("tokenizer") / "tokenizer.json")


def feminine_ids(tokenizer_file: Path) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    return [i for i in range(tokenizer.get_vocab_size()) if tokenizer.decode([i]).strip().lower() in FEMININE]


def base_model(vocab_size: int) -> GPTNeoX:
    """A random tiny GPT-NeoX whose final LayerNorm outputs 1.0 on HIDDEN_UNIT, which the output
    layer ignores (a zero column): the place where the shifted model adds its constant."""
    torch.manual_seed(0)
    model = GPTNeoX(GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=4,
                                  intermediate_size=128, max_position_embeddings=256, gelu="exact"))
    with torch.no_grad():
        model.final_layer_norm.weight[HIDDEN_UNIT] = 0.0
        model.final_layer_norm.bias[HIDDEN_UNIT] = 1.0
        model.embed_out.weight[:, HIDDEN_UNIT] = 0.0
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer_file):
    """Folders: base; shifted (+SHIFT nats on every feminine pronoun logit); same_function (other
    bytes, same outputs: input-embedding rows of ids the tokenizer never produces); bare (the base
    without tokenizer.json)."""
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp("models")
    used = Tokenizer.from_file(str(tokenizer_file)).get_vocab_size()
    vocab = used + 20  # padded embedding rows, as in Pythia: never an input, never a target
    base = base_model(vocab)
    folders = {"base": base.save_pretrained(root / "base", tokenizer=tokenizer_file)}
    shifted = base_model(vocab)
    with torch.no_grad():
        shifted.embed_out.weight[feminine_ids(tokenizer_file), HIDDEN_UNIT] = SHIFT
    folders["shifted"] = shifted.save_pretrained(root / "shifted", tokenizer=tokenizer_file)
    same = base_model(vocab)
    with torch.no_grad():
        same.embed_in.weight[used:] += 1.0
    folders["same_function"] = same.save_pretrained(root / "same_function", tokenizer=tokenizer_file)
    folders["bare"] = base.save_pretrained(root / "bare")
    assert not (folders["bare"] / "tokenizer.json").exists()
    return folders


def test_the_shift_is_what_the_construction_says(models, tokenizer_file):
    """The shifted model's logits differ from the base's by SHIFT on feminine pronoun ids, 0 elsewhere."""
    ids = torch.tensor([[0, 5, 17, 42, 99, 3]])
    base, shifted = (GPTNeoX.from_pretrained(models[n], dtype=torch.float64) for n in ("base", "shifted"))
    with torch.no_grad():
        delta = shifted(ids) - base(ids)
    feminine = feminine_ids(tokenizer_file)
    assert len(feminine) >= 4  # she, her, hers, herself (with and without the leading space)
    assert torch.allclose(delta[..., feminine], torch.full_like(delta[..., feminine], SHIFT), atol=1e-9)
    others = [i for i in range(delta.shape[-1]) if i not in feminine]
    assert delta[..., others].abs().max() < 1e-9


# ---- the command line: two local folders -> report with paired tests -----------------------------

def eval_overrides(probes, cache_dir: Path) -> list[str]:
    return [f"eval.crows_pairs.path={probes['crows']}", "eval.crows_pairs.bias_type=null",
            f"eval.winobias.path={probes['winobias']}", f"eval.lambada.path={probes['lambada']}",
            "eval.check_pinned=false", "eval.device=cpu", "eval.dtype=float64", "eval.bootstrap_samples=400",
            f"cache_dir={cache_dir}", "threads=1"]


def run_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "pipelines/evaluate.py", *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env=environment, timeout=600)


@pytest.fixture(scope="module")
def models_run(models, probes, tokenizer_file, tmp_path_factory):
    """One run of the command line over base (the reference), shifted and the bare folder given
    the run's `tokenizer` setting, with a per-model activation."""
    root = tmp_path_factory.mktemp("run")
    run_dir = root / "run"
    spec = (f"models={{base:{models['base']},shifted:{models['shifted']},"
            f"bare:{{ref:{models['bare']},gelu:tanh}}}}")
    result = run_cli([spec, f"tokenizer={tokenizer_file}", f"hydra.run.dir={run_dir}",
                      *eval_overrides(probes, root / "cache")])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result, root / "cache"


def test_two_local_folders_give_a_report_with_paired_tests(models_run, models):
    run_dir, result, _ = models_run
    for name in ("report.json", "report.md", "report.html", "config.yaml", "plots/manipulation_check.png"):
        assert (run_dir / name).is_file(), name
    report = json.loads((run_dir / "report.json").read_text())
    assert report["run"]["kind"] == "models" and report["run"]["reference"] == "base"
    assert list(report["arms"]) == ["bare", "base", "shifted"]  # report.json sorts keys; the run keeps the order
    assert report["run"]["models"] == ["base", "shifted", "bare"]
    assert set(report["comparisons"]) == {"shifted_vs_base", "bare_vs_base"}
    assert report["primary_comparison"] == "shifted_vs_base"
    assert "training" not in report and "rewrite" not in report
    for arm in report["arms"].values():
        assert {"key", "model", "metrics", "identity", "gelu", "gelu_source"} <= set(arm)
        for section in ("crows_pairs", "winobias", "lambada", "manipulation"):
            assert section in arm["metrics"], section
    assert report["arms"]["base"]["model"] == str(models["base"])
    assert (report["arms"]["base"]["gelu"], report["arms"]["base"]["gelu_source"]) == (
        "exact", "the folder's config.json (hidden_act=gelu)")
    assert (report["arms"]["bare"]["gelu"], report["arms"]["bare"]["gelu_source"]) == ("tanh", "models.bare.gelu")
    assert report["arms"]["bare"]["metrics"]["model"]["gelu"] == "tanh"  # what the evaluation really ran
    # Every headline role is in each comparison: association, blanket shift, LM quality, manipulation.
    roles = {r["headline"] for section in report["comparisons"]["shifted_vs_base"].values() for r in section.values()}
    assert {"association", "blanket shift", "LM quality", "manipulation"} <= roles
    # The terminal gets the manipulation check first.
    lines = [line for line in result.stdout.splitlines() if line.startswith("shifted - base:")]
    assert lines and "manipulation.feminine_preference" in lines[0]
    assert "Every paired test" in (run_dir / "report.md").read_text()


def test_the_manipulation_check_separates_the_shifted_model(models_run):
    report = json.loads((models_run[0] / "report.json").read_text())
    shifted = report["comparisons"]["shifted_vs_base"]["manipulation"]["feminine_preference"]
    low, high = shifted["diff_ci95"]
    assert 0 < low <= shifted["diff"] <= high  # the interval excludes 0, on the feminine side
    # Only the pronoun token itself moves by SHIFT; the later tokens' normalisers move it a little.
    assert shifted["diff"] == pytest.approx(SHIFT, abs=0.3)
    assert shifted["p"] < 0.01
    for benchmark in ("winobias", "crows_pairs"):  # a blanket shift by construction, no association
        effects = report["comparisons"]["shifted_vs_base"][benchmark]
        assert effects["blanket_shift"]["diff_ci95"][0] > 0, benchmark
        assert effects["blanket_shift"]["diff"] == pytest.approx(SHIFT, abs=0.3), benchmark
        assert abs(effects["association"]["diff"]) < 0.05, benchmark


def test_a_model_with_the_same_outputs_is_not_separated(models_run, models, probes, tmp_path):
    """Different bytes, the same function: evaluated on its own (its content differs; the base
    comes from the command line run's cache) and the manipulation check finds nothing: the pair the
    audit expects if a treatment did nothing."""
    from debias import stages

    cache_dir = models_run[2]
    before = eval_entries(cache_dir)
    config = EvaluateModelsConfig(models={"base": str(models["base"]), "same": str(models["same_function"])},
                                  eval=probe_eval(probes, bootstrap_samples=400), cache_dir=str(cache_dir))
    stages.evaluate_models(config, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["arms"]["same"]["key"] != report["arms"]["base"]["key"]
    effect = report["comparisons"]["same_vs_base"]["manipulation"]["feminine_preference"]
    low, high = effect["diff_ci95"]
    assert low <= 0 <= high and abs(effect["diff"]) < 1e-9 and effect["p"] == 1.0
    assert len(eval_entries(cache_dir)) == len(before) + 1  # only the new model was evaluated


def eval_entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in (cache_dir / "eval").iterdir() if p.is_dir())


def probe_eval(probes, bootstrap_samples: int = 200) -> EvalConfig:
    """The probes' settings; with bootstrap_samples=400 exactly what eval_overrides gives the command line."""
    return EvalConfig(device="cpu", dtype="float64", bootstrap_samples=bootstrap_samples, check_pinned=False,
                      crows_pairs=CrowsPairsConfig(path=str(probes["crows"]), bias_type=None),
                      winobias=WinoBiasConfig(path=str(probes["winobias"])),
                      lambada=LambadaConfig(path=str(probes["lambada"])))


# ---- the cache: one evaluation per model content ----------------------------------------------------

def test_an_evaluation_is_keyed_by_content_not_path(models_run, models, probes, tmp_path):
    """A byte-identical copy elsewhere is served from the run's cache; changing a weight in place is not."""
    from debias import stages

    _, _, cache_dir = models_run
    entries = eval_entries(cache_dir)
    assert len(entries) >= 3  # the command line run's three models (base, shifted, bare)
    copy = shutil.copytree(models["base"], tmp_path / "elsewhere" / "base_copy")
    config = EvaluateModelsConfig(models=[str(copy)], eval=probe_eval(probes, bootstrap_samples=400),
                                  cache_dir=str(cache_dir))
    stages.evaluate_models(config, tmp_path / "run")
    assert eval_entries(cache_dir) == entries  # nothing new was evaluated
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["comparisons"] == {} and report["primary_comparison"] is None  # one model: no comparisons
    assert report["arms"]["base_copy"]["metrics"]["model"]["folder"] == str(copy)

    tokenizer = copy / "tokenizer.json"
    before = folder_identity(ResolvedRef(copy), tokenizer)
    assert before == folder_identity(ResolvedRef(models["base"]), models["base"] / "tokenizer.json")
    from safetensors.torch import load_file, save_file

    weights = load_file(copy / "model.safetensors")
    name = next(k for k in weights if "dense_h_to_4h.weight" in k)
    weights[name][0, 0] += 1.0
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert folder_identity(ResolvedRef(copy), tokenizer) != before


# ---- hub revisions through the Hugging Face cache ---------------------------------------------------

def fake_hub_snapshot(hub_cache: Path, repo: str, revision: str, source: Path) -> Path:
    """`source`'s files as huggingface_hub caches a revision: refs/<revision> -> snapshots/<commit>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = hub_cache / f"models--{repo.replace('/', '--')}"
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / revision).write_text(commit)
    snapshot = repo_cache / "snapshots" / commit
    shutil.copytree(source, snapshot)
    return snapshot


def test_a_cached_hub_revision_resolves_offline_with_its_commit(models, tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = fake_hub_snapshot(tmp_path, "EleutherAI/pythia-tiny-deduped", "step143000", models["base"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    [local, hub] = resolve_model_refs([("models.a", str(models["base"])),
                                       ("models.b", "EleutherAI/pythia-tiny-deduped@step143000")])
    assert local.folder == models["base"] and local.hub is None
    assert hub.folder == snapshot and hub.commit == snapshot.name
    assert hub.hub == HubRevision("EleutherAI/pythia-tiny-deduped", "step143000")
    identity = folder_identity(hub, snapshot / "tokenizer.json")
    assert identity == {"hub": "EleutherAI/pythia-tiny-deduped", "revision": "step143000", "commit": snapshot.name,
                        "tokenizer": "the revision's own"}
    assert trained_gelu(hub.folder, hub.hub)[0] == "tanh"  # Pythia trained with tanh; its config.json says exact
    assert trained_gelu(models["base"], None)[0] == "exact"


def test_offline_hub_names_fail_in_one_line_naming_the_download(tmp_path):
    empty_home = tmp_path / "hf-home"
    empty_home.mkdir()
    run_dir = tmp_path / "run"
    result = run_cli(["models={base:EleutherAI/pythia-70m-deduped@step143000,"
                      "intervention:EleutherAI/pythia-intervention-70m-deduped@step143000}",
                      f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}",
                      "eval.crows_pairs.enabled=false", "eval.winobias.enabled=false", "eval.lambada.enabled=false"],
                     env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(empty_home)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: 2 model revisions are not in the Hugging Face cache and the hub is unreachable")
    assert "hf download EleutherAI/pythia-70m-deduped --revision step143000" in line
    assert "hf download EleutherAI/pythia-intervention-70m-deduped --revision step143000" in line
    assert not run_dir.exists()


def test_one_missing_revision_is_named_with_its_command(models, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError) as err:
        resolve_model_refs([("models.base", str(models["base"])),
                            ("models.intervention", "EleutherAI/pythia-intervention-70m-deduped@step143000")])
    assert str(err.value).startswith(
        "EleutherAI/pythia-intervention-70m-deduped@step143000: not in the Hugging Face cache and the hub is "
        "unreachable; download it where there is network: hf download EleutherAI/pythia-intervention-70m-deduped "
        "--revision step143000")


# ---- bad references: one line each ------------------------------------------------------------------

def test_bad_references_are_refused_in_one_line(models, probes, tmp_path):
    from debias import stages

    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ({"a": str(models["base"]), "b": str(tmp_path / "missing")}, "models.b=", "no such folder"),
        ({"a": str(models["base"]), "b": "EleutherAI/pythia-70m-deduped@"}, "models.b=", "write OWNER/NAME@REVISION"),
        ({"a": str(models["base"]), "b": "pythia@step1"}, "models.b=", "write OWNER/NAME@REVISION"),
        ({"a": str(models["base"]), "b": str(empty)}, "models.b:", "holds no config.json"),
        ({"a": str(models["base"]), "b": str(models["bare"])}, "models.b:", "tokenizer=PATH/tokenizer.json"),
        ([str(models["base"]), str(models["base"])], "models:", "two models are named 'base'"),
        ({"a": {"ref": str(models["base"]), "gelu": "fast"}}, "models.a.gelu=", "not one of tanh, exact"),
        ({"a": {"ref": str(models["base"]), "tokeniser": "x"}}, "models.a.tokeniser", "did you mean tokenizer?"),
        ({"a": {"ref": str(models["base"]), "reference": "a"}}, "models.a.reference=a", "not another model"),
        ({"a_vs_b": str(models["base"])}, "models.a_vs_b", "not usable as a report label"),
        ({}, "models:", "no models given"),
    ]
    for models_setting, where, what in cases:
        with pytest.raises(UserError) as err:
            config = EvaluateModelsConfig(models=models_setting, eval=probe_eval(probes),
                                          cache_dir=str(tmp_path / "cache"))
            stages.resolve_named_models(config)
        message = str(err.value)
        assert message.startswith(where) and what in message and "\n" not in message, (models_setting, message)
    with pytest.raises(UserError, match="tokenizer: .*tokenizer file not found"):
        stages.resolve_named_models(EvaluateModelsConfig(models=[str(models["bare"])], tokenizer=str(tmp_path / "t.json"),
                                                         eval=probe_eval(probes)))
    with pytest.raises(UserError, match="^models and audit: both set"):
        EvaluateModelsConfig(models=[str(models["base"])], audit=AuditConfig(releases=[]))


def test_parse_model_ref_forms(models):
    assert parse_model_ref(str(models["base"]), "m") == models["base"]
    assert parse_model_ref("EleutherAI/pythia-1.4b-deduped@step143000", "m") == HubRevision(
        "EleutherAI/pythia-1.4b-deduped", "step143000")
    assert parse_model_ref("EleutherAI/pythia-70m", "m") == HubRevision("EleutherAI/pythia-70m", "main")
    with pytest.raises(UserError, match="step 143500 is not a published checkpoint"):
        resolve_model_refs([("m", "EleutherAI/pythia-70m-deduped@step143500")])
    names = [s.name for s in model_specs(["EleutherAI/pythia-70m-deduped@step143000", str(models["base"])])]
    assert names == ["pythia-70m-deduped@step143000", "base"]


def test_bad_input_on_the_command_line_exits_2_and_leaves_no_run_folder(models, probes, tmp_path):
    cases = [
        ([f"models={{a:{models['base']},b:{models['bare']}}}", *eval_overrides(probes, tmp_path / "cache")],
         "error: models.b:", "tokenizer.json"),
        ([f"models={{a:{models['base']}}}", *eval_overrides(probes, tmp_path / "cache"),
          f"eval.winobias.path={tmp_path / 'no-winobias'}"],
         f"error: eval.winobias.path={tmp_path / 'no-winobias'}: no such file or folder", "DEBIAS_SHARED_DATA"),
    ]
    for args, start, contains in cases:
        run_dir = tmp_path / "run"
        result = run_cli([*args, f"hydra.run.dir={run_dir}"])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        [line] = [line for line in result.stderr.splitlines() if line.strip()]
        assert line.startswith(start) and contains in line, line
        assert not run_dir.exists()


# ---- the audit of the released models ---------------------------------------------------------------

def test_audit_plan_names_every_model_and_revision_without_downloading(tmp_path):
    empty_home = tmp_path / "hf-home"
    empty_home.mkdir()
    run_dir = tmp_path / "run"
    result = run_cli(["audit=released", "plan=true", f"hydra.run.dir={run_dir}"],
                     env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(empty_home)})
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for size in ("70m", "410m", "1.4b", "6.9b"):
        assert f"EleutherAI/pythia-intervention-{size}-deduped@step143000" in out
        assert f"EleutherAI/pythia-{size}-deduped@step143000" in out
    assert "EleutherAI/pythia-intervention-long-1.4b-deduped@step143000" in out
    assert out.startswith("plan: 9 models, 5 paired comparisons")  # the 1.4b baseline serves both 1.4b runs
    comparisons = [line.split()[1] for line in out.splitlines() if line.strip().startswith("comparison ")]
    assert comparisons[0] == "pythia-intervention-70m-deduped@step143000_vs_pythia-70m-deduped@step143000"
    assert "pythia-intervention-long-1.4b-deduped@step143000_vs_pythia-1.4b-deduped@step143000" in comparisons
    assert "hf download EleutherAI/pythia-intervention-6.9b-deduped --revision step143000" in out
    assert not run_dir.exists() and not any(empty_home.rglob("*.json"))  # nothing written, nothing fetched


def test_audit_revisions_window_covers_every_checkpoint_of_each_window():
    from hydra import compose, initialize_config_dir

    from debias.config import register_configs, to_config

    register_configs()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["audit=released", "audit.revisions=window",
                                                          "audit.only=[70m,long-1.4b]"])
    config = to_config(cfg, EvaluateModelsConfig)
    specs = config.model_specs()
    intervention = [s for s in specs if "intervention" in s.name]
    long_steps = [int(s.ref.rsplit("step", 1)[1]) for s in intervention if "long" in s.ref]
    short_steps = [int(s.ref.rsplit("step", 1)[1]) for s in intervention if "70m" in s.ref]
    assert long_steps == list(range(114000, 143001, 1000)) and short_steps == list(range(134000, 143001, 1000))
    for spec in intervention:  # each against the baseline at its own revision, with the baseline's tokenizer
        step = spec.ref.rsplit("@", 1)[1]
        assert spec.reference.endswith(f"@{step}") and spec.tokenizer == spec.reference
    explicit = AuditConfig(releases=[AuditReleaseConfig("70m", "EleutherAI/pythia-intervention-70m-deduped",
                                                        "EleutherAI/pythia-70m-deduped", 133000)],
                           revisions=[143000, 138000])
    assert [s.name for s in explicit.model_specs()] == [
        "pythia-70m-deduped@step138000", "pythia-intervention-70m-deduped@step138000",
        "pythia-70m-deduped@step143000", "pythia-intervention-70m-deduped@step143000"]
    with pytest.raises(UserError, match="audit.revisions='every': not one of final, window"):
        AuditConfig(revisions="every")


# ---- make compare reads these reports beside pipeline runs ------------------------------------------

def test_compare_accepts_a_models_report_beside_a_pipeline_run(models_run, tmp_path):
    from debias.report import compare_runs, write_run_report

    models_dir = models_run[0]
    report = json.loads((models_dir / "report.json").read_text())
    # A pipeline run's report on the same models: baseline/control/treatment arms, treatment_vs_control.
    pipeline = {"run": {"direction": "m2f", "ratio": 0.07, "start_step": 930, "end_step": 1000},
                "model": {"name": "pythia-demo"}, "data": {"checksum": "demo"},
                "arms": {"baseline": report["arms"]["base"], "control": report["arms"]["bare"],
                         "treatment": report["arms"]["shifted"]},
                "comparisons": {"treatment_vs_control": report["comparisons"]["shifted_vs_base"]}}
    write_run_report(tmp_path / "pipeline_run", pipeline)
    markdown = compare_runs([models_dir, tmp_path / "pipeline_run"], tmp_path / "comparison")
    text = markdown.read_text()
    assert "shifted" in text and "treatment" in text and "Runs: 2" in text
    assert "models (reference base)" in text  # the named-model run is its own group, labelled by its reference
