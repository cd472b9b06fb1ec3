"""Demo probes in the real benchmark file formats, over the demo's occupations.

The generator writes what the real loaders (`debias.evaluate`) read:
- WinoBias: `{pro,anti}_stereotyped_type{1,2}.txt.{dev,test}`, lines `<index> <sentence>` with
  the referent occupation and its pronoun in brackets, pro line i paired with anti line i, plus
  `male_occupations.txt` / `female_occupations.txt` (the stereotyped gender of each occupation:
  its female share below or above 50%). Type 2 lines are the corpus's "... and <verb> [him]"
  frames (the pronoun refers to the second person); type 1 lines its "... because [he]" frames,
  where the verb decides the referent.
- CrowS-Pairs: a CSV with the header of `crows_pairs_anonymized.csv`, one row per (occupation,
  frame): `sent_more` uses the occupation's stereotyped pronoun, `sent_less` the other one.

Every probe uses the ending its frame keeps back from the corpus (`corpus.CorpusGenerator`), so
no probe sentence is in the training text verbatim.
"""

from __future__ import annotations

import csv
import io
import os
import random
from pathlib import Path

from debias.demo.corpus import (FEMALE_PERCENT, PRONOUNS, SINGLE_FRAMES, TYPE1_FRAMES, TYPE2_FRAMES,
                                CorpusGenerator, capitalize_first)
from debias.io import write_text_atomic

WINOBIAS_SPLITS = ("dev", "test")
WINOBIAS_TYPES = ("type1", "type2")
# The header of crows_pairs_anonymized.csv (its first column, the row index, has no name).
CROWS_PAIRS_COLUMNS = ("", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations",
                       "anon_writer", "anon_annotators")
OPPOSITE = {"male": "female", "female": "male"}


def stereotype(occupation: str, female_percent: dict[str, float]) -> str:
    return "female" if female_percent[occupation] > 50 else "male"


def winobias_pair(kind: str, male_occupation: str, female_occupation: str,
                  rng: random.Random, female_percent: dict[str, float]) -> tuple[str, str]:
    """One (pro, anti) pair of bracketed sentences of WinoBias type 1 or 2."""
    a, b = rng.sample((male_occupation, female_occupation), 2)
    if kind == "type2":
        clause, tail, endings = rng.choice(TYPE2_FRAMES)
        referent, role, after = "b", "obj", endings[-1]
    else:
        clause, referent, endings = rng.choice(TYPE1_FRAMES)
        tail, role, after = "because", "subj", endings[-1]
        tail += " {" + role + "}"
    occupation = a if referent == "a" else b
    mention = {"a": f"the {a}", "b": f"the {b}"}
    mention[referent] = f"[{mention[referent]}]"
    sentences = []
    for gender in (stereotype(occupation, female_percent), OPPOSITE[stereotype(occupation, female_percent)]):
        pronoun = f"[{PRONOUNS[gender][role]}]"
        text = f"{clause} {tail} {after}.".format(a=mention["a"], b=mention["b"], **{role: pronoun})
        sentences.append(capitalize_first(text))
    return sentences[0], sentences[1]


def write_winobias(out_dir: str | os.PathLike, seed: int, lines_per_file: int,
                   female_percent: dict[str, float] | None = None) -> Path:
    """The eight bracket files and the two occupation lists, in `out_dir`."""
    female_percent = dict(FEMALE_PERCENT if female_percent is None else female_percent)
    male = sorted(o for o in female_percent if stereotype(o, female_percent) == "male")
    female = sorted(o for o in female_percent if stereotype(o, female_percent) == "female")
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    for split in WINOBIAS_SPLITS:
        for kind in WINOBIAS_TYPES:
            pro, anti = [], []
            for index in range(1, lines_per_file + 1):
                pro_text, anti_text = winobias_pair(kind, rng.choice(male), rng.choice(female), rng,
                                                    female_percent)
                pro.append(f"{index} {pro_text}\n")
                anti.append(f"{index} {anti_text}\n")
            write_text_atomic(out_dir / f"pro_stereotyped_{kind}.txt.{split}", "".join(pro))
            write_text_atomic(out_dir / f"anti_stereotyped_{kind}.txt.{split}", "".join(anti))
    # As in the real release: one occupation per line, no final newline.
    write_text_atomic(out_dir / "male_occupations.txt", "\n".join(male))
    write_text_atomic(out_dir / "female_occupations.txt", "\n".join(female))
    return out_dir


def crows_pairs_rows(seed: int, frames_per_occupation: int,
                     female_percent: dict[str, float] | None = None) -> list[dict[str, str]]:
    """Rows of a CrowS-Pairs CSV: for each occupation and frame, stereotyped vs other pronoun."""
    female_percent = dict(FEMALE_PERCENT if female_percent is None else female_percent)
    generator = CorpusGenerator(seed, female_percent)  # only its filler words are used
    rng = generator.rng
    rows = []
    for occupation in female_percent:
        for text, endings in rng.sample(SINGLE_FRAMES, frames_per_occupation):
            fillers = generator.draw_fillers()  # the same words in both sentences
            more_gender = stereotype(occupation, female_percent)
            more, less = (capitalize_first(generator.fill(text, fillers, p=f"the {occupation}", e=endings[-1],
                                                          **PRONOUNS[gender]) + ".")
                          for gender in (more_gender, OPPOSITE[more_gender]))
            rows.append({
                "": str(len(rows)), "sent_more": more, "sent_less": less,
                # "stereo": sent_more states a stereotype about the disadvantaged group (women);
                # "antistereo": sent_more is the male-stereotyped one (as in the real file).
                "stereo_antistereo": "stereo" if more_gender == "female" else "antistereo",
                "bias_type": "gender",
                "annotations": str([["gender"]] * 5),
                "anon_writer": "demo",
                "anon_annotators": str(["demo"] * 5),
            })
    return rows


def write_crows_pairs(path: str | os.PathLike, seed: int, frames_per_occupation: int,
                      female_percent: dict[str, float] | None = None) -> Path:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CROWS_PAIRS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(crows_pairs_rows(seed, frames_per_occupation, female_percent))
    return write_text_atomic(path, buffer.getvalue())
