"""A minimal but complete method: RotNet-style rotation prediction (Gidaris et al., ICLR 2018).

Every unlabeled image is augmented, rotated by 0, 90, 180 or 270 degrees, and the encoder plus a
linear head learn to predict the rotation. This file is the template for a new method: subclass
`Method`, implement `pretrain` (groups in, encoder out) and write a stage checkpoint at the end.
Run it with `--method=baselines.examples.minimal_method:RotationPrediction`.

Kept minimal: an interrupted run restarts from step 0 (see `baselines.pretrain` for resuming).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from baselines import checkpoint
from baselines.api import Method
from baselines.augment import get_view_fn, with_element_seeds
from baselines.backbones import build_encoder
from baselines.pretrain import build_optimizer

NUM_ROTATIONS = 4


class RotationPrediction(Method):
    """Predict which of 4 rotations was applied to an augmented image."""

    name = "rotation_prediction"

    def pretrain(self, groups, *, backbone, config, strategy, checkpoint_dir, init_checkpoint=None):
        if checkpoint.has_meta(checkpoint_dir):
            stored = checkpoint.read_meta(checkpoint_dir)
            checkpoint.check_resumable(checkpoint_dir, stored, method=self.name, backbone=backbone,
                                       config=config, init_checkpoint=init_checkpoint)
            if stored.finished:
                with strategy.scope():
                    return checkpoint.load_encoder(checkpoint_dir, backbone)

        view_fn = get_view_fn(config.augmentation, config.min_crop_area, config.color_scale)

        def rotated(image, seed):  # every draw from the element's own seed: reproducible
            view_seed, rotation_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            k = tf.random.stateless_uniform([], rotation_seed, 0, NUM_ROTATIONS, dtype=tf.int32)
            return tf.image.rot90(view_fn(image, config.image_size, seed=view_seed), k), k

        keras.utils.set_random_seed(config.seed)  # weight initialisation and the shuffle below
        images = groups.map(lambda group: group["images"]).unbatch()
        data = (with_element_seeds(images.shuffle(1024, seed=config.seed).repeat(), config.seed)
                .map(rotated, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

        with strategy.scope():
            encoder = build_encoder(backbone)
            if init_checkpoint:
                checkpoint.init_encoder(init_checkpoint, encoder, backbone=backbone)
            inputs = keras.Input((config.image_size, config.image_size, 3))
            model = keras.Model(inputs, keras.layers.Dense(NUM_ROTATIONS)(encoder(inputs)))
            model.compile(optimizer=build_optimizer(config),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.optimizer.build(model.trainable_variables)  # slots now, not inside the traced step
        model.fit(data, epochs=1, steps_per_epoch=config.steps, verbose=0, shuffle=False)

        if strategy.extended.should_checkpoint:
            checkpoint.save_stage(checkpoint_dir, encoder=encoder, method=self.name, backbone=backbone,
                                  config=config, steps_done=config.steps, init_checkpoint=init_checkpoint)
        return encoder
