"""The builders on real files (issue 22): the full real metadata files through the builders' CSV readers,
and the real NIH ChestX-ray14 PNGs and HAM10000 JPEGs built with TFDS.

The data live in `<repo>/../shared/realdata` (see its README), or wherever MEDSSL_REALDATA points; the
tests skip, naming the folder, when it is absent. Every expected count is computed here from the CSVs
with pandas, never taken from the builders.
"""
from __future__ import annotations

import collections
import os
import pathlib

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import tfds_builders  # noqa: F401  (registers the builders)
from tfds_builders.cxr_chexpert import cxr_chexpert_dataset_builder as chexpert
from tfds_builders.cxr_nih14 import cxr_nih14_dataset_builder as nih
from tfds_builders.derm_ham10000 import derm_ham10000_dataset_builder as ham

REALDATA = pathlib.Path(os.environ.get("MEDSSL_REALDATA")
                        or pathlib.Path(__file__).resolve().parents[2] / "shared" / "realdata")
CONFIG = "64px"  # the smallest image config of the builders

pytestmark = pytest.mark.skipif(
    not REALDATA.is_dir(),
    reason=f"real data folder {REALDATA} absent (set MEDSSL_REALDATA to the realdata folder to run these tests)")


def _need(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        pytest.skip(f"{path} absent from the real data folder {REALDATA}")
    return path


def _strings(path) -> pd.DataFrame:
    """A CSV as written: every value a string, blanks as ''."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _finding_counts(finding_labels: pd.Series) -> dict[str, int]:
    """Images per finding ('No Finding' included) from the '|'-joined Finding Labels column."""
    return finding_labels.str.split("|").explode().value_counts().to_dict()


# ------------------------------------------------------------------------- full metadata files


def test_full_nih_data_entry_through_the_builder():
    path = _need(REALDATA / "metadata" / "Data_Entry_2017_v2020.csv.gz")
    frame = pd.read_csv(path)
    entries = nih.read_entries(path)

    assert len(entries) == len(frame)  # 112,120
    assert list(entries) == frame["Image Index"].tolist()
    assert len({r.patient_id for r in entries.values()}) == frame["Patient ID"].nunique()  # 30,805
    assert [r.patient_id for r in entries.values()] == frame["Patient ID"].tolist()
    # Follow-up # kept as the file states it, also where it differs from the file name's number
    assert [r.follow_up for r in entries.values()] == frame["Follow-up #"].tolist()
    renumbered = frame["Image Index"].str[9:12].astype(int) != frame["Follow-up #"]
    assert renumbered.sum() > 0  # 24,106 rows in the v2020 file
    assert sum(r.follow_up != int(i[9:12]) for i, r in entries.items()) == renumbered.sum()
    assert [r.age for r in entries.values()] == frame["Patient Age"].tolist()
    assert collections.Counter(r.sex for r in entries.values()) == frame["Patient Gender"].value_counts().to_dict()
    assert collections.Counter(r.view for r in entries.values()) == frame["View Position"].value_counts().to_dict()
    expected = {nih.label_key(f): n for f, n in _finding_counts(frame["Finding Labels"]).items()}
    got = {key: sum(r.labels[key] for r in entries.values()) for key in expected}
    assert got == expected
    assert set(expected) == {nih.label_key(f) for f in (*nih.FINDINGS, nih.NO_FINDING)}


def test_full_chexpert_train_csv_through_the_builder():
    path = _need(REALDATA / "metadata" / "chexpert_train.csv.gz")
    frame = _strings(path)
    records = chexpert.read_split_csv(path)

    assert len(records) == len(frame)  # 223,414
    assert [r.path for r in records] == frame["Path"].tolist()
    patients = frame["Path"].str.extract(r"/(patient\d+)/")[0]
    assert len({r.patient_id for r in records}) == patients.nunique()  # 64,540
    assert [r.patient_id for r in records] == patients.tolist()
    studies = patients + "/" + frame["Path"].str.extract(r"/(study\d+)/")[0]
    assert len({r.study_id for r in records}) == studies.nunique()
    state_of = {"1.0": "positive", "0.0": "negative", "-1.0": "uncertain", "": "blank"}
    for obs in chexpert.OBSERVATIONS:
        expected = {state_of[v]: n for v, n in frame[obs].value_counts().items()}
        got = collections.Counter(r.labels[chexpert.snake_case(obs)] for r in records)
        assert got == expected, obs
    assert collections.Counter(r.sex for r in records) == frame["Sex"].value_counts().to_dict()
    assert collections.Counter(r.ap_pa for r in records) == frame["AP/PA"].value_counts().to_dict()
    assert collections.Counter(r.view for r in records) == {
        v.lower(): n for v, n in frame["Frontal/Lateral"].value_counts().items()}
    assert [r.age for r in records] == frame["Age"].astype(int).tolist()


def _check_ham_records(records, frame: pd.DataFrame) -> None:
    assert len(records) == len(frame)
    assert [r.image_id for r in records] == frame["image_id"].tolist()
    assert [r.lesion_id for r in records] == frame["lesion_id"].tolist()
    assert len({r.lesion_id for r in records}) == frame["lesion_id"].nunique()
    assert collections.Counter(r.diagnosis for r in records) == frame["dx"].value_counts().to_dict()
    assert collections.Counter(r.dx_type for r in records) == frame["dx_type"].value_counts().to_dict()
    assert collections.Counter(r.sex for r in records) == frame["sex"].value_counts().to_dict()
    assert collections.Counter(r.site for r in records) == frame["dataset"].value_counts().to_dict()
    assert collections.Counter(r.localization for r in records) == frame["localization"].value_counts().to_dict()
    ages = pd.to_numeric(frame["age"].replace("", np.nan)).fillna(-1.0).tolist()
    assert [r.age for r in records] == ages
    assert sum(r.age == -1.0 for r in records) == (frame["age"] == "").sum()


def test_full_ham10000_metadata_through_the_builder():
    path = _need(REALDATA / "metadata" / "HAM10000_metadata.csv")
    data = path.read_bytes()
    assert b"\r\n" in data and not data.endswith(b"\n")  # the real file's quirks are still there
    frame = _strings(path)
    records = ham.parse_metadata(path)
    _check_ham_records(records, frame)  # 10,015 rows, 7,470 lesions
    assert all(r.file is None for r in records)
    per_lesion = frame.groupby("lesion_id").size().value_counts().to_dict()
    assert collections.Counter(len(g) for g in ham.group_by_lesion(records)) == per_lesion


# ------------------------------------------------------------------------- the real image subsets


def _build(name: str, data_dir: pathlib.Path):
    """Builds `name` from REALDATA/<name> (the `manual_dir/<builder name>/` layout benchmark.data uses)."""
    builder = tfds.builder(name, config=CONFIG, data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(REALDATA / name)))
    return builder


def _examples(builder, split: str) -> list[dict]:
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


@pytest.fixture(scope="module")
def nih_build(tmp_path_factory):
    _need(REALDATA / "cxr_nih14" / "Data_Entry_2017_v2020.csv")
    builder = _build("cxr_nih14", tmp_path_factory.mktemp("tfds_real_nih"))
    return builder, {split: _examples(builder, split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def ham_build(tmp_path_factory):
    _need(REALDATA / "derm_ham10000" / "HAM10000_metadata.csv")
    builder = _build("derm_ham10000", tmp_path_factory.mktemp("tfds_real_ham"))
    return builder, _examples(builder, "train")


def test_real_nih_csv_and_split_lists_through_the_builder():
    folder = _need(REALDATA / "cxr_nih14")
    frame = pd.read_csv(folder / "Data_Entry_2017_v2020.csv")
    entries = nih.read_entries(folder / "Data_Entry_2017_v2020.csv")
    assert list(entries) == frame["Image Index"].tolist()  # 501
    assert [r.follow_up for r in entries.values()] == frame["Follow-up #"].tolist()
    splits = nih.read_split_lists(folder, entries)
    for split, name in nih.SPLIT_FILES:
        listed = pd.read_csv(folder / name, header=None)[0].tolist()
        assert [rec.image_index for _, _, rec in splits[split]] == listed


def test_real_nih_images_build(nih_build):
    builder, examples = nih_build
    folder = REALDATA / "cxr_nih14"
    frame = pd.read_csv(folder / "Data_Entry_2017_v2020.csv").set_index("Image Index")
    assert sum(len(e) for e in examples.values()) == len(frame)  # 501
    for split, name in nih.SPLIT_FILES:
        listed = pd.read_csv(folder / name, header=None)[0]
        rows = frame.loc[listed]
        got = examples[split]
        assert builder.info.splits[split].num_examples == len(got) == len(listed)  # 387 / 114
        assert sorted(ex["image_index"].decode() for ex in got) == sorted(listed)
        assert len({int(ex["patient_id"]) for ex in got}) == rows["Patient ID"].nunique()  # 114 / 37
        expected = {nih.label_key(f): n for f, n in _finding_counts(rows["Finding Labels"]).items()}
        assert {k: sum(bool(ex["labels"][k]) for ex in got) for k in expected} == expected
        for ex in got:
            row = frame.loc[ex["image_index"].decode()]
            assert (int(ex["patient_id"]), int(ex["follow_up"]), int(ex["age"])) == (
                row["Patient ID"], row["Follow-up #"], row["Patient Age"])
            assert (ex["sex"].decode(), ex["view"].decode()) == (row["Patient Gender"], row["View Position"])
    # the sources are 64x64 gray stored as RGB or RGBA (R = G = B, opaque alpha): at 64px the stored image
    # is exactly their gray channel
    modes = collections.Counter()
    for ex in (ex for got in examples.values() for ex in got):
        source = Image.open(folder / "images" / ex["image_index"].decode())
        modes[source.mode] += 1
        pixels = np.asarray(source)
        assert ex["image"].shape == (*pixels.shape[:2], 1)
        np.testing.assert_array_equal(ex["image"][..., 0], pixels[..., 0])
    assert modes["RGBA"] > 0  # 12 real RGBA PNGs went through


def test_real_ham_images_build(ham_build):
    builder, examples = ham_build
    folder = REALDATA / "derm_ham10000"
    frame = _strings(folder / "HAM10000_metadata.csv")
    assert builder.info.splits["train"].num_examples == len(examples) == len(frame)  # 3,000
    assert sorted(ex["image_id"].decode() for ex in examples) == sorted(frame["image_id"])
    assert len({ex["lesion_id"].decode() for ex in examples}) == frame["lesion_id"].nunique()  # 3,000
    names = builder.info.features["diagnosis"].names
    assert collections.Counter(names[ex["diagnosis"]] for ex in examples) == frame["dx"].value_counts().to_dict()
    assert collections.Counter(ex["site"].decode() for ex in examples) == frame["dataset"].value_counts().to_dict()
    assert collections.Counter(ex["sex"].decode() for ex in examples) == frame["sex"].value_counts().to_dict()
    assert sum(float(ex["age"]) == -1.0 for ex in examples) == (frame["age"] == "").sum()
    assert {ex["image"].shape for ex in examples} == {(64, 64, 3)}
    # the stored 64px image is the source shrunk: close to a plain PIL resize of the source JPEG
    by_id = {ex["image_id"].decode(): ex for ex in examples}
    for image_id in frame["image_id"][:: len(frame) // 20]:
        path = next(folder.glob(f"HAM10000_images_part_*/{image_id}.jpg"))
        reference = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR),
                               dtype=np.float64)
        assert np.abs(by_id[image_id]["image"].astype(np.float64) - reference).mean() < 4, image_id


def test_real_ham_csv_through_the_builder():
    folder = _need(REALDATA / "derm_ham10000")
    frame = _strings(folder / "HAM10000_metadata.csv")
    assert b"\r\n" in (folder / "HAM10000_metadata.csv").read_bytes()  # CRLF, ages like `80`
    records = ham.read_metadata(folder)
    _check_ham_records(records, frame)
    assert {r.file.parent.name for r in records} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}


# ------------------------------------------------------------------------- dataset cards


def test_dataset_cards_of_the_real_folder_and_full_metadata_files():
    """`benchmark.data_check --manual_dir=<realdata> --metadata_only` and `--metadata_file=...`:
    the cards' counts against pandas on the same files."""
    from benchmark.harness import dataset_card

    _need(REALDATA / "cxr_nih14")
    _need(REALDATA / "derm_ham10000")
    meta = REALDATA / "metadata"
    files = {"cxr_chexpert": meta / "chexpert_train.csv.gz", "cxr_nih14": meta / "Data_Entry_2017_v2020.csv.gz",
             "derm_ham10000": meta / "HAM10000_metadata.csv"}
    for path in files.values():
        _need(path)
    sources = dataset_card.find_sources(str(REALDATA), {k: str(v) for k, v in files.items()})
    cards = {(s.builder, s.folder is None): dataset_card.read_facts(s, decode=False) for s in sources}
    assert sorted(cards) == [("cxr_chexpert", True), ("cxr_nih14", False), ("cxr_nih14", True),
                             ("derm_ham10000", False), ("derm_ham10000", True)]

    chexpert_frame = _strings(files["cxr_chexpert"])
    card = cards[("cxr_chexpert", True)]
    assert card.images == len(chexpert_frame) == 223_414
    assert len(card.cases["patients"]) == 64_540
    assert card.labels["Pleural Effusion"] == {
        {"1.0": "positive", "0.0": "negative", "-1.0": "uncertain", "": "blank"}[v]: n
        for v, n in chexpert_frame["Pleural Effusion"].value_counts().items()}
    assert card.images_check is None

    for folder, key in ((False, REALDATA / "cxr_nih14" / "Data_Entry_2017_v2020.csv"),
                        (True, files["cxr_nih14"])):
        frame, card = pd.read_csv(key), cards[("cxr_nih14", folder)]
        assert card.images == len(frame) and len(card.cases["patients"]) == frame["Patient ID"].nunique()
        assert card.labels["Pleural Effusion"]["positive"] == _finding_counts(frame["Finding Labels"])["Effusion"]
        assert card.ages == frame["Patient Age"].tolist()
    nih_card = cards[("cxr_nih14", False)]
    assert nih_card.splits == {"train_val_list.txt": 387, "test_list.txt": 114}
    assert nih_card.images_check.checked == 501 and not nih_card.images_check.missing

    for folder, key in ((False, REALDATA / "derm_ham10000" / "HAM10000_metadata.csv"),
                        (True, files["derm_ham10000"])):
        frame, card = _strings(key), cards[("derm_ham10000", folder)]
        assert card.images == len(frame) and len(card.cases["lesions"]) == frame["lesion_id"].nunique()
        assert {k.split(" ->")[0]: v["images"] for k, v in card.labels.items()} == frame["dx"].value_counts().to_dict()
        assert card.ages_missing == (frame["age"] == "").sum()
        assert card.sex == frame["sex"].value_counts().to_dict()
    assert cards[("derm_ham10000", False)].images_check.checked == 3_000
    assert not cards[("derm_ham10000", False)].images_check.missing
