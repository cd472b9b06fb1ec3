"""The headline bias metrics are blind to a blanket gender shift, and the threshold metrics are not.

A scorer that adds a constant to the log-probability of every feminine form (what an m2f
rewrite that makes a model say "she" everywhere does, and nothing else) must leave
`winobias.association` and `crows_pairs.association` unchanged to float tolerance, move both
blanket shifts by exactly the constant, and move `pct_stereotype` / `stereotype_accuracy`.
The scores come from a hash of each request (no model), so the property is checked on the real
benchmark files in seconds; tests/test_evaluate_suite.py checks it again through a real model.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from debias.evaluate import Score, Scorer, evaluate_crows_pairs, evaluate_winobias, load_crows_pairs, load_winobias
from debias.evaluate.gender_words import feminine_side
from debias.evaluate.winobias import pronoun_gender, swapped
from debias.tokenizer import load_tokenizer

SHIFT = 7.5  # nats added to every feminine form


class HashScorer(Scorer):
    """Log-probabilities from a hash of the request's ids (uniform over 3 nats), plus
    `STEREOTYPE_BONUS` for the stereotypical sentences (a model with a real association) and
    `shift` for the feminine ones."""

    STEREOTYPE_BONUS = 1.5

    def __init__(self, tokenizer, feminine_texts: set[str], stereotypical_texts: set[str] = frozenset(),
                 shift: float = 0.0):
        super().__init__(None, tokenizer, progress=False)
        self.feminine = {self.encode(t) for t in feminine_texts}
        self.stereotypical = {self.encode(t) for t in stereotypical_texts}
        self.shift = shift

    def score(self, requests, desc="scoring"):
        scores = []
        for r in requests:
            ids = r.context + r.continuation
            logprob = -20.0 - 3.0 * zlib.crc32(np.array(ids, dtype=np.int64).tobytes()) / 2**32
            if r.context == (self.prefix_id,):  # whole-sentence requests
                logprob += self.STEREOTYPE_BONUS * (r.continuation in self.stereotypical)
                logprob += self.shift * (r.continuation in self.feminine)
            scores.append(Score(logprob, len(r.continuation), False))
        return scores


@pytest.fixture(scope="module")
def tokenizer(neox_tokenizer_path):
    return load_tokenizer(neox_tokenizer_path)


@pytest.mark.shared_data
def test_winobias_association_ignores_a_blanket_feminine_shift(tokenizer, shared_data):
    data = load_winobias(shared_data / "winobias")
    feminine = set()  # each frame's feminine-pronoun sentence
    for pair in data.pairs:
        for sentence, partner in ((pair.pro, pair.anti), (pair.anti, pair.pro)):
            feminine.add(sentence.text if pronoun_gender(sentence.pronoun) == "female" else swapped(sentence, partner))
    stereotypical = {pair.pro.text for pair in data.pairs} | {swapped(pair.anti, pair.pro) for pair in data.pairs}
    plain, _ = evaluate_winobias(HashScorer(tokenizer, feminine, stereotypical), data, n_resamples=300)
    shifted, items = evaluate_winobias(HashScorer(tokenizer, feminine, stereotypical, SHIFT), data, n_resamples=300)

    assert shifted["association"] == pytest.approx(plain["association"], abs=1e-9)
    assert shifted["association_ci95"] == pytest.approx(plain["association_ci95"], abs=1e-9)
    assert shifted["blanket_shift"] == pytest.approx(plain["blanket_shift"] + SHIFT, abs=1e-9)
    assert plain["association"] > 2.0 and plain["association_ci95"][0] > 0  # the model's stereotype is seen
    # The threshold metric moves: with +7.5 nats every feminine form wins, so pro items are won
    # exactly where the occupation is female-stereotyped: the "debiased-looking" ~0.5.
    female = np.array([row["stereotyped_gender"] == "female" for row in items.values()])
    assert plain["stereotype_accuracy"] > 0.7
    assert shifted["stereotype_accuracy"] == pytest.approx(female.mean(), abs=1e-12)
    assert plain["association_n"] == len(data.pairs) == 1584
    assert plain["stereotyped_female"]["n"] + plain["stereotyped_male"]["n"] == 1584


@pytest.mark.shared_data
def test_crows_pairs_association_ignores_a_blanket_feminine_shift(tokenizer, shared_data):
    data = load_crows_pairs(shared_data / "crows_pairs/crows_pairs_anonymized.csv")
    feminine = set()
    for pair in data.pairs:
        side, _ = feminine_side(pair.sent_more, pair.sent_less)
        if side is not None:
            feminine.add((pair.sent_more, pair.sent_less)[side])
    stereotypical = {pair.sent_more for pair in data.pairs}
    plain, _ = evaluate_crows_pairs(HashScorer(tokenizer, feminine, stereotypical), data, n_resamples=300)
    shifted, items = evaluate_crows_pairs(HashScorer(tokenizer, feminine, stereotypical, 100.0), data,
                                          n_resamples=300)

    assert shifted["association"] == pytest.approx(plain["association"], abs=1e-9)
    assert shifted["blanket_shift"] == pytest.approx(plain["blanket_shift"] + 100.0, abs=1e-9)
    assert abs(shifted["pct_stereotype"] - plain["pct_stereotype"]) > 0.05
    # +100 nats: every determined pair is won exactly when its sent_more is the feminine one.
    assert shifted["sent_more_feminine"]["pct_stereotype"] == 1.0
    assert shifted["sent_more_masculine"]["pct_stereotype"] == 0.0
    n_fem, n_masc = shifted["stereotyped_female"]["n"], shifted["stereotyped_male"]["n"]
    assert n_fem + n_masc + shifted["gender_undetermined"]["n"] == len(data.pairs) == 262
    assert n_fem > 100 and n_masc > 90  # the lexicon settles most pairs (116 / 106 at the time of writing)
    assert sum(shifted["gender_undetermined"]["reasons"].values()) == shifted["gender_undetermined"]["n"]
    determined = [row for row in items.values() if row["stereotyped_gender"] is not None]
    assert all(row["feminine_preference"] is not None for row in determined)


def test_a_uniform_stereotype_preference_reads_as_association_2d_and_no_shift(tokenizer, tmp_path):
    """Association's scale: stereotypical forms d nats likelier everywhere -> association 2d."""
    from debias.demo.probes import write_winobias

    data = load_winobias(write_winobias(tmp_path / "w", seed=1, lines_per_file=8), check_pinned=False)
    stereotypical = {p.pro.text for p in data.pairs}

    class StereotypeScorer(HashScorer):
        def score(self, requests, desc="scoring"):
            out = []
            for r in requests:
                text = self.tokenizer.decode(list(r.continuation))
                out.append(Score(-20.0 + (0.75 if text in stereotypical else 0.0), len(r.continuation), False))
            return out

    metrics, _ = evaluate_winobias(StereotypeScorer(tokenizer, set()), data, n_resamples=200)
    assert metrics["association"] == pytest.approx(1.5)
    assert metrics["blanket_shift"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["stereotype_accuracy"] == 1.0


# -- telling the feminine sentence of a CrowS-Pairs pair ---------------------------------------

@pytest.mark.parametrize("a,b,expected", [
    ("She was a nurse.", "He was a nurse.", (0, "determined")),
    ("Jack's car broke down, so he walked.", "Mary's car broke down, so she walked.", (1, "determined")),
    ("She told the man to leave.", "She told the woman to leave.", (1, "determined")),  # shared words ignored
    ("Women are better at this than men.", "Men are better at this than women.", (None, "both genders on one side")),
    ("Thorn is one of those awful trans men.", "Thorn is one of those awful cis men.",
     (None, "no gendered word where the sentences differ")),
    ("Jenny watched in awe.", "Alex watched in awe.", (None, "no gendered word where the sentences differ")),
    ("Veronica was late.", "Samantha wasn't late.", (None, "same gender on both sides")),
    ("My mom made dinner.", "My dad made dinner.", (0, "determined")),
    ("Ask the lady, ma'am.", "Ask the gentleman, sir.", (0, "determined")),
])
def test_feminine_side(a, b, expected):
    assert feminine_side(a, b) == expected


@pytest.mark.shared_data
def test_crows_gender_pairs_mostly_get_a_gender(shared_data):
    data = load_crows_pairs(shared_data / "crows_pairs/crows_pairs_anonymized.csv")
    sides = [feminine_side(p.sent_more, p.sent_less)[0] for p in data.pairs]
    fem, masc = sides.count(0), sides.count(1)
    assert fem + masc >= 200 and fem > 100 and masc > 90  # 116 / 106 of 262 when written
