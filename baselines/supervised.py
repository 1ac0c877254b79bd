"""The supervised ImageNet baseline: a BiT ResNetV2 encoder, fine-tuned with BiT-HyperRule.

It does not train on the unlabeled groups. `pretrain` returns the BiT encoder initialised from
`init_checkpoint` (a BiT `.npz`, e.g. BiT-M R50x1, or an earlier stage with a BiT backbone) or,
without one, from scratch (random init), and writes it to `checkpoint_dir` as a finished stage.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from baselines import bit, bit_hyperrule, checkpoint
from baselines.api import BackboneConfig, FinetunePolicy, Method, PretrainConfig, register
from baselines.backbones import build_encoder


@register("supervised")
class SupervisedBiT(Method):
    """BiT ResNetV2 (family "bit") from a local BiT `.npz` or random init; BiT-HyperRule fine-tuning."""

    def backbone(self, requested: BackboneConfig) -> BackboneConfig:
        """The BiT ResNetV2 closest to `requested`: its depth if BiT has it (50/101/152, else 50) and
        its width if a whole number (else 1); a `bit` request is kept as is."""
        if requested.family == "bit":
            return requested
        depth = requested.depth if requested.depth in bit.BIT_UNITS else 50
        width = int(requested.width) if requested.width >= 1 and float(requested.width).is_integer() else 1
        return BackboneConfig(family="bit", depth=depth, width=width, small_stem=False, global_bn=False)

    def finetune_policy(self, num_examples: int) -> FinetunePolicy:
        return bit_hyperrule.finetune_policy(num_examples)

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
        if checkpoint.has_meta(checkpoint_dir):
            stored = checkpoint.read_meta(checkpoint_dir)
            checkpoint.check_resumable(checkpoint_dir, stored, method=self.name, backbone=backbone, config=None,
                                       init_checkpoint=init_checkpoint)
            with strategy.scope():
                return checkpoint.load_encoder(checkpoint_dir, backbone)
        with strategy.scope():
            encoder = build_encoder(backbone)
            if init_checkpoint:
                checkpoint.init_encoder(init_checkpoint, encoder, backbone=backbone)
        if strategy.extended.should_checkpoint:
            checkpoint.save_stage(checkpoint_dir, encoder=encoder, method=self.name, backbone=backbone,
                                  config=None, steps_done=0, init_checkpoint=init_checkpoint)
        return encoder
