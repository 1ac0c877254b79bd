"""Supervised stage of the protocol: full fine-tuning of a pretrained encoder under a grid of
schedules, the schedule and step chosen on the validation split, then per-example predictions on a
test set (the linear eval mode is `benchmark.harness.linear_probe`)."""
from __future__ import annotations

import dataclasses
import math
import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tqdm.auto import tqdm

from baselines import augment, events, schedules
from baselines.api import FinetunePolicy
from benchmark.harness import inference, metrics

LOSS_LOG_EVERY = 10  # steps between the points of a cell's fine-tuning loss curve
_VIEW_STREAM, _MIXUP_STREAM = 1, 2  # augment.element_seed streams of a fine-tuning cell's seed


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


def train_input(ds: tf.data.Dataset, *, image_size: int, policy: FinetunePolicy,
                seed: int) -> tf.data.Dataset:
    """Shuffled, repeated, augmented batches of (image, label) for supervised training; every
    example's augmentation and every batch's MixUp draw from its own seed, a function of (`seed`,
    position) (the shuffle also mixes in TensorFlow's global seed, which `Trainer.search` sets to
    `seed`)."""
    ds = ds.repeat().shuffle(2048, seed=seed)
    ds = augment.with_element_seeds(ds, seed, stream=_VIEW_STREAM)
    ds = ds.map(_train_view(image_size), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(policy.batch_size, drop_remainder=True)
    if policy.mixup_alpha > 0:
        ds = augment.with_element_seeds(ds, seed, stream=_MIXUP_STREAM)
        ds = ds.map(_mixup(policy.mixup_alpha), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class _Progress(keras.callbacks.Callback):
    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")


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


class _ScheduleVariables(keras.optimizers.schedules.LearningRateSchedule):
    """The warm-up + x0.1-step schedule of a FinetunePolicy (`schedules.WarmupStepDecay`) with its
    parameters in variables, so one traced train step serves every schedule (`set` changes them)."""

    def __init__(self):
        self.peak = tf.Variable(0.0, trainable=False, name="peak_learning_rate")
        self.warmup = tf.Variable(0.0, trainable=False, name="warmup_steps")
        self.boundaries = tf.Variable(tf.zeros([0]), trainable=False, shape=tf.TensorShape([None]),
                                      name="decay_boundaries")

    def set(self, policy: FinetunePolicy) -> None:
        schedules.piecewise_warmup(policy)  # the same checks of the policy
        self.peak.assign(float(policy.learning_rate))
        self.warmup.assign(float(policy.warmup_steps))
        self.boundaries.assign(tf.constant([float(b) for b in policy.decay_boundaries], tf.float32,
                                           shape=[len(policy.decay_boundaries)]))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decays = tf.reduce_sum(tf.cast(step >= self.boundaries, tf.float32))
        decayed = self.peak * tf.pow(0.1, decays)
        return tf.where(step < self.warmup, self.peak * step / tf.maximum(self.warmup, 1.0), decayed)


def epochs_length(steps: int, epochs: float | None, min_steps: int, num_examples: int,
                  batch_size: int) -> int:
    """A preset's schedule length for `num_examples` examples: `epochs` passes of `batch_size`
    batches clipped to [min_steps, steps], or `steps` when `epochs` is None."""
    if epochs is None:
        return steps
    return min(steps, max(min_steps, math.ceil(epochs * num_examples / batch_size)))


def step_schedule(length: int, learning_rate: float, batch_size: int,
                  warmup_fraction: float) -> FinetunePolicy:
    """A preset's schedule of `length` steps: warm-up over `warmup_fraction` of them, x0.1 at
    60 % and 85 %."""
    return FinetunePolicy(
        steps=length, learning_rate=learning_rate, batch_size=batch_size,
        warmup_steps=math.ceil(length * warmup_fraction),
        decay_boundaries=tuple(sorted({b for b in (int(length * 0.6), int(length * 0.85)) if b > 0})))


def eval_steps(steps: int, points: int) -> list[int]:
    """The steps after which a schedule of `steps` steps scores the validation split: `points`
    evenly spaced steps, the last one included (ceil(steps * k / points), k = 1..points, deduplicated)."""
    return sorted({math.ceil(steps * k / points) for k in range(1, points + 1)})


def point_order(point: dict) -> tuple:
    """Sort key of a validation point (`choose_point`): best score first (undefined last), then
    fewer steps trained, then the smaller learning rate, then the shorter schedule."""
    score = point["validation"]
    undefined = score is None or math.isnan(score)
    return (undefined, 0.0 if undefined else -score, point["step"], point["learning_rate"],
            point["schedule_steps"])


def choose_point(points) -> dict:
    """The chosen point among {"schedule", "step", "learning_rate", "schedule_steps", "validation"}
    records: the best validation score; ties (and undefined scores) go to the cheaper, more
    regularised point — fewer steps trained, then the smaller learning rate, then the shorter
    schedule (`point_order`)."""
    return min(points, key=point_order)


@dataclasses.dataclass(frozen=True)
class Validation:
    """The validation split as the selection scores it."""

    batches: tf.data.Dataset  # {"image": centre views (`augment.eval_view`), "label"} batches
    size: int  # examples
    metric: str  # the task's primary metric
    class_names: tuple[str, ...]


def validation_set(ds: tf.data.Dataset, size: int, *, image_size: int, metric: str, class_names,
                   batch_size: int = 128) -> Validation:
    """The `Validation` of the `size` {"image", "label", ...} examples of `ds`."""
    def view(ex):
        return {"image": augment.eval_view(ex["image"], image_size), "label": ex["label"]}

    batches = ds.map(view, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
    return Validation(batches, size, metric, tuple(str(c) for c in class_names))


def supervised_loss(kind: str) -> keras.losses.Loss:
    """Fine-tuning's loss: masked sigmoid cross-entropy (multilabel) or softmax cross-entropy."""
    return (MaskedBinaryCrossentropy() if kind == "multilabel"
            else keras.losses.CategoricalCrossentropy(from_logits=True))


class Trainer:
    """One classifier (a copy of the encoder + zero-initialised linear head, SGD with momentum 0.9),
    compiled once and reset exactly to its start before every schedule, so a run traces one train
    step for all its cells, schedules and seeds, and a cell does not depend on the cells before it."""

    def __init__(self, encoder: keras.Model, *, kind: str, num_classes: int, image_size: int,
                 weight_decay: float, strategy: tf.distribute.Strategy, loss_fn=None):
        """`loss_fn(kind)` builds the training loss inside the strategy's scope (default: the
        supervised loss of `kind`); a loss with a `set(policy)` method is set before each schedule."""
        self.kind, self.image_size, self.strategy = kind, image_size, strategy
        with strategy.scope():
            self.model = Classifier(encoder, num_classes)
            self.model(tf.zeros([1, image_size, image_size, 3]))
            self.schedule = _ScheduleVariables()
            self.loss = loss = (loss_fn or supervised_loss)(kind)
            optimizer = keras.optimizers.SGD(learning_rate=self.schedule, momentum=0.9,
                                             weight_decay=weight_decay or None)
            self.model.compile(optimizer=optimizer, loss=loss, jit_compile=False)
        self._start = self.model.get_weights()

    def _reset(self, policy: FinetunePolicy) -> None:
        self.model.set_weights(self._start)
        for variable in self.model.optimizer.variables:
            variable.assign(tf.zeros(variable.shape, variable.dtype))
        self.schedule.set(policy)
        if hasattr(self.loss, "set"):
            self.loss.set(policy)

    def validation_score(self, validation: Validation) -> float | None:
        """The model's primary metric on the validation split (None when undefined)."""
        activation = tf.nn.sigmoid if self.kind == "multilabel" else tf.nn.softmax
        scores, labels = [], []
        for batch in validation.batches:
            scores.append(activation(inference.infer(self.model, batch["image"])).numpy())
            labels.append(batch["label"].numpy())
        value = metrics.metric_value(self.kind, validation.metric, np.concatenate(labels),
                                     np.concatenate(scores), validation.class_names)
        return None if math.isnan(value) else float(value)

    def search(self, train, validation: Validation, grid, *, source: str,
               eval_points: int, seed: int, progress: bool = False,
               summary_dir: str | None = None) -> dict:
        """Trains from the start under every schedule (a FinetunePolicy, or a subclass the loss
        reads, e.g. `distill.DistillPolicy`) of `grid` on `train(policy)` (batches of (image,
        target), e.g. `train_input`), scores `validation` after each of `eval_steps` of each
        schedule, leaves the model with the weights of the chosen point (`choose_point`; equal
        points: the first in grid order) and returns the row's selection record (`source`:
        "preset" or "method"). The chief writes each schedule's loss curve to
        `summary_dir/<schedule_name>` if given."""
        points, records, best = [], [], None
        bar = tqdm(total=sum(p.steps for p in grid), desc="finetune", leave=False, disable=not progress)
        for index, policy in enumerate(grid):
            self._reset(policy)
            keras.utils.set_random_seed(seed)
            at = eval_steps(policy.steps, eval_points)
            scores = []

            def evaluate(step, index=index, policy=policy, at=at, scores=scores):
                nonlocal best
                if step not in at:
                    return
                point = {"schedule": index, "step": step, "learning_rate": policy.learning_rate,
                         "schedule_steps": policy.steps,
                         "validation": self.validation_score(validation)}
                scores.append(point["validation"])
                points.append(point)
                if choose_point(points) is point:
                    best = self.model.get_weights()

            callbacks = [keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs: evaluate(batch + 1)), _Progress(bar)]
            if summary_dir and self.strategy.extended.should_checkpoint:
                callbacks.append(_LossCurve(os.path.join(summary_dir, schedule_name(policy)),
                                            policy.steps))
            self.model.fit(train(policy), steps_per_epoch=policy.steps, epochs=1, verbose=0, callbacks=callbacks,
                           shuffle=False)  # the input pipeline shuffles, seeded
            records.append({**schedule_record(policy), "eval_steps": at, "validation": scores})
        bar.close()
        self.model.set_weights(best)
        chosen = choose_point(points)
        return {"source": source, "metric": validation.metric, "eval_points": eval_points,
                "schedules": records,
                "chosen": {"schedule": chosen["schedule"], "step": chosen["step"],
                           "validation": chosen["validation"]},
                "n_validation_examples": int(validation.size)}


def schedule_record(policy: FinetunePolicy) -> dict:
    """A schedule as its record in `finetune_selection.schedules`."""
    record = dataclasses.asdict(policy)
    record["decay_boundaries"] = list(policy.decay_boundaries)
    return record


def schedule_name(policy: FinetunePolicy) -> str:
    """A schedule's folder name for its loss curve, e.g. lr0.1_steps150 (distillation adds its
    temperature and label weight, e.g. lr0.1_steps150_t2_w0)."""
    name = f"lr{policy.learning_rate:g}_steps{policy.steps}"
    if hasattr(policy, "temperature"):
        name += f"_t{policy.temperature:g}_w{policy.label_weight:g}"
    return name


def predict(model: Classifier, ds: tf.data.Dataset, *, kind: str, image_size: int,
            batch_size: int = 128) -> dict[str, np.ndarray]:
    """Per-example example_id, group_id, label and score (sigmoid or softmax probabilities)."""
    activation = tf.nn.sigmoid if kind == "multilabel" else tf.nn.softmax

    def view(ex):
        return {**ex, "image": augment.eval_view(ex["image"], image_size)}

    out = {"example_id": [], "group_id": [], "label": [], "score": []}
    batches = ds.map(view, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
    for batch in batches:
        out["score"].append(activation(inference.infer(model, batch["image"])).numpy())
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
