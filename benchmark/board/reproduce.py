"""Re-running one result cell from what its row records, and whether it came out the same (the
command is `python -m benchmark.reproduce`).

The cell is re-run (pretraining included) into a scratch directory with the method spec, preset
settings, backbone, task options, data settings, strategy, initial checkpoint and determinism the
row records. Before any training it refuses, in one line, a row whose code (`code_digest`) or data
(the training subset's, the test sets' and the builds' fingerprints) differ from this checkout's.
It prints, per test set, whether the prediction files are byte-identical, the largest score
difference and the primary metric's difference, and exits 0 only if everything is identical.
Byte identity is expected on the same kind of machine (`provenance.machine_kind`) for rows computed
in deterministic mode.
"""
from __future__ import annotations

import dataclasses
import filecmp
import os

import numpy as np

from baselines import precision, registry
from baselines.api import BackboneConfig, PretrainConfig
from benchmark.harness import data, presets, results, runner
from medssl_common.provenance import code_digest, code_version
from benchmark.harness.tasks import TaskOptions, task_of_row, with_test_sets

# Keys a reproduction may change: when and how long, and the provenance that names rather than
# determines the computation (the commit may differ while code_digest is equal; the CPU's name).
IGNORED_ROW_KEYS = ("created", "wall_seconds", "code_version", "machine")


@dataclasses.dataclass(frozen=True)
class TestSetComparison:
    """How one test set's re-run predictions compare with the stored ones."""

    test_set: str
    identical: bool  # prediction files byte for byte
    max_score_difference: float
    primary: str
    primary_difference: float | None  # re-run minus stored; None when undefined


def where(path: str, line: int) -> str:
    return f"{path}:{line}"


def read_numbered_rows(path: str) -> list[tuple[int, dict]]:
    """(line number, row) of every complete row of a results file (a torn last line is skipped)."""
    if not os.path.isfile(path):
        raise ValueError(f"--results={path}: no such file")
    return [(number, row) for number, _, row in results.ResultsStore(path).scan()[0]]


def select_row(path: str, *, line: int | None = None, task: str | None = None,
               method: str | None = None, preset: str | None = None, eval_mode: str | None = None,
               label_fraction: float | None = None, seed: int | None = None) -> tuple[int, dict]:
    """The row at `line`, or the one row of the cell given by the other arguments (label_fraction
    in percent)."""
    rows = read_numbered_rows(path)
    cell = {"task": task, "method": method, "eval_mode": eval_mode,
            "label_fraction": label_fraction, "seed": seed}
    if line is not None:
        if any(v is not None for v in cell.values()) or preset is not None:
            raise ValueError("--row: give either --row or the cell (--task, --method, --eval_mode, "
                             "--label_fraction, --seed), not both")
        found = [(n, r) for n, r in rows if n == line]
        if not found:
            raise ValueError(f"--row={line}: {path} has no row on line {line} (rows are on lines "
                             f"{[n for n, _ in rows][:5]}{'...' if len(rows) > 5 else ''})")
        return found[0]
    missing = [f"--{k}" for k, v in cell.items() if v is None]
    if missing:
        raise ValueError(f"give --row or the whole cell: missing {', '.join(missing)}")

    def matches(row: dict) -> bool:
        try:
            return (row.get("task") == task and row.get("method") == method
                    and row.get("eval_mode") == eval_mode and row.get("seed") == seed
                    and (preset is None or row.get("preset") == preset)
                    and abs(float(row.get("label_fraction")) * 100 - label_fraction) < 1e-6)
        except (TypeError, ValueError):
            return False

    found = [(n, r) for n, r in rows if matches(r)]
    what = (f"task={task} method={method} eval_mode={eval_mode} label_fraction={label_fraction:g} "
            f"seed={seed}" + (f" preset={preset}" if preset else ""))
    if not found:
        raise ValueError(f"{path}: no row for the cell {what}")
    if len(found) > 1:
        raise ValueError(f"{path}: {len(found)} rows for the cell {what} (lines "
                         f"{[n for n, _ in found]}); add --preset or use --row")
    return found[0]


def _percent(fraction: float) -> float:
    """The label percentage whose `/ 100.0` is `fraction`, as the runner stores it."""
    percent = round(float(fraction) * 100, 9)
    if percent / 100.0 != float(fraction):
        percent = float(fraction) * 100
    return percent


def check_method_spec(where: str, spec, named: str | None) -> None:
    """Refuses to run code a row names: a `config.method_spec` that is not a registered method
    name (`registry.METHODS`: an import path, a saved backbone) is run only when the user names it
    too (`named`, the --method_spec flag), equal to the row's."""
    if named is None:
        if isinstance(spec, str) and spec in registry.METHODS:
            return
        raise ValueError(f"{where}: its config.method_spec {spec!r} is not a registered method "
                         f"({', '.join(sorted(registry.METHODS))}); a row is data and never "
                         "chooses code to run: if you trust that code, name it yourself with "
                         f"--method_spec={spec}")
    if named != spec:
        raise ValueError(f"--method_spec={named}: the row's config.method_spec is {spec!r}; "
                         "expected them equal")


def rerun_config(where: str, row: dict, *, data_dir: str, scratch_dir: str,
                 manual_dir: str | None = None, tpu_address: str | None = None,
                 progress: bool = True, method_spec: str | None = None) -> runner.RunConfig:
    """The RunConfig that recomputes exactly the cell of `row` into `scratch_dir`; the row's
    method must be registered or named by the user (`method_spec`, see `check_method_spec`)."""
    try:
        results.validate_row(row, new=False)
    except ValueError as e:
        raise ValueError(f"{where}: cannot be re-run: {e}") from None
    config = row["config"]
    needed = ("method_spec", "task_options", "resolution", "image_size", "requested_backbone",
              "pretrain", "finetune", "bootstrap_samples", "strategy", "init_checkpoint",
              "manual_dir", "data")
    lacking = [k for k in needed if k not in config]
    if lacking:
        raise ValueError(f"{where}: cannot be re-run: its config lacks {', '.join(lacking)}")
    check_method_spec(where, config["method_spec"], method_spec)
    try:
        preset = presets.get_preset(row["preset"])
        preset = dataclasses.replace(
            preset, resolution=config["resolution"], image_size=config["image_size"],
            backbone=BackboneConfig(**config["requested_backbone"]),
            pretrain=PretrainConfig(**config["pretrain"]),
            finetune=presets.FinetuneSettings(**config["finetune"]),
            **({"distill": presets.DistillSettings(**config["distill"])} if "distill" in config
               else {}),
            label_fractions=(_percent(row["label_fraction"]),), seeds=(int(row["seed"]),),
            eval_modes=(row["eval_mode"],), bootstrap_samples=config["bootstrap_samples"],
            synthetic_sizes=dict(config["data"]["synthetic_sizes"]),
            synthetic_image_size=config["data"]["synthetic_image_size"])
        task = task_of_row(row, TaskOptions(**config["task_options"]))
        if "test_sets" in config:  # absent: all of the task's test sets
            task = with_test_sets(task, config["test_sets"])
        data_cfg = data.DataConfig(
            data_dir=data_dir, manual_dir=manual_dir or config["manual_dir"],
            resolution=config["resolution"], synthetic_sizes=dict(config["data"]["synthetic_sizes"]),
            synthetic_image_size=config["data"]["synthetic_image_size"],
            synthetic_seed=config["data"]["synthetic_seed"])
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"{where}: cannot be re-run with this code: {e}") from None
    if config["strategy"] == "tpu" and not tpu_address:
        raise ValueError(f"{where}: was computed with --strategy=tpu; give --tpu_address")
    try:  # rows from before the precision flag ran in float32
        row_precision = (precision.Precision(**config["precision"]) if "precision" in config
                         else precision.FLOAT32)
        precision.policy_name(row_precision.used)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot be re-run: config.precision {config.get('precision')!r} "
                         f"({e})") from None
    return runner.RunConfig(
        method=config["method_spec"], name=row["method"], task=task, preset=preset, data=data_cfg,
        output_dir=scratch_dir, strategy=config["strategy"], tpu_address=tpu_address,
        init_checkpoint=config["init_checkpoint"], deterministic=bool(row["deterministic"]),
        progress=progress, precision=row_precision,
        student_init=config.get("student_init_checkpoint"))


def check_code(where: str, row: dict) -> None:
    """Refuses a row computed by other code than this checkout's."""
    current = code_digest()
    if row["code_digest"] != current:
        raise ValueError(
            f"{where}: computed by other code (code_version {row['code_version']}, code_digest "
            f"{row['code_digest'][:12]}) than this checkout's (code_version {code_version()}, "
            f"code_digest {current[:12]}); check out {row['code_version'].removesuffix('-dirty')} "
            "to reproduce it")


def check_data(where: str, row: dict, cfg: runner.RunConfig) -> None:
    """Refuses a row whose builds, training subset or test sets differ from the data at hand."""
    builders = data.prepare(cfg.task, cfg.data)
    now = data.build_fingerprints(builders)
    for key, stored in sorted(row["data_build"].items()):
        if now.get(key) != stored:
            raise ValueError(f"{where}: computed on another build of {key} (fingerprint "
                             f"{stored[:12]}) than the one in --data_dir={cfg.data.data_dir} "
                             f"({(now.get(key) or 'none')[:12]})")
    splits = data.split_task(builders, cfg.task, validation_fraction=cfg.task.options.validation_fraction,
                             test_fraction=cfg.task.options.test_fraction)
    chosen, _ = runner.train_subset(cfg.task, splits, cfg.preset.label_fractions[0], cfg.preset.seeds[0])
    if results.examples_fingerprint(chosen.example_ids, chosen.labels) != row["data_fingerprint"]:
        raise ValueError(f"{where}: its training examples (data_fingerprint "
                         f"{row['data_fingerprint'][:12]}) differ from this data's for the same cell")
    for name, result in sorted(row["metrics"].items()):
        test = splits.tests.get(name)
        if test is None or results.examples_fingerprint(test.example_ids, test.labels) != result["fingerprint"]:
            raise ValueError(f"{where}: its {name} test set (fingerprint {result['fingerprint'][:12]}) "
                             "differs from this data's")


def compare(stored_dir: str, row: dict, new_dir: str, new_row: dict) -> list[TestSetComparison]:
    """Per test set: byte identity of the prediction files, largest score and primary differences."""
    out = []
    for name, result in sorted(row["metrics"].items()):
        new = new_row["metrics"][name]
        a, b = os.path.join(stored_dir, result["predictions"]), os.path.join(new_dir, new["predictions"])
        if not os.path.isfile(a):
            raise ValueError(f"{a}: the stored prediction file of the row's {name} test set is missing")
        identical = filecmp.cmp(a, b, shallow=False)
        ids_a, _, _, scores_a, _ = results.read_predictions(a)
        ids_b, _, _, scores_b, _ = results.read_predictions(b)
        if list(ids_a) != list(ids_b):
            raise ValueError(f"{a}: holds other examples than the re-run's {b}")
        primary = result["primary"]
        old_v, new_v = result["values"].get(primary), new["values"].get(primary)
        diff = None if old_v is None or new_v is None else float(new_v) - float(old_v)
        out.append(TestSetComparison(
            test_set=name, identical=identical,
            max_score_difference=float(np.max(np.abs(scores_a - scores_b))) if len(ids_a) else 0.0,
            primary=primary, primary_difference=diff))
    return out


def row_differences(row: dict, new_row: dict) -> list[str]:
    """Top-level keys (beyond `IGNORED_ROW_KEYS`) whose values differ between the two rows."""
    keys = (row.keys() | new_row.keys()) - set(IGNORED_ROW_KEYS)
    return sorted(k for k in keys if row.get(k) != new_row.get(k))


def report(comparisons: list[TestSetComparison], differing_keys: list[str]) -> str:
    """The printed verdict."""
    lines = [f"{'test set':<16} {'predictions':<14} {'max |score diff|':>16}  primary difference"]
    for c in comparisons:
        diff = "undefined" if c.primary_difference is None else f"{c.primary_difference:+.6g}"
        lines.append(f"{c.test_set:<16} {'identical' if c.identical else 'NOT identical':<14} "
                     f"{c.max_score_difference:>16.3g}  {c.primary} {diff}")
    lines.append("row: identical apart from " + ", ".join(IGNORED_ROW_KEYS) if not differing_keys
                 else "row: differs in " + ", ".join(differing_keys))
    return "\n".join(lines)
