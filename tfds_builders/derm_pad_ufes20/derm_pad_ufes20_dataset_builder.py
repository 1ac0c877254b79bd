"""PAD-UFES-20 smartphone clinical skin-lesion images with raw diagnosis, patient/lesion ids and metadata."""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import _common

DIAGNOSES = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
HEADER = (
    "patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother", "age",
    "pesticide", "gender", "skin_cancer_history", "cancer_history", "has_piped_water",
    "has_sewage_system", "fitspatrick", "region", "diameter_1", "diameter_2", "diagnostic", "itch",
    "grew", "hurt", "changed", "bleed", "elevation", "img_id", "biopsed",
)
METADATA_FILE = "metadata.csv"

_OBTAIN = "Mendeley Data https://doi.org/10.17632/zr7vgbcyr2.1 (CC BY 4.0)"
_EXPECTED = ("metadata.csv and images/ holding the unzipped imgs_part_1..3 archives "
             "(PAT_<patient>_<lesion>_<n>.png files, found at any folder depth)")
_BOOL = {"True": True, "False": False, "": False}


@dataclasses.dataclass(frozen=True)
class Record(_common.SourceRow):
    """One metadata row, parsed, with the image file it names."""

    img_id: str
    patient_id: str
    lesion_id: int
    gender: str
    diagnosis: str
    fitzpatrick: int
    region: str
    biopsied: bool
    file: pathlib.Path | None  # None from parse_metadata (no images looked up)


def manual_dir_of(dl_manager) -> pathlib.Path:
    """dl_manager.manual_dir, or FileNotFoundError naming the expected layout and where to get the data."""
    return _common.manual_dir_of(dl_manager, dataset="derm_pad_ufes20", expected=_EXPECTED, obtain=_OBTAIN)


def _fitzpatrick(value: str, path, line: int) -> int:
    if not value.strip():
        return -1
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number not in (1, 2, 3, 4, 5, 6):
        raise _common.row_error(path, line, f"fitspatrick is {value!r}; expected 1.0 to 6.0 or blank")
    return int(number)


def parse_metadata(csv_path) -> list[Record]:
    """Parses a PAD-UFES-20 metadata.csv without touching any image: the records in file order,
    `file` None. Raises ValueError naming file and line on bad input, and naming both rows when a
    lesion's patient or diagnostic, or a patient's gender, differ between rows."""
    table = _common.read_csv(csv_path, headers=[HEADER])
    records, seen = [], {}
    for line, row in table.records():
        img_id, dx = row["img_id"], row["diagnostic"]
        if dx not in DIAGNOSES:
            raise _common.row_error(table.path, line, f"diagnostic is {dx!r}; expected one of {', '.join(DIAGNOSES)}")
        if img_id in seen:
            raise _common.row_error(table.path, line, f"img_id {img_id!r} already listed on line {seen[img_id]}")
        seen[img_id] = line
        try:
            lesion_id = int(row["lesion_id"])
        except ValueError:
            raise _common.row_error(
                table.path, line, f"lesion_id is {row['lesion_id']!r}; expected an integer") from None
        if row["biopsed"] not in _BOOL:
            raise _common.row_error(table.path, line, f"biopsed is {row['biopsed']!r}; expected True, False or blank")
        if not img_id.startswith(f"{row['patient_id']}_{lesion_id}_"):
            raise _common.row_error(
                table.path, line, f"img_id {img_id!r} does not match patient_id {row['patient_id']!r} and "
                                  f"lesion_id {lesion_id}; expected {row['patient_id']}_{lesion_id}_<n>.png")
        records.append(Record(
            csv=table.path, line=line, img_id=img_id, patient_id=row["patient_id"], lesion_id=lesion_id,
            gender=row["gender"], diagnosis=dx, fitzpatrick=_fitzpatrick(row["fitspatrick"], table.path, line), region=row["region"],
            biopsied=_BOOL[row["biopsed"]], file=None,
        ))
    _common.check_constant(records, key="lesion_id", fields=("patient_id", "diagnosis"), case="lesion")
    _common.check_constant(records, key="patient_id", fields=("gender",), case="patient")
    return records


def read_metadata(manual_dir) -> list[Record]:
    """`parse_metadata` of manual_dir/metadata.csv with every image resolved under manual_dir; a row
    whose image is missing is a FileNotFoundError naming file and line."""
    manual_dir = pathlib.Path(manual_dir)
    if not (manual_dir / METADATA_FILE).is_file():
        raise FileNotFoundError(
            f"derm_pad_ufes20: no {METADATA_FILE} in {manual_dir}; expected {_EXPECTED}. "
            f"Obtain the data from {_OBTAIN}."
        )
    records = parse_metadata(manual_dir / METADATA_FILE)
    images = _common.index_files(manual_dir, suffixes=(".png",))
    resolved = []
    for rec in records:
        file = images.get(rec.img_id)
        if file is None:
            raise FileNotFoundError(f"{rec.csv}, line {rec.line}: image {rec.img_id} not found under {manual_dir}")
        resolved.append(dataclasses.replace(rec, file=file))
    return resolved


class Builder(tfds.core.GeneratorBasedBuilder):
    """PAD-UFES-20 smartphone clinical images (manual download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _common.image_configs(original="source resolution, source PNG bytes",
                                            encoding="JPEG quality 95")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Download zr7vgbcyr2-1.zip from {_OBTAIN}, unzip it, then unzip images/imgs_part_1.zip,
    imgs_part_2.zip and imgs_part_3.zip in place, so that manual_dir contains {_EXPECTED}.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        if size is None:
            image = tfds.features.Image(shape=(None, None, 3), encoding_format="png")
        else:
            image = tfds.features.Image(shape=(size, size, 3), encoding_format="jpeg")
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": image,
                "img_id": tfds.features.Text(),
                "patient_id": tfds.features.Text(),
                "lesion_id": tfds.features.Scalar(dtype=np.int32),
                "diagnosis": tfds.features.ClassLabel(names=DIAGNOSES),
                "fitzpatrick": tfds.features.Scalar(dtype=np.int32),
                "region": tfds.features.Text(),
                "biopsied": tfds.features.Scalar(dtype=np.bool_),
            }),
            supervised_keys=("image", "diagnosis"),
            homepage="https://doi.org/10.17632/zr7vgbcyr2.1",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"train": self._generate_examples(read_metadata(manual_dir_of(dl_manager)))}

    def _load(self, rec: Record) -> bytes:
        return _common.load_image(rec.file, mode="RGB", size=self.builder_config.size, where=rec.where)

    def _generate_examples(self, records: list[Record]):
        for rec, image in zip(records, _common.imap_ordered(self._load, records)):
            yield rec.img_id, {
                "image": image, "img_id": rec.img_id, "patient_id": rec.patient_id, "lesion_id": rec.lesion_id,
                "diagnosis": rec.diagnosis, "fitzpatrick": rec.fitzpatrick, "region": rec.region,
                "biopsied": rec.biopsied,
            }
