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
from baselines.api import BackboneConfig, Method, PretrainConfig


class RandomInit(Method):
    """The requested backbone (any family), randomly initialised from the pretraining seed."""

    name = "random_init"

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
        return checkpoint.untrained_stage(checkpoint_dir, method=self.name, backbone=backbone,
                                          strategy=strategy, seed=config.seed,
                                          method_options={"seed": config.seed})
