"""Dataset cards (`benchmark.data_check --manual_dir / --metadata_file`) on the builders' dummy_data:
every count computed here independently with pandas from the CSVs."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from benchmark.harness import dataset_card

REPO = pathlib.Path(__file__).resolve().parents[1]
DUMMY = {b: REPO / "tfds_builders" / b / "dummy_data" for b in dataset_card.BUILDERS}


def _strings(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture()
def manual(tmp_path):
    """A manual dir with one sub-folder per builder (copies of their dummy_data)."""
    for builder, folder in DUMMY.items():
        shutil.copytree(folder, tmp_path / builder)
    return tmp_path


def _facts(manual_dir, decode=True) -> dict:
    out = {}
    for src in dataset_card.find_sources(str(manual_dir), {}):
        out[(src.builder, src.csv.name)] = dataset_card.read_facts(src, decode=decode)
    return out


def test_cards_count_what_pandas_counts(manual):
    facts = _facts(manual)
    assert sorted(facts) == [("cxr_chexpert", "test_labels.csv"), ("cxr_chexpert", "train.csv"),
                             ("cxr_chexpert", "valid.csv"), ("cxr_nih14", "Data_Entry_2017_v2020.csv"),
                             ("derm_ham10000", "HAM10000_metadata.csv"), ("derm_pad_ufes20", "metadata.csv")]

    csv = manual / "cxr_chexpert" / "CheXpert-v1.0-small" / "train.csv"
    frame, card = _strings(csv), facts[("cxr_chexpert", "train.csv")]
    patients = frame["Path"].str.extract(r"/(patient\d+)/")[0]
    assert card.images == len(frame)
    assert len(card.cases["patients"]) == patients.nunique()
    assert len(card.cases["studies"]) == (patients + frame["Path"].str.extract(r"/(study\d+)/")[0]).nunique()
    assert card.views["Frontal/Lateral"] == {k.lower(): v for k, v in frame["Frontal/Lateral"].value_counts().items()}
    assert card.views["AP/PA"] == frame["AP/PA"].replace("", "blank").value_counts().to_dict()
    state = {"1.0": "positive", "0.0": "negative", "-1.0": "uncertain", "": "blank"}
    for c in ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"):
        assert card.labels[c] == {state[v]: n for v, n in frame[c].value_counts().items()}, c
    assert sorted(card.ages) == sorted(frame["Age"].astype(int)) and card.ages_missing == 0
    assert card.sex == frame["Sex"].value_counts().to_dict()
    assert card.images_check.checked == len(frame) and not card.images_check.missing

    csv = manual / "cxr_nih14" / "Data_Entry_2017_v2020.csv"
    frame, card = pd.read_csv(csv), facts[("cxr_nih14", "Data_Entry_2017_v2020.csv")]
    findings = frame["Finding Labels"].str.split("|")
    assert card.images == len(frame) and len(card.cases["patients"]) == frame["Patient ID"].nunique()
    assert card.labels["Pleural Effusion"]["positive"] == findings.apply(lambda f: "Effusion" in f).sum()
    assert card.labels["No Finding"]["positive"] == (frame["Finding Labels"] == "No Finding").sum()
    assert card.views["View Position"] == frame["View Position"].value_counts().to_dict()
    assert card.sex == frame["Patient Gender"].value_counts().to_dict()
    assert card.splits == {f: len(open(manual / "cxr_nih14" / f).read().split())
                           for f in ("train_val_list.txt", "test_list.txt")}

    csv = manual / "derm_ham10000" / "HAM10000_metadata.csv"
    frame, card = _strings(csv), facts[("derm_ham10000", "HAM10000_metadata.csv")]
    assert card.images == len(frame) and len(card.cases["lesions"]) == frame["lesion_id"].nunique()
    assert {k.split(" ->")[0]: v["images"] for k, v in card.labels.items()} == frame["dx"].value_counts().to_dict()
    assert card.ages_missing == (frame["age"] == "").sum()
    assert sorted(card.ages) == sorted(frame.loc[frame["age"] != "", "age"].astype(float))
    assert card.sex == frame["sex"].value_counts().to_dict()

    csv = manual / "derm_pad_ufes20" / "metadata.csv"
    frame, card = _strings(csv), facts[("derm_pad_ufes20", "metadata.csv")]
    assert card.images == len(frame) and len(card.cases["patients"]) == frame["patient_id"].nunique()
    assert len(card.cases["lesions"]) == frame[["patient_id", "lesion_id"]].drop_duplicates().shape[0]
    assert {k.split(" ->")[0]: v["images"] for k, v in card.labels.items()} == frame["diagnostic"].value_counts().to_dict()
    for card in facts.values():
        assert not card.images_check.missing and not card.images_check.unreadable


def test_missing_and_unreadable_images_are_named_then_counted(manual):
    ham = manual / "derm_ham10000"
    images = sorted(ham.rglob("*.jpg"))
    for f in images[:dataset_card.NAMED + 1]:
        f.unlink()
    images[-1].write_bytes(b"not a jpeg")
    src = [s for s in dataset_card.find_sources(str(manual), {}) if s.builder == "derm_ham10000"][0]
    card = dataset_card.read_facts(src, decode=True)
    assert len(card.images_check.missing) == dataset_card.NAMED + 1
    assert card.images_check.unreadable == (
        f"{ham / 'HAM10000_metadata.csv'}, line {_line_of(ham, images[-1].stem)}: image "
        f"{images[-1]} is unreadable (cannot identify image file <_io.BytesIO object at "
        + card.images_check.unreadable[0].split("BytesIO object at ")[1],)
    text = "\n".join(dataset_card.render(card))
    assert f"missing {dataset_card.NAMED + 1}, unreadable 1" in text
    assert text.count("    missing: ") == dataset_card.NAMED and "... and 1 more missing" in text
    quick = dataset_card.read_facts(src, decode=False)  # --metadata_only: looked up, not decoded
    assert len(quick.images_check.missing) == dataset_card.NAMED + 1 and not quick.images_check.decoded


def _line_of(folder, image_id) -> int:
    lines = (folder / "HAM10000_metadata.csv").read_text().splitlines()
    return next(i for i, l in enumerate(lines, 1) if f",{image_id}," in l)


def _data_check(*args, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "benchmark.data_check", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_cards_one_line_errors_and_lone_metadata_files(manual, tmp_path):
    bad = manual / "derm_pad_ufes20" / "metadata.csv"
    bad.write_text(bad.read_text().replace(",BCC,", ",XYZ,", 1))
    lone = DUMMY["derm_ham10000"] / "HAM10000_metadata.csv"
    done = _data_check(f"--manual_dir={manual}", "--metadata_only",
                       f"--metadata_file=derm_ham10000={lone}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Traceback" not in done.stdout
    assert f"derm_ham10000: {lone}\n" in done.stdout and "image files     not checked (metadata file only)" in done.stdout
    assert "cxr_chexpert: " in done.stdout and "cxr_nih14: " in done.stdout
    [error] = [l for l in done.stdout.splitlines() if "error:" in l]
    assert error.startswith(f"  error: {bad}, line ") and "diagnostic is 'XYZ'; expected one of" in error
