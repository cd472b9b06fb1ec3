"""The embedded demo: corpus, tokenizer, probes and a tiny build of the whole suite."""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from debias.config import (ArchitectureConfig, DemoConfig, DemoProbesConfig, DemoTokenizerConfig, EvalConfig,
                           GeometryConfig, ModelConfig, PerplexityConfig)
from debias.demo.build import DemoSuite, build_demo_suite, checkpoint_steps, suite_params
from debias.demo.corpus import (COLLISION_WORDS, FEMALE_PERCENT, FEMALE_STEREOTYPED, MALE_STEREOTYPED,
                                CorpusGenerator)
from debias.demo.probes import CROWS_PAIRS_COLUMNS, write_crows_pairs, write_winobias
from debias.demo.tokenizer import REQUIRED_SINGLE_TOKENS, train_tokenizer
from debias.errors import UserError

MODEL = ModelConfig(name="tiny", architecture=ArchitectureConfig(
    vocab_size=2048, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=128, max_position_embeddings=32),
    peak_lr=5e-3)


@pytest.fixture(scope="module")
def corpus() -> list:
    return list(CorpusGenerator(seed=7).documents(3000))


@pytest.fixture(scope="module")
def corpus_text(corpus) -> str:
    return "\n\n".join(d.text for d in corpus)


# ---- corpus ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", [
    # subject, object, determiner, independent, reflexive; both genders
    r"\bhe\b", r"\bshe\b", r"\bhim\b", r"\bhimself\b", r"\bherself\b",
    r"\bhis (?:coat|bag|shift|own|wallet)\b", r"\bher (?:coat|bag|shift|own|wallet)\b",  # determiners
    r"\bgave (?:him|her) a\b", r"\bwith (?:him|her)\b",                                  # objects
    r"\bwas his\.", r"\bwas hers\.", r"\bof his\b", r"\bof hers\b", r"\bHers was\b",      # independent
    r"\bhe's\b", r"\bshe's\b", r"\bhe'd\b", r"\bshe'd\b", r"\bhe'll\b", r"\bshe'll\b",   # contractions
    r"(?:^|[.!?] |\n)He\b", r"(?:^|[.!?] |\n)She\b", r"(?:^|[.!?] |\n)His\b", r"(?:^|[.!?] |\n)Her\b",
    r"\"He\b", r"\"She\b", r",\" (?:he|she) said\.",                                  # quotes
    r"\bSAYS HE\b", r"\bSAYS SHE\b", r"\bHIS (?:WORK|PROMISE)\b", r"\bHER (?:WORK|PROMISE)\b",
    r"\bWITH HIM\b", r"\bHIMSELF\b", r"\bHERSELF\b",                                      # ALL-CAPS
    r"\bHe et al\.", r"\bliquid He\b", r"\bHIS software\b", r"/he/", r"\bhe_normal\b",   # not pronouns
])
def test_corpus_has_every_pronoun_form(corpus_text, pattern):
    assert re.search(pattern, corpus_text, flags=re.MULTILINE), pattern


def test_corpus_has_collision_words_and_varied_documents(corpus, corpus_text):
    missing = [w for w in COLLISION_WORDS if not re.search(rf"\b{w}", corpus_text, re.IGNORECASE)]
    assert not missing
    for headline in ("HISPANIC", "HEBREW", "SHEPHERD", "HEIR"):
        assert headline in corpus_text
    lengths = [len(d.text) for d in corpus]
    assert min(lengths) < 200 and max(lengths) > 2000  # short notes and long profiles
    assert len(set(d.text for d in corpus)) > 0.99 * len(corpus)
    assert CorpusGenerator(seed=7).document().text == corpus[0].text  # seeded
    assert CorpusGenerator(seed=8).document().text != corpus[0].text


def test_occupations_are_the_winobias_lists(shared_data):
    real = {g: set((shared_data / "winobias" / f"{g}_occupations.txt").read_text().split("\n"))
            for g in ("male", "female")}
    assert set(MALE_STEREOTYPED) == real["male"] and set(FEMALE_STEREOTYPED) == real["female"]


def test_planted_skew_matches_the_table(corpus):
    """Every planted (occupation, gender) event, counted from the generator's record."""
    counts = Counter((m.occupation, m.gender) for d in corpus for m in d.mentions)
    for occupation, percent in FEMALE_PERCENT.items():
        n = counts[occupation, "female"] + counts[occupation, "male"]
        p = percent / 100
        assert n > 300, occupation
        assert abs(counts[occupation, "female"] / n - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 0.005, occupation


def test_skew_is_visible_in_the_text(corpus_text):
    """Independently of the generator's record: in sentences naming exactly one occupation, the
    share of feminine pronouns follows the planted table (male-stereotyped low, female high)."""
    occupations = sorted(FEMALE_PERCENT, key=len, reverse=True)
    finder = re.compile(r"\b(" + "|".join(map(re.escape, occupations)) + r")\b", re.IGNORECASE)
    female, male = re.compile(r"\b(she|her|hers|herself)\b", re.I), re.compile(r"\b(he|him|his|himself)\b", re.I)
    tally = {o: [0, 0] for o in FEMALE_PERCENT}
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", corpus_text):
        found = {m.group(1).lower() for m in finder.finditer(sentence)}
        if len(found) != 1 or "et al" in sentence:
            continue
        occupation = next(o for o in FEMALE_PERCENT if o.lower() in found)
        f, m = len(female.findall(sentence)), len(male.findall(sentence))
        if f and m:
            continue
        tally[occupation][0 if f else 1] += bool(f or m)
    shares = {o: f / (f + m) for o, (f, m) in tally.items() if f + m >= 100}
    assert len(shares) == len(FEMALE_PERCENT)
    planted = np.array([FEMALE_PERCENT[o] / 100 for o in shares])
    observed = np.array(list(shares.values()))
    assert np.abs(observed - planted).max() < 0.12
    assert np.corrcoef(observed, planted)[0, 1] > 0.97


# ---- tokenizer ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer_path(corpus, tmp_path_factory) -> Path:
    return train_tokenizer([d.text for d in corpus[:1500]], 2000, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_tokenizer_is_built_like_gpt_neox(tokenizer_path, neox_tokenizer_path):
    ours, neox = json.loads(tokenizer_path.read_text()), json.loads(neox_tokenizer_path.read_text())
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):  # newer keys aside
        assert {key: ours[part][key] for key in neox[part]} == neox[part], part
    assert [(t["id"], t["content"]) for t in ours["added_tokens"]] == [(0, "<|endoftext|>"), (1, "<|padding|>")]


def test_tokenizer_makes_pronouns_single_tokens(tokenizer_path):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    assert 1900 <= tokenizer.get_vocab_size() <= 2000
    for form in REQUIRED_SINGLE_TOKENS:
        assert len(tokenizer.encode(form).ids) == 1, form
    text = "Heather said he'd bring HIS own map, and the Hispanic heir's coat was hers."
    assert tokenizer.decode(tokenizer.encode(text).ids) == text  # byte-level: lossless


def test_tokenizer_refuses_a_vocabulary_too_small_for_pronouns(corpus, tmp_path):
    with pytest.raises(UserError, match="not single tokens|too small"):
        train_tokenizer([d.text for d in corpus[:50]], 300, tmp_path / "tokenizer.json")
    assert not (tmp_path / "tokenizer.json").exists()


# ---- probes ---------------------------------------------------------------------------------------

def test_winobias_probes_parse_with_the_real_loader(tmp_path):
    from debias.evaluate.winobias import load_winobias

    write_winobias(tmp_path, seed=3, lines_per_file=30)
    with pytest.warns(UserWarning):  # our files are not the pinned release: recorded, not refused
        data = load_winobias(tmp_path)
    assert len(data.pairs) == 2 * 2 * 30 and not data.misaligned
    assert data.stereotypes_source == "occupation files"
    assert {o.lower() for o, g in data.stereotypes.items() if g == "female"} == {o.lower() for o in FEMALE_STEREOTYPED}
    for pair in data.pairs:  # pro uses the referent's stereotyped pronoun, anti the other one
        expected = "female" if pair.pro.referent in {o.lower() for o in FEMALE_STEREOTYPED} else "male"
        assert data.stereotypes[pair.pro.referent] == expected
        assert (pair.pro.pronoun in ("she", "her")) == (expected == "female")


def test_winobias_files_have_the_real_layout(tmp_path, shared_data):
    write_winobias(tmp_path, seed=3, lines_per_file=30)
    real = shared_data / "winobias"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in real.iterdir() if p.name != "LICENSE")
    line = re.compile(r"^(\d+) (.*\[[^\]]+\].*\[(he|she|him|her|his|hers)\].*)$")
    for path in tmp_path.glob("*_stereotyped_*"):
        lines = path.read_text().splitlines()
        assert [int(line.match(text).group(1)) for text in lines] == list(range(1, 31))
    assert line.match(next(iter((real / "pro_stereotyped_type1.txt.dev").read_text().splitlines())))
    for name in ("male_occupations.txt", "female_occupations.txt"):  # no final newline, like the release
        assert not (tmp_path / name).read_text().endswith("\n")
        assert not (real / name).read_text().endswith("\n")


def test_crows_pairs_probes_match_the_real_file(tmp_path, shared_data):
    from debias.evaluate.crows_pairs import load_crows_pairs

    path = write_crows_pairs(tmp_path / "crows.csv", seed=4, frames_per_occupation=3)
    real_header = (shared_data / "crows_pairs" / "crows_pairs_anonymized.csv").read_text().splitlines()[0]
    assert path.read_text().splitlines()[0] == real_header == ",".join(CROWS_PAIRS_COLUMNS)
    data = load_crows_pairs(path)
    assert len(data.pairs) == 3 * len(FEMALE_PERCENT)
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        female_more = bool(re.search(r"\b(she|her|hers|herself)\b", row["sent_more"], re.I))
        assert row["stereo_antistereo"] == ("stereo" if female_more else "antistereo")
        named = [o for o in FEMALE_PERCENT if re.search(rf"\bthe {o}\b", row["sent_more"], re.I)]
        assert len(named) == 1, row["sent_more"]
        assert (FEMALE_PERCENT[named[0]] > 50) == female_more  # sent_more follows the planted skew
    assert Counter(row["stereo_antistereo"] for row in rows) == {"stereo": 60, "antistereo": 60}


def test_no_probe_is_in_the_corpus_verbatim(corpus_text, tmp_path):
    from debias.evaluate.crows_pairs import load_crows_pairs
    from debias.evaluate.winobias import load_winobias

    write_winobias(tmp_path / "wb", seed=3, lines_per_file=100)
    write_crows_pairs(tmp_path / "crows.csv", seed=4, frames_per_occupation=8)
    with pytest.warns(UserWarning):  # the demo's WinoBias files are not the pinned release
        wino = load_winobias(tmp_path / "wb")
    crows = load_crows_pairs(tmp_path / "crows.csv")
    probes = {s.text for p in wino.pairs for s in (p.pro, p.anti)}
    probes |= {s for p in crows.pairs for s in (p.sent_more, p.sent_less)}
    sentences = set(re.split(r"(?<=[.!?])\s+|\n+", corpus_text))
    assert len(probes) > 1000 and not probes & sentences


# ---- the suite ------------------------------------------------------------------------------------

def test_checkpoint_grid_is_pythia_like():
    assert len(checkpoint_steps(143000, 1000)) == 154  # Pythia's public checkpoints
    grid = checkpoint_steps(1000, 10)
    assert grid[:7] == [0, 1, 2, 4, 8, 10, 20] and grid[-1] == 1000 and len(grid) == 105


def tiny(**change) -> DemoConfig:
    """The tiny suite of these tests, with some settings changed."""
    settings = dict(geometry=GeometryConfig(batch_size=4, row_length=33, total_steps=100, checkpoint_interval=1),
                    tokenizer=DemoTokenizerConfig(vocab_size=2000, train_documents=800), heldout_rows=8,
                    probes=DemoProbesConfig(winobias_lines_per_file=10, crows_pairs_frames_per_occupation=2),
                    pretrain={"micro_batch": 4, "device": "cpu", "progress": False}, model=MODEL)
    return DemoConfig(**{**settings, **change})


@pytest.mark.parametrize("change, message", [
    ({"geometry": GeometryConfig(batch_size=4, row_length=33, total_steps=100, checkpoint_interval=10)}, "7% window"),
    ({"tokenizer": DemoTokenizerConfig(vocab_size=4000)}, "larger than the model"),
    ({"pretrain": {"colour": "red"}}, "unknown setting"),
    ({"model": None}, "architecture"),
])
def test_bad_demo_settings_are_one_line_errors(change, message):
    with pytest.raises(UserError, match=message) as err:
        tiny(**change)
    assert "\n" not in str(err.value)


TINY = tiny()


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory) -> tuple[DemoSuite, float]:
    started = time.perf_counter()
    suite = build_demo_suite(TINY, tmp_path_factory.mktemp("cache"), progress=False)
    return suite, time.perf_counter() - started


@pytest.mark.slow
def test_tiny_suite_builds_with_loadable_checkpoints_on_the_grid(tiny_suite):
    from debias.model import GPTNeoX
    from debias.stream import IndexedStream, Window

    suite, seconds = tiny_suite
    assert seconds < 60
    geometry = suite.geometry
    assert suite.checkpoint_steps == tuple(range(0, 101))
    stream = IndexedStream(suite.stream)
    train_rows = geometry["total_steps"] * geometry["batch_size"]
    assert len(stream) == train_rows + 8 and stream.row_length == 33
    assert suite.heldout_rows == (train_rows, train_rows + 8)
    from debias.stream import Geometry
    for ratio, start in ((0.07, 93), (0.21, 79)):
        assert Window.from_ratio(Geometry(**geometry), ratio).start_step == start
        assert suite.checkpoint(start).is_dir()
    first, last = GPTNeoX.from_pretrained(suite.checkpoint(0)), GPTNeoX.from_pretrained(suite.checkpoint(100))
    assert (suite.checkpoint(100) / "tokenizer.json").is_file()
    ids = np.asarray(stream.rows(0, 2))[:, :-1]
    import torch

    with torch.no_grad():
        loss = [torch.nn.functional.cross_entropy(m(torch.as_tensor(ids, dtype=torch.long)).flatten(0, 1),
                                                  torch.as_tensor(np.asarray(stream.rows(0, 2))[:, 1:],
                                                                  dtype=torch.long).flatten()).item()
                for m in (first, last)]
    assert loss[1] < loss[0] - 1.0  # pretraining learned something
    with pytest.raises(UserError, match="no checkpoint at step 101"):
        suite.checkpoint(101)


@pytest.mark.slow
def test_tiny_suite_is_cached_by_content_and_feeds_the_evaluator(tiny_suite):
    suite, _ = tiny_suite
    started = time.perf_counter()
    again = build_demo_suite(TINY, suite.root.parent.parent)
    assert again.root == suite.root and time.perf_counter() - started < 5
    assert suite_params(tiny(seed=5)) != suite_params(TINY)
    # the pretraining threads and progress bar do not change the suite: the same cache entry
    assert suite_params(tiny(threads=2, pretrain={"micro_batch": 4, "device": "cpu", "progress": True})) == suite_params(TINY)
    cfg = suite.eval_config(EvalConfig(perplexity=PerplexityConfig(enabled=True)))
    assert cfg.crows_pairs.path == str(suite.crows_pairs_csv) and Path(cfg.winobias.path).is_dir()
    assert cfg.perplexity.rows == list(suite.heldout_rows) and cfg.perplexity.stream == str(suite.heldout_stream)
    assert not list(suite.root.parent.glob("*.tmp-*"))  # nothing half-built left behind
    assert (suite.root / ".done").is_file() and suite.root.parent.name == "demo"  # a debias.cache entry
    stats = json.loads((suite.root / "corpus_stats.json").read_text())
    assert set(stats["mentions"]) == set(FEMALE_PERCENT) and stats["tokens"] >= 100 * 4 * 32
    assert "<|endoftext|>" in (suite.root / "corpus_sample.txt").read_text()


@pytest.mark.slow
def test_parallel_builds_wait_for_one_another(tmp_path, capfd):
    """Two sweep jobs asking for the same suite at once: one builds, the other waits and loads it."""
    from concurrent.futures import ThreadPoolExecutor

    own = tiny(seed=11)  # a suite of its own, not the module's cached one
    with ThreadPoolExecutor(2) as pool:
        suites = list(pool.map(lambda _: build_demo_suite(own, tmp_path, progress=False), range(2)))
    assert suites[0].root == suites[1].root and (suites[0].root / "suite.json").is_file()
    assert capfd.readouterr().err.count("building the demo suite") == 1
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [suites[0].key, f"{suites[0].key}.lock"]
