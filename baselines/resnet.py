"""ResNet v1 encoders as used by SimCLR (google-research/simclr, tf2/resnet.py), in Keras 3.

Depths 18/34 use basic blocks, 50/101/152 bottleneck blocks; channel widths scale with `width`.
Batch norm: decay 0.9, epsilon 1e-5, synchronized across replicas when `global_bn`; the last BN of
every residual branch starts with gamma = 0. Strided convs use SimCLR's fixed padding. Output is
global-average-pooled features [B, 512*width] (basic) or [B, 2048*width] (bottleneck).
"""
from __future__ import annotations

import keras

from baselines.batch_norm import BatchNormalization

BATCH_NORM_DECAY = 0.9
BATCH_NORM_EPSILON = 1e-5

# depth -> (bottleneck?, blocks per group)
RESNET_LAYERS: dict[int, tuple[bool, tuple[int, int, int, int]]] = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}
WIDTHS = (0.25, 0.5, 1, 2, 4)  # fractional widths: CPU-sized runs; 1/2/4 as in SimCLR


def feature_dim(depth: int, width: float = 1) -> int:
    """Feature size of `resnet_v1(depth, width)`."""
    _check(depth, width)
    bottleneck, _ = RESNET_LAYERS[depth]
    return int((2048 if bottleneck else 512) * width)


def _check(depth: int, width: float) -> None:
    if depth not in RESNET_LAYERS:
        raise ValueError(f"resnet_v1 depth={depth!r}: expected one of {sorted(RESNET_LAYERS)}")
    if width not in WIDTHS:
        raise ValueError(f"resnet_v1 width={width!r}: expected one of {list(WIDTHS)}")


def _conv(x, filters: int, kernel_size: int, strides: int, name: str):
    """Conv2D with SimCLR's fixed padding: explicit symmetric pad + VALID when strided."""
    if strides > 1:
        pad_total = kernel_size - 1
        pad_beg = pad_total // 2
        x = keras.layers.ZeroPadding2D(((pad_beg, pad_total - pad_beg),) * 2, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same" if strides == 1 else "valid",
        use_bias=False, kernel_initializer=keras.initializers.VarianceScaling(), name=name,
    )(x)


def _bn(x, name: str, global_bn: bool, relu: bool = True, init_zero: bool = False):
    x = BatchNormalization(
        momentum=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON, synchronized=global_bn,
        gamma_initializer="zeros" if init_zero else "ones", name=name,
    )(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters: int, strides: int, projection: bool, name: str, global_bn: bool):
    shortcut = x
    if projection:
        shortcut = _conv(x, filters, 1, strides, f"{name}_proj_conv")
        shortcut = _bn(shortcut, f"{name}_proj_bn", global_bn, relu=False)
    x = _conv(x, filters, 3, strides, f"{name}_conv1")
    x = _bn(x, f"{name}_bn1", global_bn)
    x = _conv(x, filters, 3, 1, f"{name}_conv2")
    x = _bn(x, f"{name}_bn2", global_bn, relu=False, init_zero=True)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def _bottleneck_block(x, filters: int, strides: int, projection: bool, name: str, global_bn: bool):
    shortcut = x
    if projection:
        shortcut = _conv(x, 4 * filters, 1, strides, f"{name}_proj_conv")
        shortcut = _bn(shortcut, f"{name}_proj_bn", global_bn, relu=False)
    x = _conv(x, filters, 1, 1, f"{name}_conv1")
    x = _bn(x, f"{name}_bn1", global_bn)
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


def resnet_v1(
    depth: int,
    width: float = 1,
    small_stem: bool = False,
    global_bn: bool = False,
    input_shape: tuple = (None, None, 3),
    name: str | None = None,
) -> keras.Model:
    """SimCLR ResNet v1 encoder: float images [B, H, W, 3] -> pooled features [B, feature_dim].

    `small_stem` replaces the 7x7/2 conv + 3x3/2 max-pool stem by a 3x3/1 conv (for 32 px inputs).
    `global_bn` uses BatchNormalization(synchronized=True) so statistics span all replicas.
    """
    _check(depth, width)
    bottleneck, layers = RESNET_LAYERS[depth]
    block_fn = _bottleneck_block if bottleneck else _basic_block
    inputs = keras.Input(shape=input_shape, name="images")
    if small_stem:
        x = _conv(inputs, int(64 * width), 3, 1, "stem_conv")
        x = _bn(x, "stem_bn", global_bn)
    else:
        x = _conv(inputs, int(64 * width), 7, 2, "stem_conv")
        x = _bn(x, "stem_bn", global_bn)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for g, (num_blocks, strides) in enumerate(zip(layers, (1, 2, 2, 2))):
        filters = int(64 * width) * 2**g
        for b in range(num_blocks):
            x = block_fn(
                x, filters, strides if b == 0 else 1, projection=b == 0,
                name=f"group{g + 1}_block{b + 1}", global_bn=global_bn,
            )
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}_x{width:g}")
