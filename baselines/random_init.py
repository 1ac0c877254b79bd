"""The no-pretraining reference: the requested backbone with randomly initialised weights.

It trains nothing, so fine-tuning and the linear probe from it measure what the architecture gives
without any pretraining. The weights are a function of `PretrainConfig.seed` alone (the encoder
is built after `keras.utils.set_random_seed(seed)`); the stage written to `checkpoint_dir` records
that seed, so a rerun with another seed refuses the stored stage instead of reusing it.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from baselines import checkpoint
from baselines.api import BackboneConfig, Method, PretrainConfig, register
from baselines.backbones import build_encoder


@register("random_init")
class RandomInit(Method):
    """The requested backbone (any family), randomly initialised from the pretraining seed."""

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
        del groups  # nothing is trained
        if init_checkpoint:
            raise ValueError(f"method 'random_init' starts from random weights; init_checkpoint="
                             f"{init_checkpoint} would make it another method (use no --init_checkpoint)")
        options = {"seed": config.seed}
        if checkpoint.has_meta(checkpoint_dir):
            stored = checkpoint.read_meta(checkpoint_dir)
            checkpoint.check_resumable(checkpoint_dir, stored, method=self.name, backbone=backbone, config=None,
                                       method_options=options)
            with strategy.scope():
                return checkpoint.load_encoder(checkpoint_dir, backbone)
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            encoder = build_encoder(backbone)
        if strategy.extended.should_checkpoint:
            checkpoint.save_stage(checkpoint_dir, encoder=encoder, method=self.name, backbone=backbone,
                                  config=None, steps_done=0, method_options=options)
        return encoder
