"""Pretraining you can watch: TensorBoard events of the pretraining and fine-tuning curves, the
stage's curve.json, and every row's `pretrain_summary` (chance levels included) printed by the run."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from baselines import api, checkpoint, determinism, events, objective, pretrain, registry
from baselines.api import BackboneConfig, PretrainConfig
from baselines.examples.minimal_method import RotationPrediction
from baselines.simclr import SimCLR
from benchmark.board import report
from benchmark.board import lines as board_lines
from benchmark.harness import finetune, results, runner
from test_methods import groups as methods_groups

R10 = BackboneConfig(family="resnet_v1", depth=10, width=0.25, small_stem=True)
CONFIG = PretrainConfig(image_size=32, batch_size=4, steps=5, checkpoint_every=2)
DEFAULT = tf.distribute.get_strategy()
TAGS = {"loss", "contrast_acc", "learning_rate"}


@pytest.fixture(autouse=True)
def deterministic_mode():
    determinism.set_deterministic(True)


def groups():
    """Six random cases of 1-3 images (the shared `test_methods.groups`)."""
    return methods_groups(num_groups=6)


class Stop(Exception):
    pass


def simclr(log_every, stop_at=None):
    def stop(step, logs, model):
        if step == stop_at:
            raise Stop

    return SimCLR(pretrain.LoopOptions(progress=False, shuffle_buffer=16, log_every=log_every,
                                       callbacks=(stop,) if stop_at else ()))


def train(method, tmp_path, name):
    return method.pretrain(groups(), backbone=R10, config=CONFIG, strategy=DEFAULT,
                           checkpoint_dir=str(tmp_path / name / "stage"), summary_dir=str(tmp_path / name / "tb"))


@pytest.mark.parametrize("batch", [2, 8])
def test_chance_levels_are_the_uniform_logit_loss_and_the_random_ranking_accuracy(batch):
    chance = objective.chance_levels(batch)
    same = tf.ones([batch, 8])  # every view identical: all logits equal
    loss, logits, labels = objective.nt_xent_loss(same, same, temperature=0.1)
    assert float(loss) == pytest.approx(chance["loss"], rel=1e-6)
    candidates = np.sum(logits.numpy() > -objective.LARGE_NUM / 2, axis=1)
    np.testing.assert_array_equal(candidates, 2 * batch - 1)

    # Views that say nothing about each other: the positive is top with probability 1 / candidates.
    @tf.function
    def accuracy(z):
        return objective.contrastive_accuracy(*objective.nt_xent_loss(z[0], z[1], temperature=0.1)[1:])

    draws = 8000 // batch
    z = tf.random.stateless_normal([draws, 2, batch, 16], seed=[batch, 0])
    mean = float(tf.reduce_mean(tf.map_fn(accuracy, z, fn_output_signature=tf.float32)))
    p = chance["contrast_acc"]
    assert mean == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / (draws * batch)))


def test_pretraining_curve_in_events_and_curve_json_and_a_resume_repeats_no_step(tmp_path):
    """Events and curve.json of a run (also: logging changes no trained byte), then a run killed
    after a point past its last save and resumed: each step once, the uninterrupted run's values."""
    events.ScalarWriter(str(tmp_path / "whole" / "tb")).write(7, {"loss": 99.0})  # left by an older stage
    encoder = train(simclr(log_every=2), tmp_path, "whole")
    unlogged = simclr(log_every=1000).pretrain(groups(), backbone=R10, config=CONFIG, strategy=DEFAULT,
                                               checkpoint_dir=str(tmp_path / "unlogged"))
    for logged, plain in zip(encoder.get_weights(), unlogged.get_weights(), strict=True):
        np.testing.assert_array_equal(logged, plain)  # logging changes no trained byte
    whole = events.read_scalars(str(tmp_path / "whole" / "tb"))
    assert set(whole) == TAGS
    for tag in TAGS:  # the first boundary, every 2 steps, the last step
        assert [step for step, _ in whole[tag]] == [1, 2, 4, 5]
    schedule = pretrain.learning_rate_schedule(CONFIG)
    for step, lr in whole["learning_rate"]:
        assert lr == pytest.approx(float(schedule(step - 1)))
    curve = checkpoint.read_curve(str(tmp_path / "whole" / "stage"))
    assert curve["steps"] == 5 and curve["log_every"] == 2 and curve["batch_size"] == 4
    assert curve["chance"] == objective.chance_levels(4)
    for name, index in (("first", 0), ("last", -1)):
        assert curve[name]["step"] == whole["loss"][index][0]
        for tag in TAGS:
            assert curve[name][tag] == pytest.approx(whole[tag][index][1])

    with pytest.raises(Stop):  # killed at step 3, after the step-2 save and the step-3 point
        train(simclr(log_every=1, stop_at=3), tmp_path, "resumed")
    assert checkpoint.read_meta(str(tmp_path / "resumed" / "stage")).steps_done == 2
    assert [s for s, _ in events.read_scalars(str(tmp_path / "resumed" / "tb"))["loss"]] == [1, 2, 3]
    train(simclr(log_every=1), tmp_path, "resumed")
    resumed = events.read_scalars(str(tmp_path / "resumed" / "tb"))
    for tag in TAGS:
        assert [s for s, _ in resumed[tag]] == [1, 2, 3, 4, 5]
        np.testing.assert_allclose([v for s, v in resumed[tag] if s != 3], [v for _, v in whole[tag]], rtol=1e-6)
    resumed_curve = checkpoint.read_curve(str(tmp_path / "resumed" / "stage"))
    assert resumed_curve == {**curve, "log_every": 1}


def test_summary_dir_goes_only_to_methods_that_accept_it():
    offered = {"summary_dir": "/tmp/x"}
    assert api.accepted_pretrain_args(SimCLR(), **offered) == offered
    assert api.accepted_pretrain_args(RotationPrediction(), **offered) == {}

    class Kwargs(RotationPrediction):
        def pretrain(self, groups, **kwargs):
            return kwargs

    assert api.accepted_pretrain_args(Kwargs(), **offered) == offered


def test_rows_carry_the_pretraining_summary_and_the_run_prints_it(derm_simclr_runs):
    """The shared derm SimCLR run (`derm_simclr_runs`): seed 0 (beside its control), then the same
    grid extended to seeds 0 and 1."""
    cfg = derm_simclr_runs.first.cfg
    [row] = derm_simclr_runs.first.rows
    results.validate_row(row)
    summary = row["pretrain_summary"]
    batch = cfg.preset.pretrain.batch_size
    assert summary["method"] == "simclr" and summary["steps"] == cfg.preset.pretrain.steps
    curve = summary["curve"]
    assert curve["chance"] == {"loss": pytest.approx(2 * math.log(2 * batch - 1)),
                               "contrast_acc": pytest.approx(1 / (2 * batch - 1))}
    assert curve["first"]["step"] == 1 and curve["last"]["step"] == cfg.preset.pretrain.steps
    out = Path(cfg.output_dir) / "tensorboard"
    assert set(events.read_scalars(str(out / "derm_simclr" / "pretrain"))) == TAGS
    cells = {p.name: p for p in (out / "finetune").iterdir()}  # the method's cell and its control's
    assert sorted(cells) == ["derm_random_init_smoke_finetune_f100_s0", "derm_simclr_smoke_finetune_f100_s0"]
    cell = cells["derm_simclr_smoke_finetune_f100_s0"]
    _, grid = runner.finetune_grid(registry.get_method("simclr"), cfg.preset, row["n_train_examples"])
    assert sorted(p.name for p in cell.iterdir()) == sorted(finetune.schedule_name(p) for p in grid)
    for policy in grid:  # one loss curve per schedule tried
        assert [s for s, _ in events.read_scalars(str(cell / finetune.schedule_name(policy)))["loss"]] == sorted(
            {*range(finetune.LOSS_LOG_EVERY, policy.steps + 1, finetune.LOSS_LOG_EVERY), policy.steps})

    # A rerun of the finished stage for a new cell keeps the stage's summary.
    more = derm_simclr_runs.extended.rows
    assert derm_simclr_runs.extended.cfg.preset.seeds == (0, 1) and [r["seed"] for r in more] == [0, 1]
    assert [r["pretrain_summary"] for r in more] == [summary, summary]

    [line] = report.pretrain_lines(more)
    assert line.startswith(f"pretraining derm/simclr: {summary['steps']} steps, batch {batch}; loss ")
    assert f"chance {2 * math.log(2 * batch - 1):.3f}" in line and f"chance {1 / (2 * batch - 1):.3f}" in line


def test_random_init_rows_say_there_is_no_curve_and_rows_without_a_summary_stay_readable(tmp_path,
                                                                                          derm_simclr_runs):
    """A random_init row: the control's row of the shared derm SimCLR run (`derm_simclr_runs`)."""
    shared = derm_simclr_runs.first.cfg
    [row] = runner.control_rows(shared)
    assert (row["method"], row["config"]["method_spec"]) == ("random_init", "random_init")
    results.validate_row(row)
    assert row["pretrain_summary"] == {"method": "random_init", "steps": 0, "curve": None}
    assert not (Path(shared.output_dir) / "tensorboard" / "derm_random_init").exists()
    assert report.pretrain_lines([row]) == ["pretraining derm/random_init: 0 steps, no contrastive curve"]
    renamed = {**row, "method": "control"}
    assert report.pretrain_lines([renamed]) == ["pretraining derm/control (random_init): 0 steps, no contrastive curve"]

    # Rows stored before pretrain_summary existed are read (leaderboards) but not written.
    legacy = {k: v for k, v in row.items() if k != "pretrain_summary"}
    with pytest.raises(ValueError, match="missing key 'pretrain_summary'"):
        results.validate_row(legacy)
    results.validate_row(legacy, new=False)
    assert report.pretrain_lines([legacy]) == [
        "pretraining derm/random_init: not recorded (row written before pretraining summaries)"]
    path = tmp_path / "legacy.jsonl"
    path.write_text(json.dumps(legacy) + "\n")
    [loaded] = board_lines.load_rows([path], prediction_dirs=[shared.output_dir])
    assert "pretrain_summary" not in loaded


@pytest.mark.parametrize("summary, named", [
    ({"method": "simclr", "steps": 5}, "'pretrain_summary' must be an object with keys"),
    ({"method": "", "steps": 5, "curve": None}, "'pretrain_summary.method'"),
    ({"method": "simclr", "steps": -1, "curve": None}, "'pretrain_summary.steps'"),
    ({"method": "simclr", "steps": None, "curve": {}}, "'pretrain_summary.curve'"),
    ({"method": "simclr", "steps": 5, "curve": {"log_every": 0, "batch_size": 4, "first": None, "last": None,
                                               "chance": {}}}, "'pretrain_summary.curve.log_every'"),
    ({"method": "simclr", "steps": 5, "curve": {"log_every": 1, "batch_size": 4, "first": {"step": 6, "loss": 1.0},
                                               "last": None, "chance": {}}}, "'pretrain_summary.curve.first'"),
    ({"method": "simclr", "steps": 5, "curve": {"log_every": 1, "batch_size": 4, "first": None,
                                               "last": {"step": 5, "loss": None}, "chance": {}}},
     "'pretrain_summary.curve.last'"),
    ({"method": "simclr", "steps": 5, "curve": {"log_every": 1, "batch_size": 4, "first": None, "last": None,
                                               "chance": {"loss": "x"}}}, "'pretrain_summary.curve.chance'"),
])
def test_validate_row_names_a_bad_pretraining_summary(summary, named):
    from test_results import _row

    results.validate_row(_row(pretrain_summary={"method": "simclr", "steps": 0, "curve": None}))
    with pytest.raises(ValueError, match=named):
        results.validate_row(_row(pretrain_summary=summary))


@pytest.mark.parametrize("content, named", [
    ("{not json", "curve.json is not valid JSON"),
    ('{"format_version": 9}', "curve.json is not a format 1 curve summary"),
])
def test_a_damaged_curve_json_is_one_error_naming_it(tmp_path, content, named):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "curve.json").write_text(content)
    with pytest.raises(ValueError, match=f"stage checkpoint {stage}: {named}.*; delete it"):
        checkpoint.read_curve(str(stage))


def test_a_non_positive_log_every_is_refused(tmp_path):
    with pytest.raises(ValueError, match="LoopOptions: steps_per_loop, shuffle_buffer and log_every must be positive"):
        train(simclr(log_every=0), tmp_path, "run")
