"""Linear evaluation of a frozen encoder: an L2-regularised logistic regression on its features
(the linear-probe protocol of VTAB and CLIP). This is the `linear` eval mode.

Features (`extract_features`): the encoder's output, in inference mode (`training=False`), on the
centre view (`baselines.augment.eval_view`, the view `finetune.predict` scores) of every example of
a dataset. The runner computes them once per encoder and run for the task's training split, its
validation split and each test set, and every linear cell of the run reuses them.

One cell (`fit_probe`):
- Standardisation: each feature is centred and scaled by its mean and standard deviation over the
  cell's training examples (a feature constant over them keeps scale 1); the same affine map is
  applied to validation and test features.
- Model: scikit-learn's `LogisticRegression` with its L2 penalty, solver L-BFGS, at most `MAX_ITER`
  iterations, tolerance `TOL`, intercept unpenalised. `C` is scikit-learn's inverse regularisation
  strength: the objective is the log-loss summed over the training examples plus ||w||^2 / (2 C).
  Multi-class tasks: one multinomial (softmax) model over the classes present in the training
  examples (a class absent from them scores 0; with exactly two classes present scikit-learn fits
  the equivalent binary model). Multi-label tasks: one binary model per label, fitted on the
  examples whose label is known (not nan). C values at which a fit stopped at `MAX_ITER` are listed
  in `Probe.record["unconverged"]` (no warning is printed).
- A label whose known training labels are all one class (or that has none), and a multi-class
  training set with a single class, get a constant score instead of a model (a logistic regression
  is undefined there): the class frequencies among the training labels, i.e. 1 for the class present
  and 0 otherwise (0.5 for a label with no known training label). `Probe.record["constant"]` names them.
- Choice of C: for each C of the grid (the preset's `FinetuneSettings.probe_grid`) the model fitted
  on the cell's training examples scores the task's patient-disjoint validation split with the
  task's primary metric as `benchmark.harness.metrics` computes it (mean AUC over the labels whose AUC is
  defined, or top-1); the best C wins, ties (and undefined scores) going to the smaller C, the
  stronger regularisation. The model fitted with it scores the test sets.
- Scores are probabilities: the sigmoid of each label's model, or the softmax over classes.

Everything is deterministic: L-BFGS uses no random state, and fitting and scoring run on one
BLAS/OpenMP thread (`threadpoolctl`), so the same features, labels and grid give byte-identical
scores whatever the number of cores (one thread is also several times faster at these sizes than
threads competing for a few shared cores).
"""
from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np
import tensorflow as tf
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from baselines import augment
from benchmark.harness import inference, metrics

SOLVER = "lbfgs"
MAX_ITER = 1000
TOL = 1e-4


@dataclasses.dataclass(frozen=True)
class Features:
    """Frozen-encoder features of a set of examples, sorted by example id."""

    example_id: np.ndarray  # str [N]
    group_id: np.ndarray  # str [N]
    label: np.ndarray  # float32 [N, K]: 0/1/nan (multi-label) or one-hot (multi-class)
    x: np.ndarray  # float64 [N, D]

    def subset(self, example_ids) -> "Features":
        """The examples whose id is in `example_ids`, in this order."""
        keep = np.isin(self.example_id, np.asarray(example_ids))
        return Features(self.example_id[keep], self.group_id[keep], self.label[keep], self.x[keep])


def extract_features(encoder: keras.Model, ds: tf.data.Dataset, *, image_size: int,
                     batch_size: int = 128) -> Features:
    """The encoder's features (inference mode: `inference.infer`) of the centre view of every
    {"image", "label", "example_id", "group_id"} example of `ds`."""

    def view(ex):
        return {**ex, "image": augment.eval_view(ex["image"], image_size)}

    ids, groups, labels, xs = [], [], [], []
    for batch in ds.map(view, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2):
        xs.append(np.asarray(inference.infer(encoder, batch["image"]), dtype=np.float64))
        labels.append(batch["label"].numpy())
        ids += [x.decode() for x in batch["example_id"].numpy()]
        groups += [x.decode() for x in batch["group_id"].numpy()]
    order = np.argsort(ids, kind="stable")
    return Features(np.array(ids)[order], np.array(groups)[order],
                    np.concatenate(labels)[order], np.concatenate(xs)[order])


@dataclasses.dataclass(frozen=True)
class Probe:
    """A fitted probe: `scores(x)` of raw (unstandardised) features, and the row's record of how
    it was chosen."""

    kind: str
    num_classes: int
    mean: np.ndarray
    scale: np.ndarray
    heads: tuple  # multi-label: per label a LogisticRegression or a constant; multi-class: one
    record: dict

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Probabilities [N, K] for features `x` [N, D]."""
        with threadpool_limits(1):
            return _head_scores(self.heads, (np.asarray(x, np.float64) - self.mean) / self.scale,
                                self.kind, self.num_classes)


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    model = LogisticRegression(C=c, solver=SOLVER, max_iter=MAX_ITER, tol=TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded as record["unconverged"]
        return model.fit(x, y)


def _fit_heads(x: np.ndarray, y: np.ndarray, kind: str, c: float) -> tuple:
    """One LogisticRegression per label (multi-label) or one in all (multi-class); a constant
    score vector where the training labels hold a single class."""
    if kind == "multiclass":
        classes = np.argmax(y, axis=1)
        if len(np.unique(classes)) < 2:
            return (np.bincount(classes, minlength=y.shape[1]) / len(classes),)
        return (_fit(x, classes, c),)
    heads = []
    for k in range(y.shape[1]):
        known = ~np.isnan(y[:, k])
        target = y[known, k].astype(np.int64)
        if len(np.unique(target)) < 2:
            heads.append(float(target.mean()) if target.size else 0.5)
        else:
            heads.append(_fit(x[known], target, c))
    return tuple(heads)


def _head_scores(heads: tuple, x: np.ndarray, kind: str, num_classes: int) -> np.ndarray:
    if kind == "multiclass":
        (head,) = heads
        if isinstance(head, LogisticRegression):
            out = np.zeros((len(x), num_classes))
            out[:, head.classes_] = head.predict_proba(x)
            return out
        return np.tile(head, (len(x), 1))
    return np.stack([head.predict_proba(x)[:, 1] if isinstance(head, LogisticRegression)
                     else np.full(len(x), head) for head in heads], axis=1)


def _search(xt, train_y, xv, val_y, kind, class_names, metric, grid):
    """(validation score per C, C values that hit MAX_ITER, chosen C, its heads) over `grid`."""
    validation, unconverged = {}, []
    best = best_score = None
    for c in grid:
        heads = _fit_heads(xt, train_y, kind, c)
        if any(isinstance(h, LogisticRegression) and np.any(h.n_iter_ >= MAX_ITER) for h in heads):
            unconverged.append(c)
        scores = _head_scores(heads, xv, kind, train_y.shape[1])
        score = metrics.metric_value(kind, metric, val_y, scores, class_names)
        validation[str(c)] = None if np.isnan(score) else float(score)
        if best is None or (not np.isnan(score) and (np.isnan(best_score) or score > best_score)):
            best, best_score = (c, heads), score
    return validation, unconverged, *best


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, *,
              kind: str, class_names, metric: str, grid) -> Probe:
    """Fits the probe of one cell (see the module doc): features [N, D] and labels [N, K] (0/1/nan
    for `kind` "multilabel", one-hot for "multiclass") of the training and validation examples,
    the task's primary `metric` and the grid of C values."""
    if kind not in ("multilabel", "multiclass"):
        raise ValueError(f"unknown task kind {kind!r}; expected 'multilabel' or 'multiclass'")
    grid = sorted(float(c) for c in grid)
    if not grid or any(not c > 0 for c in grid) or len(set(grid)) != len(grid):
        raise ValueError(f"probe grid {grid}: expected distinct C values > 0")
    train_x = np.asarray(train_x, np.float64)
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    xt = (train_x - mean) / scale
    xv = (np.asarray(val_x, np.float64) - mean) / scale
    num_classes = train_y.shape[1]
    with threadpool_limits(1):
        validation, unconverged, chosen, heads = _search(xt, train_y, xv, val_y, kind, class_names,
                                                         metric, grid)
    names = [str(n) for n in class_names]
    constant = [names[k] for k, h in enumerate(heads) if not isinstance(h, LogisticRegression)]
    if kind == "multiclass" and constant:
        constant = [names[int(np.argmax(heads[0]))]]
    record = {"C": chosen, "grid": grid, "validation": validation, "metric": metric,
              "standardised": True, "solver": SOLVER, "max_iter": MAX_ITER,
              "unconverged": unconverged, "constant": constant,
              "n_validation_examples": int(len(val_y))}
    return Probe(kind, num_classes, mean, scale, heads, record)
