"""Leaderboard lines: result rows read and validated, grouped into lines (one per preset, method,
backbone, precision, eval mode and label fraction), their statistics over seeds and their paired
differences to the control, recomputed from the prediction files."""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

from benchmark.board import rules
from benchmark.harness import metrics, results, scoring

SECTION_REAL = "ours_real"


SECTION_SYNTHETIC = "ours_synthetic"


SECTION_PUBLISHED = "published"


TEST_SET_TITLES = {"in_distribution": "in-distribution", "shifted": "shifted"}


CI_RULE = ("95% CI: mean over seeds of each seed's patient-level bootstrap interval "
           "(lower and upper bounds averaged separately)")


CONTROL_METHOD = "random_init"  # the untrained control every line is compared with


NO_CONTROL = "—"


CONTROL_SELF = "control"


NO_TEACHER = "teacher not on the board"


TEACHER_RULE = ("Δ vs teacher (distill lines): the distilled student's mean minus the mean of its "
                "teacher's fine-tune line (the method, backbone and label fraction its rows record "
                "as teacher), over the seeds both ran, with the same paired bootstrap; distill "
                "lines are never pooled with fine-tune lines")


DIFFERENCE_RULE = (f"Δ vs {CONTROL_METHOD}: the line's mean minus the mean of {CONTROL_METHOD} on "
                   "the same backbone, task, preset, eval mode and label fraction, over the seeds "
                   "both ran (n = seeds paired), with a 95% CI from a paired patient-level bootstrap "
                   "of the stored per-example predictions (each replicate resamples the test "
                   "patients once for both methods and all seeds; test-sample uncertainty only, "
                   f"the ± column shows the spread over seeds); {NO_CONTROL} = no such "
                   f"{CONTROL_METHOD} rows (never taken from another backbone)")


NOT_REQUESTED = "—"


NOT_REQUESTED_NOTE = (f"{NOT_REQUESTED} in a test set's columns: the line's runs did not request "
                      "that test set (`benchmark.run --test_sets`), so it has no result there.")


def held_test_sets(row: dict, task: TaskInfo) -> tuple[str, ...]:
    """The task's test sets a row holds (its `metrics` keys), in the task's order."""
    return tuple(t for t in task.test_sets if t in row["metrics"])


NONDETERMINISTIC_MARK = "†"
COLLAPSED_MARK = "‡"
COLLAPSED_NOTE = (f"{COLLAPSED_MARK}k: in k of the line's seeds the predictions on that test set "
                  "collapsed (a label's scores constant, or one class predicted for at least 97 % of "
                  "the examples while the labels are not; `scoring.collapse`, computed from the "
                  "prediction files); the mean includes those seeds.")


NONDETERMINISTIC_NOTE = (f"{NONDETERMINISTIC_MARK} non-deterministic: at least one seed of this "
                         "line ran without deterministic ops and input order (`deterministic: "
                         "false`, or a row older than that flag), so a re-run need not reproduce "
                         "its numbers exactly.")


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
    under `name` in `benchmark.harness.tasks` (or of the folder task of that name this process
    read rows of, `tasks.task_of_row`)."""
    from benchmark.harness import (
        tasks,  # imports TensorFlow: only when a task is actually needed
    )

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
    collapsed: int = 0  # seeds whose predictions on the test set collapsed (`scoring.collapse`)


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
    # the test sets the line's rows hold (`--test_sets`; () = all of the task's)
    held: tuple[str, ...] = ()
    # distill lines: the teacher's fine-tune line ("<method> finetune <backbone>", "" when not
    # found) and per test set the primary metric minus the teacher's, paired by seed
    teacher: str = ""
    teacher_differences: tuple[tuple[str, metrics.PairedDifference | None], ...] = ()

    def holds(self, test_set: str) -> bool:
        """Whether the line's runs scored `test_set` (not left out by `--test_sets`)."""
        return not self.held or test_set in self.held


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
    """The backbone a row's predictions came from, written like `--backbone` (e.g.
    resnet_v1-18x0.25, bit-50, botnet-50x0.25-small): a distill row's student, else the run's
    encoder; "" for a row that does not record it."""
    distilled = row.get("distillation")
    student = distilled.get("student", {}) if isinstance(distilled, dict) else {}
    return backbone_text(student.get("backbone") or row.get("config", {}).get("backbone"))


def backbone_text(b) -> str:
    """A backbone record (`api.backbone_record`) written like `--backbone`; "" if it is not one."""
    if not isinstance(b, dict) or not {"family", "depth", "width"} <= b.keys():
        return ""
    width = "" if float(b["width"]) == 1 else f"x{float(b['width']):g}"
    small = "-small" if b.get("small_stem") and b["family"] != "bit" else ""
    return f"{b['family']}-{b['depth']}{width}{small}"


def is_control(row: dict, submitted: frozenset = frozenset()) -> bool:
    """Whether a row is of the `random_init` control: a reference row (its cell key not in
    `submitted`, see `rules`) whose config's `method_spec` is `random_init`, or (rows whose config
    does not record it) whose method name is `random_init` or `random_init-<backbone>`."""
    if results.cell_key(row) in submitted:
        return False
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
    """Rows of every results file in `paths` as the board shows them (`load_board`)."""
    return load_board(paths, prediction_dirs).rows


PredictionReader = Callable[[dict, str], tuple]


@dataclasses.dataclass(frozen=True)
class LoadedBoard:
    """The rows a board shows, a reader of a row's prediction set for a test set, and the cell
    keys of submitted rows (`rules`: never controls)."""

    rows: list[dict]
    predictions: PredictionReader
    submitted: frozenset


def load_board(paths: Sequence[str | os.PathLike],
               prediction_dirs: Sequence[str | os.PathLike] = ()) -> LoadedBoard:
    """Rows of every results file in `paths`, each checked with `results.validate_row` (rows
    stored before `results.NEW_ROW_KEYS` existed are accepted without them) and for a registered
    task, with every metric re-scored from its prediction files by the board's rules
    (`rules.rescored_row`; files are looked up beside their results file, then in
    `prediction_dirs`). A row whose stored metrics disagree with its files is left out with a
    `rules.LeftOutRowWarning` naming its file and line, a truncated last line with a
    `results.TruncatedLineWarning`; ValueError naming the file and line for a malformed or
    invalid row, a missing prediction file, a cell present twice or a task that cannot be found
    (`tasks.task_of_row`: a folder task's rows need their folder)."""
    from benchmark.harness import tasks

    rows, seen, roots_of, submitted = [], {}, {}, set()

    @functools.lru_cache(maxsize=None)
    def read_file(file: Path) -> tuple:
        return results.read_predictions(file)

    def read(row: dict, test_set: str) -> tuple:
        roots, where = roots_of[results.cell_key(row)]
        rel = row["metrics"][test_set]["predictions"]
        found = [Path(r) / rel for r in roots if (Path(r) / rel).is_file()]
        if not found:
            raise ValueError(f"{where}: prediction file {rel} of metrics.{test_set} is not in "
                             f"{', '.join(map(str, roots))}; expected it there to score the row")
        return read_file(found[0])

    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"--results: {path}: no such file")
        if not Path(path).is_file():
            raise ValueError(f"--results: {path}: not a regular file; expected a results.jsonl")
        located, torn = results.read_valid_rows(path)
        if torn:
            warnings.warn(f"{torn}; the leaderboard is built without it",
                          results.TruncatedLineWarning, stacklevel=2)
        owners = rules.read_owners(path)
        for where, row in located:
            try:
                task = tasks.task_of_row(row)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            key = results.cell_key(row)
            if key in seen:
                raise ValueError(f"{where}: cell {key} already read from {seen[key]}")
            seen[key] = where
            roots_of[key] = ([Path(path).parent, *map(Path, prediction_dirs)], where)
            try:
                rows.append(rules.rescored_row(row, task, read, where))
            except rules.StoredMetricsMismatch as e:
                warnings.warn(f"{e}; the row is left out", rules.LeftOutRowWarning, stacklevel=2)
                continue
            if row["method"] in owners:
                submitted.add(key)

    return LoadedBoard(rows, read, frozenset(submitted))


def _mean_or_none(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _defined(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _summarise_test_set(rows: list[dict], test_set: str, metric: str) -> TestSetSummary:
    values, lows, highs, collapsed = [], [], [], 0
    for row in rows:
        result = row["metrics"].get(test_set)
        if result is None or not _defined(result["values"].get(metric)):
            continue
        collapsed += bool(result.get("collapsed"))
        values.append(float(result["values"][metric]))
        lo, hi = result["ci95"].get(metric, (None, None))
        if _defined(lo) and _defined(hi):
            lows.append(float(lo))
            highs.append(float(hi))
    if not values:
        return TestSetSummary(None, None, 0, None, None)
    mean, std = metrics.summarise_seeds(values)
    return TestSetSummary(mean, std, len(values), _mean_or_none(lows), _mean_or_none(highs),
                          collapsed)


def summarise(rows: Iterable[dict], task: TaskInfo, predictions: PredictionReader | None = None,
              submitted: frozenset = frozenset()) -> list[SummaryRow]:
    """Lines of `task`'s tables from its result rows, seeds pooled, in sorted order (synthetic
    last, then preset, method, backbone, eval_mode, label fraction, init; rows holding fewer test
    sets, by `--test_sets`, form lines of their own); every column of `table_specs(task)` is
    summarised. With `predictions` (a reader of a row's prediction set for a test set), each line
    that is not the control's gets its `differences` to the control; rows whose cell keys are in
    `submitted` are never the control (`is_control`)."""
    columns = list(dict.fromkeys(c for spec in table_specs(task) for c in spec.columns))
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["task"] != task.name:
            continue
        key = (bool(row["synthetic"]), row["preset"], row["method"], backbone_name(row),
               row["eval_mode"], float(row["label_fraction"]), init_label(row), results.precision_name(row),
               held_test_sets(row, task))
        groups.setdefault(key, []).append(row)
    lines = []
    for key in sorted(groups):
        synthetic, preset, method, backbone, eval_mode, fraction, init, precision, held = key
        members = sorted(groups[key], key=lambda r: int(r["seed"]))
        control, differences = _control_differences(task, key, members, groups, predictions,
                                                    submitted)
        teacher, teacher_differences = _teacher_differences(task, key, members, groups, predictions)
        lines.append(SummaryRow(
            method=method, eval_mode=eval_mode, preset=preset, label_fraction=fraction,
            synthetic=synthetic, metric=task.primary_metric,
            test_sets=tuple((t, _summarise_test_set(members, t, task.primary_metric))
                            for t in task.test_sets),
            deterministic=all(is_deterministic(r) for r in members),
            columns=tuple((c, _summarise_test_set(members, *c)) for c in columns),
            init=init, backbone=backbone, precision=precision,
            is_control=all(is_control(r, submitted) for r in members),
            control=control, differences=differences,
            held=() if held == task.test_sets else held,
            teacher=teacher, teacher_differences=teacher_differences))
    return lines


def _teacher_differences(task: TaskInfo, key: tuple, members: list[dict],
                         groups: dict[tuple, list[dict]], predictions: PredictionReader | None
                         ) -> tuple[str, tuple[tuple[str, metrics.PairedDifference | None], ...]]:
    """(teacher line, differences per test set) of a distill line `key`: against the fine-tune
    line of the method, backbone and cell its rows' `distillation.teacher` records (same data kind,
    preset, fraction, init, precision and test sets); ("", ()) for other lines, and ("", None per
    test set) when the teacher's rows are not on the board or the rows name several teachers."""
    if not results.is_distill_mode(key[4]):
        return "", ()
    none = tuple((t, None) for t in task.test_sets)
    records = [r["distillation"]["teacher"] for r in members]
    teachers = {(t["cell"]["method"], backbone_text(t["backbone"])) for t in records}
    if predictions is None or len(teachers) != 1:
        return "", none
    [(method, backbone)] = teachers
    synthetic, preset, _, _, _, fraction, init, precision, held = key
    wanted = (synthetic, preset, method, backbone, "finetune", fraction, init, precision, held)
    if wanted not in groups:
        return "", none
    found = tuple((t, scoring.control_difference(
        task.kind, task.class_names, task.primary_metric, t, members, groups[wanted], predictions,
        bootstrap_samples=rules.bootstrap_samples(preset))) for t in task.test_sets)
    return f"{method} finetune {backbone}", found


def _pretrain_seeds(rows: list[dict]) -> set:
    """The pretraining seeds `rows` record (None for a row that does not)."""
    return {results.pretrain_seed(r) for r in rows}


def _control_differences(task: TaskInfo, key: tuple, members: list[dict],
                         groups: dict[tuple, list[dict]], predictions: PredictionReader | None,
                         submitted: frozenset
                         ) -> tuple[str, tuple[tuple[str, metrics.PairedDifference | None], ...]]:
    """(control method, differences per test set) of the line `key` (`summarise`'s group key):
    against the control rows of the same data kind, preset, backbone, eval mode and fraction (when
    several control lines are there: preferably one of the line's precision, then one with the
    line's pretraining seed, which drew a control's weights, then the first by name); no control
    for a control's line, a line without a recorded backbone, or without `predictions`."""
    synthetic, preset, _, backbone, eval_mode, fraction, _, precision, _ = key
    none = tuple((t, None) for t in task.test_sets)
    if predictions is None or not backbone or all(is_control(r, submitted) for r in members):
        return "", none
    candidates = sorted(
        (k for k, rs in groups.items() if (k[0], k[1], k[3], k[4], k[5]) ==
         (synthetic, preset, backbone, eval_mode, fraction)
         and all(is_control(r, submitted) for r in rs)),
        key=lambda k: (k[7] != precision, _pretrain_seeds(groups[k]) != _pretrain_seeds(members),
                       k[2], k[6], k[7]))
    if not candidates:
        return "", none
    controls = groups[candidates[0]]
    found = tuple((t, scoring.control_difference(
        task.kind, task.class_names, task.primary_metric, t, members, controls, predictions,
        bootstrap_samples=rules.bootstrap_samples(preset))) for t in task.test_sets)
    return (candidates[0][2], found) if any(d is not None for _, d in found) else ("", none)


def fmt(v: float | None, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def format_fraction(fraction: float) -> str:
    """A label fraction as a percentage, e.g. 0.1 -> "10%"."""
    return f"{round(fraction * 100, 6):g}%"


def several_backbones(lines: list[SummaryRow]) -> bool:
    return len({l.backbone for l in lines}) > 1


def several_precisions(lines: list[SummaryRow]) -> bool:
    return len({l.precision for l in lines}) > 1


def sections(lines: list[SummaryRow]) -> list[tuple[str, str, list[SummaryRow]]]:
    """(section id, title, lines) of our runs: real data always, synthetic when present."""
    real = [l for l in lines if not l.synthetic]
    synthetic = [l for l in lines if l.synthetic]
    sections = [(SECTION_REAL, "Our runs: real data", real)]
    if synthetic:
        sections.append((SECTION_SYNTHETIC, "Our runs: SYNTHETIC data (pipeline check on generated "
                         "images, not a result)", synthetic))
    return sections
