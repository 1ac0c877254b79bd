"""SimCLR ResNet v1 encoders and the BackboneConfig dispatcher."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from baselines import bit, resnet
from baselines.api import BackboneConfig
from baselines.backbones import build_encoder, encoder_feature_dim

# Trainable parameters of torchvision's ResNets (same v1.5 layout as SimCLR: stride on the 3x3
# conv) without the 1000-way fc layer. SimCLR also projects the shortcut of the first basic block
# (64 -> 64 channels, stride 1), which torchvision leaves as identity: a 1x1 conv + BN extra.
_SIMCLR_EXTRA_BASIC_PROJECTION = 64 * 64 + 2 * 64
TORCHVISION_TRAINABLE_PARAMS = {
    18: 11_689_512 - 513_000 + _SIMCLR_EXTRA_BASIC_PROJECTION,
    34: 21_797_672 - 513_000 + _SIMCLR_EXTRA_BASIC_PROJECTION,
    50: 25_557_032 - 2_049_000,
}


@pytest.fixture(scope="module")
def models():
    """ImageNet-stem models by depth, built once (building dominates these tests' cost)."""
    return {depth: resnet.resnet_v1(depth) for depth in TORCHVISION_TRAINABLE_PARAMS}


@pytest.fixture(scope="module")
def small_global():
    keras.utils.set_random_seed(0)
    return resnet.resnet_v1(18, small_stem=True, global_bn=True)


def _trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_depths_match_reference_parameter_counts_and_feature_dims(models, depth):
    assert _trainable_params(models[depth]) == TORCHVISION_TRAINABLE_PARAMS[depth]
    assert models[depth].output.shape == (None, resnet.feature_dim(depth))
    assert resnet.feature_dim(depth) == (512 if depth < 50 else 2048)


def test_feature_dims_of_deep_and_wide_variants():
    assert [resnet.feature_dim(d, w) for d, w in [(101, 1), (152, 2), (50, 4), (34, 4)]] == [
        2048, 4096, 8192, 2048]
    model = resnet.resnet_v1(18, width=2, small_stem=True, input_shape=(16, 16, 3))
    assert model.get_layer("stem_conv").filters == 128
    assert model(np.zeros((1, 16, 16, 3), np.float32), training=False).shape == (1, 1024)


def test_runs_at_32px_with_expected_feature_dim(small_global):
    out = small_global(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32), training=False)
    assert out.shape == (2, 512)
    assert np.all(np.isfinite(out.numpy()))


def test_small_stem_has_no_max_pool_and_a_3x3_stride_1_conv(models, small_global):
    big = models[18]
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in small_global.layers)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in big.layers) == 1
    stem, big_stem = small_global.get_layer("stem_conv"), big.get_layer("stem_conv")
    assert stem.kernel_size == (3, 3) and stem.strides == (1, 1)
    assert big_stem.kernel_size == (7, 7) and big_stem.strides == (2, 2)
    # 32 px stays 32 px into group 1 with the small stem, 8 px with the ImageNet stem.
    x = np.zeros((1, 32, 32, 3), np.float32)
    group1 = "group1_block1_out"
    assert keras.Model(small_global.input, small_global.get_layer(group1).output)(x).shape[1] == 32
    assert keras.Model(big.input, big.get_layer(group1).output)(x).shape[1] == 8


@pytest.mark.parametrize("depth", [18, 50])
def test_last_bn_of_each_residual_branch_starts_at_zero_gamma(models, depth):
    model = models[depth]
    zero = set(resnet.last_bn_names(depth))
    assert len(zero) == sum(resnet.RESNET_LAYERS[depth][1])
    for layer in _bn_layers(model):
        expected = 0.0 if layer.name in zero else 1.0
        np.testing.assert_array_equal(layer.gamma.numpy(), expected)
        assert layer.momentum == 0.9 and layer.epsilon == 1e-5
    # A freshly built block without projection is the identity on its (post-ReLU) input.
    block = keras.Model(model.get_layer("group1_block1_out").output,
                        model.get_layer("group1_block2_out").output)
    h = np.random.default_rng(1).random((1, 4, 4, block.input.shape[-1]), dtype=np.float32)
    np.testing.assert_allclose(block(h, training=False).numpy(), h, atol=1e-6)


def test_global_bn_uses_synchronized_batch_norm(models, small_global):
    assert all(layer.synchronized for layer in _bn_layers(small_global))
    assert not any(layer.synchronized for layer in _bn_layers(models[18]))


def test_global_bn_normalises_over_all_replicas(small_global):
    """With 2 replicas, training-mode outputs equal the single-device full-batch outputs (they
    would not with per-replica batch statistics)."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    if len(devices) < 2:
        pytest.skip("needs the two logical CPU devices from conftest.py")
    strategy = tf.distribute.MirroredStrategy(devices)
    images = np.random.default_rng(2).random((4, 8, 8, 3), dtype=np.float32)
    full = small_global(images, training=True).numpy()
    with strategy.scope():
        model = resnet.resnet_v1(18, small_stem=True, global_bn=True, input_shape=(8, 8, 3))
        model.set_weights(small_global.get_weights())
    dist = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(images).batch(4))
    per_replica = strategy.run(lambda x: model(x, training=True), args=(next(iter(dist)),))
    split = np.concatenate([t.numpy() for t in strategy.experimental_local_results(per_replica)])
    np.testing.assert_allclose(split, full, atol=1e-4)
    # Per-replica statistics give a measurably different answer on the same data.
    halves = np.concatenate([small_global(images[:2], training=True), small_global(images[2:], training=True)])
    assert np.abs(halves - full).max() > 1e-3


def test_build_encoder_passes_the_config_through(monkeypatch):
    calls = []
    monkeypatch.setattr(resnet, "resnet_v1", lambda *a, **k: calls.append(("resnet_v1", a, k)) or "r")
    monkeypatch.setattr(bit, "bit_resnet_v2", lambda *a, **k: calls.append(("bit", a, k)) or "b")
    cfg = BackboneConfig(family="resnet_v1", depth=34, width=2, small_stem=False, global_bn=True)
    assert build_encoder(cfg, input_shape=(64, 64, 3)) == "r"
    assert build_encoder(BackboneConfig(family="bit", depth=101, width=3), (32, 32, 3)) == "b"
    assert calls == [
        ("resnet_v1", (34, 2), {"small_stem": False, "global_bn": True, "input_shape": (64, 64, 3),
                                "sk_ratio": 0.0}),
        ("bit", (101, 3), {"input_shape": (32, 32, 3)}),
    ]
    assert encoder_feature_dim(cfg) == 1024
    assert encoder_feature_dim(BackboneConfig(family="bit", depth=101, width=3)) == 6144


def test_build_encoder_builds_a_working_encoder():
    model = build_encoder(BackboneConfig(depth=18, width=1, small_stem=True), input_shape=(16, 16, 3))
    assert model(np.zeros((2, 16, 16, 3), np.float32), training=False).shape == (2, 512)


@pytest.mark.parametrize("cfg,match", [
    (BackboneConfig(family="vit"), "family='vit'"),
    (BackboneConfig(depth=20), "depth=20"),
    (BackboneConfig(width=5), "width=5"),
    (BackboneConfig(family="bit", depth=18), "depth=18"),
    (BackboneConfig(family="bit", depth=50, width=0), "width=0"),
])
def test_build_encoder_rejects_unknown_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_encoder(cfg)
    with pytest.raises(ValueError, match=match):
        encoder_feature_dim(cfg)
