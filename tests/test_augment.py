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
    view = augment.get_view_fn(name)
    images = [_image(40, 56, 0, dtype), _image(64, 30, 1, dtype)]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.as_dtype(dtype)))
    ds = augment.with_element_seeds(ds.repeat(4), 0).map(lambda x, seed: view(x, 24, seed=seed))
    assert ds.element_spec.shape == (24, 24, 3) and ds.element_spec.dtype == tf.float32
    views = np.stack([v.numpy() for v in ds])
    assert views.shape == (8, 24, 24, 3)
    assert views.min() >= 0.0 and views.max() <= 1.0
    assert np.std(views, axis=0).mean() > 0.01  # views of one image differ


def test_min_crop_area_and_colour_strength_reach_the_view(monkeypatch):
    """min_crop_area bounds the crop's area; color_scale multiplies the view's own strength."""
    seen = []
    monkeypatch.setattr(augment, "random_color_jitter",
                        lambda image, strength, **kw: seen.append(strength) or image)
    image = tf.constant(_image(40, 40))
    for name, default in (("simclr", 1.0), ("cxr", 0.5)):
        augment.get_view_fn(name)(image, 24, seed=tf.constant([1, 2]))
        augment.get_view_fn(name, color_scale=0.4)(image, 24, seed=tf.constant([1, 2]))
        assert seen[-2:] == [default, 0.4 * default]
    whole = augment.random_resized_crop(image, 24, area_range=(1.0, 1.0), seed=tf.constant([3, 4]))
    np.testing.assert_allclose(whole.numpy(), augment._resize(augment.to_float(image), 24).numpy())
    for seed in range(20):  # crops of at least half the image are never smaller than half of it
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
            seed=[seed, 0], min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.5, 1.0), max_attempts=100, use_image_if_no_bounding_boxes=True)
        assert int(size[0]) * int(size[1]) >= 0.5 * 40 * 40 - 40


@pytest.mark.parametrize("kwargs, message", [
    ({"min_crop_area": 0.0}, "min_crop_area=0.0: expected a fraction in"),
    ({"min_crop_area": 1.5}, "min_crop_area=1.5: expected a fraction in"),
    ({"color_scale": -1.0}, "color_scale=-1.0: expected a number >= 0"),
])
def test_view_options_out_of_range_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment.get_view_fn("simclr", **kwargs)


def test_unknown_view_name_is_rejected():
    with pytest.raises(ValueError, match="augmentation='byol'"):
        augment.get_view_fn("byol")


def test_single_augmentations_keep_range_and_shape():
    img = _image()
    fns = [
        lambda x, s: augment.random_flip(x, seed=s),
        lambda x, s: augment.color_jitter(x, 1.0, seed=s),
        lambda x, s: augment.random_grayscale(x, 0.5, seed=s),
        lambda x, s: augment.gaussian_blur(x, 5, 1.0),
        lambda x, s: augment.random_rotation(x, 45.0, seed=s),
        lambda x, s: augment.random_color_jitter(x, 0.5, seed=s),
    ]
    for fn in fns:
        for k in range(3):
            out = fn(img, augment.element_seed(1, k)).numpy()
            assert out.shape == img.shape and out.dtype == np.float32
            assert out.min() >= 0.0 and out.max() <= 1.0
    crop = augment.random_resized_crop(img, 16, seed=augment.element_seed(1, 0)).numpy()
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
    for k in range(20):
        out = augment.random_rotation(img, 30.0, seed=augment.element_seed(2, k)).numpy()[..., 0]
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
    out = augment.random_resized_crop(img, 20, area_range=(1.0, 1.0), aspect=(1.0, 1.0),
                                      seed=augment.element_seed(4, 0)).numpy()
    np.testing.assert_allclose(out, img, atol=1e-5)


def test_grayscale_and_jitter():
    img = _image(16, 16, 5)
    seed = augment.element_seed(3, 0)
    gray = augment.random_grayscale(img, p=1.0, seed=seed).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 1])
    np.testing.assert_allclose(gray[..., 0], gray[..., 2])
    np.testing.assert_allclose(augment.random_grayscale(img, p=0.0, seed=seed).numpy(), img / 255.0, atol=1e-6)
    jittered = [augment.color_jitter(img, 1.0, seed=augment.element_seed(3, k)).numpy() for k in range(4)]
    assert min(np.abs(j - img / 255.0).mean() for j in jittered) > 1e-3
    np.testing.assert_allclose(augment.color_jitter(img, 0.0, seed=seed).numpy(), img / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="strength=-1"):
        augment.color_jitter(img, -1, seed=seed)


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
    seed = tf.TensorSpec([2], tf.int64)
    tf.function(lambda x, s: augment.cxr_view(x, 24, seed=s), input_signature=[spec, seed]).get_concrete_function()
    with pytest.raises(AssertionError, match="gaussian_blur called"):
        tf.function(lambda x, s: augment.simclr_view(x, 24, seed=s),
                    input_signature=[spec, seed]).get_concrete_function()


def test_non_image_dtype_is_rejected():
    with pytest.raises(ValueError, match="int32"):
        augment.to_float(np.zeros((4, 4, 3), np.int32))


def _views_in_tf_data(name, num_parallel_calls, images):
    view = augment.get_view_fn(name)
    ds = augment.with_element_seeds(tf.data.Dataset.from_tensor_slices(images), seed=7)
    ds = ds.map(lambda x, seed: view(x, 16, seed=seed), num_parallel_calls=num_parallel_calls)
    return np.stack(list(ds.as_numpy_iterator()))


@pytest.mark.parametrize("name", ["simclr", "cxr"])
def test_views_are_a_function_of_seed_and_position_whatever_the_parallelism(name):
    """Same seed and position -> the same view, serial or parallel and with other random ops run
    in between; another position of the same image -> another view."""
    images = np.stack([_image(24, 24, 0)] * 6)
    serial = _views_in_tf_data(name, None, images)
    tf.random.uniform([7])  # global random state must not matter
    parallel = _views_in_tf_data(name, 4, images)
    np.testing.assert_array_equal(serial, parallel)
    view = augment.get_view_fn(name)
    np.testing.assert_array_equal(view(images[2], 16, seed=augment.element_seed(7, 2)).numpy(), serial[2])
    for a in range(len(images)):
        for b in range(a):
            assert np.abs(serial[a] - serial[b]).max() > 1e-3, (a, b)
