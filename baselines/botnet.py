"""BoTNet encoders (Srinivas et al. 2021, "Bottleneck Transformers for Visual Recognition") in Keras 3.

BoT50 is the SimCLR ResNet-50 v1 of `baselines.resnet` (same stem, small-image stem, width
multipliers, c2-c4 stages and batch norm: decay 0.9, epsilon 1e-5, synchronized when `global_bn`)
in which the three c5 blocks replace their 3x3 convolution by global multi-head self-attention:

  1x1 conv -> BN+ReLU -> MHSA -> [2x2 average pool, stride 2, 'same': first block only, so its
  attention runs at the c5 input resolution] -> BN+ReLU -> 1x1 conv -> BN (gamma = 0 at init)
  -> add shortcut -> ReLU.

The first block's projection shortcut (1x1 conv, stride 2) is followed by BN and ReLU, as in the
authors' released code (timm's port omits that ReLU).

MHSA (`RelativeSelfAttention2D`): 4 heads at every width, each of (c5 bottleneck channels)/4 dims
(128 at width 1, 32 at width 0.25); separate bias-free q/k/v projections (init normal, stddev
0.01), no output projection; q is scaled by d^-1/2 before both logit terms; logits = q.k + a 2-D
relative-position term whose height table (2H-1 rows) and width table (2W-1 rows) belong to the
block and are shared by its heads (init normal, stddev d^-1/2).

Position tables are tied to the feature-map size, so a BoTNet encoder is built for one image size
(`image_size`) and takes only images of that size; weights do not move between image sizes.
Every attention layer must see at least a 2x2 map (`check_image_size`).
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from baselines import resnet

BOTNET_DEPTHS = (50,)
HEADS = 4
QKV_STDDEV = 0.01
MIN_ATTENTION_SIZE = 2  # attention over a single position would be a 1x1 convolution
SHORTCUT_RELU = True  # the authors' code: BN + ReLU on the projection shortcut


def feature_dim(depth: int = 50, width: float = 1) -> int:
    """Feature size of `botnet(depth, width, ...)`."""
    _check(depth, width)
    return resnet.feature_dim(depth, width)


def _check(depth: int, width: float) -> None:
    if depth not in BOTNET_DEPTHS:
        raise ValueError(f"botnet depth={depth!r}: expected one of {list(BOTNET_DEPTHS)}")
    if width not in resnet.WIDTHS:
        raise ValueError(f"botnet width={width!r}: expected one of {list(resnet.WIDTHS)}")


def c5_input_size(image_size: int, small_stem: bool) -> int:
    """Side of the feature map entering c5 (where the first block attends) for square images."""
    size = image_size if small_stem else math.ceil(math.ceil(image_size / 2) / 2)  # 7x7/2 conv, 3x3/2 pool
    return math.ceil(math.ceil(size / 2) / 2)  # the stride-2 first blocks of c3 and c4


def attention_sizes(image_size: int, small_stem: bool) -> tuple[int, int]:
    """(first c5 block, other c5 blocks): the map sides the attention layers run at."""
    first = c5_input_size(image_size, small_stem)
    return first, math.ceil(first / 2)


def min_image_size(small_stem: bool) -> int:
    """Smallest image side at which every attention layer sees at least a 2x2 map."""
    size = 1
    while min(attention_sizes(size, small_stem)) < MIN_ATTENTION_SIZE:
        size += 1
    return size


def check_image_size(image_size: int | None, small_stem: bool) -> None:
    """Raises ValueError unless every attention layer of a BoTNet at `image_size` sees >= 2x2."""
    if image_size is None:
        raise ValueError("botnet needs the image size its position tables are built for "
                         "(BackboneConfig.image_size), got None")
    first, rest = attention_sizes(image_size, small_stem)
    if rest < MIN_ATTENTION_SIZE:
        stem = "small stem" if small_stem else "ImageNet stem"
        other = ("" if small_stem else f", or the small stem (-small) from {min_image_size(True)} px")
        raise ValueError(
            f"image size {image_size} with the {stem} gives c5 a {first}x{first} input, so its last "
            f"blocks attend over {rest}x{rest} (attention needs at least {MIN_ATTENTION_SIZE}x"
            f"{MIN_ATTENTION_SIZE}); use images of at least {min_image_size(small_stem)} px{other}")


def _relative_selector(length: int) -> np.ndarray:
    """One-hot [L, L, 2L-1]: entry [i, j, m] is 1 where m = j - i + L - 1 (the table row of key j
    seen from query i)."""
    i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    return np.eye(2 * length - 1, dtype=np.float32)[j - i + length - 1]


def relative_logits(q, rel_height, rel_width):
    """Position logits [B, heads, H, W, H, W] of queries q [B, H, W, heads, d]: entry
    [b, n, x, y, x', y'] = q[b, x, y, n] . (rel_height[x' - x + H - 1] + rel_width[y' - y + W - 1])
    for tables rel_height [2H-1, d] and rel_width [2W-1, d]."""
    height, width = q.shape[1], q.shape[2]
    select_h = ops.cast(_relative_selector(height), q.dtype)
    select_w = ops.cast(_relative_selector(width), q.dtype)
    by_row = ops.einsum("bxynd,md->bnxym", q, rel_height)
    by_row = ops.einsum("bnxym,xkm->bnxyk", by_row, select_h)  # [B, n, H, W, H(key row)]
    by_col = ops.einsum("bxynd,md->bnxym", q, rel_width)
    by_col = ops.einsum("bnxym,ylm->bnxyl", by_col, select_w)  # [B, n, H, W, W(key column)]
    return by_row[..., :, None] + by_col[..., None, :]


@keras.saving.register_keras_serializable(package="baselines")
class RelativeSelfAttention2D(keras.layers.Layer):
    """BoTNet's MHSA: global multi-head self-attention over a static [H, W] feature map with 2-D
    relative position logits; [B, H, W, C] -> [B, H, W, heads * head_dim] (heads concatenated)."""

    def __init__(self, heads: int, head_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.head_dim = head_dim

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if height is None or width is None:
            raise ValueError(f"{self.name}: needs a static feature-map size (its position tables depend "
                             f"on it), got input shape {tuple(input_shape)}")
        out = self.heads * self.head_dim

        def normal(stddev):
            return keras.initializers.RandomNormal(stddev=stddev)

        self.query = self.add_weight(shape=(channels, out), initializer=normal(QKV_STDDEV), name="query")
        self.key = self.add_weight(shape=(channels, out), initializer=normal(QKV_STDDEV), name="key")
        self.value = self.add_weight(shape=(channels, out), initializer=normal(QKV_STDDEV), name="value")
        table_stddev = self.head_dim ** -0.5
        self.rel_height = self.add_weight(shape=(2 * height - 1, self.head_dim),
                                          initializer=normal(table_stddev), name="rel_height")
        self.rel_width = self.add_weight(shape=(2 * width - 1, self.head_dim),
                                         initializer=normal(table_stddev), name="rel_width")

    def call(self, inputs):
        height, width = inputs.shape[1], inputs.shape[2]
        n, d = self.heads, self.head_dim

        def project(kernel):
            return ops.reshape(ops.einsum("bxyc,ce->bxye", inputs, kernel), (-1, height, width, n, d))

        q = project(self.query) * ops.cast(d ** -0.5, inputs.dtype)
        k, v = project(self.key), project(self.value)
        logits = ops.einsum("bxynd,bXYnd->bnxyXY", q, k) + relative_logits(q, self.rel_height, self.rel_width)
        logits = ops.reshape(logits, (-1, n, height * width, height * width))
        weights = ops.softmax(logits, axis=-1)
        out = ops.einsum("bnij,bjnd->bind", weights, ops.reshape(v, (-1, height * width, n, d)))
        return ops.reshape(out, (-1, height, width, n * d))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.heads * self.head_dim,)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "head_dim": self.head_dim}


def _bot_block(x, filters: int, strides: int, projection: bool, name: str, global_bn: bool,
               shortcut_relu: bool):
    shortcut = x
    if projection:
        shortcut = resnet._conv(x, 4 * filters, 1, strides, f"{name}_proj_conv")
        shortcut = resnet._bn(shortcut, f"{name}_proj_bn", global_bn, relu=shortcut_relu)
    x = resnet._conv(x, filters, 1, 1, f"{name}_conv1")
    x = resnet._bn(x, f"{name}_bn1", global_bn)
    x = RelativeSelfAttention2D(HEADS, filters // HEADS, name=f"{name}_mhsa")(x)
    if strides > 1:
        x = keras.layers.AveragePooling2D(2, strides=strides, padding="same", name=f"{name}_pool")(x)
    x = resnet._bn(x, f"{name}_bn2", global_bn)
    x = resnet._conv(x, 4 * filters, 1, 1, f"{name}_conv3")
    x = resnet._bn(x, f"{name}_bn3", global_bn, relu=False, init_zero=True)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def botnet(
    depth: int = 50,
    width: float = 1,
    *,
    image_size: int,
    small_stem: bool = False,
    global_bn: bool = False,
    shortcut_relu: bool = SHORTCUT_RELU,
    name: str | None = None,
) -> keras.Model:
    """BoTNet encoder for `image_size` x `image_size` images in [0, 1] -> pooled features
    [B, 2048 * width]; layer names as in `resnet.resnet_v1`, attention layers `group4_block*_mhsa`.

    `shortcut_relu=False` gives timm's variant (BN without ReLU on the projection shortcut)."""
    _check(depth, width)
    check_image_size(image_size, small_stem)
    _, layers = resnet.RESNET_LAYERS[depth]
    inputs = keras.Input(shape=(image_size, image_size, 3), name="images")
    if small_stem:
        x = resnet._conv(inputs, int(64 * width), 3, 1, "stem_conv")
        x = resnet._bn(x, "stem_bn", global_bn)
    else:
        x = resnet._conv(inputs, int(64 * width), 7, 2, "stem_conv")
        x = resnet._bn(x, "stem_bn", global_bn)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for g, (num_blocks, strides) in enumerate(zip(layers, (1, 2, 2, 2))):
        filters = int(64 * width) * 2**g
        for b in range(num_blocks):
            block_name = f"group{g + 1}_block{b + 1}"
            block_strides = strides if b == 0 else 1
            if g == 3:
                x = _bot_block(x, filters, block_strides, projection=b == 0, name=block_name,
                               global_bn=global_bn, shortcut_relu=shortcut_relu)
            else:
                x = resnet._bottleneck_block(x, filters, block_strides, projection=b == 0,
                                             name=block_name, global_bn=global_bn)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=name or f"botnet{depth}_x{width:g}_{image_size}px")
