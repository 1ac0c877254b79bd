"""BiT ResNetV2 encoders (google-research/big_transfer) in Keras 3, with a `.npz` weight loader.

Pre-activation bottleneck units (GroupNorm(32) + ReLU before each of the 1x1, 3x3, 1x1
weight-standardised convs; stride on the 3x3; projection shortcut from the pre-activated input),
root 7x7/2 conv + zero pad 1 + 3x3/2 max-pool, final GroupNorm + ReLU + global average pooling.
Inputs are images in [0, 1]; the model rescales them to BiT's [-1, 1] range itself.
"""
from __future__ import annotations

import os

import keras
import numpy as np
from keras import ops

BIT_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
WS_EPSILON = 1e-10
GN_EPSILON = 1e-5
GN_GROUPS = 32
CPU_WIDTHS = (0.25, 0.5)  # narrower than any released BiT model: CPU-sized runs only


@keras.saving.register_keras_serializable(package="baselines")
class StandardizedConv2D(keras.layers.Conv2D):
    """Conv2D whose kernel is standardised (zero mean, unit variance over H, W, in) at every call."""

    def convolution_op(self, inputs, kernel):
        k = ops.cast(kernel, "float32")
        mean = ops.mean(k, axis=(0, 1, 2), keepdims=True)
        var = ops.var(k, axis=(0, 1, 2), keepdims=True)
        k = (k - mean) / ops.sqrt(var + WS_EPSILON)
        return super().convolution_op(inputs, ops.cast(k, kernel.dtype))


def feature_dim(depth: int = 50, width: float = 1) -> int:
    """Feature size of `bit_resnet_v2(depth, width)`."""
    _check(depth, width)
    return int(2048 * width)


def _check(depth: int, width: float) -> None:
    if depth not in BIT_UNITS:
        raise ValueError(f"bit_resnet_v2 depth={depth!r}: expected one of {sorted(BIT_UNITS)}")
    if not (width in CPU_WIDTHS or (float(width).is_integer() and width >= 1)):
        raise ValueError(f"bit_resnet_v2 width={width!r}: expected a positive integer (1, 2, 3, 4) "
                         f"or one of the CPU-sized widths {CPU_WIDTHS}")


def _pad(x, kernel_size: int, name: str):
    pad_total = kernel_size - 1
    pad_beg = pad_total // 2
    return keras.layers.ZeroPadding2D(((pad_beg, pad_total - pad_beg),) * 2, name=name)(x)


def _gn_relu(x, name: str):
    # BiT's 32 groups for every width >= 1; fewer at the CPU-sized widths with narrower layers.
    groups = min(GN_GROUPS, x.shape[-1] // 2)
    x = keras.layers.GroupNormalization(groups=groups, epsilon=GN_EPSILON, name=name)(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _conv(x, filters: int, kernel_size: int, strides: int, name: str):
    return StandardizedConv2D(filters, kernel_size, strides=strides, padding="valid",
                              use_bias=False, name=name)(x)


def _unit(x, filters: int, strides: int, name: str):
    """Pre-activation bottleneck unit producing 4 * filters channels."""
    out_channels = 4 * filters
    pre = _gn_relu(x, f"{name}_a_gn")
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = _conv(pre, out_channels, 1, strides, f"{name}_proj")
    y = _conv(pre, filters, 1, 1, f"{name}_a_conv")
    y = _gn_relu(y, f"{name}_b_gn")
    y = _pad(y, 3, f"{name}_b_pad")
    y = _conv(y, filters, 3, strides, f"{name}_b_conv")
    y = _gn_relu(y, f"{name}_c_gn")
    y = _conv(y, out_channels, 1, 1, f"{name}_c_conv")
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def bit_resnet_v2(
    depth: int = 50,
    width: float = 1,
    input_shape: tuple = (None, None, 3),
    name: str | None = None,
) -> keras.Model:
    """BiT ResNetV2-`depth`x`width` encoder: images [B, H, W, 3] in [0, 1] -> features [B, 2048*width]."""
    _check(depth, width)
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_bit_range")(inputs)
    x = _pad(x, 7, "root_pad")
    x = _conv(x, int(64 * width), 7, 2, "root_conv")
    x = keras.layers.ZeroPadding2D(1, name="root_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="root_pool")(x)
    for b, num_units in enumerate(BIT_UNITS[depth]):
        filters = int(64 * width) * 2**b
        for u in range(num_units):
            x = _unit(x, filters, 2 if (b > 0 and u == 0) else 1, f"block{b + 1}_unit{u + 1:02d}")
    x = _gn_relu(x, "pre_head_gn")
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=name or f"bit_r{depth}x{width:g}")


def bit_key_table(model: keras.Model) -> dict[str, str]:
    """npz key -> '<layer name>/<variable name>' for every BiT weight of `model` (head excluded)."""
    table = {
        "resnet/root_block/standardized_conv2d/kernel": "root_conv/kernel",
        "resnet/group_norm/gamma": "pre_head_gn/gamma",
        "resnet/group_norm/beta": "pre_head_gn/beta",
    }
    names = {layer.name for layer in model.layers}
    for b in range(1, 5):
        u = 1
        while f"block{b}_unit{u:02d}_a_conv" in names:
            unit = f"block{b}_unit{u:02d}"
            prefix = f"resnet/block{b}/unit{u:02d}"
            for part in "abc":
                table[f"{prefix}/{part}/standardized_conv2d/kernel"] = f"{unit}_{part}_conv/kernel"
                table[f"{prefix}/{part}/group_norm/gamma"] = f"{unit}_{part}_gn/gamma"
                table[f"{prefix}/{part}/group_norm/beta"] = f"{unit}_{part}_gn/beta"
            if f"{unit}_proj" in names:
                table[f"{prefix}/a/proj/standardized_conv2d/kernel"] = f"{unit}_proj/kernel"
            u += 1
    return table


HEAD_KERNEL = "resnet/head/conv2d/kernel"
HEAD_BIAS = "resnet/head/conv2d/bias"


def _variables(model: keras.Model) -> dict[str, keras.Variable]:
    return {f"{layer.name}/{w.name}": w for layer in model.layers for w in layer.weights}


def _head_arrays(head: keras.layers.Layer) -> tuple[keras.Variable, keras.Variable]:
    if not isinstance(head, (keras.layers.Dense, keras.layers.Conv2D)) or head.bias is None:
        raise ValueError(f"head={head!r}: expected a built Dense or 1x1 Conv2D layer with a bias")
    return head.kernel, head.bias


def load_bit_npz(model: keras.Model, path: str, *, head: keras.layers.Layer | None = None) -> list[str]:
    """Assigns BiT `.npz` weights at `path` to `model` (from `bit_resnet_v2`) and optionally `head`
    (a Dense or 1x1 Conv2D fed by the model's features); returns the npz keys used. Nothing is
    assigned unless every key is present with the expected shape."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"BiT weights {path}: no such file")
    variables = _variables(model)
    table = bit_key_table(model)
    assignments = [(key, variables[var_path]) for key, var_path in table.items()]
    if head is not None:
        kernel, bias = _head_arrays(head)
        assignments += [(HEAD_KERNEL, kernel), (HEAD_BIAS, bias)]
    values = []
    with np.load(path) as npz:
        stored = set(npz.files)
        for key, variable in assignments:
            if key not in stored:
                raise ValueError(f"BiT weights {path}: missing key {key!r} needed for {variable.path}")
            value = npz[key]
            if key == HEAD_KERNEL and len(variable.shape) == 2 and value.shape[:2] == (1, 1):
                value = value.reshape(value.shape[2:])
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"BiT weights {path}: key {key!r} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(variable.shape)} for {variable.path}")
            values.append(value)
    for (_, variable), value in zip(assignments, values):
        variable.assign(value)
    return [key for key, _ in assignments]


def save_bit_npz(model: keras.Model, path: str, *, head: keras.layers.Layer | None = None) -> list[str]:
    """Writes `model`'s (and optionally `head`'s) weights to `path` under BiT's npz keys; returns them."""
    variables = _variables(model)
    arrays = {key: np.asarray(variables[var_path].numpy()) for key, var_path in bit_key_table(model).items()}
    if head is not None:
        kernel, bias = _head_arrays(head)
        k = np.asarray(kernel.numpy())
        arrays[HEAD_KERNEL] = k.reshape((1, 1) + k.shape) if k.ndim == 2 else k
        arrays[HEAD_BIAS] = np.asarray(bias.numpy())
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return list(arrays)
