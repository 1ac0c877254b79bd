"""Scoring: balanced accuracy (scikit-learn as the oracle), study-level aggregation of CheXpert
images, and the metric names each task and test set reports."""
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from benchmark.harness import metrics, scoring
from benchmark.harness.tasks import chexpert_study_id, get_task


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_accuracy_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=60)  # class 4 never occurs: left out of the mean
    probs = rng.random((60, 5))
    got = metrics.multiclass_metrics(labels, probs, list("abcde"))["balanced_accuracy"]
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):  # the case tested
        expected = balanced_accuracy_score(labels, probs.argmax(axis=1))
    assert got == pytest.approx(expected)


def test_balanced_accuracy_bootstrap_equals_per_resample_recomputation():
    rng = np.random.default_rng(3)
    labels, probs, groups = rng.integers(0, 3, 40), rng.random((40, 3)), rng.integers(0, 15, 40)
    fn = metrics.multiclass_metric_fn(["a", "b", "c"])
    fast = metrics.bootstrap_ci(fn, labels, probs, groups, num_samples=50, seed=1)
    slow = metrics.bootstrap_ci(lambda y, p: fn(y, p), labels, probs, groups, num_samples=50,
                                seed=1)
    assert fast["balanced_accuracy"] == pytest.approx(slow["balanced_accuracy"])


def test_chexpert_study_id_is_the_study_folder():
    path = "CheXpert-v1.0-small/valid/patient00561/study2/view1_frontal.jpg"
    assert chexpert_study_id(path) == "CheXpert-v1.0-small/valid/patient00561/study2"
    assert chexpert_study_id("patient1/study1/view2_lateral.jpg") == "patient1/study1"
    with pytest.raises(ValueError, match="00000017_000.png.*cannot tell its study"):
        chexpert_study_id("00000017_000.png")


def _cxr_views():
    """Five studies of two patients; study s1 has two views."""
    ids = [f"p{p}/patient{p}/study{s}/view{v}_frontal.jpg" for p, s, v in
           [(1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, 1), (2, 2, 1), (2, 3, 1)]]
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, np.nan], [0, 0]], dtype=float)
    scores = np.array([[0.2, 0.1], [0.9, 0.3], [0.4, 0.8], [0.5, 0.6], [0.7, 0.2], [0.1, 0.4]])
    groups = np.array(["1", "1", "1", "2", "2", "2"], dtype=object)
    return ids, labels, scores, groups


@pytest.mark.parametrize("how, first_row", [("max", [0.9, 0.3]), ("mean", [0.55, 0.2])])
def test_studies_aggregate_their_views_by_max_and_mean(how, first_row):
    ids, labels, scores, groups = _cxr_views()
    studies = [chexpert_study_id(i) for i in ids]
    y, s, g = scoring.aggregate_studies(studies, labels, scores, groups, how)
    assert y.shape == (5, 2) and list(g) == ["1", "1", "2", "2", "2"]
    np.testing.assert_allclose(s[0], first_row)
    np.testing.assert_allclose(s[1:], scores[2:])
    scored = scoring.score("multilabel", ["A", "B"], labels, scores, groups,
                           bootstrap_samples=20, study_ids=studies)
    assert scored["values"][f"study_{how}/auc/A"] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert scored["values"]["mean_auc"] == pytest.approx(
        metrics.multilabel_metrics(labels, scores, ["A", "B"])["mean_auc"])


@pytest.mark.parametrize("what, edit", [("labels", lambda y, g: y.__setitem__((1, 0), 0)),
                                        ("group", lambda y, g: g.__setitem__(1, "2"))])
def test_views_of_a_study_must_agree(what, edit):
    ids, labels, scores, groups = _cxr_views()
    edit(labels, groups)
    with pytest.raises(ValueError, match=f"study 'p1/patient1/study1': its images have different "
                                         f"{what}"):
        scoring.aggregate_studies([chexpert_study_id(i) for i in ids], labels, scores, groups,
                                  "max")


def test_score_task_reports_exactly_the_task_metric_names():
    cxr, derm = get_task("cxr"), get_task("derm")
    ids, labels, scores, groups = _cxr_views()
    labels = np.concatenate([labels, labels, labels[:, :1]], axis=1)
    scores = np.concatenate([scores, scores, scores[:, :1]], axis=1)
    for test_set, study in (("in_distribution", True), ("shifted", False)):
        got = scoring.score_task(cxr, test_set, ids, labels, scores, groups, bootstrap_samples=10)
        assert sorted(got["values"]) == sorted(got["ci95"]) == sorted(
            scoring.metric_names(cxr, test_set))
        assert ("study_max/mean_auc" in got["values"]) is study
    one_hot = np.eye(5)[np.arange(6) % 5]
    got = scoring.score_task(derm, "shifted", ids, one_hot, np.random.default_rng(0).random((6, 5)),
                             groups, bootstrap_samples=10)
    assert sorted(got["values"]) == sorted(scoring.metric_names(derm, "shifted"))
    assert "balanced_accuracy" in got["values"]
