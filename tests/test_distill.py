"""The `distill` eval mode (benchmark.harness.distill): the fine-tuned teacher labels every
training image, a student learns from those soft labels, chosen on validation like fine-tuning;
unlabelled patients' labels are never read; rows record the teacher; boards compare with it."""
import copy
import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmark.board import leaderboard, lines, reproduce
from benchmark.harness import data, distill, results, runner
from benchmark.harness.presets import DistillSettings, get_preset
from test_results import HEX, SELECTION, _row

K = 3


def _loss(kind, y_true, y_pred, temperature=1.0, label_weight=0.0):
    loss = distill.DistillationLoss(kind)
    loss.set(distill.DistillPolicy(steps=1, learning_rate=0.1, batch_size=1, warmup_steps=0,
                                   temperature=temperature, label_weight=label_weight))
    return float(loss(np.asarray(y_true, np.float32), np.asarray(y_pred, np.float32)))


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _bce(p, z):
    return np.maximum(z, 0) - z * p + np.log1p(np.exp(-np.abs(z)))


RNG = np.random.default_rng(0)
TEACHER = RNG.normal(size=(6, K)).astype(np.float32) * 3
STUDENT = RNG.normal(size=(6, K)).astype(np.float32)
ONE_HOT = np.eye(K, dtype=np.float32)[[0, 2, 1, 0, 1, 2]]
LABELLED = np.array([True, False, True, False, False, True])


def _packed(labels):
    return np.concatenate([TEACHER, np.where(LABELLED[:, None], labels, np.nan)], axis=1)


def test_the_distillation_loss_is_the_cross_entropy_against_the_tempered_teacher():
    for t in (0.5, 1.0, 4.0):
        p = np.exp(_log_softmax(TEACHER / t))
        expected = np.mean(-(p * _log_softmax(STUDENT / t)).sum(-1))
        assert _loss("multiclass", _packed(ONE_HOT), STUDENT, t) == pytest.approx(expected, rel=1e-5)
        q = 1 / (1 + np.exp(-TEACHER / t))
        expected = np.mean(_bce(q, STUDENT / t).mean(-1))
        assert _loss("multilabel", _packed(ONE_HOT), STUDENT, t) == pytest.approx(expected, rel=1e-5)


def test_temperature_extremes_give_the_teachers_decisions_or_nothing():
    cold = distill.soft_targets("multiclass", TEACHER, 1e-4).numpy()
    np.testing.assert_allclose(cold, np.eye(K)[TEACHER.argmax(-1)], atol=1e-6)
    hot = distill.soft_targets("multiclass", TEACHER, 1e4).numpy()
    np.testing.assert_allclose(hot, np.full_like(hot, 1 / K), atol=1e-3)
    cold = distill.soft_targets("multilabel", TEACHER, 1e-4).numpy()
    np.testing.assert_array_equal(cold, (TEACHER > 0).astype(np.float32))
    hot = distill.soft_targets("multilabel", TEACHER, 1e4).numpy()
    np.testing.assert_allclose(hot, 0.5, atol=1e-3)


def test_label_weight_zero_reads_no_label_and_one_ignores_the_teacher():
    other = np.eye(K, dtype=np.float32)[[1, 1, 0, 2, 2, 0]]
    for kind in ("multiclass", "multilabel"):
        assert _loss(kind, _packed(ONE_HOT), STUDENT, 2.0, 0.0) == _loss(kind, _packed(other), STUDENT, 2.0, 0.0)
        shuffled = _packed(ONE_HOT)
        shuffled[:, :K] = RNG.normal(size=(6, K))
        assert _loss(kind, shuffled, STUDENT, 2.0, 1.0) == pytest.approx(
            _loss(kind, _packed(ONE_HOT), STUDENT, 2.0, 1.0), rel=1e-6)
    # w = 1: the mean supervised loss over the labelled images (unlabelled ones add nothing).
    expected = np.mean(-(ONE_HOT * _log_softmax(STUDENT)).sum(-1)[LABELLED])
    assert _loss("multiclass", _packed(ONE_HOT), STUDENT, 2.0, 1.0) == pytest.approx(expected, rel=1e-5)
    expected = np.mean(_bce(ONE_HOT, STUDENT).mean(-1)[LABELLED])
    assert _loss("multilabel", _packed(ONE_HOT), STUDENT, 2.0, 1.0) == pytest.approx(expected, rel=1e-5)


def test_a_student_learns_to_match_its_teacher_on_a_toy_problem():
    """A linear student distilled from a fixed linear teacher on unlabelled points agrees with it."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(1).normal(size=(512, 2)).astype(np.float32)
    teacher_logits = x @ np.array([[3.0, -2.0, 0.5], [1.0, 2.5, -3.0]], np.float32)
    targets = np.concatenate([teacher_logits, np.full_like(teacher_logits, np.nan)], axis=1)
    student = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    student.compile(optimizer=keras.optimizers.Adam(0.05), loss=distill.DistillationLoss("multiclass"))
    student.fit(x, targets, batch_size=64, epochs=40, verbose=0)
    agreement = np.mean(student.predict(x, verbose=0).argmax(-1) == teacher_logits.argmax(-1))
    assert agreement > 0.97


def test_the_grid_is_lengths_times_rates_times_temperatures_times_weights():
    settings = DistillSettings(steps=100, batch_size=10, learning_rates=(0.1, 0.3),
                               temperatures=(1.0, 2.0), label_weights=(0.0, 0.5),
                               length_scales=(0.5, 1.0), epochs=2, min_steps=5)
    grid = distill.distill_grid(settings, 200)  # 2 passes over 200 images: 40 steps
    assert [(p.steps, p.learning_rate, p.temperature, p.label_weight) for p in grid] == [
        (s, lr, t, w) for s in (20, 40) for lr in (0.1, 0.3) for t in (1.0, 2.0) for w in (0.0, 0.5)]
    assert all(p.batch_size == 10 and p.decay_boundaries for p in grid)
    cpu = get_preset("cpu").distill
    assert [(p.steps, p.temperature) for p in distill.distill_grid(cpu, 1000)] == [(150, 1.0), (150, 2.0)]
    for field, value in [("temperatures", (0.0,)), ("label_weights", (1.5,)),
                         ("learning_rates", ()), ("eval_points", 0)]:
        with pytest.raises(ValueError, match=rf"^DistillSettings.{field}="):
            dataclasses.replace(cpu, **{field: value})


def test_eval_modes_name_their_student():
    assert distill.student_backbone("distill") is None
    assert distill.mode_name(distill.student_backbone("distill:resnet_v1-18x0.25")) == "distill:resnet_v1-18x0.25"
    assert distill.mode_name(distill.student_backbone("distill:bit-50x1")) == "distill:bit-50"
    with pytest.raises(ValueError, match=r"^eval mode distill:resnet_v1-12: resnet_v1 depth=12: expected one of"):
        distill.student_backbone("distill:resnet_v1-12")
    assert results.eval_mode_problem("distill:botnet-50x0.25-small") is None
    assert results.eval_mode_problem("distil") is not None
    with pytest.raises(ValueError, match=r"^eval mode 'probe': expected one of"):
        runner._check_grid(dataclasses.replace(get_preset("smoke"), eval_modes=("probe",)))


def test_student_examples_never_read_an_unlabelled_label():
    """The student's examples are the same whatever the labels of the unlabelled images are."""
    ids = np.array([f"p{i}/img" for i in range(6)])
    images = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)

    def examples(labels):
        ds = tf.data.Dataset.from_tensor_slices({"image": images, "example_id": ids, "label": labels,
                                                 "group_id": ids})
        out = distill.student_examples(ds, ids, TEACHER, ids[LABELLED], ONE_HOT[LABELLED])
        return [(e["image"], e["label"]) for e in out.as_numpy_iterator()]

    garbage = ONE_HOT.copy()
    garbage[~LABELLED] = np.nan  # and another kind of garbage below
    first, second = examples(ONE_HOT), examples(garbage)
    third = examples(np.where(LABELLED[:, None], ONE_HOT, 7.0).astype(np.float32))
    for a, b, c in zip(first, second, third):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[1], c[1])
    assert np.isnan(first[1][1][K:]).all() and not np.isnan(first[0][1][K:]).any()
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of order"):
        list(distill.student_examples(
            tf.data.Dataset.from_tensor_slices({"image": images, "example_id": ids[::-1]}),
            ids, TEACHER, ids[LABELLED], ONE_HOT[LABELLED]).as_numpy_iterator())


def _distill_row(**changes):
    teacher = {"cell": {"task": "cxr", "method": "simclr", "preset": "cpu", "eval_mode": "finetune",
                        "label_fraction": 0.1, "seed": 0},
               "backbone": {"family": "resnet_v1", "depth": 18, "width": 0.25}, "weights_sha256": HEX,
               "validation": 0.6}
    selection = copy.deepcopy(SELECTION)
    for s in selection["schedules"]:
        s.update(temperature=1.0, label_weight=0.0)
    record = {"teacher": teacher, "student": {"backbone": teacher["backbone"], "init": "x"},
              "n_images": 50, "n_labelled_images": 5, "n_unlabelled_images": 45,
              "selection": selection}
    row = {k: v for k, v in _row(eval_mode="distill").items() if k != "finetune_selection"}
    row["distillation"] = record
    row.update(changes)
    return row


def test_validate_row_requires_the_distillation_record():
    results.validate_row(_distill_row())
    with pytest.raises(ValueError, match=r"^result row: 'distillation' must be an object with the keys"):
        results.validate_row(_distill_row(distillation=None))
    bad = _distill_row()
    bad["distillation"]["n_unlabelled_images"] = 44
    with pytest.raises(ValueError, match=r"^result row: 'distillation.n_images' must be counts"):
        results.validate_row(bad)
    bad = _distill_row()
    bad["distillation"]["teacher"]["cell"]["eval_mode"] = "linear"
    with pytest.raises(ValueError, match=r"^result row: 'distillation.teacher' must be"):
        results.validate_row(bad)
    bad = _distill_row()
    del bad["distillation"]["selection"]["schedules"][0]["temperature"]
    with pytest.raises(ValueError, match=r"^result row: 'distillation.selection.schedules.0' must be"):
        results.validate_row(bad)
    with pytest.raises(ValueError, match=r"^result row: 'distillation' must be absent from a finetune"):
        results.validate_row(_distill_row(eval_mode="finetune", finetune_selection=SELECTION))


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, smoke_data_dir):
    """One smoke cxr run (multilabel) with finetune and distill cells, one seed, under
    MirroredStrategy over the 2 logical CPUs (conftest.py), of a saved encoder named "enc" (the
    smoke backbone, random weights: no pretraining, which plays no part in distillation)."""
    from baselines.backbones import build_encoder
    from test_run import _config

    tmp = tmp_path_factory.mktemp("distill")
    keras.utils.set_random_seed(0)
    encoder = tmp / "encoder.keras"
    build_encoder(get_preset("smoke").backbone).save(encoder)
    cfg = _config(tmp, "cxr", f"saved:{encoder}", data_dir=smoke_data_dir, label_fractions=(50.0,),
                  seeds=(1,), eval_modes=("finetune", "distill"))
    cfg = dataclasses.replace(cfg, control=None, strategy="mirrored", name="enc")
    rows = runner.run(cfg)
    return cfg, rows


def test_a_distill_row_records_its_teacher_and_the_unlabelled_images(distilled):
    cfg, rows = distilled
    by = {(r["eval_mode"], r["seed"]): r for r in rows}
    assert set(by) == {(m, 1) for m in ("finetune", "distill")}
    for seed in (1,):
        row, teacher = by[("distill", seed)], by[("finetune", seed)]
        results.validate_row(row)
        record = row["distillation"]
        assert record["teacher"]["cell"] == {k: teacher[k] for k in results.CELL_KEY_FIELDS}
        assert record["teacher"]["validation"] == teacher["finetune_selection"]["chosen"]["validation"]
        assert record["teacher"]["backbone"] == record["student"]["backbone"] == teacher["config"]["backbone"]
        assert record["n_labelled_images"] == row["n_train_examples"] == teacher["n_train_examples"]
        assert record["n_unlabelled_images"] > 0
        assert row["config"]["strategy"] == "mirrored"
        assert [(s["temperature"], s["label_weight"]) for s in record["selection"]["schedules"]] == [(1.0, 0.0)]
        saved, _ = distill.load_teacher(runner._teacher_path(cfg, 50.0, seed))
        assert distill.weights_digest(saved) == record["teacher"]["weights_sha256"]


def test_a_distill_row_reproduces_without_reading_unlabelled_labels(distilled, monkeypatch, tmp_path):
    """`benchmark.reproduce` reruns a distill cell alone (its teacher fine-tuned again in the
    process) with every unlabelled training label replaced: the prediction files are
    byte-identical, so the run is deterministic and no unlabelled label played a part."""
    cfg, rows = distilled
    [row] = [r for r in rows if r["eval_mode"] == "distill" and r["seed"] == 1]
    labelled = set(runner.train_subset(cfg.task, data.split_task(
        data.prepare(cfg.task, cfg.data), cfg.task,
        validation_fraction=cfg.task.options.validation_fraction,
        test_fraction=cfg.task.options.test_fraction), 50.0, 1)[0].example_ids)
    real_load = data.load_split

    def poisoned(*args, **kwargs):
        split = real_load(*args, **kwargs)
        if split.arrays is not None and len(set(split.arrays["example_id"]) & labelled):
            unlabelled = ~np.isin(split.arrays["example_id"], sorted(labelled))
            assert unlabelled.any()
            split.arrays["label"][unlabelled] = 1.0 - np.nan_to_num(split.arrays["label"][unlabelled])
        return split

    monkeypatch.setattr(data, "load_split", poisoned)
    rerun = reproduce.rerun_config("r.jsonl:1", row, data_dir=cfg.data.data_dir,
                                   scratch_dir=str(tmp_path / "rerun"), progress=False,
                                   method_spec=cfg.method)
    [again] = [r for r in runner.run(rerun) if r["eval_mode"] == "distill"]
    assert not os.path.exists(os.path.join(rerun.output_dir, "results.jsonl.lock"))
    assert [c.identical for c in reproduce.compare(cfg.output_dir, row, rerun.output_dir, again)] == [True, True]
    assert reproduce.row_differences(row, again) == []


def _as_control(row: dict) -> dict:
    """The row under the control's name (its predictions, teacher and cell otherwise the same)."""
    row = copy.deepcopy(row)
    row["method"], row["config"]["method_spec"] = "random_init", "random_init"
    if "distillation" in row:
        row["distillation"]["teacher"]["cell"]["method"] = "random_init"
    return row


def test_the_board_shows_distill_lines_against_their_teacher_and_the_control(distilled, tmp_path):
    """The run's rows and, as the control's rows, copies of them under its name (the same
    prediction files: every difference to the control is exactly 0)."""
    cfg, rows = distilled
    out = tmp_path / "board"
    both = tmp_path / "results.jsonl"
    both.write_text("".join(json.dumps(r) + "\n" for r in rows + [_as_control(r) for r in rows]))
    leaderboard.regenerate([str(both)], str(out), prediction_dirs=[cfg.output_dir])
    table = {(r["method"], r["eval_mode"]): r for r in _csv(out / "cxr.csv") if r["section"] == "ours_synthetic"}
    line = table[("enc", "distill")]
    assert line["teacher"] == "enc finetune resnet_v1-10x0.25"
    assert line["in_distribution_teacher_diff_n_seeds"] == "1" and line["in_distribution_teacher_diff"]
    assert line["control"] == "random_init" and line["in_distribution_diff_n_seeds"] == "1"
    assert float(line["in_distribution_diff"]) == float(line["in_distribution_diff_ci_high"]) == 0.0
    assert table[("enc", "finetune")]["teacher"] == ""
    assert table[("random_init", "distill")]["teacher"] == "random_init finetune resnet_v1-10x0.25"
    md = (out / "cxr.md").read_text()
    assert "Δ vs teacher (paired 95% CI)" in md and lines.TEACHER_RULE in md


def _csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_broken_teacher_file_is_named(tmp_path):
    path = tmp_path / "t.npz"
    assert distill.load_teacher(str(path)) is None
    path.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match=rf"^{path}: not a teacher saved by this suite \(.*\); delete it"):
        distill.load_teacher(str(path))
    weights = [np.ones((2, 3), np.float32), np.zeros(3, np.float32)]
    distill.save_teacher(str(path), weights, SELECTION)
    loaded, selection = distill.load_teacher(str(path))
    assert selection == SELECTION and distill.weights_digest(loaded) == distill.weights_digest(weights)
    assert os.listdir(tmp_path) == ["t.npz"]


def test_the_run_table_puts_each_student_beside_its_teacher(distilled):
    from benchmark.board import report

    cfg, rows = distilled
    table = report.summary_table(rows, [], output_dir=cfg.output_dir)
    student_part = table.split("distillation: the student beside its teacher")[1].splitlines()
    assert student_part[1].split()[:8] == ["task", "method", "eval", "labels", "test", "set", "metric", "student"]
    [in_dist] = [l for l in student_part if "in_distribution" in l]
    assert in_dist.split()[:4] == ["cxr", "enc", "distill", "50%"] and "(n=1)" in in_dist


def test_a_smaller_student_starts_from_random_weights_or_from_an_encoder_of_its_own(tmp_path):
    from baselines.api import BackboneConfig
    from baselines.backbones import build_encoder
    from test_run import _config

    small = BackboneConfig(family="resnet_v1", depth=10, width=0.25, small_stem=True)
    keras.utils.set_random_seed(7)
    own = build_encoder(small)
    own.save(tmp_path / "own.keras")
    cfg = _config(tmp_path, "derm", "simclr", eval_modes=("finetune", "distill:resnet_v1-10x0.25-small"))
    strategy = tf.distribute.get_strategy()
    mode = "distill:resnet_v1-10x0.25-small"
    scratch = runner._student_trainer(cfg, mode, None, strategy).model.encoder.get_weights()
    again = runner._student_trainer(cfg, mode, None, strategy).model.encoder.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(scratch, again))  # drawn from the pretraining seed
    seeded = dataclasses.replace(cfg, student_init=str(tmp_path / "own.keras"))
    loaded = runner._student_trainer(seeded, mode, None, strategy).model.encoder.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, own.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(loaded, scratch))
    record = runner._config_record(seeded, runner.registry.get_method("simclr"))
    assert record["student_init_checkpoint"] == str(tmp_path / "own.keras")
    assert record["student_init"]["kind"] == "keras" and "student_init" not in runner._config_record(
        cfg, runner.registry.get_method("simclr"))
    assert runner._student_init_text(seeded, small).startswith("keras own")
    with pytest.raises(ValueError, match=r"^--student_init=.*: only students of another backbone"):
        runner.check_student_init("x", ("finetune", "distill"))


@pytest.mark.parametrize("kind", ["multilabel", "multiclass"])
def test_a_distillation_step_over_two_replicas_equals_the_single_device_step(kind):
    """The student's trainer takes the same two steps under MirroredStrategy over the 2 logical
    CPUs as on one device, label weight 0.5 included: the replicas' halves of the batch hold 3 and
    1 labelled images, and the supervised term is still the mean over the whole batch's labelled
    images. (An encoder without batch norm, whose statistics are per replica by design.)"""
    from baselines import distribute
    from benchmark.harness import finetune

    rng = np.random.default_rng(0)
    images = rng.random((8, 8, 8, 3)).astype(np.float32)
    labels = np.eye(K, dtype=np.float32)[rng.integers(0, K, 8)]
    labels[[3, 4, 5, 7]] = np.nan  # replica 0 gets images 0-3, replica 1 images 4-7
    targets = np.concatenate([3 * rng.normal(size=(8, K)).astype(np.float32), labels], axis=1)
    policy = distill.DistillPolicy(steps=2, learning_rate=0.5, batch_size=8, warmup_steps=0,
                                   temperature=2.0, label_weight=0.5)
    start = None

    def two_steps(strategy):
        nonlocal start
        with strategy.scope():
            encoder = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                                        keras.layers.GlobalAveragePooling2D()])
        start = start or encoder.get_weights()
        encoder.set_weights(start)
        trainer = finetune.Trainer(encoder, kind=kind, num_classes=K, image_size=8, weight_decay=0.0,
                                   strategy=strategy, loss_fn=distill.DistillationLoss)
        trainer._reset(policy)
        batches = tf.data.Dataset.from_tensor_slices((images, targets)).batch(8).repeat()
        trainer.model.fit(batches, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
        return trainer.model.get_weights()

    single = two_steps(tf.distribute.get_strategy())
    mirrored = two_steps(distribute.get_strategy("mirrored"))
    assert not np.allclose(single[0], start[0])  # the encoder trained
    for a, b in zip(mirrored, single, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
