"""Metrics against scikit-learn, and the patient-level bootstrap."""
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from benchmark.harness import metrics

NAMES = ["a", "b", "c", "d"]


def _multilabel_data(rng, n=300, k=4, ignore=0.15, decimals=1):
    labels = (rng.random((n, k)) < 0.35).astype(float)
    scores = np.round(0.3 * labels + rng.random((n, k)), decimals)  # rounding creates many ties
    labels[rng.random((n, k)) < ignore] = np.nan
    return labels, scores


def _multiclass_data(rng, n=300, k=4):
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [1, 3])
def test_roc_auc_matches_sklearn_with_ties(seed, decimals):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
    labels[:2] = [0, 1]
    scores = np.round(rng.random(n) + 0.2 * labels, decimals)
    expected = roc_auc_score(labels, scores)
    assert metrics.roc_auc(labels, scores) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("decimals", [1, 3])
def test_resampled_auc_matches_sklearn_with_the_counts_as_sample_weights(decimals):
    """A bootstrap resample's AUC (patients drawn with replacement, ties in the scores) is
    scikit-learn's AUC with each example weighted by its multiplicity."""
    rng = np.random.default_rng(decimals)
    n = 200
    labels = rng.random(n) < 0.3
    scores = np.round(rng.random(n) + 0.2 * labels, decimals)
    _, patients = np.unique(rng.integers(0, 80, n), return_inverse=True)
    weights = next(metrics._resample_weights(patients, 40, 0, n))
    got = metrics._weighted_auc(labels, scores, weights)
    for w, value in zip(weights, got):
        assert value == pytest.approx(roc_auc_score(labels, scores, sample_weight=w), abs=1e-12)


def test_roc_auc_edge_cases():
    assert metrics.roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert math.isnan(metrics.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(metrics.roc_auc([], []))
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        metrics.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="equal length"):
        metrics.roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        metrics.roc_auc([0, 1], [0.1, np.nan])


@pytest.mark.parametrize("seed", range(3))
def test_multilabel_matches_sklearn_per_class_with_ignore_mask(seed):
    labels, scores = _multilabel_data(np.random.default_rng(seed))
    result = metrics.multilabel_metrics(labels, scores, NAMES)
    assert set(result) == {"mean_auc"} | {f"auc/{n}" for n in NAMES}
    expected = []
    for k, name in enumerate(NAMES):
        known = ~np.isnan(labels[:, k])
        expected.append(roc_auc_score(labels[known, k], scores[known, k]))
        assert result[f"auc/{name}"] == pytest.approx(expected[-1], abs=1e-12)
    assert result["mean_auc"] == pytest.approx(np.mean(expected), abs=1e-12)


def test_multilabel_undefined_class_is_nan_and_left_out_of_mean():
    labels, scores = _multilabel_data(np.random.default_rng(0))
    labels[:, 1] = np.where(np.isnan(labels[:, 1]), np.nan, 0.0)  # no positives left
    labels[:, 2] = np.nan  # everything ignored
    result = metrics.multilabel_metrics(labels, scores, NAMES)
    assert math.isnan(result["auc/b"]) and math.isnan(result["auc/c"])
    assert result["mean_auc"] == pytest.approx((result["auc/a"] + result["auc/d"]) / 2)
    with pytest.raises(ValueError, match="class_names"):
        metrics.multilabel_metrics(labels, scores, NAMES[:3])
    with pytest.raises(ValueError, match="0, 1 or nan"):
        metrics.multilabel_metrics(np.full((2, 1), 0.5), np.zeros((2, 1)), ["x"])


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_matches_sklearn(seed):
    labels, probs = _multiclass_data(np.random.default_rng(seed))
    result = metrics.multiclass_metrics(labels, probs, NAMES)
    assert set(result) == {"top1", "balanced_accuracy", "macro_auc"} | {f"auc/{n}" for n in NAMES}
    assert result["top1"] == pytest.approx(accuracy_score(labels, probs.argmax(axis=1)), abs=1e-12)
    assert result["macro_auc"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-12)
    for k, name in enumerate(NAMES):
        assert result[f"auc/{name}"] == pytest.approx(
            roc_auc_score(labels == k, probs[:, k]), abs=1e-12)


def test_multiclass_absent_class_excluded_from_macro_auc():
    labels, probs = _multiclass_data(np.random.default_rng(1))
    labels[labels == 2] = 0
    result = metrics.multiclass_metrics(labels, probs, NAMES)
    assert math.isnan(result["auc/c"])
    present = [roc_auc_score(labels == k, probs[:, k]) for k in (0, 1, 3)]
    assert result["macro_auc"] == pytest.approx(np.mean(present), abs=1e-12)
    with pytest.raises(ValueError, match=r"integers in \[0, 4\)"):
        metrics.multiclass_metrics(np.array([0, 4]), np.zeros((2, 4)), NAMES)


def test_bootstrap_vectorised_equals_per_resample_and_contains_point_estimate():
    rng = np.random.default_rng(0)
    labels, scores = _multilabel_data(rng, n=200)
    groups = np.array([f"p{i // 3}" for i in range(200)])
    fast = metrics.bootstrap_ci(metrics.multilabel_metric_fn(NAMES), labels, scores, groups,
                                num_samples=200, seed=3)
    slow = metrics.bootstrap_ci(lambda y, s: metrics.multilabel_metrics(y, s, NAMES), labels,
                                scores, groups, num_samples=200, seed=3)
    point = metrics.multilabel_metrics(labels, scores, NAMES)
    assert fast.keys() == slow.keys() == point.keys()
    for name in point:
        assert fast[name] == pytest.approx(slow[name], abs=1e-12)
        assert fast[name][0] <= point[name] <= fast[name][1]

    y, p = _multiclass_data(rng, n=200)
    fast = metrics.bootstrap_ci(metrics.multiclass_metric_fn(NAMES), y, p, groups, num_samples=200)
    slow = metrics.bootstrap_ci(lambda a, b: metrics.multiclass_metrics(a, b, NAMES), y, p, groups,
                                num_samples=200)
    point = metrics.multiclass_metrics(y, p, NAMES)
    for name in point:
        assert fast[name] == pytest.approx(slow[name], abs=1e-12)
        assert fast[name][0] <= point[name] <= fast[name][1]


def test_bootstrap_deterministic_per_seed_and_level_orders_intervals():
    labels, probs = _multiclass_data(np.random.default_rng(2), n=500)
    groups = [f"p{i % 170}" for i in range(500)]
    fn = metrics.multiclass_metric_fn(NAMES)
    a = metrics.bootstrap_ci(fn, labels, probs, groups, seed=1, num_samples=300)
    assert a == metrics.bootstrap_ci(fn, labels, probs, groups, seed=1, num_samples=300)
    assert a != metrics.bootstrap_ci(fn, labels, probs, groups, seed=2, num_samples=300)
    narrow = metrics.bootstrap_ci(fn, labels, probs, groups, seed=1, level=0.5,
                                  num_samples=300)
    assert a["top1"][0] < narrow["top1"][0] < narrow["top1"][1] < a["top1"][1]


def test_bootstrap_resamples_groups_not_examples():
    # 60 patients with 2 images each, plus one patient with 150 confidently misranked positives:
    # whether that patient is drawn dominates the AUC, which image-level resampling hides.
    rng = np.random.default_rng(0)
    y_small = np.repeat(rng.random(60) < 0.5, 2).astype(float)
    s_small = np.repeat(0.4 * y_small[::2] + rng.random(60), 2) + 0.01 * rng.random(120)
    labels = np.r_[y_small, np.ones(150)][:, None]
    scores = np.r_[s_small, 0.05 * rng.random(150)][:, None]
    patients = np.r_[np.repeat(np.arange(60), 2), np.full(150, 60)].astype(str)
    images = np.arange(270).astype(str)
    fn = metrics.multilabel_metric_fn(["x"])
    by_patient = metrics.bootstrap_ci(fn, labels, scores, patients)["auc/x"]
    by_image = metrics.bootstrap_ci(fn, labels, scores, images)["auc/x"]
    assert by_patient[1] - by_patient[0] > 3 * (by_image[1] - by_image[0])


def test_bootstrap_skips_undefined_resamples():
    # The only positive of class "b" belongs to one of 40 patients: most resamples lack it.
    labels = np.zeros((80, 2))
    labels[::2, 0] = 1
    labels[7, 1] = 1
    scores = np.random.default_rng(0).random((80, 2))
    groups = np.arange(80) // 2
    ci = metrics.bootstrap_ci(metrics.multilabel_metric_fn(["a", "b"]), labels, scores, groups,
                              num_samples=300)
    assert all(np.isfinite(ci["auc/b"])) and 0 <= ci["auc/b"][0] <= ci["auc/b"][1] <= 1
    labels[:, 1] = 0
    ci = metrics.bootstrap_ci(metrics.multilabel_metric_fn(["a", "b"]), labels, scores, groups,
                              num_samples=50)
    assert all(math.isnan(v) for v in ci["auc/b"])
    assert all(np.isfinite(ci["mean_auc"]))


def test_bootstrap_rejects_bad_arguments():
    fn = metrics.multiclass_metric_fn(NAMES)
    y, p = _multiclass_data(np.random.default_rng(0), n=10)
    with pytest.raises(ValueError, match="num_samples"):
        metrics.bootstrap_ci(fn, y, p, np.arange(10), num_samples=0)
    with pytest.raises(ValueError, match="level"):
        metrics.bootstrap_ci(fn, y, p, np.arange(10), level=1.0)
    with pytest.raises(ValueError, match="group_ids"):
        metrics.bootstrap_ci(fn, y, p, np.arange(9))


def test_summarise_seeds():
    values = [0.71, 0.74, 0.69]
    mean, std = metrics.summarise_seeds(values)
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.std(values, ddof=1))
    assert metrics.summarise_seeds([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        metrics.summarise_seeds([])
    with pytest.raises(ValueError, match="nan"):
        metrics.summarise_seeds([0.5, float("nan")])


def _pairwise_auc(y, s):
    """Brute-force AUC: the fraction of (positive, negative) pairs ranked right, ties one half."""
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return np.nan
    return float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))


def _paired_data(rng, n=90, patients=30, seeds=2, noise=0.3):
    """One binary test set (shuffled order) and per-seed scores of two correlated methods."""
    groups = np.array([f"p{i % patients:02d}" for i in range(n)], dtype=object)
    ids = np.array([f"img{i:03d}" for i in range(n)], dtype=object)
    labels = (rng.random(n) < 0.4).astype(float)
    shared = rng.normal(size=n) + labels  # what both methods see alike
    a = [np.round(shared + noise * rng.normal(size=n) + 0.3 * labels, 2) for _ in range(seeds)]
    b = [np.round(shared + noise * rng.normal(size=n), 2) for _ in range(seeds)]
    return ids, groups, labels[:, None], [x[:, None] for x in a], [x[:, None] for x in b]


def test_paired_difference_matches_a_brute_force_oracle_over_seeds():
    rng = np.random.default_rng(7)
    ids, groups, labels, a, b = _paired_data(rng)
    shuffle = rng.permutation(len(ids))  # sets are aligned by example id, whatever their order
    sets_a = [(ids, groups, labels, s) for s in a]
    sets_b = [(ids[shuffle], groups[shuffle], labels[shuffle], s[shuffle]) for s in b]
    got = metrics.paired_bootstrap_difference(metrics.multilabel_metric_fn(["x"]), sets_a, sets_b,
                                              num_samples=150, seed=4)["auc/x"]

    order = np.argsort(ids)  # the oracle: explicit resampled index lists, pairwise AUCs
    y, g = labels[order, 0], groups[order]
    sa, sb = [s[order, 0] for s in a], [s[order, 0] for s in b]
    patients = np.unique(g)
    draws = np.random.default_rng(4).integers(0, len(patients), size=(150, len(patients)))
    replicates = []
    for row in draws:
        idx = np.concatenate([np.flatnonzero(g == patients[p]) for p in row])
        replicates.append(np.mean([_pairwise_auc(y[idx], s[idx]) for s in sa])
                          - np.mean([_pairwise_auc(y[idx], s[idx]) for s in sb]))
    point = (np.mean([_pairwise_auc(y, s) for s in sa])
             - np.mean([_pairwise_auc(y, s) for s in sb]))
    assert got.pairs == 2
    assert got.value == pytest.approx(point, abs=1e-12)
    assert (got.ci_low, got.ci_high) == pytest.approx(
        tuple(np.quantile(replicates, [0.025, 0.975])), abs=1e-12)


def test_pairing_narrows_the_interval_when_scores_are_correlated():
    ids, groups, labels, a, b = _paired_data(np.random.default_rng(3), n=300, patients=100,
                                             seeds=1, noise=0.2)
    fn = metrics.multilabel_metric_fn(["x"])
    paired = metrics.paired_bootstrap_difference(fn, [(ids, groups, labels, a[0])],
                                                 [(ids, groups, labels, b[0])],
                                                 num_samples=300)["auc/x"]
    # Unpaired: each method on its own independent patient resample.
    _, index = np.unique(groups, return_inverse=True)
    draws = [np.random.default_rng(s).integers(0, 100, size=(300, 100)) for s in (1, 2)]
    counts = [np.stack([np.bincount(d, minlength=100)[index] for d in dr]) for dr in draws]
    unpaired = (fn.weighted(labels, a[0], counts[0].astype(float))["auc/x"]
                - fn.weighted(labels, b[0], counts[1].astype(float))["auc/x"])
    lo, hi = np.quantile(unpaired, [0.025, 0.975])
    assert paired.ci_low <= paired.value <= paired.ci_high
    assert paired.ci_high - paired.ci_low < 0.5 * (hi - lo)


@pytest.mark.parametrize("change, message", [
    ("ids", "over other examples than set 0"),
    ("labels", "other labels than set 0"),
    ("groups", "other groups"),
    ("count", "as many prediction sets"),
])
def test_paired_difference_refuses_sets_over_other_examples(change, message):
    ids, groups, labels, a, b = _paired_data(np.random.default_rng(0), n=20, patients=10,
                                             seeds=1)
    other_ids, other_groups, other_labels = ids.copy(), groups.copy(), labels.copy()
    if change == "ids":
        other_ids[3] = "img999"
    elif change == "labels":
        other_labels[3] = 1 - other_labels[3]
    elif change == "groups":
        other_groups[3] = "p99"
    sets_b = [(other_ids, other_groups, other_labels, b[0])] * (2 if change == "count" else 1)
    with pytest.raises(ValueError, match=message) as e:
        metrics.paired_bootstrap_difference(metrics.multilabel_metric_fn(["x"]),
                                            [(ids, groups, labels, a[0])], sets_b)
    assert "\n" not in str(e.value)
