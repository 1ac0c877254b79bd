"""From a task to built datasets and tf.data pipelines: real data from a manual dir, or the
embedded synthetic real-format sets, read by the same builders.

Real data: `manual_dir/<builder name>/` holds each dataset as downloaded (see each builder's
README). Synthetic data: generated once under `data_dir/synthetic_manual/` and built into
`data_dir/synthetic/` so it never mixes with real builds in `data_dir/`.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_builders  # noqa: F401  (registers the builders)
from benchmark import protocol
from benchmark.tasks import Source, Task
from tfds_builders import synthetic


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where data lives and at which stored resolution it is read."""

    data_dir: str
    manual_dir: str | None  # None: the embedded synthetic sets
    resolution: str = "64px"
    synthetic_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    synthetic_image_size: int = 128
    synthetic_seed: int = 0

    @property
    def synthetic(self) -> bool:
        return self.manual_dir is None


def builder_names(task: Task) -> list[str]:
    """Every builder a task reads, in a stable order."""
    names = [task.pretrain_builder, task.train.builder]
    names += [s.builder for sources in task.test_sources.values() for s in sources]
    return list(dict.fromkeys(names))


def _builder(name: str, config: str, cfg: DataConfig) -> tfds.core.DatasetBuilder:
    tfds_dir = os.path.join(cfg.data_dir, "synthetic") if cfg.synthetic else cfg.data_dir
    if cfg.synthetic:
        if name not in cfg.synthetic_sizes:
            raise ValueError(f"no synthetic size configured for {name!r}")
        manual = synthetic.generate(name, os.path.join(cfg.data_dir, "synthetic_manual"),
                                    size=cfg.synthetic_sizes[name], seed=cfg.synthetic_seed,
                                    image_size=cfg.synthetic_image_size)
    else:
        manual = pathlib.Path(cfg.manual_dir) / name
        if not manual.is_dir():
            raise FileNotFoundError(
                f"--manual_dir={cfg.manual_dir}: expected a folder {manual} holding the {name} "
                f"download (see tfds_builders/{name}/README.md)")
    builder = tfds.builder(name, config=config, data_dir=tfds_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder


def prepare(task: Task, cfg: DataConfig) -> dict[str, tfds.core.DatasetBuilder]:
    """Generates (synthetic only) and builds every dataset of `task`; keyed by builder name, plus
    `"pretrain"` for the grouped pretraining config."""
    builders = {name: _builder(name, cfg.resolution, cfg) for name in builder_names(task)}
    builders["pretrain"] = _builder(
        task.pretrain_builder, task.pretrain_grouped_config_prefix + cfg.resolution, cfg)
    return builders


def _read(builders, source: Source, *, decode_images: bool) -> tf.data.Dataset | None:
    builder = builders[source.builder]
    if source.split not in builder.info.splits:
        return None
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    ds = builder.as_dataset(split=source.split, shuffle_files=False, decoders=decoders)
    if source.keep is not None:
        ds = ds.filter(source.keep)
    return ds


@dataclasses.dataclass(frozen=True)
class Meta:
    """Labels and ids of a set of examples, in the builder's stored order."""

    example_ids: np.ndarray  # str
    group_ids: np.ndarray  # str
    labels: np.ndarray  # float32 [N, K], nan = ignored

    def subset(self, mask: np.ndarray) -> "Meta":
        return Meta(self.example_ids[mask], self.group_ids[mask], self.labels[mask])


def read_meta(builders, sources: tuple[Source, ...] | Source) -> Meta:
    """Reads labels and ids (no image decoding) of one or more sources, concatenated."""
    sources = sources if isinstance(sources, tuple) else (sources,)
    ids, groups, labels = [], [], []
    for source in sources:
        ds = _read(builders, source, decode_images=False)
        if ds is None:
            continue
        for m in ds.map(source.to_meta, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator():
            ids.append(m["example_id"].decode())
            groups.append(m["group_id"].decode())
            labels.append(m["label"])
    if not ids:
        raise ValueError(f"no examples in {[f'{s.builder}:{s.split}' for s in sources]}")
    return Meta(np.array(ids), np.array(groups), np.stack(labels).astype(np.float32))


def _to_rgb(image):
    return tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image


def labelled_dataset(builders, sources: tuple[Source, ...] | Source,
                     example_ids: np.ndarray | None = None) -> tf.data.Dataset:
    """{"image": uint8 [H, W, 3], "label", "example_id", "group_id"} for the given sources, restricted
    to `example_ids` when given (None = all)."""
    sources = sources if isinstance(sources, tuple) else (sources,)
    table = None
    if example_ids is not None:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(example_ids), tf.string),
                                                tf.ones(len(example_ids), tf.int32)), 0)
    parts = []
    for source in sources:
        ds = _read(builders, source, decode_images=True)
        if ds is None:
            continue

        def convert(ex, source=source):
            return {"image": _to_rgb(ex["image"]), **source.to_meta(ex)}

        ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
        if table is not None:
            ds = ds.filter(lambda ex: table.lookup(ex["example_id"]) > 0)
        parts.append(ds)
    out = parts[0]
    for ds in parts[1:]:
        out = out.concatenate(ds)
    return out


def pretrain_groups(builders, task: Task, group_ids: set[str] | None) -> tf.data.Dataset:
    """The grouped pretraining source as {"group_id", "images": uint8 [n, H, W, 3]}, restricted to
    `group_ids` (the task's training groups) when given."""
    ds = builders["pretrain"].as_dataset(split="train", shuffle_files=False)
    key = task.pretrain_group_key

    def convert(ex):
        images = ex["images"]["image"]
        if images.shape[-1] == 1:
            images = tf.tile(images, [1, 1, 1, 3])
        return {"group_id": ex[key], "images": images}

    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    if group_ids is not None:
        keys = tf.constant(sorted(group_ids), tf.string)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, tf.int32)), 0)
        ds = ds.filter(lambda ex: table.lookup(ex["group_id"]) > 0)
    return ds


@dataclasses.dataclass(frozen=True)
class TaskSplits:
    """The task's train/validation/test examples (by id) and the metadata to choose fractions."""

    train: Meta
    validation: Meta
    tests: dict[str, Meta]


def split_task(builders, task: Task, *, validation_fraction: float, test_fraction: float) -> TaskSplits:
    """Patient-disjoint hashed split of the task's training source, plus its test sets."""
    meta = read_meta(builders, task.train)
    fractions = {"train": 1.0 - validation_fraction, "validation": validation_fraction}
    if task.holdout_test_from_train:
        fractions = {"train": 1.0 - validation_fraction - test_fraction,
                     "validation": validation_fraction, "test": test_fraction}
    masks = protocol.split_groups(meta.group_ids, fractions=fractions, salt=task.name)
    tests = {}
    for name in task.test_sets:
        if name == "in_distribution" and task.holdout_test_from_train:
            tests[name] = meta.subset(masks["test"])
        else:
            tests[name] = read_meta(builders, task.test_sources[name])
    return TaskSplits(meta.subset(masks["train"]), meta.subset(masks["validation"]), tests)


def test_sources(task: Task, name: str) -> tuple[Source, ...]:
    """The builder splits holding test set `name` (derm in-distribution: the hashed part of train)."""
    if name == "in_distribution" and task.holdout_test_from_train:
        return (task.train,)
    return task.test_sources[name]


def group_strata(meta: Meta, kind: str) -> np.ndarray:
    """One stratum per example, constant within a group, for stratified label fractions: the class
    (multi-class), or the group's rarest positive class or "none" (multi-label)."""
    labels = np.nan_to_num(meta.labels, nan=0.0) > 0.5
    if kind == "multiclass":
        per_example = np.argmax(meta.labels, axis=1).astype(str)
        first = {}
        for g, s in zip(meta.group_ids, per_example):
            first.setdefault(g, s)
        return np.array([first[g] for g in meta.group_ids])
    order = np.argsort(labels.sum(axis=0), kind="stable")  # rarest class first
    positive = {}
    for g, row in zip(meta.group_ids, labels):
        positive[g] = positive.get(g, np.zeros_like(row)) | row
    strata = {g: next((str(k) for k in order if row[k]), "none") for g, row in positive.items()}
    return np.array([strata[g] for g in meta.group_ids])
