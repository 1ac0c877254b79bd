"""Result rows, the append-only results file, per-example prediction files and provenance.

A result row is one cell (task, method, preset, eval_mode, label_fraction, seed) as a JSON object
on one line of `results.jsonl`. Files are replaced atomically (temp file in the same directory,
fsync, `os.replace`), so an interrupted run leaves either the old or the new file, never half a row.
Undefined metric values (nan) are stored as JSON null.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import errno
import fcntl
import hashlib
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import secrets
import stat
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

SCHEMA_VERSION = 2  # 2: code_digest, machine, deterministic, data_build; config.data
EVAL_MODES = ("finetune", "linear", "distill")  # and distill:<backbone> (`eval_mode_problem`)
_DISTILL_MODE = re.compile(r"distill:[a-z_0-9]+-[0-9]+(x[0-9.]+)?(-small)?(-sk1)?")
CELL_KEY_FIELDS = ("task", "method", "preset", "eval_mode", "label_fraction", "seed")

_ROW_KEYS = frozenset(CELL_KEY_FIELDS + (
    "schema", "metrics", "config", "code_version", "code_digest", "machine", "packages",
    "data_fingerprint", "data_build", "deterministic", "synthetic", "created", "wall_seconds"))
_OPTIONAL_ROW_KEYS = frozenset(("n_train_examples", "n_train_groups", "linear_probe",
                                "finetune_selection", "distillation"))
# A linear row's record of its probe (benchmark.harness.linear_probe.fit_probe)
_LINEAR_PROBE_KEYS = frozenset(("C", "grid", "validation", "metric", "standardised", "solver",
                                "max_iter", "unconverged", "constant", "n_validation_examples"))
# A finetune row's record of its schedule search (benchmark.harness.finetune.Trainer.search)
_FINETUNE_SELECTION_KEYS = frozenset(("source", "metric", "eval_points", "schedules", "chosen",
                                      "n_validation_examples"))
_SCHEDULE_KEYS = frozenset(("steps", "learning_rate", "batch_size", "warmup_steps",
                            "decay_boundaries", "mixup_alpha", "eval_steps", "validation"))
FINETUNE_SOURCES = ("preset", "method")
# A distill row's record (benchmark.harness.runner._distill_cell) and its schedules' keys
_DISTILLATION_KEYS = frozenset(("teacher", "student", "n_images", "n_labelled_images",
                                "n_unlabelled_images", "selection"))
_TEACHER_KEYS = frozenset(("cell", "backbone", "weights_sha256", "validation"))
_DISTILL_SCHEDULE_KEYS = _SCHEDULE_KEYS | {"temperature", "label_weight"}
# Keys every row written now has, which rows stored before they existed (same schema) lack:
# required by `validate_row(row)`, optional with `validate_row(row, new=False)`.
NEW_ROW_KEYS = frozenset(("pretrain_summary",))
_CURVE_KEYS = frozenset(("log_every", "batch_size", "first", "last", "chance"))
_TEST_SET_KEYS = frozenset(("primary", "values", "ci95", "n_examples", "n_groups", "fingerprint",
                            "predictions"))
# Test-set keys every row written now has (`collapsed`: null, or what collapsed, see
# `scoring.collapse`), optional like NEW_ROW_KEYS.
NEW_TEST_SET_KEYS = frozenset(("collapsed",))
_COLLAPSE_RULES = ("constant_scores", "one_class")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PACKAGES = ("tensorflow", "keras", "tensorflow-datasets", "numpy", "pandas", "scikit-learn")
_PACKAGE_MODULES = {"tensorflow": "tensorflow", "keras": "keras",
                    "tensorflow-datasets": "tensorflow_datasets", "numpy": "numpy",
                    "pandas": "pandas", "scikit-learn": "sklearn"}


# Method (and submitter) names as they may appear in results, tables and file names.
METHOD_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,62}")
METHOD_NAME_RULE = "1-63 characters from A-Z a-z 0-9 . _ + - starting with a letter or digit"


def eval_mode_problem(mode) -> str | None:
    """Why `mode` is not an eval mode (finetune, linear, distill, distill:<backbone>), or None."""
    if isinstance(mode, str) and (mode in EVAL_MODES or _DISTILL_MODE.fullmatch(mode)):
        return None
    return f"eval_mode {mode!r}: expected one of {EVAL_MODES} or distill:<backbone>"


def is_distill_mode(mode: str) -> bool:
    """Whether `mode` is `distill` or `distill:<backbone>`."""
    return mode == "distill" or mode.startswith("distill:")


def method_name_problem(name) -> str | None:
    """Why `name` cannot be a method name in results (None if it can): the one rule of
    `benchmark.run --name`, `benchmark.submit` and `validate_row`."""
    if isinstance(name, str) and METHOD_NAME_PATTERN.fullmatch(name):
        return None
    return f"method {name!r} must be {METHOD_NAME_RULE}"


def preset_problem(name) -> str | None:
    """Why `name` is not a registered preset (None if it is): the rule of `benchmark.run
    --preset`, `benchmark.submit` and `validate_row`."""
    from benchmark.harness import presets  # imports TensorFlow (via baselines.api): only when needed

    if isinstance(name, str) and name in presets.PRESETS:
        return None
    return f"preset {name!r} is not registered; expected one of {sorted(presets.PRESETS)}"


class RowWarning(RuntimeWarning):
    """A line of a results file that is skipped, reported in one line naming it."""


class TruncatedLineWarning(RowWarning):
    """A results file's last line is not a complete row (an interrupted writer) and is skipped."""


def os_error_text(error: OSError) -> str:
    """One line for an operating-system error: the file it concerns and the reason."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return reason
    text = f"{error.filename}: {reason}"
    return f"{text} (-> {error.filename2})" if error.filename2 is not None else text


@contextlib.contextmanager
def naming_file(path) -> Iterator[None]:
    """Re-raises an OSError that names no file (e.g. ENOSPC during a write) as one naming `path`."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise


def refuse_link(path) -> None:
    """Raises ValueError naming `path` when it is a symbolic link or a file with another hard link:
    the suite writes, replaces and locks only files it made, never through a link to elsewhere."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise ValueError(f"{path}: is a symbolic link (to {os.readlink(path)}); the suite does not "
                         "write through links it did not make; replace it with a regular file")
    if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
        raise ValueError(f"{path}: has {info.st_nlink} hard links; the suite does not write a file "
                         "shared with another path; replace it with a copy of its own")


def lock_path(path) -> Path:
    """The lock file of the results file (or board results file) `path`."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def file_lock(path, *, shared: bool = False) -> Iterator[None]:
    """Holds an flock on the lock file `path` for the block: exclusive, or `shared` (a reader).
    The file is created if missing and never opened through a symlink or hard link (ValueError
    naming it); an exclusive holder deletes it when done, so no empty lock file stays behind
    (a waiter that then holds the deleted file takes the lock again on the new one). A reader
    that may not create the lock file (read-only folder) reads without it."""
    path = Path(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                refuse_link(path)
            if not (shared and e.errno in (errno.EACCES, errno.EROFS) and not path.exists()):
                raise OSError(e.errno, e.strerror, str(path)) from None
            fd = None
        if fd is None:  # a reader in a folder it may not write to
            yield
            return
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                refuse_link(path)
                raise ValueError(f"{path}: not a regular file; expected the lock file")
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                continue
            if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
                continue
            try:
                yield
            finally:
                if not shared:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            return
        finally:
            os.close(fd)


def cell_key(row: dict) -> tuple:
    """(task, method, preset, eval_mode, label_fraction, seed) of a result row."""
    missing = [k for k in CELL_KEY_FIELDS if k not in row]
    if missing:
        raise ValueError(f"result row: missing key {missing[0]!r} (a cell is {CELL_KEY_FIELDS})")
    return (str(row["task"]), str(row["method"]), str(row["preset"]), str(row["eval_mode"]),
            float(row["label_fraction"]), int(row["seed"]))


def _is_number(v) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_)))


def _is_sha256(v) -> bool:
    return isinstance(v, str) and _SHA256_HEX.fullmatch(v) is not None


def _is_metric(v) -> bool:
    """A metric value: a number (nan allowed, stored as null) or None."""
    return v is None or (_is_number(v) and not math.isinf(float(v)))


def _fail(key: str, expected: str, value) -> None:
    raise ValueError(f"result row: {key!r} must be {expected}, got {value!r}")


def validate_row(row: dict, *, new: bool = True) -> None:
    """Checks a result row against the schema (see the harness contract); raises ValueError naming
    the first bad key. `new=False` accepts a row stored before the `NEW_ROW_KEYS`,
    `NEW_TEST_SET_KEYS`, `linear_probe` (the record of a linear row's probe: chosen C, grid,
    validation score per C, ...) and `finetune_selection` (a finetune row's schedule search: the
    schedules, the validation score at each evaluated step, the chosen point, ...) existed (e.g.
    committed leaderboard rows) without them; present, they are checked alike. `linear_probe`
    appears only on linear rows, `finetune_selection` only on finetune rows."""
    if not isinstance(row, dict):
        raise ValueError(f"result row: expected a JSON object, got {type(row).__name__}")
    if row.get("schema") != SCHEMA_VERSION or isinstance(row.get("schema"), bool):
        if row.get("schema") == 1:
            raise ValueError(f"result row: schema 1 (this code writes schema {SCHEMA_VERSION}); it "
                             "lacks what a re-run and an audit need (code_digest, machine, "
                             "deterministic, data_build): recompute it with the current code")
        _fail("schema", str(SCHEMA_VERSION), row.get("schema"))
    required = _ROW_KEYS | NEW_ROW_KEYS if new else _ROW_KEYS
    for key in sorted(required - row.keys()):
        raise ValueError(f"result row: missing key {key!r}")
    for key in sorted(row.keys() - _ROW_KEYS - NEW_ROW_KEYS - _OPTIONAL_ROW_KEYS):
        raise ValueError(f"result row: unexpected key {key!r}; expected only "
                         f"{sorted(_ROW_KEYS | NEW_ROW_KEYS | _OPTIONAL_ROW_KEYS)}")
    for key in ("task", "method", "preset", "code_version"):
        if not (isinstance(row[key], str) and row[key]):
            _fail(key, "a non-empty str", row[key])
    for problem in (method_name_problem(row["method"]), preset_problem(row["preset"])):
        if problem:
            raise ValueError(f"result row: {problem}")
    if eval_mode_problem(row["eval_mode"]):
        _fail("eval_mode", f"one of {EVAL_MODES} or distill:<backbone>", row["eval_mode"])
    f = row["label_fraction"]
    if not (_is_number(f) and 0 < f <= 1):
        _fail("label_fraction", "a number in (0, 1]", f)
    if not isinstance(row["seed"], (int, np.integer)) or isinstance(row["seed"], bool):
        _fail("seed", "an int", row["seed"])
    if not isinstance(row["config"], dict):
        _fail("config", "an object", row["config"])
    packages = row["packages"]
    if not (isinstance(packages, dict) and all(isinstance(k, str) for k in packages)
            and all(v is None or isinstance(v, str) for v in packages.values())):
        _fail("packages", "an object of name -> version str (or null)", packages)
    if not _is_sha256(row["code_digest"]):
        _fail("code_digest", "a sha256 hex digest", row["code_digest"])
    m = row["machine"]
    if not (isinstance(m, dict) and {"arch", "cpu", "isa", "onednn"} <= m.keys()
            and isinstance(m["isa"], list)):
        _fail("machine", "an object with arch, cpu, isa (list) and onednn", m)
    if not _is_sha256(row["data_fingerprint"]):
        _fail("data_fingerprint", "a sha256 hex digest", row["data_fingerprint"])
    build = row["data_build"]
    if not (isinstance(build, dict) and build and all(isinstance(k, str) and k for k in build)
            and all(_is_sha256(v) for v in build.values())):
        _fail("data_build", "a non-empty object of build -> sha256 hex digest", build)
    if not isinstance(row["synthetic"], (bool, np.bool_)):
        _fail("synthetic", "a bool", row["synthetic"])
    _check_created(row["created"])
    w = row["wall_seconds"]
    if not (_is_number(w) and math.isfinite(w) and w >= 0):
        _fail("wall_seconds", "a finite number >= 0", w)
    if not isinstance(row["deterministic"], (bool, np.bool_)):
        _fail("deterministic", "a bool", row["deterministic"])
    for key in sorted({"n_train_examples", "n_train_groups"} & row.keys()):
        v = row[key]
        upper = row[key] if key == "n_train_examples" else row.get("n_train_examples", math.inf)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 1 <= v <= upper:
            _fail(key, "an int >= 1 (n_train_groups <= n_train_examples)", v)
    if row["eval_mode"] == "linear" and (new or "linear_probe" in row):
        _check_linear_probe(row.get("linear_probe"))
    elif "linear_probe" in row:
        _fail("linear_probe", "absent from a finetune row", row["linear_probe"])
    if row["eval_mode"] == "finetune" and (new or "finetune_selection" in row):
        _check_selection("finetune_selection", row.get("finetune_selection"), _SCHEDULE_KEYS)
    elif "finetune_selection" in row:
        _fail("finetune_selection", "absent from a linear or distill row", row["finetune_selection"])
    if is_distill_mode(row["eval_mode"]):
        _check_distillation(row.get("distillation"))
    elif "distillation" in row:
        _fail("distillation", "absent from a finetune or linear row", row["distillation"])
    if "pretrain_summary" in row:
        _check_pretrain_summary(row["pretrain_summary"])
    metrics = row["metrics"]
    if not (isinstance(metrics, dict) and metrics):
        _fail("metrics", "a non-empty object of test set -> results", metrics)
    for test_set, result in metrics.items():
        _check_test_set(f"metrics.{test_set}", result, new=new)


def _check_linear_probe(probe) -> None:
    if not (isinstance(probe, dict) and probe.keys() == _LINEAR_PROBE_KEYS):
        _fail("linear_probe", f"an object with the keys {sorted(_LINEAR_PROBE_KEYS)}", probe)
    grid = probe["grid"]
    if not (isinstance(grid, list) and grid and all(_is_number(c) and c > 0 for c in grid)):
        _fail("linear_probe.grid", "a non-empty list of numbers > 0", grid)
    if probe["C"] not in grid:
        _fail("linear_probe.C", f"one of the grid {grid}", probe["C"])
    validation = probe["validation"]
    if not (isinstance(validation, dict) and set(validation) == {str(float(c)) for c in grid}
            and all(_is_metric(v) for v in validation.values())):
        _fail("linear_probe.validation", "an object of str(C) -> score (null when undefined) for "
              "every C of the grid", validation)
    if not (isinstance(probe["metric"], str) and probe["metric"]):
        _fail("linear_probe.metric", "a metric name", probe["metric"])
    if not isinstance(probe["standardised"], bool):
        _fail("linear_probe.standardised", "a bool", probe["standardised"])


def _check_distillation(record) -> None:
    key = "distillation"
    if not (isinstance(record, dict) and record.keys() == _DISTILLATION_KEYS):
        _fail(key, f"an object with the keys {sorted(_DISTILLATION_KEYS)}", record)
    teacher = record["teacher"]
    if not (isinstance(teacher, dict) and teacher.keys() == _TEACHER_KEYS
            and isinstance(teacher["cell"], dict) and teacher["cell"].get("eval_mode") == "finetune"
            and set(teacher["cell"]) == set(CELL_KEY_FIELDS) and _is_sha256(teacher["weights_sha256"])
            and isinstance(teacher["backbone"], dict) and _is_metric(teacher["validation"])):
        _fail(f"{key}.teacher", f"an object with the keys {sorted(_TEACHER_KEYS)} (cell: a finetune "
              "cell key, weights_sha256: a sha256 hex digest)", teacher)
    student = record["student"]
    if not (isinstance(student, dict) and student.keys() == {"backbone", "init"}
            and isinstance(student["backbone"], dict) and isinstance(student["init"], str)):
        _fail(f"{key}.student", "an object with the keys backbone (object) and init (str)", student)
    n, labelled, unlabelled = (record[k] for k in ("n_images", "n_labelled_images",
                                                   "n_unlabelled_images"))
    if not (_is_count(n, 1) and _is_count(labelled, 1) and _is_count(unlabelled, 0)
            and labelled + unlabelled == n):
        _fail(f"{key}.n_images", "counts with n_labelled_images + n_unlabelled_images = n_images",
              [n, labelled, unlabelled])
    _check_selection(f"{key}.selection", record["selection"], _DISTILL_SCHEDULE_KEYS)


def _check_selection(key: str, selection, schedule_keys: frozenset) -> None:
    if not (isinstance(selection, dict) and selection.keys() == _FINETUNE_SELECTION_KEYS):
        _fail(key, f"an object with the keys {sorted(_FINETUNE_SELECTION_KEYS)}", selection)
    if selection["source"] not in FINETUNE_SOURCES:
        _fail(f"{key}.source", f"one of {FINETUNE_SOURCES}", selection["source"])
    if not (isinstance(selection["metric"], str) and selection["metric"]):
        _fail(f"{key}.metric", "a metric name", selection["metric"])
    if not _is_count(selection["eval_points"], 1):
        _fail(f"{key}.eval_points", "an int >= 1", selection["eval_points"])
    schedules = selection["schedules"]
    if not (isinstance(schedules, list) and schedules):
        _fail(f"{key}.schedules", "a non-empty list", schedules)
    for i, schedule in enumerate(schedules):
        where = f"{key}.schedules.{i}"
        if not (isinstance(schedule, dict) and schedule.keys() == schedule_keys):
            _fail(where, f"an object with the keys {sorted(schedule_keys)}", schedule)
        steps, at = schedule["steps"], schedule["eval_steps"]
        if not _is_count(steps, 1):
            _fail(f"{where}.steps", "an int >= 1", steps)
        if not (isinstance(at, list) and at and all(_is_count(s, 1) for s in at)
                and at == sorted(set(at)) and at[-1] == steps):
            _fail(f"{where}.eval_steps", f"increasing steps in [1, {steps}] ending at {steps}", at)
        scores = schedule["validation"]
        if not (isinstance(scores, list) and len(scores) == len(at) and all(_is_metric(v) for v in scores)):
            _fail(f"{where}.validation", "a score (null when undefined) per eval step", scores)
    chosen = selection["chosen"]
    ok = isinstance(chosen, dict) and chosen.keys() == {"schedule", "step", "validation"}
    ok = ok and _is_count(chosen["schedule"], 0) and chosen["schedule"] < len(schedules)
    ok = ok and chosen["step"] in schedules[chosen["schedule"]]["eval_steps"]
    if not ok or chosen["validation"] != schedules[chosen["schedule"]]["validation"][
            schedules[chosen["schedule"]]["eval_steps"].index(chosen["step"])]:
        _fail(f"{key}.chosen", "{schedule: index, step: one of its eval_steps, validation: its "
              "score}", chosen)


def _check_collapsed(prefix: str, collapsed) -> None:
    if collapsed is None:
        return
    ok = (isinstance(collapsed, dict) and collapsed.get("rule") in _COLLAPSE_RULES
          and isinstance(collapsed.get("classes"), list) and collapsed["classes"]
          and all(isinstance(c, str) for c in collapsed["classes"]))
    if ok and collapsed["rule"] == "one_class":
        ok = (collapsed.keys() == {"rule", "classes", "predicted_share", "label_share"}
              and len(collapsed["classes"]) == 1
              and all(_is_number(collapsed[k]) and 0 <= collapsed[k] <= 1
                      for k in ("predicted_share", "label_share")))
    elif ok:
        ok = collapsed.keys() == {"rule", "classes"}
    if not ok:
        _fail(f"{prefix}.collapsed", "null, {rule: constant_scores, classes: [...]} or {rule: "
              "one_class, classes: [one], predicted_share, label_share}", collapsed)


def _is_count(v, least: int) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= least


def _check_pretrain_summary(summary) -> None:
    """{"method": str, "steps": int >= 0 | null (not recorded), "curve": null (no curve logged) |
    {"log_every", "batch_size": int >= 1, "first", "last": {"step": int in [1, steps], <logged
    value>: number, ...} | null, "chance": {<logged value>: number}}}."""
    key = "pretrain_summary"
    if not (isinstance(summary, dict) and set(summary) == {"method", "steps", "curve"}):
        _fail(key, "an object with keys method, steps and curve", summary)
    if not (isinstance(summary["method"], str) and summary["method"]):
        _fail(f"{key}.method", "a non-empty str", summary["method"])
    steps, curve = summary["steps"], summary["curve"]
    if steps is not None and not _is_count(steps, 0):
        _fail(f"{key}.steps", "an int >= 0 or null (not recorded)", steps)
    if curve is None:
        return
    if steps is None or not (isinstance(curve, dict) and set(curve) == _CURVE_KEYS):
        _fail(f"{key}.curve", f"null or an object with keys {sorted(_CURVE_KEYS)} (and steps recorded)",
              curve)
    for name in ("log_every", "batch_size"):
        if not _is_count(curve[name], 1):
            _fail(f"{key}.curve.{name}", "an int >= 1", curve[name])
    numbers = lambda d: all(isinstance(k, str) and _is_number(v) and math.isfinite(v)  # noqa: E731
                            for k, v in d.items())
    for name in ("first", "last"):
        point = curve[name]
        if point is None:
            continue
        if not (isinstance(point, dict) and _is_count(point.get("step"), 1) and point["step"] <= steps
                and numbers(point)):
            _fail(f"{key}.curve.{name}", f"null or an object with a step in [1, {steps}] and finite numbers",
                  point)
    if not (isinstance(curve["chance"], dict) and numbers(curve["chance"])):
        _fail(f"{key}.curve.chance", "an object of logged value -> finite number", curve["chance"])


def _check_created(created) -> None:
    try:
        stamp = datetime.datetime.fromisoformat(created)
    except (TypeError, ValueError):
        stamp = None
    if stamp is None or stamp.utcoffset() != datetime.timedelta(0):
        _fail("created", "an ISO-8601 UTC timestamp such as 2025-01-31T12:00:00+00:00", created)


def _check_test_set(prefix: str, result, *, new: bool) -> None:
    if not isinstance(result, dict):
        _fail(prefix, "an object", result)
    for key in sorted((_TEST_SET_KEYS | NEW_TEST_SET_KEYS if new else _TEST_SET_KEYS) - result.keys()):
        raise ValueError(f"result row: missing key '{prefix}.{key}'")
    for key in sorted(result.keys() - _TEST_SET_KEYS - NEW_TEST_SET_KEYS):
        raise ValueError(f"result row: unexpected key '{prefix}.{key}'; expected only "
                         f"{sorted(_TEST_SET_KEYS | NEW_TEST_SET_KEYS)}")
    if "collapsed" in result:
        _check_collapsed(prefix, result["collapsed"])
    values = result["values"]
    if not (isinstance(values, dict) and values and all(isinstance(k, str) for k in values)):
        _fail(f"{prefix}.values", "a non-empty object of metric name -> number", values)
    for name, v in values.items():
        if not _is_metric(v):
            _fail(f"{prefix}.values.{name}", "a finite number, nan or null", v)
    if result["primary"] not in values:
        _fail(f"{prefix}.primary", f"one of the metric names {sorted(values)}", result["primary"])
    ci = result["ci95"]
    if not isinstance(ci, dict) or set(ci) != set(values):
        _fail(f"{prefix}.ci95", f"an object with the keys of values {sorted(values)}", ci)
    for name, interval in ci.items():
        ok = isinstance(interval, (list, tuple)) and len(interval) == 2
        ok = ok and all(_is_metric(b) for b in interval)
        defined = ok and all(b is not None and not math.isnan(b) for b in interval)
        if not ok or (defined and interval[0] > interval[1]):
            _fail(f"{prefix}.ci95.{name}", "[lo, hi] with lo <= hi (null/nan when undefined)",
                  interval)
    n, g = result["n_examples"], result["n_groups"]
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        _fail(f"{prefix}.n_examples", "an int >= 1", n)
    if not isinstance(g, (int, np.integer)) or isinstance(g, bool) or not 1 <= g <= n:
        _fail(f"{prefix}.n_groups", f"an int in [1, n_examples={n}]", g)
    if not _is_sha256(result["fingerprint"]):
        _fail(f"{prefix}.fingerprint", "a sha256 hex digest", result["fingerprint"])
    p = result["predictions"]
    if not (isinstance(p, str) and p and not os.path.isabs(p) and ".." not in Path(p).parts):
        _fail(f"{prefix}.predictions", "a path relative to the output directory", p)


def _jsonable(value) -> Any:
    """Plain JSON values: numpy scalars/arrays converted, non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# The name of an `atomic_writer` temporary: `.<name>.<12 hex>.tmp` beside the file it replaces.
TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A new file next to `path` (created with the umask's mode, like a plain open)."""
    while True:
        tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp"))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as e:  # name the directory the user chose, not the temporary name
            raise OSError(e.errno, f"{e.strerror} (cannot create a file in it)",
                          str(path.parent)) from None


@contextlib.contextmanager
def atomic_writer(path: Path, binary: bool = False) -> Iterator[io.IOBase]:
    """A text (or binary) file that replaces `path` only when the block completes; it keeps the
    permissions of the file it replaces (a new file gets the umask's, like a plain open). An OS
    error that names no file (e.g. ENOSPC) is raised naming `path`; a `path` that is a link is
    refused (`refuse_link`)."""
    path = Path(path)
    refuse_link(path)
    with naming_file(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temporary_beside(path)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
            mode = "wb" if binary else "w"
            text_args = {} if binary else {"encoding": "utf-8", "newline": ""}
            with os.fdopen(fd, mode, **text_args) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Makes renames and new entries in `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def precision_name(row: dict) -> str:
    """The precision a row trained in (`config.precision.used`); "" when its config does not record
    it."""
    config = row.get("config") if isinstance(row.get("config"), dict) else {}
    recorded = config.get("precision")
    return str(recorded.get("used", "")) if isinstance(recorded, dict) else ""


def pretrain_seed(row: dict):
    """The pretraining seed a row records (`config.pretrain.seed`), or None."""
    return ((row.get("config") or {}).get("pretrain") or {}).get("seed")


def read_valid_rows(path: str | os.PathLike) -> tuple[list[tuple[str, dict]], str | None]:
    """(`<path>:<line>`, row) of every complete row of the results file `path`, each checked with
    `validate_row` (rows stored before `NEW_ROW_KEYS` existed are accepted), and the message about
    a truncated last line (`ResultsStore.scan`). Raises ValueError naming the file and line of an
    invalid row."""
    parsed, torn = ResultsStore(path).scan()
    located = []
    for line, _, row in parsed:
        where = f"{path}:{line}"
        try:
            validate_row(row, new=False)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        located.append((where, row))
    return located, torn


class ResultsStore:
    """The rows of one `results.jsonl`, read tolerantly and appended atomically."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def scan(self) -> tuple[list[tuple[int, str, dict]], str | None]:
        """(line number, line text, row) of every complete row, and the message about a
        truncated (malformed) last line, which is skipped (None if there is none). Raises
        ValueError naming the file and line for any other malformed line."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], None
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        lines = text.splitlines()
        parsed, torn = [], None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if number == len(lines):
                    torn = f"{self.path}:{number}: ignoring truncated last line ({e})"
                    continue
                raise ValueError(f"{self.path}:{number}: malformed result row ({e})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{self.path}:{number}: expected a JSON object per line")
            parsed.append((number, line, row))
        return parsed, torn

    def _read_lines(self) -> list[tuple[int, str, dict]]:
        """(line number, line text, row) for every complete row; a malformed last line is
        reported (TruncatedLineWarning) and skipped."""
        parsed, torn = self.scan()
        if torn:
            warnings.warn(torn, TruncatedLineWarning, stacklevel=3)
        return parsed

    def rows(self) -> list[dict]:
        """All complete rows, in file order."""
        return [row for _, _, row in self._read_lines()]

    def find(self, key: tuple) -> tuple[int, dict] | None:
        """(line number, row) of the row stored for cell `key` (see `cell_key`), or None."""
        key = tuple(key)
        return next(((number, row) for number, _, row in self._read_lines()
                     if cell_key(row) == key), None)

    def done(self, key: tuple) -> bool:
        """Whether a row for cell `key` (see `cell_key`) is stored."""
        return self.find(key) is not None

    def append(self, row: dict, files: dict[str, str] | None = None) -> None:
        """Validates `row` and adds it as the last line, replacing the file atomically (a
        truncated last line left by another writer is dropped). Raises ValueError if its cell is
        already stored.

        `files` maps temporary paths to the final paths the row points to (its prediction
        files); they are committed with the row: renamed to their final names under the store's
        lock, after the check that the cell is not stored yet, just before the row is written.
        If the row is rejected (invalid, or its cell already stored) the temporaries are deleted
        and files already in place are not touched. A crash leaves one of:
        - temporaries and no row (before the renames): harmless left-overs, never read;
        - final files and no row (between the renames and the row): no row points to them, and
          the cell's next computation renames its own files over them;
        - final files and the row: committed.
        So a stored row always points to the files it was scored from."""
        pending = dict(files or {})
        try:
            row = _jsonable(row)
            validate_row(row, new=True)
            line = json.dumps(row, sort_keys=True, allow_nan=False, ensure_ascii=False)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with file_lock(lock_path(self.path)):
                for target in (self.path, *pending.values()):
                    refuse_link(target)
                existing = self._read_lines()
                key = cell_key(row)
                if any(cell_key(r) == key for _, _, r in existing):
                    raise ValueError(f"{self.path}: cell {key} is already stored")
                for tmp in list(pending):
                    os.replace(tmp, pending.pop(tmp))
                for folder in {os.path.dirname(os.path.abspath(p)) for p in (files or {}).values()}:
                    fsync_dir(folder)
                with atomic_writer(self.path) as f:
                    for _, text, _ in existing:
                        f.write(text + "\n")
                    f.write(line + "\n")
        finally:
            for tmp in pending:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that determine results (None when not installed), and Python's."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            module = sys.modules.get(_PACKAGE_MODULES[name])
            versions[name] = getattr(module, "__version__", None)
    versions["python"] = platform.python_version()
    return versions


def fingerprint(*parts) -> str:
    """SHA-256 hex digest of a sequence of strings, bytes and arrays (or lists of numbers or
    strings); sensitive to order, types, shapes and values, identical across runs and machines."""
    h = hashlib.sha256()

    def feed(tag: bytes, payload: bytes) -> None:
        h.update(tag + len(payload).to_bytes(8, "big") + payload)

    for i, part in enumerate(parts):
        if isinstance(part, str):
            feed(b"s", part.encode("utf-8"))
        elif isinstance(part, (bytes, bytearray)):
            feed(b"b", bytes(part))
        else:
            a = np.asarray(part)
            if a.dtype.kind in "OUS":
                strings = [x.decode("utf-8") if isinstance(x, bytes) else x for x in a.ravel()]
                if not all(isinstance(x, str) for x in strings):
                    raise ValueError(f"fingerprint: part {i} mixes strings and non-strings")
                feed(b"t", repr(a.shape).encode())
                for x in strings:
                    feed(b"s", x.encode("utf-8"))
            elif a.dtype.kind in "biuf":
                canonical = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
                feed(b"a", f"{canonical.dtype.str}{a.shape}".encode())
                feed(b"d", canonical.tobytes())
            else:
                raise ValueError(f"fingerprint: part {i} has unsupported dtype {a.dtype}")
    return h.hexdigest()


def examples_fingerprint(example_ids: Sequence[str], labels) -> str:
    """The contract's test set fingerprint: `fingerprint` of the example ids in sorted order and
    their labels in that order (every nan hashed alike)."""
    ids = np.asarray([str(x) for x in example_ids], dtype=object)
    order = np.argsort(ids, kind="stable")
    y = np.asarray(labels, dtype=np.float64)
    if y.shape[:1] != ids.shape:
        raise ValueError(f"examples_fingerprint: {len(ids)} example_ids but labels of shape "
                         f"{y.shape}")
    y = np.where(np.isnan(y), np.nan, y)[order]
    return fingerprint(ids[order], y)


def _labels_matrix(labels, n: int, k: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 1 and y.shape[0] == n:
        if not np.issubdtype(y.dtype, np.integer) or (n and (y.min() < 0 or y.max() >= k)):
            raise ValueError(f"write_predictions: 1-D labels must be class indices in [0, {k})")
        return np.eye(k)[y] if n else np.zeros((0, k))
    y = y.astype(np.float64)
    if y.shape != (n, k):
        raise ValueError(f"write_predictions: labels must be [N={n}] class indices or [N, K]="
                         f"[{n}, {k}], got shape {y.shape}")
    known = ~np.isnan(y)
    if not np.all((y[known] == 0) | (y[known] == 1)):
        raise ValueError("write_predictions: labels must be 0, 1 or nan (unknown)")
    return y


def write_predictions(path: str | os.PathLike, example_ids: Sequence[str], group_ids: Sequence[str],
                      labels, scores, class_names: Sequence[str]) -> None:
    """Writes the per-example prediction CSV of the contract (`example_id,group_id,label/<class>...,
    score/<class>...`, rows sorted by example_id, blank label = unknown) atomically. `labels` are
    [N, K] 0/1/nan or [N] class indices (written one-hot)."""
    names = [str(c) for c in class_names]
    if not names or len(set(names)) != len(names) or not all(names):
        raise ValueError(f"write_predictions: class_names must be unique non-empty, got {names}")
    ex = [str(x) for x in example_ids]
    gr = [str(x) for x in group_ids]
    n, k = len(ex), len(names)
    if len(gr) != n:
        raise ValueError(f"write_predictions: {n} example_ids but {len(gr)} group_ids")
    if len(set(ex)) != n:
        raise ValueError("write_predictions: example_ids must be unique")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n, k):
        raise ValueError(f"write_predictions: scores must be [N, K]=[{n}, {k}], got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("write_predictions: scores must be finite")
    y = _labels_matrix(labels, n, k)
    with atomic_writer(Path(path)) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["example_id", "group_id"] + [f"label/{c}" for c in names]
                        + [f"score/{c}" for c in names])
        for i in sorted(range(n), key=lambda j: ex[j]):
            writer.writerow([ex[i], gr[i]]
                            + ["" if math.isnan(v) else str(int(v)) for v in y[i]]
                            + [repr(float(v)) for v in s[i]])


def read_predictions(path: str | os.PathLike, data: bytes | None = None):
    """Reads a prediction CSV: (example_ids, group_ids, labels [N, K] float with nan = unknown,
    scores [N, K] float64, class_names), ids as object arrays of str. `data` is the file's content
    when the caller already read it (`path` then only names the file in messages)."""
    path = Path(path)
    source = (open(path, encoding="utf-8", newline="") if data is None
              else io.StringIO(data.decode("utf-8"), newline=""))
    with source as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file; expected a header row")
        k = (len(header) - 2) // 2
        names = [h[len("label/"):] for h in header[2:2 + k]]
        expected = (["example_id", "group_id"] + [f"label/{c}" for c in names]
                    + [f"score/{c}" for c in names])
        if k < 1 or header != expected or not all(names):
            raise ValueError(f"{path}:1: bad header {header}; expected example_id,group_id,"
                             "label/<class>...,score/<class>... with the same classes in order")
        ex, gr, ys, ss = [], [], [], []
        first_line: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if len(row) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} fields, got {len(row)}")
            try:
                y = [float("nan") if v == "" else float(v) for v in row[2:2 + k]]
                s = [float(v) for v in row[2 + k:]]
            except ValueError as e:
                raise ValueError(f"{path}:{line}: {e}") from None
            if not all(math.isnan(v) or v in (0.0, 1.0) for v in y):
                raise ValueError(f"{path}:{line}: labels must be 0, 1 or blank, got {row[2:2 + k]}")
            if not all(math.isfinite(v) for v in s):
                raise ValueError(f"{path}:{line}: scores must be finite, got {row[2 + k:]}")
            if not row[0]:
                raise ValueError(f"{path}:{line}: empty example_id")
            if first_line.setdefault(row[0], line) != line:
                raise ValueError(f"{path}:{line}: example_id {row[0]!r} already on line "
                                 f"{first_line[row[0]]}")
            ex.append(row[0])
            gr.append(row[1])
            ys.append(y)
            ss.append(s)
    return (np.asarray(ex, dtype=object), np.asarray(gr, dtype=object),
            np.asarray(ys, dtype=np.float64).reshape(-1, k),
            np.asarray(ss, dtype=np.float64).reshape(-1, k), tuple(names))


def write_bytes(path: Path, data: bytes) -> None:
    """Replaces `path` atomically; an OS error names `path`."""
    with atomic_writer(path, binary=True) as f:
        f.write(data)
