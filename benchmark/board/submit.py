"""Validating a leaderboard submission, re-scoring its predictions and merging it (the command is
`python -m benchmark.submit`).

A submission directory holds
  submission.json   {"submitter": "<name>"}  (who owns the method names it introduces)
  results.jsonl     one result row per cell, as the harness writes them (`benchmark.harness.results`)
  <files>.csv       the per-example prediction files the rows name in
                    `metrics.<test set>.predictions` (paths relative to the submission directory)

Accepted only if every check passes; otherwise one `SubmissionError` names the kind of problem
(`code`, see REJECTIONS), the file/row/key, and nothing is written. The checks:
- the submission reads nothing outside its directory: every file it names (and results.jsonl,
  submission.json) must be a regular file whose real path, after symlinks, is inside it;
- every row passes `results.validate_row`, with a known task and preset, both of the task's test
  sets, the task's primary metric, a float label fraction in (0, 1] and an int seed >= 0;
- method names follow `results.method_name_problem` and are not owned by another submitter
  (methods already on the leaderboard that no submitter owns belong to the reference baselines);
  names are unique after case-folding and dropping punctuation (`rules.folded_name`), and none
  reads as the control (`random_init...`): controls are the board's reference rows;
- no cell twice, in the submission or against the leaderboard;
- REQUIRED GRID: every (task, method, preset, eval_mode) submitted covers exactly the preset's label
  fractions x seeds of the leaderboard's reference rows of that (task, preset, eval_mode), or the
  preset's grid (`benchmark.harness.presets`) where there are none, e.g. preset "paper": 1%, 10%,
  100% x seeds 0-4;
- each test set's fingerprint equals the one of reference rows of that task, preset and test set
  in the leaderboard results file, and the prediction file holds exactly that test set (ids, labels
  and, when a reference prediction file is present, group ids);
- everything the reference rows of that test set say about it agrees: the synthetic flag, the
  number of examples and groups; and, with the reference rows of the same label fraction and seed
  on the same test sets, the training subset (data_fingerprint, n_train_examples,
  n_train_groups);
- no two cells present byte-identical prediction files for a test set (except the seeds of a
  linear probe on 100% of the labels, which the harness makes identical);
- every prediction file is re-scored by the board's rules (`rules.rescore`: the preset's bootstrap
  samples, the cell's seed); the submitted values, CIs and counts must agree within TOLERANCE.
Accepted rows are stored with the re-scored numbers, their prediction files (the bytes that were
scored) under `<results dir>/submissions/<method>/`, method ownership recorded in
`<results stem>_submitters.json`, and the leaderboard tables regenerated. All of it happens under
the board's lock and is written to staging directories first, then moved into place by a
journaled commit (`benchmark.board.journal`): if anything fails (a bad published.csv, a full
disk), whatever was moved is put back, so the leaderboard is exactly as before; if the process is
killed, the next writer completes the commit or, before the journal, discards the staged files.
Files the merge would write or replace must not be links (`results.refuse_link`).
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmark.board import journal, leaderboard, rules
from benchmark.board.lines import CONTROL_METHOD
from benchmark.harness import results

TOLERANCE = rules.TOLERANCE
METHOD_NAME_PATTERN = results.METHOD_NAME_PATTERN
SUBMITTER_PATTERN = METHOD_NAME_PATTERN
REFERENCE_OWNER = "reference"
SUBMISSION_FILE = "submission.json"
RESULTS_FILE = "results.jsonl"

REJECTIONS = {
    "missing_dir": "the submission directory does not exist",
    "outside_submission": "a file the submission names is outside its directory (.., an absolute "
                          "path or a symlink) or not a regular file",
    "no_results": "results.jsonl is missing or holds no rows",
    "bad_submitter": "submission.json is missing or not {\"submitter\": \"<name>\"}",
    "malformed_json": "a line of results.jsonl is not a JSON object",
    "bad_cell_types": "label_fraction is not a number in (0, 1] or seed is not an int >= 0",
    "schema": "a row fails the results schema (missing/unexpected key, wrong type, wrong test sets "
              "or primary metric)",
    "unknown_task": "a row names a task that is not registered",
    "unknown_preset": "a row names a preset that is not registered",
    "invalid_method_name": "a method name has characters or a length outside METHOD_NAME_PATTERN",
    "duplicate_cell": "a cell appears twice in the submission or is already on the leaderboard",
    "method_clash": "a method name is owned by another submitter or the reference baselines",
    "incomplete_grid": "a (task, method, preset, eval_mode) misses cells of the required grid",
    "cell_outside_grid": "a cell's label fraction or seed is not in the required grid",
    "no_reference": "the leaderboard has no reference rows for the task and preset",
    "wrong_fingerprint": "a row's test-set fingerprint differs from the reference test set's",
    "reference_mismatch": "a row disagrees with the reference rows of its test set (synthetic "
                          "flag, test-set size) or of its training subset (data_fingerprint, "
                          "n_train_examples, n_train_groups)",
    "missing_predictions": "a prediction file named by a row does not exist",
    "malformed_predictions": "a prediction file is not the contract CSV for the task",
    "ids_mismatch": "a prediction file's example ids are not the test set's",
    "label_mismatch": "a prediction file's labels are not the test set's",
    "group_mismatch": "a prediction file's group ids are not the test set's",
    "metric_mismatch": "a submitted number disagrees with the re-scored one",
    "duplicate_predictions": "two cells present byte-identical prediction files for a test set",
}


class SubmissionError(ValueError):
    """A rejected submission; `code` is a key of REJECTIONS."""

    def __init__(self, code: str, detail: str):
        if code not in REJECTIONS:
            raise KeyError(f"unknown rejection code {code!r}")
        super().__init__(f"submission rejected [{code}]: {detail}")
        self.code = code


@dataclasses.dataclass(frozen=True)
class ReferenceTestSet:
    """One test set as the reference rows saw it: its fingerprint, whether it is synthetic, its
    size and, when a reference prediction file is on disk, its example ids (sorted) with their
    group ids and labels."""

    fingerprint: str
    synthetic: bool
    n_examples: int
    n_groups: int
    example_ids: np.ndarray | None = None
    group_ids: np.ndarray | None = None
    labels: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class LeaderboardState:
    """The leaderboard's results file, its rows and who owns each submitted method."""

    results_path: Path
    rows: tuple[dict, ...]
    owners: dict[str, str]

    @property
    def owners_path(self) -> Path:
        return rules.owners_path(self.results_path)

    def owner(self, method: str) -> str | None:
        """The submitter owning `method`, REFERENCE_OWNER for other methods on the board, or
        None."""
        if method in self.owners:
            return self.owners[method]
        if any(r["method"] == method for r in self.rows):
            return REFERENCE_OWNER
        return None


@dataclasses.dataclass(frozen=True)
class Accepted:
    """A validated submission: rows with re-scored metrics, and their source prediction files."""

    submitter: str
    rows: tuple[dict, ...]
    sources: tuple[dict[str, bytes], ...]  # per row: test set -> the scored prediction file


def load_leaderboard(results_path: str | os.PathLike) -> LeaderboardState:
    """The current rows (none if the file does not exist) and method owners of a leaderboard;
    raises ValueError naming the file and line of a malformed or invalid row (a truncated last
    line is skipped with a warning, as `results.ResultsStore` does)."""
    path = Path(results_path)
    parsed, torn = results.ResultsStore(path).scan()
    if torn:
        import warnings

        warnings.warn(f"{torn}; it is dropped when this submission is merged",
                      results.TruncatedLineWarning, stacklevel=2)
    for number, _, row in parsed:
        try:
            results.validate_row(row, new=False)
        except ValueError as e:
            raise ValueError(f"{path}:{number}: {e}") from None
    return LeaderboardState(path, tuple(row for _, _, row in parsed), rules.read_owners(path))


def required_grid(reference_rows) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(label fractions in (0, 1], seeds) every submitted (task, method, preset, eval_mode) must
    cover: the grid the leaderboard's reference rows of that (task, preset, eval_mode) cover, so
    every line is comparable cell by cell."""
    cells = {(_fraction_key(r["label_fraction"]), int(r["seed"])) for r in reference_rows}
    return tuple(sorted({f for f, _ in cells})), tuple(sorted({s for _, s in cells}))


def _fraction_key(f: float) -> float:
    return round(float(f), 9)


def _key_text(key: tuple) -> str:
    task, method, preset, mode, fraction, seed = key
    return (f"(task={task}, method={method}, preset={preset}, eval_mode={mode}, "
            f"label_fraction={fraction:g}, seed={seed})")


def _submission_file(directory: Path, rel: str, where: str, missing: str) -> bytes:
    """The bytes of `rel` inside the submission directory `directory` (a resolved path); raises
    SubmissionError (`missing` code) when it does not exist, outside_submission when it leaves the
    directory (.., absolute, symlinks) or is not a regular file."""
    path = directory / rel
    if "\0" in rel:
        raise SubmissionError("outside_submission", f"{where}: file name {rel!r} holds a NUL byte")
    real = Path(os.path.realpath(path))
    if os.path.isabs(rel) or os.path.commonpath([real, directory]) != str(directory):
        raise SubmissionError("outside_submission", f"{where}: {rel} resolves to {real}, outside "
                              f"the submission directory {directory}; a submission may name only "
                              "files inside it")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise SubmissionError(missing, f"{where}: {path} not found") from None
    if not stat.S_ISREG(info.st_mode):
        raise SubmissionError("outside_submission", f"{where}: {path} is not a regular file")
    with results.naming_file(path):
        return real.read_bytes()


def _read_submitter(directory: Path) -> str:
    path = directory / SUBMISSION_FILE
    try:
        meta = json.loads(_submission_file(directory, SUBMISSION_FILE, str(path), "bad_submitter"))
    except SubmissionError as e:
        if e.code != "bad_submitter":
            raise
        raise SubmissionError("bad_submitter", f"{path}: not found; expected "
                              '{"submitter": "<name>"}') from None
    except ValueError as e:  # not UTF-8 or not JSON
        raise SubmissionError("bad_submitter", f"{path}: not JSON ({e})") from None
    if not isinstance(meta, dict) or set(meta) != {"submitter"}:
        raise SubmissionError("bad_submitter", f"{path}: expected exactly "
                              '{"submitter": "<name>"}, got ' + json.dumps(meta)[:200])
    name = meta["submitter"]
    if not (isinstance(name, str) and SUBMITTER_PATTERN.fullmatch(name)) or name == REFERENCE_OWNER:
        raise SubmissionError("bad_submitter", f"{path}: submitter {name!r} must match "
                              f"{SUBMITTER_PATTERN.pattern} and not be {REFERENCE_OWNER!r}")
    return name


def _read_rows(directory: Path) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line of the submitted results file."""
    path = directory / RESULTS_FILE
    try:
        data = _submission_file(directory, RESULTS_FILE, str(path), "no_results")
    except SubmissionError as e:
        if e.code != "no_results":
            raise
        raise SubmissionError("no_results", f"{path}: not found; a submission holds "
                              f"{RESULTS_FILE} with one result row per line") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SubmissionError("malformed_json", f"{path}: not UTF-8 text ({e.reason} at byte "
                              f"{e.start})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SubmissionError("malformed_json",
                                  f"{path}:{number}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise SubmissionError("malformed_json", f"{path}:{number}: expected a JSON object, got "
                                  f"{type(row).__name__}")
        rows.append((number, row))
    if not rows:
        raise SubmissionError("no_results", f"{path}: holds no result rows")
    return rows


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_row(where: str, row: dict) -> None:
    """Types of the cell fields, method name, preset, the schema, task and test sets of one row."""
    from benchmark.harness import tasks

    if "label_fraction" in row:
        f = row["label_fraction"]
        if not ((_is_int(f) or isinstance(f, float)) and math.isfinite(f) and 0 < f <= 1):
            raise SubmissionError("bad_cell_types", f"{where}: label_fraction {f!r} must be a "
                                  "number in (0, 1] (a fraction: 0.1 = 10% of the labels)")
    if "seed" in row and not (_is_int(row["seed"]) and row["seed"] >= 0):
        raise SubmissionError("bad_cell_types",
                              f"{where}: seed {row['seed']!r} must be an int >= 0")
    for name, result in sorted((row.get("metrics") or {}).items()):
        rel = result.get("predictions") if isinstance(result, dict) else None
        if isinstance(rel, str) and (os.path.isabs(rel) or ".." in Path(rel).parts):
            raise SubmissionError("outside_submission", f"{where}: metrics.{name}.predictions "
                                  f"{rel!r} leaves the submission directory; a submission may "
                                  "name only files inside it, by a relative path without '..'")
    if "method" in row and results.method_name_problem(row["method"]):
        raise SubmissionError("invalid_method_name",
                              f"{where}: {results.method_name_problem(row['method'])}")
    if "preset" in row and results.preset_problem(row["preset"]):
        raise SubmissionError("unknown_preset", f"{where}: {results.preset_problem(row['preset'])}")
    try:
        results.validate_row(row)
    except ValueError as e:
        raise SubmissionError("schema", f"{where}: {e}") from None
    try:
        task = tasks.task_of_row(row)
    except ValueError as e:
        raise SubmissionError("unknown_task", f"{where}: {e}") from None
    if set(row["metrics"]) != set(task.test_sets):
        raise SubmissionError("schema", f"{where}: metrics has test sets {sorted(row['metrics'])}; "
                              f"task {task.name!r} needs exactly {sorted(task.test_sets)}")
    for name, result in sorted(row["metrics"].items()):
        if result["primary"] != task.primary_metric:
            raise SubmissionError("schema", f"{where}: metrics.{name}.primary is "
                                  f"{result['primary']!r}; task {task.name!r} uses "
                                  f"{task.primary_metric!r}")


def _check_cells(path: Path, numbered: list[tuple[int, dict]], board: LeaderboardState,
                 submitter: str) -> None:
    """Duplicates, method ownership and the required grid."""
    seen: dict[tuple, int] = {}
    for number, row in numbered:
        key = results.cell_key(row)
        if key in seen:
            raise SubmissionError("duplicate_cell", f"{path}:{number}: cell {_key_text(key)} "
                                  f"already on line {seen[key]}")
        seen[key] = number
    for number, row in numbered:
        owner = board.owner(row["method"])
        if owner is not None and owner != submitter:
            raise SubmissionError("method_clash", f"{path}:{number}: method {row['method']!r} "
                                  f"already belongs to {owner!r} on the leaderboard; choose "
                                  "another name")
    _check_name_folding(path, numbered, board)
    on_board = {results.cell_key(r) for r in board.rows}
    for number, row in numbered:
        key = results.cell_key(row)
        if key in on_board:
            raise SubmissionError("duplicate_cell", f"{path}:{number}: cell {_key_text(key)} is "
                                  f"already on the leaderboard ({board.results_path})")
    groups: dict[tuple, set] = {}
    for _, row in numbered:
        group = (row["task"], row["method"], row["preset"], row["eval_mode"])
        groups.setdefault(group, set()).add((_fraction_key(row["label_fraction"]), row["seed"]))
    for group in sorted(groups):
        of_preset = _reference_rows(board, group[0], group[2])
        if not of_preset:
            continue  # refused as no_reference (the test sets are compared against them)
        references = [r for r in of_preset if r["eval_mode"] == group[3]]
        fractions, seeds = required_grid(references) if references else preset_grid(group[2])
        need = {(f, s) for f in fractions for s in seeds}
        have = groups[group]
        name = f"(task={group[0]}, method={group[1]}, preset={group[2]}, eval_mode={group[3]})"
        source = ("the leaderboard's reference rows" if references else
                  f"preset {group[2]}'s; the leaderboard has no reference rows of this eval mode")
        grid = (f"label_fraction in {{{', '.join(f'{f:g}' for f in fractions)}}} x seed in "
                f"{{{', '.join(str(s) for s in seeds)}}} ({source})")
        missing = sorted(need - have)
        if missing:
            cells = ", ".join(f"label_fraction={f:g} seed={s}" for f, s in missing)
            raise SubmissionError("incomplete_grid", f"{path}: {name} is missing cells {cells}; "
                                  f"the required grid is {grid}")
        extra = sorted(have - need)
        if extra:
            cells = ", ".join(f"label_fraction={f:g} seed={s}" for f, s in extra)
            raise SubmissionError("cell_outside_grid", f"{path}: {name} has cells {cells} outside "
                                  f"the required grid {grid}")


def _check_name_folding(path: Path, numbered: list[tuple[int, dict]],
                        board: LeaderboardState) -> None:
    """Refuses a submitted method name that folds (`rules.folded_name`) like another spelling on
    the leaderboard or in the submission, or like the control's (`random_init...`)."""
    spelled: dict[str, str] = {}
    for method in sorted({r["method"] for r in board.rows} | set(board.owners)):
        spelled.setdefault(rules.folded_name(method), method)
    where_of = {}
    for number, row in numbered:
        method, folded = row["method"], rules.folded_name(row["method"])
        if folded.startswith(rules.folded_name(CONTROL_METHOD)):
            raise SubmissionError("method_clash", f"{path}:{number}: method {method!r} reads as "
                                  f"the board's control {CONTROL_METHOD!r}; controls are the "
                                  "reference rows, choose another name")
        other = spelled.get(folded)
        if other is not None and other != method:
            on = "on the leaderboard" if folded not in where_of else f"on line {where_of[folded]}"
            raise SubmissionError("method_clash", f"{path}:{number}: method {method!r} names "
                                  f"the same method as {other!r} {on} (names are compared "
                                  "ignoring case and punctuation); choose another name")
        spelled.setdefault(folded, method)
        where_of.setdefault(folded, number)


def preset_grid(preset: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(label fractions in (0, 1], seeds) of `preset`'s grid."""
    from benchmark.harness import presets

    spec = presets.get_preset(preset)
    return (tuple(sorted(_fraction_key(p / 100.0) for p in spec.label_fractions)),
            tuple(sorted(spec.seeds)))


def _reference_rows(board: LeaderboardState, task: str, preset: str) -> list[dict]:
    return sorted((r for r in board.rows if r["task"] == task and r["preset"] == preset
                   and r["method"] not in board.owners), key=results.cell_key)


def _agreed(board: LeaderboardState, rows: list[dict], what: str, value_of) -> object:
    """The one value `value_of` gives for every row of `rows`; ValueError when they disagree."""
    values = {json.dumps(value_of(r), sort_keys=True) for r in rows}
    if len(values) > 1:
        raise ValueError(f"{board.results_path}: the reference rows disagree on {what}: "
                         f"{sorted(values)}")
    return value_of(rows[0])


def reference_test_sets(board: LeaderboardState, task: str, preset: str,
                        test_set: str) -> dict[str, ReferenceTestSet]:
    """Fingerprint -> the test set `test_set` of (task, preset) as the reference rows scored on it
    saw it; raises SubmissionError (no_reference) when there are none, ValueError when reference
    rows of one fingerprint disagree about it."""
    refs = [r for r in _reference_rows(board, task, preset) if test_set in r["metrics"]]
    if not refs:
        raise SubmissionError("no_reference", f"{board.results_path}: no reference rows for task "
                              f"{task!r}, preset {preset!r}, test set {test_set!r}; submissions "
                              "are compared against the reference baselines' test sets")
    found = {}
    for fingerprint in sorted({r["metrics"][test_set]["fingerprint"] for r in refs}):
        same = [r for r in refs if r["metrics"][test_set]["fingerprint"] == fingerprint]
        what = f"the {task}/{preset} {test_set} test set {fingerprint}"
        ref = ReferenceTestSet(
            fingerprint, bool(_agreed(board, same, f"synthetic of {what}", lambda r: r["synthetic"])),
            *_agreed(board, same, f"n_examples/n_groups of {what}",
                     lambda r: [r["metrics"][test_set]["n_examples"],
                                r["metrics"][test_set]["n_groups"]]))
        for row in same:
            path = board.results_path.parent / row["metrics"][test_set]["predictions"]
            if path.is_file():
                ids, groups, labels, _, _ = results.read_predictions(path)
                order = np.argsort(ids, kind="stable")
                ref = dataclasses.replace(ref, example_ids=ids[order], group_ids=groups[order],
                                          labels=labels[order])
                break
        found[fingerprint] = ref
    return found


def _fingerprint_owner(board: LeaderboardState, fingerprint: str) -> str:
    """Which reference test set has `fingerprint`, as a hint ('' when none)."""
    for row in board.rows:
        for name, result in sorted(row["metrics"].items()):
            if result["fingerprint"] == fingerprint and row["method"] not in board.owners:
                return f" (it is the fingerprint of the {row['task']}/{row['preset']} {name} test set)"
    return ""


def _check_reference(where: str, row: dict, board: LeaderboardState,
                     refs: dict[str, ReferenceTestSet]) -> None:
    """Whatever the reference rows say about this row's test sets and training subset agrees with
    it; raises SubmissionError (wrong_fingerprint, reference_mismatch)."""
    for test_set, result in sorted(row["metrics"].items()):
        fingerprint = result["fingerprint"]
        if fingerprint not in refs[test_set]:
            raise SubmissionError("wrong_fingerprint", f"{where}: metrics.{test_set}.fingerprint "
                                  f"{fingerprint} is not that of a {row['task']}/{row['preset']} "
                                  f"{test_set} test set of the reference rows "
                                  f"({', '.join(sorted(refs[test_set]))})"
                                  f"{_fingerprint_owner(board, fingerprint)}")
        ref = refs[test_set][fingerprint]
        if bool(row["synthetic"]) != ref.synthetic:
            raise SubmissionError("reference_mismatch", f"{where}: synthetic is "
                                  f"{json.dumps(bool(row['synthetic']))} but the reference rows "
                                  f"scored on this {test_set} test set ({fingerprint[:12]}...) ran on "
                                  f"{'SYNTHETIC' if ref.synthetic else 'real'} data")
        for key, expected in (("n_examples", ref.n_examples), ("n_groups", ref.n_groups)):
            if result[key] != expected:
                raise SubmissionError("reference_mismatch", f"{where}: metrics.{test_set}.{key} = "
                                      f"{result[key]!r} but this test set has {expected!r}")
    same_cell = [r for r in _reference_rows(board, row["task"], row["preset"])
                 if _fraction_key(r["label_fraction"]) == _fraction_key(row["label_fraction"])
                 and r["seed"] == row["seed"] and set(r["metrics"]) == set(row["metrics"])
                 and all(r["metrics"][t]["fingerprint"] == row["metrics"][t]["fingerprint"]
                         for t in row["metrics"])]
    if not same_cell:
        return
    for key in ("data_fingerprint", "n_train_examples", "n_train_groups"):
        expected = _agreed(board, same_cell, f"{key} of label_fraction "
                           f"{row['label_fraction']:g} seed {row['seed']}", lambda r: r.get(key))
        if expected is not None and row.get(key) != expected:
            raise SubmissionError("reference_mismatch", f"{where}: {key} = {row.get(key)!r} but the "
                                  "reference rows of the same test sets, label_fraction "
                                  f"{row['label_fraction']:g} and seed {row['seed']} trained on "
                                  f"{expected!r} (the harness picks the labelled subset, whatever "
                                  "the method)")


def _first_differences(a: Sequence[str], b: Sequence[str], limit: int = 3) -> str:
    return ", ".join(repr(x) for x in sorted(set(a) - set(b))[:limit]) or "none"


def _read_prediction_file(directory: Path, rel: str, where: str, task) -> tuple:
    """(ids, groups, labels, scores, the file's bytes) of a submitted prediction file."""
    path = directory / rel
    try:
        data = _submission_file(directory, rel, where, "missing_predictions")
    except SubmissionError as e:
        if e.code != "missing_predictions":
            raise
        raise SubmissionError("missing_predictions",
                              f"{where}: prediction file {path} not found") from None
    try:
        ids, groups, labels, scores, names = results.read_predictions(path, data)
    except UnicodeDecodeError as e:
        raise SubmissionError("malformed_predictions", f"{path}: not UTF-8 text ({e.reason} at "
                              f"byte {e.start})") from None
    except csv.Error as e:
        raise SubmissionError("malformed_predictions", f"{path}: not a CSV file ({e})") from None
    except ValueError as e:
        raise SubmissionError("malformed_predictions", str(e)) from None
    if tuple(names) != tuple(task.class_names):
        raise SubmissionError("malformed_predictions", f"{path}:1: classes {list(names)}; task "
                              f"{task.name!r} needs {list(task.class_names)} in that order")
    if len(ids) == 0:
        raise SubmissionError("malformed_predictions", f"{path}:2: no prediction rows")
    if task.kind == "multiclass":
        one_hot = np.all(~np.isnan(labels), axis=1) & (np.nansum(labels, axis=1) == 1)
        if not one_hot.all():
            line = int(np.flatnonzero(~one_hot)[0]) + 2
            raise SubmissionError("malformed_predictions", f"{path}:{line}: multi-class labels "
                                  "must be one-hot 0/1 with exactly one 1")
    if np.any(groups == ""):
        line = int(np.flatnonzero(groups == "")[0]) + 2
        raise SubmissionError("malformed_predictions", f"{path}:{line}: empty group_id")
    return ids, groups, labels, scores, data


def _check_test_set_match(path: Path, ref: ReferenceTestSet, ids, groups, labels) -> None:
    got = results.examples_fingerprint(ids, labels)
    if ref.example_ids is None:
        if got != ref.fingerprint:
            raise SubmissionError("ids_mismatch", f"{path}: example ids or labels are not the "
                                  f"test set's (fingerprint {got} != {ref.fingerprint}; no "
                                  "reference prediction file to say which)")
        return
    if set(ids) != set(ref.example_ids):
        raise SubmissionError("ids_mismatch", f"{path}: example ids differ from the test set's "
                              f"({len(ids)} vs {len(ref.example_ids)}; not in the test set: "
                              f"{_first_differences(ids, ref.example_ids)}; missing: "
                              f"{_first_differences(ref.example_ids, ids)})")
    order = np.argsort(ids, kind="stable")
    if got != ref.fingerprint:
        mine = labels[order]
        same = (mine == ref.labels) | (np.isnan(mine) & np.isnan(ref.labels))
        bad = int(np.flatnonzero(~same.all(axis=1))[0])
        line = int(order[bad]) + 2
        raise SubmissionError("label_mismatch", f"{path}:{line}: labels differ from the test "
                              f"set's, first at example {ids[order][bad]!r}: "
                              f"{_label_text(mine[bad])} here, {_label_text(ref.labels[bad])} in "
                              "the test set")
    if not np.array_equal(groups[order], ref.group_ids):
        bad = int(np.flatnonzero(groups[order] != ref.group_ids)[0])
        raise SubmissionError("group_mismatch", f"{path}: group_id of example "
                              f"{ids[order][bad]!r} is {groups[order][bad]!r}; the test set has "
                              f"{ref.group_ids[bad]!r}")


def _label_text(labels: np.ndarray) -> str:
    return "[" + ", ".join("blank" if math.isnan(v) else f"{v:g}" for v in labels) + "]"


def _compare(where: str, pred_path: Path, submitted: dict, rescored: dict) -> None:
    problem = rules.disagreement(submitted, rescored, str(pred_path), every_metric=True)
    if problem:
        raise SubmissionError("metric_mismatch", f"{where}: {problem}")


def _may_coincide(a: dict, b: dict) -> bool:
    """Whether two cells may have byte-identical predictions: seeds of one linear probe on 100% of
    the labels (every patient labelled, a deterministic probe on the same features)."""
    same = all(a[k] == b[k] for k in ("task", "method", "preset", "eval_mode"))
    return same and a["eval_mode"] == "linear" and float(a["label_fraction"]) == float(
        b["label_fraction"]) == 1.0


def _check_own_predictions(where: str, row: dict, test_set: str, data: bytes,
                           seen: dict[tuple, tuple[str, dict]]) -> None:
    """Refuses a prediction file whose bytes another cell of the submission already presented
    (`seen`: (test set, sha256) -> (where, row) of the first cell, updated here)."""
    key = (test_set, hashlib.sha256(data).hexdigest())
    if key in seen and not _may_coincide(seen[key][1], row):
        first, other = seen[key]
        raise SubmissionError("duplicate_predictions", f"{where}: metrics.{test_set}: "
                              f"{row['metrics'][test_set]['predictions']} has the same bytes as "
                              f"{other['metrics'][test_set]['predictions']} of {first}, cell "
                              f"{_key_text(results.cell_key(other))}; every cell is scored from "
                              "its own predictions (only the seeds of a linear probe on 100% of "
                              "the labels may coincide)")
    seen.setdefault(key, (where, row))


def _rescore(where: str, directory: Path, row: dict, test_set: str, ref: ReferenceTestSet,
             task, seen: dict[tuple, tuple[str, dict]]) -> tuple[dict, bytes]:
    """The row's test-set result with re-scored values, CIs and counts, and the bytes of its
    prediction file that were scored (checked against the files of other cells in `seen`)."""
    result = row["metrics"][test_set]
    path = directory / result["predictions"]
    ids, groups, labels, scores, data = _read_prediction_file(
        directory, result["predictions"], f"{where}: metrics.{test_set}", task)
    _check_own_predictions(where, row, test_set, data, seen)
    _check_test_set_match(path, ref, ids, groups, labels)
    rescored = {"primary": result["primary"],
                **rules.rescore(task, test_set, row, (ids, groups, labels, scores,
                                                      task.class_names)),
                "fingerprint": ref.fingerprint, "predictions": result["predictions"]}
    _compare(f"{where}: metrics.{test_set}", path, result, rescored)
    return rescored, data


def validate_submission(submission_dir: str | os.PathLike, board: LeaderboardState) -> Accepted:
    """Checks a submission against `board` and re-scores it; raises SubmissionError on the first
    problem. Reads only."""
    from benchmark.harness import tasks

    if not Path(submission_dir).is_dir():
        raise SubmissionError("missing_dir", f"{submission_dir}: no such directory")
    directory = Path(os.path.realpath(submission_dir))
    results_path = Path(submission_dir) / RESULTS_FILE
    numbered = _read_rows(directory)
    submitter = _read_submitter(directory)
    for number, row in numbered:
        _check_row(f"{results_path}:{number}", row)
    _check_cells(results_path, numbered, board, submitter)
    refs: dict[tuple, ReferenceTestSet] = {}
    for number, row in numbered:
        for test_set, result in sorted(row["metrics"].items()):
            key = (row["task"], row["preset"], test_set)
            if key not in refs:
                refs[key] = reference_test_sets(board, *key)
        _check_reference(f"{results_path}:{number}", row, board,
                         {t: refs[(row["task"], row["preset"], t)] for t in row["metrics"]})
    accepted, sources, seen = [], [], {}
    for number, row in numbered:
        task = tasks.task_of_row(row)
        new = copy.deepcopy(row)
        files = {}
        for test_set in sorted(row["metrics"]):
            ref = refs[(row["task"], row["preset"], test_set)][
                row["metrics"][test_set]["fingerprint"]]
            new["metrics"][test_set], files[test_set] = _rescore(
                f"{results_path}:{number}", directory, row, test_set, ref, task, seen)
        accepted.append(new)
        sources.append(files)
    return Accepted(submitter, tuple(accepted), tuple(sources))


def _stored_name(row: dict, test_set: str) -> str:
    return (f"submissions/{row['method']}/{row['task']}_{row['preset']}_{row['eval_mode']}"
            f"_f{round(float(row['label_fraction']) * 100, 6):g}_s{row['seed']}_{test_set}.csv")


def _existing_lines(path: Path) -> list[str]:
    """The complete rows of a results file as their original text (a truncated last line, which
    `ResultsStore` also skips, is dropped)."""
    return [line for _, line, _ in results.ResultsStore(path).scan()[0]]


def _write_staged(path: Path, data: bytes) -> None:
    with results.atomic_writer(path, binary=True) as f:
        f.write(data)


def _stage(current: LeaderboardState, stored: list[dict], accepted: Accepted,
           leaderboard_dir: Path, staging_dir) -> list[tuple[Path, Path]]:
    """Writes every file the merge changes into staging directories (`staging_dir(d)` gives the one
    for target directory d); returns (staged file, final path) in commit order: prediction files,
    tables and plots, method owners, the results file last."""
    path = current.results_path
    results_stage = staging_dir(path.parent)
    moves = []
    for row, files in zip(stored, accepted.sources):
        for test_set, data in sorted(files.items()):
            rel = row["metrics"][test_set]["predictions"]
            _write_staged(results_stage / rel, data)
            moves.append((results_stage / rel, path.parent / rel))
    owners = dict(current.owners)
    owners.update({row["method"]: accepted.submitter for row in stored})
    owners_file = results_stage / current.owners_path.name
    _write_staged(owners_file, (json.dumps(owners, indent=1, sort_keys=True) + "\n").encode())
    lines = _existing_lines(path) + [
        json.dumps(row, sort_keys=True, allow_nan=False, ensure_ascii=False) for row in stored]
    staged_results = results_stage / path.name
    _write_staged(staged_results, "".join(l + "\n" for l in lines).encode("utf-8"))
    published = leaderboard_dir / "published.csv"
    tables = leaderboard.regenerate([staged_results], staging_dir(leaderboard_dir) / "tables",
                                    published if published.is_file() else None,
                                    prediction_dirs=[path.parent])
    moves += [(t, leaderboard_dir / t.name) for t in tables]
    moves.append((owners_file, current.owners_path))
    moves.append((staged_results, path))
    return moves


def merge(accepted: Accepted, board: LeaderboardState,
          leaderboard_dir: str | os.PathLike) -> list[dict]:
    """Under the board's lock (`journal.board_lock`): stores the scored prediction files, records method
    ownership, appends the rows to the results file and regenerates the tables and plots in
    `leaderboard_dir`, all or nothing (see the module docstring); returns the stored rows."""
    path = board.results_path
    leaderboard_dir = Path(leaderboard_dir)
    stored = []
    for row, files in zip(accepted.rows, accepted.sources):
        new = copy.deepcopy(row)
        for test_set in sorted(files):
            new["metrics"][test_set]["predictions"] = _stored_name(row, test_set)
        stored.append(new)
    with journal.board_lock(path, [leaderboard_dir]):
        current = load_leaderboard(path)  # re-read under the lock: a writer may have raced us
        on_board = {results.cell_key(r) for r in current.rows}
        for row in stored:
            owner = current.owner(row["method"])
            if results.cell_key(row) in on_board or owner not in (None, accepted.submitter):
                raise SubmissionError("duplicate_cell" if owner in (None, accepted.submitter)
                                      else "method_clash",
                                      f"{_key_text(results.cell_key(row))}: the leaderboard "
                                      "changed while this submission was validated; resubmit")
        named = {os.path.normpath(path.parent / r["metrics"][t]["predictions"])
                 for r in current.rows for t in r["metrics"]}
        for row in stored:
            for result in row["metrics"].values():
                target = path.parent / result["predictions"]
                if os.path.normpath(target) in named:
                    raise ValueError(f"{target}: already named by a leaderboard row; refusing to "
                                     "overwrite it")
        staging: dict[Path, Path] = {}

        def staging_dir(directory: Path) -> Path:
            if directory not in staging:
                with results.naming_file(directory):
                    staging[directory] = Path(tempfile.mkdtemp(prefix=journal.STAGING_PREFIX,
                                                               dir=directory))
            return staging[directory]

        unchanged = "; the submission was not merged and the leaderboard is unchanged"
        log = journal.journal_path(path)
        try:
            moves = _stage(current, stored, accepted, leaderboard_dir, staging_dir)
            for _, final in moves:
                results.refuse_link(final)
            journal.commit(log, moves, list(staging.values()))
        except SubmissionError:
            raise
        except OSError as e:
            raise OSError(e.errno, (e.strerror or str(e)) + unchanged, e.filename, None,
                          e.filename2) from e
        except ValueError as e:
            raise ValueError(f"{e}{unchanged}") from e
        finally:
            if not os.path.lexists(log):
                for d in staging.values():
                    shutil.rmtree(d, ignore_errors=True)
    return stored


def submit(submission_dir: str | os.PathLike, leaderboard_dir: str | os.PathLike,
           results_path: str | os.PathLike | None = None) -> list[dict]:
    """Validates, merges and regenerates the leaderboard, all or nothing; returns the stored
    rows."""
    board_dir = Path(leaderboard_dir)
    if not board_dir.is_dir():
        raise ValueError(f"--leaderboard_dir={leaderboard_dir}: "
                         f"{'not a directory' if board_dir.exists() else 'no such directory'}")
    path = Path(results_path) if results_path else board_dir / RESULTS_FILE
    if not path.is_file():
        flag = f"--results={results_path}" if results_path else f"--leaderboard_dir={board_dir}"
        raise ValueError(f"{flag}: {path} {'is not a file' if path.exists() else 'not found'}; "
                         "the leaderboard's results file holds the reference rows submissions "
                         "are compared with")
    board = load_leaderboard(path)
    accepted = validate_submission(submission_dir, board)
    return merge(accepted, board, board_dir)
