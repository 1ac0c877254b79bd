"""CheXpert (Stanford) chest radiographs with raw label states, patient/study ids and metadata."""
from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import _common

OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
COMPETITION_TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
LABEL_STATES = ("positive", "negative", "uncertain", "blank")
VIEWS = ("frontal", "lateral")
HEADER = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS)
TEST_HEADER = ("Path", *OBSERVATIONS)
TOP_FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")

_STATE_OF_VALUE = {
    "1.0": "positive", "1": "positive",
    "0.0": "negative", "0": "negative",
    "-1.0": "uncertain", "-1": "uncertain",
    "": "blank",
}
_VIEW_OF_VALUE = {"Frontal": "frontal", "Lateral": "lateral"}
_PATH_RE = re.compile(
    r"^(?:CheXpert-v1\.0(?:-small)?/)?(train|valid|test)/(patient\d{5,})/(study\d+)/view(\d+)_(frontal|lateral)\.jpg$"
)
_OBTAIN = "https://stanfordmlgroup.github.io/competitions/chexpert/ (Stanford AIMI, research use agreement)"
_EXPECTED = (
    "CheXpert-v1.0-small/ or CheXpert-v1.0/ holding train.csv, valid.csv, train/ and valid/ "
    "(optionally test_labels.csv and test/), or those files directly"
)
SPLIT_FILES = (
    ("train", "train.csv", HEADER), ("validation", "valid.csv", HEADER), ("test", "test_labels.csv", TEST_HEADER)
)
_RAGGED_NOTE = (
    " Images of one patient can differ in size, which a Sequence cannot stack: read this config with "
    "decoders={'images': {'image': tfds.decode.SkipDecoding()}} and decode each image."
)


def snake_case(observation: str) -> str:
    """'Pleural Effusion' -> 'pleural_effusion'."""
    return observation.lower().replace(" ", "_")


_LABEL_KEYS = tuple((obs, snake_case(obs)) for obs in OBSERVATIONS)


@dataclasses.dataclass(frozen=True)
class Record(_common.SourceRow):
    """One CSV row, parsed."""

    path: str  # the Path value as written
    dataset_dir: pathlib.Path  # the folder `rel` is relative to
    rel: str  # `path` without the CheXpert-v1.0[-small]/ top folder
    patient_id: str
    study_id: str
    view: str
    ap_pa: str
    sex: str
    age: int
    labels: dict

    @property
    def file(self) -> pathlib.Path:
        """The image file this row names (built on use: 223k Paths are slow to make up front)."""
        return self.dataset_dir / self.rel


def find_dataset_dir(manual_dir) -> pathlib.Path:
    """The folder holding train.csv: manual_dir/CheXpert-v1.0-small, manual_dir/CheXpert-v1.0 or manual_dir."""
    manual_dir = _common.require_manual_dir(manual_dir, dataset="cxr_chexpert", expected=_EXPECTED, obtain=_OBTAIN)
    found = [manual_dir / top for top in TOP_FOLDERS if (manual_dir / top / "train.csv").is_file()]
    if len(found) > 1:
        raise ValueError(
            f"cxr_chexpert: {manual_dir} holds both {found[0].name}/ and {found[1].name}/; "
            "point manual_dir at a folder containing only one variant"
        )
    if found:
        return found[0]
    if (manual_dir / "train.csv").is_file():
        return manual_dir
    raise FileNotFoundError(
        f"cxr_chexpert: no train.csv in {manual_dir}; expected {_EXPECTED}. Obtain the data from {_OBTAIN}."
    )


def read_split(dataset_dir: pathlib.Path, csv_name: str, header, folder: str) -> list[Record]:
    """Parses one split CSV; raises ValueError naming file and line on any malformed value."""
    return read_split_csv(dataset_dir / csv_name, header=header, folder=folder, dataset_dir=dataset_dir)


def read_split_csv(csv_path, *, header=HEADER, folder: str = "train", dataset_dir=None) -> list[Record]:
    """Parses one split CSV file (plain or .gz, e.g. a full `train.csv` without its images) into records
    in file order; `file` is resolved against `dataset_dir` (default: the CSV's folder) but not opened.
    Raises ValueError naming file and line on any malformed value."""
    csv_path = pathlib.Path(csv_path)
    dataset_dir = csv_path.parent if dataset_dir is None else pathlib.Path(dataset_dir)
    table = _common.read_csv(csv_path, headers=[header])
    records, seen = [], {}
    for line, row in table.records():
        value = row["Path"]
        match = _PATH_RE.match(value)
        if not match or match.group(1) != folder:
            raise _common.row_error(
                table.path, line,
                f"Path {value!r} is not of the form "
                f"[CheXpert-v1.0[-small]/]{folder}/patientNNNNN/studyN/viewN_frontal|lateral.jpg",
            )
        if value in seen:
            raise _common.row_error(table.path, line, f"Path {value!r} already listed on line {seen[value]}")
        seen[value] = line
        _, patient, study, _, file_view = match.groups()
        labels = {}
        for obs, key in _LABEL_KEYS:
            state = _STATE_OF_VALUE.get(row[obs].strip())
            if state is None:
                raise _common.row_error(
                    table.path, line, f"column {obs!r} has value {row[obs]!r}; expected 1.0, 0.0, -1.0 or blank"
                )
            labels[key] = state
        if header == TEST_HEADER:
            view, ap_pa, sex, age = file_view, "", "", -1
        else:
            view = _VIEW_OF_VALUE.get(row["Frontal/Lateral"])
            if view is None:
                raise _common.row_error(
                    table.path, line, f"Frontal/Lateral is {row['Frontal/Lateral']!r}; expected Frontal or Lateral"
                )
            try:
                age = int(row["Age"])
            except ValueError:
                raise _common.row_error(table.path, line, f"Age is {row['Age']!r}; expected an integer") from None
            ap_pa, sex = row["AP/PA"], row["Sex"]
        rel = value.split("/", 1)[1] if value.startswith(TOP_FOLDERS) else value
        records.append(
            Record(
                csv=table.path, line=line, path=value, dataset_dir=dataset_dir, rel=rel, patient_id=patient,
                study_id=f"{patient}/{study}", view=view, ap_pa=ap_pa, sex=sex, age=age, labels=labels,
            )
        )
    return records


def check_patient_disjoint(splits: dict[str, list[Record]]) -> None:
    """Raises ValueError if one patient appears in two splits."""
    first: dict[str, Record] = {}
    for records in splits.values():
        for rec in records:
            other = first.setdefault(rec.patient_id, rec)
            if other.csv != rec.csv:
                raise ValueError(
                    f"cxr_chexpert: {rec.patient_id} is in two official splits: {other.where} and {rec.where}"
                )


class Builder(tfds.core.GeneratorBasedBuilder):
    """CheXpert chest radiographs (manual download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _common.image_configs(original="source resolution", encoding="PNG", group="patient",
                                            grouped_original_note=_RAGGED_NOTE)
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Register and download CheXpert from {_OBTAIN}.
    Unzip it so that manual_dir contains {_EXPECTED}.
    For the test split, place the released test_labels.csv and test/ next to valid.csv.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        image = tfds.features.Image(shape=(None, None, 1))
        view = tfds.features.ClassLabel(names=VIEWS)
        if self.builder_config.grouped:
            features = tfds.features.FeaturesDict({
                "patient_id": tfds.features.Text(),
                "images": tfds.features.Sequence({
                    "image": image, "path": tfds.features.Text(), "study_id": tfds.features.Text(), "view": view,
                }),
            })
        else:
            features = tfds.features.FeaturesDict({
                "image": image,
                "path": tfds.features.Text(),
                "patient_id": tfds.features.Text(),
                "study_id": tfds.features.Text(),
                "view": view,
                "ap_pa": tfds.features.Text(),
                "sex": tfds.features.Text(),
                "age": tfds.features.Scalar(dtype=np.int32),
                "labels": tfds.features.FeaturesDict(
                    {snake_case(o): tfds.features.ClassLabel(names=LABEL_STATES) for o in OBSERVATIONS}
                ),
            })
        return self.dataset_info_from_configs(
            features=features,
            homepage="https://stanfordmlgroup.github.io/competitions/chexpert/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        dataset_dir = find_dataset_dir(_common.manual_dir_of(
            dl_manager, dataset="cxr_chexpert", expected=_EXPECTED, obtain=_OBTAIN))
        splits = {}
        for split, csv_name, header in SPLIT_FILES:
            folder = {"train": "train", "validation": "valid", "test": "test"}[split]
            if split == "test" and not ((dataset_dir / csv_name).is_file() and (dataset_dir / "test").is_dir()):
                continue
            if split != "test" and not (dataset_dir / csv_name).is_file():
                raise FileNotFoundError(
                    f"cxr_chexpert: {dataset_dir / csv_name} not found; expected {_EXPECTED}. Obtain it from {_OBTAIN}."
                )
            splits[split] = read_split(dataset_dir, csv_name, header, folder)
        check_patient_disjoint(splits)
        return {split: self._generate_examples(records) for split, records in splits.items()}

    def _load(self, rec: Record) -> bytes:
        return _common.load_image(rec.file, mode="L", size=self.builder_config.size, where=rec.where)

    def _generate_examples(self, records: list[Record]):
        if self.builder_config.grouped:
            yield from self._generate_patients(records)
            return
        for rec, image in zip(records, _common.imap_ordered(self._load, records)):
            yield rec.path, {
                "image": image, "path": rec.path, "patient_id": rec.patient_id, "study_id": rec.study_id,
                "view": rec.view, "ap_pa": rec.ap_pa, "sex": rec.sex, "age": rec.age, "labels": rec.labels,
            }

    def _generate_patients(self, records: list[Record]):
        records = sorted(records, key=lambda r: (r.patient_id, *_study_view_order(r)))
        group: list = []
        for rec, image in zip(records, _common.imap_ordered(self._load, records)):
            if group and group[-1][0].patient_id != rec.patient_id:
                yield _patient_example(group)
                group = []
            group.append((rec, image))
        if group:
            yield _patient_example(group)


def _patient_example(group):
    patient_id = group[0][0].patient_id
    return patient_id, {
        "patient_id": patient_id,
        "images": [{"image": img, "path": r.path, "study_id": r.study_id, "view": r.view} for r, img in group],
    }


def _study_view_order(rec: Record) -> tuple[int, int, str]:
    study, view = re.search(r"study(\d+)/view(\d+)", rec.path).groups()
    return int(study), int(view), rec.path
