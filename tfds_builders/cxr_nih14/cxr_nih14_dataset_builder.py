"""NIH ChestX-ray14 frontal chest radiographs with the 14 text-mined findings and the official split."""
from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import _common

FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
NO_FINDING = "No Finding"
CSV_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
# The bracketed names contain commas, so a CSV parser splits them into extra columns.
HEADER_V2020 = (
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
    "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
)
HEADER_2017 = (*HEADER_V2020, "")  # every line of the 2017 file ends with a trailing comma
SPLIT_FILES = (("train", "train_val_list.txt"), ("test", "test_list.txt"))

_OBTAIN = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
_EXPECTED = (
    "Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv), train_val_list.txt, test_list.txt and the PNG images "
    "in images/ (or images_001/images/ ... images_012/images/ as unpacked from the 12 archives)"
)
_INDEX_RE = re.compile(r"^(\d{8})_(\d{3})\.png$")


def label_key(finding: str) -> str:
    """'Pleural_Thickening' -> 'pleural_thickening', 'No Finding' -> 'no_finding'."""
    return finding.lower().replace(" ", "_")


@dataclasses.dataclass(frozen=True)
class Record(_common.SourceRow):
    """One Data_Entry row, parsed."""

    image_index: str
    patient_id: int
    follow_up: int
    age: int
    sex: str
    view: str
    labels: dict


def find_csv(manual_dir: pathlib.Path) -> pathlib.Path:
    """The Data_Entry csv to read (the 2020 re-release when both are present)."""
    for name in CSV_FILES:
        if (manual_dir / name).is_file():
            return manual_dir / name
    raise FileNotFoundError(
        f"cxr_nih14: neither {' nor '.join(CSV_FILES)} found in {manual_dir}; expected {_EXPECTED}. "
        f"Obtain the data from {_OBTAIN}."
    )


def _int(table, line, row, column) -> int:
    try:
        return int(row[column])
    except ValueError:
        raise _common.row_error(table.path, line, f"{column} is {row[column]!r}; expected an integer") from None


def read_entries(csv_path: pathlib.Path) -> dict[str, Record]:
    """Parses Data_Entry_2017[_v2020].csv (plain or .gz; no images needed) into {Image Index: Record}, in
    file order; ValueError names file and line."""
    table = _common.read_csv(csv_path, headers=[HEADER_V2020, HEADER_2017])
    entries: dict[str, Record] = {}
    for line, row in table.records():
        index = row["Image Index"]
        match = _INDEX_RE.match(index)
        if not match:
            raise _common.row_error(table.path, line, f"Image Index {index!r} is not of the form NNNNNNNN_NNN.png")
        if index in entries:
            raise _common.row_error(
                table.path, line, f"Image Index {index} already listed on line {entries[index].line}"
            )
        patient_id = _int(table, line, row, "Patient ID")
        # `Follow-up #` is kept as stated: in the v2020 file 24,106 of 112,120 rows have a number other than
        # the file name's (00000003_001.png has Follow-up # 0). The patient part always equals Patient ID.
        follow_up = _int(table, line, row, "Follow-up #")
        if int(match.group(1)) != patient_id:
            raise _common.row_error(
                table.path, line,
                f"Image Index {index} names patient {int(match.group(1))} but Patient ID is {patient_id}; "
                f"expected the first eight digits to equal Patient ID",
            )
        found = row["Finding Labels"].split("|")
        if found != [NO_FINDING]:
            unknown = [f for f in found if f not in FINDINGS]
            if unknown:
                raise _common.row_error(
                    table.path, line,
                    f"unknown finding {unknown[0]!r} in {row['Finding Labels']!r}; expected '|'-joined names from "
                    f"{', '.join(FINDINGS)} or exactly {NO_FINDING!r}",
                )
        labels = {label_key(f): f in found for f in (*FINDINGS, NO_FINDING)}
        entries[index] = Record(
            csv=table.path, line=line, image_index=index, patient_id=patient_id, follow_up=follow_up,
            age=_int(table, line, row, "Patient Age"), sex=row["Patient Gender"], view=row["View Position"],
            labels=labels,
        )
    return entries


def read_split_lists(
    manual_dir: pathlib.Path, entries: dict[str, Record]
) -> dict[str, list[tuple[pathlib.Path, int, Record]]]:
    """{split: [(list file, line, record)]}; raises ValueError on unknown images or patient overlap."""
    splits, owner, listed = {}, {}, {}
    for split, name in SPLIT_FILES:
        path = manual_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"cxr_nih14: {path} not found; expected {_EXPECTED}. Obtain it from {_OBTAIN}.")
        items = []
        for line, index in _common.read_text_lines(path):
            if index in listed:
                raise _common.row_error(path, line, f"image {index} already listed at {listed[index]}")
            listed[index] = f"{path}, line {line}"
            rec = entries.get(index)
            if rec is None:
                raise _common.row_error(path, line, f"image {index!r} is not in the Data_Entry csv")
            prev = owner.setdefault(rec.patient_id, (path, line))
            if prev[0] != path:
                raise ValueError(
                    f"cxr_nih14: patient {rec.patient_id} is in two official splits: "
                    f"{prev[0]}, line {prev[1]} and {path}, line {line}"
                )
            items.append((path, line, rec))
        splits[split] = items
    return splits


def image_dirs(manual_dir: pathlib.Path) -> list[pathlib.Path]:
    """images/ and images_NNN/ folders of manual_dir."""
    dirs = sorted(p for p in manual_dir.iterdir() if p.is_dir() and re.fullmatch(r"images(_\d{3})?", p.name))
    if not dirs:
        raise FileNotFoundError(f"cxr_nih14: no images/ folder in {manual_dir}; expected {_EXPECTED}")
    return dirs


class Builder(tfds.core.GeneratorBasedBuilder):
    """NIH ChestX-ray14 (manual download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _common.image_configs(original="source resolution (1024x1024 PNG)", encoding="PNG")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Download ChestX-ray14 from {_OBTAIN} and extract the 12 image archives.
    manual_dir must contain {_EXPECTED}.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 1)),
                "image_index": tfds.features.Text(),
                "patient_id": tfds.features.Scalar(dtype=np.int32),
                "follow_up": tfds.features.Scalar(dtype=np.int32),
                "view": tfds.features.Text(),
                "sex": tfds.features.Text(),
                "age": tfds.features.Scalar(dtype=np.int32),
                "labels": tfds.features.FeaturesDict(
                    {label_key(f): tfds.features.Scalar(dtype=np.bool_) for f in (*FINDINGS, NO_FINDING)}
                ),
            }),
            homepage=_OBTAIN,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = _common.manual_dir_of(
            dl_manager, dataset="cxr_nih14", expected=_EXPECTED, obtain=_OBTAIN
        )
        splits = read_split_lists(manual_dir, read_entries(find_csv(manual_dir)))
        files = {}
        for folder in image_dirs(manual_dir):
            for name, path in _common.index_files(folder, suffixes=[".png"]).items():
                if name in files:
                    raise ValueError(f"cxr_nih14: image {name} found twice: {files[name]} and {path}; keep one copy")
                files[name] = path
        return {split: self._generate_examples(items, files) for split, items in splits.items()}

    def _generate_examples(self, items, files):
        size = self.builder_config.size

        def load(item):
            _, _, rec = item
            path = files.get(rec.image_index)
            if path is None:
                raise FileNotFoundError(f"{rec.where}: image {rec.image_index} not found under images/ or images_NNN/")
            return _common.load_image(path, mode="L", size=size, where=rec.where)

        for (_, _, rec), image in zip(items, _common.imap_ordered(load, items)):
            yield rec.image_index, {
                "image": image, "image_index": rec.image_index, "patient_id": rec.patient_id,
                "follow_up": rec.follow_up, "view": rec.view, "sex": rec.sex, "age": rec.age, "labels": rec.labels,
            }
