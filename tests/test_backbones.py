"""SimCLR ResNet v1 encoders and the BackboneConfig dispatcher."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from baselines import resnet
from baselines.api import BackboneConfig
from baselines.backbones import build_encoder, encoder_feature_dim

# Trainable parameters of torchvision's ResNets without the 1000-way fc layer (same v1.5 layout
# as SimCLR: stride on the 3x3 conv, projection shortcut on the first block of each group).
TORCHVISION_TRAINABLE_PARAMS = {
    18: 11_689_512 - 513_000,
    34: 21_797_672 - 513_000,
    50: 25_557_032 - 2_049_000,
    101: 44_549_160 - 2_049_000,
    152: 60_192_808 - 2_049_000,
}


def _trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_depths_match_reference_parameter_counts_and_feature_dims(depth):
    model = resnet.resnet_v1(depth)
    assert _trainable_params(model) == TORCHVISION_TRAINABLE_PARAMS[depth]
    assert model.output.shape == (None, resnet.feature_dim(depth))
    assert resnet.feature_dim(depth) == (512 if depth < 50 else 2048)


@pytest.mark.parametrize("depth,width", [(18, 1), (18, 2), (50, 1)])
def test_runs_at_32px_with_expected_feature_dim(depth, width):
    model = resnet.resnet_v1(depth, width, small_stem=True, input_shape=(32, 32, 3))
    out = model(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32), training=False)
    assert out.shape == (2, resnet.feature_dim(depth, width))
    assert np.all(np.isfinite(out.numpy()))


def test_small_stem_has_no_max_pool_and_a_3x3_stride_1_conv():
    small = resnet.resnet_v1(18, small_stem=True)
    big = resnet.resnet_v1(18, small_stem=False)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in small.layers)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in big.layers) == 1
    stem, big_stem = small.get_layer("stem_conv"), big.get_layer("stem_conv")
    assert stem.kernel_size == (3, 3) and stem.strides == (1, 1)
    assert big_stem.kernel_size == (7, 7) and big_stem.strides == (2, 2)
    # 32 px stays 32 px into group 1 with the small stem, 8 px with the ImageNet stem.
    assert keras.Model(small.input, small.get_layer("group1_block1_out").output)(
        np.zeros((1, 32, 32, 3), np.float32)).shape[1] == 32
    assert keras.Model(big.input, big.get_layer("group1_block1_out").output)(
        np.zeros((1, 32, 32, 3), np.float32)).shape[1] == 8


@pytest.mark.parametrize("depth", [18, 50])
def test_last_bn_of_each_residual_branch_starts_at_zero_gamma(depth):
    model = resnet.resnet_v1(depth)
    zero = set(resnet.last_bn_names(depth))
    assert len(zero) == sum(resnet.RESNET_LAYERS[depth][1])
    for layer in _bn_layers(model):
        gamma = layer.gamma.numpy()
        if layer.name in zero:
            np.testing.assert_array_equal(gamma, 0.0)
        else:
            np.testing.assert_array_equal(gamma, 1.0)
        assert layer.momentum == 0.9 and layer.epsilon == 1e-5
    # A freshly built block is the identity on its (post-ReLU) input except for the projection.
    block = keras.Model(model.get_layer("group1_block1_out").output,
                        model.get_layer("group1_block2_out").output)
    h = np.random.default_rng(1).random((1, 4, 4, block.input.shape[-1]), dtype=np.float32)
    np.testing.assert_allclose(block(h, training=False).numpy(), h, atol=1e-6)


def test_global_bn_uses_synchronized_batch_norm():
    assert all(layer.synchronized for layer in _bn_layers(resnet.resnet_v1(18, global_bn=True)))
    assert not any(layer.synchronized for layer in _bn_layers(resnet.resnet_v1(18, global_bn=False)))


def test_global_bn_normalises_over_all_replicas():
    """With 2 replicas, training-mode outputs equal the single-device full-batch outputs only
    when batch statistics are synchronised."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    if len(devices) < 2:
        pytest.skip("needs the two logical CPU devices from conftest.py")
    strategy = tf.distribute.MirroredStrategy(devices)
    images = np.random.default_rng(2).random((4, 8, 8, 3), dtype=np.float32)
    outputs = {}
    for global_bn in (True, False):
        keras.utils.set_random_seed(0)
        reference = resnet.resnet_v1(18, small_stem=True, global_bn=global_bn, input_shape=(8, 8, 3))
        full = reference(images, training=True).numpy()
        with strategy.scope():
            model = resnet.resnet_v1(18, small_stem=True, global_bn=global_bn, input_shape=(8, 8, 3))
            model.set_weights(reference.get_weights())
        dist = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(images).batch(4))
        per_replica = strategy.run(tf.function(lambda x: model(x, training=True)), args=(next(iter(dist)),))
        split = np.concatenate([t.numpy() for t in strategy.experimental_local_results(per_replica)])
        outputs[global_bn] = np.abs(split - full).max()
    assert outputs[True] < 1e-4
    assert outputs[False] > 1e-3


def test_build_encoder_dispatches_and_reports_feature_dim():
    cfg = BackboneConfig(family="resnet_v1", depth=18, width=2, small_stem=True, global_bn=True)
    model = build_encoder(cfg, input_shape=(32, 32, 3))
    assert model.output.shape == (None, 1024) == (None, encoder_feature_dim(cfg))
    assert model.get_layer("stem_conv").strides == (1, 1)
    assert all(layer.synchronized for layer in _bn_layers(model))
    bit_cfg = BackboneConfig(family="bit", depth=50, width=1)
    bit_model = build_encoder(bit_cfg)
    assert bit_model.output.shape == (None, 2048) == (None, encoder_feature_dim(bit_cfg))
    assert any(layer.name == "root_conv" for layer in bit_model.layers)


@pytest.mark.parametrize("cfg,match", [
    (BackboneConfig(family="vit"), "family='vit'"),
    (BackboneConfig(depth=20), "depth=20"),
    (BackboneConfig(width=3), "width=3"),
    (BackboneConfig(family="bit", depth=18), "depth=18"),
    (BackboneConfig(family="bit", depth=50, width=0), "width=0"),
])
def test_build_encoder_rejects_unknown_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_encoder(cfg)
    with pytest.raises(ValueError, match=match):
        encoder_feature_dim(cfg)
