"""Scores of one test set from per-example predictions: the task's metrics and patient-level
bootstrap CIs. The harness and `benchmark.submit` both score through here."""
from __future__ import annotations

import numpy as np

from benchmark import metrics


def metric_fn(kind: str, class_names):
    """The task kind's metric function over (labels, scores)."""
    if kind == "multilabel":
        return metrics.multilabel_metric_fn(class_names)
    if kind == "multiclass":
        return metrics.multiclass_metric_fn(class_names)
    raise ValueError(f"unknown task kind {kind!r}; expected 'multilabel' or 'multiclass'")


def score(kind: str, class_names, labels: np.ndarray, scores: np.ndarray, group_ids: np.ndarray, *,
          bootstrap_samples: int, seed: int = 0) -> dict:
    """{"values": {metric: value}, "ci95": {metric: [lo, hi]}} for multi-label labels [N, K] (nan =
    ignored) or multi-class one-hot labels [N, K], scores [N, K] and group (patient) ids [N]."""
    labels = np.asarray(labels, dtype=np.float64)
    if kind == "multiclass":
        labels = np.argmax(labels, axis=1)
    fn = metric_fn(kind, class_names)
    values = fn(labels, scores)
    ci = metrics.bootstrap_ci(fn, labels, scores, group_ids, num_samples=bootstrap_samples, seed=seed)
    return {"values": {k: float(v) for k, v in values.items()},
            "ci95": {k: [float(lo), float(hi)] for k, (lo, hi) in ci.items()}}
