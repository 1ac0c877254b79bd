"""SimCLR, MICLe, the supervised BiT baseline and the minimal example through the Method API:
finite losses, resuming, finished stages, chaining, replica-consistent train steps."""
import dataclasses
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from baselines import bit, bit_hyperrule, checkpoint, distribute, pretrain
from baselines.api import BackboneConfig, PretrainConfig
from baselines.registry import get_method
from baselines.examples.minimal_method import RotationPrediction
from baselines.micle import MICLe
from baselines.heads import projection_head
from baselines.simclr import ContrastiveModel, SimCLR

R10 = BackboneConfig(family="resnet_v1", depth=10, width=0.25, small_stem=True)
CONFIG = PretrainConfig(image_size=32, batch_size=2, steps=4, checkpoint_every=2)
DEFAULT = tf.distribute.get_strategy()


class Stop(Exception):
    pass


class Recorder:
    """Step callback recording steps, logs and (at chosen steps) model and optimizer weights."""

    def __init__(self, stop_at=None, snapshot_at=()):
        self.steps, self.logs, self.snapshots = [], [], {}
        self.stop_at, self.snapshot_at = stop_at, snapshot_at

    def __call__(self, step, logs, model):
        self.steps.append(step)
        self.logs.append(logs)
        if step in self.snapshot_at:
            self.snapshots[step] = ([w.copy() for w in model.get_weights()],
                                    [v.numpy() for v in model.optimizer.variables])
        if step == self.stop_at:
            raise Stop


def groups(num_groups=10, size=40, max_images=3):
    """Random uint8 cases of 1..max_images images of size x size."""
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 256, (rng.integers(1, max_images + 1), size, size, 3), dtype=np.uint8)
             for _ in range(num_groups)]

    def generate():
        for k, images in enumerate(cases):
            yield {"group_id": f"case{k}", "images": images}

    spec = {"group_id": tf.TensorSpec([], tf.string), "images": tf.TensorSpec([None, size, size, 3], tf.uint8)}
    return tf.data.Dataset.from_generator(generate, output_signature=spec)


def options(*callbacks):
    return pretrain.LoopOptions(progress=False, shuffle_buffer=16, callbacks=callbacks)


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def simclr_stage(tmp_path_factory):
    """SimCLR run for 4 steps, interrupted after step 3 and resumed; returns (dir, first, second)."""
    directory = str(tmp_path_factory.mktemp("simclr"))
    first = Recorder(stop_at=3, snapshot_at=(2,))
    with pytest.raises(Stop):
        SimCLR(options(first)).pretrain(groups(), backbone=R10, config=CONFIG, strategy=DEFAULT,
                                        checkpoint_dir=directory)
    meta_after_crash = checkpoint.read_meta(directory)
    second = Recorder(snapshot_at=(2,))
    encoder = SimCLR(options(second)).pretrain(groups(), backbone=R10, config=CONFIG, strategy=DEFAULT,
                                               checkpoint_dir=directory)
    return directory, first, second, meta_after_crash, encoder


def test_simclr_resumes_from_last_checkpoint(simclr_stage):
    directory, first, second, meta_after_crash, encoder = simclr_stage
    assert first.steps == [0, 1, 2, 3]
    assert (meta_after_crash.steps_done, meta_after_crash.finished) == (2, False)
    assert second.steps == [2, 3, 4], "the rerun must continue from the step-2 checkpoint"
    weights_1, optimizer_1 = first.snapshots[2]
    weights_2, optimizer_2 = second.snapshots[2]
    assert_same(weights_1, weights_2)
    assert_same(optimizer_1, optimizer_2)
    assert int(optimizer_2[0]) == 2  # the optimizer's iteration counter
    for logs in first.logs[1:] + second.logs[1:]:
        assert math.isfinite(logs["loss"]) and logs["loss"] > 0
    meta = checkpoint.read_meta(directory)
    assert (meta.method, meta.steps_done, meta.finished, meta.pretrain) == ("simclr", 4, True, CONFIG)
    assert_same(checkpoint.load_encoder(directory).get_weights(), encoder.get_weights())


def test_finished_stage_returns_encoder_without_training(simclr_stage):
    directory, *_ = simclr_stage
    with open(os.path.join(directory, checkpoint.META_FILE)) as f:
        meta_before = f.read()
    recorder = Recorder()
    encoder = SimCLR(options(recorder)).pretrain(groups(), backbone=R10, config=CONFIG, strategy=DEFAULT,
                                                 checkpoint_dir=directory)
    assert recorder.steps == []
    assert_same(encoder.get_weights(), checkpoint.load_encoder(directory).get_weights())
    with open(os.path.join(directory, checkpoint.META_FILE)) as f:
        assert f.read() == meta_before


def test_rerun_with_other_settings_is_refused(simclr_stage):
    directory, *_ = simclr_stage
    with pytest.raises(ValueError, match=f"{directory}.*temperature"):
        SimCLR(options()).pretrain(groups(), backbone=R10, config=dataclasses.replace(CONFIG, temperature=0.5),
                                   strategy=DEFAULT, checkpoint_dir=directory)
    with pytest.raises(ValueError, match="method: stored 'simclr' != requested 'micle'"):
        MICLe().pretrain(groups(), backbone=R10, config=CONFIG, strategy=DEFAULT, checkpoint_dir=directory)
    with pytest.raises(ValueError, match="init_checkpoint: stored None != requested '/elsewhere'"):
        SimCLR(options()).pretrain(groups(), backbone=R10, config=CONFIG, strategy=DEFAULT,
                                   checkpoint_dir=directory, init_checkpoint="/elsewhere")


def test_micle_chained_on_simclr_starts_from_its_weights(simclr_stage, tmp_path):
    simclr_dir, *_ = simclr_stage
    recorder = Recorder(snapshot_at=(0,))
    config = dataclasses.replace(CONFIG, steps=2, optimizer="adam", base_learning_rate=1e-3)
    micle_dir = str(tmp_path / "micle")
    encoder = MICLe(mask_same_group=True, options=options(recorder)).pretrain(
        groups(), backbone=R10, config=config, strategy=DEFAULT, checkpoint_dir=micle_dir,
        init_checkpoint=simclr_dir)
    start_weights, _ = recorder.snapshots[0]
    simclr_encoder = checkpoint.load_encoder(simclr_dir)
    simclr_head = projection_head(128, num_layers=CONFIG.projection_layers, output_dim=CONFIG.projection_dim)
    simclr_head.load_weights(os.path.join(simclr_dir, checkpoint.HEAD_FILE))
    assert_same(start_weights, simclr_encoder.get_weights() + simclr_head.get_weights())
    assert recorder.steps == [0, 1, 2]
    assert all(math.isfinite(logs["loss"]) for logs in recorder.logs[1:])
    trained = encoder.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(trained, simclr_encoder.get_weights()))
    meta = checkpoint.read_meta(micle_dir)
    assert (meta.method, meta.method_options, meta.init_checkpoint, meta.finished) == (
        "micle", {"mask_same_group": True}, simclr_dir, True)


def test_minimal_example_through_import_path(simclr_stage, tmp_path):
    simclr_dir, *_ = simclr_stage
    method = get_method("baselines.examples.minimal_method:RotationPrediction")
    assert isinstance(method, RotationPrediction)
    config = dataclasses.replace(CONFIG, steps=2, optimizer="adam", base_learning_rate=1e-3)
    encoder = method.pretrain(groups(), backbone=R10, config=config, strategy=DEFAULT,
                              checkpoint_dir=str(tmp_path), init_checkpoint=simclr_dir)
    assert encoder.output_shape == (None, 128)
    start = checkpoint.load_encoder(simclr_dir).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(encoder.get_weights(), start)), "no training happened"
    assert_same(checkpoint.load_encoder(str(tmp_path)).get_weights(), encoder.get_weights())
    assert checkpoint.read_meta(str(tmp_path)).method == "rotation_prediction"


def test_registry_names():
    assert type(get_method("simclr")) is SimCLR and type(get_method("micle")) is MICLe
    assert get_method("supervised").name == "supervised"


def test_supervised_bit_from_npz_and_hyperrule(tmp_path):
    source = bit.bit_resnet_v2(50, 1)
    npz = str(tmp_path / "BiT-M-R50x1.npz")
    bit.save_bit_npz(source, npz)
    backbone = BackboneConfig(family="bit", depth=50, width=1, small_stem=False)
    method = get_method("supervised")
    stage = str(tmp_path / "supervised")
    encoder = method.pretrain(groups(), backbone=backbone, config=CONFIG, strategy=DEFAULT,
                              checkpoint_dir=stage, init_checkpoint=npz)
    assert_same(encoder.get_weights(), source.get_weights())
    meta = checkpoint.read_meta(stage)
    assert (meta.method, meta.backbone, meta.steps_done, meta.finished) == ("supervised", backbone, 0, True)
    assert method.finetune_policy(1000) == bit_hyperrule.finetune_policy(1000)
    assert method.backbone(R10) == dataclasses.replace(backbone, width=R10.width)  # BiT builds x0.25
    assert method.backbone(BackboneConfig(depth=101, width=2, small_stem=False)) == dataclasses.replace(
        backbone, depth=101, width=2)
    with pytest.raises(ValueError, match="family='bit'"):
        method.pretrain(groups(), backbone=R10, config=CONFIG, strategy=DEFAULT,
                        checkpoint_dir=str(tmp_path / "r18"))


def tiny_model(weights=None):
    encoder = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, use_bias=False),
                                keras.layers.BatchNormalization(synchronized=True), keras.layers.ReLU(),
                                keras.layers.GlobalAveragePooling2D()])
    head = projection_head(4, num_layers=2, output_dim=3, global_bn=True)
    config = PretrainConfig(batch_size=8, steps=10, warmup_fraction=0.0, weight_decay=1e-2)
    model = ContrastiveModel(encoder, head, temperature=0.5, mask_same_group=True)
    if weights is not None:
        model.set_weights(weights)
    pretrain.compile_model(model, config)
    return model


def train(strategy, weights, batch, *, use_fit=False, steps=1):
    with strategy.scope():
        model = tiny_model(weights=weights)
    data = tf.data.Dataset.from_tensors(batch).repeat(steps)
    if use_fit:
        loss = model.fit(data, epochs=1, verbose=0, shuffle=False).history["loss"][-1]
    else:
        loop = pretrain.make_train_loop(model, strategy)
        loss = float(loop(iter(strategy.experimental_distribute_dataset(data)), tf.constant(steps))["loss"])
    assert int(model.optimizer.iterations.numpy()) == steps
    return loss, model.get_weights()


def test_train_step_is_replica_consistent():
    """Steps on 2 replicas (half batch each, global BN, gathered negatives, same-case masking) equal
    steps on a single device with the whole batch, through the custom loop and through model.fit."""
    rng = np.random.default_rng(0)
    batch = {"view1": rng.random((8, 8, 8, 3), np.float32), "view2": rng.random((8, 8, 8, 3), np.float32),
             "group_id": np.array([0, 0, 1, 2, 3, 3, 4, 5], np.int64)}
    weights = tiny_model().get_weights()
    mirrored = distribute.get_strategy("mirrored")  # CPU-safe collectives (see baselines/distribute.py)
    loss_1, weights_1 = train(DEFAULT, weights, batch, steps=2)
    assert any(not np.array_equal(a, b) for a, b in zip(weights, weights_1))
    loss_2, weights_2 = train(mirrored, weights, batch, steps=2)
    assert loss_2 == pytest.approx(loss_1, rel=1e-5)
    for a, b in zip(weights_1, weights_2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    _, weights_fit = train(mirrored, weights, batch, steps=2, use_fit=True)
    for a, b in zip(weights_1, weights_fit):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
