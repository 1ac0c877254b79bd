"""NT-Xent against an independent NumPy formula, with and without same-group masking."""
import numpy as np
import pytest
import tensorflow as tf

from baselines.objective import contrastive_accuracy, nt_xent_loss


def reference_nt_xent(z1, z2, temperature, groups=None):
    """SimCLR NT-Xent over 2N views: sum over all 2N anchors of -log(exp(s_ip) / sum_{k != i, k kept}
    exp(s_ik)) divided by N, where s = cosine similarity / temperature, p(i) = the other view of i,
    and (with groups) k is dropped when it is a different view of the same group than i, except p(i)."""
    n = len(z1)
    u = np.concatenate([z1, z2]).astype(np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    s = u @ u.T / temperature
    example = np.arange(2 * n) % n
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        keep = np.arange(2 * n) != i
        if groups is not None:
            g = np.concatenate([groups, groups])
            keep &= ~((g == g[i]) & (example != example[i]))
        total += -s[i, p] + np.log(np.sum(np.exp(s[i, keep])))
    return total / n


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_numpy_reference(temperature, masked):
    rng = np.random.default_rng(int(temperature * 100) + masked)
    z1 = rng.normal(size=(12, 5)).astype(np.float32)
    z2 = (z1 + 0.5 * rng.normal(size=(12, 5))).astype(np.float32)
    groups = np.array(["p0", "p0", "p1", "p2", "p2", "p2", "p3", "p4", "p5", "p5", "p6", "p7"])
    loss, logits, labels = nt_xent_loss(tf.constant(z1), tf.constant(z2), temperature=temperature,
                                        group_ids=tf.constant(groups), mask_same_group=masked)
    expected = reference_nt_xent(z1, z2, temperature, groups if masked else None)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    assert logits.shape == (12, 24)
    np.testing.assert_array_equal(labels.numpy(), np.arange(12))


def test_masking_changes_loss_and_integer_ids_match_strings():
    rng = np.random.default_rng(0)
    z1, z2 = (tf.constant(rng.normal(size=(8, 4)), tf.float32) for _ in range(2))
    names = tf.constant(["a", "a", "b", "b", "c", "d", "d", "d"])
    ints = tf.constant([7, 7, 3, 3, 100, -2, -2, -2], tf.int64)
    plain, _, _ = nt_xent_loss(z1, z2, temperature=0.1)
    by_name, _, _ = nt_xent_loss(z1, z2, temperature=0.1, group_ids=names, mask_same_group=True)
    by_int, _, _ = nt_xent_loss(z1, z2, temperature=0.1, group_ids=ints, mask_same_group=True)
    assert abs(plain.numpy() - by_name.numpy()) > 1e-3
    np.testing.assert_allclose(by_name.numpy(), by_int.numpy(), rtol=1e-6)
    # Group ids are ignored unless masking is asked for.
    unmasked, _, _ = nt_xent_loss(z1, z2, temperature=0.1, group_ids=names)
    np.testing.assert_allclose(unmasked.numpy(), plain.numpy(), rtol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_gradients_finite_and_match_numeric(masked):
    rng = np.random.default_rng(1)
    z1 = tf.Variable(rng.normal(size=(6, 3)), dtype=tf.float32)
    z2 = tf.Variable(rng.normal(size=(6, 3)), dtype=tf.float32)
    groups = tf.constant([1, 1, 2, 3, 3, 4])
    with tf.GradientTape() as tape:
        loss, _, _ = nt_xent_loss(z1, z2, temperature=0.2, group_ids=groups, mask_same_group=masked)
    g1, g2 = tape.gradient(loss, [z1, z2])
    assert np.all(np.isfinite(g1.numpy())) and np.all(np.isfinite(g2.numpy()))
    # Central difference on one coordinate, against the NumPy reference.
    eps = 1e-3
    a, b = z1.numpy().astype(np.float64), z2.numpy().astype(np.float64)
    plus, minus = a.copy(), a.copy()
    plus[2, 1] += eps
    minus[2, 1] -= eps
    grp = groups.numpy() if masked else None
    numeric = (reference_nt_xent(plus, b, 0.2, grp) - reference_nt_xent(minus, b, 0.2, grp)) / (2 * eps)
    np.testing.assert_allclose(g1.numpy()[2, 1], numeric, rtol=1e-3, atol=1e-4)


def test_accuracy_counts_positive_as_top_logit():
    z1 = tf.eye(4)
    z2 = tf.constant([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    _, logits, labels = nt_xent_loss(z1, z2, temperature=0.1)
    assert contrastive_accuracy(logits, labels).numpy() == pytest.approx(0.5)


def test_bad_arguments():
    z = tf.ones([2, 3])
    with pytest.raises(ValueError, match="group_ids"):
        nt_xent_loss(z, z, temperature=0.1, mask_same_group=True)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(z, z, temperature=0.0)
    with pytest.raises(ValueError, match="group_ids must be strings or integers"):
        nt_xent_loss(z, z, temperature=0.1, group_ids=tf.constant([0.5, 1.5]), mask_same_group=True)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope(), pytest.raises(ValueError, match="replica context"):
        nt_xent_loss(z, z, temperature=0.1)
