"""Submitted saved backbones (.keras and SavedModel) load as encoders through the method API."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from baselines import registry
from baselines.api import BackboneConfig, PretrainConfig


def _encoder():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def _pretrain(method):
    return method.pretrain(None, backbone=BackboneConfig(), config=PretrainConfig(),
                           strategy=tf.distribute.get_strategy(), checkpoint_dir="unused")


def test_keras_file_backbone(tmp_path):
    encoder = _encoder()
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    images = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    loaded = _pretrain(registry.get_method(f"saved:{path}"))
    np.testing.assert_allclose(loaded(images), encoder(images), atol=1e-6)


def test_savedmodel_backbone_is_trainable(tmp_path):
    encoder = _encoder()
    path = str(tmp_path / "savedmodel")
    encoder.export(path)
    images = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    loaded = _pretrain(registry.get_method(f"saved:{path}"))
    np.testing.assert_allclose(loaded(images), encoder(images), atol=1e-5)
    assert loaded.trainable_weights  # fine-tuning updates the submitted weights


def test_saved_backbone_rejects_other_files(tmp_path):
    bad = tmp_path / "weights.h5"
    bad.write_text("x")
    with pytest.raises(ValueError, match="expected a .keras file or a SavedModel"):
        registry.get_method(f"saved:{bad}")
