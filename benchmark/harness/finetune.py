"""Supervised stage of the protocol: full fine-tuning of a pretrained encoder, then per-example
predictions on a test set (the linear eval mode is `benchmark.harness.linear_probe`)."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tqdm.auto import tqdm

from baselines import augment, events, schedules
from baselines.api import FinetunePolicy

LOSS_LOG_EVERY = 10  # steps between the points of a cell's fine-tuning loss curve
_VIEW_STREAM, _MIXUP_STREAM = 1, 2  # augment.element_seed streams of a fine-tuning cell's seed


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run: task kind, input size, schedule and seed."""

    kind: str  # "multilabel" or "multiclass"
    num_classes: int
    image_size: int
    policy: FinetunePolicy
    weight_decay: float = 0.0
    seed: int = 0
    progress: bool = True


class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Sigmoid cross-entropy averaged over the labels that are not nan (ignored)."""

    def __init__(self, name="masked_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        valid = ops.logical_not(ops.isnan(y_true))
        labels = ops.where(valid, y_true, 0.0)
        per_label = ops.maximum(y_pred, 0.0) - y_pred * labels + ops.log1p(ops.exp(-ops.abs(y_pred)))
        valid = ops.cast(valid, per_label.dtype)
        return ops.sum(per_label * valid, axis=-1) / ops.maximum(ops.sum(valid, axis=-1), 1.0)


class Classifier(keras.Model):
    """Encoder + zero-initialised linear head producing float32 logits (whatever the encoder
    computes in)."""

    def __init__(self, encoder: keras.Model, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = keras.layers.Dense(num_classes, kernel_initializer="zeros", dtype="float32",
                                       name="head")

    def call(self, images, training=False):
        return self.head(self.encoder(images, training=training))


def _train_view(image_size: int):
    def view(ex, seed):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        image = augment.random_resized_crop(ex["image"], image_size, area_range=(0.25, 1.0), seed=crop_seed)
        return augment.random_flip(image, seed=flip_seed), ex["label"]

    return view


def _mixup(alpha: float):
    """MixUp of a batch with its reverse, lambda ~ Beta(alpha, alpha) drawn from the batch's seed."""

    def mix(batch, seed):
        images, labels = batch
        gamma = tf.random.stateless_gamma([2], seed, alpha)
        lam = gamma[0] / (gamma[0] + gamma[1])
        return (lam * images + (1 - lam) * tf.reverse(images, [0]),
                lam * labels + (1 - lam) * tf.reverse(labels, [0]))

    return mix


def train_input(ds: tf.data.Dataset, config: FinetuneConfig) -> tf.data.Dataset:
    """Shuffled, repeated, augmented batches of (image, label) for supervised training; every
    example's augmentation and every batch's MixUp draw from its own seed, a function of
    (`config.seed`, position) (the shuffle also mixes in TensorFlow's global seed, which
    `finetune` sets to `config.seed`)."""
    ds = ds.repeat().shuffle(2048, seed=config.seed)
    ds = augment.with_element_seeds(ds, config.seed, stream=_VIEW_STREAM)
    ds = ds.map(_train_view(config.image_size), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(config.policy.batch_size, drop_remainder=True)
    if config.policy.mixup_alpha > 0:
        ds = augment.with_element_seeds(ds, config.seed, stream=_MIXUP_STREAM)
        ds = ds.map(_mixup(config.policy.mixup_alpha), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class _Progress(keras.callbacks.Callback):
    def __init__(self, total: int, desc: str):
        super().__init__()
        self.bar = tqdm(total=total, desc=desc, leave=False)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")

    def on_train_end(self, logs=None):
        self.bar.close()


class _LossCurve(keras.callbacks.Callback):
    """Writes the mean training loss of every `every` steps (and of the last, shorter stretch) as
    TensorBoard events in `logdir`, tag "loss", replacing events an interrupted attempt left there.
    Keras reports the running mean since the start of `fit`, m_b after b steps; the mean over steps
    (a, b] is (b m_b - a m_a) / (b - a)."""

    def __init__(self, logdir: str, total: int, every: int = LOSS_LOG_EVERY):
        super().__init__()
        events.remove_events(logdir)
        self.writer = events.ScalarWriter(logdir, {"loss": f"mean training loss over the last {every} steps"})
        self.total, self.every = total, every
        self.logged_step, self.logged_mean = 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step % self.every and step != self.total:
            return
        mean = float(logs["loss"])
        interval = (step * mean - self.logged_step * self.logged_mean) / (step - self.logged_step)
        self.writer.write(step, {"loss": interval})
        self.logged_step, self.logged_mean = step, mean

    def on_train_end(self, logs=None):
        self.writer.close()


def finetune(encoder: keras.Model, train: tf.data.Dataset, config: FinetuneConfig,
             strategy: tf.distribute.Strategy, summary_dir: str | None = None) -> Classifier:
    """Trains a classifier on `train` ({"image", "label", ...} examples) and returns it; the chief
    writes its loss curve to TensorBoard events in `summary_dir` (a directory of its own) if given."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = Classifier(encoder, config.num_classes)
        loss = (MaskedBinaryCrossentropy() if config.kind == "multilabel"
                else keras.losses.CategoricalCrossentropy(from_logits=True))
        optimizer = keras.optimizers.SGD(
            learning_rate=schedules.piecewise_warmup(config.policy), momentum=0.9,
            weight_decay=config.weight_decay or None)
        model.compile(optimizer=optimizer, loss=loss, jit_compile=False)
    callbacks = [_Progress(config.policy.steps, "finetune")] if config.progress else []
    if summary_dir and strategy.extended.should_checkpoint:
        callbacks.append(_LossCurve(summary_dir, config.policy.steps))
    model.fit(train_input(train, config), steps_per_epoch=config.policy.steps, epochs=1, verbose=0,
              callbacks=callbacks, shuffle=False)  # the input pipeline shuffles, seeded
    return model


def predict(model: Classifier, ds: tf.data.Dataset, *, kind: str, image_size: int,
            batch_size: int = 128) -> dict[str, np.ndarray]:
    """Per-example example_id, group_id, label and score (sigmoid or softmax probabilities)."""
    activation = tf.nn.sigmoid if kind == "multilabel" else tf.nn.softmax

    def view(ex):
        return {**ex, "image": augment.eval_view(ex["image"], image_size)}

    out = {"example_id": [], "group_id": [], "label": [], "score": []}
    batches = ds.map(view, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
    for batch in batches:
        out["score"].append(activation(model.predict_on_batch(batch["image"])).numpy())
        out["label"].append(batch["label"].numpy())
        out["example_id"] += [x.decode() for x in batch["example_id"].numpy()]
        out["group_id"] += [x.decode() for x in batch["group_id"].numpy()]
    order = np.argsort(out["example_id"], kind="stable")
    return {
        "example_id": np.array(out["example_id"])[order],
        "group_id": np.array(out["group_id"])[order],
        "label": np.concatenate(out["label"])[order],
        "score": np.concatenate(out["score"])[order],
    }
