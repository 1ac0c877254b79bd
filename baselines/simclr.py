"""SimCLR (Chen et al. 2020, v2 head): two augmentations of the same image, NT-Xent loss.

The projection head, the two-view `ContrastiveModel` and the loop (`baselines.pretrain`) are shared
with MICLe, which only changes which two images make a pair.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from baselines import augment, pretrain
from baselines.api import BackboneConfig, Method, PretrainConfig
from baselines.heads import projection_head
from baselines.objective import chance_levels, contrastive_accuracy, nt_xent_loss


class ContrastiveModel(keras.Model):
    """Encoder + projection head trained with NT-Xent on batches {"view1", "view2", "group_id"}.

    `train_step` works in any replica context (`strategy.run`, `model.fit`): the per-replica loss of
    `nt_xent_loss` (negatives gathered from all replicas) is divided by the number of replicas once,
    so the summed gradients are those of the global mean. `l2_weight_decay` adds
    `l2_weight_decay * sum(||w||^2 / 2)` over kernels to the loss (for optimizers without their own
    weight decay, e.g. Adam; LARS decays in the optimizer).
    """

    LOG_KEYS = ("loss", "contrast_acc")

    def __init__(self, encoder: keras.Model, head: keras.Model, *, temperature: float,
                 mask_same_group: bool = False, l2_weight_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head
        self.temperature = float(temperature)
        self.mask_same_group = bool(mask_same_group)
        self.l2_weight_decay = float(l2_weight_decay)
        self.built = True

    def call(self, images, training=False):
        return self.head(self.encoder(images, training=training), training=training)

    def _l2_loss(self) -> tf.Tensor:
        kernels = [v for v in self.trainable_variables if len(v.shape) > 1]
        return self.l2_weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in kernels])

    def train_step(self, data):
        view1, view2 = data["view1"], data["view2"]
        batch = tf.shape(view1)[0]
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            z = self(tf.concat([view1, view2], axis=0), training=True)
            loss, logits, labels = nt_xent_loss(z[:batch], z[batch:], temperature=self.temperature,
                                                group_ids=data.get("group_id"),
                                                mask_same_group=self.mask_same_group)
            total = loss + self._l2_loss() if self.l2_weight_decay else loss
            scaled = total / replicas
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return {"loss": loss, "contrast_acc": contrastive_accuracy(logits, labels)}

    @staticmethod
    def chance_levels(global_batch: int) -> dict[str, float]:
        """The logged values (`LOG_KEYS`) of an encoder that cannot tell views apart
        (`objective.chance_levels`)."""
        return chance_levels(global_batch)


def build_contrastive_model(encoder: keras.Model, *, backbone: BackboneConfig, config: PretrainConfig,
                            mask_same_group: bool = False) -> ContrastiveModel:
    """`encoder` + a projection head configured by `config`, as a ContrastiveModel."""
    head = projection_head(int(encoder.output_shape[-1]), num_layers=config.projection_layers,
                           output_dim=config.projection_dim, global_bn=backbone.global_bn)
    return ContrastiveModel(encoder, head, temperature=config.temperature, mask_same_group=mask_same_group,
                            l2_weight_decay=config.weight_decay if config.optimizer == "adam" else 0.0,
                            name="contrastive_model")


def simclr_pairs(groups: tf.data.Dataset, *, view_fn, image_size: int, seed: int, start: int = 0,
                 shuffle_buffer: int = 1024) -> tf.data.Dataset:
    """Every image of every group, shuffled (`shuffle_buffer` images), as two independent views
    {"view1", "view2": float32 [image_size, image_size, 3], "group_id"}; the views of the image at
    position i are drawn from `augment.element_seed(seed, i)`. The first `start` pairs are skipped
    before they are augmented (resuming)."""
    def split(group):
        n = tf.shape(group["images"])[0]
        return {"image": group["images"], "group_id": tf.fill([n], group["group_id"])}

    def views(example, element_seed):
        seed1, seed2 = tf.unstack(tf.random.experimental.stateless_split(element_seed, 2))
        return {"view1": view_fn(example["image"], image_size, seed=seed1),
                "view2": view_fn(example["image"], image_size, seed=seed2),
                "group_id": example["group_id"]}

    images = groups.map(split, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    images = augment.with_element_seeds(images.shuffle(shuffle_buffer, seed=seed), seed).skip(start)
    return images.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)


class SimCLR(Method):
    """SimCLR pretraining on every image of the unlabeled groups."""

    name = "simclr"

    def __init__(self, options: pretrain.LoopOptions = pretrain.LoopOptions()):
        self.options = options

    def method_options(self) -> dict:
        """Settings beyond BackboneConfig/PretrainConfig that define the stage (stored in meta.json)."""
        return {}

    def pairs(self, groups: tf.data.Dataset, *, view_fn, image_size: int, seed: int,
              start: int = 0) -> tf.data.Dataset:
        """The two-view pairs this method trains on (from pair `start` of the stream on)."""
        return simclr_pairs(groups, view_fn=view_fn, image_size=image_size, seed=seed, start=start,
                            shuffle_buffer=self.options.shuffle_buffer)

    def build_model(self, encoder: keras.Model, *, backbone: BackboneConfig,
                    config: PretrainConfig) -> ContrastiveModel:
        return build_contrastive_model(encoder, backbone=backbone, config=config)

    def pretrain(self, groups, *, backbone, config, strategy, checkpoint_dir, init_checkpoint=None,
                 summary_dir=None):
        return pretrain.pretrain_contrastive(
            groups, pair_fn=self.pairs,
            build_model=lambda encoder: self.build_model(encoder, backbone=backbone, config=config),
            method=self.name, method_options=self.method_options(), backbone=backbone, config=config,
            strategy=strategy, checkpoint_dir=checkpoint_dir, init_checkpoint=init_checkpoint,
            options=self.options, summary_dir=summary_dir)
