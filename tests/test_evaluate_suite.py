"""evaluate_model end to end on a tiny GPT-NeoX: demo-format probes, held-out stream perplexity,
paired comparison of two models, the command line and the Hydra pipeline."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from debias.config import CrowsPairsConfig, EvalConfig, LambadaConfig, PerplexityConfig, WinoBiasConfig
from debias.evaluate import compare_items, evaluate_model
from debias.evaluate.__main__ import main as cli_main
from debias.evaluate.datafiles import ChecksumWarning
from debias.model import GPTNeoX, GPTNeoXConfig
from debias.stream import StreamWriter

PROJECT_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


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
    perplexity = (PerplexityConfig(enabled=True, stream=str(heldout[0]), rows=[1, 5], window=16)
                  if heldout is not None else PerplexityConfig())
    return EvalConfig(device="cpu", dtype="float64", batch_size=8, bootstrap_samples=200, check_pinned=False,
                      crows_pairs=CrowsPairsConfig(path=str(probes["crows"]), bias_type=None),
                      winobias=WinoBiasConfig(path=str(probes["winobias"])), lambada=LambadaConfig(enabled=False),
                      perplexity=perplexity, **extra)


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


def test_compare_items_between_two_models(evaluated):
    (_, items_a), (_, items_b) = evaluated
    comparison = compare_items(items_a, items_b, n_resamples=200)
    stereo = comparison["crows_pairs"]["stereotype"]
    a = np.array([v["stereotype"] for v in items_a["crows_pairs"].values()])
    b = np.array([items_b["crows_pairs"][k]["stereotype"] for k in items_a["crows_pairs"]])
    assert stereo["diff"] == pytest.approx(a.mean() - b.mean())
    assert stereo["mcnemar"]["only_a"] == int(np.sum((a == 1) & (b == 0)))
    assert set(comparison) == {"crows_pairs", "winobias", "perplexity", "manipulation"}
    same = compare_items(items_a, items_a, n_resamples=50)
    assert same["crows_pairs"]["ll_diff"]["diff"] == 0.0 and same["crows_pairs"]["stereotype"]["mcnemar"]["p"] == 1.0


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
        [sys.executable, "pipelines/evaluate.py", "eval=pythia", "data=pile-deduped",
         f"+model_folder={folders[0]}", f"eval.crows_pairs.path={probes['crows']}",
         "eval.crows_pairs.bias_type=null", f"eval.winobias.path={probes['winobias']}", "eval.check_pinned=false",
         "eval.lambada.enabled=false", "eval.bootstrap_samples=100", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["crows_pairs"]["n"] == 40 and report["config"]["model_folder"] == str(folders[0])
    assert "lambada" not in report and (run_dir / "items.json").is_file()


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
