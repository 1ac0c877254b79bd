"""Synthetic HAM10000 / PAD-UFES-20 writers (real formats) and the derm builders that read them."""
from __future__ import annotations

import collections
import csv
import pathlib
import re
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import tfds_builders  # noqa: F401  (registers the builders)
from tfds_builders.derm_ham10000 import derm_ham10000_dataset_builder as ham_builder
from tfds_builders.derm_pad_ufes20 import derm_pad_ufes20_dataset_builder as pad_builder
from tfds_builders.synthetic import derm

HAM_HEADER_LINE = "lesion_id,image_id,dx,dx_type,age,sex,localization,dataset"
PAD_HEADER_LINE = (
    "patient_id,lesion_id,smoke,drink,background_father,background_mother,age,pesticide,gender,"
    "skin_cancer_history,cancer_history,has_piped_water,has_sewage_system,fitspatrick,region,diameter_1,"
    "diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed"
)
HAM_LOCALIZATIONS = {"back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "foot",
                     "unknown", "neck", "scalp", "hand", "ear", "genital", "acral"}


@pytest.fixture(scope="module")
def ham_dir(tmp_path_factory):
    return derm.write_ham10000(tmp_path_factory.mktemp("ham"), num_lesions=40, seed=3, image_size=32)


@pytest.fixture(scope="module")
def pad_dir(tmp_path_factory):
    return derm.write_pad_ufes20(tmp_path_factory.mktemp("pad"), num_patients=30, seed=3, image_size=32)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _build(name, config, manual_dir, data_dir):
    builder = tfds.builder(name, config=config, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder, list(tfds.as_numpy(builder.as_dataset(split="train")))


def _copy(src, tmp_path):
    return pathlib.Path(shutil.copytree(src, tmp_path / "manual"))


def _edit_csv(path, line, column, value):
    """Sets `column` of the row on 1-based `line` (header = line 1)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rows[line - 1][rows[0].index(column)] = value
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


# ------------------------------------------------------------------------------------------------
# HAM10000 format


def test_ham_layout_header_and_value_encodings(ham_dir):
    text = (ham_dir / "HAM10000_metadata.csv").read_bytes().decode("utf-8")
    assert text.startswith(HAM_HEADER_LINE + "\n") and "\r" not in text
    rows = _rows(ham_dir / "HAM10000_metadata.csv")
    assert all(re.fullmatch(r"HAM_\d{7}", r["lesion_id"]) and re.fullmatch(r"ISIC_\d{7}", r["image_id"])
               for r in rows)
    assert {r["dx"] for r in rows} == set(ham_builder.DIAGNOSES)  # every class from 7 lesions on
    assert collections.Counter(r["dx"] for r in rows).most_common(1)[0][0] == "nv"
    assert {r["dx_type"] for r in rows} <= {"histo", "follow_up", "consensus", "confocal"}
    assert {r["sex"] for r in rows} <= {"male", "female", "unknown"} and "unknown" in {r["sex"] for r in rows}
    assert {r["localization"] for r in rows} <= HAM_LOCALIZATIONS
    assert {r["dataset"] for r in rows} <= {"vidir_molemax", "vidir_modern", "rosendahl", "vienna_dias"}
    ages = [r["age"] for r in rows]
    assert "" in ages and all(a == "" or re.fullmatch(r"\d+\.0", a) for a in ages)
    # images per lesion as in the real set (1 -> 74%, 2 -> 19%, 3 -> 6.5%), rows of a lesion adjacent
    per_lesion = collections.Counter(r["lesion_id"] for r in rows)
    assert len(per_lesion) == 40 and 0.65 <= list(per_lesion.values()).count(1) / 40 <= 0.8
    assert 2 <= max(per_lesion.values()) <= 6
    for lesion_id in per_lesion:
        idx = [i for i, r in enumerate(rows) if r["lesion_id"] == lesion_id]
        assert idx == list(range(idx[0], idx[0] + len(idx)))
    # both image folders, 600x450-shaped JPEGs scaled to height 32
    parts = {p.parent.name for p in ham_dir.rglob("*.jpg")}
    assert parts == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    for r in rows[:5]:
        [path] = list(ham_dir.glob(f"HAM10000_images_part_*/{r['image_id']}.jpg"))
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (43, 32))


def test_ham_is_deterministic(tmp_path):
    a = derm.write_ham10000(tmp_path / "a", num_lesions=5, seed=7, image_size=24)
    b = derm.write_ham10000(tmp_path / "b", num_lesions=5, seed=7, image_size=24)
    c = derm.write_ham10000(tmp_path / "c", num_lesions=5, seed=8, image_size=24)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "HAM10000_metadata.csv").read_bytes() != (c / "HAM10000_metadata.csv").read_bytes()


# ------------------------------------------------------------------------------------------------
# PAD-UFES-20 format


def test_pad_layout_header_and_value_encodings(pad_dir):
    text = (pad_dir / "metadata.csv").read_bytes().decode("utf-8")
    assert text.startswith(PAD_HEADER_LINE + "\n")
    rows = _rows(pad_dir / "metadata.csv")
    assert {r["diagnostic"] for r in rows} == set(pad_builder.DIAGNOSES)
    bools = ("smoke", "drink", "pesticide", "skin_cancer_history", "cancer_history", "has_piped_water",
             "has_sewage_system", "biopsed")
    assert {r[c] for r in rows for c in bools} == {"True", "False", ""}
    assert {r[c] for r in rows for c in ("itch", "grew", "hurt", "changed", "bleed", "elevation")} <= {
        "True", "False", "UNK"}
    assert {r["fitspatrick"] for r in rows} <= {"1.0", "2.0", "3.0", "4.0", "5.0", "6.0", ""}
    assert "" in {r["fitspatrick"] for r in rows}
    assert {r["gender"] for r in rows} <= {"MALE", "FEMALE", ""}
    assert all(r["region"].isupper() and r["region"] for r in rows)
    assert all(r["biopsed"] == "True" for r in rows if r["diagnostic"] in ("BCC", "SCC", "MEL"))
    for r in rows:
        assert re.fullmatch(r"PAT_\d+", r["patient_id"]) and re.fullmatch(r"\d+", r["lesion_id"])
        assert re.fullmatch(rf"{r['patient_id']}_{r['lesion_id']}_\d+\.png", r["img_id"])
        assert re.fullmatch(r"\d+", r["age"])
    lesions_of = collections.defaultdict(set)
    for r in rows:
        lesions_of[r["patient_id"]].add(r["lesion_id"])
    assert len(lesions_of) == 30 and max(map(len, lesions_of.values())) >= 2
    images = sorted(pad_dir.rglob("*.png"))
    assert {p.name for p in images} == {r["img_id"] for r in rows}
    assert {p.relative_to(pad_dir).parent.as_posix() for p in images} == {
        f"images/imgs_part_{k}/imgs_part_{k}" for k in (1, 2, 3)}
    with Image.open(images[0]) as im:
        assert im.format == "PNG" and im.mode == "RGB" and min(im.size) == 32


def test_pad_is_deterministic(tmp_path):
    a = derm.write_pad_ufes20(tmp_path / "a", num_patients=3, seed=5, image_size=24)
    b = derm.write_pad_ufes20(tmp_path / "b", num_patients=3, seed=5, image_size=24)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


# ------------------------------------------------------------------------------------------------
# Image signal


def _features(path):
    """Colour quantiles of the image centre relative to its border, plus texture energy."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        a = np.asarray(im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                       .resize((32, 32)), np.float32) / 255
    centre, border = a[8:24, 8:24].reshape(-1, 3), np.concatenate([a[:4], a[-4:]]).reshape(-1, 3)
    rel = centre - np.median(border, 0)
    grad = np.abs(np.diff(a.mean(-1), axis=1))[8:24, 8:24]
    return np.concatenate([np.percentile(rel, [10, 50, 90], axis=0).ravel(), [grad.mean(), a[8:24, 8:24].std()]])


def test_diagnosis_is_learnable_and_survives_the_pad_shift(tmp_path):
    """A colour/texture classifier fit on HAM (shared classes) scores clearly above chance on PAD."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    ham_dir = derm.write_ham10000(tmp_path / "ham", num_lesions=120, seed=0, image_size=32)
    pad_dir = derm.write_pad_ufes20(tmp_path / "pad", num_patients=60, seed=0, image_size=32)
    harmonised = {"NEV": "nv", "MEL": "mel", "BCC": "bcc", "SEK": "bkl", "ACK": "akiec", "SCC": "akiec"}
    ham = [r for r in _rows(ham_dir / "HAM10000_metadata.csv") if r["dx"] in harmonised.values()]
    ham_x = np.array([_features(next(ham_dir.glob(f"*/{r['image_id']}.jpg"))) for r in ham])
    ham_y = np.array([r["dx"] for r in ham])
    scaler = StandardScaler().fit(ham_x)
    clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(ham_x), ham_y)
    assert balanced_accuracy_score(ham_y, clf.predict(scaler.transform(ham_x))) > 0.8
    pad = _rows(pad_dir / "metadata.csv")
    pad_x = np.array([_features(next(pad_dir.rglob(r["img_id"]))) for r in pad])
    pad_y = np.array([harmonised[r["diagnostic"]] for r in pad])
    # 5 harmonised classes: chance is 0.2 (seeds 0-5 give 0.39-0.60 with these crude features)
    assert balanced_accuracy_score(pad_y, clf.predict(scaler.transform(pad_x))) > 0.35


def test_images_of_one_lesion_share_traits(ham_dir):
    rows = _rows(ham_dir / "HAM10000_metadata.csv")
    feats = {r["image_id"]: _features(next(ham_dir.glob(f"*/{r['image_id']}.jpg"))) for r in rows}
    by_lesion = collections.defaultdict(list)
    for r in rows:
        by_lesion[r["lesion_id"]].append(feats[r["image_id"]])
    within = [np.linalg.norm(f[0] - f[1]) for f in by_lesion.values() if len(f) > 1]
    allf = np.array(list(feats.values()))
    between = np.linalg.norm(allf[:, None] - allf[None], axis=-1)
    assert np.median(within) < 0.5 * np.median(between[np.triu_indices(len(allf), 1)])


# ------------------------------------------------------------------------------------------------
# Builders on generated data


def test_ham_builder_reads_generated_images_and_lesions(ham_dir, tmp_path):
    rows = _rows(ham_dir / "HAM10000_metadata.csv")
    builder, examples = _build("derm_ham10000", "64px", ham_dir, tmp_path)
    assert len(examples) == len(rows)
    by_id = {ex["image_id"].decode(): ex for ex in examples}
    assert set(by_id) == {r["image_id"] for r in rows}
    names = builder.info.features["diagnosis"].names
    for r in rows:
        ex = by_id[r["image_id"]]
        assert ex["image"].shape == (64, 64, 3)
        assert names[ex["diagnosis"]] == r["dx"] and ex["lesion_id"].decode() == r["lesion_id"]
        assert ex["age"] == (float(r["age"]) if r["age"] else -1.0)
        assert (ex["sex"].decode(), ex["localization"].decode(), ex["site"].decode(), ex["dx_type"].decode()) == (
            r["sex"], r["localization"], r["dataset"], r["dx_type"])

    _, lesions = _build("derm_ham10000", "lesions_original", ham_dir, tmp_path)
    expected = collections.defaultdict(set)
    for r in rows:
        expected[r["lesion_id"]].add(r["image_id"])
    got = {ex["lesion_id"].decode(): ex for ex in lesions}
    assert set(got) == set(expected)
    for lesion_id, ex in got.items():
        assert {i.decode() for i in ex["images"]["image_id"]} == expected[lesion_id]
        assert ex["images"]["image"].shape == (len(expected[lesion_id]), 32, 43, 3)


def test_ham_builder_reads_kaggle_and_extensionless_metadata(ham_dir, tmp_path):
    manual = _copy(ham_dir, tmp_path)
    rows = _rows(manual / "HAM10000_metadata.csv")
    (manual / "HAM10000_metadata.csv").unlink()
    with open(manual / "HAM10000_metadata", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\r\n")  # also a CRLF copy
        writer.writerow(HAM_HEADER_LINE.split(",")[:7])
        writer.writerows([list(r.values())[:7] for r in rows])
    records = ham_builder.read_metadata(manual)
    assert [r.image_id for r in records] == [r["image_id"] for r in rows]
    assert {r.site for r in records} == {""}
    assert {r.file.parent.name for r in records} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}


def test_pad_builder_reads_generated_images_at_any_depth(pad_dir, tmp_path):
    manual = _copy(pad_dir, tmp_path)
    nested = manual / "images" / "imgs_part_2" / "imgs_part_2"
    for png in nested.iterdir():  # unzipped one level less deep
        png.rename(nested.parent / png.name)
    nested.rmdir()
    rows = _rows(manual / "metadata.csv")
    builder, examples = _build("derm_pad_ufes20", "original", manual, tmp_path)
    by_id = {ex["img_id"].decode(): ex for ex in examples}
    assert set(by_id) == {r["img_id"] for r in rows}
    names = builder.info.features["diagnosis"].names
    for r in rows:
        ex = by_id[r["img_id"]]
        assert names[ex["diagnosis"]] == r["diagnostic"] and ex["patient_id"].decode() == r["patient_id"]
        assert ex["lesion_id"] == int(r["lesion_id"]) and ex["region"].decode() == r["region"]
        assert ex["fitzpatrick"] == (int(float(r["fitspatrick"])) if r["fitspatrick"] else -1)
        assert bool(ex["biopsied"]) == (r["biopsed"] == "True")
        with Image.open(next(manual.rglob(r["img_id"]))) as im:
            assert np.array_equal(ex["image"], np.asarray(im))


# ------------------------------------------------------------------------------------------------
# Bad input


def test_missing_manual_dir_names_layout_and_source(tmp_path):
    for name, expected in (("derm_ham10000", "HAM10000_images_part_1"), ("derm_pad_ufes20", "metadata.csv")):
        with pytest.raises(FileNotFoundError, match=f"{name}.*{expected}.*(Dataverse|Mendeley)"):
            _build(name, "64px", tmp_path / "absent", tmp_path / "data")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no HAM10000_metadata.csv or HAM10000_metadata in"):
        _build("derm_ham10000", "64px", tmp_path / "other", tmp_path / "data")


@pytest.mark.parametrize("builder", ["derm_ham10000", "derm_pad_ufes20"])
def test_wrong_header_names_file_and_line(builder, ham_dir, pad_dir, tmp_path):
    src, csv_name, good, bad = {
        "derm_ham10000": (ham_dir, "HAM10000_metadata.csv", "localization", "location"),
        "derm_pad_ufes20": (pad_dir, "metadata.csv", "fitspatrick", "fitzpatrick"),
    }[builder]
    manual = _copy(src, tmp_path)
    path = manual / csv_name
    path.write_text(path.read_text().replace(good, bad, 1))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, line 1: unexpected header .*{bad}.*expected"):
        _build(builder, "64px", manual, tmp_path / "data")


def test_unknown_diagnosis_names_file_and_line(ham_dir, pad_dir, tmp_path):
    manual = _copy(ham_dir, tmp_path / "h")
    _edit_csv(manual / "HAM10000_metadata.csv", 4, "dx", "melanoma")
    with pytest.raises(ValueError, match=r"HAM10000_metadata.csv, line 4: dx is 'melanoma'; expected one of akiec"):
        _build("derm_ham10000", "64px", manual, tmp_path / "data")
    manual = _copy(pad_dir, tmp_path / "p")
    _edit_csv(manual / "metadata.csv", 6, "diagnostic", "BOD")
    with pytest.raises(ValueError, match=r"metadata.csv, line 6: diagnostic is 'BOD'; expected one of ACK"):
        _build("derm_pad_ufes20", "64px", manual, tmp_path / "data")


def test_bad_pad_values_name_file_and_line(pad_dir, tmp_path):
    manual = _copy(pad_dir, tmp_path)
    _edit_csv(manual / "metadata.csv", 3, "fitspatrick", "7.0")
    with pytest.raises(ValueError, match=r"metadata.csv, line 3: fitspatrick is '7.0'"):
        pad_builder.read_metadata(manual)
    _edit_csv(manual / "metadata.csv", 3, "fitspatrick", "")
    _edit_csv(manual / "metadata.csv", 5, "biopsed", "yes")
    with pytest.raises(ValueError, match=r"metadata.csv, line 5: biopsed is 'yes'; expected True, False or blank"):
        pad_builder.read_metadata(manual)
    _edit_csv(manual / "metadata.csv", 5, "biopsed", "")
    assert pad_builder.read_metadata(manual)[3].biopsied is False


def test_missing_image_names_file_and_line(ham_dir, pad_dir, tmp_path):
    manual = _copy(ham_dir, tmp_path / "h")
    image_id = _rows(manual / "HAM10000_metadata.csv")[2]["image_id"]
    next(manual.glob(f"*/{image_id}.jpg")).unlink()
    with pytest.raises(FileNotFoundError, match=rf"HAM10000_metadata.csv, line 4: image {image_id}.jpg not found"):
        _build("derm_ham10000", "lesions_64px", manual, tmp_path / "data")
    manual = _copy(pad_dir, tmp_path / "p")
    img_id = _rows(manual / "metadata.csv")[0]["img_id"]
    next(manual.rglob(img_id)).unlink()
    with pytest.raises(FileNotFoundError, match=rf"metadata.csv, line 2: image {img_id} not found"):
        _build("derm_pad_ufes20", "original", manual, tmp_path / "data")


def test_unreadable_or_duplicated_image_is_an_error(ham_dir, pad_dir, tmp_path):
    manual = _copy(ham_dir, tmp_path / "h")
    image_id = _rows(manual / "HAM10000_metadata.csv")[0]["image_id"]
    path = next(manual.glob(f"*/{image_id}.jpg"))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=rf"HAM10000_metadata.csv, line 2: image .*{image_id}.jpg is unreadable"):
        _build("derm_ham10000", "64px", manual, tmp_path / "data")
    manual = _copy(pad_dir, tmp_path / "p")
    png = next(manual.rglob("*.png"))
    shutil.copy(png, manual / "images" / png.name)
    with pytest.raises(ValueError, match=rf"image {png.name} found twice"):
        pad_builder.read_metadata(manual)
