"""Leaderboard tables and label-efficiency plots, regenerated from result rows.

    python -m benchmark.leaderboard --results=leaderboards/results.jsonl --output_dir=leaderboards/

For every task this writes `<task>.md`, `<task>.csv`, `<task>.html` and `<task>.png`: one line
per (preset, method, backbone, eval_mode, label fraction) with the task's primary metric on the
in-distribution and shifted test sets side by side, as the mean ± sample standard deviation over
seeds, the number of seeds, and a 95% CI that is the MEAN OVER SEEDS OF THE PER-SEED patient-level
bootstrap bounds (lower bounds averaged, upper bounds averaged). Rows on synthetic data form their
own section whose every table header says SYNTHETIC; published figures (`published.csv`) form a
separate section and are never mixed with our runs. Rows of different backbones (the row's
`config.backbone`, written like `--backbone`, e.g. resnet_v1-18x0.25, botnet-50x0.25-small) are
never pooled; a table whose lines have several backbones shows a `backbone` column (the CSV always
has it). The same holds for the training precision (`config.precision.used`, float32 or bfloat16;
"n/a" for a row that does not record it): lines never pool precisions, a table whose lines have
several shows a `precision` column, and the CSV always has it. Every line of the primary-metric table also shows, per test set, its difference to the
control `random_init` (the same backbone without pretraining; `is_control`) of the same task,
preset, backbone, eval mode, label fraction and data kind: the mean over the seeds both ran of the
method minus the control, with a 95% CI from a paired patient-level bootstrap computed from the
stored prediction files (`scoring.control_difference`); "—" where no such control row exists (a
line whose backbone is not recorded never matches), "control" on the control's own lines. The
plot has a second panel with these differences and their CIs as error bars. Output is
byte-for-byte reproducible for the
same rows: sorted order, fixed float formats, no timestamps, PNG written with fixed dpi and no
metadata. A line pooling any seed that did not run deterministically (`deterministic: false`, or a
row older than that key) is marked NONDETERMINISTIC_MARK with a footnote, and `no` in the CSV's
`deterministic` column; its numbers are computed like any other. CSV text cells that a spreadsheet
would run as a formula (starting with = + - @, tab or carriage return, and not a number) are
prefixed with a quote.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import html
import io
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from benchmark import metrics, results, scoring

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
_LABEL_BUDGET = re.compile(r"^[1-9][0-9]* per class$")
_URL = re.compile(r"https?://[^\s;,()<>\"']+")
_DOI = re.compile(r"\b10\.[0-9]{4,9}/[^\s;,()<>\"']+")
SECTION_REAL = "ours_real"
SECTION_SYNTHETIC = "ours_synthetic"
SECTION_PUBLISHED = "published"
TEST_SET_TITLES = {"in_distribution": "in-distribution", "shifted": "shifted"}
CI_RULE = ("95% CI: mean over seeds of each seed's patient-level bootstrap interval "
           "(lower and upper bounds averaged separately)")
CONTROL_METHOD = "random_init"  # the untrained control every line is compared with
NO_CONTROL = "—"
CONTROL_SELF = "control"
DIFFERENCE_RULE = (f"Δ vs {CONTROL_METHOD}: the line's mean minus the mean of {CONTROL_METHOD} on "
                   "the same backbone, task, preset, eval mode and label fraction, over the seeds "
                   "both ran (n = seeds paired), with a 95% CI from a paired patient-level bootstrap "
                   "of the stored per-example predictions (each replicate resamples the test "
                   "patients once for both methods and all seeds; test-sample uncertainty only, "
                   f"the ± column shows the spread over seeds); {NO_CONTROL} = no such "
                   f"{CONTROL_METHOD} rows (never taken from another backbone)")
PLOT_DPI = 100
PUBLISHED_GREY = "#8c8c8c"  # published curves on the plot; no colour of our runs is grey
PLOT_SIZE = (7.5, 4.8)

NONDETERMINISTIC_MARK = "†"
NONDETERMINISTIC_NOTE = (f"{NONDETERMINISTIC_MARK} non-deterministic: at least one seed of this "
                         "line ran without deterministic ops and input order (`deterministic: "
                         "false`, or a row older than that flag), so a re-run need not reproduce "
                         "its numbers exactly.")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

T = TypeVar("T")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|&#])")


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What the leaderboard needs to know about a task."""

    name: str
    primary_metric: str
    test_sets: tuple[str, ...]
    kind: str = "multilabel"
    class_names: tuple[str, ...] = ()
    study_test_sets: tuple[str, ...] = ()  # test sets also scored per study


def task_info(name: str) -> TaskInfo:
    """Primary metric, test sets, kind, classes and study-level test sets of the task registered
    under `name` in `benchmark.tasks`."""
    from benchmark import tasks  # imports TensorFlow: only when a task is actually needed

    task = tasks.get_task(name)
    return TaskInfo(task.name, task.primary_metric, tuple(task.test_sets), task.kind,
                    tuple(task.class_names),
                    tuple(t for t in task.test_sets if t in task.study_ids))


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One table of a leaderboard page: a column per (test set, metric name in result rows)."""

    key: str  # anchor id and the CSV's `placed_under`
    title: str
    columns: tuple[tuple[str, str], ...]
    per_class: bool  # columns are the classes of one metric (cells: mean ± std only)


def table_specs(task: TaskInfo) -> list[TableSpec]:
    """The tables of `task`'s page in order: the primary metric; balanced accuracy and macro AUC
    (multi-class); image- vs study-level mean AUC (test sets scored per study); per-class AUC of
    each test set; per-class study-level (max) AUC."""
    def title(t):
        return TEST_SET_TITLES.get(t, t)

    specs = [TableSpec(task.primary_metric, f"{task.primary_metric} (primary metric)",
                       tuple((t, task.primary_metric) for t in task.test_sets), False)]
    if task.kind == "multiclass":
        specs += [TableSpec(m, f"{m}{note}", tuple((t, m) for t in task.test_sets), False)
                  for m, note in (("balanced_accuracy", " (mean per-class recall, the ISIC "
                                   "challenge metric)"), ("macro_auc", " (mean one-vs-rest AUC)"))]
    for t in task.study_test_sets:
        specs.append(TableSpec(
            f"study_mean_auc_{t}", f"{title(t)}: image-level vs study-level mean_auc (study = "
            "the images of one study, scores aggregated by max or mean)",
            ((t, "mean_auc"), (t, "study_max/mean_auc"), (t, "study_mean/mean_auc")), False))
    for t in task.test_sets:
        specs.append(TableSpec(f"auc_per_class_{t}", f"{title(t)}: AUC per class (image level)",
                               tuple((t, f"auc/{c}") for c in task.class_names), True))
    for t in task.study_test_sets:
        specs.append(TableSpec(f"study_max_auc_per_class_{t}",
                               f"{title(t)}: AUC per class, study level (max over views)",
                               tuple((t, f"study_max/auc/{c}") for c in task.class_names), True))
    return specs


@dataclasses.dataclass(frozen=True)
class TestSetSummary:
    """The primary metric of one test set over the seeds of a cell group."""

    mean: float | None
    std: float | None
    n_seeds: int
    ci_low: float | None
    ci_high: float | None


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One line of a leaderboard table: a (preset, method, backbone, eval_mode, label fraction) over
    seeds."""

    method: str
    eval_mode: str
    preset: str
    label_fraction: float
    synthetic: bool
    metric: str
    test_sets: tuple[tuple[str, TestSetSummary], ...]
    deterministic: bool = True  # every seed pooled here ran deterministically
    # every (test set, metric) column of the page's tables -> its summary
    columns: tuple[tuple[tuple[str, str], TestSetSummary], ...] = ()
    init: str = "scratch"  # what pretraining started from (`init_label`)
    backbone: str = ""  # `backbone_name` of the rows' config.backbone
    precision: str = ""  # `results.precision_name` of the rows
    is_control: bool = False  # the line is the control's own (`is_control`)
    control: str = ""  # the control method the differences are to ("" when none matched)
    # test set -> primary metric minus the control's (None: no matching control rows)
    differences: tuple[tuple[str, metrics.PairedDifference | None], ...] = ()


_INIT_TITLES = {"simclr_tf2": "ImageNet-SSL", "simclr_tf1": "ImageNet-SSL",
                "bit_npz": "ImageNet-supervised", "stage": "stage", "keras": "keras"}


def init_label(row: dict) -> str:
    """What a row's run started from: "scratch", or e.g. "ImageNet-SSL <name> (<8 hex of its
    weights' sha256>)" from `config.init`; rows without it: scratch if they had no
    init_checkpoint, else "checkpoint <path>"."""
    config = row.get("config") if isinstance(row.get("config"), dict) else {}
    init = config.get("init")
    if not isinstance(init, dict):
        path = config.get("init_checkpoint")
        return "scratch" if not path else f"checkpoint {path}"
    if init.get("kind") == "scratch":
        return "scratch"
    title = _INIT_TITLES.get(init.get("kind"), str(init.get("kind")))
    return f"{title} {init.get('name')} ({str(init.get('fingerprint'))[:8]})"


def backbone_name(row: dict) -> str:
    """The backbone a row's encoder had, written like `--backbone` (e.g. resnet_v1-18x0.25,
    bit-50, botnet-50x0.25-small); "" for a row whose config does not record it."""
    b = row.get("config", {}).get("backbone")
    if not isinstance(b, dict) or not {"family", "depth", "width"} <= b.keys():
        return ""
    width = "" if float(b["width"]) == 1 else f"x{float(b['width']):g}"
    small = "-small" if b.get("small_stem") and b["family"] != "bit" else ""
    return f"{b['family']}-{b['depth']}{width}{small}"


def is_control(row: dict) -> bool:
    """Whether a row is of the `random_init` control: its config's `method_spec`, else (rows whose
    config does not record it) its method name, `random_init` or `random_init-<backbone>`."""
    config = row.get("config") if isinstance(row.get("config"), dict) else {}
    spec = config.get("method_spec")
    if spec is not None:
        return spec == CONTROL_METHOD
    return row["method"] == CONTROL_METHOD or row["method"].startswith(f"{CONTROL_METHOD}-")


def is_deterministic(row: dict) -> bool:
    """Whether a row records a deterministic run (rows without the key predate it: no)."""
    return row.get("deterministic") is True


def load_rows(paths: Sequence[str | os.PathLike],
              prediction_dirs: Sequence[str | os.PathLike] = ()) -> list[dict]:
    """Rows of every results file in `paths`, each checked with `results.validate_row` (rows stored
    before `results.NEW_ROW_KEYS` existed are accepted without them) and for a registered task, and completed by `complete_metrics` (prediction files are looked up beside
    their results file, then in `prediction_dirs`); raises ValueError naming the file and line for
    a malformed or invalid row or a cell present twice. A truncated last line is skipped with a
    `results.TruncatedLineWarning` (as `results.ResultsStore` does)."""
    return _load_rows(paths, prediction_dirs)[0]


PredictionReader = Callable[[dict, str], tuple]


def _load_rows(paths, prediction_dirs) -> tuple[list[dict], PredictionReader]:
    """`load_rows`, and a reader of a row's prediction file for a test set (looked up beside the
    row's results file, then in `prediction_dirs`; ValueError naming the row when it is missing)."""
    from benchmark import tasks

    rows, seen, roots_of = [], {}, {}
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"--results: {path}: no such file")
        if not Path(path).is_file():
            raise ValueError(f"--results: {path}: not a regular file; expected a results.jsonl")
        located, torn = results.read_valid_rows(path)
        if torn:
            warnings.warn(f"{torn}; the leaderboard is built without it",
                          results.TruncatedLineWarning, stacklevel=2)
        for where, row in located:
            if row["task"] not in tasks.TASKS:
                raise ValueError(f"{where}: task {row['task']!r} is not registered; expected one "
                                 f"of {sorted(tasks.TASKS)}")
            key = results.cell_key(row)
            if key in seen:
                raise ValueError(f"{where}: cell {key} already read from {seen[key]}")
            seen[key] = where
            roots = [Path(path).parent, *map(Path, prediction_dirs)]
            roots_of[key] = (roots, where)
            rows.append(complete_metrics(row, tasks.get_task(row["task"]), roots, where))

    @functools.lru_cache(maxsize=None)
    def read_file(file: Path) -> tuple:
        return results.read_predictions(file)

    def read(row: dict, test_set: str) -> tuple:
        roots, where = roots_of[results.cell_key(row)]
        rel = row["metrics"][test_set]["predictions"]
        found = [Path(r) / rel for r in roots if (Path(r) / rel).is_file()]
        if not found:
            raise ValueError(f"{where}: prediction file {rel} of metrics.{test_set} is not in "
                             f"{', '.join(map(str, roots))}; expected it there to compute the "
                             f"difference to {CONTROL_METHOD}")
        return read_file(found[0])

    return rows, read


def complete_metrics(row: dict, task, roots: Sequence[Path], where: str = "row") -> dict:
    """`row` with every metric its task now reports (`scoring.metric_names`) that it lacks (rows
    scored before that metric existed, e.g. `balanced_accuracy` or `study_max/mean_auc`) computed
    from its stored prediction file, with the row's seed and bootstrap size; `row` itself when
    nothing is missing. The file is `metrics.<test set>.predictions` under the first of `roots`
    holding it; ValueError naming `where` when none does or it does not fit the task."""
    from benchmark import scoring

    completed = None
    for test_set in sorted(row["metrics"]):
        result = row["metrics"][test_set]
        if test_set not in task.test_sets:
            continue
        missing = [m for m in scoring.metric_names(task, test_set) if m not in result["values"]]
        if not missing:
            continue
        rel = result["predictions"]
        found = [Path(r) / rel for r in roots if (Path(r) / rel).is_file()]
        if not found:
            raise ValueError(f"{where}: metrics.{test_set} lacks {', '.join(missing)} and its "
                             f"prediction file {rel} is not in {', '.join(map(str, roots))}; "
                             "expected it there to compute them")
        ids, groups, labels, scores, names = results.read_predictions(found[0])
        if tuple(names) != tuple(task.class_names):
            raise ValueError(f"{found[0]}:1: classes {list(names)}; task {task.name} has "
                             f"{list(task.class_names)}")
        scored = scoring.score_task(task, test_set, ids, labels, scores, groups,
                                    bootstrap_samples=scoring.row_bootstrap_samples(row),
                                    seed=int(row["seed"]))
        if completed is None:
            completed = {**row, "metrics": {t: {**r, "values": dict(r["values"]),
                                                "ci95": dict(r["ci95"])}
                                            for t, r in row["metrics"].items()}}
        for m in missing:
            completed["metrics"][test_set]["values"][m] = scored["values"][m]
            completed["metrics"][test_set]["ci95"][m] = scored["ci95"][m]
    return row if completed is None else completed


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
    from benchmark import tasks

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
    if fraction and not (_is_fraction(fraction) or _LABEL_BUDGET.match(fraction)):
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


def _mean_or_none(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _defined(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _summarise_test_set(rows: list[dict], test_set: str, metric: str) -> TestSetSummary:
    values, lows, highs = [], [], []
    for row in rows:
        result = row["metrics"].get(test_set)
        if result is None or not _defined(result["values"].get(metric)):
            continue
        values.append(float(result["values"][metric]))
        lo, hi = result["ci95"].get(metric, (None, None))
        if _defined(lo) and _defined(hi):
            lows.append(float(lo))
            highs.append(float(hi))
    if not values:
        return TestSetSummary(None, None, 0, None, None)
    mean, std = metrics.summarise_seeds(values)
    return TestSetSummary(mean, std, len(values), _mean_or_none(lows), _mean_or_none(highs))


def summarise(rows: Iterable[dict], task: TaskInfo,
              predictions: PredictionReader | None = None) -> list[SummaryRow]:
    """Lines of `task`'s tables from its result rows, seeds pooled, in sorted order (synthetic
    last, then preset, method, backbone, eval_mode, label fraction, init); every column of
    `table_specs(task)` is summarised. With `predictions` (a reader of a row's prediction set for
    a test set), each line that is not the control's gets its `differences` to the control."""
    columns = list(dict.fromkeys(c for spec in table_specs(task) for c in spec.columns))
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["task"] != task.name:
            continue
        key = (bool(row["synthetic"]), row["preset"], row["method"], backbone_name(row),
               row["eval_mode"], float(row["label_fraction"]), init_label(row), results.precision_name(row))
        groups.setdefault(key, []).append(row)
    lines = []
    for key in sorted(groups):
        synthetic, preset, method, backbone, eval_mode, fraction, init, precision = key
        members = sorted(groups[key], key=lambda r: int(r["seed"]))
        control, differences = _control_differences(task, key, members, groups, predictions)
        lines.append(SummaryRow(
            method=method, eval_mode=eval_mode, preset=preset, label_fraction=fraction,
            synthetic=synthetic, metric=task.primary_metric,
            test_sets=tuple((t, _summarise_test_set(members, t, task.primary_metric))
                            for t in task.test_sets),
            deterministic=all(is_deterministic(r) for r in members),
            columns=tuple((c, _summarise_test_set(members, *c)) for c in columns),
            init=init, backbone=backbone, precision=precision,
            is_control=all(is_control(r) for r in members),
            control=control, differences=differences))
    return lines


def _pretrain_seeds(rows: list[dict]) -> set:
    """The pretraining seeds `rows` record (None for a row that does not)."""
    return {results.pretrain_seed(r) for r in rows}


def _control_differences(task: TaskInfo, key: tuple, members: list[dict],
                         groups: dict[tuple, list[dict]], predictions: PredictionReader | None
                         ) -> tuple[str, tuple[tuple[str, metrics.PairedDifference | None], ...]]:
    """(control method, differences per test set) of the line `key` (`summarise`'s group key):
    against the control rows of the same data kind, preset, backbone, eval mode and fraction (when
    several control lines are there: preferably one of the line's precision, then one with the
    line's pretraining seed, which drew a control's weights, then the first by name); no control
    for a control's line, a line without a recorded backbone, or without `predictions`."""
    synthetic, preset, _, backbone, eval_mode, fraction, _, precision = key
    none = tuple((t, None) for t in task.test_sets)
    if predictions is None or not backbone or all(is_control(r) for r in members):
        return "", none
    candidates = sorted(
        (k for k, rs in groups.items() if (k[0], k[1], k[3], k[4], k[5]) ==
         (synthetic, preset, backbone, eval_mode, fraction) and all(is_control(r) for r in rs)),
        key=lambda k: (k[7] != precision, _pretrain_seeds(groups[k]) != _pretrain_seeds(members),
                       k[2], k[6], k[7]))
    if not candidates:
        return "", none
    controls = groups[candidates[0]]
    found = tuple((t, scoring.control_difference(
        task.kind, task.class_names, task.primary_metric, t, members, controls, predictions,
        bootstrap_samples=scoring.row_bootstrap_samples(members[0]))) for t in task.test_sets)
    return (candidates[0][2], found) if any(d is not None for _, d in found) else ("", none)


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


def escape_markdown(text) -> str:
    """`text` as literal Markdown table-cell text: backslash before \\ ` * _ [ ] < > | & #, line
    breaks replaced by spaces."""
    flat = re.sub(r"[\r\n]+", " ", str(text))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def escape_html(text) -> str:
    """`text` as literal HTML text (quotes escaped too)."""
    return html.escape(str(text), quote=True)


def _fmt(v: float | None, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def format_fraction(fraction: float) -> str:
    """A label fraction as a percentage, e.g. 0.1 -> "10%"."""
    return f"{round(fraction * 100, 6):g}%"


def _display_cells(s: TestSetSummary) -> tuple[str, str, str]:
    """(mean ± std, seeds, CI) as shown in Markdown/HTML."""
    if s.mean is None:
        return "n/a", "0", "n/a"
    ci = ("n/a" if s.ci_low is None else f"[{_fmt(s.ci_low, 4)}, {_fmt(s.ci_high, 4)}]")
    return f"{s.mean:.4f} ± {s.std:.4f}", str(s.n_seeds), ci


def _column_title(spec: TableSpec, column: tuple[str, str]) -> str:
    test_set, metric = column
    if spec.per_class:
        return metric.rsplit("/", 1)[1]
    return f"{TEST_SET_TITLES.get(test_set, test_set)} {metric}"


def _several_backbones(lines: list[SummaryRow]) -> bool:
    return len({l.backbone for l in lines}) > 1


def _several_precisions(lines: list[SummaryRow]) -> bool:
    return len({l.precision for l in lines}) > 1


def _runs_header(spec: TableSpec, synthetic: bool, backbone: bool = False,
                 differences: tuple[str, ...] = (), precision: bool = False) -> list[str]:
    method = "method (SYNTHETIC data)" if synthetic else "method"
    cols = ([method] + (["backbone"] if backbone else []) + (["precision"] if precision else [])
            + ["init", "eval mode", "preset", "labels"])
    for c in spec.columns:
        title = _column_title(spec, c)
        cols += [title] if spec.per_class else [title, f"{title} seeds", f"{title} 95% CI"]
    return cols + [f"{TEST_SET_TITLES.get(t, t)} Δ vs {CONTROL_METHOD} (paired 95% CI)"
                   for t in differences]


def _difference_cell(line: SummaryRow, test_set: str) -> str:
    """A line's difference to the control on `test_set` as shown in Markdown/HTML."""
    if line.is_control:
        return CONTROL_SELF
    d = dict(line.differences).get(test_set)
    if d is None:
        return NO_CONTROL
    return f"{d.value:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}] (n={d.pairs})"


def _runs_cells(spec: TableSpec, line: SummaryRow, escape, backbone: bool = False,
                differences: tuple[str, ...] = (), precision: bool = False) -> list[str]:
    """Table cells of one line (with its backbone, its precision, and its differences to the
    control on the test sets `differences`, if asked); `escape` is applied to the names (numbers
    are ours)."""
    method = escape(line.method)
    if not line.deterministic:
        method += f" {NONDETERMINISTIC_MARK}"
    cells = ([method] + ([escape(line.backbone or "n/a")] if backbone else [])
             + ([escape(line.precision or "n/a")] if precision else [])) + [
             escape(line.init), escape(line.eval_mode), escape(line.preset),
             format_fraction(line.label_fraction)]
    stats = dict(line.columns)
    for c in spec.columns:
        shown = _display_cells(stats[c])
        cells += [shown[0]] if spec.per_class else list(shown)
    return cells + [_difference_cell(line, t) for t in differences]


def _published_labels(row: dict) -> str:
    fraction = row["label_fraction"].strip()
    if not fraction:
        return "not stated"
    return fraction if _LABEL_BUDGET.match(fraction) else format_fraction(float(fraction))


def _published_header(spec: TableSpec) -> list[str]:
    return (["published figure (not re-run)", "method", "backbone", "labels"]
            + [_column_title(spec, c) for c in spec.columns]
            + ["protocol matches ours", "dataset, split", "note"])


def _published_line_cells(spec: TableSpec, line: PublishedLine, escape, link) -> list[str]:
    first = line.rows[0]
    values = dict(line.values)
    notes = " ".join(dict.fromkeys(r["note"] for r in line.rows))
    return ([link(first["citation"], first["url_or_doi"]), escape(first["method"]),
             escape(first["backbone"]), escape(_published_labels(first))]
            + [escape(values.get(c, "")) for c in spec.columns]
            + [escape(first["protocol_matches_ours"]),
               escape(f"{first['dataset']}, {first['split']}"), escape(notes)])


OTHER_PUBLISHED_HEADER = ("published figure (not re-run)", "method", "backbone", "dataset", "split",
                          "test set", "metric", "class", "labels", "value",
                          "protocol matches ours", "protocol", "note")


def _other_published_cells(row: dict, escape, link) -> list[str]:
    return [link(row["citation"], row["url_or_doi"])] + [escape(c) for c in (
        row["method"], row["backbone"], row["dataset"], row["split"], row["test_set"],
        row["metric"], row["class"], _published_labels(row), row["value"],
        row["protocol_matches_ours"], row["protocol"], row["note"])]


def _markdown_link(text: str, source: str) -> str:
    url = source_link(source)
    return f"[{escape_markdown(text)}]({url})" if url else escape_markdown(text)


def _html_link(text: str, source: str) -> str:
    url = source_link(source)
    return (f'<a href="{escape_html(url)}">{escape_html(text)}</a>' if url
            else escape_html(text))


def _sections(lines: list[SummaryRow]) -> list[tuple[str, str, list[SummaryRow]]]:
    """(section id, title, lines) of our runs: real data always, synthetic when present."""
    real = [l for l in lines if not l.synthetic]
    synthetic = [l for l in lines if l.synthetic]
    sections = [(SECTION_REAL, "Our runs: real data", real)]
    if synthetic:
        sections.append((SECTION_SYNTHETIC, "Our runs: SYNTHETIC data (pipeline check on generated "
                         "images, not a result)", synthetic))
    return sections


def _preamble(task: TaskInfo) -> list[str]:
    return [f"Primary metric `{task.primary_metric}`: mean ± sample standard deviation over seeds "
            f"(ddof=1; 0 for one seed). {CI_RULE}. Labels = fraction of the labelled training "
            "patients/lesions used for fine-tuning.",
            "",
            f"{DIFFERENCE_RULE}.",
            "",
            "Published figures stand under the real-data table with the same test set and metric, "
            "sorted by how closely their protocol matches ours (yes, partial, no); they are "
            "quoted as their authors report them, never re-run, averaged with or ranked among our "
            "runs. A row's note says how its protocol differs from ours.",
            "",
            "Regenerate with `python -m benchmark.leaderboard --results=<results.jsonl> "
            "--output_dir=leaderboards/`."]


PUBLISHED_UNDER_TITLE = "Published figures for this table (not re-run; compare with care)"
OTHER_PUBLISHED_TITLE = ("Other published figures (no table of ours reports this metric on this "
                         "test set: differences between two models, or other data)")


def _closing_note(task: TaskInfo, published: list[dict]) -> list[str]:
    """Counts of published rows per test set, and where rows left out are listed."""
    counts = {t: sum(r["test_set"] == t for r in published)
              for t in (*task.test_sets, OTHER_TEST_SET)}
    shown = ", ".join(f"{TEST_SET_TITLES.get(t, t)} {n}" for t, n in counts.items())
    return [f"Published rows for {task.name}: {len(published)} ({shown}). Figures of the source "
            "compilation that are not in `published.csv`, and why, are listed in "
            "`leaderboards/README.md` (section \"Published figures\")."]


def _page(task: TaskInfo, lines: list[SummaryRow], published: list[dict], heading, table,
          paragraph, escape, link) -> None:
    """Emits a page through `heading(level, text, anchor)`, `table(header, rows)` and
    `paragraph(text)` (texts unescaped; table cells already escaped)."""
    placed, other = place_published(task, published)
    for section_id, title, section in _sections(lines):
        heading(2, title, section_id)
        for spec in table_specs(task):
            anchor = f"{section_id}_{spec.key}".replace("/", "_")
            heading(3, spec.title, anchor)
            if section:
                several = _several_backbones(section)
                precisions = _several_precisions(section)
                diffs = task.test_sets if spec.key == task.primary_metric else ()
                table(_runs_header(spec, section[0].synthetic, several, diffs, precisions),
                      [_runs_cells(spec, l, escape, several, diffs, precisions) for l in section])
            else:
                paragraph("No runs yet.")
            if section_id == SECTION_REAL and placed[spec.key]:
                paragraph(f"{PUBLISHED_UNDER_TITLE}:")
                table(_published_header(spec),
                      [_published_line_cells(spec, l, escape, link) for l in placed[spec.key]])
        if not all(l.deterministic for l in section):
            paragraph(NONDETERMINISTIC_NOTE)
    heading(2, OTHER_PUBLISHED_TITLE, SECTION_PUBLISHED)
    if other:
        table(list(OTHER_PUBLISHED_HEADER), [_other_published_cells(r, escape, link) for r in other])
    else:
        paragraph("None recorded.")
    for text in _closing_note(task, published):
        paragraph(text)


def render_markdown(task: TaskInfo, lines: list[SummaryRow], published: list[dict]) -> str:
    """The Markdown leaderboard of `task`."""
    out = [f"# Leaderboard: {escape_markdown(task.name)}", ""]
    out += _preamble(task)
    out.append("")

    def heading(level: int, text: str, anchor: str) -> None:
        out.extend([f"{'#' * level} {escape_markdown(text)}", ""])

    def table(header: Sequence[str], rows: list[list[str]]) -> None:
        out.append("| " + " | ".join(escape_markdown(h) for h in header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        for cells in rows:  # already escaped
            out.append("| " + " | ".join(cells) + " |")
        out.append("")

    def paragraph(text: str) -> None:
        out.extend([escape_markdown(text), ""])

    _page(task, lines, published, heading, table, paragraph, escape_markdown, _markdown_link)
    return "\n".join(out)


def render_html(task: TaskInfo, lines: list[SummaryRow], published: list[dict]) -> str:
    """The HTML leaderboard of `task` (a complete document)."""
    name = escape_html(task.name)
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>Leaderboard: {name}</title>",
           "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
           "</style>", "</head>", "<body>", f"<h1>Leaderboard: {name}</h1>"]
    out += [f"<p>{escape_html(p)}</p>" for p in _preamble(task) if p]

    def heading(level: int, text: str, anchor: str) -> None:
        out.append(f'<h{level} id="{escape_html(anchor)}">{escape_html(text)}</h{level}>')

    def table(header: Sequence[str], rows: list[list[str]]) -> None:
        out.append("<table>")
        out.append("<thead><tr>" + "".join(f"<th>{escape_html(h)}</th>" for h in header)
                   + "</tr></thead>")
        out.append("<tbody>")
        for cells in rows:  # already escaped
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</tbody>")
        out.append("</table>")

    def paragraph(text: str) -> None:
        out.append(f"<p>{escape_html(text)}</p>")

    _page(task, lines, published, heading, table, paragraph, escape_html, _html_link)
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _extra_columns(task: TaskInfo) -> list[tuple[str, str]]:
    """Table columns other than the primary metric, in page order."""
    primary = {(t, task.primary_metric) for t in task.test_sets}
    return [c for c in dict.fromkeys(c for s in table_specs(task) for c in s.columns)
            if c not in primary]


def csv_columns(task: TaskInfo) -> list[str]:
    """Columns of `<task>.csv`: section, the run identity, whether every seed ran deterministically
    (yes/no), per-test-set statistics of the primary metric, whether the line is the control's
    (yes/no), the control its differences are to and per test set the difference, its paired CI
    and the number of seeds paired (blank without a control), the same statistics of every other
    table column (`<test set>_<metric>_mean` ...), then the published-figure fields (blank on our
    rows; run statistics blank on published rows; `backbone` is filled on both) with `placed_under`
    = the table key it is shown under, or `other`."""
    cols = ["section", "task", "method", "backbone", "precision", "init", "eval_mode", "preset",
            "label_fraction", "metric", "deterministic"]
    for t in task.test_sets:
        cols += [f"{t}_mean", f"{t}_std", f"{t}_n_seeds", f"{t}_ci_low", f"{t}_ci_high"]
    cols += ["is_control", "control"]
    for t in task.test_sets:
        cols += [f"{t}_diff", f"{t}_diff_ci_low", f"{t}_diff_ci_high", f"{t}_diff_n_seeds"]
    for t, m in _extra_columns(task):
        cols += [f"{t}_{m}_{s}" for s in ("mean", "std", "n_seeds", "ci_low", "ci_high")]
    return cols + ["value", "citation", "url_or_doi", "dataset", "split", "protocol",
                   "protocol_matches_ours", "note", "test_set", "class", "placed_under"]


def csv_cell(text: str) -> str:
    """`text` as a CSV cell a spreadsheet shows as text: a quote before a cell that would start a
    formula (= + - @ tab CR) unless the cell is a number such as -0.5."""
    if not text.startswith(_FORMULA_START):
        return text
    try:
        float(text)
        return text
    except ValueError:
        return "'" + text


def _stat_fields(prefix: str, s: TestSetSummary) -> dict[str, str]:
    return {f"{prefix}mean": _fmt(s.mean, 6), f"{prefix}std": _fmt(s.std, 6),
            f"{prefix}n_seeds": str(s.n_seeds), f"{prefix}ci_low": _fmt(s.ci_low, 6),
            f"{prefix}ci_high": _fmt(s.ci_high, 6)}


def render_csv(task: TaskInfo, lines: list[SummaryRow], published: list[dict]) -> str:
    """The CSV leaderboard of `task`; `section` is ours_real, ours_synthetic or published; every
    cell passes `csv_cell`."""
    cols = csv_columns(task)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()

    def write(record: dict) -> None:
        writer.writerow({k: csv_cell(str(v)) for k, v in record.items()})

    for section_id, _, section in _sections(lines):
        for l in section:
            record = {"section": section_id, "task": task.name, "method": l.method,
                      "backbone": l.backbone, "precision": l.precision, "init": l.init,
                      "eval_mode": l.eval_mode,
                      "preset": l.preset,
                      "label_fraction": f"{l.label_fraction:.6g}", "metric": l.metric,
                      "deterministic": "yes" if l.deterministic else "no"}
            for t, s in l.test_sets:
                record.update(_stat_fields(f"{t}_", s))
            record.update(is_control="yes" if l.is_control else "no", control=l.control)
            for t, d in l.differences:
                if d is not None:
                    record.update({f"{t}_diff": _fmt(d.value, 6),
                                   f"{t}_diff_ci_low": _fmt(d.ci_low, 6),
                                   f"{t}_diff_ci_high": _fmt(d.ci_high, 6),
                                   f"{t}_diff_n_seeds": str(d.pairs)})
            stats = dict(l.columns)
            for t, m in _extra_columns(task):
                record.update(_stat_fields(f"{t}_{m}_", stats[(t, m)]))
            write(record)
    placed, other = place_published(task, published)
    shown = [(key, r) for key, plines in placed.items() for l in plines for r in l.rows]
    for key, r in shown + [(OTHER_TEST_SET, r) for r in other]:
        write({"section": SECTION_PUBLISHED, "task": task.name, "method": r["method"],
               "label_fraction": r["label_fraction"], "metric": r["metric"],
               "value": r["value"], "citation": r["citation"], "url_or_doi": r["url_or_doi"],
               "dataset": r["dataset"], "split": r["split"], "protocol": r["protocol"],
               "protocol_matches_ours": r["protocol_matches_ours"], "note": r["note"],
               "backbone": r["backbone"], "test_set": r["test_set"], "class": r["class"],
               "placed_under": key})
    return buf.getvalue()


def _plot_text(text: str) -> str:
    """`text` safe for Matplotlib labels ($ would start mathtext)."""
    return re.sub(r"[\r\n]+", " ", text).replace("$", r"\$")


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


def render_plot(task: TaskInfo, lines: list[SummaryRow], path: str | os.PathLike,
                published: list[dict] = ()) -> None:
    """Writes the label-efficiency PNG of `task`: primary metric vs label fraction (log x), one
    colour per (method, backbone, eval_mode, preset[, synthetic]), in-distribution solid, shifted dashed, CI
    band shaded; published label-fraction curves (`published_curves`) as labelled grey markers,
    never in our colours. A second panel below shows each line's difference to the control
    (`SummaryRow.differences`) in the same colour and line style, with its paired 95% CI as error
    bars (series shifted slightly along x so that their bars do not hide each other)."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    series: dict[tuple, list[SummaryRow]] = {}
    for l in lines:
        series.setdefault((l.synthetic, l.method, l.backbone, l.eval_mode, l.preset, l.precision),
                          []).append(l)
    styles = {t: ("-" if i == 0 else "--") for i, t in enumerate(task.test_sets)}
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        fig = Figure(figsize=(PLOT_SIZE[0], PLOT_SIZE[1] * 1.7))
        ax, dax = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
        colours = [c for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
                   if matplotlib.colors.to_hex(c) != "#7f7f7f"]  # grey: published curves
        handles, labels = [], []
        fractions = sorted({l.label_fraction for l in lines})
        for i, (key, points) in enumerate(sorted(series.items())):
            synthetic, method, backbone, eval_mode, preset, precision = key
            colour = colours[i % len(colours)]
            points = sorted(points, key=lambda l: l.label_fraction)
            x = [p.label_fraction for p in points]
            for t in task.test_sets:
                stats = [dict(p.test_sets)[t] for p in points]
                y = [math.nan if s.mean is None else s.mean for s in stats]
                lo = [math.nan if s.ci_low is None else s.ci_low for s in stats]
                hi = [math.nan if s.ci_high is None else s.ci_high for s in stats]
                ax.plot(x, y, linestyle=styles[t], marker="o", color=colour)
                ax.fill_between(x, lo, hi, color=colour, alpha=0.15, linewidth=0)
            _plot_differences(dax, task, points, colour, styles, shift=1.04 ** (i % 5 - 2))
            handles.append(Line2D([], [], color=colour, marker="o"))
            shown = f"{backbone or 'n/a'}, " if _several_backbones(lines) else ""
            shown += f"{precision or 'n/a'}, " if _several_precisions(lines) else ""
            labels.append(_plot_text(f"{method} ({shown}{eval_mode}, {preset}"
                                     f"{', SYNTHETIC' if synthetic else ''})"))
        curves = published_curves(task, list(published))
        for label, t, points in curves:
            x, y = zip(*points)
            ax.plot(x, y, linestyle=styles[t], linewidth=0.6, marker="x", markersize=4,
                    color=PUBLISHED_GREY)
            ax.annotate(_plot_text(label), (x[-1], y[-1]), xytext=(3, 0),
                        textcoords="offset points", fontsize=5, color=PUBLISHED_GREY,
                        va="center")
        if curves:
            handles.append(Line2D([], [], color=PUBLISHED_GREY, marker="x", linewidth=0.6))
            labels.append("published (not re-run; label = method [source])")
            fractions = sorted(set(fractions) | {x for _, _, pts in curves for x, _ in pts})
        for t in task.test_sets:
            handles.append(Line2D([], [], color="black", linestyle=styles[t]))
            labels.append(TEST_SET_TITLES.get(t, t))
        ax.set_xscale("log")
        if fractions:
            ax.xaxis.set_major_locator(FixedLocator(fractions))
            ax.set_xticklabels([format_fraction(f) for f in fractions])
            ax.set_xlim(min(fractions) / 1.5, max(fractions) * 1.5)
        else:
            ax.set_xlim(0.005, 1.5)
            ax.text(0.5, 0.5, "no runs yet", transform=ax.transAxes, ha="center", va="center")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("label fraction (log scale)")
        ax.set_ylabel(_plot_text(task.primary_metric))
        synthetic_note = " (includes SYNTHETIC data)" if any(l.synthetic for l in lines) else ""
        ax.set_title(_plot_text(f"{task.name}: {task.primary_metric} vs label fraction"
                                f"{synthetic_note}"))
        ax.grid(True, alpha=0.3)
        ax.legend(handles, labels, fontsize="small", loc="best")
        dax.set_xscale("log")
        dax.set_xlim(ax.get_xlim())
        dax.xaxis.set_major_locator(FixedLocator(fractions or [0.01, 0.1, 1.0]))
        dax.set_xticklabels([format_fraction(f) for f in (fractions or [0.01, 0.1, 1.0])])
        dax.xaxis.set_minor_locator(NullLocator())
        dax.axhline(0.0, color="black", linewidth=0.8)
        if not any(d is not None for l in lines for _, d in l.differences):
            dax.text(0.5, 0.5, f"no {CONTROL_METHOD} rows on the same backbone and cells",
                     transform=dax.transAxes, ha="center", va="center")
        dax.set_xlabel("label fraction (log scale)")
        dax.set_ylabel(_plot_text(f"Δ {task.primary_metric} vs {CONTROL_METHOD}"))
        dax.set_title(_plot_text(f"difference to {CONTROL_METHOD} (same backbone; paired 95% CI, "
                                 "seeds paired)"), fontsize="medium")
        dax.grid(True, alpha=0.3)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=PLOT_DPI,
                    metadata={"Software": None, "Title": None, "Author": None,
                              "Description": None})
    _write_bytes(Path(path), png.getvalue())


def _plot_differences(ax, task: TaskInfo, points: list[SummaryRow], colour, styles: dict,
                      shift: float) -> None:
    """One series' differences to the control on `ax`: per test set, the points that have one,
    with their CI as error bars, at x multiplied by `shift` (and by 1.02 per test set)."""
    for j, t in enumerate(task.test_sets):
        found = [(p.label_fraction * shift * 1.02 ** j, dict(p.differences).get(t))
                 for p in points]
        found = [(x, d) for x, d in found if d is not None]
        if not found:
            continue
        x = [x for x, _ in found]
        y = [d.value for _, d in found]
        below = [max(0.0, d.value - d.ci_low) for _, d in found]
        above = [max(0.0, d.ci_high - d.value) for _, d in found]
        ax.errorbar(x, y, yerr=[below, above], linestyle=styles[t], marker="o", markersize=4,
                    color=colour, capsize=3, linewidth=1)


def _write_bytes(path: Path, data: bytes) -> None:
    """Replaces `path` atomically; an OS error names `path`."""
    with results.atomic_writer(path, binary=True) as f:
        f.write(data)


def output_directory(path: str | os.PathLike, flag: str) -> Path:
    """`path` as a directory to write into (created if missing); ValueError naming `flag` when it
    is a file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag}={path}: not a directory")
    with results.naming_file(out):
        out.mkdir(parents=True, exist_ok=True)
    return out


def write_leaderboards(rows: list[dict], published: list[dict], output_dir: str | os.PathLike,
                       *, info=task_info, predictions: PredictionReader | None = None) -> list[Path]:
    """Writes `<task>.md/.csv/.html/.png` for every task with rows or published figures; returns
    the written paths in order. Differences to the control are computed from `predictions`
    (see `summarise`)."""
    out = output_directory(output_dir, "--output_dir")
    names = sorted({r["task"] for r in rows} | {p["task"] for p in published})
    written = []
    for name in names:
        task = info(name)
        lines = summarise(rows, task, predictions)
        pub = [p for p in published if p["task"] == name]
        for suffix, text in ((".md", render_markdown(task, lines, pub)),
                             (".csv", render_csv(task, lines, pub)),
                             (".html", render_html(task, lines, pub))):
            _write_bytes(out / f"{name}{suffix}", text.encode("utf-8"))
            written.append(out / f"{name}{suffix}")
        render_plot(task, lines, out / f"{name}.png", pub)
        written.append(out / f"{name}.png")
    return written


def regenerate(results_paths: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
               published_path: str | os.PathLike | None = None, *,
               prediction_dirs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Reads the results files and the published figures (default `<output_dir>/published.csv`
    when it exists) and rewrites every task's leaderboard files; prediction files of rows that
    need re-scoring are looked up beside their results file, then in `prediction_dirs`."""
    if published_path is None:
        default = Path(output_dir) / "published.csv"
        published_path = default if default.is_file() else None
    published = load_published(published_path) if published_path else []
    rows, predictions = _load_rows(results_paths, prediction_dirs)
    return write_leaderboards(rows, published, output_dir, predictions=predictions)


def run_entry_point(action: Callable[[], T]) -> tuple[int, T | None]:
    """Runs `action` as an entry point must: a data error (ValueError) or OS error becomes one
    `error:` line on stderr and status 1, a skipped truncated results line one `warning:` line;
    returns (exit status, what `action` returned or None)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", results.TruncatedLineWarning)
        try:
            outcome = 0, action()
        except OSError as e:
            outcome = 1, None
            message = results.os_error_text(e)
        except ValueError as e:
            outcome = 1, None
            message = str(e)
    told = set()
    for w in caught:
        if issubclass(w.category, results.TruncatedLineWarning):
            if str(w.message) not in told:
                print(f"warning: {w.message}", file=sys.stderr)
            told.add(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if outcome[0]:
        print(message if message.startswith("submission rejected") else f"error: {message}",
              file=sys.stderr)
    return outcome


def cli(results_flag: str, output_dir: str, published: str | None) -> int:
    """What `python -m benchmark.leaderboard` does with its flag values: regenerates and prints the
    written paths; returns the exit status (see `run_entry_point`)."""
    def action() -> list[Path]:
        paths = [p for p in (results_flag or "").split(",") if p]
        if not paths:
            raise ValueError("--results: expected one or more comma-separated results.jsonl paths")
        return regenerate(paths, output_dir, published or None)

    status, written = run_entry_point(action)
    for path in written or ():
        print(path)
    return status


def main(argv):
    """Entry point: flags are defined here only."""
    del argv
    from absl import flags

    f = flags.FLAGS
    sys.exit(cli(f.results, f.output_dir, f.published))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("results", None, "Comma-separated results.jsonl files.", required=True)
    flags.DEFINE_string("output_dir", "leaderboards", "Where <task>.md/.csv/.html/.png go.")
    flags.DEFINE_string("published", None, "Published-figures CSV (default: "
                        "<output_dir>/published.csv when it exists).")
    app.run(main)
