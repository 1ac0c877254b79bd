"""Builds a toy leaderboard (reference rows of method "supervised", preset "cpu") and a valid
submission for it, from synthetic per-example predictions scored with `benchmark.harness.scoring`.

    python tests/data/submission_example/build_example.py OUT_DIR
    python -m benchmark.submit --submission=OUT_DIR/submission_derm \
        --leaderboard_dir=OUT_DIR/leaderboard

Layout written under OUT_DIR:
  leaderboard/results.jsonl, leaderboard/predictions/*.csv   reference rows and their predictions
  submission_<task>/submission.json                        {"submitter": "example-lab"}
  submission_<task>/results.jsonl                          one row per cell of the preset's grid
  submission_<task>/predictions/*.csv                      one file per cell x test set
"""
from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np

from benchmark.board import submit
from benchmark.harness import results, scoring
from benchmark.harness.tasks import get_task

TEST_SET_SIZES = {"in_distribution": (36, 18), "shifted": (24, 16)}  # examples, groups
PRESET = "cpu"
EVAL_MODE = "finetune"
SUBMITTER = "example-lab"


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, parts)).encode()))


def toy_test_set(task_name: str, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(example ids sorted, group ids, labels [N, K]) of a toy test set."""
    task = get_task(task_name)
    n, g = TEST_SET_SIZES[name]
    k = len(task.class_names)
    rng = _rng("test", task_name, name)
    ids = np.array([f"{name[:2]}{i:03d}" for i in range(n)], dtype=object)
    groups = np.array([f"p{i % g:03d}" for i in range(n)], dtype=object)
    if name in task.study_ids:  # CheXpert image paths: one view per study
        ids = np.array([f"CheXpert-v1.0-small/valid/patient{i % g:05d}/study{i}/view1_frontal.jpg"
                        for i in range(n)], dtype=object)
    if task.kind == "multiclass":
        labels = np.eye(k)[np.arange(n) % k]
    else:
        labels = (rng.random((n, k)) < 0.4).astype(np.float64)
        labels[rng.random((n, k)) < 0.1] = np.nan  # ignored (U-Ignore) labels
        labels[:k] = np.eye(k)  # every class has a positive and a negative
    return ids, groups, labels


def make_cell(task_name: str, method: str, fraction: float, seed: int, directory: Path, *,
              eval_mode: str = EVAL_MODE, preset: str = PRESET, synthetic: bool = True,
              skill: float = 1.0, deterministic: bool = True) -> dict:
    """A valid result row for one cell; writes its prediction files under
    `directory`/predictions."""
    from benchmark.harness.presets import get_preset

    task = get_task(task_name)
    metrics = {}
    for name in task.test_sets:
        ids, groups, labels = toy_test_set(task_name, name)
        rng = _rng(task_name, method, eval_mode, fraction, seed, name)
        signal = np.nan_to_num(labels) * skill * (0.5 + fraction)
        logits = signal + rng.normal(size=labels.shape)
        if task.kind == "multiclass":
            scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        else:
            scores = 1.0 / (1.0 + np.exp(-logits))
        rel = (f"predictions/{task_name}_{method}_{preset}_{eval_mode}_f{fraction * 100:g}"
               f"_s{seed}_{name}.csv")
        results.write_predictions(directory / rel, ids, groups, labels, scores, task.class_names)
        metrics[name] = {
            "primary": task.primary_metric,
            **scoring.score_task(task, name, ids, labels, scores, groups,
                                 bootstrap_samples=get_preset(preset).bootstrap_samples,
                                 seed=seed),
            "n_examples": len(ids), "n_groups": len(set(groups)),
            "fingerprint": results.examples_fingerprint(ids, labels), "predictions": rel,
            "collapsed": scoring.collapse(task.kind, task.class_names, labels, scores),
        }
    row = {
        "schema": results.SCHEMA_VERSION, "task": task_name, "method": method, "preset": preset,
        "eval_mode": eval_mode, "label_fraction": float(fraction), "seed": int(seed),
        "metrics": metrics, "n_train_examples": int(round(120 * fraction)),
        "n_train_groups": int(round(80 * fraction)), "config": {"example": True}, "code_version": "unknown",
        "code_digest": results.fingerprint("toy code"), "deterministic": deterministic,
        "machine": {"arch": "x86_64", "cpu": "toy", "isa": [], "onednn": "1"},
        "data_build": {f"{task_name}_toy/64px/1.0.0": results.fingerprint("toy build", task_name)},
        "packages": {"numpy": np.__version__}, "synthetic": synthetic,
        # The harness picks the labelled subset from (task, fraction, seed), whatever the method.
        "data_fingerprint": results.fingerprint(task_name, str(fraction), str(seed)),
        "created": "2025-01-01T00:00:00+00:00", "wall_seconds": 0.0,
        "pretrain_summary": {"method": method, "steps": None, "curve": None},  # toy: nothing recorded
    }
    if eval_mode == "finetune":  # the schedule search's record (toy: one schedule, scores unknown)
        row["finetune_selection"] = {
            "source": "preset", "metric": task.primary_metric, "eval_points": 1,
            "schedules": [{"steps": 1, "learning_rate": 0.1, "batch_size": 16, "warmup_steps": 0,
                           "decay_boundaries": [], "mixup_alpha": 0.0, "eval_steps": [1],
                           "validation": [None]}],
            "chosen": {"schedule": 0, "step": 1, "validation": None}, "n_validation_examples": 0}
    if eval_mode == "linear":  # the probe's record (toy: one C, its validation score unknown)
        row["linear_probe"] = {"C": 1.0, "grid": [1.0], "validation": {"1.0": None},
                               "metric": get_task(task_name).primary_metric, "standardised": True,
                               "solver": "lbfgs", "max_iter": 1000, "unconverged": [],
                               "constant": [], "n_validation_examples": 0}
    return row


GRID = ((0.1, 1.0), (0, 1))  # the toy board's grid: label fractions x seeds


def make_grid(task_name: str, method: str, directory: Path, **kwargs) -> list[dict]:
    """Rows of the toy board's grid (GRID) for one (task, method, eval_mode)."""
    fractions, seeds = GRID
    return [make_cell(task_name, method, f, s, directory, **kwargs)
            for f in fractions for s in seeds]


def write_rows(path: Path, rows: list[dict]) -> None:
    """Writes rows as a results.jsonl (sorted keys, one per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")


def build(root: str | Path, tasks: tuple[str, ...] = ("derm", "cxr")) -> dict[str, Path]:
    """Writes the toy leaderboard and one submission per task; returns their directories."""
    root = Path(root)
    board = root / "leaderboard"
    reference = [r for t in tasks for r in make_grid(t, "supervised", board, skill=0.8)]
    write_rows(board / "results.jsonl", reference)
    dirs = {"leaderboard": board}
    for t in tasks:
        sub = root / f"submission_{t}"
        write_rows(sub / "results.jsonl", make_grid(t, "example-ssl", sub, skill=1.2))
        (sub / "submission.json").write_text(json.dumps({"submitter": SUBMITTER}) + "\n")
        dirs[t] = sub
    return dirs


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: build_example.py OUT_DIR")
    for name, path in build(sys.argv[1]).items():
        print(f"{name}: {path}")
