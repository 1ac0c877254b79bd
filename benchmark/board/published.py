"""Published figures (`published.csv`): reading and checking them, and placing each under the
table of ours that reports the same metric on the same test set (or under "other")."""
from __future__ import annotations

import csv
import dataclasses
import os
import re

from benchmark.board.lines import TaskInfo, table_specs, task_info

LEGACY_PUBLISHED_COLUMNS = ("citation", "url_or_doi", "dataset", "split", "task", "metric",
                            "method", "label_fraction", "value", "protocol",
                            "protocol_matches_ours", "note")


PUBLISHED_COLUMNS = LEGACY_PUBLISHED_COLUMNS + ("backbone", "test_set", "class")


PROTOCOL_MATCHES = ("yes", "no", "partial")


PROTOCOL_ORDER = {"yes": 0, "partial": 1, "no": 2}  # how closely a published protocol matches ours


OTHER_TEST_SET = "other"  # a published figure on data that is neither of our test sets


# Published metric names -> (lowest, highest) value. Scores are on the 0-1 scale of our metrics;
# `delta_*` are differences between two of the source's models, in AUC units (`delta_auc`) or in
# percent (the others), and are never placed beside a table of ours.
UNIT_RANGE, PERCENT_RANGE = (0.0, 1.0), (-100.0, 100.0)


PUBLISHED_METRICS = {
    "multilabel": {"mean_auc": UNIT_RANGE, "auc": UNIT_RANGE, "delta_mean_auc": PERCENT_RANGE,
                   "delta_auc": (-1.0, 1.0), "delta_auc_pct": PERCENT_RANGE},
    "multiclass": {"top1": UNIT_RANGE, "balanced_accuracy": UNIT_RANGE, "macro_auc": UNIT_RANGE,
                   "auc": UNIT_RANGE, "delta_top1": PERCENT_RANGE,
                   "delta_balanced_accuracy": PERCENT_RANGE},
}


STUDY_PUBLISHED_METRICS = {f"study_{how}/{m}": UNIT_RANGE for how in ("max", "mean")
                           for m in ("mean_auc", "auc")}


PER_CLASS_METRICS = ("auc", "study_max/auc", "study_mean/auc", "delta_auc", "delta_auc_pct")


LABEL_BUDGET = re.compile(r"^[1-9][0-9]* per class$")


_URL = re.compile(r"https?://[^\s;,()<>\"']+")


_DOI = re.compile(r"\b10\.[0-9]{4,9}/[^\s;,()<>\"']+")


def load_published(path: str | os.PathLike) -> list[dict]:
    """Rows of a published-figures CSV with exactly PUBLISHED_COLUMNS, or the older
    LEGACY_PUBLISHED_COLUMNS (its rows read with a blank backbone and class and test set `other`);
    raises ValueError naming the line for a bad header, an empty required field, a source without a
    URL or DOI, a metric unknown for the task or a value out of its range, a test set or class the
    task does not have, a bad label fraction or a protocol_matches_ours outside yes/no/partial."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return _read_published(path, f)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a CSV file ({e})") from None


def _read_published(path, f) -> list[dict]:
    """Rows of the open published-figures CSV `f` (read from `path`), checked."""
    from benchmark.harness import tasks

    reader = csv.DictReader(f)
    header = tuple(reader.fieldnames or ())
    if header not in (PUBLISHED_COLUMNS, LEGACY_PUBLISHED_COLUMNS):
        raise ValueError(f"{path}:1: header {reader.fieldnames}; expected "
                         f"{','.join(PUBLISHED_COLUMNS)}")
    infos: dict[str, TaskInfo] = {}
    rows = []
    for row in reader:
        line = reader.line_num
        if None in row or any(v is None for v in row.values()):
            raise ValueError(f"{path}:{line}: expected {len(header)} fields")
        if header == LEGACY_PUBLISHED_COLUMNS:
            row.update(backbone="", test_set=OTHER_TEST_SET, **{"class": ""})
        for key in ("citation", "url_or_doi", "task", "metric", "method", "value", "test_set"):
            if not row[key].strip():
                raise ValueError(f"{path}:{line}: empty {key!r}")
        if row["task"] not in tasks.TASKS:
            raise ValueError(f"{path}:{line}: task {row['task']!r} is not registered; expected one "
                             f"of {sorted(tasks.TASKS)}")
        info = infos.setdefault(row["task"], task_info(row["task"]))
        _check_published(f"{path}:{line}", row, info)
        rows.append(dict(row))
    return rows


def published_metrics(task: TaskInfo) -> dict[str, tuple[float, float]]:
    """Metric names a published figure of `task` may have -> their (lowest, highest) value."""
    known = dict(PUBLISHED_METRICS[task.kind])
    if task.study_test_sets:
        known.update(STUDY_PUBLISHED_METRICS)
    return known


def source_link(url_or_doi: str) -> str | None:
    """The first http(s) URL in a source field, else its first DOI as a doi.org URL; None when it
    has neither."""
    url = _URL.search(url_or_doi)
    if url:
        return url.group(0).rstrip(".")
    doi = _DOI.search(url_or_doi)
    return f"https://doi.org/{doi.group(0).rstrip('.')}" if doi else None


def _check_published(where: str, row: dict, task: TaskInfo) -> None:
    """Raises ValueError naming `where` for a published row that does not fit `task`."""
    if source_link(row["url_or_doi"]) is None:
        raise ValueError(f"{where}: url_or_doi {row['url_or_doi']!r} has no http(s) URL or DOI")
    known = published_metrics(task)
    if row["metric"] not in known:
        raise ValueError(f"{where}: metric {row['metric']!r} is not known for task {task.name}; "
                         f"expected one of {sorted(known)}")
    try:
        value = float(row["value"])
    except ValueError:
        raise ValueError(f"{where}: value {row['value']!r} is not a number") from None
    low, high = known[row["metric"]]
    if not low <= value <= high:
        raise ValueError(f"{where}: value {row['value']} of {row['metric']} is outside "
                         f"[{low:g}, {high:g}]")
    test_sets = (*task.test_sets, OTHER_TEST_SET)
    if row["test_set"] not in test_sets:
        raise ValueError(f"{where}: test_set {row['test_set']!r}; expected one of {test_sets}")
    per_class = row["metric"] in PER_CLASS_METRICS
    if per_class and row["class"] not in task.class_names:
        raise ValueError(f"{where}: class {row['class']!r} for per-class metric {row['metric']}; "
                         f"expected one of {task.class_names}")
    if not per_class and row["class"]:
        raise ValueError(f"{where}: class {row['class']!r} for {row['metric']}, a mean over "
                         "classes; expected a blank class")
    fraction = row["label_fraction"].strip()
    if fraction and not (_is_fraction(fraction) or LABEL_BUDGET.match(fraction)):
        raise ValueError(f"{where}: label_fraction {row['label_fraction']!r}; expected a number "
                         "in (0, 1], 'N per class' or blank (not stated)")
    if row["protocol_matches_ours"] not in PROTOCOL_MATCHES:
        raise ValueError(f"{where}: protocol_matches_ours {row['protocol_matches_ours']!r}; "
                         f"expected one of {PROTOCOL_MATCHES}")


def _is_fraction(text: str) -> bool:
    try:
        return 0 < float(text) <= 1
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class PublishedLine:
    """Published figures shown as one line under a table: one row, or (per-class tables) the
    rows of one source and model, each in its class's column."""

    rows: tuple[dict, ...]
    values: tuple[tuple[tuple[str, str], str], ...]  # (test set, metric column) -> value as given
    order: int  # position of the first row in published.csv


def published_column(row: dict) -> tuple[str, str]:
    """The (test set, result-row metric name) a published row reports, e.g. ('shifted',
    'auc/Edema')."""
    metric = f"{row['metric']}/{row['class']}" if row["class"] else row["metric"]
    return row["test_set"], metric


def place_published(task: TaskInfo, published: list[dict]
                    ) -> tuple[dict[str, list[PublishedLine]], list[dict]]:
    """({table key: published lines shown under that table}, rows no table of ours reports).
    A row goes under the first table with its (test set, metric) column; lines are sorted by how
    closely their protocol matches ours (yes, partial, no), then by their order in the file."""
    specs = table_specs(task)
    placed: dict[str, list[PublishedLine]] = {s.key: [] for s in specs}
    other = []
    open_lines: dict[tuple, list] = {}
    for i, row in enumerate(published):
        column = published_column(row)
        spec = next((s for s in specs if column in s.columns), None)
        if spec is None:
            other.append(row)
            continue
        key = ((spec.key, row["citation"], row["url_or_doi"], row["method"], row["dataset"],
                row["split"], row["label_fraction"], row["protocol_matches_ours"],
                row["backbone"]) if spec.per_class else (spec.key, i))
        line = open_lines.get(key)
        if line is None or column in line[2]:
            line = open_lines[key] = [i, [], {}]
            placed[spec.key].append(line)
        line[1].append(row)
        line[2][column] = row["value"]
    for key, lines in placed.items():
        placed[key] = sorted((PublishedLine(tuple(rs), tuple(vals.items()), i)
                              for i, rs, vals in lines),
                             key=lambda l: (PROTOCOL_ORDER[l.rows[0]["protocol_matches_ours"]],
                                            l.order))
    return placed, other


def published_curves(task: TaskInfo, published: list[dict]
                     ) -> list[tuple[str, str, list[tuple[float, float]]]]:
    """Published label-fraction curves of the primary metric (MaCo-style rows): (label, test set,
    sorted (fraction, value) points) for every source and method with at least two numeric label
    fractions on one of our test sets."""
    curves: dict[tuple[str, str, str], dict[float, float]] = {}
    for r in published:
        fraction = r["label_fraction"].strip()
        if (r["metric"] != task.primary_metric or r["class"] or r["test_set"] not in task.test_sets
                or not _is_fraction(fraction)):
            continue
        key = (r["citation"], r["method"], r["test_set"])
        curves.setdefault(key, {})[float(fraction)] = float(r["value"])
    return [(f"{method.split(' (')[0]} [{citation.split(',')[0].split(' (')[0]}]", test_set,
             sorted(points.items()))
            for (citation, method, test_set), points in curves.items() if len(points) >= 2]
