"""The fused BatchNormalization equals Keras's own layer in every mode it handles."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from baselines.batch_norm import BatchNormalization


def _pair(shape, **kwargs):
    """A Keras BN and a fused BN with the same random gamma/beta, built for `shape`."""
    layers = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs), \
        BatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)
    rng = np.random.default_rng(1)
    weights = None
    for layer in layers:
        layer.build(shape)
        weights = weights or [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
        layer.set_weights(weights)
    return layers


def _train_pass(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        objective = tf.reduce_sum(y * y * tf.cos(y))
    grads = tape.gradient(objective, [x, *layer.trainable_weights])
    return [y, *grads, layer.moving_mean, layer.moving_variance]


@pytest.mark.parametrize("shape,kwargs", [((8, 5, 5, 6), {}), ((16, 7), {}), ((16, 7), {"center": False}),
                                          ((4, 3, 3, 5), {"scale": False})])
def test_training_pass_matches_keras(shape, kwargs):
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, shape), tf.float32)
    reference, fused = _pair(shape, **kwargs)
    for _ in range(2):  # the second pass starts from updated moving statistics
        for want, got in zip(_train_pass(reference, x), _train_pass(fused, x)):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(np.abs(want).max()))
    np.testing.assert_allclose(fused(x, training=False), reference(x, training=False), rtol=1e-5, atol=1e-5)


def test_frozen_and_synchronized_layers_use_keras_path():
    x = tf.random.stateless_normal([8, 4, 4, 3], [0, 1])
    reference, fused = _pair(x.shape, synchronized=True)
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), rtol=1e-5, atol=1e-5)
    reference, fused = _pair(x.shape)
    reference.trainable = fused.trainable = False
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fused.moving_mean, reference.moving_mean)


def test_saved_model_reloads(tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 3)), BatchNormalization(name="bn")])
    model(tf.ones([2, 4, 4, 3]) * tf.range(3.0), training=True)
    path = str(tmp_path / "bn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("bn"), BatchNormalization)
    x = tf.random.stateless_normal([2, 4, 4, 3], [2, 3])
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
