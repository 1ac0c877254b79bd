"""From a task to built datasets and tf.data pipelines: real data from a manual dir, or the
embedded synthetic real-format sets, read by the same builders.

Real data: `manual_dir/<builder name>/` holds each dataset as downloaded (see each builder's
README); its builds go to `data_dir/<builder>/<config>/<version>/`. Synthetic data: each set is
generated and built in its own folder keyed by what it is made from,
`data_dir/synthetic/<builder>-n<size>-px<image size>-seed<seed>-g<generator version>/` (`manual/`
holds the generated files, the rest the TFDS builds), so presets and seeds never share a build and
synthetic sets never mix with real builds.

Every build knows its source: `<config>/<version>.source.json` beside the build records the
builder, config, version and source (real: the manual folder and a fingerprint of its files'
relative names, sizes and modification times, from `stat` only; synthetic: the generator's size,
image size, seed and version), written before building. A later run reuses a build only if the
record matches today's source. Otherwise a synthetic build is deleted and rebuilt (it is derived
from its parameters alone), and a real build is refused with one line naming the build, what it
was built from and what changed: rebuilding can take hours and the old build may be wanted, so
the user chooses (another --data_dir, or delete the build folder). `build_fingerprints` gives the
sha256 of each record, which every result row stores as `data_build`.

Folder tasks (`tasks.folder_task`): the task's folder is the source, built into
`data_dir/folder/<task name>/folder_task/<config>/<version>/` with a source record like a real
build's (the folder and the fingerprint of its files), and refused alike when it changed.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_builders  # noqa: F401  (registers the builders)
from benchmark.harness import protocol, results
from benchmark.harness.tasks import Source, Task
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


SOURCE_RECORD_SUFFIX = ".source.json"


def source_fingerprint(folder: pathlib.Path) -> dict:
    """{"folder", "files", "bytes", "sha256"} of every file under `folder` (symlinks followed): the
    sha256 covers each file's relative path, size and modification time (stat only, no reading)."""
    h = hashlib.sha256()
    files = total = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError as e:
                raise ValueError(f"cannot read {path} ({e.strerror}); fix or remove it") from None
            rel = os.path.relpath(path, folder)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
            files += 1
            total += st.st_size
    return {"folder": str(pathlib.Path(folder).resolve()), "files": files, "bytes": total,
            "sha256": h.hexdigest()}


def _describe(source: dict) -> str:
    if "generator" in source:
        return "synthetic " + ", ".join(f"{k}={v}" for k, v in sorted(source["generator"].items()))
    return (f"{source['folder']} ({source['files']} files, {source['bytes']} bytes, "
            f"fingerprint {source['sha256'][:12]})")


def _what_changed(old: dict, new: dict) -> str:
    if "generator" in old or "generator" in new:
        return "the synthetic parameters differ"
    if old.get("folder") != new["folder"]:
        return "another source folder"
    return "the source files' names, sizes or modification times changed"


def _why_stale(old: dict | None, source: dict, record_path: pathlib.Path) -> str:
    if old is None:
        return "has no record of what it was built from (made by an older version or another tool)"
    old_source = old.get("source")
    readable = isinstance(old_source, dict) and (
        isinstance(old_source.get("generator"), dict)
        or {"folder", "files", "bytes", "sha256"} <= old_source.keys())
    if not readable:
        return f"has an unreadable source record {record_path}"
    return f"was built from {_describe(old_source)}, not {_describe(source)} ({_what_changed(old_source, source)})"


def _record_path(builder: tfds.core.DatasetBuilder) -> pathlib.Path:
    return pathlib.Path(str(builder.data_dir) + SOURCE_RECORD_SUFFIX)


def _record_of(builder: tfds.core.DatasetBuilder, source: dict) -> dict:
    return {"builder": builder.name, "config": builder.builder_config.name,
            "version": str(builder.version), "source": source}


def _read_record(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as a different source


def _check_data_dir(data_dir: str) -> None:
    """Raises ValueError (one line naming --data_dir) unless it is, or can become, a writable folder."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ValueError(f"--data_dir={data_dir} is a file; expected a folder for the dataset builds")
    try:
        os.makedirs(data_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as e:
        raise ValueError(f"--data_dir={data_dir} is not a writable folder ({e.strerror}); "
                         "pass a folder you can write to") from None


def _os_error(e: OSError, tfds_dir: str, name: str) -> ValueError:
    where = e.filename or tfds_dir
    if str(where).startswith(str(tfds_dir)):
        return ValueError(f"cannot write the {name} build under --data_dir={tfds_dir}: "
                          f"{e.strerror or e} ({where})")
    return ValueError(f"cannot read {where} while building {name}: {e.strerror or e}")


def _build(name: str, config: str, tfds_dir: str, manual: pathlib.Path, source: dict, *,
           rebuild_stale: bool) -> tfds.core.DatasetBuilder:
    """The builder of name/config under `tfds_dir`, built from `manual` unless a build from the
    same `source` exists; a build from another source is rebuilt (`rebuild_stale`) or refused."""
    builder = tfds.builder(name, config=config, data_dir=tfds_dir)
    record_path, wanted = _record_path(builder), _record_of(builder, source)
    build_dir = pathlib.Path(str(builder.data_dir))
    if builder.is_prepared():
        old = _read_record(record_path)
        if old == wanted:
            check_shards(builder)
            return builder
        why = _why_stale(old, source, record_path)
        if not rebuild_stale:
            raise ValueError(f"data build {build_dir} {why}; pass another --data_dir, or delete "
                             f"{build_dir} to rebuild it from {manual}")
        print(f"rebuilding {build_dir}: it {why}", flush=True)
        shutil.rmtree(build_dir)
        builder = tfds.builder(name, config=config, data_dir=tfds_dir)
    try:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(wanted, sort_keys=True, indent=1) + "\n")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    except (PermissionError, tf.errors.PermissionDeniedError) as e:
        raise _os_error(e if isinstance(e, OSError) else PermissionError(errno.EACCES, e.message),
                        tfds_dir, name) from None
    except FileNotFoundError:
        raise  # the builders' messages naming the missing source file
    except OSError as e:
        raise _os_error(e, tfds_dir, name) from None
    return builder


def _records_in(shard: pathlib.Path, build_dir: pathlib.Path) -> int:
    """How many TFRecord records `shard` holds, read by their length headers only; ValueError
    naming the build to delete when the last one is cut short."""
    size, count, offset = shard.stat().st_size, 0, 0
    with open(shard, "rb") as f:
        while offset < size:
            header = f.read(12)
            length = int.from_bytes(header[:8], "little") if len(header) == 12 else size
            offset += 12 + length + 4
            if offset > size:
                raise ValueError(f"data build {build_dir}: shard {shard.name} is truncated (its "
                                 f"last record is cut short at byte {size}); delete {build_dir} "
                                 "to rebuild it")
            f.seek(offset)
            count += 1
    return count


def check_shards(builder: tfds.core.DatasetBuilder) -> None:
    """Raises ValueError (one line naming the build folder to delete) when a shard of the build is
    truncated or its shards hold another number of examples than its dataset_info.json says."""
    build_dir = pathlib.Path(str(builder.data_dir))
    found = sum(_records_in(shard, build_dir) for shard in sorted(build_dir.glob("*.tfrecord*")))
    expected = sum(split.num_examples for split in builder.info.splits.values())
    if found != expected:
        raise ValueError(f"data build {build_dir}: its shards hold {found} examples, its "
                         f"dataset_info.json says {expected}; delete {build_dir} to rebuild it")


def synthetic_key(name: str, cfg: DataConfig) -> str:
    """The folder name of builder `name`'s synthetic set under `data_dir/synthetic/`."""
    return (f"{name}-n{cfg.synthetic_sizes[name]}-px{cfg.synthetic_image_size}"
            f"-seed{cfg.synthetic_seed}-g{synthetic.GENERATOR_VERSION}")


def build(name: str, config: str, cfg: DataConfig) -> tfds.core.DatasetBuilder:
    """Builder `name` with `config`, generated (synthetic) and built unless an identical build
    exists, under the lock of that builder's builds (`build_lock`): concurrent runs sharing a
    --data_dir wait for each other, and the later one reuses the build."""
    _check_data_dir(cfg.data_dir)
    if cfg.synthetic:
        if name not in cfg.synthetic_sizes:
            raise ValueError(f"no synthetic size configured for {name!r}")
        root = os.path.join(cfg.data_dir, "synthetic", synthetic_key(name, cfg))
        with build_lock(root, name):
            manual = synthetic.generate(name, os.path.join(root, "manual"),
                                        size=cfg.synthetic_sizes[name], seed=cfg.synthetic_seed,
                                        image_size=cfg.synthetic_image_size)
            source = {"generator": synthetic.stamp(name, size=cfg.synthetic_sizes[name],
                                                    seed=cfg.synthetic_seed,
                                                    image_size=cfg.synthetic_image_size)}
            return _build(name, config, root, manual, source, rebuild_stale=True)
    manual = pathlib.Path(cfg.manual_dir) / name
    if not manual.is_dir():
        raise FileNotFoundError(
            f"--manual_dir={cfg.manual_dir}: expected a folder {manual} holding the {name} "
            f"download (see tfds_builders/{name}/README.md)")
    with build_lock(cfg.data_dir, name):
        return _build(name, config, cfg.data_dir, manual, source_fingerprint(manual),
                      rebuild_stale=False)


def build_lock(tfds_dir: str, name: str):
    """The lock of builder `name`'s builds under `tfds_dir` (`<tfds_dir>/<name>.lock`, never
    followed if a link)."""
    with results.naming_file(tfds_dir):
        os.makedirs(tfds_dir, exist_ok=True)
    return results.file_lock(pathlib.Path(tfds_dir) / f"{name}.lock")


def prepare(task: Task, cfg: DataConfig) -> dict[str, tfds.core.DatasetBuilder]:
    """Generates (synthetic only) and builds every dataset of `task`; keyed by builder name, plus
    `"pretrain"` for the grouped pretraining config. Raises ValueError (one line) for a build made
    from another source (real data, folder tasks), an unusable --data_dir, or a malformed source
    file."""
    if task.folder is not None:
        _check_data_dir(cfg.data_dir)
        folder = pathlib.Path(task.folder.folder)
        root, source = os.path.join(cfg.data_dir, "folder", task.name), source_fingerprint(folder)
        return {task.pretrain_builder: _build(task.pretrain_builder, cfg.resolution, root, folder,
                                              source, rebuild_stale=False),
                "pretrain": _build(task.pretrain_builder,
                                   task.pretrain_grouped_config_prefix + cfg.resolution, root,
                                   folder, source, rebuild_stale=False)}
    builders = {name: build(name, cfg.resolution, cfg) for name in builder_names(task)}
    builders["pretrain"] = build(
        task.pretrain_builder, task.pretrain_grouped_config_prefix + cfg.resolution, cfg)
    return builders


def build_fingerprints(builders: dict[str, tfds.core.DatasetBuilder]) -> dict[str, str]:
    """{"<builder>/<config>/<version>": sha256 hex of the source record of that build} for the
    builds returned by `prepare` (what the rows computed on them were computed from)."""
    out = {}
    for builder in builders.values():
        record = _read_record(_record_path(builder))
        if not record:
            raise ValueError(f"data build {builder.data_dir} has no source record "
                             f"{_record_path(builder)}; prepare it with benchmark.harness.data.prepare")
        out[builder.info.full_name] = hashlib.sha256(
            json.dumps(record, sort_keys=True).encode()).hexdigest()
    return dict(sorted(out.items()))


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


IN_MEMORY_BYTES = 2 * 2**30  # largest decoded split `load_split` keeps in memory


@dataclasses.dataclass(frozen=True)
class LoadedSplit:
    """Labelled examples of some builder splits: decoded once into memory (`arrays`: "image",
    "label", "example_id", "group_id" in stored order) when their images fit in `IN_MEMORY_BYTES`,
    else (`arrays` None) read and decoded from the builds at each use."""

    builders: dict
    sources: tuple[Source, ...]
    example_ids: np.ndarray
    arrays: dict[str, np.ndarray] | None

    def dataset(self, example_ids: np.ndarray | None = None) -> tf.data.Dataset:
        """The `labelled_dataset` of these examples, restricted to `example_ids` when given, in
        stored order."""
        wanted = self.example_ids if example_ids is None else example_ids
        if self.arrays is None:
            return labelled_dataset(self.builders, self.sources, wanted)
        keep = np.isin(self.arrays["example_id"], np.asarray(wanted, dtype=str))
        return tf.data.Dataset.from_tensor_slices({k: v[keep] for k, v in self.arrays.items()})


def load_split(builders, sources: tuple[Source, ...] | Source, example_ids: np.ndarray,
               limit_bytes: int = IN_MEMORY_BYTES) -> LoadedSplit:
    """The examples `example_ids` of `sources`, decoded into memory unless their images exceed
    `limit_bytes`."""
    sources = sources if isinstance(sources, tuple) else (sources,)
    columns, size = {"image": [], "label": [], "example_id": [], "group_id": []}, 0
    for ex in labelled_dataset(builders, sources, example_ids).as_numpy_iterator():
        size += ex["image"].nbytes
        if size > limit_bytes:
            return LoadedSplit(builders, sources, example_ids, None)
        for key, column in columns.items():
            column.append(ex[key])
    arrays = {key: np.array([x.decode() for x in column]) if key in ("example_id", "group_id")
              else np.stack(column) for key, column in columns.items()}
    return LoadedSplit(builders, sources, example_ids, arrays)


_FRONTAL = 0  # cxr_chexpert's `view` ClassLabel: frontal, lateral


def _bags(ds: tf.data.Dataset, bag: str, key: str, bag_key: str) -> tf.data.Dataset:
    """Cases {key, "images": {"image", [bag_key, "view"]}} -> bags {"group_id", "images"} (see
    `tasks.BAGS`); a bag id is the case id, or the `bag_key` id (e.g. the study
    ".../patientNNNNN/studyN") for a per-study bag; cases left with no image are dropped."""
    def frontal_only(ex):
        keep = tf.equal(ex["images"]["view"], _FRONTAL)
        return {**ex, "images": {k: tf.boolean_mask(v, keep) for k, v in ex["images"].items()}}

    def by_study(ex):
        studies, index = tf.unique(ex["images"][bag_key])

        def study(k):
            members = tf.where(tf.equal(index, tf.cast(k, index.dtype)))[:, 0]
            return {key: studies[k],
                    "images": {n: tf.gather(v, members) for n, v in ex["images"].items()}}

        return tf.data.Dataset.range(tf.cast(tf.size(studies), tf.int64)).map(study)

    if bag == "frontal":
        ds = ds.map(frontal_only, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.filter(lambda ex: tf.size(ex["images"]["image"]) > 0)
    elif bag == "study":
        ds = ds.flat_map(by_study)
    return ds.map(lambda ex: {"group_id": ex[key], "images": ex["images"]["image"]},
                  num_parallel_calls=tf.data.AUTOTUNE)


def pretrain_groups(builders, task: Task, group_ids: set[str] | None) -> tf.data.Dataset:
    """The grouped pretraining source as bags {"group_id", "images": uint8 [n, H, W, 3]} formed by
    `task.options.bag` (see `tasks.BAGS`), restricted to the cases in `group_ids` (the task's
    training groups) when given."""
    ds = builders["pretrain"].as_dataset(split="train", shuffle_files=False)
    key = task.pretrain_group_key
    if group_ids is not None:
        keys = tf.constant(sorted(group_ids), tf.string)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, tf.int32)), 0)
        ds = ds.filter(lambda ex: table.lookup(ex[key]) > 0)

    def to_rgb(ex):
        images = ex["images"]
        if images.shape[-1] == 1:
            images = tf.tile(images, [1, 1, 1, 3])
        return {**ex, "images": images}

    return _bags(ds, task.options.bag, key, task.pretrain_bag_key).map(to_rgb, num_parallel_calls=tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class TaskSplits:
    """The task's train/validation/test examples (by id) and the metadata to choose fractions."""

    train: Meta
    validation: Meta
    tests: dict[str, Meta]


def split_task(builders, task: Task, *, validation_fraction: float, test_fraction: float) -> TaskSplits:
    """Patient-disjoint hashed split of the task's training source (or its explicit validation
    split, `task.validation`), plus its test sets."""
    meta = read_meta(builders, task.train)
    if task.validation is not None:
        return TaskSplits(meta, read_meta(builders, task.validation),
                          {name: read_meta(builders, task.test_sources[name]) for name in task.test_sets})
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


def validation_source(task: Task) -> Source:
    """The builder split holding the validation examples."""
    return task.validation or task.train


def is_synthetic(task: Task, cfg: DataConfig) -> bool:
    """Whether the task's data is generated: the embedded synthetic sets, or a folder task whose
    task.json says so."""
    return task.folder.synthetic if task.folder is not None else cfg.synthetic


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
