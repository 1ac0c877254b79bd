"""No in-domain pretraining: the encoder of `--init_checkpoint` as it is (e.g. a published SimCLR
ImageNet checkpoint, the paper's "ImageNet-SSL only" scenario). Without a checkpoint there is
nothing to evaluate; the untrained control is `random_init`.

`pretrain` writes that encoder, with the checkpoint's projection head when it has one, to
`checkpoint_dir` as a finished stage (0 steps), so fine-tuning can start from a head layer
(`--ft_proj_selector`) and a rerun reuses it.
"""
from __future__ import annotations

from baselines import checkpoint
from baselines.api import Method
from baselines.backbones import build_encoder, encoder_feature_dim

MISSING_CHECKPOINT = ("--method=none evaluates the --init_checkpoint encoder as it is: give "
                      "--init_checkpoint, or use --method=random_init for the untrained control")


class NoPretraining(Method):
    """Fine-tune or probe the initial checkpoint's encoder directly."""

    name = "none"

    def pretrain(self, groups, *, backbone, config, strategy, checkpoint_dir, init_checkpoint=None):
        del groups, config
        if not init_checkpoint:
            raise ValueError(MISSING_CHECKPOINT)
        if checkpoint.has_meta(checkpoint_dir):
            stored = checkpoint.read_meta(checkpoint_dir)
            checkpoint.check_resumable(checkpoint_dir, stored, method=self.name, backbone=backbone,
                                       config=None, init_checkpoint=init_checkpoint)
            with strategy.scope():
                return checkpoint.load_encoder(checkpoint_dir, backbone)
        with strategy.scope():
            encoder = build_encoder(backbone)
            checkpoint.init_encoder(init_checkpoint, encoder, backbone=backbone)
            head = checkpoint.load_head(init_checkpoint, encoder_feature_dim(backbone))
        if strategy.extended.should_checkpoint:
            checkpoint.save_stage(checkpoint_dir, encoder=encoder, method=self.name, backbone=backbone,
                                  config=None, steps_done=0, head=head, init_checkpoint=init_checkpoint)
        return encoder
