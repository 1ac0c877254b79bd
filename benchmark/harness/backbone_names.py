"""Backbones written as text, e.g. resnet_v1-50x2, bit-50, botnet-50x0.25-small: how
`--backbone`, a distillation student (`distill:<backbone>`) and control names spell them."""
from __future__ import annotations

from baselines import api, backbones


def backbone_tag(backbone: api.BackboneConfig) -> str:
    """`backbone` written like `--backbone`, e.g. resnet_v1-50x2, resnet_v1-18-small-sk1, bit-50,
    botnet-50x0.25-small."""
    width = "" if float(backbone.width) == 1 else f"x{float(backbone.width):g}"
    small = "-small" if backbone.small_stem and backbone.family != "bit" else ""
    sk = "-sk1" if backbone.sk_ratio else ""
    return f"{backbone.family}-{backbone.depth}{width}{small}{sk}"


def parse_backbone(text: str, flag: str = "--backbone=") -> api.BackboneConfig:
    """Parses a backbone written like --backbone, e.g. resnet_v1-50x2, resnet_v1-18-small,
    bit-101x3, botnet-50x0.25-small (a botnet's image size is set from the preset by the run);
    errors name `flag` (written before the text)."""
    parts = text.split("-")
    try:
        family, size = parts[0], parts[1]
        depth, _, width = size.partition("x")
        suffixes = parts[2:]
        small = "small" in suffixes
        sk = [s for s in suffixes if s in ("sk0", "sk1")]
        if (len(set(suffixes)) != len(suffixes) or len(sk) > 1 or len(suffixes) != small + len(sk)
                or family not in backbones.FAMILIES or (family == "bit" and suffixes)
                or (family != "resnet_v1" and sk)):
            raise ValueError
        config = api.BackboneConfig(family=family, depth=int(depth), width=float(width or 1),
                                    small_stem=small, sk_ratio=0.0625 if sk == ["sk1"] else 0.0)
    except (IndexError, ValueError):
        raise ValueError(f"{flag}{text}: expected resnet_v1-<depth>[x<width>][-small][-sk0|-sk1], "
                         "bit-<depth>[x<width>] or botnet-50[x<width>][-small]") from None
    try:
        backbones.encoder_feature_dim(config)  # a depth and width the family builds
    except ValueError as e:
        raise ValueError(f"{flag}{text}: {e}") from None
    return config
