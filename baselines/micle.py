"""MICLe (Azizi et al. 2021): multi-instance contrastive learning on patient groups.

A positive pair is two DISTINCT images of the same patient case, each augmented; a case with a
single image falls back to two augmentations of that image (as SimCLR). Everything else — model,
projection head, NT-Xent loss, optimizer and loop — is SimCLR's. Optionally (`mask_same_group`),
other views of the same case in the batch are removed from an anchor's negatives.
"""
from __future__ import annotations

import tensorflow as tf

from baselines import augment, pretrain
from baselines.simclr import SimCLR, build_contrastive_model


def _choose_two(num_images: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Two distinct uniform indices in [0, num_images) if num_images >= 2, else (0, 0); stateless."""
    seed_i, seed_j = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    i = tf.random.stateless_uniform([], seed_i, minval=0, maxval=num_images, dtype=tf.int32)
    j = tf.random.stateless_uniform([], seed_j, minval=0, maxval=tf.maximum(num_images - 1, 1),
                                    dtype=tf.int32)
    j = tf.where(num_images >= 2, j + tf.cast(j >= i, tf.int32), i)
    return i, j


def micle_pairs(groups: tf.data.Dataset, *, view_fn, image_size: int, seed: int,
                start: int = 0) -> tf.data.Dataset:
    """One pair per group {"view1", "view2": float32 [image_size, image_size, 3], "group_id"}: two
    distinct images chosen uniformly at random (one image twice if the group has only one), each
    passed through `view_fn(image, image_size, seed=...)`. The choice and the views of the group at
    position i are drawn from `augment.element_seed(seed, i)`. The first `start` pairs are skipped
    before images are chosen and augmented (resuming)."""

    def sample(group, element_seed):
        images = group["images"]
        n = tf.shape(images)[0]
        check = tf.debugging.assert_positive(
            n, message="micle_pairs: a group has no images; expected images [n >= 1, H, W, 3]")
        choice_seed, seed1, seed2 = tf.unstack(tf.random.experimental.stateless_split(element_seed, 3))
        with tf.control_dependencies([check]):
            i, j = _choose_two(n, choice_seed)
        return {"view1": view_fn(images[i], image_size, seed=seed1),
                "view2": view_fn(images[j], image_size, seed=seed2),
                "group_id": group["group_id"]}

    pairs = augment.with_element_seeds(groups, seed).skip(start)
    return pairs.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)


class MICLe(SimCLR):
    """MICLe pretraining: pairs from two images of the same case; optional same-case negative masking."""

    name = "micle"

    def __init__(self, mask_same_group: bool = False,
                 options: pretrain.LoopOptions = pretrain.LoopOptions()):
        super().__init__(options)
        self.mask_same_group = bool(mask_same_group)

    def method_options(self) -> dict:
        return {"mask_same_group": self.mask_same_group}

    def pairs(self, groups, *, view_fn, image_size, seed, start=0):
        return micle_pairs(groups, view_fn=view_fn, image_size=image_size, seed=seed, start=start)

    def build_model(self, encoder, *, backbone, config):
        return build_contrastive_model(encoder, backbone=backbone, config=config,
                                       mask_same_group=self.mask_same_group)
