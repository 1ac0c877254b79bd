"""The supervised ImageNet baseline: a BiT ResNetV2 encoder, fine-tuned with BiT-HyperRule.

It does not train on the unlabeled groups. `pretrain` returns the BiT encoder initialised from
`init_checkpoint` (a BiT `.npz`, e.g. BiT-M R50x1, or an earlier stage with a BiT backbone) or,
without one, from scratch (random init), and writes it to `checkpoint_dir` as a finished stage.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from baselines import bit, bit_hyperrule, checkpoint
from baselines.api import BackboneConfig, FinetunePolicy, Method, PretrainConfig


class SupervisedBiT(Method):
    """BiT ResNetV2 (family "bit") from a local BiT `.npz` or random init; BiT-HyperRule fine-tuning."""

    name = "supervised"

    def backbone(self, requested: BackboneConfig) -> BackboneConfig:
        """The BiT ResNetV2 closest to `requested`: its depth if BiT has it (50/101/152, else 50) and
        its width if BiT builds it (whole numbers, or the CPU-sized 0.25/0.5; else 1); a `bit`
        request is kept as is."""
        if requested.family == "bit":
            return requested
        depth = requested.depth if requested.depth in bit.BIT_UNITS else 50
        whole = requested.width >= 1 and float(requested.width).is_integer()
        width = requested.width if whole or requested.width in bit.CPU_WIDTHS else 1
        return BackboneConfig(family="bit", depth=depth, width=width, small_stem=False, global_bn=False)

    def __init__(self):
        self._from_weights = False

    def finetune_policy(self, num_examples: int) -> FinetunePolicy | None:
        """BiT-HyperRule when the encoder came from BiT weights; from random init (no weights given)
        the harness preset's schedule, since the HyperRule's small learning rate assumes transfer."""
        return bit_hyperrule.finetune_policy(num_examples) if self._from_weights else None

    def pretrain(
        self,
        groups: tf.data.Dataset,
        *,
        backbone: BackboneConfig,
        config: PretrainConfig,
        strategy: tf.distribute.Strategy,
        checkpoint_dir: str,
        init_checkpoint: str | None = None,
    ) -> keras.Model:
        if backbone.family != "bit":
            raise ValueError(f"method 'supervised' needs a BiT backbone (family='bit'), got {backbone}")
        self._from_weights = bool(init_checkpoint)
        return checkpoint.untrained_stage(checkpoint_dir, method=self.name, backbone=backbone,
                                          strategy=strategy, seed=config.seed,
                                          init_checkpoint=init_checkpoint)
