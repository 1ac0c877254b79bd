"""Benchmark tasks, addressable by name: which builders, splits, labels and test sets make up a task.

A task turns the raw, source-faithful builder examples into the harmonised form the harness trains
and scores on: `Source.to_meta` gives {"label": float32 [K] (nan = ignored), "example_id": str,
"group_id": str} from an example's metadata, and the image is the builder's `image` tiled to three
channels. Label policies (CheXpert uncertainty, class harmonisation) live here.

`cxr`  : multi-label over the five CheXpert competition pathologies, mean AUC. Train/validation
         are a patient-disjoint hashed split of `cxr_chexpert` train; the in-distribution test set
         is CheXpert validation (+ test when its labels are present); the shifted test set is
         `cxr_nih14` test, Effusion mapped to Pleural Effusion. The in-distribution test set is also
         scored per study (`study_max/...`, `study_mean/...`, see `benchmark.harness.scoring`), the study
         being the `.../patientNNNNN/studyN` folder of the image path (CheXpert's official
         evaluation is per study); NIH images have no studies, so the shifted set is scored per
         image only.
`derm` : multi-class over five harmonised classes, top-1 accuracy. `derm_ham10000` is split
         lesion-disjoint into train/validation/test; the shifted test set is `derm_pad_ufes20`.
         Harmonisation: akiec (HAM) + ACK + SCC (PAD) -> akiec_ack_scc; bcc + BCC -> bcc;
         bkl + SEK -> bkl_sek; mel + MEL -> mel; nv + NEV -> nv. HAM's df and vasc have no PAD
         counterpart and are dropped from every split.
`folder:<dir>`: your own data, a folder of images with `metadata.csv` and `task.json`
         (`tfds_builders.folder_task.spec`), read by the `folder_task` builder and named by its
         task.json `name`. Multi-label states 1 / 0 / -1 (uncertain, mapped by the uncertainty
         policy) / blank (unknown: ignored); multi-class one-hot. Without a split column the
         in-distribution rows are split group-disjoint into train/validation/test as derm's are;
         shifted rows are the `shifted` test set. Bags: `case` (the group) or `study` (the
         task.json bag column), the latter the default when there is one. Rows of a folder task
         record its folder and fingerprints under `config.folder_task` (`FolderRecord`);
         `task_of_row` finds the task of such a row, at the folder a `folder:<dir>` named for
         its name (the commands' `--task=folder:<dir>`) or else where the row says.

TensorFlow is imported by the label policies when they run (in an input pipeline), and the builders'
package (TFDS, TensorFlow) by the folder-task functions, so reading the built-in tasks' definitions,
as the leaderboards do, starts neither.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

    from tfds_builders.folder_task import spec as folder_spec

UNCERTAINTY_POLICIES = ("u_ones", "u_zeros", "u_ignore")
# Which images of the grouped pretraining source form one bag (a MICLe positive pair is two images
# of one bag; the bags' images are also every method's pretraining images):
#   case     all images of the case (a CheXpert patient, a HAM10000 lesion)
#   study    the images of one CheXpert study (a patient with k studies gives k bags)
#   frontal  the frontal images of a CheXpert patient (lateral images are not used)
BAGS = ("case", "study", "frontal")

CXR_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
_CXR_KEYS = ("atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion")
_NIH_KEYS = ("atelectasis", "cardiomegaly", "consolidation", "edema", "effusion")
# cxr_chexpert ClassLabel order: positive, negative, uncertain, blank.
_POSITIVE, _NEGATIVE, _UNCERTAIN, _BLANK = 0, 1, 2, 3

DERM_CLASSES = ("akiec_ack_scc", "bcc", "bkl_sek", "mel", "nv")
HAM_TO_DERM = {"akiec": 0, "bcc": 1, "bkl": 2, "mel": 3, "nv": 4}  # df, vasc dropped
PAD_TO_DERM = {"ACK": 0, "SCC": 0, "BCC": 1, "SEK": 2, "MEL": 3, "NEV": 4}

TEST_SETS = ("in_distribution", "shifted")
FOLDER_PREFIX = "folder:"  # --task=folder:<dir>
FOLDER_BUILDER = "folder_task"


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """Task-level choices: CheXpert uncertainty policy and the hashed split fractions."""

    uncertainty: str = "u_ones"
    validation_fraction: float = 0.1
    test_fraction: float = 0.2  # derm only: HAM10000 has no official test split
    bag: str | None = None  # pretraining bag (see BAGS); None = the task's default

    def __post_init__(self):
        if self.uncertainty not in UNCERTAINTY_POLICIES:
            raise ValueError(f"--uncertainty={self.uncertainty}: expected one of {UNCERTAINTY_POLICIES}")
        if self.bag is not None and self.bag not in BAGS:
            raise ValueError(f"--bag={self.bag}: expected one of {BAGS}")


@dataclasses.dataclass(frozen=True)
class Source:
    """One builder split read through a mapping to the harmonised example form."""

    builder: str
    split: str
    to_meta: Callable[[dict], dict]
    keep: Callable[[dict], tf.Tensor] | None = None  # drops examples outside the harmonised classes


@dataclasses.dataclass(frozen=True)
class FolderRecord:
    """Where a folder task lives and what it was: sha256 of its task.json, metadata.csv and images
    (`folder_spec.fingerprints`); all but `synthetic` are recorded in rows as `config.folder_task`."""

    folder: str  # absolute path
    task_json: str
    metadata_csv: str
    images: str
    synthetic: bool  # task.json "synthetic": generated images, labelled so on boards

    def record(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "synthetic"}


@dataclasses.dataclass(frozen=True)
class Task:
    """A named task: sources for pretraining, training and the two test sets, plus scoring."""

    name: str
    kind: str  # "multilabel" or "multiclass"
    class_names: tuple[str, ...]
    primary_metric: str
    pretrain_builder: str
    pretrain_grouped_config_prefix: str  # "patients_" or "lesions_"
    pretrain_group_key: str
    train: Source  # hashed into train/validation (and test for derm) by group id
    bags: tuple[str, ...]  # the BAGS the grouped source supports; options.bag is one of them
    test_sources: dict[str, tuple[Source, ...]]
    holdout_test_from_train: bool  # derm: in-distribution test is a hashed part of `train`
    augmentation: str  # pretraining view preset
    options: TaskOptions
    test_sets: tuple[str, ...] = TEST_SETS
    # test set -> (example id -> study id): those test sets are also scored per study
    study_ids: Mapping[str, Callable[[str], str]] = dataclasses.field(default_factory=dict)
    validation: Source | None = None  # an explicit validation split (else hashed from `train`)
    pretrain_bag_key: str = "study_id"  # the grouped source's image feature naming a `study` bag
    folder: FolderRecord | None = None  # a folder task's folder (None: a registered task)
    left_out: tuple[str, ...] = ()  # the task's test sets `with_test_sets` left out


_CHEXPERT_STUDY = re.compile(r"^(.*(?:^|/)patient\d+/study\d+)/[^/]+$")


def chexpert_study_id(example_id: str) -> str:
    """The study of a CheXpert image path `.../patientNNNNN/studyN/viewK_*.jpg`: its folder.
    Raises ValueError for a path without a patient/study folder."""
    match = _CHEXPERT_STUDY.match(example_id)
    if match is None:
        raise ValueError(f"example_id {example_id!r} is not a CheXpert image path "
                         ".../patientNNNNN/studyN/<view>; cannot tell its study")
    return match.group(1)


def _cxr_policy_label(labels: dict, uncertainty: str) -> tf.Tensor:
    import tensorflow as tf

    states = tf.stack([tf.cast(labels[k], tf.int32) for k in _CXR_KEYS])
    positive = tf.cast(tf.equal(states, _POSITIVE), tf.float32)
    uncertain = tf.equal(states, _UNCERTAIN)
    if uncertainty == "u_ones":
        return tf.where(uncertain, 1.0, positive)
    if uncertainty == "u_zeros":
        return positive
    return tf.where(uncertain, tf.constant(np.nan, tf.float32), positive)


def _chexpert_meta(uncertainty: str):
    def to_meta(ex):
        return {
            "label": _cxr_policy_label(ex["labels"], uncertainty),
            "example_id": ex["path"],
            "group_id": ex["patient_id"],
        }

    return to_meta


def _nih_meta(ex):
    import tensorflow as tf

    return {
        "label": tf.stack([tf.cast(ex["labels"][k], tf.float32) for k in _NIH_KEYS]),
        "example_id": ex["image_index"],
        "group_id": tf.strings.as_string(ex["patient_id"]),
    }


def _derm_keep(mapping: dict[str, int], names: tuple[str, ...]):
    # source class index -> harmonised index (-1: dropped)
    table = np.array([mapping.get(n, -1) for n in names], np.int32)

    def keep(ex):
        import tensorflow as tf

        return tf.gather(table, ex["diagnosis"]) >= 0

    def to_one_hot(diagnosis):
        import tensorflow as tf

        return tf.one_hot(tf.gather(table, diagnosis), len(DERM_CLASSES), dtype=tf.float32)

    return keep, to_one_hot


def _ham(diagnoses: tuple[str, ...]):
    keep, one_hot = _derm_keep(HAM_TO_DERM, diagnoses)

    def to_meta(ex):
        return {"label": one_hot(ex["diagnosis"]), "example_id": ex["image_id"], "group_id": ex["lesion_id"]}

    return keep, to_meta


def _pad(diagnoses: tuple[str, ...]):
    keep, one_hot = _derm_keep(PAD_TO_DERM, diagnoses)

    def to_meta(ex):
        return {"label": one_hot(ex["diagnosis"]), "example_id": ex["img_id"], "group_id": ex["patient_id"]}

    return keep, to_meta


HAM_DIAGNOSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
PAD_DIAGNOSES = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")


def cxr(options: TaskOptions) -> Task:
    """Chest X-ray: CheXpert five-pathology multi-label task, NIH ChestX-ray14 as the shifted test."""
    chexpert = _chexpert_meta(options.uncertainty)
    return Task(
        name="cxr",
        kind="multilabel",
        class_names=CXR_CLASSES,
        primary_metric="mean_auc",
        pretrain_builder="cxr_chexpert",
        pretrain_grouped_config_prefix="patients_",
        pretrain_group_key="patient_id",
        train=Source("cxr_chexpert", "train", chexpert),
        bags=BAGS,
        test_sources={
            "in_distribution": (Source("cxr_chexpert", "validation", chexpert),
                                Source("cxr_chexpert", "test", chexpert)),
            "shifted": (Source("cxr_nih14", "test", _nih_meta),),
        },
        holdout_test_from_train=False,
        augmentation="cxr",
        options=options,
        study_ids={"in_distribution": chexpert_study_id},
    )


def derm(options: TaskOptions) -> Task:
    """Dermatology: HAM10000 five harmonised classes, PAD-UFES-20 as the shifted test."""
    ham_keep, ham_meta = _ham(HAM_DIAGNOSES)
    pad_keep, pad_meta = _pad(PAD_DIAGNOSES)
    return Task(
        name="derm",
        kind="multiclass",
        class_names=DERM_CLASSES,
        primary_metric="top1",
        pretrain_builder="derm_ham10000",
        pretrain_grouped_config_prefix="lesions_",
        pretrain_group_key="lesion_id",
        train=Source("derm_ham10000", "train", ham_meta, ham_keep),
        bags=("case",),  # HAM10000 images carry no study or view
        test_sources={"shifted": (Source("derm_pad_ufes20", "train", pad_meta, pad_keep),)},
        holdout_test_from_train=True,
        augmentation="simclr",
        options=options,  # uncertainty policy unused: HAM10000 and PAD-UFES-20 labels are definite
    )


TASKS: dict[str, Callable[[TaskOptions], Task]] = {"cxr": cxr, "derm": derm}


DEFAULT_BAGS = {"cxr": "case", "derm": "case"}

# name -> folder of the folder tasks this process was pointed at (`get_task("folder:<dir>")`)
_FOLDERS: dict[str, str] = {}


def _folder_label(label: tf.Tensor, uncertainty: str) -> tf.Tensor:
    import tensorflow as tf

    from tfds_builders.folder_task import spec as folder_spec

    uncertain = tf.equal(label, folder_spec.UNCERTAIN)
    if uncertainty == "u_ones":
        return tf.where(uncertain, 1.0, label)
    if uncertainty == "u_zeros":
        return tf.where(uncertain, 0.0, label)
    return tf.where(uncertain, tf.constant(np.nan, tf.float32), label)


@functools.lru_cache(maxsize=None)
def _read_folder(path: str, stamp: tuple) -> tuple[folder_spec.Folder, dict[str, str]]:
    del stamp  # part of the cache key only: the modification times of task.json and metadata.csv
    from tfds_builders.folder_task import spec as folder_spec
    folder = folder_spec.read_folder(path)
    return folder, folder_spec.fingerprints(folder)


def _stamp(path: str) -> tuple:
    from tfds_builders.folder_task import spec as folder_spec

    return tuple(os.stat(os.path.join(path, f)).st_mtime_ns if os.path.isfile(os.path.join(path, f))
                 else None for f in (folder_spec.TASK_FILE, folder_spec.METADATA_FILE))


def folder_task(path: str, options: TaskOptions) -> Task:
    """The task of the folder at `path` (checked: ValueError naming metadata.csv's line or the
    task.json key of the first problem), its options' bag resolved."""
    from tfds_builders.folder_task import spec as folder_spec

    if not os.path.isdir(path):
        raise ValueError(f"--task={FOLDER_PREFIX}{path}: no such directory")
    path = os.path.abspath(path)
    folder, prints = _read_folder(path, _stamp(path))
    spec = folder.task
    if spec.name in TASKS:
        raise ValueError(f'{path}/{folder_spec.TASK_FILE}: "name": {spec.name!r} is a built-in '
                         "task's name; choose another")
    options = dataclasses.replace(options, bag=options.bag or ("study" if spec.bag_column else "case"))

    def to_meta(ex):
        label = ex["label"]
        if spec.kind == "multilabel":
            label = _folder_label(label, options.uncertainty)
        return {"label": label, "example_id": ex["file_name"], "group_id": ex["group_id"]}

    def source(split):
        return Source(FOLDER_BUILDER, split, to_meta)

    explicit = spec.split_column is not None
    return Task(
        name=spec.name, kind=spec.kind, class_names=spec.classes,
        primary_metric=spec.primary_metric, pretrain_builder=FOLDER_BUILDER,
        pretrain_grouped_config_prefix="groups_", pretrain_group_key="group_id",
        train=source("train"), bags=("case", "study") if spec.bag_column else ("case",),
        test_sources={**({"in_distribution": (source("test"),)} if explicit else {}),
                      **({"shifted": (source(folder_spec.SHIFTED),)} if spec.shift else {})},
        holdout_test_from_train=not explicit, augmentation="simclr", options=options,
        test_sets=TEST_SETS if spec.shift else ("in_distribution",),
        validation=source("validation") if explicit else None, pretrain_bag_key="bag_id",
        folder=FolderRecord(folder=path, synthetic=spec.synthetic, **prints))


def get_task(name: str, options: TaskOptions | None = None) -> Task:
    """Returns the task registered under `name`, the folder task `folder:<dir>` (from then on
    also known by its name in this process) or the folder task of that name this process knows,
    its options' bag resolved (None -> the task's default, `DEFAULT_BAGS`)."""
    options = options or TaskOptions()
    if name in TASKS:
        if options.bag is None:
            options = dataclasses.replace(options, bag=DEFAULT_BAGS[name])
        task = TASKS[name](options)
    elif name.startswith(FOLDER_PREFIX) or name in _FOLDERS:
        task = folder_task(name.removeprefix(FOLDER_PREFIX) if name.startswith(FOLDER_PREFIX)
                           else _FOLDERS[name], options)
        _FOLDERS[task.name] = task.folder.folder
    else:
        raise ValueError(f"--task={name}: unknown task; expected one of {sorted(TASKS)} or "
                         f"{FOLDER_PREFIX}<dir>")
    if task.options.bag not in task.bags:
        raise ValueError(f"--bag={task.options.bag} with --task={name}: expected one of {task.bags}")
    return task


def task_of_row(row: dict, options: TaskOptions | None = None) -> Task:
    """The task a result row was computed on: a registered task, or a folder task (the row's
    `config.folder_task`) at the folder this process knows for its name (a `folder:<dir>` given
    to `get_task`, e.g. by a command's --task), else where the row records it, whose task.json
    must be the row's. ValueError (one line) otherwise."""
    name = row["task"]
    if name in TASKS:
        return get_task(name, options)
    from tfds_builders.folder_task import spec as folder_spec

    config = row.get("config") if isinstance(row.get("config"), dict) else {}
    recorded = config.get("folder_task")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("folder"), str):
        raise ValueError(f"task {name!r} is not registered; expected one of {sorted(TASKS)}")
    path = _FOLDERS.get(name, recorded["folder"])
    try:
        task = get_task(FOLDER_PREFIX + path, options)
    except ValueError as e:
        raise ValueError(f"task {name!r} is a folder task recorded at {recorded['folder']}: {e}; "
                         f"pass --task={FOLDER_PREFIX}<its folder> where it is elsewhere") from None
    if task.name != name or task.folder.task_json != recorded.get("task_json"):
        raise ValueError(f"task {name!r}: {path}/{folder_spec.TASK_FILE} (name {task.name!r}, sha256 "
                         f"{task.folder.task_json[:12]}) is not the task.json the row was computed "
                         f"with (sha256 {str(recorded.get('task_json'))[:12]}); pass "
                         f"--task={FOLDER_PREFIX}<its folder>")
    return task


def with_test_sets(task: Task, names: tuple[str, ...] | list[str]) -> Task:
    """`task` scored on the test sets `names` only (a subset of its own, in its order): the other
    test sets' sources are not read, so their data need not be present. ValueError (one line,
    naming `--test_sets`) for an empty, repeated or unknown name."""
    names = tuple(names)
    text = ",".join(names)
    if not names or any(not n for n in names):
        raise ValueError(f"--test_sets={text}: empty value; give comma-separated test sets from "
                         f"{task.test_sets}, or leave the flag out for all of them")
    unknown = [n for n in names if n not in task.test_sets]
    if unknown:
        raise ValueError(f"--test_sets={text}: unknown test set {unknown[0]!r} for --task="
                         f"{task.name}; expected some of {task.test_sets}")
    if len(set(names)) != len(names):
        raise ValueError(f"--test_sets={text}: duplicate values")
    kept = tuple(n for n in task.test_sets if n in names)
    return dataclasses.replace(
        task, test_sets=kept, left_out=task.left_out + tuple(n for n in task.test_sets if n not in kept),
        test_sources={n: s for n, s in task.test_sources.items() if n in kept},
        study_ids={n: f for n, f in task.study_ids.items() if n in kept})
