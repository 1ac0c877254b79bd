"""Deterministic by default: the same code, data, configuration and seed give the same encoder, the
same prediction files (byte for byte) and the same rows, in one process and after a resume (in two
processes: `test_run.test_cli_run_killed_mid_pretraining_resumes_to_the_uninterrupted_runs_bytes`)."""
import dataclasses
import filecmp
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from baselines import checkpoint, determinism, pretrain
from baselines.api import BackboneConfig, PretrainConfig
from baselines.registry import get_method
from baselines.backbones import build_encoder
from baselines.micle import MICLe
from baselines.precision import Precision
from baselines.simclr import SimCLR
from benchmark.harness import data, results, runner
from benchmark.harness.presets import get_preset
from benchmark.harness.tasks import get_task
from shared_helpers import copy_run
from test_methods import groups as methods_groups

R10 = BackboneConfig(family="resnet_v1", depth=10, width=0.25, small_stem=True)
CONFIG = PretrainConfig(image_size=32, batch_size=4, steps=4, checkpoint_every=2)
DEFAULT = tf.distribute.get_strategy()
SMOKE = get_preset("smoke")
VOLATILE = ("created", "wall_seconds")


@pytest.fixture(autouse=True)
def deterministic_mode():
    determinism.set_deterministic(True)


def groups():
    """Six random cases of 1-3 images (the shared `test_methods.groups`)."""
    return methods_groups(num_groups=6)


def disturb_global_random_state():
    """What earlier work in the process may have done: other seeds, random draws, more layers."""
    keras.utils.set_random_seed(12345)
    tf.random.uniform([3])
    keras.layers.Dense(3).build((None, 2))


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def loop_options(*callbacks):
    return pretrain.LoopOptions(progress=False, shuffle_buffer=16, callbacks=callbacks)


class Stop(Exception):
    pass


def stop_at(step):
    def callback(s, logs, model):
        if s == step:
            raise Stop

    return callback


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """`weights(name, make)`: the encoder weights of `make()`'s uninterrupted pretraining (CONFIG,
    R10, `groups()`), computed at the first call for `name` in this process. SimCLR's and MICLe's
    serve both `test_two_in_process_pretrainings_give_the_same_encoder` (the first of its two) and
    `test_interrupted_and_resumed_pretraining_equals_an_uninterrupted_one` (the uninterrupted one)."""
    cache = {}

    def weights(name, make):
        if name not in cache:
            cache[name] = make().pretrain(groups(), backbone=R10, config=CONFIG, strategy=DEFAULT,
                                          checkpoint_dir=str(tmp_path_factory.mktemp(name))).get_weights()
        return cache[name]

    return weights


@pytest.mark.parametrize("make, config", [
    (lambda: SimCLR(loop_options()), CONFIG), (lambda: MICLe(options=loop_options()), CONFIG),
    (lambda: get_method("baselines.examples.minimal_method:RotationPrediction"), CONFIG),
    (lambda: MICLe(options=loop_options()), dataclasses.replace(CONFIG, precision="bfloat16"))],
    ids=["simclr", "micle", "example", "micle_bfloat16"])
def test_two_in_process_pretrainings_give_the_same_encoder(make, config, tmp_path, request, uninterrupted):
    name = request.node.callspec.id
    if name in ("simclr", "micle"):  # CONFIG: the uninterrupted pretraining of the resume test
        first = uninterrupted(name, make)
    else:
        first = make().pretrain(groups(), backbone=R10, config=config, strategy=DEFAULT,
                                checkpoint_dir=str(tmp_path / "a")).get_weights()
    disturb_global_random_state()
    second = make().pretrain(groups(), backbone=R10, config=config, strategy=DEFAULT,
                             checkpoint_dir=str(tmp_path / "b")).get_weights()
    assert_same_weights(first, second)


def test_supervised_random_init_is_a_function_of_the_seed(tmp_path):
    backbone = BackboneConfig(family="bit", depth=50, width=0.25, small_stem=False)
    method = get_method("supervised")
    first = method.pretrain(None, backbone=backbone, config=CONFIG, strategy=DEFAULT,
                            checkpoint_dir=str(tmp_path / "a")).get_weights()
    disturb_global_random_state()
    second = method.pretrain(None, backbone=backbone, config=CONFIG, strategy=DEFAULT,
                             checkpoint_dir=str(tmp_path / "b")).get_weights()
    assert_same_weights(first, second)
    other = method.pretrain(None, backbone=backbone, config=dataclasses.replace(CONFIG, seed=1), strategy=DEFAULT,
                            checkpoint_dir=str(tmp_path / "c")).get_weights()
    assert any(not np.array_equal(x, y) for x, y in zip(first, other))


@pytest.mark.parametrize("method", [SimCLR, MICLe])
def test_interrupted_and_resumed_pretraining_equals_an_uninterrupted_one(method, tmp_path, uninterrupted):
    """Killed after the step-2 checkpoint (at step 3), resumed: the input stream continues where it
    stopped, so the final encoder is the uninterrupted run's."""
    whole = uninterrupted(method.__name__.lower(), lambda: method(options=loop_options()))
    resumed_dir = str(tmp_path / "resumed")
    with pytest.raises(Stop):
        method(options=loop_options(stop_at(3))).pretrain(groups(), backbone=R10, config=CONFIG,
                                                          strategy=DEFAULT, checkpoint_dir=resumed_dir)
    assert checkpoint.read_meta(resumed_dir).steps_done == 2
    disturb_global_random_state()
    resumed = method(options=loop_options()).pretrain(groups(), backbone=R10, config=CONFIG, strategy=DEFAULT,
                                                     checkpoint_dir=resumed_dir).get_weights()
    assert_same_weights(whole, resumed)


def _run_config(data_dir, output_dir, method, **preset_changes):
    preset = dataclasses.replace(SMOKE, **preset_changes)
    return runner.RunConfig(
        method=method, task=get_task("derm"), preset=preset,
        data=data.DataConfig(data_dir=str(data_dir), manual_dir=None, resolution=preset.resolution,
                             synthetic_sizes=preset.synthetic_sizes,
                             synthetic_image_size=preset.synthetic_image_size),
        output_dir=str(output_dir), progress=False, name="enc")


def _rows_and_predictions(output_dir):
    rows = results.ResultsStore(output_dir / "results.jsonl").rows()
    return {results.cell_key(r): r for r in rows}


def _assert_same_cell(dir_a, row_a, dir_b, row_b):
    for test_set, result in row_a["metrics"].items():
        assert filecmp.cmp(dir_a / result["predictions"], dir_b / row_b["metrics"][test_set]["predictions"],
                           shallow=False), f"{test_set} predictions differ"
    strip = lambda row: {k: v for k, v in row.items() if k not in VOLATILE}  # noqa: E731
    assert strip(row_a) == strip(row_b)


def test_saved_backbone_cell_does_not_depend_on_earlier_cells(tmp_path, smoke_data_dir):
    """A fine-tuning cell (seed 1, both modes) run after others in one process equals the same cell
    run alone, byte for byte."""
    keras.utils.set_random_seed(0)
    path = tmp_path / "encoder.keras"
    build_encoder(SMOKE.backbone).save(path)
    grid = _run_config(smoke_data_dir, tmp_path / "grid", f"saved:{path}", seeds=(0, 1),
                       label_fractions=(100.0,), eval_modes=("finetune", "linear"))
    runner.run(grid)
    disturb_global_random_state()
    alone = _run_config(smoke_data_dir, tmp_path / "alone", f"saved:{path}", seeds=(1,),
                        label_fractions=(100.0,), eval_modes=("linear", "finetune"))
    runner.run(alone)
    grid_rows, alone_rows = _rows_and_predictions(tmp_path / "grid"), _rows_and_predictions(tmp_path / "alone")
    assert len(alone_rows) == 2
    for key, row in alone_rows.items():
        assert row["deterministic"] is True
        _assert_same_cell(tmp_path / "alone", row, tmp_path / "grid", grid_rows[key])
    [finetuned] = [r for r in alone_rows.values() if r["eval_mode"] == "finetune"]
    assert finetuned["finetune_selection"]["chosen"] == grid_rows[results.cell_key(finetuned)][
        "finetune_selection"]["chosen"]  # the same schedule and step, from the same validation scores


def test_a_bfloat16_grid_extended_by_a_second_run_equals_a_one_go_run(tmp_path, smoke_data_dir):
    """Issue 21, principle 6: cells computed by later runs, from the stage a run finished
    (reloaded, not in memory), are byte-identical to a one-go run's in bfloat16 too (float32:
    `test_saved_backbone_cell_does_not_depend_on_earlier_cells`): the linear probe's features come
    from the encoder in the run's precision either way. The later runs start from a copy of the
    one-go run's stage (that a stage is deterministic: the pretraining tests above)."""
    used = Precision("bfloat16", "bfloat16", "requested")
    changes = dict(label_fractions=(100.0,), eval_modes=("linear",))
    one_go = dataclasses.replace(_run_config(smoke_data_dir, tmp_path / "one", "simclr", seeds=(0, 1),
                                             **changes), precision=used)
    runner.run(one_go)
    first = copy_run(dataclasses.replace(one_go, preset=dataclasses.replace(one_go.preset, seeds=(0,))),
                     tmp_path / "two", only="pretrain")
    runner.run(first)
    runner.run(dataclasses.replace(first, preset=dataclasses.replace(first.preset, seeds=(0, 1))))
    one, two = _rows_and_predictions(tmp_path / "one"), _rows_and_predictions(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) == 2
    for key, row in one.items():
        _assert_same_cell(tmp_path / "one", row, tmp_path / "two", two[key])


def test_a_grid_is_not_continued_in_the_other_mode(tmp_path):
    cfg = _run_config(tmp_path / "data", tmp_path / "out", "simclr")
    store = results.ResultsStore(tmp_path / "out" / "results.jsonl")
    tmp_path.joinpath("out").mkdir()
    # A finished cell outside this run's grid (a stored cell of the grid is checked by its config).
    row = {"task": "derm", "method": "enc", "preset": "smoke", "eval_mode": "finetune", "label_fraction": 0.5,
           "seed": 7, "deterministic": False}
    with open(store.path, "w") as f:
        f.write(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl: the finished cells of derm/enc/smoke ran with "
                                         r"deterministic=False; rerun with --nondeterministic"):
        runner.run(cfg)
