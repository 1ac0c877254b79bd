"""Augmentations: ranges and shapes, geometry against NumPy, presets' composition."""
import numpy as np
import pytest
import tensorflow as tf

from baselines import augment


def _image(h=40, w=56, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return img if dtype == np.uint8 else (img / 255.0).astype(dtype)


@pytest.mark.parametrize("name", ["simclr", "cxr"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_views_keep_range_and_shape_in_tf_data(name, dtype):
    tf.random.set_seed(0)
    view = augment.get_view_fn(name)
    images = [_image(40, 56, 0, dtype), _image(64, 30, 1, dtype)]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.as_dtype(dtype)))
    ds = ds.repeat(4).map(lambda x: view(x, 24))
    assert ds.element_spec.shape == (24, 24, 3) and ds.element_spec.dtype == tf.float32
    views = np.stack([v.numpy() for v in ds])
    assert views.shape == (8, 24, 24, 3)
    assert views.min() >= 0.0 and views.max() <= 1.0
    assert np.std(views, axis=0).mean() > 0.01  # views of one image differ


def test_unknown_view_name_is_rejected():
    with pytest.raises(ValueError, match="augmentation='byol'"):
        augment.get_view_fn("byol")


def test_single_augmentations_keep_range_and_shape():
    tf.random.set_seed(1)
    img = _image()
    fns = [
        lambda x: augment.random_flip(x),
        lambda x: augment.color_jitter(x, 1.0),
        lambda x: augment.random_grayscale(x, 0.5),
        lambda x: augment.gaussian_blur(x, 5, 1.0),
        lambda x: augment.random_rotation(x, 45.0),
        lambda x: augment.random_color_jitter(x, 0.5),
    ]
    for fn in fns:
        for _ in range(3):
            out = fn(img).numpy()
            assert out.shape == img.shape and out.dtype == np.float32
            assert out.min() >= 0.0 and out.max() <= 1.0
    crop = augment.random_resized_crop(img, 16).numpy()
    assert crop.shape == (16, 16, 3) and 0.0 <= crop.min() and crop.max() <= 1.0


def test_rotation_by_90_degrees_matches_numpy():
    img = _image(9, 9, 2, np.float32)
    np.testing.assert_allclose(augment.rotate(img, 90.0).numpy(), np.rot90(img, 1), atol=1e-5)
    np.testing.assert_allclose(augment.rotate(img, -90.0).numpy(), np.rot90(img, -1), atol=1e-5)
    np.testing.assert_allclose(augment.rotate(img, 180.0).numpy(), np.rot90(img, 2), atol=1e-5)
    # Non-square: a 90 degree turn keeps the centre column as the centre row (borders go to 0).
    wide = _image(7, 11, 3, np.float32)
    out = augment.rotate(wide, 90.0).numpy()
    np.testing.assert_allclose(out[:, 5], wide[3, 2:9][::-1], atol=1e-5)
    assert np.all(out[:, 0] == 0.0)


def test_random_rotation_stays_within_max_degrees():
    """An off-centre bright pixel moves by at most max_degrees around the centre."""
    img = np.zeros((31, 31, 3), np.float32)
    img[15, 27] = 1.0  # 12 px right of the centre, angle 0
    tf.random.set_seed(2)
    for _ in range(20):
        out = augment.random_rotation(img, 30.0).numpy()[..., 0]
        y, x = np.unravel_index(np.argmax(out), out.shape)
        angle = np.degrees(np.arctan2(15 - y, x - 15))
        assert abs(angle) <= 30.0 + 6.0  # pixel grid tolerance at radius 12


def test_gaussian_blur_of_an_impulse_is_the_normalised_kernel():
    img = np.zeros((15, 15, 3), np.float32)
    img[7, 7] = 1.0
    out = augment.gaussian_blur(img, 5, 1.5).numpy()
    k = np.exp(-np.arange(-2, 3) ** 2 / (2 * 1.5**2))
    k /= k.sum()
    expected = np.zeros((15, 15))
    expected[5:10, 5:10] = np.outer(k, k)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], expected, atol=1e-6)


def test_random_resized_crop_of_full_area_and_square_aspect_is_identity():
    img = _image(20, 20, 4, np.float32)
    out = augment.random_resized_crop(img, 20, area_range=(1.0, 1.0), aspect=(1.0, 1.0)).numpy()
    np.testing.assert_allclose(out, img, atol=1e-5)


def test_grayscale_and_jitter():
    img = _image(16, 16, 5)
    gray = augment.random_grayscale(img, p=1.0).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 1])
    np.testing.assert_allclose(gray[..., 0], gray[..., 2])
    np.testing.assert_allclose(augment.random_grayscale(img, p=0.0).numpy(), img / 255.0, atol=1e-6)
    tf.random.set_seed(3)
    jittered = [augment.color_jitter(img, 1.0).numpy() for _ in range(4)]
    assert min(np.abs(j - img / 255.0).mean() for j in jittered) > 1e-3
    np.testing.assert_allclose(augment.color_jitter(img, 0.0).numpy(), img / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="strength=-1"):
        augment.color_jitter(img, -1)


def test_eval_view_is_a_deterministic_centre_crop():
    img = _image(64, 80, 6, np.float32)
    out = augment.eval_view(img, 56).numpy()  # 0.875 * 64 = 56: crop rows 4..59, cols 12..67
    np.testing.assert_allclose(out, img[4:60, 12:68], atol=1e-5)
    np.testing.assert_array_equal(augment.eval_view(img, 32).numpy(), augment.eval_view(img, 32).numpy())
    assert augment.eval_view(_image(64, 80, 6), 32).numpy().max() <= 1.0


def test_cxr_view_never_blurs_while_simclr_view_does(monkeypatch):
    """Graph-trace both presets with gaussian_blur replaced by a tripwire: tracing visits every
    branch of tf.cond, so a preset that can blur trips it whatever the random draw."""

    def tripwire(*args, **kwargs):
        raise AssertionError("gaussian_blur called")

    monkeypatch.setattr(augment, "gaussian_blur", tripwire)
    spec = tf.TensorSpec([None, None, 3], tf.uint8)
    tf.function(lambda x: augment.cxr_view(x, 24), input_signature=[spec]).get_concrete_function()
    with pytest.raises(AssertionError, match="gaussian_blur called"):
        tf.function(lambda x: augment.simclr_view(x, 24), input_signature=[spec]).get_concrete_function()


def test_non_image_dtype_is_rejected():
    with pytest.raises(ValueError, match="int32"):
        augment.to_float(np.zeros((4, 4, 3), np.int32))
