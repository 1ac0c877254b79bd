"""ResNet v1 encoders as used by SimCLR (google-research/simclr, tf2/resnet.py), in Keras 3.

Depths 10/18/34 use basic blocks, 50/101/152 bottleneck blocks; channel widths scale with `width`.
Depth 10 (one basic block per group, not a SimCLR release) is the test-sized network of the smoke
preset.
Batch norm: decay 0.9, epsilon 1e-5, synchronized across replicas when `global_bn`; the last BN of
every residual branch starts with gamma = 0. Strided convs use SimCLR's fixed padding. Output is
global-average-pooled features [B, 512*width] (basic) or [B, 2048*width] (bottleneck).

With `sk_ratio > 0` (SimCLRv2's "sk1" models use 0.0625) the network is SimCLR's selective-kernel
variant: a three-conv 3x3 stem (ResNet-D), projection shortcuts that average-pool 2x2 before a 1x1
stride-1 conv (stride-1 'same' pool in the first group, fixed padding + 'valid' pool when strided),
and in bottleneck blocks a selective-kernel 3x3 conv: one 3x3 conv to 2 x filters, split into two
streams mixed by a softmax over per-channel weights computed from their pooled sum.
`simclr_layers` lists the conv and batch-norm layers in SimCLR's creation order, which is how
SimCLR checkpoints number them (`baselines.simclr_import`).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from baselines.batch_norm import BatchNormalization

BATCH_NORM_DECAY = 0.9
BATCH_NORM_EPSILON = 1e-5

# depth -> (bottleneck?, blocks per group)
RESNET_LAYERS: dict[int, tuple[bool, tuple[int, int, int, int]]] = {
    10: (False, (1, 1, 1, 1)),
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}
SIMCLR_DEPTHS = (18, 34, 50, 101, 152)  # the depths above that SimCLR's code builds: what its checkpoints can be
WIDTHS = (0.25, 0.5, 1, 2, 3, 4)  # fractional widths: CPU-sized runs; 1/2/3/4 as in SimCLR
SK_RATIO = 0.0625  # SimCLRv2's selective-kernel models ("sk1")
SK_MIN_DIM = 32  # smallest width of the selective-kernel mixing layer


def feature_dim(depth: int, width: float = 1) -> int:
    """Feature size of `resnet_v1(depth, width)`."""
    _check(depth, width)
    bottleneck, _ = RESNET_LAYERS[depth]
    return int((2048 if bottleneck else 512) * width)


def _check(depth: int, width: float, sk_ratio: float = 0.0) -> None:
    if depth not in RESNET_LAYERS:
        raise ValueError(f"resnet_v1 depth={depth!r}: expected one of {sorted(RESNET_LAYERS)}")
    if width not in WIDTHS:
        raise ValueError(f"resnet_v1 width={width!r}: expected one of {list(WIDTHS)}")
    if not 0.0 <= sk_ratio < 1.0:
        raise ValueError(f"resnet_v1 sk_ratio={sk_ratio!r}: expected 0 (no selective kernels) or a "
                         f"ratio in (0, 1), e.g. {SK_RATIO}")


@keras.saving.register_keras_serializable(package="baselines")
class SplitSum(keras.layers.Layer):
    """Sum of the two channel halves of a tensor (the two selective-kernel streams)."""

    def call(self, x):
        a, b = keras.ops.split(x, 2, axis=-1)
        return a + b


@keras.saving.register_keras_serializable(package="baselines")
class SplitMix(keras.layers.Layer):
    """Selective-kernel mixing: (streams [B,H,W,2C], logits [B,1,1,2C]) -> the streams' sum weighted
    by a softmax over the two streams of each channel."""

    def call(self, inputs):
        x, logits = inputs
        streams = keras.ops.stack(keras.ops.split(x, 2, axis=-1))
        weights = keras.ops.softmax(keras.ops.stack(keras.ops.split(logits, 2, axis=-1)), axis=0)
        return keras.ops.sum(streams * weights, axis=0)


@keras.saving.register_keras_serializable(package="baselines")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose 1x1 convolutions in bfloat16 are matrix products: oneDNN's
    bfloat16 weight-gradient kernel for 1x1 convolutions over small maps (c4/c5 at 64 px) ran up
    to 19x slower than the same product as a matmul on an AMX CPU. float32 is unchanged."""

    def convolution_op(self, inputs, kernel):
        if (inputs.dtype != tf.bfloat16 or tuple(self.kernel_size) != (1, 1) or self.dilation_rate != (1, 1)
                or self.groups != 1 or self.data_format != "channels_last"):
            return super().convolution_op(inputs, kernel)
        sh, sw = self.strides
        x = inputs[:, ::sh, ::sw, :] if (sh, sw) != (1, 1) else inputs
        shape = tf.shape(x)
        y = tf.matmul(tf.reshape(x, [-1, shape[-1]]), tf.reshape(kernel, [shape[-1], self.filters]))
        return tf.reshape(y, tf.concat([shape[:-1], [self.filters]], axis=0))


def _conv(x, filters: int, kernel_size: int, strides: int, name: str):
    """Conv2D with SimCLR's fixed padding: explicit symmetric pad + VALID when strided."""
    if strides > 1:
        pad_total = kernel_size - 1
        pad_beg = pad_total // 2
        x = keras.layers.ZeroPadding2D(((pad_beg, pad_total - pad_beg),) * 2, name=f"{name}_pad")(x)
    return Conv2D(
        filters, kernel_size, strides=strides, padding="same" if strides == 1 else "valid",
        use_bias=False, kernel_initializer=keras.initializers.VarianceScaling(), name=name,
    )(x)


def _bn(x, name: str, global_bn: bool, relu: bool = True, init_zero: bool = False):
    x = BatchNormalization(
        momentum=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON, synchronized=global_bn,
        gamma_initializer="zeros" if init_zero else "ones", name=name,
    )(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _projection(x, filters: int, strides: int, name: str, global_bn: bool, sk_ratio: float):
    """Projection shortcut: 1x1 conv with the block's stride, or ResNet-D's 2x2 average pool then a
    1x1 stride-1 conv when `sk_ratio > 0`; then batch norm without ReLU."""
    if sk_ratio > 0:
        if strides > 1:
            x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_proj_pad")(x)
        x = keras.layers.AveragePooling2D(2, strides=strides, padding="valid" if strides > 1 else "same",
                                          name=f"{name}_proj_pool")(x)
        strides = 1
    x = _conv(x, filters, 1, strides, f"{name}_proj_conv")
    return _bn(x, f"{name}_proj_bn", global_bn, relu=False)


def _sk_conv(x, filters: int, strides: int, name: str, global_bn: bool, sk_ratio: float):
    """Selective-kernel 3x3 conv (see the module docstring), ending in [B, H', W', filters]."""
    x = _conv(x, 2 * filters, 3, strides, f"{name}_conv2")
    x = _bn(x, f"{name}_bn2", global_bn)
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_sk_pool")(
        SplitSum(name=f"{name}_sk_sum")(x))
    mixing = _conv(pooled, max(int(filters * sk_ratio), SK_MIN_DIM), 1, 1, f"{name}_sk_reduce")
    mixing = _bn(mixing, f"{name}_sk_bn", global_bn)
    mixing = _conv(mixing, 2 * filters, 1, 1, f"{name}_sk_expand")
    return SplitMix(name=f"{name}_sk_mix")([x, mixing])


def _basic_block(x, filters: int, strides: int, projection: bool, name: str, global_bn: bool,
                 sk_ratio: float = 0.0):
    shortcut = x
    if projection:
        shortcut = _projection(x, filters, strides, name, global_bn, sk_ratio)
    x = _conv(x, filters, 3, strides, f"{name}_conv1")
    x = _bn(x, f"{name}_bn1", global_bn)
    x = _conv(x, filters, 3, 1, f"{name}_conv2")
    x = _bn(x, f"{name}_bn2", global_bn, relu=False, init_zero=True)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def _bottleneck_block(x, filters: int, strides: int, projection: bool, name: str, global_bn: bool,
                      sk_ratio: float = 0.0):
    shortcut = x
    if projection:
        shortcut = _projection(x, 4 * filters, strides, name, global_bn, sk_ratio)
    x = _conv(x, filters, 1, 1, f"{name}_conv1")
    x = _bn(x, f"{name}_bn1", global_bn)
    if sk_ratio > 0:
        x = _sk_conv(x, filters, strides, name, global_bn, sk_ratio)
    else:
        x = _conv(x, filters, 3, strides, f"{name}_conv2")
        x = _bn(x, f"{name}_bn2", global_bn)
    x = _conv(x, 4 * filters, 1, 1, f"{name}_conv3")
    x = _bn(x, f"{name}_bn3", global_bn, relu=False, init_zero=True)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def last_bn_names(depth: int) -> list[str]:
    """Names of the zero-initialised batch-norm layers closing each residual branch."""
    _check(depth, 1)
    bottleneck, layers = RESNET_LAYERS[depth]
    last = "bn3" if bottleneck else "bn2"
    return [f"group{g + 1}_block{b + 1}_{last}" for g, n in enumerate(layers) for b in range(n)]


def simclr_layers(depth: int, width: float = 1, small_stem: bool = False, sk_ratio: float = 0.0
                  ) -> tuple[list[tuple[str, tuple[int, int, int, int]]], list[tuple[str, int]]]:
    """(conv layers as (name, kernel shape HWIO), batch-norm layers as (name, channels)) of
    `resnet_v1(depth, width, small_stem, sk_ratio=sk_ratio)`, each list in the order SimCLR creates
    them: the stem, then per block the projection shortcut, then the residual branch in order."""
    _check(depth, width, sk_ratio)
    bottleneck, layers = RESNET_LAYERS[depth]
    base = int(64 * width)
    convs, bns = [], []

    def conv(name, k, cin, cout, bn=None):
        convs.append((name, (k, k, cin, cout)))
        if bn:
            bns.append((bn, cout))
        return cout

    if small_stem:
        c = conv("stem_conv", 3, 3, base, "stem_bn")
    elif sk_ratio > 0:
        c = conv("stem_conv1", 3, 3, base // 2, "stem_bn1")
        c = conv("stem_conv2", 3, c, base // 2, "stem_bn2")
        c = conv("stem_conv3", 3, c, base, "stem_bn3")
    else:
        c = conv("stem_conv", 7, 3, base, "stem_bn")
    for g, num_blocks in enumerate(layers):
        filters = base * 2**g
        out = 4 * filters if bottleneck else filters
        for b in range(num_blocks):
            name = f"group{g + 1}_block{b + 1}"
            if b == 0:
                conv(f"{name}_proj_conv", 1, c, out, f"{name}_proj_bn")
            if not bottleneck:
                conv(f"{name}_conv1", 3, c, filters, f"{name}_bn1")
                c = conv(f"{name}_conv2", 3, filters, filters, f"{name}_bn2")
                continue
            conv(f"{name}_conv1", 1, c, filters, f"{name}_bn1")
            if sk_ratio > 0:
                conv(f"{name}_conv2", 3, filters, 2 * filters, f"{name}_bn2")
                mid = conv(f"{name}_sk_reduce", 1, filters, max(int(filters * sk_ratio), SK_MIN_DIM),
                           f"{name}_sk_bn")
                conv(f"{name}_sk_expand", 1, mid, 2 * filters)
            else:
                conv(f"{name}_conv2", 3, filters, filters, f"{name}_bn2")
            c = conv(f"{name}_conv3", 1, filters, out, f"{name}_bn3")
    return convs, bns


def resnet_v1(
    depth: int,
    width: float = 1,
    small_stem: bool = False,
    global_bn: bool = False,
    input_shape: tuple = (None, None, 3),
    name: str | None = None,
    sk_ratio: float = 0.0,
) -> keras.Model:
    """SimCLR ResNet v1 encoder: float images [B, H, W, 3] -> pooled features [B, feature_dim].

    `small_stem` replaces the 7x7/2 conv + 3x3/2 max-pool stem by a 3x3/1 conv (for 32 px inputs).
    `global_bn` uses BatchNormalization(synchronized=True) so statistics span all replicas.
    `sk_ratio > 0` builds the selective-kernel (ResNet-D) variant (module docstring).
    """
    _check(depth, width, sk_ratio)
    bottleneck, layers = RESNET_LAYERS[depth]
    block_fn = _bottleneck_block if bottleneck else _basic_block
    inputs = keras.Input(shape=input_shape, name="images")
    base = int(64 * width)
    if small_stem:
        x = _conv(inputs, base, 3, 1, "stem_conv")
        x = _bn(x, "stem_bn", global_bn)
    else:
        if sk_ratio > 0:
            x = _bn(_conv(inputs, base // 2, 3, 2, "stem_conv1"), "stem_bn1", global_bn)
            x = _bn(_conv(x, base // 2, 3, 1, "stem_conv2"), "stem_bn2", global_bn)
            x = _bn(_conv(x, base, 3, 1, "stem_conv3"), "stem_bn3", global_bn)
        else:
            x = _conv(inputs, base, 7, 2, "stem_conv")
            x = _bn(x, "stem_bn", global_bn)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for g, (num_blocks, strides) in enumerate(zip(layers, (1, 2, 2, 2))):
        filters = base * 2**g
        for b in range(num_blocks):
            x = block_fn(
                x, filters, strides if b == 0 else 1, projection=b == 0,
                name=f"group{g + 1}_block{b + 1}", global_bn=global_bn, sk_ratio=sk_ratio,
            )
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs,
                       name=name or f"resnet{depth}_x{width:g}" + ("_sk" if sk_ratio > 0 else ""))
