"""Benchmark loaders on the real files in ../shared/data, and one-line errors on bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import pytest

from debias.errors import UserError
from debias.evaluate import load_crows_pairs, load_lambada, load_tokenizer, load_winobias
from debias.evaluate.datafiles import ChecksumWarning
from debias.evaluate.winobias import parse_line, swapped

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def crows_csv(shared_data):
    return shared_data / "crows_pairs/crows_pairs_anonymized.csv"


def test_crows_pairs_loads_all_pairs_and_flags_the_known_defects(crows_csv):
    everything = load_crows_pairs(crows_csv, bias_type=None)
    assert len(everything.pairs) == 1508
    assert everything.identity["matches_pinned"] is True
    assert len(everything.defects["duplicate_pairs"]) == 2  # one pair, listed twice
    multiline = [p for p in everything.pairs if "\n" in p.sent_more + p.sent_less]
    assert len(multiline) == 1  # the quoted field with a newline stays one pair

    gender = load_crows_pairs(crows_csv)  # gender is the default
    assert len(gender.pairs) == 262
    kinds = [p.stereo_antistereo for p in gender.pairs]
    assert (kinds.count("stereo"), kinds.count("antistereo")) == (159, 103)
    unvoted = gender.defects["bias_type_without_votes"]
    assert len(unvoted) == 3
    for pair in gender.pairs:
        if pair.pair_id in unvoted:
            assert not any("gender" in vote for vote in pair.annotations)
    assert 0 < len(gender.defects["differ_in_several_places"]) < 262


def test_winobias_loads_8_files_pairs_them_and_lists_misaligned(shared_data):
    data = load_winobias(shared_data / "winobias")
    assert len(data.identity) == 8
    assert all(record["matches_pinned"] for record in data.identity.values())
    assert len(data.pairs) == 1584
    for split in ("dev", "test"):
        for kind in ("type1", "type2"):
            assert sum(p.split == split and p.type == kind for p in data.pairs) == 396
    assert data.stereotypes_source == "occupation files"
    assert sorted(set(data.stereotypes.values())) == ["female", "male"] and len(data.stereotypes) == 40
    misaligned = data.misaligned
    assert 15 <= len(misaligned) <= 25  # docs/facts.md §6: about 20 of 1,584
    for pair in misaligned:
        assert swapped(pair.pro, pair.anti) != pair.anti.text
    for pair in data.pairs:
        if pair.aligned:  # swapping the pronouns of a clean pair gives exactly its partner
            assert swapped(pair.pro, pair.anti) == pair.anti.text
            assert swapped(pair.anti, pair.pro) == pair.pro.text


def test_winobias_stereotypes_are_inferred_without_occupation_files(shared_data, tmp_path):
    for path in (shared_data / "winobias").glob("*_stereotyped_*"):
        shutil.copy(path, tmp_path / path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # identical copies: no checksum warning
        inferred = load_winobias(tmp_path)
    listed = load_winobias(shared_data / "winobias")
    assert inferred.stereotypes_source == "inferred from pro sentences"
    assert inferred.stereotypes == listed.stereotypes


def test_winobias_line_parsing():
    index, s = parse_line("7 The nurse met [the janitor] and thanked [him] for [his] help.", "f:7")
    assert index == 7 and s.text == "The nurse met the janitor and thanked him for his help."
    assert s.referent == "janitor" and s.pronouns == ("him", "his")
    assert [s.text[a:b] for a, b in s.pronoun_spans] == ["him", "his"]
    assert s.text[slice(*s.referent_span)] == "the janitor"


def test_lambada_loads_5153_passages_split_like_lm_eval(shared_data):
    data = load_lambada(shared_data / "lambada/lambada_test.jsonl")
    assert len(data.passages) == 5153
    assert data.identity["matches_pinned"] is True
    for passage in data.passages[:50]:
        assert passage.target.startswith(" ") and " " not in passage.target[1:]
        assert not passage.context.endswith(" ")


# -- bad input ---------------------------------------------------------------------------------

def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_crows_csv_without_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UserError) as err:
        load_crows_pairs(path)
    assert f"{path}:1" in one_line(err) and "sent_more" in str(err.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError) as err:
        load_lambada(empty)
    assert "empty" in one_line(err)
    with pytest.raises(UserError) as err:
        load_crows_pairs(tmp_path / "missing.csv")
    assert "missing.csv" in one_line(err)


def test_lambada_bad_line_names_the_line(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text('{"text": "a b c"}\n{"txt": "x y"}\n')
    with pytest.raises(UserError) as err:
        load_lambada(path)
    assert f"{path}:2" in one_line(err)


def test_winobias_line_without_brackets_names_file_and_line(shared_data, tmp_path):
    for path in (shared_data / "winobias").iterdir():
        shutil.copy(path, tmp_path / path.name)
    target = tmp_path / "anti_stereotyped_type2.txt.test"
    lines = target.read_text().splitlines()
    lines[4] = lines[4].replace("[", "").replace("]", "")
    target.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        load_winobias(tmp_path)
    assert f"{target}:5" in one_line(err)


def test_checksum_mismatch_warns_and_records(crows_csv, tmp_path):
    copy = tmp_path / crows_csv.name
    copy.write_text(crows_csv.read_text(encoding="utf-8").replace("He couldn't", "He could not", 1),
                    encoding="utf-8")
    with pytest.warns(ChecksumWarning, match="differs from the pinned"):
        data = load_crows_pairs(copy)
    assert data.identity["matches_pinned"] is False
    assert data.identity["sha256"] != data.identity["pinned_sha256"]
    assert len(data.pairs) == 262  # still evaluated


def test_model_folder_without_tokenizer(tmp_path):
    with pytest.raises(UserError) as err:
        load_tokenizer(tmp_path)
    assert "tokenizer.json" in one_line(err)


def test_hub_copy_offline_gives_one_line_with_the_fix(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    code = ("from debias.evaluate import load_crows_pairs; from debias.errors import exit_on_user_error;"
            "exit_on_user_error(load_crows_pairs)('nyu-mll/crows_pairs')")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "load_dataset('nyu-mll/crows_pairs')" in lines[0]


@pytest.mark.parametrize("line", ['{"text": 5}', '{"text": null}', '[1, 2]'])
def test_lambada_text_that_is_not_a_string_names_the_line(tmp_path, line):
    path = tmp_path / "l.jsonl"
    path.write_text('{"text": "a b c"}\n' + line + "\n")
    with pytest.raises(UserError) as err:
        load_lambada(path)
    assert f"{path}:2" in one_line(err)


@pytest.mark.parametrize("limit", [0, -3])
def test_lambada_limit_must_be_positive(shared_data, limit):
    with pytest.raises(UserError, match="positive"):
        load_lambada(shared_data / "lambada/lambada_test.jsonl", limit=limit)


def test_crows_row_missing_its_last_column_names_the_line(crows_csv, tmp_path):
    import csv
    import io

    rows = list(csv.reader(io.StringIO(crows_csv.read_text(encoding="utf-8"), newline="")))
    rows[5] = rows[5][:-1]
    path = tmp_path / "crows.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    with pytest.raises(UserError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        load_crows_pairs(path, bias_type=None)
    assert f"{path}:6" in one_line(err) and "7 fields, the header 8" in str(err.value)


def test_winobias_duplicated_line_index_is_refused(shared_data, tmp_path):
    for path in (shared_data / "winobias").iterdir():
        shutil.copy(path, tmp_path / path.name)
    target = tmp_path / "pro_stereotyped_type1.txt.test"
    lines = target.read_text().splitlines()
    lines[10] = "10 " + lines[10].split(" ", 1)[1]  # line 11 reuses index 10 (line 10's)
    target.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        load_winobias(tmp_path)
    assert f"{target}:11: line index 10 already used at {target}:10" in one_line(err)


@pytest.mark.parametrize("source", ["winobias_typo", "shared/data/winobias", "./winobias", "../winobias"])
def test_mistyped_local_winobias_folder_is_not_a_hub_lookup(source):
    with pytest.raises(UserError) as err:
        load_winobias(source)
    assert f"{source}: WinoBias folder not found" in one_line(err)
