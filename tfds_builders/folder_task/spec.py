"""A folder task: images anywhere below a folder, `metadata.csv` (the Hugging Face ImageFolder
convention: a `file_name` column holding each image's path relative to the folder, other columns
kept as metadata) and `task.json` saying what the columns mean (`task.schema.json` beside this
module). Read and checked here without building anything.

Problems are one line each, naming `<folder>/metadata.csv:<line>` (header = line 1) or the
task.json key: `problems` lists every one, `read_folder` raises the first.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import pathlib
import re
from typing import Iterator

from PIL import Image

from tfds_builders import _common

TASK_FILE, METADATA_FILE = "task.json", "metadata.csv"
SCHEMA = pathlib.Path(__file__).with_name("task.schema.json")  # JSON Schema of task.json
NAME_PATTERN = re.compile(r"[a-z0-9_]{1,40}")
KINDS = ("multilabel", "multiclass")
SPLITS = ("train", "validation", "test")
SHIFTED = "shifted"  # the builder split of the shifted rows
PRIMARY_METRICS = {"multilabel": ("mean_auc",), "multiclass": ("top1", "balanced_accuracy", "macro_auc")}
DEFAULT_PRIMARY = {"multilabel": "mean_auc", "multiclass": "top1"}
KEYS = ("name", "kind", "label_columns", "class_column", "classes", "group_column", "bag_column",
        "shift", "split_column", "primary_metric", "synthetic")
REQUIRED_KEYS = ("name", "kind", "group_column")
SHIFT_KEYS = ("column", "in_distribution", "shifted")
UNCERTAIN = -1.0  # a multi-label state, mapped by the task's uncertainty policy
_STATES = {1.0: 1.0, 0.0: 0.0, -1.0: UNCERTAIN}


class FolderError(ValueError):
    """A problem of a folder task's files, in one line."""


@dataclasses.dataclass(frozen=True)
class Shift:
    column: str
    in_distribution: tuple[str, ...]
    shifted: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """task.json, checked."""

    name: str
    kind: str
    classes: tuple[str, ...]  # multilabel: the label columns; multiclass: the classes in order
    class_column: str | None
    group_column: str
    bag_column: str | None
    shift: Shift | None
    split_column: str | None
    primary_metric: str
    synthetic: bool

    @property
    def named_columns(self) -> tuple[str, ...]:
        """The metadata.csv columns task.json gives a meaning."""
        label = (self.class_column,) if self.kind == "multiclass" else self.classes
        optional = (self.bag_column, self.shift and self.shift.column, self.split_column)
        return tuple(dict.fromkeys((*label, self.group_column, *(c for c in optional if c))))


@dataclasses.dataclass(frozen=True)
class Row:
    """One image of metadata.csv."""

    line: int
    file_name: str
    path: pathlib.Path
    group_id: str
    bag_id: str  # `<group>/<bag column value>`, or the group id without a bag column
    site: str  # the shift column's value ("" without a shift)
    split: str  # train / validation / test / shifted; without a split column every in-distribution
    # row is in `train`, which the harness splits group-disjoint
    label: tuple[float, ...]  # multilabel: 1, 0, -1 (uncertain), nan (unknown); multiclass: one-hot
    metadata: tuple[tuple[str, str], ...]  # the columns task.json does not name


@dataclasses.dataclass(frozen=True)
class Folder:
    """A checked folder task."""

    root: pathlib.Path
    task: TaskSpec
    rows: tuple[Row, ...]
    metadata_columns: tuple[str, ...]

    def split_rows(self, split: str) -> list[Row]:
        """The rows of one of `splits`."""
        return [r for r in self.rows if r.split == split]

    @property
    def splits(self) -> tuple[str, ...]:
        """The builder's splits: train, validation, test (with a split column; without one `train`
        holds every in-distribution row) and shifted (with a shift)."""
        names = SPLITS if self.task.split_column else ("train",)
        return names + ((SHIFTED,) if self.task.shift else ())


def _task_problems(raw) -> Iterator[str]:
    if not isinstance(raw, dict):
        yield f"expected a JSON object, found {type(raw).__name__}"
        return
    for key in raw:
        if key not in KEYS:
            yield f'unknown key "{key}"; expected only {", ".join(KEYS)}'
    for key in REQUIRED_KEYS:
        if raw.get(key) is None:
            yield f'"{key}" is required'
    name, kind = raw.get("name"), raw.get("kind")
    if name is not None and not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
        yield (f'"name": {name!r} is not allowed; expected 1-40 characters from a-z 0-9 _ (it names '
               "rows, output dirs and leaderboards)")
    if kind is not None and kind not in KINDS:
        yield f'"kind": {kind!r}; expected "multilabel" or "multiclass"'

    def names(key, *, least=1):
        value = raw.get(key)
        if not (isinstance(value, list) and len(value) >= least and all(isinstance(v, str) and v for v in value)):
            return f'"{key}": expected a list of at least {least} non-empty strings, found {value!r}'
        if len(set(value)) != len(value):
            return f'"{key}": {sorted(v for v in set(value) if value.count(v) > 1)[0]!r} is listed twice'
        return None

    if kind == "multilabel":
        yield from filter(None, [names("label_columns")])
        for key in ("class_column", "classes"):
            if raw.get(key) is not None:
                yield f'"{key}": must be null for a multilabel task (its labels are "label_columns")'
    elif kind == "multiclass":
        yield from filter(None, [names("classes", least=2)])
        if not (isinstance(raw.get("class_column"), str) and raw["class_column"]):
            yield f'"class_column": expected the column holding the class name, found {raw.get("class_column")!r}'
        if raw.get("label_columns") is not None:
            yield '"label_columns": must be null for a multiclass task (its labels are "class_column")'
    for key in ("group_column", "bag_column", "split_column"):
        value = raw.get(key)
        if value is not None and not (isinstance(value, str) and value):
            yield f'"{key}": expected a column name, found {value!r}'
    shift = raw.get("shift")
    if shift is not None:
        if not (isinstance(shift, dict) and set(shift) == set(SHIFT_KEYS)):
            yield f'"shift": expected an object with the keys {", ".join(SHIFT_KEYS)}, found {shift!r}'
        else:
            if not (isinstance(shift["column"], str) and shift["column"]):
                yield f'"shift.column": expected a column name, found {shift["column"]!r}'
            lists = True
            for key in ("in_distribution", "shifted"):
                value = shift[key]
                if not (isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)):
                    yield f'"shift.{key}": expected a list of at least 1 non-empty strings, found {value!r}'
                    lists = False
            both = [v for v in shift["in_distribution"] if v in shift["shifted"]] if lists else []
            if both:
                yield (f'"shift": {both[0]!r} is listed in both shift.in_distribution and '
                       "shift.shifted; a site is either in-distribution or shifted")
    metric = raw.get("primary_metric")
    if metric is not None and kind in KINDS and metric not in PRIMARY_METRICS[kind]:
        yield f'"primary_metric": {metric!r}; expected one of {", ".join(PRIMARY_METRICS[kind])} for a {kind} task (or null)'
    if not isinstance(raw.get("synthetic", False), bool):
        yield f'"synthetic": expected true or false, found {raw["synthetic"]!r}'


def _spec(raw: dict) -> TaskSpec:
    kind = raw["kind"]
    shift = raw.get("shift")
    return TaskSpec(
        name=raw["name"], kind=kind,
        classes=tuple(raw["label_columns"] if kind == "multilabel" else raw["classes"]),
        class_column=raw.get("class_column"), group_column=raw["group_column"],
        bag_column=raw.get("bag_column"),
        shift=Shift(shift["column"], tuple(shift["in_distribution"]), tuple(shift["shifted"])) if shift else None,
        split_column=raw.get("split_column"),
        primary_metric=raw.get("primary_metric") or DEFAULT_PRIMARY[kind],
        synthetic=bool(raw.get("synthetic", False)))


def read_task(root) -> TaskSpec:
    """task.json of the folder `root`, checked; FolderError (one line) on the first problem."""
    path = pathlib.Path(root) / TASK_FILE
    if not path.is_file():
        raise FolderError(f"{path}: not found; a folder task needs a task.json beside its "
                          f"{METADATA_FILE} (see the README, \"Your own data\")")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FolderError(f"{path}: not JSON ({e})") from None
    for problem in _task_problems(raw):
        raise FolderError(f"{path}: {problem}")
    return _spec(raw)


def _label(task: TaskSpec, values: dict[str, str]) -> tuple[tuple[float, ...] | None, str | None]:
    """(label, None) or (None, problem) of one row."""
    if task.kind == "multiclass":
        value = values[task.class_column].strip()
        if value not in task.classes:
            return None, (f"{task.class_column} is {value!r}; expected one of {', '.join(task.classes)} "
                          '(task.json "classes")')
        return tuple(float(c == value) for c in task.classes), None
    label = []
    for column in task.classes:
        text = values[column].strip()
        try:
            state = math.nan if text == "" else _STATES[float(text)]
        except (ValueError, KeyError):
            return None, f"{column} is {text!r}; expected 1, 0, -1 (uncertain) or blank (unknown)"
        label.append(state)
    return tuple(label), None


def _inside(root: pathlib.Path, file_name: str) -> pathlib.Path | None:
    """The file's path if `file_name` names a place inside `root` (symlinks resolved), else None."""
    if os.path.isabs(file_name) or "\\" in file_name:
        return None
    path = root / file_name
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        return None
    return path


def _row_problem(task: TaskSpec, root: pathlib.Path, values: dict[str, str]) -> tuple[Row | None, str | None]:
    """(row without its line, None) or (None, problem) of one metadata.csv row."""
    file_name = values["file_name"].strip()
    if not file_name:
        return None, "file_name is blank"
    path = _inside(root, file_name)
    if path is None:
        return None, f"file_name {file_name!r} leaves the folder; it must be a relative path inside {root}"
    if not path.is_file():
        return None, f"file_name {file_name!r}: no such file under {root}"
    group = values[task.group_column].strip()
    if not group:
        return None, f"{task.group_column} (the group column) is blank"
    site, split = "", ""
    if task.shift:
        site = values[task.shift.column].strip()
        if site not in task.shift.in_distribution + task.shift.shifted:
            return None, (f"{task.shift.column} is {site!r}; expected one of shift.in_distribution "
                          f"{list(task.shift.in_distribution)} or shift.shifted {list(task.shift.shifted)}")
    shifted = bool(task.shift) and site in task.shift.shifted
    if task.split_column:
        split = values[task.split_column].strip()
        if shifted and split not in ("test", ""):
            return None, (f"{task.split_column} is {split!r} on a shifted row ({task.shift.column} "
                          f"{site!r}); shifted rows are test rows: expected test or blank")
        if not shifted and split not in SPLITS:
            return None, f"{task.split_column} is {split!r}; expected train, validation or test"
    if shifted:
        split = SHIFTED
    elif not task.split_column:
        split = "train"
    label, problem = _label(task, values)
    if problem:
        return None, problem
    bag = values[task.bag_column].strip() if task.bag_column else ""
    if task.bag_column and not bag:
        return None, f"{task.bag_column} (the bag column) is blank"
    named = set(task.named_columns) | {"file_name"}
    return Row(line=0, file_name=file_name, path=path, group_id=group,
               bag_id=f"{group}/{bag}" if bag else group, site=site, split=split, label=label,
               metadata=tuple((k, v) for k, v in values.items() if k not in named)), None


def _read_table(path: pathlib.Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line, fields) rows of metadata.csv; FolderError on a malformed file."""
    if not path.is_file():
        raise FolderError(f"{path}: not found; a folder task lists its images in {METADATA_FILE}")
    reader = csv.reader(io.StringIO(_common._decode(path), newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        rows = [(reader.line_num, fields) for fields in reader if fields and fields != [""]]
    except csv.Error as e:
        raise FolderError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return header, rows


def problems(root, *, decode: bool = False) -> list[str]:
    """Every problem of the folder task at `root`, one line each (empty: it is usable). With
    `decode`, every image is also decoded."""
    found: list[str] = []
    try:
        _inspect(pathlib.Path(root), decode, found)
    except FolderError as e:
        found.append(str(e))
    return found


def _inspect(root: pathlib.Path, decode: bool, found: list[str]) -> Folder | None:
    """The folder task at `root` from its usable rows, every problem appended to `found`; None
    when task.json or the header of metadata.csv is unusable."""
    task = read_task(root)
    path, task_file = root / METADATA_FILE, root / TASK_FILE
    header, table = _read_table(path)
    if "file_name" not in header:
        found.append(f"{path}:1: no file_name column (each image's path relative to the folder); "
                     f"columns: {', '.join(header)}")
        return None
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        found.append(f"{path}:1: column {repeated[0]!r} appears twice")
        return None
    missing = _missing_columns(task, header)
    found += [f"{task_file}: {m} is not a column of {path} (its columns: {', '.join(header)})"
              for m in missing]
    if missing:
        return None
    if not table:
        found.append(f"{path}:2: no rows after the header; expected one row per image")
        return None
    rows, first_line, group_first = [], {}, {}
    for line, fields in table:
        where = f"{path}:{line}"
        if len(fields) != len(header):
            found.append(f"{where}: expected {len(header)} fields, found {len(fields)}")
            continue
        row, problem = _row_problem(task, root, dict(zip(header, fields)))
        if problem is None and row.file_name in first_line:
            problem = f"file_name {row.file_name!r} is already listed on line {first_line[row.file_name]}"
        if problem is None:
            row = dataclasses.replace(row, line=line)
            first_line[row.file_name] = line
            problem = _group_problem(task, row, group_first.setdefault(row.group_id, row), path)
        if problem is None and decode:
            problem = decode_problem(row.path)
            problem = problem and f"file_name {row.file_name!r} {problem}"
        if problem:
            found.append(f"{where}: {problem}")
        else:
            rows.append(row)
    folder = Folder(root, task, tuple(rows),
                    tuple(h for h in header if h not in task.named_columns and h != "file_name"))
    found += [f"{task_file}: {p}" for p in _split_problems(folder)]
    return folder


def _group_problem(task: TaskSpec, row: Row, first: Row, path: pathlib.Path) -> str | None:
    """Why `row` disagrees with its group's first row on the split or site (None if it does not)."""
    checks = [(task.split_column, "split")] + ([(task.shift.column, "site")] if task.shift else [])
    for column, field in checks:
        mine, theirs = getattr(row, field), getattr(first, field)
        if column and mine != theirs:
            return (f"group {row.group_id!r} has {column} {mine!r} here but {theirs!r} on "
                    f"{path}:{first.line}; a group's rows must share their {column}")
    return None


def _missing_columns(task: TaskSpec, header: list[str]) -> list[str]:
    named = [("label_columns", c) for c in task.classes] if task.kind == "multilabel" else [
        ("class_column", task.class_column)]
    named += [(k, getattr(task, k)) for k in ("group_column", "bag_column", "split_column")]
    if task.shift:
        named.append(("shift.column", task.shift.column))
    return [f'"{key}" {column!r}' for key, column in named if column and column not in header]


def _split_problems(folder: Folder) -> Iterator[str]:
    task = folder.task
    for split in folder.splits:
        members = folder.split_rows(split)
        if not members:
            key = (f'"shift.shifted" {list(task.shift.shifted)}' if split == SHIFTED
                   else f'"split_column" {task.split_column!r}' if task.split_column
                   else f'"shift.in_distribution" {list(task.shift.in_distribution)}')
            yield f"{key}: no row of {METADATA_FILE} is in the {split} split; every split needs rows"
            continue
        key = '"classes"' if task.kind == "multiclass" else '"label_columns"'
        what = "example" if task.kind == "multiclass" else "positive (1) example"
        for k, name in enumerate(task.classes):
            if not any(r.label[k] == 1.0 for r in members):
                yield f"{key}: {name!r} has no {what} in the {split} split"


def open_rgb(path) -> Image.Image:
    """The image file at `path` decoded as 8-bit RGB (`_common.convert_mode`); ValueError saying
    why it does not decode."""
    try:
        image = Image.open(path)
        image.load()  # reads the file and closes it
        return _common.convert_mode(image, "RGB", where="", path=path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"does not decode as an image ({str(e).strip() or type(e).__name__})") from None


def decode_problem(path) -> str | None:
    """Why the image file at `path` does not decode (None if it does)."""
    try:
        open_rgb(path)
    except ValueError as e:
        return str(e)
    return None


def read_folder(root, *, decode: bool = False) -> Folder:
    """The folder task at `root`, checked (images decoded too with `decode`); FolderError naming
    the first problem, with the count of the others."""
    root = pathlib.Path(root)
    found: list[str] = []
    folder = _inspect(root, decode, found)
    if found:
        more = (f" (and {len(found) - 1} more: python -m benchmark.data_check --task=folder:{root} "
                "lists them)") if len(found) > 1 else ""
        raise FolderError(found[0] + more)
    return folder


def fingerprints(folder: Folder) -> dict[str, str]:
    """sha256 hex of task.json's and metadata.csv's bytes, and of the images (each listed image's
    file_name and bytes, in metadata.csv order)."""
    images = hashlib.sha256()
    for row in folder.rows:
        images.update(row.file_name.encode("utf-8") + b"\0")
        images.update(hashlib.sha256(row.path.read_bytes()).digest())
    return {"task_json": hashlib.sha256((folder.root / TASK_FILE).read_bytes()).hexdigest(),
            "metadata_csv": hashlib.sha256((folder.root / METADATA_FILE).read_bytes()).hexdigest(),
            "images": images.hexdigest()}
