"""evaluate_model end to end on a tiny GPT-NeoX: demo-format probes, held-out stream and text
perplexity, paired comparison of two models, blanket-shift invariance through a real model, the
fp32 output layer, non-finite guards, the command line (bad inputs included) and the Hydra pipeline."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from debias.config import (CrowsPairsConfig, EvalConfig, LambadaConfig, ManipulationConfig, PerplexityConfig,
                           WinoBiasConfig)
from debias.errors import UserError
from debias.evaluate import BENCHMARKS, Score, Scorer, compare_items, evaluate_model, evaluate_with_scorer, load_model
from debias.evaluate.__main__ import main as cli_main
from debias.evaluate.datafiles import ChecksumWarning
from debias.model import GPTNeoX, GPTNeoXConfig
from debias.stream import StreamWriter

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def tiny_model(seed: int) -> GPTNeoX:
    torch.manual_seed(seed)
    return GPTNeoX(GPTNeoXConfig(vocab_size=50304, hidden_size=32, num_layers=2, num_heads=4,
                                 intermediate_size=128, max_position_embeddings=64, gelu="exact"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, neox_tokenizer_path):
    root = tmp_path_factory.mktemp("models")
    return [tiny_model(seed).save_pretrained(root / f"m{seed}", tokenizer=neox_tokenizer_path) for seed in (0, 1)]


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """Small WinoBias and CrowS-Pairs files written by the demo suite's own probe generator."""
    from debias.demo.probes import write_crows_pairs, write_winobias

    root = tmp_path_factory.mktemp("probes")
    write_winobias(root / "winobias", seed=3, lines_per_file=6)
    csv = write_crows_pairs(root / "crows.csv", seed=4, frames_per_occupation=1)
    return {"winobias": root / "winobias", "crows": csv}


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    rows = np.random.default_rng(0).integers(2, 50277, size=(5, 41)).astype(np.uint16)
    prefix = tmp_path_factory.mktemp("stream") / "heldout"
    with StreamWriter(prefix, np.uint16) as writer:
        writer.append_rows(rows)
    return prefix, rows


def eval_cfg(probes, heldout=None, **extra):
    """The probes' EvalConfig; a section given as a dict (e.g. crows_pairs={"enabled": False}) is
    built from that dict alone."""
    perplexity = (PerplexityConfig(enabled=True, stream=str(heldout[0]), rows=[1, 5], window=16)
                  if heldout is not None else PerplexityConfig())
    sections = {"crows_pairs": CrowsPairsConfig(path=str(probes["crows"]), bias_type=None),
                "winobias": WinoBiasConfig(path=str(probes["winobias"])), "lambada": LambadaConfig(enabled=False),
                "perplexity": perplexity}
    classes = {"crows_pairs": CrowsPairsConfig, "winobias": WinoBiasConfig, "lambada": LambadaConfig,
               "perplexity": PerplexityConfig, "manipulation": ManipulationConfig}
    settings = {"device": "cpu", "dtype": "float64", "batch_size": 8, "bootstrap_samples": 200,
                "check_pinned": False, **sections}
    for key, value in extra.items():
        settings[key] = classes[key](**value) if key in classes and isinstance(value, dict) else value
    return EvalConfig(**settings)


@pytest.fixture(scope="module")
def evaluated(folders, probes, heldout):
    return [evaluate_model(folder, eval_cfg(probes, heldout), progress=False) for folder in folders]


def test_report_sections_follow_the_metric_convention(evaluated, probes):
    metrics, items = evaluated[0]
    assert set(metrics) == {"model", "crows_pairs", "winobias", "perplexity", "manipulation"}
    crows = metrics["crows_pairs"]
    for key in ("pct_stereotype", "pct_stereotype_ci95", "pct_stereotype_p", "likelihood_diff",
                "likelihood_diff_ci95", "n", "checksum", "dataset"):
        assert key in crows
    assert crows["n"] == len(items["crows_pairs"]) == 40  # one frame for each of 40 occupations
    low, high = crows["pct_stereotype_ci95"]
    assert low <= crows["pct_stereotype"] <= high
    assert crows["pct_stereotype"] == pytest.approx(np.mean([v["stereotype"] for v in items["crows_pairs"].values()]))

    for section in ("crows_pairs", "winobias"):  # the headline keys, each with an interval and p
        for name in ("association", "blanket_shift"):
            value, (low, high) = metrics[section][name], metrics[section][f"{name}_ci95"]
            assert low <= value <= high and 0 <= metrics[section][f"{name}_p"] <= 1
    # Every declared metric is in the report, and every compared field in the items.
    for bench, declaration in BENCHMARKS.items():
        if bench in metrics:
            for metric in declaration:
                assert metric.lookup(metrics[bench]) is not None, metric.key
                assert metric.name.rsplit(".", 1)[-1] in metric.lookup(metrics[bench]), metric.key
                if metric.item_field:
                    assert any(metric.item_field in row for row in items[bench].values()), metric.key
    assert metrics["model"]["dtype"] == {"weights": "float64", "body": "float64", "output_layer": "float64"}

    wino = metrics["winobias"]
    assert wino["n_pairs"] == len(items["winobias"]) == 6 * 4
    assert wino["misaligned"]["n"] == 0  # generated pairs differ only in the pronoun
    for kind in ("type1", "type2"):
        gap = wino["pronoun_choice"][kind]
        assert gap["gap"] == pytest.approx(gap["accuracy_pro"] - gap["accuracy_anti"])
        # Aligned pairs compare the same two sentences from both sides (see winobias.py).
        assert gap["gap"] == pytest.approx(2 * gap["accuracy_pro"] - 1)
        assert "gap_ci95" in wino["coreference"][kind] and "gap_p" in wino["coreference"][kind]
    assert {entry["stereotype"] for entry in wino["occupations"].values()} == {"male", "female"}

    manipulation = metrics["manipulation"]
    assert manipulation["n"] == manipulation["templates"] > 10
    json.dumps(metrics)  # the report section is plain JSON


def test_heldout_perplexity_matches_a_plain_forward_pass(evaluated, folders, heldout):
    metrics = evaluated[0][0]["perplexity"]
    model = GPTNeoX.from_pretrained(folders[0], dtype=torch.float64)
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for row in heldout[1][1:5].astype(np.int64):
            for start in range(0, len(row) - 1, 16):  # windows of 16 predicted tokens
                chunk = torch.tensor(row[start:start + 17])[None]
                logprobs = torch.log_softmax(model(chunk)[0, :-1], dim=-1)
                nll -= float(logprobs.gather(1, chunk[0, 1:, None]).sum())
                tokens += chunk.shape[1] - 1
    assert metrics["tokens"] == tokens == 4 * 40
    assert metrics["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-9)
    assert metrics["perplexity_ci95"][0] <= metrics["perplexity"] <= metrics["perplexity_ci95"][1]
    assert metrics["source"].startswith("stream rows 1..5 of ")


@pytest.mark.parametrize("kind", ["jsonl", "txt"])
def test_heldout_text_perplexity_packs_rows_like_the_stream(folders, probes, tmp_path, kind):
    """Text packed with the model's tokenizer into rows sharing one token, then scored as rows."""
    from debias.tokenizer import load_tokenizer

    paragraphs = [f"Paragraph {i}: the committee met on a Tuesday and talked about budgets for {i} hours."
                  for i in range(12)]
    path = tmp_path / f"heldout.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"body": p}) + "\n" for p in paragraphs))
    else:
        path.write_text("\n\n".join(paragraphs) + "\n")
    cfg = eval_cfg(probes, crows_pairs={"enabled": False}, winobias={"enabled": False},
                   manipulation={"enabled": False},
                   perplexity={"enabled": True, "text": str(path), "text_field": "body", "text_rows": 3,
                               "row_length": 17})
    metrics, items = evaluate_model(folders[0], cfg, progress=False)
    section = metrics["perplexity"]
    assert section["n"] == len(items["perplexity"]) == 3 and section["tokens"] == 3 * 16
    assert str(path) in section["source"] and "sha256" in section["source"]

    tokenizer = load_tokenizer(folders[0])
    eos = tokenizer.token_to_id("<|endoftext|>")
    ids = [t for p in paragraphs for t in tokenizer.encode(p, add_special_tokens=False).ids + [eos]]
    model = GPTNeoX.from_pretrained(folders[0], dtype=torch.float64)
    nll = 0.0
    with torch.no_grad():
        for row in range(3):  # rows of 17 tokens starting every 16: one shared token
            chunk = torch.tensor(ids[row * 16:row * 16 + 17])[None]
            logprobs = torch.log_softmax(model(chunk)[0, :-1], dim=-1)
            nll -= float(logprobs.gather(1, chunk[0, 1:, None]).sum())
    assert section["perplexity"] == pytest.approx(math.exp(nll / 48), rel=1e-9)


def test_association_through_a_real_model_ignores_a_blanket_shift(folders, probes):
    """The tiny model's own scores, and the same plus 3 nats on every sentence holding a feminine
    pronoun (the probes hold one pronoun each): association unchanged, blanket shift +3."""
    import re

    feminine = re.compile(r"\b(she|her|hers|herself)\b", re.IGNORECASE)

    class ShiftedScorer(Scorer):
        def score(self, requests, desc="scoring"):
            scores = super().score(requests, desc)
            return [Score(s.logprob + 3.0 * bool(feminine.search(self.tokenizer.decode(list(r.continuation)))),
                          s.num_tokens, s.greedy) if r.context == (self.prefix_id,) else s
                    for r, s in zip(requests, scores)]

    model, tokenizer, device = load_model(folders[0], "cpu", "float64")
    cfg = eval_cfg(probes, manipulation={"enabled": False})
    plain, _ = evaluate_with_scorer(Scorer(model, tokenizer, progress=False), cfg)
    shifted, _ = evaluate_with_scorer(ShiftedScorer(model, tokenizer, progress=False), cfg)
    for section in ("winobias", "crows_pairs"):
        assert shifted[section]["association"] == pytest.approx(plain[section]["association"], abs=1e-9)
        assert shifted[section]["blanket_shift"] == pytest.approx(plain[section]["blanket_shift"] + 3.0, abs=1e-9)
    assert shifted["crows_pairs"]["pct_stereotype"] != plain["crows_pairs"]["pct_stereotype"]
    assert shifted["crows_pairs"]["sent_more_feminine"]["pct_stereotype"] > plain["crows_pairs"]["sent_more_feminine"]["pct_stereotype"]


def test_output_layer_runs_in_float32_for_bfloat16_weights(folders):
    """bf16 weights: the body in bf16, then embed_out and log-softmax in fp32 (not bf16 logits)."""
    model, tokenizer, device = load_model(folders[0], "cpu", "bfloat16")
    scorer = Scorer(model, tokenizer, progress=False)
    assert scorer.precision == {"weights": "bfloat16", "body": "bfloat16", "output_layer": "float32"}
    request = scorer.sentence_request("The nurse said that she would be late.")
    ids = torch.tensor([request.context + request.continuation])
    with torch.no_grad():
        hidden = model.hidden_states(ids)[0, :-1]
        logits = hidden.float() @ model.embed_out.weight.float().T  # Pythia's embed_out has no bias
        expected = float(torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).sum())
        bf16 = float(torch.log_softmax(model(ids)[0, :-1].float(), -1).gather(1, ids[0, 1:, None]).sum())
    got = scorer.score([request])[0].logprob
    assert got == pytest.approx(expected, abs=1e-4)
    assert abs(bf16 - expected) > 1e-4  # bf16 logits would have differed: the check can fail


def test_a_nan_weight_stops_with_one_line_naming_benchmark_and_item(folders, probes, tmp_path):
    model, tokenizer, _ = load_model(folders[0], "cpu", "float32")
    with torch.no_grad():
        model.embed_out.weight[:, :].fill_(float("nan"))
    with pytest.raises(UserError) as err:
        evaluate_with_scorer(Scorer(model, tokenizer, progress=False), eval_cfg(probes, dtype=None))
    message = str(err.value)
    assert "\n" not in message and message.startswith("crows-pairs: ") and "non-finite" in message


def test_compare_items_between_two_models(evaluated):
    (metrics_a, items_a), (metrics_b, items_b) = evaluated
    comparison = compare_items(items_a, items_b, n_resamples=200)
    stereo = comparison["crows_pairs"]["pct_stereotype"]
    a = np.array([v["stereotype"] for v in items_a["crows_pairs"].values()])
    b = np.array([items_b["crows_pairs"][k]["stereotype"] for k in items_a["crows_pairs"]])
    assert stereo["diff"] == pytest.approx(a.mean() - b.mean())
    assert stereo["mcnemar"]["only_a"] == int(np.sum((a == 1) & (b == 0)))
    assert set(comparison) == {"crows_pairs", "winobias", "perplexity", "manipulation"}
    for section in ("crows_pairs", "winobias"):  # the paired statistic is the report's own metric
        for name in ("association", "blanket_shift"):
            assert comparison[section][name]["a"] == pytest.approx(metrics_a[section][name])
            assert comparison[section][name]["b"] == pytest.approx(metrics_b[section][name])
    assert comparison["perplexity"]["perplexity"]["a"] == pytest.approx(metrics_a["perplexity"]["perplexity"])
    same = compare_items(items_a, items_a, n_resamples=50)
    assert same["crows_pairs"]["likelihood_diff"]["diff"] == 0.0
    assert same["crows_pairs"]["pct_stereotype"]["mcnemar"]["p"] == 1.0


def test_command_line_prints_a_table_and_writes_json(folders, probes, tmp_path, capsys):
    out = tmp_path / "report.json"
    with pytest.warns(ChecksumWarning):  # the probes reuse the real file names: flagged, still scored
        cli_main(["--model", str(folders[0]), "--crows-pairs", str(probes["crows"]), "--bias-type", "",
                  "--winobias", str(probes["winobias"]), "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert "crows_pairs.pct_stereotype (n=40)" in printed and "winobias.stereotype_accuracy" in printed
    written = json.loads(out.read_text())
    assert written["metrics"]["crows_pairs"]["n"] == 40 and "items" in written


def test_command_line_bad_model_folder_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "debias.evaluate", "--model", str(tmp_path)],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "tokenizer.json" in result.stderr


def test_hydra_pipeline_writes_report(folders, probes, tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "pipelines/evaluate.py", "eval=pythia", f"models=[{folders[0]}]",
         f"eval.crows_pairs.path={probes['crows']}", "eval.crows_pairs.bias_type=null",
         f"eval.winobias.path={probes['winobias']}", "eval.check_pinned=false", "eval.lambada.enabled=false",
         "eval.perplexity.enabled=false", "eval.bootstrap_samples=100", f"cache_dir={tmp_path / 'cache'}",
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((run_dir / "report.json").read_text())
    arm = report["arms"][folders[0].name]  # one model: its report, no comparisons (tests/test_evaluate_models.py)
    assert arm["metrics"]["crows_pairs"]["n"] == 40 and arm["model"] == str(folders[0])
    assert "lambada" not in arm["metrics"] and report["comparisons"] == {}


def test_demo_eval_preset_leaves_paths_to_the_demo_suite():
    from hydra import compose, initialize_config_dir

    from debias.config import register_configs

    register_configs()  # the schema conf/ is composed against
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        demo = compose(config_name="config", overrides=["eval=demo"]).eval
        real = compose(config_name="config", overrides=["eval=pythia"]).eval
    assert demo.crows_pairs.path is None and demo.winobias.path is None and demo.perplexity.stream is None
    assert demo.lambada.enabled is False and demo.perplexity.enabled is True
    assert real.crows_pairs.path.endswith("crows_pairs/crows_pairs_anonymized.csv")
    assert real.lambada.enabled is True


def test_nan_weights_on_the_command_line(folders, probes, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for path in folders[0].iterdir():
        broken.joinpath(path.name).write_bytes(path.read_bytes())
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "dense_h_to_4h.weight" in k)
    weights[name][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "r.json"
    result = subprocess.run([sys.executable, "-m", "debias.evaluate", "--model", str(broken), "--no-progress",
                             "--crows-pairs", str(probes["crows"]), "--bias-type", "", "--out", str(out)],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "crows-pairs: the model gave a non-finite log-probability" in error[0]
    assert not out.exists()
