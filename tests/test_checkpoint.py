"""Stage checkpoint format: save/load round trips, BiT .npz and .keras inputs, clear errors."""
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from baselines import bit, checkpoint
from baselines.api import BackboneConfig, PretrainConfig
from baselines.backbones import build_encoder
from baselines.heads import projection_head

R18 = BackboneConfig(family="resnet_v1", depth=18, width=1, small_stem=True)
CONFIG = PretrainConfig(image_size=32, batch_size=4, steps=3)


def assert_same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def head_for(config=CONFIG, input_dim=512):
    return projection_head(input_dim, num_layers=config.projection_layers, output_dim=config.projection_dim)


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """A finished stage with an R18 encoder and a projection head, plus the saved models."""
    directory = str(tmp_path_factory.mktemp("stage"))
    encoder, head = build_encoder(R18), head_for()
    checkpoint.save_stage(directory, encoder=encoder, method="simclr", backbone=R18, config=CONFIG,
                          steps_done=3, head=head, method_options={"x": 1})
    return directory, encoder, head


def test_save_stage_writes_documented_files(stage):
    directory, _, head = stage
    assert sorted(os.listdir(directory)) == sorted([checkpoint.META_FILE, checkpoint.ENCODER_FILE,
                                                    checkpoint.HEAD_FILE])
    meta = checkpoint.read_meta(directory)
    assert (meta.method, meta.backbone, meta.pretrain, meta.steps_done, meta.finished) == (
        "simclr", R18, CONFIG, 3, True)
    assert meta.method_options == {"x": 1} and meta.head_shapes == checkpoint.variable_shapes(head)
    assert meta.code_version
    with open(os.path.join(directory, checkpoint.META_FILE)) as f:
        raw = json.load(f)
    assert raw["backbone"]["depth"] == 18 and raw["pretrain"]["steps"] == 3 and raw["finished"] is True


def test_load_encoder_rebuilds_from_meta(stage):
    directory, encoder, _ = stage
    loaded = checkpoint.load_encoder(directory)
    assert_same_weights(loaded, encoder)
    # global_bn does not change the weights, so it may differ.
    assert_same_weights(checkpoint.load_encoder(directory, dataclasses.replace(R18, global_bn=True)), encoder)


def test_init_encoder_loads_head_only_when_shapes_match(stage):
    directory, encoder, head = stage
    target, same_head = build_encoder(R18), head_for()
    message = checkpoint.init_encoder(directory, target, backbone=R18, head=same_head)
    assert "head" in message
    assert_same_weights(target, encoder)
    assert_same_weights(same_head, head)
    other_head = head_for(dataclasses.replace(CONFIG, projection_dim=64))
    before = other_head.get_weights()
    message = checkpoint.init_encoder(directory, build_encoder(R18), backbone=R18, head=other_head)
    assert "head" not in message
    for x, y in zip(before, other_head.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_mismatched_or_missing_checkpoints_raise_naming_the_path(stage, tmp_path):
    directory, encoder, _ = stage
    r34 = dataclasses.replace(R18, depth=34)
    with pytest.raises(ValueError, match=f"{directory}.*backbone"):
        checkpoint.load_encoder(directory, r34)
    with pytest.raises(ValueError, match=directory):
        checkpoint.init_encoder(directory, encoder, backbone=r34)
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=missing):
        checkpoint.load_encoder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="meta.json"):
        checkpoint.load_encoder(str(empty))
    (empty / checkpoint.META_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        checkpoint.read_meta(str(empty))
    (empty / checkpoint.META_FILE).write_text(json.dumps({"format_version": 1, "method": "simclr"}))
    with pytest.raises(ValueError, match="malformed"):
        checkpoint.read_meta(str(empty))


def test_unfinished_stage_is_not_loadable(tmp_path):
    meta = checkpoint.StageMeta(method="simclr", backbone=R18, pretrain=CONFIG, steps_done=2, finished=False,
                                code_version="test")
    checkpoint.write_meta(str(tmp_path), meta)
    assert checkpoint.read_meta(str(tmp_path)) == meta
    with pytest.raises(ValueError, match="unfinished .2 of 3 steps"):
        checkpoint.load_encoder(str(tmp_path))


def test_check_resumable_allows_only_bookkeeping_changes(stage):
    directory, _, _ = stage
    meta = checkpoint.read_meta(directory)
    checkpoint.check_resumable(directory, meta, method="simclr", backbone=R18, method_options={"x": 1},
                               config=dataclasses.replace(CONFIG, checkpoint_every=7))
    with pytest.raises(ValueError, match="pretrain: stored"):
        checkpoint.check_resumable(directory, meta, method="simclr", backbone=R18, method_options={"x": 1},
                                   config=dataclasses.replace(CONFIG, steps=9))
    with pytest.raises(ValueError, match="method: stored 'simclr' != requested 'micle'"):
        checkpoint.check_resumable(directory, meta, method="micle", backbone=R18, method_options={"x": 1},
                                   config=CONFIG)


def test_bit_npz_load_and_inferred_architecture(tmp_path):
    source = bit.bit_resnet_v2(50, 1)
    path = str(tmp_path / "BiT-M-R50x1.npz")
    bit.save_bit_npz(source, path)
    expected = BackboneConfig(family="bit", depth=50, width=1, small_stem=False)
    assert checkpoint.infer_bit_backbone(path) == expected
    assert_same_weights(checkpoint.load_encoder(path), source)
    with pytest.raises(ValueError, match="only family='bit'"):
        checkpoint.init_encoder(path, build_encoder(R18), backbone=R18)
    not_bit = str(tmp_path / "other.npz")
    np.savez(not_bit, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a BiT .npz"):
        checkpoint.load_encoder(not_bit)


def tiny_encoder(filters=4):
    return keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(filters, 3),
                             keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D()])


def test_keras_file_load_and_init(tmp_path):
    source = tiny_encoder()
    path = str(tmp_path / "encoder.keras")
    source.save(path)
    assert_same_weights(checkpoint.load_encoder(path), source)
    target = tiny_encoder()
    checkpoint.init_encoder(path, target, backbone=R18)
    assert_same_weights(target, source)
    with pytest.raises(ValueError, match=f"{path}.*do not match"):
        checkpoint.init_encoder(path, tiny_encoder(filters=5), backbone=R18)
