"""Fine-tuning chooses its schedule and step on the validation split (benchmark.harness.finetune),
rows record the search, test sets play no part in it, and collapsed predictions are flagged."""
import copy
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from baselines import api, registry
from benchmark.board import reproduce
from benchmark.harness import finetune, results, runner, scoring
from benchmark.harness.presets import get_preset
from test_results import SELECTION, _row


def _point(schedule, step, learning_rate, schedule_steps, validation):
    return {"schedule": schedule, "step": step, "learning_rate": learning_rate,
            "schedule_steps": schedule_steps, "validation": validation}


def test_eval_steps_are_evenly_spaced_and_end_at_the_last_step():
    assert finetune.eval_steps(150, 4) == [38, 75, 113, 150]
    assert finetune.eval_steps(4, 2) == [2, 4]
    assert finetune.eval_steps(2, 4) == [1, 2]
    assert finetune.eval_steps(7, 1) == [7]


def test_the_best_validation_score_wins_and_ties_go_to_the_cheaper_point():
    best = _point(1, 50, 0.1, 100, 0.8)
    assert finetune.choose_point([_point(0, 50, 0.01, 100, 0.7), best, _point(0, 25, 0.01, 50, None)]) is best
    # Equal scores: fewer steps trained, then the smaller learning rate, then the shorter schedule.
    fewer = _point(2, 25, 0.1, 100, 0.8)
    assert finetune.choose_point([best, fewer]) is fewer
    smaller = _point(3, 25, 0.01, 100, 0.8)
    assert finetune.choose_point([best, fewer, smaller]) is smaller
    shorter = _point(4, 25, 0.01, 50, 0.8)
    assert finetune.choose_point([smaller, shorter, best]) is shorter
    # Undefined scores lose to any defined one; among undefined ones the cheapest point wins.
    assert finetune.choose_point([_point(0, 10, 0.1, 10, None), _point(1, 40, 0.1, 40, 0.01)])["step"] == 40
    assert finetune.choose_point([_point(0, 20, 0.1, 20, None), _point(1, 10, 0.1, 20, float("nan"))])["step"] == 10


def test_the_preset_grid_is_learning_rates_times_lengths_and_a_method_policy_replaces_it():
    cpu = get_preset("cpu")
    source, grid = runner.finetune_grid(registry.get_method("micle"), cpu, 200)
    assert source == "preset"
    rule = min(cpu.finetune.steps, max(cpu.finetune.min_steps, -(-20 * 200 // 64)))  # 63
    assert [(p.steps, p.learning_rate) for p in grid] == [
        (-(-rule // 2), 0.01), (-(-rule // 2), 0.1), (rule, 0.01), (rule, 0.1)]
    assert all(p.warmup_steps <= p.steps and max(p.decay_boundaries) <= p.steps for p in grid)
    assert runner.finetune_grid(registry.get_method("micle"), get_preset("smoke"), 30)[1] == (
        api.FinetunePolicy(steps=4, learning_rate=0.05, batch_size=16, warmup_steps=1, decay_boundaries=(2, 3)),)

    class OwnGrid(api.Method):
        name = "own"

        def __init__(self, policy):
            self.policy = policy

        def finetune_policy(self, num_examples):
            return self.policy

        def pretrain(self, groups, **kwargs):
            raise NotImplementedError

    one = api.FinetunePolicy(steps=500, learning_rate=0.003, batch_size=512, warmup_steps=100,
                             decay_boundaries=(200, 300, 400))
    source, grid = runner.finetune_grid(OwnGrid(one), cpu, 200)
    assert source == "method" and grid == (api.FinetunePolicy(
        steps=150, learning_rate=0.003, batch_size=64, warmup_steps=30, decay_boundaries=(60, 90, 120)),)
    two = (one, dataclasses.replace(one, learning_rate=0.01))
    assert [p.learning_rate for p in runner.finetune_grid(OwnGrid(two), cpu, 200)[1]] == [0.003, 0.01]


@pytest.mark.parametrize("field, value", [("learning_rates", ()), ("length_scales", (1.0, 1.0)),
                                          ("learning_rates", (0.0,)), ("eval_points", 0)])
def test_a_bad_fine_tuning_grid_is_refused(field, value):
    with pytest.raises(ValueError, match=rf"^FinetuneSettings.{field}="):
        dataclasses.replace(get_preset("smoke").finetune, **{field: value})


def test_constant_multilabel_scores_are_flagged():
    labels = np.array([[1, 0], [0, 1], [1, np.nan], [0, 0]], np.float32)
    varied = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.5], [0.2, 0.1]])
    assert scoring.collapse("multilabel", ("a", "b"), labels, varied) is None
    flat = varied.copy()
    flat[:, 1] = 0.31 + np.array([0, 1e-6, 2e-6, 0])
    collapsed = scoring.collapse("multilabel", ("a", "b"), labels, flat)
    assert collapsed == {"rule": "constant_scores", "classes": ["b"]}
    assert scoring.describe_collapse(collapsed) == "constant scores for b"


def test_one_predicted_class_is_flagged_unless_the_labels_are_as_concentrated():
    names = ("x", "y", "z")
    labels = np.eye(3, dtype=np.float32)[[0] * 60 + [1] * 30 + [2] * 10]
    one_class = np.tile([0.2, 0.7, 0.1], (100, 1))
    one_class[0] = [0.9, 0.05, 0.05]  # 99 % predicted y
    collapsed = scoring.collapse("multiclass", names, labels, one_class)
    assert collapsed == {"rule": "one_class", "classes": ["y"], "predicted_share": 0.99, "label_share": 0.3}
    assert scoring.describe_collapse(collapsed) == "y predicted for 99.0% of the examples, 30.0% of the labels"
    assert scoring.collapse("multiclass", names, labels, labels * 0.8 + 0.1) is None
    concentrated = np.eye(3, dtype=np.float32)[[1] * 98 + [0, 2]]
    assert scoring.collapse("multiclass", names, concentrated, one_class) is None


def test_validate_row_requires_the_selection_record_of_new_finetune_rows():
    results.validate_row(_row())
    old = {k: v for k, v in _row().items() if k != "finetune_selection"}
    for test_set in old["metrics"].values():
        del test_set["collapsed"]
    results.validate_row(old, new=False)  # rows stored before the record and the flag are read
    with pytest.raises(ValueError, match=r"^result row: 'finetune_selection' must be an object with the keys"):
        results.validate_row(old)
    with pytest.raises(ValueError, match=r"^result row: missing key 'metrics.in_distribution.collapsed'$"):
        results.validate_row(dict(old, finetune_selection=SELECTION))
    with pytest.raises(ValueError, match=r"^result row: 'finetune_selection' must be absent from a linear or distill row"):
        results.validate_row(_row(eval_mode="linear", finetune_selection=SELECTION), new=False)
    wrong = copy.deepcopy(SELECTION)
    wrong["chosen"]["step"] = 4
    with pytest.raises(ValueError, match=r"^result row: 'finetune_selection.chosen' must be"):
        results.validate_row(_row(finetune_selection=wrong))
    wrong = copy.deepcopy(SELECTION)
    wrong["schedules"][0]["eval_steps"] = [2, 3]
    with pytest.raises(ValueError, match=r"^result row: 'finetune_selection.schedules.0.eval_steps' must be"):
        results.validate_row(_row(finetune_selection=wrong))
    bad = _row()
    bad["metrics"]["shifted"]["collapsed"] = {"rule": "one_class", "classes": ["a", "b"]}
    with pytest.raises(ValueError, match=r"^result row: 'metrics.shifted.collapsed' must be null, "):
        results.validate_row(bad)


def test_the_selection_never_reads_a_test_set(tmp_path, monkeypatch, derm_simclr_runs):
    """Test sets whose images and labels are changed, and that raise if read during the search,
    leave the selection record as it was; only their predictions change. The plain run: the
    random_init control of the shared derm SimCLR run (`derm_simclr_runs`), a random_init run."""
    cfg = runner.control_config(derm_simclr_runs.first.cfg)
    assert (cfg.method, cfg.method_name, cfg.control, cfg.preset.label_fractions) == (
        "random_init", "random_init", None, (100.0,))
    [plain] = runner.control_rows(derm_simclr_runs.first.cfg)
    searching = []
    real_search, real_sets = finetune.Trainer.search, runner._test_sets

    def search(self, *args, **kwargs):
        searching.append(True)
        try:
            return real_search(self, *args, **kwargs)
        finally:
            searching.pop()

    def guard(x):
        if searching:
            raise AssertionError("a test set was read during the search")
        return x

    def changed_sets(*args):
        def change(ex):
            image = tf.numpy_function(guard, [255 - ex["image"]], tf.uint8, stateful=True)
            return {**ex, "image": tf.ensure_shape(image, ex["image"].shape),
                    "label": tf.roll(ex["label"], 1, axis=0)}

        return {name: ds.map(change) for name, ds in real_sets(*args).items()}

    monkeypatch.setattr(finetune.Trainer, "search", search)
    monkeypatch.setattr(runner, "_test_sets", changed_sets)
    [changed] = runner.run(dataclasses.replace(cfg, output_dir=str(tmp_path / "changed")))
    assert changed["finetune_selection"] == plain["finetune_selection"]
    assert changed["finetune_selection"]["source"] == "preset"
    assert all(changed["metrics"][n]["fingerprint"] != plain["metrics"][n]["fingerprint"]
               for n in plain["metrics"])
    monkeypatch.undo()

    # benchmark.reproduce rebuilds the grid from the row's config and reproduces the row.
    rerun = reproduce.rerun_config("r.jsonl:1", plain, data_dir=cfg.data.data_dir,
                                   scratch_dir=str(tmp_path / "rerun"), progress=False)
    _, grid = runner.finetune_grid(registry.get_method("random_init"), rerun.preset,
                                   plain["n_train_examples"])
    assert [finetune.schedule_record(p) for p in grid] == [
        {k: v for k, v in s.items() if k not in ("eval_steps", "validation")}
        for s in plain["finetune_selection"]["schedules"]]
    [again] = runner.run(rerun)
    assert [c.identical for c in reproduce.compare(cfg.output_dir, plain, rerun.output_dir, again)] == [True, True]
    assert reproduce.row_differences(plain, again) == []


def test_a_row_of_the_single_fine_tuning_schedule_cannot_be_rerun(tmp_path):
    from test_run import _config

    config = runner._config_record(_config(tmp_path, "derm", "simclr"), registry.get_method("simclr"))
    config["finetune"] = {"steps": 4, "batch_size": 16, "learning_rate": 0.05}
    with pytest.raises(ValueError, match=r"^r.jsonl:1: cannot be re-run with this code: FinetuneSettings."
                                         r"__init__\(\) got an unexpected keyword argument 'learning_rate'$"):
        reproduce.rerun_config("r.jsonl:1", _row(config=config), data_dir=str(tmp_path),
                               scratch_dir=str(tmp_path))
