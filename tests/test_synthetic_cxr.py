"""Synthetic CheXpert / NIH ChestX-ray14 writers: real formats, determinism, and the builders reading them."""
import csv
import hashlib
import io
import pathlib
import re
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import tfds_builders  # noqa: F401  (registers the builders)
from tfds_builders import _common
from tfds_builders.synthetic import cxr

# Header strings exactly as in /work/shared/dataset_formats.md §1 and §2.
CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
)
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
NIH_FINDINGS = {
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
    "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
}
TRAIN_PATH = re.compile(r"^CheXpert-v1\.0-small/train/patient(\d{5})/study(\d+)/view(\d+)_(frontal|lateral)\.jpg$")


@pytest.fixture(scope="module")
def chexpert_dir(tmp_path_factory):
    return cxr.write_chexpert(tmp_path_factory.mktemp("chexpert"), num_patients=30, seed=1, image_size=32)


@pytest.fixture(scope="module")
def nih_dir(tmp_path_factory):
    return cxr.write_nih14(tmp_path_factory.mktemp("nih"), num_patients=12, seed=1, image_size=32)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _prepare(name, config, manual_dir, data_dir):
    builder = tfds.builder(name, config=config, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _digest(root: pathlib.Path) -> dict:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_chexpert_files_match_real_format(chexpert_dir):
    base = chexpert_dir / "CheXpert-v1.0-small"
    assert (base / "train.csv").read_text().splitlines()[0] == CHEXPERT_HEADER
    assert (base / "valid.csv").read_text().splitlines()[0] == CHEXPERT_HEADER
    assert (base / "test_labels.csv").read_text().splitlines()[0] == "Path," + CHEXPERT_HEADER.split(",", 5)[5]
    train = _rows(base / "train.csv")[1:]
    assert {len(r) for r in train} == {19}
    assert [r[1] for r in train].count("Unknown") == 1
    assert {r[1] for r in train} <= {"Male", "Female", "Unknown"}
    assert all(0 <= int(r[2]) <= 90 for r in train)
    for r in train:
        assert TRAIN_PATH.match(r[0]), r[0]
        assert r[3] in ("Frontal", "Lateral")
        assert (r[4] == "") == (r[3] == "Lateral") and r[4] in ("", "AP", "PA", "LL", "RL")
        assert r[0].endswith(f"_{r[3].lower()}.jpg")
        assert set(r[5:]) <= {"1.0", "0.0", "-1.0", ""}
        assert r[5] in ("1.0", "")  # No Finding is only positive or blank ...
        if r[5] == "1.0":  # ... and then no pathology is positive or uncertain
            assert not {r[i] for i in range(6, 18)} & {"1.0", "-1.0"}
    values = {v for r in train for v in r[6:]}
    assert values == {"1.0", "0.0", "-1.0", ""}
    assert "Lateral" in {r[3] for r in train}
    for r in _rows(base / "valid.csv")[1:]:
        assert set(r[5:]) <= {"1.0", "0.0"} and r[0].startswith("CheXpert-v1.0-small/valid/patient")
    test = _rows(base / "test_labels.csv")[1:]
    assert all(len(r) == 15 and set(r[1:]) <= {"1.0", "0.0"} for r in test)
    assert all(re.match(r"^CheXpert-v1\.0/test/patient\d{5}/study1/view\d_(frontal|lateral)\.jpg$", r[0]) for r in test)
    image = Image.open(base / train[0][0].split("/", 1)[1])
    assert (image.format, image.mode, image.width) == ("JPEG", "L", 32)


def test_chexpert_splits_patient_disjoint_and_ordered(chexpert_dir):
    base = chexpert_dir / "CheXpert-v1.0-small"
    ids = {
        name: [int(re.search(r"patient(\d+)", r[0]).group(1)) for r in _rows(base / name)[1:]]
        for name in ("train.csv", "valid.csv", "test_labels.csv")
    }
    assert max(ids["train.csv"]) < min(ids["valid.csv"])
    assert max(ids["valid.csv"]) < min(ids["test_labels.csv"])
    assert [len(set(v)) for v in ids.values()] == [24, 3, 3]
    on_disk = {p.relative_to(base).as_posix() for p in base.rglob("*.jpg")}
    listed = {r[0].split("/", 1)[1] for name in ids for r in _rows(base / name)[1:]}
    assert on_disk == listed


def test_nih_files_match_real_format(nih_dir):
    lines = (nih_dir / "Data_Entry_2017_v2020.csv").read_text().splitlines()
    assert lines[0] == NIH_HEADER
    rows = _rows(nih_dir / "Data_Entry_2017_v2020.csv")
    assert len(rows[0]) == 11 and rows[0][7:] == ["OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
    for r in rows[1:]:
        assert len(r) == 11
        assert r[0] == f"{int(r[3]):08d}_{int(r[2]):03d}.png" and not r[3].startswith("0")
        assert r[1] == "No Finding" or set(r[1].split("|")) <= NIH_FINDINGS
        assert r[5] in ("M", "F") and r[6] in ("PA", "AP")
        image = Image.open(nih_dir / "images" / r[0])
        assert (image.format, image.mode, image.size) == ("PNG", "L", (32, 32))
    train = (nih_dir / "train_val_list.txt").read_text().split()
    test = (nih_dir / "test_list.txt").read_text().split()
    assert sorted(train + test) == sorted(r[0] for r in rows[1:])
    assert not {t[:8] for t in train} & {t[:8] for t in test}  # patient-disjoint


def test_nih_2017_variant_and_archive_layout(tmp_path):
    root = cxr.write_nih14(tmp_path, num_patients=3, seed=0, image_size=16, csv_variant="2017", archive_layout=True)
    lines = (root / "Data_Entry_2017.csv").read_text().splitlines()
    assert lines[0] == NIH_HEADER + "," and all(line.endswith(",") for line in lines)
    assert not (root / "images").exists() and list(root.glob("images_0*/images/*.png"))


def test_writers_are_deterministic(tmp_path):
    a = cxr.write_chexpert(tmp_path / "a", num_patients=4, seed=3, image_size=24)
    b = cxr.write_chexpert(tmp_path / "b", num_patients=4, seed=3, image_size=24)
    c = cxr.write_chexpert(tmp_path / "c", num_patients=4, seed=4, image_size=24)
    assert _digest(a) == _digest(b) and _digest(a) != _digest(c)
    n1 = cxr.write_nih14(tmp_path / "n1", num_patients=3, seed=3, image_size=24)
    n2 = cxr.write_nih14(tmp_path / "n2", num_patients=3, seed=3, image_size=24)
    assert _digest(n1) == _digest(n2)


def test_patient_images_share_anatomy_and_views_differ():
    traits = cxr.patient_traits(np.random.default_rng(0))
    other = cxr.patient_traits(np.random.default_rng(1))
    acq = cxr.Acquisition(noise=0.0)

    def draw(t, lateral=False, **signs):
        return cxr.render(t, signs, lateral=lateral, acq=acq, height=48, width=48,
                          rng=np.random.default_rng(5)).astype(float)

    same = np.abs(draw(traits) - draw(traits)).mean()
    assert same == 0.0
    assert np.abs(draw(traits) - draw(other)).mean() > 1.0
    assert np.abs(draw(traits) - draw(traits, lateral=True)).mean() > 10.0
    # Cardiomegaly brightens the lower central chest; effusion brightens the lung bases.
    assert draw(traits, cardiomegaly=1.0)[28:40, 14:40].mean() > draw(traits)[28:40, 14:40].mean() + 3
    assert draw(traits, effusion=1.0)[28:40].mean() > draw(traits)[28:40].mean() + 3


def test_chexpert_builder_reads_generated_data(chexpert_dir, tmp_path):
    builder = _prepare("cxr_chexpert", "64px", chexpert_dir, tmp_path)
    base = chexpert_dir / "CheXpert-v1.0-small"
    files = {"train": "train.csv", "validation": "valid.csv", "test": "test_labels.csv"}
    counts = {split: len(_rows(base / name)) - 1 for split, name in files.items()}
    assert {s: builder.info.splits[s].num_examples for s in counts} == counts
    train = list(tfds.as_numpy(builder.as_dataset(split="train")))
    rows = {r[0]: r for r in _rows(base / "train.csv")[1:]}
    assert {ex["path"].decode() for ex in train} == set(rows)
    states = builder.info.features["labels"]["pleural_effusion"].names
    for ex in train:
        row = rows[ex["path"].decode()]
        assert ex["image"].shape == (64, 64, 1)
        assert ex["patient_id"].decode() == re.search(r"patient\d+", row[0]).group(0)
        assert ex["study_id"].decode() == re.search(r"patient\d+/study\d+", row[0]).group(0)
        assert (ex["sex"].decode(), int(ex["age"]), ex["ap_pa"].decode()) == (row[1], int(row[2]), row[4])
        expected = {"1.0": "positive", "0.0": "negative", "-1.0": "uncertain", "": "blank"}[row[15]]
        assert states[ex["labels"]["pleural_effusion"]] == expected
    test = next(iter(tfds.as_numpy(builder.as_dataset(split="test"))))
    assert test["path"].decode().startswith("CheXpert-v1.0/test/") and test["age"] == -1


def test_chexpert_grouped_config_holds_every_image_of_a_patient(chexpert_dir, tmp_path):
    builder = _prepare("cxr_chexpert", "patients_64px", chexpert_dir, tmp_path)
    rows = _rows(chexpert_dir / "CheXpert-v1.0-small" / "train.csv")[1:]
    expected = {}
    for r in rows:
        expected.setdefault(re.search(r"patient\d+", r[0]).group(0), set()).add(r[0])
    got = {
        ex["patient_id"].decode(): {p.decode() for p in ex["images"]["path"]}
        for ex in tfds.as_numpy(builder.as_dataset(split="train"))
    }
    assert got == expected
    assert max(len(v) for v in got.values()) > 1


def test_chexpert_original_grouped_decodes_per_image(tmp_path):
    root = cxr.write_chexpert(tmp_path / "m", num_patients=6, seed=2, image_size=24, variant="full", with_test=False)
    builder = _prepare("cxr_chexpert", "patients_original", root, tmp_path / "tfds")
    ds = builder.as_dataset(split="train", decoders={"images": {"image": tfds.decode.SkipDecoding()}})
    for ex in tfds.as_numpy(ds):
        shapes = {Image.open(io.BytesIO(b)).size[0] for b in ex["images"]["image"]}
        assert shapes == {24}
    assert set(builder.info.splits) == {"train", "validation"}


def test_chexpert_builder_accepts_copy_without_top_folder(tmp_path):
    root = cxr.write_chexpert(tmp_path / "m", num_patients=3, seed=2, image_size=24, variant="unpacked")
    assert (root / "train.csv").is_file()
    builder = _prepare("cxr_chexpert", "64px", root, tmp_path / "tfds")
    assert builder.info.splits["train"].num_examples == len(_rows(root / "train.csv")) - 1


def test_nih_builder_reads_generated_data(nih_dir, tmp_path):
    builder = _prepare("cxr_nih14", "64px", nih_dir, tmp_path)
    rows = {r[0]: r for r in _rows(nih_dir / "Data_Entry_2017_v2020.csv")[1:]}
    test_list = (nih_dir / "test_list.txt").read_text().split()
    test = list(tfds.as_numpy(builder.as_dataset(split="test")))
    assert sorted(ex["image_index"].decode() for ex in test) == sorted(test_list)
    for ex in test:
        row = rows[ex["image_index"].decode()]
        assert (int(ex["patient_id"]), int(ex["follow_up"]), ex["view"].decode()) == (int(row[3]), int(row[2]), row[6])
        assert ex["labels"]["no_finding"] == (row[1] == "No Finding")
        assert ex["labels"]["pleural_thickening"] == ("Pleural_Thickening" in row[1].split("|"))


def test_nih_builder_reads_2017_csv_and_archive_folders(tmp_path):
    root = cxr.write_nih14(tmp_path / "m", num_patients=4, seed=5, image_size=24, csv_variant="2017",
                           archive_layout=True)
    builder = _prepare("cxr_nih14", "original", root, tmp_path / "tfds")
    total = sum(builder.info.splits[s].num_examples for s in ("train", "test"))
    assert total == len((root / "Data_Entry_2017.csv").read_text().splitlines()) - 1
    ex = next(iter(tfds.as_numpy(builder.as_dataset(split="train"))))
    assert ex["image"].shape == (24, 24, 1)


def test_imap_ordered_keeps_every_item_in_order_across_chunks():
    assert list(_common.imap_ordered(lambda i: 2 * i, range(700), workers=3, chunk=64)) == [2 * i for i in range(700)]


# ------------------------------------------------------------------------------------------- bad input

@pytest.fixture
def small_chexpert(tmp_path):
    root = cxr.write_chexpert(tmp_path / "manual", num_patients=4, seed=0, image_size=16, with_test=False)
    return root, root / "CheXpert-v1.0-small", tmp_path / "tfds"


def _edit(path, old, new, count=1):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))


def test_missing_manual_dir_names_layout_and_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)does not exist.*CheXpert-v1\.0-small/.*stanfordmlgroup"):
        _prepare("cxr_chexpert", "64px", tmp_path / "absent", tmp_path / "tfds")
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "readme.txt").write_text("not the data")
    with pytest.raises(FileNotFoundError, match=r"no train\.csv in .*wrong.*CheXpert-v1\.0-small/"):
        _prepare("cxr_chexpert", "64px", tmp_path / "wrong", tmp_path / "tfds")
    with pytest.raises(FileNotFoundError, match=r"Data_Entry_2017_v2020\.csv.*nihcc"):
        _prepare("cxr_nih14", "64px", tmp_path / "wrong", tmp_path / "tfds")


def test_wrong_header_names_file_and_line(small_chexpert):
    root, base, data_dir = small_chexpert
    _edit(base / "valid.csv", "Pleural Effusion", "Effusion")
    with pytest.raises(ValueError, match=r"valid\.csv, line 1: unexpected header"):
        _prepare("cxr_chexpert", "64px", root, data_dir)


def test_unknown_label_value_names_file_and_line(small_chexpert):
    root, base, data_dir = small_chexpert
    lines = (base / "train.csv").read_text().splitlines()
    fields = lines[2].split(",")
    fields[10] = "2.0"  # Edema
    lines[2] = ",".join(fields)
    (base / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train\.csv, line 3: column 'Edema' has value '2\.0'"):
        _prepare("cxr_chexpert", "64px", root, data_dir)


def test_missing_image_names_csv_line_and_file(small_chexpert):
    root, base, data_dir = small_chexpert
    (base / "valid/patient00004/study1/view1_frontal.jpg").unlink()
    expected = r"valid\.csv, line 2: image .*patient00004/study1/view1_frontal\.jpg not found"
    with pytest.raises(FileNotFoundError, match=expected):
        _prepare("cxr_chexpert", "64px", root, data_dir)


def test_unreadable_image_names_csv_line(small_chexpert):
    root, base, data_dir = small_chexpert
    (base / "valid/patient00004/study1/view1_frontal.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"valid\.csv, line 2: image .*view1_frontal\.jpg is unreadable"):
        _prepare("cxr_chexpert", "64px", root, data_dir)


def test_patient_in_two_splits_is_an_error(small_chexpert):
    root, base, data_dir = small_chexpert
    _edit(base / "valid.csv", "valid/patient00004/", "valid/patient00001/")
    expected = r"patient00001 is in two official splits: .*train\.csv, line 2 and .*valid\.csv, line 2"
    with pytest.raises(ValueError, match=expected):
        _prepare("cxr_chexpert", "64px", root, data_dir)


def test_nih_bad_inputs(tmp_path):
    root = cxr.write_nih14(tmp_path / "manual", num_patients=6, seed=0, image_size=16)
    csv_path = root / "Data_Entry_2017_v2020.csv"
    original = csv_path.read_text()
    lines = original.splitlines()
    fields = lines[1].split(",")
    fields[1] = "Pleural Thickening"
    csv_path.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"Data_Entry_2017_v2020\.csv, line 2: unknown finding 'Pleural Thickening'"):
        _prepare("cxr_nih14", "64px", root, tmp_path / "tfds")
    csv_path.write_text(original)
    test_list, train_list = root / "test_list.txt", root / "train_val_list.txt"
    trains = train_list.read_text().split()
    moved = next(t for t in trains if t.endswith("_001.png"))  # its _000 follow-up stays in train_val_list.txt
    train_list.write_text("\n".join(t for t in trains if t != moved) + "\n")
    test_list.write_text(test_list.read_text() + moved + "\n")
    with pytest.raises(ValueError, match=rf"patient {int(moved[:8])} is in two official splits"):
        _prepare("cxr_nih14", "64px", root, tmp_path / "tfds")
    test_list.write_text("\n".join(test_list.read_text().split()[:-1]) + "\n")
    shutil.rmtree(root / "images")
    with pytest.raises(FileNotFoundError, match=r"no images/ folder"):
        _prepare("cxr_nih14", "64px", root, tmp_path / "tfds")
