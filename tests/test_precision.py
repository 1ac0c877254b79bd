"""Training precision (`baselines.precision`): which precision `auto` picks, bfloat16 steps whose
loss stays float32 and close to the float32 step's, float32 saved weights and classifier logits, and
the precision recorded in a row."""
import copy
import dataclasses
import json
import pathlib
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app

from baselines import checkpoint, determinism, precision, pretrain
from baselines.api import BackboneConfig, PretrainConfig
from baselines.backbones import build_encoder
from baselines.simclr import SimCLR, build_contrastive_model
from benchmark import speed
from benchmark.board import reproduce
from benchmark.harness import data, finetune, runner
from benchmark.harness.presets import get_preset
from benchmark.harness.tasks import get_task

R10 = BackboneConfig(family="resnet_v1", depth=10, width=0.25, small_stem=True)
CONFIG = PretrainConfig(image_size=32, batch_size=8, steps=2, checkpoint_every=2)
NO_BF16 = ("fpu", "sse4_2", "avx2", "avx512f", "avx512_vnni")  # a Xeon of 2019: no bfloat16 units


@pytest.fixture(autouse=True)
def deterministic_mode():
    determinism.set_deterministic(True)


@pytest.mark.parametrize("requested, devices, cpu_flags, used", [
    ("auto", (), NO_BF16, "float32"),
    ("auto", (), NO_BF16 + ("amx_bf16",), "bfloat16"),
    ("auto", (precision.Device("CPU"),), NO_BF16 + ("avx512_bf16",), "bfloat16"),
    ("auto", (precision.Device("TPU"),), NO_BF16, "bfloat16"),
    ("auto", (precision.Device("GPU", (8, 0)),), NO_BF16, "bfloat16"),
    ("auto", (precision.Device("GPU", (7, 5)),), NO_BF16 + ("amx_bf16",), "float32"),
    ("float32", (precision.Device("TPU"),), ("amx_bf16",), "float32"),
    ("bfloat16", (), NO_BF16, "bfloat16"),
])
def test_resolve_picks_bfloat16_only_where_it_is_fast_or_asked_for(requested, devices, cpu_flags, used):
    chosen = precision.resolve(requested, devices=devices, cpu_flags=cpu_flags)
    assert (chosen.requested, chosen.used) == (requested, used)
    assert chosen.reason


def test_an_unknown_precision_names_the_flag():
    with pytest.raises(ValueError, match=r"^--precision=float16: expected one of float32, bfloat16, auto$"):
        precision.check_request("float16")


def _batch(batch_size=8, size=32):
    rng = np.random.default_rng(0)
    return {"view1": tf.constant(rng.random((batch_size, size, size, 3), dtype=np.float32)),
            "view2": tf.constant(rng.random((batch_size, size, size, 3), dtype=np.float32)),
            "group_id": tf.constant(np.arange(batch_size) // 2, tf.int64)}


def _first_step(used: str, mask_same_group: bool):
    keras.utils.set_random_seed(0)
    with precision.scope(used):
        model = build_contrastive_model(build_encoder(R10), backbone=R10, config=CONFIG,
                                        mask_same_group=mask_same_group)
        optimizer = pretrain.compile_model(model, CONFIG)
    logs = tf.function(model.train_step)(_batch())
    return model, optimizer, logs


@pytest.mark.parametrize("mask_same_group", [False, True], ids=["simclr", "micle"])
def test_a_bfloat16_step_has_a_float32_loss_close_to_the_float32_steps(mask_same_group):
    _, _, f32 = _first_step("float32", mask_same_group)
    model, optimizer, bf16 = _first_step("bfloat16", mask_same_group)
    assert model.encoder.layers[-1].compute_dtype == "bfloat16"
    assert bf16["loss"].dtype == tf.float32
    assert abs(float(bf16["loss"]) - float(f32["loss"])) < 0.02 * float(f32["loss"])
    # Variables, optimizer slots and batch-norm statistics stay float32.
    assert {v.dtype for v in model.weights} == {"float32"}
    assert {v.dtype for v in optimizer.variables if v.dtype != "int64"} == {"float32"}
    assert float(optimizer.iterations.numpy()) == 1


@pytest.fixture(scope="module")
def bfloat16_stage(tmp_path_factory):
    """A SimCLR stage pretrained in bfloat16 (CONFIG, R10): its directory and the trained weights.
    Read by the next two tests (the second refuses to continue a copy of it in float32)."""
    determinism.set_deterministic(True)
    directory = tmp_path_factory.mktemp("bfloat16") / "stage"
    trained = SimCLR(pretrain.LoopOptions(progress=False, shuffle_buffer=8)).pretrain(
        _groups(), backbone=R10, config=dataclasses.replace(CONFIG, precision="bfloat16"),
        strategy=tf.distribute.get_strategy(), checkpoint_dir=str(directory))
    return directory, trained.get_weights()


def test_a_bfloat16_stage_seeds_a_float32_encoder(bfloat16_stage):
    directory, trained = bfloat16_stage
    assert checkpoint.read_meta(str(directory)).pretrain.precision == "bfloat16"
    loaded = checkpoint.load_encoder(str(directory))
    assert loaded.compute_dtype == "float32"
    for a, b in zip(trained, loaded.get_weights()):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    image = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    assert loaded(image).dtype == tf.float32


def _groups(num_groups=4, size=40):
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8) for _ in range(num_groups)]
    return tf.data.Dataset.from_tensor_slices(
        {"group_id": [f"case{k}" for k in range(num_groups)], "images": np.stack(cases)})


def test_a_bfloat16_classifier_has_float32_logits():
    encoder = build_encoder(R10)
    clone = precision.clone_in(encoder, "bfloat16")
    clone.set_weights(encoder.get_weights())
    model = finetune.Classifier(clone, num_classes=3)
    image = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    assert clone(image).dtype == tf.bfloat16
    assert model(image).dtype == tf.float32


def test_the_row_config_records_the_precision(tmp_path):
    chosen = precision.resolve("auto", devices=(), cpu_flags=("amx_bf16",))
    cfg = runner.RunConfig(method="simclr", task=get_task("derm"), preset=get_preset("smoke"),
                           data=data.DataConfig(data_dir=str(tmp_path), manual_dir=None),
                           output_dir=str(tmp_path), precision=chosen)
    record = runner._config_record(cfg, SimCLR())
    assert record["precision"] == {"requested": "auto", "used": "bfloat16", "reason": "CPU with amx_bf16"}
    assert record["pretrain"]["precision"] == "bfloat16"


@pytest.mark.parametrize("values, expected", [(["float32", "bfloat16"], ("float32", "bfloat16")),
                                              (["bfloat16"], ("bfloat16",))])
def test_speed_precision_flag_parses(values, expected):
    assert speed.check_precisions(values) == expected


@pytest.mark.parametrize("values", [["float16"], [], ["float32", "float32"], ["auto"]],
                         ids=["float16", "empty", "twice", "auto"])
def test_speed_precision_flag_refuses_bad_values(values):
    with pytest.raises(app.UsageError, match=rf"^--precision={','.join(values)}: expected one or both of "
                                             r"float32,bfloat16, each once$"):
        speed.check_precisions(values)


def test_a_bad_pretrain_precision_and_a_stage_of_another_precision_are_refused(tmp_path, bfloat16_stage):
    simclr = SimCLR(pretrain.LoopOptions(progress=False, shuffle_buffer=8))
    shutil.copytree(bfloat16_stage[0], tmp_path / "stage")  # a finished bfloat16 stage
    run = dict(backbone=R10, strategy=tf.distribute.get_strategy(), checkpoint_dir=str(tmp_path / "stage"))
    with pytest.raises(ValueError, match=r"^PretrainConfig.precision='float16': expected one of "
                                         r"\('float32', 'bfloat16'\)$"):
        simclr.pretrain(_groups(), config=dataclasses.replace(CONFIG, precision="float16"), **run)
    with pytest.raises(ValueError, match=r"holds a stage with other settings \(pretrain: .*precision"):
        simclr.pretrain(_groups(), config=CONFIG, **run)  # float32


def _committed_row() -> dict:
    """The committed smoke row, with this code's smoke fine-tuning settings (the row may predate them)."""
    with open(pathlib.Path(__file__).parent / "data" / "reproduce_smoke" / "results.jsonl", encoding="utf-8") as f:
        row = json.loads(f.readline())
    row["config"]["finetune"] = dataclasses.asdict(get_preset("smoke").finetune)
    return row


@pytest.mark.parametrize("record, used", [
    (None, "float32"),  # rows from before --precision ran in float32
    ({"requested": "auto", "used": "bfloat16", "reason": "CPU with amx_bf16"}, "bfloat16"),
])
def test_reproduce_takes_the_precision_from_the_row(tmp_path, record, used):
    row = copy.deepcopy(_committed_row())
    row["config"].pop("precision", None)
    if record is not None:
        row["config"]["precision"] = record
    cfg = reproduce.rerun_config("r.jsonl:1", row, data_dir=str(tmp_path), scratch_dir=str(tmp_path))
    assert cfg.precision.used == used
    if record is not None:
        assert runner._config_record(cfg, SimCLR())["precision"] == record


def test_reproduce_refuses_a_row_of_an_unknown_precision(tmp_path):
    row = copy.deepcopy(_committed_row())
    row["config"]["precision"] = {"requested": "float16", "used": "float16", "reason": "requested"}
    with pytest.raises(ValueError, match=r"^r.jsonl:1: cannot be re-run: config.precision .*'float16'.* "
                                         r"\(precision='float16': expected one of \('float32', 'bfloat16'\)\)$"):
        reproduce.rerun_config("r.jsonl:1", row, data_dir=str(tmp_path), scratch_dir=str(tmp_path))
