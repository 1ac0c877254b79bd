"""Malformed real-format source folders and every image mode, through the builders (issue 10 item 9)."""
from __future__ import annotations

import codecs
import gzip
import io
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import tfds_builders  # noqa: F401  (registers the builders)
from tfds_builders import _common

HAM_HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization,dataset"
PAD_HEADER = ("patient_id,lesion_id,smoke,drink,background_father,background_mother,age,pesticide,gender,"
              "skin_cancer_history,cancer_history,has_piped_water,has_sewage_system,fitspatrick,region,"
              "diameter_1,diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed")
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                   "Pleural Effusion,Pleural Other,Fracture,Support Devices")
LABELS14 = ",1.0" + "," * 13


def _png(path, image=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    (image or Image.new("RGB", (8, 8), (90, 120, 150))).save(path, format="PNG")


def _jpg(path, image=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    (image or Image.new("RGB", (8, 8), (90, 120, 150))).save(path, format="JPEG", quality=95)


def _ham_row(lesion, image, dx="nv"):
    return f"HAM_{lesion:07d},ISIC_{image:07d},{dx},histo,45.0,male,back,vidir_modern"


def _ham(root: pathlib.Path, lines: list[str], images=(1, 2), image=None) -> pathlib.Path:
    for i in images:
        _jpg(root / "HAM10000_images_part_1" / f"ISIC_{i:07d}.jpg", image)
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _pad_row(patient, lesion, k, dx="BCC", gender="FEMALE"):
    return (f"PAT_{patient},{lesion},False,False,POMERANIA,POMERANIA,55,False,{gender},True,True,True,True,3.0,"
            f"NECK,6.0,5.0,{dx},True,True,False,True,True,True,PAT_{patient}_{lesion}_{k}.png,True")


def _pad(root: pathlib.Path, lines: list[str], image=None) -> pathlib.Path:
    root.mkdir(parents=True, exist_ok=True)
    for line in lines[1:]:
        img_id = line.split(",")[-2]
        _png(root / "images" / "imgs_part_1" / img_id, image)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


NIH_ROWS = ["00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143",
            "00000002_000.png,No Finding,0,2,26,F,PA,2048,2500,0.171,0.171"]


def _nih(root: pathlib.Path, *, train="00000001_000.png\n", test="00000002_000.png\n", image=None, rows=NIH_ROWS):
    rows = [NIH_HEADER, *rows]
    (root / "images").mkdir(parents=True)
    for name in ("00000001_000.png", "00000002_000.png"):
        _png(root / "images" / name, image or Image.new("L", (8, 8), 100))
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(rows) + "\n")
    (root / "train_val_list.txt").write_text(train)
    (root / "test_list.txt").write_text(test)
    return root


def _chexpert(root: pathlib.Path, *, valid_rows=None, image=None):
    top = root / "CheXpert-v1.0-small"
    train = [CHEXPERT_HEADER, "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP"
             + LABELS14]
    valid = [CHEXPERT_HEADER] + (valid_rows if valid_rows is not None else [
        "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP" + LABELS14])
    for line in train[1:] + valid[1:]:
        _jpg(root / line.split(",")[0], image or Image.new("L", (8, 8), 100))
    top.mkdir(parents=True, exist_ok=True)
    (top / "train.csv").write_text("\n".join(train) + "\n")
    (top / "valid.csv").write_text("\n".join(valid) + "\n")
    return root


def _build(name, manual, data_dir, config="64px"):
    builder = tfds.builder(name, config=config, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder


def _examples(builder, split="train"):
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _error(name, manual, tmp_path, exc=ValueError) -> str:
    with pytest.raises(exc) as info:
        _build(name, manual, tmp_path / "tfds")
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------- CSV files

HAM_OK = [HAM_HEADER, _ham_row(1, 1), _ham_row(2, 2)]


def _write_bytes(path: pathlib.Path, data: bytes) -> None:
    path.write_bytes(data)


HAM_CSV_CASES = {
    "latin1": (lambda p: _write_bytes(p, ("\n".join([HAM_HEADER, _ham_row(1, 1), _ham_row(2, 2).replace(
        "back", "bäck")]) + "\n").encode("latin-1")),
               "{csv}, line 3: byte 0xe4 is not UTF-8 (latin-1 or another legacy encoding?); save the file as UTF-8"),
    "utf16_no_bom": (lambda p: _write_bytes(p, ("\n".join(HAM_OK) + "\n").encode("utf-16-le")),
                     "{csv}, line 1: contains NUL bytes (UTF-16 without a byte-order mark?); save it as UTF-8"),
    "missing_column": (lambda p: p.write_text("\n".join([HAM_HEADER.replace(",dx,", ","), *[
        r.replace(",nv,", ",") for r in HAM_OK[1:]]]) + "\n"),
        "{csv}, line 1: unexpected header 'lesion_id,image_id,dx_type,age,sex,localization,dataset' "
        "(missing column(s) 'dx'); expected "
        f"'{HAM_HEADER}' or 'lesion_id,image_id,dx,dx_type,age,sex,localization'"),
    "renamed_column": (lambda p: p.write_text("\n".join([HAM_HEADER.replace("sex", "gender"), *HAM_OK[1:]]) + "\n"),
                       "{csv}, line 1: unexpected header "
                       f"'{HAM_HEADER.replace('sex', 'gender')}' (missing column(s) 'sex'; unexpected column(s) "
                       f"'gender'); expected '{HAM_HEADER}' or 'lesion_id,image_id,dx,dx_type,age,sex,localization'"),
    "header_only": (lambda p: p.write_text(HAM_HEADER + "\n"),
                    "{csv}, line 2: no data rows after the header; expected at least one"),
    "empty_file": (lambda p: p.write_text(""), "{csv}, line 1: empty file, expected a header line"),
    "short_row": (lambda p: p.write_text("\n".join([*HAM_OK, "HAM_0000003,ISIC_0000003,nv"]) + "\n"),
                  "{csv}, line 4: expected 8 fields, found 3"),
    "unclosed_quote": (lambda p: p.write_text("\n".join([HAM_HEADER, _ham_row(1, 1), '"HAM_0000002' + _ham_row(
        2, 2)[11:]]) + "\n"), "{csv}, line 3: expected 8 fields, found 1"),
    "bad_dx": (lambda p: p.write_text("\n".join([*HAM_OK[:2], _ham_row(2, 2, dx="melanoma")]) + "\n"),
               "{csv}, line 3: dx is 'melanoma'; expected one of akiec, bcc, bkl, df, mel, nv, vasc"),
    "bad_age": (lambda p: p.write_text("\n".join([*HAM_OK[:2], _ham_row(2, 2).replace("45.0", "forty")]) + "\n"),
                "{csv}, line 3: age is 'forty'; expected a number or blank"),
    "duplicate_image": (lambda p: p.write_text("\n".join([*HAM_OK, _ham_row(3, 1)]) + "\n"),
                        "{csv}, line 4: image_id 'ISIC_0000001' already listed on line 2"),
    "lesion_dx_disagrees": (lambda p: p.write_text("\n".join([HAM_HEADER, _ham_row(1, 1, "nv"), _ham_row(1, 2, "mel")])
                                                   + "\n"),
                            "lesion HAM_0000001 has diagnosis 'nv' at {csv}, line 2 but 'mel' at {csv}, line 3; "
                            "a lesion's diagnosis must be the same in all its rows"),
}


@pytest.mark.parametrize("case", sorted(HAM_CSV_CASES))
def test_malformed_ham10000_metadata_names_file_and_line(tmp_path, case):
    write, expected = HAM_CSV_CASES[case]
    root = _ham(tmp_path / "manual", HAM_OK)
    csv_path = root / "HAM10000_metadata.csv"
    write(csv_path)
    assert _error("derm_ham10000", root, tmp_path) == expected.format(csv=csv_path)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])  # both write a byte-order mark
def test_ham10000_metadata_with_byte_order_mark_builds(tmp_path, encoding):
    root = _ham(tmp_path / "manual", HAM_OK)
    data = ("\r\n".join(HAM_OK) + "\r\n").encode(encoding)
    assert data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF8))
    (root / "HAM10000_metadata.csv").write_bytes(data)
    examples = _examples(_build("derm_ham10000", root, tmp_path / "tfds"))
    assert sorted(e["image_id"].decode() for e in examples) == ["ISIC_0000001", "ISIC_0000002"]


PAD_OK = [PAD_HEADER, _pad_row(1, 10, 1), _pad_row(1, 10, 2), _pad_row(2, 20, 3)]
PAD_CASES = {
    "img_id_disagrees": ([PAD_HEADER, _pad_row(1, 10, 1), _pad_row(2, 20, 3).replace("PAT_2,20", "PAT_2,21")],
                         "{csv}, line 3: img_id 'PAT_2_20_3.png' does not match patient_id 'PAT_2' and lesion_id 21; "
                         "expected PAT_2_21_<n>.png"),
    "lesion_diagnostic_disagrees": ([PAD_HEADER, _pad_row(1, 10, 1), _pad_row(1, 10, 2, dx="MEL")],
                                    "lesion 10 has diagnosis 'BCC' at {csv}, line 2 but 'MEL' at {csv}, line 3; "
                                    "a lesion's diagnosis must be the same in all its rows"),
    "lesion_in_two_patients": ([PAD_HEADER, _pad_row(1, 10, 1), _pad_row(2, 10, 2)],
                               "lesion 10 has patient_id 'PAT_1' at {csv}, line 2 but 'PAT_2' at {csv}, line 3; "
                               "a lesion's patient_id must be the same in all its rows"),
    "patient_gender_disagrees": ([PAD_HEADER, _pad_row(1, 10, 1), _pad_row(1, 11, 2, gender="MALE")],
                                 "patient PAT_1 has gender 'FEMALE' at {csv}, line 2 but 'MALE' at {csv}, line 3; "
                                 "a patient's gender must be the same in all its rows"),
    "header_only": ([PAD_HEADER], "{csv}, line 2: no data rows after the header; expected at least one"),
    "bad_fitzpatrick": ([PAD_HEADER, _pad_row(1, 10, 1).replace(",3.0,", ",7.0,")],
                        "{csv}, line 2: fitspatrick is '7.0'; expected 1.0 to 6.0 or blank"),
    "bad_lesion_id": ([PAD_HEADER, _pad_row(1, 10, 1).replace("PAT_1,10,", "PAT_1,ten,")],
                      "{csv}, line 2: lesion_id is 'ten'; expected an integer"),
    "bad_biopsed": ([PAD_HEADER, _pad_row(1, 10, 1)[:-4] + "yes"],
                    "{csv}, line 2: biopsed is 'yes'; expected True, False or blank"),
}


@pytest.mark.parametrize("case", sorted(PAD_CASES))
def test_malformed_pad_ufes20_metadata_names_rows(tmp_path, case):
    lines, expected = PAD_CASES[case]
    root = _pad(tmp_path / "manual", lines)
    assert _error("derm_pad_ufes20", root, tmp_path) == expected.format(csv=root / "metadata.csv")


def test_pad_ufes20_blank_gender_is_unknown_not_a_disagreement(tmp_path):
    root = _pad(tmp_path / "manual", [PAD_HEADER, _pad_row(1, 10, 1), _pad_row(1, 11, 2, gender="")])
    assert len(_examples(_build("derm_pad_ufes20", root, tmp_path / "tfds"))) == 2


NIH_CASES = {
    "empty_test_list": (dict(test=""), "test_list.txt", "{f}, line 1: empty file, expected one entry per line"),
    "blank_lines_only": (dict(train="\n\n"), "train_val_list.txt",
                         "{f}, line 1: empty file, expected one entry per line"),
    "latin1_list": (dict(train="00000001_000.png\n\xe9.png\n"), "train_val_list.txt", None),
    "unknown_image": (dict(test="00000009_000.png\n"), "test_list.txt",
                      "{f}, line 1: image '00000009_000.png' is not in the Data_Entry csv"),
}


@pytest.mark.parametrize("case", sorted(NIH_CASES))
def test_malformed_nih_split_lists_name_file_and_line(tmp_path, case):
    kwargs, name, expected = NIH_CASES[case]
    if case == "latin1_list":
        root = _nih(tmp_path / "manual")
        (root / name).write_bytes("00000001_000.png\n\xe9.png\n".encode("latin-1"))
        expected = "{f}, line 2: byte 0xe9 is not UTF-8 (latin-1 or another legacy encoding?); save the file as UTF-8"
    else:
        root = _nih(tmp_path / "manual", **kwargs)
    assert _error("cxr_nih14", root, tmp_path) == expected.format(f=root / name)


NIH_CSV_CASES = {
    "patient_id_disagrees": ("00000002_000.png,No Finding,0,7,26,F,PA,2048,2500,0.171,0.171",
                             "{f}, line 3: Image Index 00000002_000.png names patient 2 but Patient ID is 7; "
                             "expected the first eight digits to equal Patient ID"),
    "bad_image_index": ("00000002_0.png,No Finding,0,2,26,F,PA,2048,2500,0.171,0.171",
                        "{f}, line 3: Image Index '00000002_0.png' is not of the form NNNNNNNN_NNN.png"),
    "follow_up_not_integer": ("00000002_000.png,No Finding,x,2,26,F,PA,2048,2500,0.171,0.171",
                              "{f}, line 3: Follow-up # is 'x'; expected an integer"),
}


@pytest.mark.parametrize("case", sorted(NIH_CSV_CASES))
def test_malformed_nih_data_entry_names_file_and_line(tmp_path, case):
    row, expected = NIH_CSV_CASES[case]
    root = _nih(tmp_path / "manual", rows=[NIH_ROWS[0], row])
    assert _error("cxr_nih14", root, tmp_path) == expected.format(f=root / "Data_Entry_2017_v2020.csv")


def test_nih_follow_up_other_than_the_file_name_is_kept_as_stated(tmp_path):
    """As in the real v2020 file (00000003_001.png has Follow-up # 0): only the patient part must agree."""
    rows = ["00000001_001.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143",
            "00000002_000.png,No Finding,7,2,26,F,PA,2048,2500,0.171,0.171"]
    root = _nih(tmp_path / "manual", rows=rows, train="00000001_001.png\n")
    (root / "images" / "00000001_000.png").rename(root / "images" / "00000001_001.png")
    builder = _build("cxr_nih14", root, tmp_path / "tfds")
    got = {ex["image_index"].decode(): int(ex["follow_up"]) for split in ("train", "test")
           for ex in _examples(builder, split)}
    assert got == {"00000001_001.png": 0, "00000002_000.png": 7}


def test_gzip_compressed_csv_is_read_and_a_truncated_one_is_one_line(tmp_path):
    root = _nih(tmp_path / "manual")
    csv_path = root / "Data_Entry_2017_v2020.csv"
    plain = csv_path.read_bytes()
    csv_path.write_bytes(gzip.compress(plain))
    assert len(_examples(_build("cxr_nih14", root, tmp_path / "tfds"))) == 1
    csv_path.write_bytes(gzip.compress(plain)[:-12])
    assert _error("cxr_nih14", root, tmp_path / "again") == (
        f"{csv_path}, line 1: broken gzip file (Compressed file ended before the end-of-stream marker was "
        "reached); expected a complete .gz or plain text")


def test_chexpert_empty_valid_split_is_an_error(tmp_path):
    root = _chexpert(tmp_path / "manual", valid_rows=[])
    csv_path = root / "CheXpert-v1.0-small" / "valid.csv"
    assert _error("cxr_chexpert", root, tmp_path) == (
        f"{csv_path}, line 2: no data rows after the header; expected at least one")


# ----------------------------------------------------------------------------------- image modes

V16 = 51528  # round(51528 * 255 / 65535) = 200; a shift by 8 bits gives 201, clipping gives 255
CMYK = (0, 100, 200, 50)  # -> RGB (205, 125, 44) by (255 - c) * (255 - k) / 255


def _mode_image(mode: str) -> tuple[Image.Image, tuple[int, int, int]]:
    """An 8x8 constant image in PIL `mode` and the RGB value it must decode to."""
    if mode == "I;16":
        return Image.fromarray(np.full((8, 8), V16, np.uint16)), (200, 200, 200)
    if mode == "I":
        return Image.fromarray(np.full((8, 8), V16, np.int32)), (200, 200, 200)
    if mode == "L":
        return Image.new("L", (8, 8), 77), (77, 77, 77)
    if mode == "1":
        return Image.new("1", (8, 8), 1), (255, 255, 255)
    if mode == "LA":
        return Image.new("LA", (8, 8), (77, 0)), (77, 77, 77)
    if mode == "RGBA":
        return Image.new("RGBA", (8, 8), (10, 200, 30, 0)), (10, 200, 30)
    if mode in ("P", "P+transparency"):
        image = Image.new("P", (8, 8), 1)
        image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
        if mode == "P+transparency":
            image.info["transparency"] = 1
        return image, (10, 200, 30)
    if mode == "CMYK":
        return Image.new("CMYK", (8, 8), CMYK), (205, 125, 44)
    return Image.new("RGB", (8, 8), (10, 200, 30)), (10, 200, 30)


def _luma(rgb):
    r, g, b = rgb
    return round((r * 299 + g * 587 + b * 114) / 1000)


PNG_MODES = ("L", "I;16", "1", "LA", "RGB", "RGBA", "P", "P+transparency")


@pytest.mark.parametrize("target", ["L", "RGB"])
@pytest.mark.parametrize("mode", [*PNG_MODES, "CMYK"])
def test_every_image_mode_is_converted_faithfully(tmp_path, mode, target):
    image, rgb = _mode_image(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path, format="JPEG" if mode == "CMYK" else "PNG", **(
        {"transparency": 1} if mode == "P+transparency" else {}))
    out = np.asarray(Image.open(io.BytesIO(_common.load_image(path, mode=target, size=None, where="w"))))
    if target == "L":
        expected = rgb[0] if len(set(rgb)) == 1 else _luma(rgb)
        assert out.ndim == 2 and abs(int(out.mean()) - expected) <= (2 if mode == "CMYK" else 0)
    else:
        assert out.shape[-1] == 3
        assert np.abs(out.reshape(-1, 3).mean(axis=0) - rgb).max() <= (3 if mode == "CMYK" else 0)


@pytest.mark.parametrize("target, expected", [("L", 200), ("RGB", 200)])
def test_32_bit_grayscale_holding_16_bit_values_is_rescaled(target, expected):
    image, _ = _mode_image("I")
    out = np.asarray(_common.convert_mode(image, target))
    assert out.min() == out.max() == expected


def test_sixteen_bit_values_outside_range_are_an_error_not_clipped():
    image = Image.fromarray(np.full((4, 4), 70000, np.int32))
    with pytest.raises(ValueError, match=r"^w: image p has I values 70000..70000, outside the 16-bit range 0..65535$"):
        _common.convert_mode(image, "L", where="w", path="p")


BUILDER_MODES = [  # (builder, a mode its real files can hold)
    ("cxr_chexpert", "L"), ("cxr_chexpert", "RGB"), ("cxr_chexpert", "CMYK"),
    ("cxr_nih14", "I;16"), ("cxr_nih14", "RGBA"), ("cxr_nih14", "LA"), ("cxr_nih14", "P"),
    ("derm_ham10000", "CMYK"), ("derm_ham10000", "L"),
    ("derm_pad_ufes20", "I;16"), ("derm_pad_ufes20", "RGBA"), ("derm_pad_ufes20", "P+transparency"),
    ("derm_pad_ufes20", "1"),
]


@pytest.mark.parametrize("name, mode", BUILDER_MODES)
def test_builders_decode_every_image_mode(tmp_path, name, mode):
    image, rgb = _mode_image(mode)
    root = tmp_path / "manual"
    if name == "cxr_chexpert":
        _chexpert(root, image=image)
    elif name == "cxr_nih14":
        _nih(root, image=image)
    elif name == "derm_ham10000":
        _ham(root, HAM_OK, image=image)
    else:
        _pad(root, PAD_OK, image=image)
    example = _examples(_build(name, root, tmp_path / "tfds"))[0]
    pixels = example["image"].reshape(-1, example["image"].shape[-1]).mean(axis=0)
    tolerance = 3 if mode == "CMYK" or name.startswith("derm") else 0  # derm builds store JPEG
    if pixels.shape[0] == 1:
        assert abs(pixels[0] - (rgb[0] if len(set(rgb)) == 1 else _luma(rgb))) <= tolerance
    else:
        assert np.abs(pixels - rgb).max() <= tolerance
