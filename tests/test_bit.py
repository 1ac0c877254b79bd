"""BiT ResNetV2: weight standardisation, unit layout against hand-written ops, npz I/O, HyperRule."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from baselines import bit, bit_hyperrule
from baselines.api import FinetunePolicy


@pytest.fixture(scope="module")
def r50():
    keras.utils.set_random_seed(0)
    return bit.bit_resnet_v2(50, input_shape=(32, 32, 3))


def _standardize(kernel):
    k = kernel.astype(np.float64)
    mean = k.mean(axis=(0, 1, 2), keepdims=True)
    var = k.var(axis=(0, 1, 2), keepdims=True)
    return ((k - mean) / np.sqrt(var + 1e-10)).astype(np.float32)


def _group_norm(x, gamma, beta, groups=32, eps=1e-5):
    b, h, w, c = x.shape
    g = x.astype(np.float64).reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return (((g - mean) / np.sqrt(var + eps)).reshape(b, h, w, c) * gamma + beta).astype(np.float32)


def _conv(x, kernel, stride=1, pad=0):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return tf.nn.conv2d(x, _standardize(kernel), stride, "VALID").numpy()


def test_weight_standardisation_matches_numpy():
    rng = np.random.default_rng(0)
    layer = bit.StandardizedConv2D(8, 3, padding="valid", use_bias=False)
    x = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    layer.build(x.shape)
    kernel = (3.0 + 2.0 * rng.normal(size=(3, 3, 4, 8))).astype(np.float32)
    layer.kernel.assign(kernel)
    expected = tf.nn.conv2d(x, _standardize(kernel), 1, "VALID").numpy()
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-4, atol=1e-4)
    plain = tf.nn.conv2d(x, kernel, 1, "VALID").numpy()
    assert np.abs(plain - expected).max() > 1.0
    # Standardised kernels have zero mean and unit variance per output channel.
    std = _standardize(kernel)
    np.testing.assert_allclose(std.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(std.var(axis=(0, 1, 2)), 1.0, atol=1e-4)


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith(("gamma", "beta")):
            w.assign((1.0 if w.path.endswith("gamma") else 0.0) + 0.3 * rng.normal(size=w.shape))


def test_root_and_strided_unit_match_hand_written_ops(r50):
    _randomize(r50, 1)
    get = r50.get_layer
    x = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
    # Root: [0,1] -> [-1,1], 7x7/2 conv padded 3, zero pad 1, 3x3/2 max-pool.
    root = keras.Model(r50.input, get("root_pool").output)(x).numpy()
    y = _conv(2.0 * x - 1.0, get("root_conv").kernel.numpy(), stride=2, pad=3)
    y = tf.nn.max_pool2d(np.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0))), 3, 2, "VALID").numpy()
    np.testing.assert_allclose(root, y, rtol=1e-4, atol=1e-4)
    # block2/unit01: pre-activation GN+ReLU, projection from the pre-activated input, stride on 3x3.
    unit = keras.Model(get("block1_unit03_add").output, get("block2_unit01_add").output)
    h = np.random.default_rng(3).normal(size=(2, 8, 8, 256)).astype(np.float32)

    def gn_relu(v, name):
        return np.maximum(_group_norm(v, get(name).gamma.numpy(), get(name).beta.numpy()), 0.0)

    pre = gn_relu(h, "block2_unit01_a_gn")
    shortcut = _conv(pre, get("block2_unit01_proj").kernel.numpy(), stride=2)
    z = _conv(pre, get("block2_unit01_a_conv").kernel.numpy())
    z = _conv(gn_relu(z, "block2_unit01_b_gn"), get("block2_unit01_b_conv").kernel.numpy(), stride=2, pad=1)
    z = _conv(gn_relu(z, "block2_unit01_c_gn"), get("block2_unit01_c_conv").kernel.numpy())
    np.testing.assert_allclose(unit(h).numpy(), z + shortcut, rtol=1e-3, atol=1e-3)
    assert get("block2_unit01_a_conv").kernel.shape == (1, 1, 256, 128)
    assert get("block2_unit01_b_conv").kernel.shape == (3, 3, 128, 128)
    assert get("block2_unit01_c_conv").kernel.shape == (1, 1, 128, 512)


def test_depth_width_and_parameter_count(r50):
    # timm's resnetv2_50x1_bit (68.3M with the 21843-way head) minus that head.
    assert sum(int(np.prod(w.shape)) for w in r50.trainable_weights) == 23_500_352
    assert r50(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 2048)
    assert [bit.feature_dim(d, w) for d, w in [(50, 1), (101, 3), (152, 4)]] == [2048, 6144, 8192]
    names = {layer.name for layer in r50.layers}
    assert {f"block{b}_unit{u:02d}_proj" for b in range(1, 5) for u in range(1, 7)} & names == {
        f"block{b}_unit01_proj" for b in range(1, 5)}
    with pytest.raises(ValueError, match="depth=34"):
        bit.bit_resnet_v2(34)


def bit_npz_keys(units=(3, 4, 6, 3), head=False):
    """The key list of a BiT R50 `.npz`, written out from BiT's naming, independent of bit.py."""
    keys = ["resnet/root_block/standardized_conv2d/kernel",
            "resnet/group_norm/gamma", "resnet/group_norm/beta"]
    for b, n in enumerate(units, start=1):
        for u in range(1, n + 1):
            p = f"resnet/block{b}/unit{u:02d}/"
            for part in "abc":
                keys += [f"{p}{part}/standardized_conv2d/kernel", f"{p}{part}/group_norm/gamma",
                         f"{p}{part}/group_norm/beta"]
            if u == 1:
                keys.append(f"{p}a/proj/standardized_conv2d/kernel")
    if head:
        keys += ["resnet/head/conv2d/kernel", "resnet/head/conv2d/bias"]
    return keys


def bit_npz_shape(key, wf=1, classes=10):
    """Shape of a BiT R50x`wf` npz entry (HWIO kernels), from the architecture, independent of bit.py."""
    if key == "resnet/root_block/standardized_conv2d/kernel":
        return (7, 7, 3, 64 * wf)
    if key.startswith("resnet/group_norm"):
        return (2048 * wf,)
    if key == "resnet/head/conv2d/kernel":
        return (1, 1, 2048 * wf, classes)
    if key == "resnet/head/conv2d/bias":
        return (classes,)
    parts = key.split("/")
    b, u, part = int(parts[1][-1]), int(parts[2][-2:]), parts[3]
    mid, out = 64 * wf * 2 ** (b - 1), 256 * wf * 2 ** (b - 1)
    cin = (64 * wf if b == 1 else out // 2) if u == 1 else out
    if "proj" in parts:
        return (1, 1, cin, out)
    if "group_norm" in parts:
        return ({"a": cin, "b": mid, "c": mid}[part],)
    return {"a": (1, 1, cin, mid), "b": (3, 3, mid, mid), "c": (1, 1, mid, out)}[part]


def test_synthetic_npz_from_the_explicit_key_list_loads(r50, tmp_path):
    rng = np.random.default_rng(4)
    arrays = {k: rng.normal(size=bit_npz_shape(k)).astype(np.float32) for k in bit_npz_keys(head=True)}
    path = tmp_path / "BiT-M-R50x1.npz"
    np.savez(path, **arrays)
    head = keras.layers.Dense(10)
    head.build((None, 2048))
    used = bit.load_bit_npz(r50, str(path), head=head)
    assert sorted(used) == sorted(arrays)
    get = r50.get_layer
    np.testing.assert_array_equal(get("root_conv").kernel.numpy(),
                                  arrays["resnet/root_block/standardized_conv2d/kernel"])
    np.testing.assert_array_equal(get("block3_unit05_b_gn").gamma.numpy(),
                                  arrays["resnet/block3/unit05/b/group_norm/gamma"])
    np.testing.assert_array_equal(get("block4_unit01_proj").kernel.numpy(),
                                  arrays["resnet/block4/unit01/a/proj/standardized_conv2d/kernel"])
    np.testing.assert_array_equal(get("pre_head_gn").beta.numpy(), arrays["resnet/group_norm/beta"])
    np.testing.assert_array_equal(head.kernel.numpy(), arrays["resnet/head/conv2d/kernel"][0, 0])
    np.testing.assert_array_equal(head.bias.numpy(), arrays["resnet/head/conv2d/bias"])
    # Every model weight is covered by exactly one key.
    assert len(bit.bit_key_table(r50)) == len(r50.weights) == len(set(bit.bit_key_table(r50).values()))


def test_npz_round_trip_reproduces_outputs(r50, tmp_path):
    _randomize(r50, 5)
    path = str(tmp_path / "round_trip.npz")
    saved = bit.save_bit_npz(r50, path)
    assert sorted(saved) == sorted(bit_npz_keys())
    x = np.random.default_rng(6).random((1, 32, 32, 3), dtype=np.float32)
    expected = r50(x).numpy()
    fresh = bit.bit_resnet_v2(50, input_shape=(32, 32, 3))
    assert np.abs(fresh(x).numpy() - expected).max() > 1e-3
    bit.load_bit_npz(fresh, path)
    np.testing.assert_allclose(fresh(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_missing_or_misshapen_keys_raise_naming_key_and_file(r50, tmp_path):
    arrays = {k: np.zeros(bit_npz_shape(k), np.float32) for k in bit_npz_keys()}
    missing = dict(arrays)
    del missing["resnet/block2/unit03/c/group_norm/beta"]
    path = tmp_path / "missing.npz"
    np.savez(path, **missing)
    with pytest.raises(ValueError, match=r"missing\.npz.*resnet/block2/unit03/c/group_norm/beta"):
        bit.load_bit_npz(r50, str(path))
    wrong = dict(arrays)
    wrong["resnet/block1/unit02/b/standardized_conv2d/kernel"] = np.zeros((1, 1, 64, 64), np.float32)
    path = tmp_path / "wrong.npz"
    np.savez(path, **wrong)
    with pytest.raises(ValueError, match=r"wrong\.npz.*resnet/block1/unit02/b/standardized_conv2d/kernel"
                                         r".*\(1, 1, 64, 64\).*\(3, 3, 64, 64\)"):
        bit.load_bit_npz(r50, str(path))
    path = tmp_path / "no_head.npz"
    np.savez(path, **arrays)
    head = keras.layers.Dense(10)
    head.build((None, 2048))
    with pytest.raises(ValueError, match="resnet/head/conv2d/kernel"):
        bit.load_bit_npz(r50, str(path), head=head)
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        bit.load_bit_npz(r50, str(tmp_path / "absent.npz"))


def test_hyperrule_matches_big_transfer():
    assert bit_hyperrule.get_resolution((32, 32)) == (160, 128)
    assert bit_hyperrule.get_resolution((95, 96)) == (160, 128)
    assert bit_hyperrule.get_resolution((96, 96)) == (512, 480)
    assert bit_hyperrule.get_resolution((224, 224)) == (512, 480)
    assert bit_hyperrule.get_schedule(1_000) == [100, 200, 300, 400, 500]
    assert bit_hyperrule.get_schedule(19_999) == [100, 200, 300, 400, 500]
    assert bit_hyperrule.get_schedule(20_000) == [500, 3000, 6000, 9000, 10_000]
    assert bit_hyperrule.get_schedule(1_281_167) == [500, 6000, 12_000, 18_000, 20_000]
    assert bit_hyperrule.get_mixup(19_999) == 0.0 and bit_hyperrule.get_mixup(20_000) == 0.1
    lr = bit_hyperrule.get_lr
    assert lr(0, 1000) == 0.0
    assert lr(50, 1000) == pytest.approx(0.0015)
    assert lr(100, 1000) == pytest.approx(0.003)
    assert lr(200, 1000) == pytest.approx(0.003)  # decay applies strictly after a support
    assert lr(201, 1000) == pytest.approx(0.0003)
    assert lr(450, 1000) == pytest.approx(0.000003)
    assert lr(500, 1000) is None
    assert lr(3001, 50_000, base_lr=0.01) == pytest.approx(0.001)


def test_finetune_policy_follows_hyperrule():
    assert bit_hyperrule.finetune_policy(5_000) == FinetunePolicy(
        steps=500, learning_rate=0.003, batch_size=512, warmup_steps=100,
        decay_boundaries=(200, 300, 400), mixup_alpha=0.0)
    assert bit_hyperrule.finetune_policy(100_000, batch_size=128, base_lr=0.001) == FinetunePolicy(
        steps=10_000, learning_rate=0.001, batch_size=128, warmup_steps=500,
        decay_boundaries=(3000, 6000, 9000), mixup_alpha=0.1)
    with pytest.raises(ValueError, match="dataset_size=-1"):
        bit_hyperrule.finetune_policy(-1)
