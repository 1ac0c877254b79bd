"""Per-example image augmentations for tf.data (graph-compatible), after SimCLR v2's data_util.

Every function takes one image [H, W, 3] (uint8, or float in [0, 1]) and returns float32 in [0, 1].
Every random function is stateless: it takes a keyword `seed`, an int32/int64 tensor of shape [2]
(`tf.random.stateless_*` convention), and its result is a function of the image and that seed only,
so a tf.data map gives the same views whatever its `num_parallel_calls` or thread timing. Derive
one seed per element from an integer seed and the element's position with `element_seed` or
`with_element_seeds`; a function that draws several times splits its seed
(`tf.random.experimental.stateless_split`).
"""
from __future__ import annotations

import functools

import math
from typing import Callable

import tensorflow as tf


def to_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] or float [0, 1] image -> float32 [0, 1]."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        return tf.image.convert_image_dtype(image, tf.float32)
    if not image.dtype.is_floating:
        raise ValueError(f"image dtype {image.dtype.name}: expected uint8 or a float dtype")
    return tf.cast(image, tf.float32)


def element_seed(seed, index, stream: int = 0) -> tf.Tensor:
    """Stateless seed int64 [2] of element `index` (int scalar) of stream `stream` under the integer
    `seed`; distinct (seed, stream, index) give independent draws."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(stream, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def with_element_seeds(ds: tf.data.Dataset, seed: int, stream: int = 0) -> tf.data.Dataset:
    """`ds` as (element, element_seed(seed, position, stream)) pairs, position counted from 0."""
    seeds = tf.data.Dataset.counter().map(lambda i: element_seed(seed, i, stream))
    return tf.data.Dataset.zip(ds, seeds)


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
    image = tf.image.resize(image, [size, size], method="bicubic")
    return tf.clip_by_value(image, 0.0, 1.0)


def _split(seed, n: int) -> list[tf.Tensor]:
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def random_apply(fn: Callable[[tf.Tensor], tf.Tensor], p: float, image: tf.Tensor, *, seed) -> tf.Tensor:
    """Applies `fn` to `image` with probability `p`."""
    return tf.cond(tf.random.stateless_uniform([], seed) < p, lambda: fn(image), lambda: image)


def random_resized_crop(image, size: int, area_range=(0.08, 1.0), aspect=(3 / 4, 4 / 3), *,
                        seed) -> tf.Tensor:
    """Crop covering a random fraction `area_range` of the image with aspect ratio in `aspect`,
    resized (bicubic) to [size, size]; falls back to the whole image after 100 attempts."""
    image = to_float(image)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=aspect,
        area_range=area_range,
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, crop_size)
    return _resize(image, size)


def random_flip(image, *, seed) -> tf.Tensor:
    """Left-right flip with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(to_float(image), seed)


def _random_brightness(image, max_delta, seed):
    factor = tf.random.stateless_uniform([], seed, tf.maximum(1.0 - max_delta, 0.0), 1.0 + max_delta)
    return image * factor


def color_jitter(image, strength: float, *, seed) -> tf.Tensor:
    """Brightness, contrast, saturation (0.8*strength) and hue (0.2*strength) in random order."""
    if strength < 0:
        raise ValueError(f"color_jitter strength={strength}: expected a non-negative number")
    image = to_float(image)
    if strength == 0:
        return image
    s = 0.8 * strength
    order_seed, *op_seeds = _split(seed, 5)
    ops = [
        lambda x: _random_brightness(x, s, op_seeds[0]),
        lambda x: tf.image.stateless_random_contrast(x, max(1 - s, 0.0), 1 + s, op_seeds[1]),
        lambda x: tf.image.stateless_random_saturation(x, max(1 - s, 0.0), 1 + s, op_seeds[2]),
        lambda x: tf.image.stateless_random_hue(x, min(0.2 * strength, 0.5), op_seeds[3]),
    ]
    order = tf.argsort(tf.random.stateless_uniform([len(ops)], order_seed))  # a uniform permutation
    for i in range(len(ops)):
        branches = [lambda f=f, x=image: tf.clip_by_value(f(x), 0.0, 1.0) for f in ops]
        image = tf.switch_case(order[i], branches)
    return image


def to_grayscale(image) -> tf.Tensor:
    """Luma replicated on 3 channels."""
    return tf.tile(tf.image.rgb_to_grayscale(to_float(image)), [1, 1, 3])


def random_grayscale(image, p: float = 0.2, *, seed) -> tf.Tensor:
    """Grayscale with probability `p`."""
    return random_apply(to_grayscale, p, to_float(image), seed=seed)


def random_color_jitter(image, strength: float = 1.0, p_jitter: float = 0.8, p_gray: float = 0.2, *,
                        seed):
    """SimCLR's colour distortion: jitter with probability `p_jitter`, then grayscale with `p_gray`."""
    apply_seed, jitter_seed, gray_seed = _split(seed, 3)
    image = random_apply(lambda x: color_jitter(x, strength, seed=jitter_seed), p_jitter, to_float(image),
                         seed=apply_seed)
    return random_grayscale(image, p_gray, seed=gray_seed)


def gaussian_blur(image, kernel_size: int, sigma) -> tf.Tensor:
    """Separable Gaussian blur with an odd `kernel_size` (rounded up) and std `sigma` (zero-padded)."""
    image = to_float(image)
    radius = int(kernel_size) // 2
    sigma = tf.cast(sigma, tf.float32)
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-tf.square(x) / (2.0 * tf.square(sigma)))
    kernel /= tf.reduce_sum(kernel)
    channels = tf.shape(image)[-1]
    k_h = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    k_w = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(image[None], k_h, strides=[1, 1, 1, 1], padding="SAME")
    blurred = tf.nn.depthwise_conv2d(blurred, k_w, strides=[1, 1, 1, 1], padding="SAME")
    return tf.clip_by_value(blurred[0], 0.0, 1.0)


def random_blur(image, p: float = 0.5, sigma_range=(0.1, 2.0), *, seed) -> tf.Tensor:
    """With probability `p`, Gaussian blur with kernel height//10 and sigma uniform in `sigma_range`."""
    image = to_float(image)
    height = image.shape[0]
    if height is None:
        raise ValueError("random_blur: image height must be static (apply after a fixed-size crop)")
    apply_seed, sigma_seed = _split(seed, 2)
    sigma = tf.random.stateless_uniform([], sigma_seed, *sigma_range)
    return random_apply(lambda x: gaussian_blur(x, max(height // 10, 1), sigma), p, image, seed=apply_seed)


def rotation_transform(angle, height, width) -> tf.Tensor:
    """Projective transform [1, 8] mapping output to input pixels for a counter-clockwise rotation
    by `angle` radians about the image centre."""
    angle = tf.cast(angle, tf.float32)
    h = tf.cast(height, tf.float32) - 1.0
    w = tf.cast(width, tf.float32) - 1.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    zero = tf.zeros([])
    return tf.reshape(tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zero, zero]), [1, 8])


def rotate(image, degrees, interpolation: str = "BILINEAR") -> tf.Tensor:
    """Counter-clockwise rotation by `degrees` about the centre; uncovered pixels are 0."""
    image = to_float(image)
    shape = tf.shape(image)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=rotation_transform(tf.cast(degrees, tf.float32) * (math.pi / 180.0), shape[0], shape[1]),
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )
    return tf.clip_by_value(out[0], 0.0, 1.0)


def random_rotation(image, max_degrees: float, *, seed) -> tf.Tensor:
    """Rotation by an angle uniform in [-max_degrees, max_degrees]."""
    return rotate(image, tf.random.stateless_uniform([], seed, -max_degrees, max_degrees))


SIMCLR_MIN_CROP_AREA = 0.08  # SimCLR's (and Inception's) smallest random-resized-crop area
SIMCLR_COLOR_STRENGTH = 1.0  # SimCLR's colour-distortion strength
CXR_COLOR_STRENGTH = 0.5  # Azizi et al.'s for chest X-rays


def simclr_view(image, size: int, *, seed, min_crop_area: float = SIMCLR_MIN_CROP_AREA,
                color_strength: float = SIMCLR_COLOR_STRENGTH) -> tf.Tensor:
    """SimCLR view: random resized crop (area in [min_crop_area, 1]), flip, colour distortion
    (SimCLR's strength 1.0 by default), blur with p 0.5."""
    crop_seed, flip_seed, color_seed, blur_seed = _split(seed, 4)
    image = random_resized_crop(image, size, area_range=(min_crop_area, 1.0), seed=crop_seed)
    image = random_flip(image, seed=flip_seed)
    image = random_color_jitter(image, strength=color_strength, seed=color_seed)
    image = random_blur(image, p=0.5, seed=blur_seed)
    return tf.ensure_shape(image, [size, size, 3])


def cxr_view(image, size: int, *, seed, min_crop_area: float = SIMCLR_MIN_CROP_AREA,
             color_strength: float = CXR_COLOR_STRENGTH) -> tf.Tensor:
    """Chest X-ray view (Azizi et al.): random resized crop (area in [min_crop_area, 1]), flip,
    rotation up to 45 degrees and colour distortion (the paper's strength 0.5 by default); no
    blur."""
    crop_seed, flip_seed, rotation_seed, color_seed = _split(seed, 4)
    image = random_resized_crop(image, size, area_range=(min_crop_area, 1.0), seed=crop_seed)
    image = random_flip(image, seed=flip_seed)
    image = random_rotation(image, 45.0, seed=rotation_seed)
    image = random_color_jitter(image, strength=color_strength, seed=color_seed)
    return tf.ensure_shape(image, [size, size, 3])


def eval_view(image, size: int, crop_proportion: float = 0.875) -> tf.Tensor:
    """Deterministic evaluation view: central square crop of `crop_proportion` of the shorter side,
    resized (bicubic) to [size, size]."""
    image = to_float(image)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * crop_proportion, tf.int32)
    side = tf.maximum(side, 1)
    top, left = (h - side) // 2, (w - side) // 2
    image = tf.slice(image, [top, left, 0], [side, side, 3])
    return tf.ensure_shape(_resize(image, size), [size, size, 3])


ViewFn = Callable[..., tf.Tensor]  # view_fn(image, size, *, seed) -> float32 [size, size, 3]
VIEWS: dict[str, ViewFn] = {"simclr": simclr_view, "cxr": cxr_view}


VIEW_COLOR_STRENGTH = {"simclr": SIMCLR_COLOR_STRENGTH, "cxr": CXR_COLOR_STRENGTH}  # each view's own


def get_view_fn(name: str, min_crop_area: float = SIMCLR_MIN_CROP_AREA,
                color_scale: float = 1.0) -> ViewFn:
    """The training view function `(image, size, *, seed) -> view` registered as `name`, its random
    crops covering at least `min_crop_area` of the image, its colour distortion
    `color_scale` times the view's own strength (`VIEW_COLOR_STRENGTH`)."""
    if name not in VIEWS:
        raise ValueError(f"augmentation={name!r}: expected one of {sorted(VIEWS)}")
    if not 0 < min_crop_area <= 1:
        raise ValueError(f"min_crop_area={min_crop_area}: expected a fraction in (0, 1]")
    if color_scale < 0:
        raise ValueError(f"color_scale={color_scale}: expected a number >= 0")
    return functools.partial(VIEWS[name], min_crop_area=min_crop_area,
                             color_strength=color_scale * VIEW_COLOR_STRENGTH[name])
