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
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf

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
    return {
        "label": tf.stack([tf.cast(ex["labels"][k], tf.float32) for k in _NIH_KEYS]),
        "example_id": ex["image_index"],
        "group_id": tf.strings.as_string(ex["patient_id"]),
    }


def _derm_keep(mapping: dict[str, int], names: tuple[str, ...]):
    table = tf.constant([mapping.get(n, -1) for n in names], tf.int32)

    def keep(ex):
        return tf.gather(table, ex["diagnosis"]) >= 0

    def to_one_hot(diagnosis):
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


def get_task(name: str, options: TaskOptions | None = None) -> Task:
    """Returns the task registered under `name`, its options' bag resolved (None -> the task's
    default, `DEFAULT_BAGS`)."""
    if name not in TASKS:
        raise ValueError(f"--task={name}: unknown task; expected one of {sorted(TASKS)}")
    options = options or TaskOptions()
    if options.bag is None:
        options = dataclasses.replace(options, bag=DEFAULT_BAGS[name])
    task = TASKS[name](options)
    if options.bag not in task.bags:
        raise ValueError(f"--bag={options.bag} with --task={name}: expected one of {task.bags}")
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
        task, test_sets=kept,
        test_sources={n: s for n, s in task.test_sources.items() if n in kept},
        study_ids={n: f for n, f in task.study_ids.items() if n in kept})
