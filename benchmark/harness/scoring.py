"""Scores of one test set from per-example predictions: the task's metrics and patient-level
bootstrap CIs. The harness, `benchmark.submit` and `benchmark.leaderboard` all score through here.

Study-level scoring (CheXpert's official evaluation is per study, a study holding one or more views):
for a test set with study ids, the image scores of each study are aggregated by their maximum and
by their mean, and the multi-label metrics of the study-level predictions are reported under the
names `study_max/<metric>` and `study_mean/<metric>` (e.g. `study_max/mean_auc`,
`study_mean/auc/Edema`) beside the image-level ones. The images of a study must carry the same
labels and patient; the bootstrap still resamples patients.

Differences to a control (`control_difference`): a method's image-level metric minus the control
method's (e.g. `random_init`, the same backbone without pretraining) on the same test examples, over
the seeds both ran, with a paired patient-level bootstrap CI (`metrics.paired_bootstrap_difference`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from benchmark.harness import metrics

STUDY_AGGREGATIONS = ("max", "mean")


def metric_fn(kind: str, class_names):
    """The task kind's metric function over (labels, scores)."""
    if kind == "multilabel":
        return metrics.multilabel_metric_fn(class_names)
    if kind == "multiclass":
        return metrics.multiclass_metric_fn(class_names)
    raise ValueError(f"unknown task kind {kind!r}; expected 'multilabel' or 'multiclass'")


def base_metric_names(kind: str, class_names) -> list[str]:
    """Names of the image-level metrics `score` reports for a task kind."""
    per_class = [f"auc/{c}" for c in class_names]
    if kind == "multilabel":
        return ["mean_auc"] + per_class
    if kind == "multiclass":
        return ["top1", "balanced_accuracy", "macro_auc"] + per_class
    raise ValueError(f"unknown task kind {kind!r}; expected 'multilabel' or 'multiclass'")


def study_metric_names(class_names) -> list[str]:
    """Names of the study-level metrics (multi-label tasks only)."""
    return [f"study_{how}/{name}" for how in STUDY_AGGREGATIONS
            for name in base_metric_names("multilabel", class_names)]


def metric_names(task, test_set: str) -> list[str]:
    """Every metric name `score_task` reports for `task` on `test_set`."""
    names = base_metric_names(task.kind, task.class_names)
    if test_set in task.study_ids:
        names += study_metric_names(task.class_names)
    return names


def _ci_record(fn, labels, scores, group_ids, bootstrap_samples, seed, prefix=""):
    values = fn(labels, scores)
    ci = metrics.bootstrap_ci(fn, labels, scores, group_ids, num_samples=bootstrap_samples, seed=seed)
    return ({prefix + k: float(v) for k, v in values.items()},
            {prefix + k: [float(lo), float(hi)] for k, (lo, hi) in ci.items()})


def score(kind: str, class_names, labels: np.ndarray, scores: np.ndarray, group_ids: np.ndarray, *,
          bootstrap_samples: int, seed: int = 0, study_ids=None) -> dict:
    """{"values": {metric: value}, "ci95": {metric: [lo, hi]}} for multi-label labels [N, K] (nan =
    ignored) or multi-class one-hot labels [N, K], scores [N, K] and group (patient) ids [N]. With
    `study_ids` [N] (multi-label only) the study-level metrics are added (see the module doc)."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if kind == "multiclass":
        labels = np.argmax(labels, axis=1)
    values, ci = _ci_record(metric_fn(kind, class_names), labels, scores, group_ids,
                            bootstrap_samples, seed)
    if study_ids is not None:
        if kind != "multilabel":
            raise ValueError("study-level scoring applies to multi-label tasks only")
        for how in STUDY_AGGREGATIONS:
            s_labels, s_scores, s_groups = aggregate_studies(study_ids, labels, scores, group_ids,
                                                             how)
            v, c = _ci_record(metric_fn(kind, class_names), s_labels, s_scores, s_groups,
                              bootstrap_samples, seed, prefix=f"study_{how}/")
            values.update(v)
            ci.update(c)
    return {"values": values, "ci95": ci}


def score_task(task, test_set: str, example_ids, labels, scores, group_ids, *,
               bootstrap_samples: int, seed: int = 0) -> dict:
    """`score` with `task`'s kind and classes, adding study-level metrics on the test sets where
    the task defines studies (`task.study_ids`: test set -> example id -> study id)."""
    study_of = task.study_ids.get(test_set)
    study_ids = None if study_of is None else np.array([study_of(str(e)) for e in example_ids],
                                                       dtype=object)
    return score(task.kind, task.class_names, labels, scores, group_ids,
                 bootstrap_samples=bootstrap_samples, seed=seed, study_ids=study_ids)


def aggregate_studies(study_ids, labels, scores, group_ids, how: str):
    """(labels [S, K], scores [S, K], group ids [S]) of the S studies, in sorted study-id order:
    each study's scores are the max or mean (`how`) of its images' scores. Raises ValueError naming
    the study when its images disagree on a label or a group."""
    if how not in STUDY_AGGREGATIONS:
        raise ValueError(f"study aggregation {how!r}; expected one of {STUDY_AGGREGATIONS}")
    studies = np.asarray(study_ids, dtype=object)
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(group_ids, dtype=object)
    if not (len(studies) == len(y) == len(s) == len(groups)) or y.ndim != 2:
        raise ValueError(f"aggregate_studies: expected {len(studies)} labels [N, K], scores and "
                         f"group ids, got {y.shape}, {s.shape} and {len(groups)}")
    names, index = np.unique(studies.astype(str), return_inverse=True)
    first = np.full(len(names), -1)
    first[index[::-1]] = np.arange(len(index))[::-1]
    same_label = (y == y[first][index]) | (np.isnan(y) & np.isnan(y[first][index]))
    for bad, what in ((~same_label.all(axis=1), "labels"),
                      (groups != groups[first][index], "group")):
        if bad.any():
            study = str(names[index[int(np.flatnonzero(bad)[0])]])
            raise ValueError(f"study {study!r}: its images have different {what}; expected one "
                             f"{what} per study")
    if how == "max":
        agg = np.full((len(names), s.shape[1]), -np.inf)
        np.maximum.at(agg, index, s)
    else:
        agg = np.zeros((len(names), s.shape[1]))
        np.add.at(agg, index, s)
        agg /= np.bincount(index, minlength=len(names))[:, None]
    return y[first], agg, groups[first]


CONSTANT_SCORE_RANGE = 1e-4  # a label's scores spanning less than this do not vary
ONE_CLASS_SHARE = 0.97  # one class predicted for at least this share of the examples


def collapse(kind: str, class_names, labels, scores) -> dict | None:
    """What collapsed in a test set's predictions, or None. Multi-label: the labels whose scores do
    not vary (max - min < `CONSTANT_SCORE_RANGE`), as {"rule": "constant_scores", "classes": [...]}.
    Multi-class: one class is the top prediction for at least `ONE_CLASS_SHARE` of the examples
    while less than that share of the labels are that class, as {"rule": "one_class", "classes":
    [it], "predicted_share", "label_share"}."""
    names = [str(c) for c in class_names]
    s = np.asarray(scores, dtype=np.float64)
    if kind == "multilabel":
        flat = [names[k] for k in range(s.shape[1]) if np.ptp(s[:, k]) < CONSTANT_SCORE_RANGE]
        return {"rule": "constant_scores", "classes": flat} if flat and len(s) > 1 else None
    if kind != "multiclass":
        raise ValueError(f"unknown task kind {kind!r}; expected 'multilabel' or 'multiclass'")
    predicted = np.bincount(np.argmax(s, axis=1), minlength=len(names)) / len(s)
    top = int(np.argmax(predicted))
    label_share = float(np.mean(np.argmax(np.asarray(labels), axis=1) == top))
    if predicted[top] >= ONE_CLASS_SHARE and label_share < ONE_CLASS_SHARE:
        return {"rule": "one_class", "classes": [names[top]],
                "predicted_share": float(predicted[top]), "label_share": label_share}
    return None


def describe_collapse(collapsed: dict) -> str:
    """One line for a `collapse` record."""
    if collapsed["rule"] == "constant_scores":
        return f"constant scores for {', '.join(collapsed['classes'])}"
    return (f"{collapsed['classes'][0]} predicted for {collapsed['predicted_share']:.1%} of the "
            f"examples, {collapsed['label_share']:.1%} of the labels")


def paired_difference(kind: str, class_names, metric: str, method_sets: Sequence,
                      control_sets: Sequence, *, bootstrap_samples: int,
                      seed: int = 0) -> metrics.PairedDifference:
    """Image-level `metric` of the method minus the control's, with its paired bootstrap CI, from
    prediction sets as `results.read_predictions` returns them (example ids, group ids, labels
    [N, K], scores [N, K], class names); `method_sets[i]` pairs with `control_sets[i]` (one seed).
    ValueError (one line) when a set has other classes than the task or the sets are not over the
    same examples and labels."""
    names = tuple(class_names)
    if metric not in base_metric_names(kind, names):
        raise ValueError(f"paired_difference: {metric!r} is not an image-level metric of a {kind} "
                         "task")
    converted = []
    for ids, groups, labels, scores, set_names in (*method_sets, *control_sets):
        if tuple(set_names) != names:
            raise ValueError(f"paired_difference: predictions of classes {list(set_names)}; "
                             f"expected {list(names)}")
        labels = np.asarray(labels, dtype=np.float64)
        if kind == "multiclass":
            labels = np.argmax(labels, axis=1)
        converted.append((ids, groups, labels, np.asarray(scores, dtype=np.float64)))
    found = metrics.paired_bootstrap_difference(
        metric_fn(kind, names), converted[:len(method_sets)], converted[len(method_sets):],
        num_samples=bootstrap_samples, seed=seed)
    return found[metric]


def control_difference(kind: str, class_names, metric: str, test_set: str, rows: Sequence[dict],
                       control_rows: Sequence[dict], read: Callable[[dict, str], tuple], *,
                       bootstrap_samples: int) -> metrics.PairedDifference | None:
    """`paired_difference` of the result rows of one cell (one row per seed) against the control's
    rows of the same cell on `test_set`, pairing the seeds both have a row for on the same test
    examples (equal `metrics.<test_set>.fingerprint`); `read(row, test_set)` returns a row's
    prediction set. The bootstrap uses seed 0. None when no seed pairs up."""
    control_of = {int(r["seed"]): r for r in control_rows}
    pairs = []
    for row in sorted(rows, key=lambda r: int(r["seed"])):
        control = control_of.get(int(row["seed"]))
        mine = row["metrics"].get(test_set)
        theirs = None if control is None else control["metrics"].get(test_set)
        if mine is not None and theirs is not None and mine["fingerprint"] == theirs["fingerprint"]:
            pairs.append((row, control))
    if not pairs:
        return None
    return paired_difference(kind, class_names, metric, [read(r, test_set) for r, _ in pairs],
                             [read(c, test_set) for _, c in pairs],
                             bootstrap_samples=bootstrap_samples)
