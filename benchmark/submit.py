"""Validates a leaderboard submission, re-scores its predictions and merges it.

    python -m benchmark.submit --submission=DIR --leaderboard_dir=leaderboards/ \
        [--results=leaderboards/results.jsonl]

A submission directory holds
  submission.json   {"submitter": "<name>"}  (who owns the method names it introduces)
  results.jsonl     one result row per cell, as the harness writes them (`benchmark.results`)
  <files>.csv       the per-example prediction files the rows name in
                    `metrics.<test set>.predictions` (paths relative to the submission directory)

Accepted only if every check passes; otherwise one `SubmissionError` names the kind of problem
(`code`, see REJECTIONS), the file/row/key, and nothing is written. The checks:
- every row passes `results.validate_row`, with a known task and preset, both of the task's test
  sets, the task's primary metric, a float label fraction in (0, 1] and an int seed >= 0;
- method names match METHOD_NAME_PATTERN and are not owned by another submitter (methods already
  on the leaderboard that no submitter owns belong to the reference baselines);
- no cell twice, in the submission or against the leaderboard;
- REQUIRED GRID: every (task, method, preset, eval_mode) submitted covers exactly the preset's label
  fractions x seeds (`benchmark.presets`: the grid the reference baselines of that preset run), e.g.
  preset "paper": 1%, 10%, 100% x seeds 0-4; preset "cpu": 10%, 100% x seeds 0, 1;
- each test set's fingerprint equals the one of the reference rows of that task and preset in the
  leaderboard results file, and the prediction file holds exactly that test set (ids, labels and,
  when a reference prediction file is present, group ids);
- every prediction file is re-scored with `benchmark.scoring` (the preset's bootstrap samples, the
  cell's seed); the submitted values, CIs and counts must agree within TOLERANCE.
Accepted rows are stored with the re-scored numbers, their prediction files copied under
`<results dir>/submissions/<method>/`, method ownership recorded in
`<results stem>_submitters.json`, the results file replaced atomically, and the leaderboard
regenerated.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import fcntl
import json
import math
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmark import leaderboard, results, scoring

TOLERANCE = 1e-6
METHOD_NAME_PATTERN = results.METHOD_NAME_PATTERN
SUBMITTER_PATTERN = METHOD_NAME_PATTERN
REFERENCE_OWNER = "reference"
SUBMISSION_FILE = "submission.json"
RESULTS_FILE = "results.jsonl"

REJECTIONS = {
    "missing_dir": "the submission directory does not exist",
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
    "missing_predictions": "a prediction file named by a row does not exist",
    "malformed_predictions": "a prediction file is not the contract CSV for the task",
    "ids_mismatch": "a prediction file's example ids are not the test set's",
    "label_mismatch": "a prediction file's labels are not the test set's",
    "group_mismatch": "a prediction file's group ids are not the test set's",
    "metric_mismatch": "a submitted number disagrees with the re-scored one",
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
    """One test set as the reference rows saw it: its fingerprint and, when a reference prediction
    file is on disk, its example ids (sorted) and their group ids."""

    fingerprint: str
    example_ids: np.ndarray | None = None
    group_ids: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class LeaderboardState:
    """The leaderboard's results file, its rows and who owns each submitted method."""

    results_path: Path
    rows: tuple[dict, ...]
    owners: dict[str, str]

    @property
    def owners_path(self) -> Path:
        return owners_path(self.results_path)

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
    sources: tuple[dict[str, Path], ...]  # per row: test set -> submitted prediction file


def owners_path(results_path: Path) -> Path:
    """Where method ownership is recorded for the results file `results_path`."""
    return results_path.with_name(f"{results_path.stem}_submitters.json")


def load_leaderboard(results_path: str | os.PathLike) -> LeaderboardState:
    """The current rows (none if the file does not exist) and method owners of a leaderboard."""
    path = Path(results_path)
    rows = tuple(results.ResultsStore(path).rows())
    owners_file = owners_path(path)
    owners = json.loads(owners_file.read_text(encoding="utf-8")) if owners_file.is_file() else {}
    if not (isinstance(owners, dict) and all(isinstance(v, str) for v in owners.values())):
        raise ValueError(f"{owners_file}: expected a JSON object of method -> submitter")
    return LeaderboardState(path, rows, owners)


def required_grid(preset_name: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(label fractions in (0, 1], seeds) every submitted (task, method, preset, eval_mode) must
    cover: the preset's grid, which the reference baselines of that preset run."""
    from benchmark import presets

    preset = presets.get_preset(preset_name)
    return (tuple(sorted(_fraction_key(f / 100.0) for f in preset.label_fractions)),
            tuple(sorted(int(s) for s in preset.seeds)))


def _fraction_key(f: float) -> float:
    return round(float(f), 9)


def _key_text(key: tuple) -> str:
    task, method, preset, mode, fraction, seed = key
    return (f"(task={task}, method={method}, preset={preset}, eval_mode={mode}, "
            f"label_fraction={fraction:g}, seed={seed})")


def _read_submitter(directory: Path) -> str:
    path = directory / SUBMISSION_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
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


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line of the submitted results file."""
    if not path.is_file():
        raise SubmissionError("no_results", f"{path}: not found; a submission holds "
                              f"{RESULTS_FILE} with one result row per line")
    try:
        text = path.read_text(encoding="utf-8")
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
    """Types of the cell fields, the schema, task, preset, test sets and method name of one row."""
    from benchmark import presets, tasks

    if "label_fraction" in row:
        f = row["label_fraction"]
        if not ((_is_int(f) or isinstance(f, float)) and math.isfinite(f) and 0 < f <= 1):
            raise SubmissionError("bad_cell_types", f"{where}: label_fraction {f!r} must be a "
                                  "number in (0, 1] (a fraction: 0.1 = 10% of the labels)")
    if "seed" in row and not (_is_int(row["seed"]) and row["seed"] >= 0):
        raise SubmissionError("bad_cell_types",
                              f"{where}: seed {row['seed']!r} must be an int >= 0")
    try:
        results.validate_row(row)
    except ValueError as e:
        raise SubmissionError("schema", f"{where}: {e}") from None
    try:
        task = tasks.get_task(row["task"])
    except ValueError:
        raise SubmissionError("unknown_task", f"{where}: task {row['task']!r} is not registered; "
                              f"expected one of {sorted(tasks.TASKS)}") from None
    if row["preset"] not in presets.PRESETS:
        raise SubmissionError("unknown_preset", f"{where}: preset {row['preset']!r} is not "
                              f"registered; expected one of {sorted(presets.PRESETS)}")
    if set(row["metrics"]) != set(task.test_sets):
        raise SubmissionError("schema", f"{where}: metrics has test sets {sorted(row['metrics'])}; "
                              f"task {task.name!r} needs exactly {sorted(task.test_sets)}")
    for name, result in sorted(row["metrics"].items()):
        if result["primary"] != task.primary_metric:
            raise SubmissionError("schema", f"{where}: metrics.{name}.primary is "
                                  f"{result['primary']!r}; task {task.name!r} uses "
                                  f"{task.primary_metric!r}")
    method = row["method"]
    if not METHOD_NAME_PATTERN.fullmatch(method):
        raise SubmissionError("invalid_method_name", f"{where}: method {method!r} must be 1-63 "
                              "characters from A-Z a-z 0-9 . _ + - starting with a letter or digit")


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
        fractions, seeds = required_grid(group[2])
        need = {(f, s) for f in fractions for s in seeds}
        have = groups[group]
        name = f"(task={group[0]}, method={group[1]}, preset={group[2]}, eval_mode={group[3]})"
        grid = (f"label_fraction in {{{', '.join(f'{f:g}' for f in fractions)}}} x seed in "
                f"{{{', '.join(str(s) for s in seeds)}}} (preset {group[2]!r})")
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


def reference_test_set(board: LeaderboardState, task: str, preset: str,
                       test_set: str) -> ReferenceTestSet:
    """The test set the reference rows of (task, preset) were scored on; raises SubmissionError
    (no_reference) when there are none, ValueError when they disagree."""
    refs = sorted((r for r in board.rows if r["task"] == task and r["preset"] == preset
                   and r["method"] not in board.owners and test_set in r["metrics"]),
                  key=results.cell_key)
    prints = {r["metrics"][test_set]["fingerprint"] for r in refs}
    if not prints:
        raise SubmissionError("no_reference", f"{board.results_path}: no reference rows for task "
                              f"{task!r}, preset {preset!r}, test set {test_set!r}; submissions "
                              "are compared against the reference baselines' test sets")
    if len(prints) > 1:
        raise ValueError(f"{board.results_path}: reference rows of task {task!r}, preset "
                         f"{preset!r} disagree on the {test_set!r} fingerprint: {sorted(prints)}")
    fingerprint = prints.pop()
    for row in refs:
        path = board.results_path.parent / row["metrics"][test_set]["predictions"]
        if path.is_file():
            ids, groups, _, _, _ = results.read_predictions(path)
            order = np.argsort(ids, kind="stable")
            return ReferenceTestSet(fingerprint, ids[order], groups[order])
    return ReferenceTestSet(fingerprint)


def _first_differences(a: Sequence[str], b: Sequence[str], limit: int = 3) -> str:
    return ", ".join(repr(x) for x in sorted(set(a) - set(b))[:limit]) or "none"


def _read_prediction_file(path: Path, where: str, task) -> tuple:
    if not path.is_file():
        raise SubmissionError("missing_predictions", f"{where}: prediction file {path} not found")
    try:
        ids, groups, labels, scores, names = results.read_predictions(path)
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
    return ids, groups, labels, scores


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
    if got != ref.fingerprint:
        raise SubmissionError("label_mismatch", f"{path}: labels differ from the test set's "
                              f"(fingerprint {got} != {ref.fingerprint})")
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(groups[order], ref.group_ids):
        bad = int(np.flatnonzero(groups[order] != ref.group_ids)[0])
        raise SubmissionError("group_mismatch", f"{path}: group_id of example "
                              f"{ids[order][bad]!r} is {groups[order][bad]!r}; the test set has "
                              f"{ref.group_ids[bad]!r}")


def _close(a, b) -> bool:
    a_nan = a is None or (isinstance(a, float) and math.isnan(a))
    b_nan = b is None or (isinstance(b, float) and math.isnan(b))
    if a_nan or b_nan:
        return a_nan and b_nan
    return abs(float(a) - float(b)) <= TOLERANCE


def _compare(where: str, pred_path: Path, submitted: dict, rescored: dict) -> None:
    for field in ("values", "ci95"):
        if set(submitted[field]) != set(rescored[field]):
            raise SubmissionError("metric_mismatch", f"{where}: {field} has metrics "
                                  f"{sorted(submitted[field])}; re-scoring {pred_path} gives "
                                  f"{sorted(rescored[field])}")
    for name in sorted(rescored["values"]):
        if not _close(submitted["values"][name], rescored["values"][name]):
            raise SubmissionError("metric_mismatch", f"{where}: values.{name} = "
                                  f"{submitted['values'][name]!r} but re-scoring {pred_path} gives "
                                  f"{rescored['values'][name]!r} (tolerance {TOLERANCE:g})")
    for name in sorted(rescored["ci95"]):
        for bound, s, r in zip(("lo", "hi"), submitted["ci95"][name], rescored["ci95"][name]):
            if not _close(s, r):
                raise SubmissionError("metric_mismatch", f"{where}: ci95.{name} {bound} = {s!r} "
                                      f"but re-scoring {pred_path} gives {r!r} (tolerance "
                                      f"{TOLERANCE:g})")
    for field in ("n_examples", "n_groups"):
        if submitted[field] != rescored[field]:
            raise SubmissionError("metric_mismatch", f"{where}: {field} = {submitted[field]!r} but "
                                  f"{pred_path} has {rescored[field]!r}")


def _nan_to_none(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _rescore(where: str, directory: Path, row: dict, test_set: str, ref: ReferenceTestSet,
             task, bootstrap_samples: int) -> tuple[dict, Path]:
    """The row's test-set result with re-scored values, CIs and counts, and its prediction file."""
    result = row["metrics"][test_set]
    path = directory / result["predictions"]
    ids, groups, labels, scores = _read_prediction_file(path, f"{where}: metrics.{test_set}", task)
    _check_test_set_match(path, ref, ids, groups, labels)
    scored = scoring.score(task.kind, task.class_names, labels, scores, groups,
                           bootstrap_samples=bootstrap_samples, seed=int(row["seed"]))
    rescored = {
        "primary": result["primary"],
        "values": {k: _nan_to_none(v) for k, v in scored["values"].items()},
        "ci95": {k: [_nan_to_none(lo), _nan_to_none(hi)] for k, (lo, hi) in scored["ci95"].items()},
        "n_examples": int(len(ids)),
        "n_groups": int(len(set(groups))),
        "fingerprint": ref.fingerprint,
        "predictions": result["predictions"],
    }
    _compare(f"{where}: metrics.{test_set}", path, result, rescored)
    return rescored, path


def validate_submission(submission_dir: str | os.PathLike, board: LeaderboardState) -> Accepted:
    """Checks a submission against `board` and re-scores it; raises SubmissionError on the first
    problem. Reads only."""
    from benchmark import presets, tasks

    directory = Path(submission_dir)
    if not directory.is_dir():
        raise SubmissionError("missing_dir", f"{directory}: no such directory")
    results_path = directory / RESULTS_FILE
    numbered = _read_rows(results_path)
    submitter = _read_submitter(directory)
    for number, row in numbered:
        _check_row(f"{results_path}:{number}", row)
    _check_cells(results_path, numbered, board, submitter)
    refs: dict[tuple, ReferenceTestSet] = {}
    for number, row in numbered:
        for test_set, result in sorted(row["metrics"].items()):
            key = (row["task"], row["preset"], test_set)
            if key not in refs:
                refs[key] = reference_test_set(board, *key)
            if result["fingerprint"] != refs[key].fingerprint:
                raise SubmissionError("wrong_fingerprint", f"{results_path}:{number}: "
                                      f"metrics.{test_set}.fingerprint {result['fingerprint']} != "
                                      f"{refs[key].fingerprint} of the {row['task']}/"
                                      f"{row['preset']} {test_set} test set")
    accepted, sources = [], []
    for number, row in numbered:
        task = tasks.get_task(row["task"])
        samples = presets.get_preset(row["preset"]).bootstrap_samples
        new = copy.deepcopy(row)
        files = {}
        for test_set in sorted(row["metrics"]):
            new["metrics"][test_set], files[test_set] = _rescore(
                f"{results_path}:{number}", directory, row, test_set,
                refs[(row["task"], row["preset"], test_set)], task, samples)
        accepted.append(new)
        sources.append(files)
    return Accepted(submitter, tuple(accepted), tuple(sources))


def _stored_name(row: dict, test_set: str) -> str:
    return (f"submissions/{row['method']}/{row['task']}_{row['preset']}_{row['eval_mode']}"
            f"_f{round(float(row['label_fraction']) * 100, 6):g}_s{row['seed']}_{test_set}.csv")


def _replace_text(path: Path, text: str) -> None:
    """Writes `text` to `path` atomically (temporary file in the same directory, fsync, os.replace)."""
    with results.atomic_writer(path) as f:
        f.write(text)


def _existing_lines(path: Path) -> list[str]:
    """The complete rows of a results file as their original text (a truncated last line, which
    `ResultsStore` also skips, is dropped)."""
    try:
        lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    except FileNotFoundError:
        return []
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines = lines[:-1]
    return lines


def merge(accepted: Accepted, board: LeaderboardState) -> list[dict]:
    """Copies the prediction files, records method ownership and appends the rows to the results
    file (replaced atomically, under the results file's lock); returns the stored rows. On any
    failure the leaderboard is left as it was."""
    path = board.results_path
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = []
    copies: list[tuple[Path, Path]] = []
    for row, files in zip(accepted.rows, accepted.sources):
        new = copy.deepcopy(row)
        for test_set, source in sorted(files.items()):
            rel = _stored_name(row, test_set)
            new["metrics"][test_set]["predictions"] = rel
            copies.append((source, path.parent / rel))
        stored.append(new)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = load_leaderboard(path)  # re-read under the lock: a writer may have raced us
        on_board = {results.cell_key(r) for r in current.rows}
        for row in stored:
            owner = current.owner(row["method"])
            if results.cell_key(row) in on_board or owner not in (None, accepted.submitter):
                raise SubmissionError("duplicate_cell" if owner in (None, accepted.submitter)
                                      else "method_clash",
                                      f"{_key_text(results.cell_key(row))}: the leaderboard "
                                      "changed while this submission was validated; resubmit")
        for _, target in copies:
            if target.exists():
                raise FileExistsError(f"{target}: already exists; refusing to overwrite")
        owners = dict(current.owners)
        owners.update({row["method"]: accepted.submitter for row in stored})
        owners_file = current.owners_path
        old_owners = owners_file.read_bytes() if owners_file.is_file() else None
        lines = _existing_lines(path)
        lines += [json.dumps(row, sort_keys=True, allow_nan=False, ensure_ascii=False)
                  for row in stored]
        written: list[Path] = []
        try:
            for source, target in copies:
                target.parent.mkdir(parents=True, exist_ok=True)
                written.append(target)
                shutil.copyfile(source, target)
            _replace_text(owners_file, json.dumps(owners, indent=1, sort_keys=True) + "\n")
            _replace_text(path, "".join(l + "\n" for l in lines))
        except BaseException:
            for target in written:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
            if old_owners is None:
                with contextlib.suppress(FileNotFoundError):
                    owners_file.unlink()
            else:
                owners_file.write_bytes(old_owners)
            raise
    return stored


def submit(submission_dir: str | os.PathLike, leaderboard_dir: str | os.PathLike,
           results_path: str | os.PathLike | None = None) -> list[dict]:
    """Validates, merges and regenerates the leaderboard; returns the stored rows."""
    path = Path(results_path) if results_path else Path(leaderboard_dir) / RESULTS_FILE
    board = load_leaderboard(path)
    accepted = validate_submission(submission_dir, board)
    stored = merge(accepted, board)
    leaderboard.regenerate([path], leaderboard_dir)
    return stored


def main(argv):
    """Entry point: flags are defined here only."""
    del argv
    from absl import flags

    f = flags.FLAGS
    try:
        stored = submit(f.submission, f.leaderboard_dir, f.results)
    except SubmissionError as e:
        raise SystemExit(str(e)) from None
    methods = sorted({r["method"] for r in stored})
    print(f"accepted {len(stored)} rows for {', '.join(methods)}; leaderboard regenerated in "
          f"{f.leaderboard_dir}")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("submission", None, "Submission directory.", required=True)
    flags.DEFINE_string("leaderboard_dir", "leaderboards", "Leaderboard directory (tables, "
                        "published.csv).")
    flags.DEFINE_string("results", None, "Leaderboard results file (default "
                        "<leaderboard_dir>/results.jsonl).")
    app.run(main)
