"""Our batched scorer and metrics against a plain transformers forward pass, one text at a time.

A tiny GPT-NeoX with random weights is made and saved by transformers (the format every Pythia
checkpoint has) with the real GPT-NeoX-20B tokenizer; both sides run it in float64 so that the
comparison can be held to 1e-6 honestly (in float32 the summed log-probabilities of a sentence
already differ by ~1e-5 between two correct implementations that batch differently).
"""

from __future__ import annotations

import math
import random
import shutil

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from debias.evaluate import (  # noqa: E402
    Request, Scorer, evaluate_crows_pairs, evaluate_lambada, load_crows_pairs, load_lambada, load_model,
)

TOL = 1e-6
LAMBADA_PASSAGES = 60  # a prefix of the 5,153 passages keeps the reference loop to seconds


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, neox_tokenizer_path):
    """transformers GPTNeoXForCausalLM, 2 layers of width 32, saved with the real tokenizer."""
    config = transformers.GPTNeoXConfig(
        vocab_size=50304, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=2048, rotary_pct=0.25, hidden_act="gelu",
        use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(config)
    with torch.no_grad():  # random init is nearly uniform over 50k ids; sharpen it so choices differ
        model.get_output_embeddings().weight.mul_(40.0)
    folder = tmp_path_factory.mktemp("tiny-neox")
    model.save_pretrained(folder)
    shutil.copyfile(neox_tokenizer_path, folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def reference(tiny_folder):
    """(transformers model in float64, its fast tokenizer): the straightforward reference."""
    model = transformers.GPTNeoXForCausalLM.from_pretrained(tiny_folder, dtype=torch.float64).eval()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tiny_folder / "tokenizer.json"))
    return model, tokenizer


@pytest.fixture(scope="module")
def scorer(tiny_folder):
    model, tokenizer, device = load_model(tiny_folder, device="cpu", dtype="float64")
    return Scorer(model, tokenizer, batch_size=8, device=device, progress=False)


@torch.no_grad()
def reference_logprob(model, ids: list[int], first_target: int) -> tuple[float, bool]:
    """Sum of log P(ids[i] | ids[:i]) for i >= first_target, and whether each is the argmax."""
    logits = model(torch.tensor([ids]), use_cache=False).logits[0]
    logprobs = torch.log_softmax(logits, dim=-1)
    total, greedy = 0.0, True
    for i in range(first_target, len(ids)):
        total += float(logprobs[i - 1, ids[i]])
        greedy &= int(logits[i - 1].argmax()) == ids[i]
    return total, greedy


@pytest.mark.slow
@pytest.mark.shared_data
def test_crows_pairs_gender_matches_reference(scorer, reference, shared_data):
    model, tokenizer = reference
    data = load_crows_pairs(shared_data / "crows_pairs/crows_pairs_anonymized.csv", "gender")
    metrics, items = evaluate_crows_pairs(scorer, data)

    more_wins, abs_diffs = [], []
    for pair in data.pairs:  # lm-eval: empty context -> <|endoftext|> then the whole sentence
        ll = [reference_logprob(model, [0] + tokenizer.encode(s, add_special_tokens=False), 1)[0]
              for s in (pair.sent_more, pair.sent_less)]
        more_wins.append(float(ll[0] > ll[1]))
        abs_diffs.append(abs(ll[0] - ll[1]))
        assert items[pair.pair_id]["ll_diff"] == pytest.approx(ll[0] - ll[1], abs=TOL)

    assert metrics["n"] == 262
    assert metrics["pct_stereotype"] == pytest.approx(np.mean(more_wins), abs=TOL)
    assert metrics["likelihood_diff"] == pytest.approx(np.mean(abs_diffs), abs=TOL)
    assert 0 < metrics["pct_stereotype"] < 1  # the model does take sides, so the check can fail


@pytest.mark.slow
@pytest.mark.shared_data
def test_lambada_matches_reference(scorer, reference, shared_data):
    model, tokenizer = reference
    data = load_lambada(shared_data / "lambada/lambada_test.jsonl", limit=LAMBADA_PASSAGES)
    metrics, _ = evaluate_lambada(scorer, data)

    lls, hits = [], []
    for passage in data.passages:  # lm-eval: encode context+target together, split at the context
        whole = tokenizer.encode(passage.context + passage.target, add_special_tokens=False)
        n_context = len(tokenizer.encode(passage.context, add_special_tokens=False))
        ll, greedy = reference_logprob(model, whole, n_context)
        lls.append(ll)
        hits.append(greedy)

    assert metrics["n"] == LAMBADA_PASSAGES
    assert metrics["perplexity"] == pytest.approx(math.exp(-np.mean(lls)), rel=TOL)
    # A random model gets no last word right; greedy flags are exercised by the scorer test below.
    assert metrics["accuracy"] == pytest.approx(np.mean(hits), abs=TOL)


def test_scorer_batching_sharing_and_duplicates_change_nothing(scorer, reference):
    """Requests that share prefixes, repeat, or are prefixes of each other, in any batch size,
    score exactly as one plain forward pass per request."""
    model, _ = reference
    rng = random.Random(0)
    base = [rng.randrange(2, 50277) for _ in range(40)]
    requests = []
    for _ in range(30):
        cut = rng.randrange(1, 30)
        context = tuple(base[:cut])
        continuation = tuple(rng.choice([base[cut:cut + rng.randrange(1, 6)], [rng.randrange(2, 50277)]]))
        requests.append(Request(context, continuation))
    requests += requests[:5]  # exact duplicates
    for cut in (3, 11, 17):  # the model's own greedy continuations: greedy must come out True
        ids = list(base[:cut])
        with torch.no_grad():
            for _ in range(3):
                ids.append(int(model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
        requests.append(Request(tuple(ids[:cut]), tuple(ids[cut:])))
    expected = [reference_logprob(model, list(r.context + r.continuation), len(r.context)) for r in requests]
    for batch_size in (1, 3, 64):
        scorer.batch_size = batch_size
        got = scorer.score(requests)
        for score, (ll, greedy), request in zip(got, expected, requests):
            assert score.logprob == pytest.approx(ll, abs=TOL)
            assert score.greedy == greedy
            assert score.num_tokens == len(request.continuation)
    assert sum(s.greedy for s in got) >= 3
    scorer.batch_size = 8


def test_scorer_truncates_from_the_left_like_lm_eval(scorer, reference):
    model, _ = reference
    request = Request(tuple(range(100, 130)), (7, 8, 9))
    short = Scorer(scorer.model, scorer.tokenizer, max_length=10, progress=False)
    kept = list(request.context + request.continuation)[-11:]  # max_length inputs + the last label
    ll, _ = reference_logprob(model, kept, len(kept) - 3)
    assert short.score([request])[0].logprob == pytest.approx(ll, abs=TOL)
