"""SimCLR v2's projection head and fine-tuning from one of its layers (`ft_proj_selector`): what
both the contrastive methods and the checkpoint loader build."""
from __future__ import annotations

import keras

from baselines.batch_norm import BatchNormalization
from baselines.resnet import BATCH_NORM_DECAY, BATCH_NORM_EPSILON


def projection_head(
    input_dim: int,
    *,
    num_layers: int,
    output_dim: int,
    global_bn: bool = False,
    name: str = "projection_head",
) -> keras.Sequential:
    """SimCLR v2 projection head: `num_layers` dense layers, each followed by batch norm
    (synchronized across replicas if `global_bn`); ReLU between layers; hidden width `input_dim`;
    the last layer has no bias and its batch norm no offset, as in SimCLR."""
    if num_layers < 1 or output_dim < 1:
        raise ValueError(f"projection_head: need num_layers >= 1 and output_dim >= 1, got {num_layers}, {output_dim}")
    layers: list[keras.layers.Layer] = [keras.Input((input_dim,), name="features")]
    for i in range(num_layers):
        last = i == num_layers - 1
        layers.append(keras.layers.Dense(output_dim if last else input_dim, use_bias=False,
                                         kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                         name=f"dense_{i}"))
        layers.append(BatchNormalization(momentum=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON,
                                        center=not last, synchronized=global_bn, name=f"bn_{i}"))
        if not last:
            layers.append(keras.layers.ReLU(name=f"relu_{i}"))
    return keras.Sequential(layers, name=name)


def with_head_layers(encoder: keras.Model, head: keras.Model, num_layers: int) -> keras.Model:
    """`encoder` followed by the first `num_layers` layers of a `projection_head` (dense, batch norm,
    and ReLU except after the head's last layer): SimCLRv2's `ft_proj_selector=num_layers`."""
    total = sum(isinstance(l, keras.layers.Dense) for l in head.layers)
    if not 0 < num_layers <= total:
        raise ValueError(f"ft_proj_selector={num_layers}: the projection head has {total} layers; "
                         f"expected 1..{total}")
    inputs = keras.Input(encoder.input_shape[1:], name="images")
    x = encoder(inputs)
    for i in range(num_layers):
        x = head.get_layer(f"bn_{i}")(head.get_layer(f"dense_{i}")(x))
        if i < total - 1:
            x = head.get_layer(f"relu_{i}")(x)
    return keras.Model(inputs, x, name=f"{encoder.name}_proj{num_layers}")
