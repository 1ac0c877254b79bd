"""The board's rules for what it shows: every number of a result row is re-scored from the row's
prediction files with the bootstrap size of the row's preset (`presets`) and the cell's seed,
never taken from the row's stored metrics or its own settings; a stored row whose metrics
disagree with its files is never shown. Roles come from the board: rows of methods a submitter
owns (`<results stem>_submitters.json`) are submitted rows, every other row is a reference row,
and only reference rows are controls. Method names are compared after case-folding and dropping
punctuation (`folded_name`)."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Callable

from benchmark.harness import results, scoring

TOLERANCE = 1e-6  # stored metrics must equal the re-scored ones within this


class LeftOutRowWarning(results.RowWarning):
    """A stored row whose metrics disagree with its prediction files: reported and left out."""


class StoredMetricsMismatch(ValueError):
    """A stored row's metrics disagree with the re-scoring of its prediction files."""


def bootstrap_samples(preset: str) -> int:
    """The bootstrap size the board scores rows of `preset` with: the preset's."""
    from benchmark.harness.presets import get_preset  # imports TensorFlow: only when needed

    return get_preset(preset).bootstrap_samples


def _undefined(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _close(a, b) -> bool:
    if _undefined(a) or _undefined(b):
        return _undefined(a) and _undefined(b)
    return abs(float(a) - float(b)) <= TOLERANCE


def disagreement(stored: dict, rescored: dict, source: str, *, every_metric: bool) -> str | None:
    """The first difference between a stored test-set result and the re-scored one (values, CIs,
    n_examples, n_groups; the primary metric first) as text naming `source`, or None. With `every_metric` the stored result
    must hold exactly the re-scored metrics; without it, it may lack some (rows scored before
    those metrics existed)."""
    for field in ("values", "ci95"):
        names = set(stored[field])
        if (names != set(rescored[field])) if every_metric else not names <= set(rescored[field]):
            return (f"{field} has metrics {sorted(stored[field])}; re-scoring {source} gives "
                    f"{sorted(rescored[field])}")
    primary_first = sorted(stored["values"], key=lambda n: (n != stored.get("primary"), n))
    for name in primary_first:
        if not _close(stored["values"][name], rescored["values"][name]):
            return (f"values.{name} = {stored['values'][name]!r} but re-scoring {source} gives "
                    f"{rescored['values'][name]!r} (tolerance {TOLERANCE:g})")
    for name in sorted(stored["ci95"], key=lambda n: (n != stored.get("primary"), n)):
        for bound, s, r in zip(("lo", "hi"), stored["ci95"][name], rescored["ci95"][name]):
            if not _close(s, r):
                return (f"ci95.{name} {bound} = {s!r} but re-scoring {source} gives {r!r} "
                        f"(tolerance {TOLERANCE:g})")
    for field in ("n_examples", "n_groups"):
        if stored[field] != rescored[field]:
            return f"{field} = {stored[field]!r} but {source} has {rescored[field]!r}"
    return None


def rescore(task, test_set: str, row: dict, predictions: tuple) -> dict:
    """The values, CIs (undefined ones as None), counts and collapse (`scoring.collapse`) of `row`'s
    prediction set on `test_set` (as `results.read_predictions` returns it), scored by the board's
    rules."""
    ids, groups, labels, scores, names = predictions
    if tuple(names) != tuple(task.class_names):
        raise ValueError(f"classes {list(names)}; task {task.name} has {list(task.class_names)}")
    scored = scoring.score_task(task, test_set, ids, labels, scores, groups,
                                bootstrap_samples=bootstrap_samples(row["preset"]),
                                seed=int(row["seed"]))

    def defined(v):
        return None if _undefined(v) else v

    return {"values": {k: defined(v) for k, v in scored["values"].items()},
            "ci95": {k: [defined(lo), defined(hi)] for k, (lo, hi) in scored["ci95"].items()},
            "n_examples": int(len(ids)), "n_groups": int(len(set(groups))),
            "collapsed": scoring.collapse(task.kind, names, labels, scores)}


def rescored_row(row: dict, task, read: Callable[[dict, str], tuple], where: str) -> dict:
    """`row` with every test set of `task` re-scored from its prediction file (`read(row, test
    set)`); raises StoredMetricsMismatch naming `where` when a stored number disagrees."""
    metrics = {}
    for test_set, stored in sorted(row["metrics"].items()):
        if test_set not in task.test_sets:
            metrics[test_set] = stored
            continue
        predictions = read(row, test_set)
        try:
            rescored = rescore(task, test_set, row, predictions)
        except ValueError as e:
            raise ValueError(f"{where}: metrics.{test_set}: {stored['predictions']}: {e}") from None
        problem = disagreement(stored, rescored, stored["predictions"], every_metric=False)
        if problem:
            raise StoredMetricsMismatch(f"{where}: metrics.{test_set}: {problem}")
        metrics[test_set] = {**stored, **rescored}
    return {**row, "metrics": metrics}


def owners_path(results_path: str | os.PathLike) -> Path:
    """Where method ownership is recorded for the results file `results_path`."""
    path = Path(results_path)
    return path.with_name(f"{path.stem}_submitters.json")


def read_owners(results_path: str | os.PathLike) -> dict[str, str]:
    """Submitted method -> its submitter, for the results file `results_path` (empty when no
    method was submitted); ValueError naming the file when it is not such a JSON object."""
    path = owners_path(results_path)
    if not path.exists():
        return {}
    try:
        owners = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not (isinstance(owners, dict) and all(isinstance(v, str) for v in owners.values())):
        raise ValueError(f"{path}: expected a JSON object of method -> submitter")
    return owners


def folded_name(method: str) -> str:
    """`method` case-folded with everything but letters and digits dropped: two method names
    that fold alike name one method (e.g. MICLe, mic-le and micle)."""
    return re.sub(r"[^0-9a-z]", "", method.casefold())
