"""Precision parity: whether bfloat16 and float32 runs of one configuration give primary metrics
within the replicate-to-replicate spread (the command is `python -m benchmark.parity`).

Every row of the results files is one replicate (its own pretraining seed, `--pretrain_seed`, and
fine-tuning seed, `--seeds`). Rows are grouped into cells by (task, preset, eval mode, label
fraction) and split by the precision they trained in (`config.precision.used`). All rows must share
the rest of their configuration (`config.method_spec`, backbone, data, schedules); only the
precision, the pretraining seed and the method's name (`config.method`) may differ; rows of
other code (`code_digest`), another kind of machine (`provenance.machine_kind`) or other data
(builds, test sets, and per label fraction and seed the training subset) are refused, never
pooled. Every number is re-scored from the rows' prediction files (beside the results file) by the
board's rules (`rules`); rows whose stored metrics disagree with their files and undefined (null
or NaN) primary metrics are one-line errors. For each cell and test set the table shows each
precision's mean ± sample standard deviation over its replicates, the difference bf16 − float32,
the larger of the two standard deviations, and whether |difference| is within it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import warnings
from typing import Sequence

from benchmark.board import rules
from benchmark.harness import results
from medssl_common.provenance import machine_kind

PRECISIONS = ("float32", "bfloat16")
_FREE = ("method", "precision", "pretrain.precision", "pretrain.seed")  # config keys that may differ


@dataclasses.dataclass(frozen=True)
class ParityLine:
    """One (cell, test set): the primary metric's replicates per precision."""

    task: str
    preset: str
    eval_mode: str
    label_fraction: float
    test_set: str
    metric: str
    values: tuple[tuple[float, ...], tuple[float, ...]]  # float32's, bfloat16's

    @property
    def difference(self) -> float:
        return statistics.fmean(self.values[1]) - statistics.fmean(self.values[0])

    @property
    def spread(self) -> float:
        return max(statistics.stdev(v) for v in self.values)

    @property
    def within(self) -> bool:
        return abs(self.difference) <= self.spread


def _comparable(config: dict) -> dict:
    """`config` without the keys a parity replicate may change."""
    out = {k: v for k, v in config.items() if k not in _FREE}
    out["pretrain"] = {k: v for k, v in (config.get("pretrain") or {}).items()
                       if f"pretrain.{k}" not in _FREE}
    return out


def _precision(row: dict, where: str) -> str:
    used = results.precision_name(row) or "float32"  # rows from before the flag ran in float32
    if used not in PRECISIONS:
        raise ValueError(f"{where}: config.precision.used {used!r}; expected one of {PRECISIONS}")
    return used


def read_rows(path: str) -> list[tuple[str, dict]]:
    """(`<path>:<line>`, row) of every valid row of the results file `path`
    (`results.read_valid_rows`; a truncated last line is reported and skipped), its metrics
    re-scored by the board's rules from the prediction files beside `path`
    (`rules.rescored_row`); raises ValueError naming the file and line of an invalid row, a
    missing prediction file or stored metrics that disagree with their files."""
    from benchmark.harness import tasks

    if not os.path.exists(path):
        raise ValueError(f"--results={path}: no such file; expected a results.jsonl")
    if not os.path.isfile(path):
        raise ValueError(f"--results={path}: not a regular file; expected a results.jsonl")
    located, torn = results.read_valid_rows(path)
    if torn:
        warnings.warn(torn, results.TruncatedLineWarning, stacklevel=2)
    root = os.path.dirname(os.path.abspath(path))

    def read(row: dict, test_set: str) -> tuple:
        rel = row["metrics"][test_set]["predictions"]
        file = os.path.join(root, rel)
        if not os.path.isfile(file):
            raise ValueError(f"prediction file {rel} of metrics.{test_set} is not in {root}; "
                             "parity re-scores every replicate from its predictions")
        return results.read_predictions(file)

    rescored = []
    for where, row in located:
        if row["task"] not in tasks.TASKS:
            raise ValueError(f"{where}: task {row['task']!r} is not registered; expected one of "
                             f"{sorted(tasks.TASKS)}")
        try:
            rescored.append((where, rules.rescored_row(row, tasks.task_of_row(row),
                                                       read, where)))
        except rules.StoredMetricsMismatch as e:
            raise ValueError(f"{e}; parity compares only rows whose numbers are their "
                             "predictions'") from None
        except ValueError as e:
            raise ValueError(e if str(e).startswith(where) else f"{where}: {e}") from None
    return rescored


def _provenance(row: dict) -> dict:
    """What must be equal across all replicates: the code, the machine kind, every data build and
    every test set."""
    found = {"code_digest": row["code_digest"], "machine kind": machine_kind(row["machine"])}
    found.update({f"data_build[{b}]": d for b, d in row["data_build"].items()})
    found.update({f"metrics.{t}.fingerprint": r["fingerprint"] for t, r in row["metrics"].items()})
    return found


def _check_same_origin(located: Sequence[tuple[str, dict]]) -> None:
    """Refuses rows of other code, machines or data than the first row (and, per label fraction
    and seed, another training subset)."""
    first_where, first = located[0]
    reference = _provenance(first)
    subsets: dict[tuple, tuple[str, str]] = {}
    for where, row in located:
        mine = _provenance(row)
        for what in sorted(reference.keys() | mine.keys()):
            if mine.get(what) != reference.get(what):
                raise ValueError(f"{where}: row of {row['method']} has another {what} than "
                                 f"{first_where} ({_short(mine.get(what))} vs "
                                 f"{_short(reference.get(what))}); parity pools only replicates "
                                 "of one code, machine kind and data")
        key = (row["task"], row["preset"], float(row["label_fraction"]), row["seed"])
        seen_where, seen = subsets.setdefault(key, (where, row["data_fingerprint"]))
        if row["data_fingerprint"] != seen:
            raise ValueError(f"{where}: row of {row['method']} trained on another subset "
                             f"(data_fingerprint {row['data_fingerprint'][:12]}...) than "
                             f"{seen_where} ({seen[:12]}...) of the same label fraction and "
                             "seed; parity pools only replicates of one data")


def _short(value) -> str:
    """A digest as its first 12 characters, a machine kind as JSON, none as "none"."""
    if value is None:
        return "none"
    return f"{value[:12]}..." if isinstance(value, str) else json.dumps(value)


def _value(where: str, row: dict, test_set: str, metric: str) -> float:
    v = row["metrics"][test_set]["values"].get(metric)
    if v is None or math.isnan(v):
        raise ValueError(f"{where}: metrics.{test_set}.values.{metric} is undefined (null or "
                         "NaN) when re-scored from its predictions; parity needs a value for "
                         "every replicate")
    return float(v)


def parity_lines(located: Sequence[tuple[str, dict]]) -> list[ParityLine]:
    """The parity lines of (`where`, row) pairs (`where` names the row in errors). Raises
    ValueError on rows of another configuration, code, machine kind or data, a replicate
    (pretraining seed, seed) twice in one precision, a cell without at least two replicates of
    each precision, or an undefined primary metric."""
    if not located:
        raise ValueError("no result rows; expected rows of one configuration in both precisions")
    first_where, first = located[0]
    reference = _comparable(first.get("config") or {})
    cells: dict[tuple, dict[str, dict[tuple, tuple[str, dict]]]] = {}
    for where, row in located:
        if _comparable(row.get("config") or {}) != reference:
            raise ValueError(f"{where}: row of {row['method']} has another configuration than "
                             f"{first_where} (beyond precision and pretraining seed); parity "
                             "compares replicates of one configuration")
    _check_same_origin(located)
    for where, row in located:
        replicate = (results.pretrain_seed(row), row["seed"])
        key = (row["task"], row["preset"], row["eval_mode"], float(row["label_fraction"]))
        per = cells.setdefault(key, {p: {} for p in PRECISIONS})[_precision(row, where)]
        if replicate in per:
            raise ValueError(f"{where}: replicate (pretraining seed, seed) = {replicate} appears "
                             f"twice in {_precision(row, where)} for cell {key}")
        per[replicate] = (where, row)
    lines = []
    for key in sorted(cells):
        counts = {p: len(cells[key][p]) for p in PRECISIONS}
        if min(counts.values()) < 2:
            raise ValueError(f"cell {key}: {counts} replicates; expected at least 2 of each "
                             "precision for a spread")
        by_precision = [[cells[key][p][r] for r in sorted(cells[key][p])] for p in PRECISIONS]
        for test_set in sorted(by_precision[0][0][1]["metrics"]):
            metric = by_precision[0][0][1]["metrics"][test_set]["primary"]
            lines.append(ParityLine(*key, test_set=test_set, metric=metric, values=tuple(
                tuple(_value(where, r, test_set, metric) for where, r in rows)
                for rows in by_precision)))
    return lines


def table(lines: Sequence[ParityLine]) -> str:
    """`lines` as a markdown table."""
    def stat(values):
        return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f} (n={len(values)})"

    out = ["| task | eval | labels | test set | metric | float32 | bfloat16 | bf16 − f32 | larger sd "
           "| within spread |", "|---|---|---|---|---|---|---|---|---|---|"]
    for line in lines:
        out.append(f"| {line.task} | {line.eval_mode} | {line.label_fraction:.0%} | {line.test_set} | "
                   f"{line.metric} | {stat(line.values[0])} | {stat(line.values[1])} | "
                   f"{line.difference:+.3f} | {line.spread:.3f} | {'yes' if line.within else 'NO'} |")
    return "\n".join(out)


def report(paths: Sequence[str]) -> str:
    """The parity table of the rows in the results files `paths`."""
    if not paths:
        raise ValueError("--results: expected one or more results.jsonl files")
    return table(parity_lines([row for path in paths for row in read_rows(path)]))

