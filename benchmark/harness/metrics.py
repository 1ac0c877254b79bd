"""Classification metrics and patient-level bootstrap confidence intervals.

Metric names follow the harness contract: multi-label tasks report "mean_auc" and "auc/<class>";
multi-class tasks report "top1", "balanced_accuracy" (mean per-class recall over the classes present,
the ISIC challenge metric), "macro_auc" and "auc/<class>". An AUC is nan when its class has no
positives or no negatives among the scored examples; means are taken over the classes whose AUC is
defined (nan when there is none).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

MetricFn = Callable[[np.ndarray, np.ndarray], Mapping[str, float]]

# Upper bound on resamples x examples materialised at once by `bootstrap_ci`.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve of binary `labels` (0/1) ranked by `scores`; tied scores count one
    half (the Mann-Whitney statistic, equal to scikit-learn's roc_auc_score). nan when only one
    class is present."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"roc_auc: expected 1-D labels and scores of equal length, got shapes "
                         f"{y.shape} and {s.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("roc_auc: labels must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("roc_auc: scores must be finite")
    return float(_weighted_auc(y.astype(bool), s, np.ones((1, y.size)))[0])


def _weighted_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC for each row of `weights` [B, N] (whole-number example multiplicities: ones, or a
    bootstrap resample's counts); nan where a row has no positive or no negative weight. Each
    positive counts the negative weight ranked below it plus half the weight tied with it; every
    sum is of whole or half numbers, so exact whatever its order."""
    if scores.size == 0:
        return np.full(weights.shape[0], np.nan)
    negative_scores = scores[~positive]
    order = np.argsort(negative_scores, kind="stable")
    ranked = negative_scores[order]
    cumulative = np.zeros((weights.shape[0], ranked.size + 1))  # negative weight of the first k ranked
    np.cumsum(weights[:, ~positive][:, order], axis=1, out=cumulative[:, 1:])
    s = scores[positive]
    below = cumulative[:, np.searchsorted(ranked, s, side="left")]
    not_above = cumulative[:, np.searchsorted(ranked, s, side="right")]
    w = weights[:, positive]
    n_pos = w.sum(axis=1)
    n_neg = cumulative[:, -1]
    wins = 0.5 * np.sum(w * (below + not_above), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = wins / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _check_names(class_names: Sequence[str], k: int, fn: str) -> list[str]:
    names = [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"{fn}: {k} score columns but {len(names)} class_names")
    if len(set(names)) != len(names):
        raise ValueError(f"{fn}: class_names must be unique, got {names}")
    return names


def _multilabel_arrays(labels, scores, class_names) -> tuple[np.ndarray, np.ndarray, list[str]]:
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"multilabel_metrics: expected labels and scores of shape [N, K], got "
                         f"{y.shape} and {s.shape}")
    names = _check_names(class_names, y.shape[1], "multilabel_metrics")
    known = ~np.isnan(y)
    if not np.all((y[known] == 0) | (y[known] == 1)):
        raise ValueError("multilabel_metrics: labels must be 0, 1 or nan (ignored)")
    if not np.all(np.isfinite(s)):
        raise ValueError("multilabel_metrics: scores must be finite")
    return y, s, names


def _multilabel_from_weights(y, s, names, weights) -> dict[str, np.ndarray]:
    aucs = {}
    for k, name in enumerate(names):
        known = ~np.isnan(y[:, k])
        aucs[f"auc/{name}"] = _weighted_auc(y[known, k] == 1, s[known, k], weights[:, known])
    return {"mean_auc": _nanmean_rows(aucs), **aucs}


def multilabel_metrics(labels, scores, class_names: Sequence[str]) -> dict[str, float]:
    """Per-class AUC and their mean for multi-label `labels` [N, K] (0/1, nan = ignored for that
    class) and `scores` [N, K]."""
    y, s, names = _multilabel_arrays(labels, scores, class_names)
    return _scalars(_multilabel_from_weights(y, s, names, np.ones((1, y.shape[0]))))


def _multiclass_arrays(labels, probs, class_names) -> tuple[np.ndarray, np.ndarray, list[str]]:
    y = np.asarray(labels)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"multiclass_metrics: expected labels [N] and probs [N, K], got "
                         f"{y.shape} and {p.shape}")
    names = _check_names(class_names, p.shape[1], "multiclass_metrics")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"multiclass_metrics: labels must be integers in [0, {p.shape[1]})")
    if not np.all(np.isfinite(p)):
        raise ValueError("multiclass_metrics: probs must be finite")
    return y.astype(np.int64), p, names


def _multiclass_from_weights(y, p, names, weights) -> dict[str, np.ndarray]:
    correct = (np.argmax(p, axis=1) == y).astype(np.float64)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        top1 = np.where(total > 0, weights @ correct / total, np.nan)
    recalls = {}
    for k, name in enumerate(names):
        members = (y == k).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls[name] = weights @ (members * correct) / (weights @ members)
    aucs = {f"auc/{name}": _weighted_auc(y == k, p[:, k], weights) for k, name in enumerate(names)}
    return {"top1": top1, "balanced_accuracy": _nanmean_rows(recalls),
            "macro_auc": _nanmean_rows(aucs), **aucs}


def multiclass_metrics(labels, probs, class_names: Sequence[str]) -> dict[str, float]:
    """Top-1 accuracy, balanced accuracy (mean recall over the classes present), one-vs-rest AUC
    per class and their mean over the classes present, for integer `labels` [N] and class scores
    `probs` [N, K]."""
    y, p, names = _multiclass_arrays(labels, probs, class_names)
    return _scalars(_multiclass_from_weights(y, p, names, np.ones((1, y.shape[0]))))


def _nanmean_rows(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    stacked = np.stack(list(columns.values()), axis=1)
    defined = ~np.isnan(stacked)
    count = defined.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(defined, stacked, 0.0).sum(axis=1) / count, np.nan)


def _scalars(batched: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {name: float(values[0]) for name, values in batched.items()}


def bootstrap_ci(metric_fn: MetricFn, labels, scores, group_ids, *, num_samples: int = 1000,
                 seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile confidence intervals for every metric `metric_fn(labels, scores)` returns,
    resampling groups (patients) with replacement so that all examples of a drawn group enter
    together. Resamples where a metric is undefined (nan) are skipped for that metric; a metric
    undefined in every resample gets (nan, nan).

    A `metric_fn` with a `weighted(labels, scores, weights [B, N]) -> {name: [B]}` method (see
    `multilabel_metric_fn`, `multiclass_metric_fn`) is evaluated on all resamples at once; any other
    is called once per resample on the resampled examples.
    """
    if num_samples < 1:
        raise ValueError(f"bootstrap_ci: num_samples must be >= 1, got {num_samples}")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level}")
    groups = np.asarray(group_ids)
    n = len(groups)
    if groups.ndim != 1 or n == 0 or len(labels) != n or len(scores) != n:
        raise ValueError(f"bootstrap_ci: expected {n} > 0 labels, scores and group_ids, got "
                         f"{len(labels)}, {len(scores)} and {n}")
    _, group_index = np.unique(groups, return_inverse=True)
    samples: dict[str, list[np.ndarray]] = {}
    for weights in _resample_weights(group_index, num_samples, seed, n):
        for name, v in _resampled(metric_fn, labels, scores, weights).items():
            samples.setdefault(name, []).append(v)
    return {name: _percentile_interval(np.concatenate(chunks), level)
            for name, chunks in samples.items()}


def _resample_weights(group_index: np.ndarray, num_samples: int, seed: int, n: int):
    """Example multiplicities [B, N] of the bootstrap resamples, in chunks: resample b draws
    `num_groups` groups with replacement, row b of
    `np.random.default_rng(seed).integers(0, num_groups, size=(num_samples, num_groups))`
    (groups numbered in sorted order of their ids)."""
    num_groups = int(group_index.max()) + 1
    draws = np.random.default_rng(seed).integers(0, num_groups, size=(num_samples, num_groups))
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    for start in range(0, num_samples, chunk):
        group_counts = _row_bincount(draws[start:start + chunk], num_groups)
        yield group_counts[:, group_index].astype(np.float64)


def _resampled(metric_fn: MetricFn, labels, scores, weights: np.ndarray) -> dict[str, np.ndarray]:
    """`metric_fn` on each resample (row of `weights`), vectorised when it can be."""
    weighted = getattr(metric_fn, "weighted", None)
    if weighted is not None:
        return weighted(labels, scores, weights)
    return _per_resample(metric_fn, labels, scores, weights)


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the defined (non-nan) `values`; (nan, nan) when there is none."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """A metric's difference between two methods scored on the same examples."""

    value: float  # mean over pairs of method a's metric - mean over pairs of method b's
    ci_low: float
    ci_high: float
    pairs: int  # number of (a, b) prediction-set pairs (seeds) averaged


def paired_bootstrap_difference(metric_fn: MetricFn, sets_a: Sequence, sets_b: Sequence, *,
                                num_samples: int = 1000, seed: int = 0, level: float = 0.95
                                ) -> dict[str, PairedDifference]:
    """Difference a - b of every metric `metric_fn(labels, scores)` returns, with a paired
    patient-level percentile bootstrap CI, for prediction sets `(example_ids, group_ids, labels,
    scores)` where `sets_a[i]` and `sets_b[i]` are one pair (e.g. one seed of each method).

    Every set must hold the same examples (ids), with the same labels and groups; they are
    aligned by example id. The point difference is the mean of a's metric over the pairs minus
    the mean of b's. Each bootstrap replicate draws patients (groups) with replacement ONCE (as
    `bootstrap_ci` draws them for the same `seed`) and evaluates every set of both methods on that
    same resample, so the CI covers the uncertainty from the finite test sample, with what the two
    methods get right or wrong on the same patients cancelling out; it does not cover the spread
    between seeds (report that separately). A replicate where a metric is undefined for any set
    is skipped for that metric. Raises ValueError (one line) when the sets are not over the same
    examples and labels, or when the numbers of pairs differ or are zero."""
    if num_samples < 1:
        raise ValueError(f"paired_bootstrap_difference: num_samples must be >= 1, got {num_samples}")
    if not 0 < level < 1:
        raise ValueError(f"paired_bootstrap_difference: level must be in (0, 1), got {level}")
    if len(sets_a) != len(sets_b) or not sets_a:
        raise ValueError(f"paired_bootstrap_difference: expected as many prediction sets of a as "
                         f"of b, at least one, got {len(sets_a)} and {len(sets_b)}")
    aligned = [_aligned(s) for s in (*sets_a, *sets_b)]
    ids, groups, labels, _ = aligned[0]
    for i, (other_ids, other_groups, other_labels, _) in enumerate(aligned[1:], start=1):
        which = f"prediction set {i} ({'a' if i < len(sets_a) else 'b'})"
        if not np.array_equal(other_ids, ids):
            missing = sorted(set(ids) ^ set(other_ids))
            raise ValueError(f"paired_bootstrap_difference: {which} is over other examples than "
                             f"set 0 (e.g. {missing[0] if missing else 'another count'!s}); a "
                             "paired difference needs the same test examples")
        if not _same_labels(other_labels, labels):
            raise ValueError(f"paired_bootstrap_difference: {which} has other labels than set 0 "
                             "for the same example ids; a paired difference needs the same test "
                             "set")
        if not np.array_equal(other_groups, groups):
            raise ValueError(f"paired_bootstrap_difference: {which} puts the same examples in other "
                             "groups (patients) than set 0")
    scores_a = [s for _, _, _, s in aligned[:len(sets_a)]]
    scores_b = [s for _, _, _, s in aligned[len(sets_a):]]

    def mean_difference(weights):
        per_set = [_resampled(metric_fn, labels, s, weights) for s in (*scores_a, *scores_b)]
        return {name: np.mean([v[name] for v in per_set[:len(scores_a)]], axis=0)
                - np.mean([v[name] for v in per_set[len(scores_a):]], axis=0)
                for name in per_set[0]}

    point = mean_difference(np.ones((1, len(ids))))
    _, group_index = np.unique(groups, return_inverse=True)
    samples: dict[str, list[np.ndarray]] = {}
    for weights in _resample_weights(group_index, num_samples, seed, len(ids)):
        for name, v in mean_difference(weights).items():
            samples.setdefault(name, []).append(v)
    return {name: PairedDifference(float(point[name][0]),
                                   *_percentile_interval(np.concatenate(chunks), level),
                                   pairs=len(scores_a))
            for name, chunks in samples.items()}


def _aligned(prediction_set) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(example ids, group ids, labels, scores) of a prediction set, sorted by example id."""
    example_ids, group_ids, labels, scores = prediction_set
    ids = np.asarray([str(x) for x in example_ids], dtype=object)
    n = len(ids)
    if len(group_ids) != n or len(labels) != n or len(scores) != n or n == 0:
        raise ValueError(f"paired_bootstrap_difference: expected {n} > 0 group ids, labels and "
                         f"scores, got {len(group_ids)}, {len(labels)} and {len(scores)}")
    if len(set(ids)) != n:
        raise ValueError("paired_bootstrap_difference: example ids must be unique within a set")
    order = np.argsort(ids, kind="stable")
    groups = np.asarray([str(g) for g in group_ids], dtype=object)
    return ids[order], groups[order], np.asarray(labels)[order], np.asarray(scores)[order]


def _same_labels(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return bool(np.array_equal(a.astype(np.float64), b.astype(np.float64), equal_nan=True))
    return bool(np.array_equal(a, b))


def _row_bincount(draws: np.ndarray, num_groups: int) -> np.ndarray:
    """Counts [B, G] of each group among each row of draws [B, G]."""
    rows = draws.shape[0]
    flat = draws + num_groups * np.arange(rows)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * num_groups).reshape(rows, num_groups)


def _per_resample(metric_fn: MetricFn, labels, scores,
                  weights: np.ndarray) -> dict[str, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores)
    example_index = np.arange(y.shape[0])
    rows = [metric_fn(y[idx], s[idx])
            for idx in (np.repeat(example_index, w.astype(np.int64)) for w in weights)]
    return {name: np.array([float(r[name]) for r in rows]) for name in rows[0]}


def summarise_seeds(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) across seeds."""
    v = pd.Series(values, dtype=np.float64)
    if v.empty:
        raise ValueError("summarise_seeds: expected at least one value")
    if v.isna().any():
        raise ValueError(f"summarise_seeds: values must not be nan, got {list(v)}")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


class _BoundMetrics:
    """`multilabel_metrics` or `multiclass_metrics` bound to class names, with a vectorised form
    for example multiplicities."""

    def __init__(self, multilabel: bool, class_names: Sequence[str]):
        self._multilabel = multilabel
        self._class_names = tuple(class_names)

    def __call__(self, labels, scores) -> dict[str, float]:
        if self._multilabel:
            return multilabel_metrics(labels, scores, self._class_names)
        return multiclass_metrics(labels, scores, self._class_names)

    def weighted(self, labels, scores, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics for each row of `weights` [B, N], as arrays [B]."""
        if self._multilabel:
            y, s, names = _multilabel_arrays(labels, scores, self._class_names)
            return _multilabel_from_weights(y, s, names, weights)
        y, p, names = _multiclass_arrays(labels, scores, self._class_names)
        return _multiclass_from_weights(y, p, names, weights)


def multilabel_metric_fn(class_names: Sequence[str]) -> MetricFn:
    """`multilabel_metrics` bound to `class_names`, vectorised under `bootstrap_ci`."""
    return _BoundMetrics(True, class_names)


def multiclass_metric_fn(class_names: Sequence[str]) -> MetricFn:
    """`multiclass_metrics` bound to `class_names`, vectorised under `bootstrap_ci`."""
    return _BoundMetrics(False, class_names)


def metric_value(kind: str, metric: str, labels: np.ndarray, scores: np.ndarray, class_names) -> float:
    """One metric of a "multilabel" (labels [N, K] 0/1/nan) or "multiclass" (one-hot labels [N, K])
    prediction set with scores [N, K]; nan when undefined."""
    if kind == "multiclass":
        return multiclass_metrics(np.argmax(labels, axis=1), scores, class_names)[metric]
    return multilabel_metrics(labels, scores, class_names)[metric]
