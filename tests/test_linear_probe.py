"""The linear eval mode: a logistic-regression probe on frozen features (benchmark.harness.linear_probe),
checked against an independent scikit-learn loop, and its use by the runner."""
import dataclasses
import json
import os

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from benchmark.harness import data, linear_probe, results, runner

GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
NAMES = ("a", "b", "c")


def _multilabel(rng, n, d=6, nan_fraction=0.2):
    """Features whose first columns carry each label's signal, labels 0/1 with some nan."""
    x = rng.normal(size=(n, d))
    y = (x[:, :3] + rng.normal(scale=1.5, size=(n, 3)) > 0).astype(np.float32)
    y[rng.random((n, 3)) < nan_fraction] = np.nan
    return x * rng.uniform(0.5, 3, size=d) + rng.normal(size=d), y


def _multiclass(rng, n, d=6, noise=1.5):
    x = rng.normal(size=(n, d))
    y = np.argmax(x[:, :3] + rng.normal(scale=noise, size=(n, 3)), axis=1)
    return x * rng.uniform(0.5, 3, size=d), np.eye(3, dtype=np.float32)[y]


def _oracle(kind, train_x, train_y, val_x, val_y, grid):
    """Independent search: StandardScaler + one LogisticRegression per C (per known label),
    scored with scikit-learn's metrics; the first best C in ascending order wins."""
    scaler = StandardScaler().fit(train_x)
    xt, xv = scaler.transform(train_x), scaler.transform(val_x)
    scores, fitted = {}, {}
    for c in sorted(grid):
        if kind == "multiclass":
            model = LogisticRegression(C=c, max_iter=1000).fit(xt, np.argmax(train_y, 1))
            probs = model.predict_proba(xv)
            scores[c] = accuracy_score(np.argmax(val_y, 1), np.argmax(probs, 1))
        else:
            models, aucs = [], []
            for k in range(train_y.shape[1]):
                known = ~np.isnan(train_y[:, k])
                models.append(LogisticRegression(C=c, max_iter=1000).fit(
                    xt[known], train_y[known, k].astype(int)))
                vk = ~np.isnan(val_y[:, k])
                aucs.append(roc_auc_score(val_y[vk, k], models[-1].predict_proba(xv[vk])[:, 1]))
            model = models
            scores[c] = float(np.mean(aucs))
        fitted[c] = model
    best = max(sorted(grid), key=lambda c: scores[c])  # max keeps the first of equal scores
    return best, scores, scaler, fitted[best]


@pytest.mark.parametrize("kind, metric", [("multilabel", "mean_auc"), ("multiclass", "top1")])
def test_chosen_c_is_the_validation_argmax_of_an_independent_oracle(kind, metric):
    rng = np.random.default_rng(3)
    make = _multilabel if kind == "multilabel" else _multiclass
    (tx, ty), (vx, vy), (sx, _) = make(rng, 120), make(rng, 200), make(rng, 50)
    probe = linear_probe.fit_probe(tx, ty, vx, vy, kind=kind, class_names=NAMES, metric=metric,
                                   grid=GRID[::-1])
    best, scores, scaler, model = _oracle(kind, tx, ty, vx, vy, GRID)
    assert probe.record["C"] == best
    assert probe.record["grid"] == list(GRID)
    assert probe.record["validation"].keys() == {str(c) for c in GRID}
    for c in GRID:
        assert probe.record["validation"][str(c)] == pytest.approx(scores[c], abs=1e-9)
    assert len(set(scores.values())) > 1  # the grid matters on this data
    xs = scaler.transform(sx)
    expected = (model.predict_proba(xs) if kind == "multiclass"
                else np.stack([m.predict_proba(xs)[:, 1] for m in model], axis=1))
    np.testing.assert_allclose(probe.scores(sx), expected, atol=1e-6)


def test_nan_labels_are_ignored_per_label():
    rng = np.random.default_rng(4)
    tx, ty = _multilabel(rng, 150, nan_fraction=0.0)
    ty[:60, 0] = np.nan  # label a unknown on the first 60 examples; b and c known everywhere
    probe = linear_probe.fit_probe(tx, ty, tx, ty, kind="multilabel", class_names=NAMES,
                                   metric="mean_auc", grid=(1.0,))
    xt = StandardScaler().fit_transform(tx)
    a = LogisticRegression(C=1.0, max_iter=1000).fit(xt[60:], ty[60:, 0].astype(int))
    b = LogisticRegression(C=1.0, max_iter=1000).fit(xt, ty[:, 1].astype(int))
    scores = probe.scores(tx)
    np.testing.assert_allclose(scores[:, 0], a.predict_proba(xt)[:, 1], atol=1e-6)
    np.testing.assert_allclose(scores[:, 1], b.predict_proba(xt)[:, 1], atol=1e-6)


def test_a_single_class_label_scores_its_constant_prevalence():
    rng = np.random.default_rng(5)
    tx, ty = _multilabel(rng, 80)
    ty[:, 1] = np.where(np.isnan(ty[:, 1]), np.nan, 1.0)  # label b: only positives (and unknowns)
    ty[:, 2] = np.nan  # label c: no known training label
    vx, vy = _multilabel(rng, 40)
    probe = linear_probe.fit_probe(tx, ty, vx, vy, kind="multilabel", class_names=NAMES,
                                   metric="mean_auc", grid=GRID)
    scores = probe.scores(vx)
    assert np.all(scores[:, 1] == 1.0) and np.all(scores[:, 2] == 0.5)
    assert len(np.unique(scores[:, 0])) > 1
    assert probe.record["constant"] == ["b", "c"]

    cx, cy = _multiclass(rng, 30)
    cy[:] = np.eye(3, dtype=np.float32)[2]  # one class only
    probe = linear_probe.fit_probe(cx, cy, vx, np.eye(3)[rng.integers(0, 3, 40)], kind="multiclass",
                                   class_names=NAMES, metric="top1", grid=GRID)
    assert np.all(probe.scores(vx) == [0.0, 0.0, 1.0])
    assert probe.record["constant"] == ["c"]
    assert probe.record["C"] == min(GRID)  # every C scores the same: ties go to the smaller C


def test_a_class_absent_from_training_scores_zero():
    rng = np.random.default_rng(6)
    tx, ty = _multiclass(rng, 90)
    keep = np.argmax(ty, 1) != 1
    probe = linear_probe.fit_probe(tx[keep], ty[keep], tx, ty, kind="multiclass",
                                   class_names=NAMES, metric="top1", grid=GRID)
    scores = probe.scores(tx)
    assert np.all(scores[:, 1] == 0.0)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)


def test_two_fits_give_identical_bytes():
    rng = np.random.default_rng(7)
    (tx, ty), (vx, vy) = _multilabel(rng, 100), _multilabel(rng, 60)
    fits = [linear_probe.fit_probe(tx, ty, vx, vy, kind="multilabel", class_names=NAMES,
                                   metric="mean_auc", grid=GRID) for _ in range(2)]
    assert fits[0].scores(vx).tobytes() == fits[1].scores(vx).tobytes()
    assert json.dumps(fits[0].record) == json.dumps(fits[1].record)


def test_a_probe_on_separable_features_beats_chance():
    rng = np.random.default_rng(8)
    centres = rng.normal(scale=4.0, size=(3, 8))

    def blobs(n):
        y = rng.integers(0, 3, n)
        return centres[y] + rng.normal(size=(n, 8)), np.eye(3, dtype=np.float32)[y]

    (tx, ty), (vx, vy), (sx, sy) = blobs(60), blobs(60), blobs(200)
    probe = linear_probe.fit_probe(tx, ty, vx, vy, kind="multiclass", class_names=NAMES,
                                   metric="top1", grid=GRID)
    assert np.mean(np.argmax(probe.scores(sx), 1) == np.argmax(sy, 1)) > 0.9
    ml = linear_probe.fit_probe(tx, ty, vx, vy, kind="multilabel", class_names=NAMES,
                                metric="mean_auc", grid=GRID)
    assert np.mean([roc_auc_score(sy[:, k], ml.scores(sx)[:, k]) for k in range(3)]) > 0.9


def test_runner_computes_features_once_per_encoder_and_rows_carry_the_probe(tmp_path, monkeypatch):
    from test_run import _check_rows, _config

    calls = []
    extract = linear_probe.extract_features

    def counting(encoder, ds, **kwargs):
        calls.append(id(encoder))
        return extract(encoder, ds, **kwargs)

    monkeypatch.setattr(linear_probe, "extract_features", counting)
    cfg = _config(tmp_path, "derm", "random_init", eval_modes=("linear",),
                  label_fractions=(50.0, 100.0))
    rows = runner.run(cfg)
    assert len(rows) == 2
    # train, validation and the two test sets, once for both cells, all of one encoder
    assert len(calls) == 2 + len(cfg.task.test_sets) and len(set(calls)) == 1
    _check_rows(rows, cfg, "top1")
    for row in rows:
        results.validate_row(row, new=True)
        probe = row["linear_probe"]
        assert probe["grid"] == list(cfg.preset.finetune.probe_grid) and probe["C"] in probe["grid"]
        assert probe["metric"] == "top1" and probe["standardised"] is True
        defined = {c: v for c, v in probe["validation"].items() if v is not None}
        if defined:
            assert probe["validation"][str(probe["C"])] == max(defined.values())


def test_an_empty_validation_split_is_refused_before_pretraining(tmp_path, monkeypatch):
    from test_run import _config

    from baselines.random_init import RandomInit

    real_split = data.split_task

    def no_validation(*args, **kwargs):
        splits = real_split(*args, **kwargs)
        none = np.zeros(len(splits.validation.example_ids), bool)
        return dataclasses.replace(splits, validation=splits.validation.subset(none))

    def no_pretraining(*args, **kwargs):
        raise AssertionError("pretrained before the check")

    monkeypatch.setattr(data, "split_task", no_validation)
    monkeypatch.setattr(RandomInit, "pretrain", no_pretraining)
    cfg = _config(tmp_path, "derm", "random_init", eval_modes=("linear",))
    for modes in (("linear",), ("finetune",)):
        with pytest.raises(ValueError, match=r"^task derm: its validation split holds no patients "
                                             r"\(validation_fraction=0.1\), and fine-tuning chooses "
                                             r"its schedule and the linear probe its C there; use "
                                             r"more data$"):
            runner.run(dataclasses.replace(cfg, preset=dataclasses.replace(cfg.preset, eval_modes=modes)))
    assert not os.path.exists(os.path.join(cfg.output_dir, "results.jsonl"))


def test_unconverged_fits_are_recorded_without_warnings(monkeypatch):
    import warnings

    monkeypatch.setattr(linear_probe, "MAX_ITER", 1)
    rng = np.random.default_rng(9)
    (tx, ty), (vx, vy) = _multiclass(rng, 80), _multiclass(rng, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = linear_probe.fit_probe(tx, ty, vx, vy, kind="multiclass", class_names=NAMES,
                                       metric="top1", grid=GRID)
    assert probe.record["unconverged"] == list(GRID) and probe.record["max_iter"] == 1


def test_a_row_of_the_removed_sgd_linear_settings_cannot_be_rerun(tmp_path):
    from benchmark.board import reproduce

    with open(os.path.join(os.path.dirname(__file__), "data", "reproduce_smoke", "results.jsonl"),
              encoding="utf-8") as f:
        row = json.loads(f.readline())
    from benchmark.harness.presets import get_preset

    row["config"]["finetune"] = dict(dataclasses.asdict(get_preset("smoke").finetune), linear_steps=None,
                                     linear_learning_rate=0.5)
    with pytest.raises(ValueError, match=r"^r.jsonl:1: cannot be re-run with this code: .*"
                                         r"unexpected keyword argument 'linear_(steps|learning_rate)'"):
        reproduce.rerun_config("r.jsonl:1", row, data_dir=str(tmp_path), scratch_dir=str(tmp_path))


def test_validate_row_requires_the_probe_record_of_new_linear_rows():
    from test_results import _row

    record = {"C": 1.0, "grid": [0.1, 1.0], "validation": {"0.1": 0.6, "1.0": None},
              "metric": "mean_auc", "standardised": True, "solver": "lbfgs", "max_iter": 1000,
              "unconverged": [], "constant": [], "n_validation_examples": 10}
    results.validate_row(_row(eval_mode="linear", linear_probe=record), new=True)
    results.validate_row(_row(eval_mode="linear"), new=False)  # rows read back may predate the record
    with pytest.raises(ValueError, match="'linear_probe' must be an object with the keys"):
        results.validate_row(_row(eval_mode="linear"), new=True)
    with pytest.raises(ValueError, match="'linear_probe' must be absent from a finetune row"):
        results.validate_row(_row(linear_probe=record))
    with pytest.raises(ValueError, match="'linear_probe.C' must be one of the grid"):
        results.validate_row(_row(eval_mode="linear", linear_probe=dict(record, C=10.0)))
    with pytest.raises(ValueError, match="'linear_probe.validation' must be"):
        results.validate_row(_row(eval_mode="linear",
                                  linear_probe=dict(record, validation={"0.1": 0.6})))
