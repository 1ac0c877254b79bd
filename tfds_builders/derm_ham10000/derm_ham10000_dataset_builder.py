"""HAM10000 dermoscopic images (ViDIR) with raw diagnosis, lesion ids and metadata."""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import _common

DIAGNOSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HEADER = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset")  # Dataverse
KAGGLE_HEADER = HEADER[:-1]  # Kaggle copy: no `dataset` column
METADATA_FILES = ("HAM10000_metadata.csv", "HAM10000_metadata")  # FLamby ships the second name
IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2")

_OBTAIN = ("Harvard Dataverse https://doi.org/10.7910/DVN/DBW86T (CC BY-NC 4.0) or Kaggle "
           "kmader/skin-cancer-mnist-ham10000")
_EXPECTED = ("HAM10000_metadata.csv (or HAM10000_metadata) and the folders HAM10000_images_part_1/ and "
             "HAM10000_images_part_2/ holding ISIC_XXXXXXX.jpg")


@dataclasses.dataclass(frozen=True)
class Record(_common.SourceRow):
    """One metadata row, parsed, with the image file it names."""

    image_id: str
    lesion_id: str
    diagnosis: str
    dx_type: str
    age: float
    sex: str
    localization: str
    site: str
    file: pathlib.Path | None  # None from parse_metadata (no images looked up)


def manual_dir_of(dl_manager) -> pathlib.Path:
    """dl_manager.manual_dir, or FileNotFoundError naming the expected layout and where to get the data."""
    return _common.manual_dir_of(dl_manager, dataset="derm_ham10000", expected=_EXPECTED, obtain=_OBTAIN)


def find_metadata(manual_dir: pathlib.Path) -> pathlib.Path:
    """The metadata file in manual_dir (either accepted name)."""
    for name in METADATA_FILES:
        if (manual_dir / name).is_file():
            return manual_dir / name
    raise FileNotFoundError(
        f"derm_ham10000: no {' or '.join(METADATA_FILES)} in {manual_dir}; expected {_EXPECTED}. "
        f"Obtain the data from {_OBTAIN}."
    )


def index_images(manual_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Maps `ISIC_XXXXXXX.jpg` -> path over both image folders (an image in both is an error)."""
    folders = [manual_dir / f for f in IMAGE_FOLDERS if (manual_dir / f).is_dir()]
    if not folders:
        raise FileNotFoundError(
            f"derm_ham10000: neither {' nor '.join(IMAGE_FOLDERS)} exists in {manual_dir}; expected {_EXPECTED}. "
            f"Obtain the data from {_OBTAIN}."
        )
    found: dict[str, pathlib.Path] = {}
    for folder in folders:
        for name, path in _common.index_files(folder, suffixes=(".jpg",)).items():
            if name in found:
                raise ValueError(f"derm_ham10000: image {name} found twice: {found[name]} and {path}; keep one copy")
            found[name] = path
    return found


def parse_metadata(csv_path) -> list[Record]:
    """Parses a HAM10000 metadata file (either header; plain or .gz) without touching any image: the
    records in file order, `file` None. Raises ValueError naming file and line on bad input, and naming
    both rows when two images of one lesion have different dx."""
    table = _common.read_csv(csv_path, headers=[HEADER, KAGGLE_HEADER])
    records, seen = [], {}
    for line, row in table.records():
        image_id, dx = row["image_id"], row["dx"]
        if dx not in DIAGNOSES:
            raise _common.row_error(table.path, line, f"dx is {dx!r}; expected one of {', '.join(DIAGNOSES)}")
        if image_id in seen:
            raise _common.row_error(table.path, line, f"image_id {image_id!r} already listed on line {seen[image_id]}")
        seen[image_id] = line
        try:
            age = float(row["age"]) if row["age"].strip() else -1.0
        except ValueError:
            raise _common.row_error(table.path, line, f"age is {row['age']!r}; expected a number or blank") from None
        records.append(Record(
            csv=table.path, line=line, image_id=image_id, lesion_id=row["lesion_id"], diagnosis=dx,
            dx_type=row["dx_type"], age=age, sex=row["sex"], localization=row["localization"],
            site=row.get("dataset", ""), file=None,
        ))
    _common.check_constant(records, key="lesion_id", fields=("diagnosis",), case="lesion")
    return records


def read_metadata(manual_dir) -> list[Record]:
    """`parse_metadata` of manual_dir's metadata file with every image resolved in the two image
    folders; a row whose image is missing is a FileNotFoundError naming file and line."""
    manual_dir = pathlib.Path(manual_dir)
    records = parse_metadata(find_metadata(manual_dir))
    images = index_images(manual_dir)
    resolved = []
    for rec in records:
        file = images.get(f"{rec.image_id}.jpg")
        if file is None:
            raise FileNotFoundError(
                f"{rec.where}: image {rec.image_id}.jpg not found in "
                f"{' or '.join(f + '/' for f in IMAGE_FOLDERS)} under {manual_dir}"
            )
        resolved.append(dataclasses.replace(rec, file=file))
    return resolved


def group_by_lesion(records: list[Record]) -> list[list[Record]]:
    """Records grouped by lesion_id, lesions in order of first appearance, images in file order."""
    groups: dict[str, list[Record]] = {}
    for rec in records:
        groups.setdefault(rec.lesion_id, []).append(rec)
    return list(groups.values())


class Builder(tfds.core.GeneratorBasedBuilder):
    """HAM10000 dermoscopic images (manual download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _common.image_configs(original="source JPEG bytes", encoding="JPEG quality 95", group="lesion")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Download HAM10000 from {_OBTAIN}.
    Unzip it so that manual_dir contains {_EXPECTED}.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        image = tfds.features.Image(shape=(None, None, 3) if size is None else (size, size, 3),
                                    encoding_format="jpeg")
        if self.builder_config.grouped:
            features = tfds.features.FeaturesDict({
                "lesion_id": tfds.features.Text(),
                "images": tfds.features.Sequence({"image": image, "image_id": tfds.features.Text()}),
            })
            supervised_keys = None
        else:
            features = tfds.features.FeaturesDict({
                "image": image,
                "image_id": tfds.features.Text(),
                "lesion_id": tfds.features.Text(),
                "diagnosis": tfds.features.ClassLabel(names=DIAGNOSES),
                "dx_type": tfds.features.Text(),
                "age": tfds.features.Scalar(dtype=np.float32),
                "sex": tfds.features.Text(),
                "localization": tfds.features.Text(),
                "site": tfds.features.Text(),
            })
            supervised_keys = ("image", "diagnosis")
        return self.dataset_info_from_configs(
            features=features, supervised_keys=supervised_keys, homepage="https://doi.org/10.7910/DVN/DBW86T",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"train": self._generate_examples(read_metadata(manual_dir_of(dl_manager)))}

    def _load(self, rec: Record) -> bytes:
        return _common.load_image(rec.file, mode="RGB", size=self.builder_config.size, where=rec.where)

    def _generate_examples(self, records: list[Record]):
        if self.builder_config.grouped:
            yield from self._generate_lesions(records)
            return
        for rec, image in zip(records, _common.imap_ordered(self._load, records)):
            yield rec.image_id, {
                "image": image, "image_id": rec.image_id, "lesion_id": rec.lesion_id, "diagnosis": rec.diagnosis,
                "dx_type": rec.dx_type, "age": rec.age, "sex": rec.sex, "localization": rec.localization,
                "site": rec.site,
            }

    def _generate_lesions(self, records: list[Record]):
        groups = group_by_lesion(records)
        ordered = [rec for group in groups for rec in group]
        images = _common.imap_ordered(self._load, ordered)
        for group in groups:
            yield group[0].lesion_id, {
                "lesion_id": group[0].lesion_id,
                "images": [{"image": next(images), "image_id": rec.image_id} for rec in group],
            }
