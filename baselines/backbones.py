"""Builds the encoder named by a BackboneConfig."""
from __future__ import annotations

import keras

from baselines import bit, botnet, resnet
from baselines.api import BackboneConfig

FAMILIES = ("resnet_v1", "bit", "botnet")


def build_encoder(config: BackboneConfig, input_shape: tuple = (None, None, 3)) -> keras.Model:
    """Encoder mapping float images [B, S, S, 3] in [0, 1] to features [B, D] for `config`.

    `small_stem` and `global_bn` apply to `resnet_v1` and `botnet`, `sk_ratio` to `resnet_v1` only;
    BiT has its fixed root and GroupNorm. A `botnet` encoder takes only `config.image_size` square
    images (`input_shape`, if its sides are given, must agree)."""
    if config.family == "resnet_v1":
        return resnet.resnet_v1(config.depth, config.width, small_stem=config.small_stem,
                                global_bn=config.global_bn, input_shape=input_shape,
                                sk_ratio=config.sk_ratio)
    if config.sk_ratio:
        raise ValueError(f"BackboneConfig.sk_ratio={config.sk_ratio}: selective kernels exist only "
                         "in family 'resnet_v1'")
    if config.family == "bit":
        return bit.bit_resnet_v2(config.depth, config.width, input_shape=input_shape)
    if config.family == "botnet":
        if tuple(input_shape[:2]) not in ((None, None), (config.image_size,) * 2):
            raise ValueError(f"input_shape={tuple(input_shape)}: a botnet encoder is built for "
                             f"BackboneConfig.image_size={config.image_size}")
        return botnet.botnet(config.depth, config.width, image_size=config.image_size,
                             small_stem=config.small_stem, global_bn=config.global_bn)
    raise ValueError(f"BackboneConfig.family={config.family!r}: expected one of {list(FAMILIES)}")


def encoder_feature_dim(config: BackboneConfig) -> int:
    """Feature size D of `build_encoder(config)` without building it."""
    if config.family != "resnet_v1" and config.sk_ratio:
        raise ValueError(f"BackboneConfig.sk_ratio={config.sk_ratio}: selective kernels exist only "
                         "in family 'resnet_v1'")
    if config.family == "resnet_v1":
        return resnet.feature_dim(config.depth, config.width)
    if config.family == "bit":
        return bit.feature_dim(config.depth, config.width)
    if config.family == "botnet":
        return botnet.feature_dim(config.depth, config.width)
    raise ValueError(f"BackboneConfig.family={config.family!r}: expected one of {list(FAMILIES)}")
