"""No in-domain pretraining: the encoder of `--init_checkpoint` as it is (e.g. a published SimCLR
ImageNet checkpoint, the paper's "ImageNet-SSL only" scenario), or a random encoder without one.

`pretrain` writes that encoder, with the checkpoint's projection head when it has one, to
`checkpoint_dir` as a finished stage (0 steps), so fine-tuning can start from a head layer
(`--ft_proj_selector`) and a rerun reuses it.
"""
from __future__ import annotations

import keras

from baselines import checkpoint
from baselines.api import Method, register
from baselines.backbones import build_encoder, encoder_feature_dim


@register("none")
class NoPretraining(Method):
    """Fine-tune or probe the initial checkpoint's encoder directly (random init without one)."""

    def pretrain(self, groups, *, backbone, config, strategy, checkpoint_dir, init_checkpoint=None):
        del groups
        if checkpoint.has_meta(checkpoint_dir):
            stored = checkpoint.read_meta(checkpoint_dir)
            checkpoint.check_resumable(checkpoint_dir, stored, method=self.name, backbone=backbone,
                                       config=None, init_checkpoint=init_checkpoint)
            with strategy.scope():
                return checkpoint.load_encoder(checkpoint_dir, backbone)
        keras.utils.set_random_seed(config.seed)  # the random init, when there is no checkpoint
        head = None
        with strategy.scope():
            encoder = build_encoder(backbone)
            if init_checkpoint:
                checkpoint.init_encoder(init_checkpoint, encoder, backbone=backbone)
                head = checkpoint.load_head(init_checkpoint, encoder_feature_dim(backbone))
        if strategy.extended.should_checkpoint:
            checkpoint.save_stage(checkpoint_dir, encoder=encoder, method=self.name, backbone=backbone,
                                  config=None, steps_done=0, head=head, init_checkpoint=init_checkpoint)
        return encoder
