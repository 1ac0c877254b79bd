"""LARS against a NumPy reference update; exclusions by variable path; serialisation; the learning-rate
schedules that drive it."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from baselines.api import FinetunePolicy
from baselines.lars import LARS
from baselines.schedules import WarmupCosine, WarmupStepDecay, piecewise_warmup, scaled_learning_rate


def reference_lars(w, g, v, *, lr, momentum, weight_decay, eta, decay, adapt):
    """One LARS step in NumPy (SimCLR classic momentum): returns new (w, v)."""
    if decay:
        g = g + weight_decay * w
    ratio = 1.0
    if adapt:
        w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
        if w_norm > 0 and g_norm > 0:
            ratio = eta * w_norm / g_norm
    v = momentum * v + lr * ratio * g
    return w - v, v


def _model():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="batch_normalization")(x)
    x = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("exclude_adapt", [None, [r"^head/"]])
def test_two_steps_match_numpy(exclude_adapt):
    keras.utils.set_random_seed(0)
    model = _model()
    variables = model.trainable_variables
    assert [v.path for v in variables] == [
        "dense/kernel", "dense/bias", "batch_normalization/gamma", "batch_normalization/beta",
        "head/kernel", "head/bias"]
    hp = dict(lr=0.7, momentum=0.9, weight_decay=1e-2, eta=0.01)
    opt = LARS(learning_rate=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"],
               eta=hp["eta"], exclude_from_layer_adaptation=exclude_adapt)
    rng = np.random.default_rng(0)
    ws = [v.numpy().astype(np.float64) for v in variables]
    vs = [np.zeros_like(w) for w in ws]
    decays = [True, False, False, False, True, False]
    if exclude_adapt is None:
        adapts = decays
    else:
        adapts = [True, True, True, True, False, False]
    for _ in range(2):
        grads = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
        opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))
        for i in range(len(ws)):
            ws[i], vs[i] = reference_lars(ws[i], grads[i].astype(np.float64), vs[i], **hp,
                                          decay=decays[i], adapt=adapts[i])
    for v, w in zip(variables, ws):
        np.testing.assert_allclose(v.numpy(), w, rtol=1e-5, atol=1e-7, err_msg=v.path)


def test_bn_gamma_gets_plain_sgd_momentum_step():
    keras.utils.set_random_seed(0)
    model = _model()
    gamma = model.get_layer("batch_normalization").gamma
    kernel = model.get_layer("dense").kernel
    before_gamma, before_kernel = gamma.numpy().copy(), kernel.numpy().copy()
    opt = LARS(learning_rate=0.5, weight_decay=0.1, eta=1e-3)
    g_gamma = np.full(gamma.shape, 2.0, np.float32)
    g_kernel = np.full(kernel.shape, 2.0, np.float32)
    opt.apply_gradients([(tf.constant(g_gamma), gamma), (tf.constant(g_kernel), kernel)])
    # No weight decay, no trust ratio: w - lr * g.
    np.testing.assert_allclose(gamma.numpy(), before_gamma - 0.5 * g_gamma, rtol=1e-6)
    # The kernel's step is scaled by the trust ratio (eta * |w| / |g + wd w|), far smaller.
    g_eff = g_kernel + 0.1 * before_kernel
    ratio = 1e-3 * np.linalg.norm(before_kernel) / np.linalg.norm(g_eff)
    np.testing.assert_allclose(kernel.numpy(), before_kernel - 0.5 * ratio * g_eff, rtol=1e-5)


def test_custom_path_exclusion_and_zero_weights():
    v = keras.Variable(np.zeros((3,), np.float32), name="kernel")  # path "kernel"
    opt = LARS(learning_rate=1.0, momentum=0.0, weight_decay=0.5, exclude_from_weight_decay=[])
    opt.apply_gradients([(tf.constant([1.0, -2.0, 2.0]), v)])
    # Zero weights: trust ratio falls back to 1.
    np.testing.assert_allclose(v.numpy(), [-1.0, 2.0, -2.0])
    w = keras.Variable(np.ones((2,), np.float32), name="kernel")
    opt2 = LARS(learning_rate=1.0, momentum=0.0, weight_decay=0.5, exclude_from_weight_decay=["^kernel$"],
                exclude_from_layer_adaptation=[])
    opt2.apply_gradients([(tf.constant([3.0, 4.0]), w)])
    # No decay, trust ratio 1e-3 * sqrt(2) / 5.
    np.testing.assert_allclose(w.numpy(), 1.0 - 1e-3 * np.sqrt(2) / 5 * np.array([3.0, 4.0]), rtol=1e-6)


def test_serialisation_round_trip():
    opt = LARS(learning_rate=WarmupCosine(1.2, total_steps=100, warmup_steps=10), momentum=0.8,
               weight_decay=1e-6, eta=2e-3, exclude_from_weight_decay=["bias$"],
               exclude_from_layer_adaptation=["gamma"])
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(restored, LARS)
    assert restored.get_config() == opt.get_config()
    assert restored.weight_decay == 1e-6 and restored.eta == 2e-3
    assert restored.exclude_from_layer_adaptation_patterns == ("gamma",)
    assert float(restored.learning_rate) == pytest.approx(0.0)  # step 0 of the warm-up


def test_compiled_fit_reduces_loss():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=LARS(learning_rate=0.2, eta=0.05), loss="mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.1 * first


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="momentum"):
        LARS(momentum=1.0)
    with pytest.raises(ValueError, match="eta"):
        LARS(eta=0.0)


def test_warmup_cosine_values():
    schedule = WarmupCosine(2.0, total_steps=110, warmup_steps=10)
    steps = np.array([0, 5, 10, 35, 60, 110, 150])
    expected = [0.0, 1.0, 2.0, 1.0 + np.cos(np.pi * 25 / 100), 1.0, 0.0, 0.0]
    np.testing.assert_allclose([float(schedule(s)) for s in steps], expected, atol=1e-6)
    no_warmup = WarmupCosine(1.0, total_steps=4, warmup_steps=0)
    np.testing.assert_allclose([float(no_warmup(s)) for s in range(5)], [1.0, 0.853553, 0.5, 0.146447, 0.0],
                               atol=1e-6)
    with pytest.raises(ValueError, match="warmup_steps <= total_steps"):
        WarmupCosine(1.0, total_steps=5, warmup_steps=6)


def test_scaled_learning_rate():
    assert scaled_learning_rate(0.3, 4096) == pytest.approx(4.8)
    assert scaled_learning_rate(0.075, 1024, "sqrt") == pytest.approx(2.4)
    with pytest.raises(ValueError, match="scaling must be 'linear' or 'sqrt'"):
        scaled_learning_rate(0.3, 256, "log")
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        scaled_learning_rate(0.3, 0)


def test_piecewise_warmup_follows_policy():
    policy = FinetunePolicy(steps=500, learning_rate=0.003, batch_size=512, warmup_steps=100,
                            decay_boundaries=(200, 300, 400))
    schedule = piecewise_warmup(policy)
    steps = [0, 50, 99, 100, 199, 200, 299, 300, 400, 499]
    expected = [0.0, 0.0015, 0.00297, 0.003, 0.003, 3e-4, 3e-4, 3e-5, 3e-6, 3e-6]
    np.testing.assert_allclose([float(schedule(s)) for s in steps], expected, rtol=1e-5)
    restored = WarmupStepDecay.from_config(schedule.get_config())
    assert float(restored(250)) == pytest.approx(3e-4)
    constant = piecewise_warmup(FinetunePolicy(steps=10, learning_rate=0.1, batch_size=8, warmup_steps=0))
    assert float(constant(0)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="must be <= steps=10"):
        piecewise_warmup(FinetunePolicy(steps=10, learning_rate=0.1, batch_size=8, warmup_steps=2,
                                        decay_boundaries=(20,)))
    with pytest.raises(ValueError, match="strictly increasing"):
        WarmupStepDecay(0.1, 0, (5, 3))
