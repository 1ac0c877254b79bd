"""SimCLRv2's third step, the `distill` eval mode: a cell's fine-tuned teacher labels every
training image of the cell's split (the patients the label fraction leaves unlabelled included),
and a student learns from those soft labels.

- multiclass: softmax cross-entropy of the student's logits / T against softmax(teacher logits / T);
- multilabel: per-label sigmoid cross-entropy of the student's logits / T against
  sigmoid(teacher logits / T), averaged over the labels;
- with label weight w: (1 - w) x that + w x the supervised loss of the labelled images (their mean
  over the labelled images of the batch; an unlabelled image adds nothing to it). w = 0 reads no
  label at all; w = 1 ignores the teacher.

Temperature extremes: T -> 0 turns the teacher's distribution into its arg max (multiclass) or its
0/1 decisions (multilabel); T -> infinity flattens it to uniform / 0.5, which teaches nothing. The
loss is not rescaled by T² (Hinton et al. do; SimCLRv2 does not). The student is scored with its
own logits (T = 1). Mode names: `distill` (self-distillation: the student is the teacher's
backbone started from the same pretrained encoder) and `distill:<backbone>` (e.g.
`distill:resnet_v1-18x0.25`: that backbone, randomly initialised from the pretraining seed).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import zipfile

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from baselines import api, augment
from benchmark.harness import finetune, inference
from benchmark.harness.backbone_names import backbone_tag, parse_backbone

MODE = "distill"


@dataclasses.dataclass(frozen=True)
class DistillPolicy(api.FinetunePolicy):
    """A distillation schedule: a fine-tuning schedule with its temperature and label weight."""

    temperature: float = 1.0
    label_weight: float = 0.0


def student_backbone(mode: str) -> api.BackboneConfig | None:
    """The student backbone an eval mode names (`distill:<backbone>`); None for `distill`
    (self-distillation). ValueError for a mode that is not a distill mode or names no backbone."""
    if mode == MODE:
        return None
    prefix = f"{MODE}:"
    if not mode.startswith(prefix):
        raise ValueError(f"eval mode {mode!r}: expected {MODE} or {MODE}:<backbone>")
    return parse_backbone(mode[len(prefix):], flag=f"eval mode {prefix}")


def mode_name(backbone: api.BackboneConfig | None) -> str:
    """The eval mode of a student: `distill`, or `distill:<backbone_tag>`."""
    return MODE if backbone is None else f"{MODE}:{backbone_tag(backbone)}"


def distill_grid(settings, num_images: int) -> tuple[DistillPolicy, ...]:
    """A preset's grid (`presets.DistillSettings`) for `num_images` training images: every
    length x learning rate x temperature x label weight, in that nesting order."""
    steps = finetune.epochs_length(settings.steps, settings.epochs, settings.min_steps,
                                   num_images, settings.batch_size)
    grid = []
    for scale in settings.length_scales:
        length = max(1, math.ceil(steps * scale))
        for learning_rate in settings.learning_rates:
            schedule = finetune.step_schedule(length, learning_rate, settings.batch_size,
                                              settings.warmup_fraction)
            for temperature in settings.temperatures:
                for weight in settings.label_weights:
                    grid.append(DistillPolicy(**dataclasses.asdict(schedule),
                                              temperature=temperature, label_weight=weight))
    return tuple(dict.fromkeys(grid))


class DistillationLoss(keras.losses.Loss):
    """The loss of the module docstring. `y_true` packs [teacher logits (K) | labels (K), nan for
    unknown]; the temperature and label weight are variables (`set`), so one traced train step
    serves every schedule."""

    def __init__(self, kind: str, name: str = "distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.kind = kind
        self.temperature = tf.Variable(1.0, trainable=False, name="distill_temperature")
        self.label_weight = tf.Variable(0.0, trainable=False, name="distill_label_weight")

    def set(self, policy: DistillPolicy) -> None:
        self.temperature.assign(float(policy.temperature))
        self.label_weight.assign(float(policy.label_weight))

    def call(self, y_true, y_pred):
        k = ops.shape(y_pred)[-1]
        y_pred = ops.cast(y_pred, "float32")
        teacher, labels = ops.cast(y_true[:, :k], "float32"), ops.cast(y_true[:, k:], "float32")
        t = self.temperature
        targets = soft_targets(self.kind, teacher, t)
        if self.kind == "multilabel":
            distilled = ops.mean(_sigmoid_xent(targets, y_pred / t), axis=-1)
        else:
            distilled = -ops.sum(targets * ops.log_softmax(y_pred / t, axis=-1), axis=-1)
        known = ops.logical_not(ops.isnan(labels))
        targets = ops.where(known, labels, 0.0)
        if self.kind == "multilabel":
            per_label = _sigmoid_xent(targets, y_pred) * ops.cast(known, "float32")
            supervised = ops.sum(per_label, axis=-1) / ops.maximum(
                ops.sum(ops.cast(known, "float32"), axis=-1), 1.0)
        else:
            supervised = -ops.sum(targets * ops.log_softmax(y_pred, axis=-1), axis=-1)
        labelled = ops.cast(ops.any(known, axis=-1), "float32")
        # The batch mean of this equals the mean of the supervised loss over the labelled images of
        # the whole batch, all replicas' parts of it together.
        share = _over_replicas(ops.cast(ops.shape(labelled)[0], "float32")) / ops.maximum(
            _over_replicas(ops.sum(labelled)), 1.0)
        w = self.label_weight
        return (1.0 - w) * distilled + w * supervised * labelled * share


def _over_replicas(value):
    """`value` summed over the replicas in sync (itself with one replica)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def soft_targets(kind: str, teacher_logits, temperature):
    """The teacher's distribution the student learns: softmax (multiclass) or per-label sigmoid
    (multilabel) of its logits / `temperature`."""
    scaled = ops.cast(teacher_logits, "float32") / temperature
    return ops.sigmoid(scaled) if kind == "multilabel" else ops.softmax(scaled, axis=-1)


def _sigmoid_xent(targets, logits):
    return ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def teacher_logits(model: keras.Model, ds: tf.data.Dataset, *, image_size: int,
                   batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(example ids, float32 logits) of `model` on the centre views of `ds`'s images, in `ds`'s
    order; the examples' labels are not read."""
    def view(ex):
        return {"image": augment.eval_view(ex["image"], image_size), "example_id": ex["example_id"]}

    ids, logits = [], []
    for batch in ds.map(view, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2):
        logits.append(np.asarray(inference.infer(model, batch["image"]), np.float32))
        ids += [x.decode() for x in batch["example_id"].numpy()]
    return np.array(ids), np.concatenate(logits)


def student_examples(images: tf.data.Dataset, ids: np.ndarray, logits: np.ndarray,
                     labelled_ids: np.ndarray, labelled_labels: np.ndarray) -> tf.data.Dataset:
    """{"image", "label": [teacher logits | labels]} examples of the student: the images of
    `images` (in the order of `ids`, checked), each with its teacher logits, and the labels of the
    labelled images (`labelled_ids`, `labelled_labels`); an image outside them gets nan labels.
    Only the "image" and "example_id" of `images` are read."""
    row_of = {example_id: i for i, example_id in enumerate(ids)}
    labels = np.full(logits.shape, np.nan, np.float32)
    missing = [x for x in labelled_ids if x not in row_of]
    if missing:
        raise ValueError(f"distillation: labelled image {missing[0]} is not among the training images")
    labels[[row_of[x] for x in labelled_ids]] = np.asarray(labelled_labels, np.float32)
    targets = tf.data.Dataset.from_tensor_slices(
        {"label": np.concatenate([logits, labels], axis=1), "example_id": ids})
    pictures = images.map(lambda ex: {"image": ex["image"], "example_id": ex["example_id"]})

    def join(picture, target):
        with tf.control_dependencies([tf.debugging.assert_equal(
                picture["example_id"], target["example_id"],
                message="distillation: images and teacher targets out of order")]):
            return {"image": tf.identity(picture["image"]), "label": target["label"]}

    return tf.data.Dataset.zip(pictures, targets).map(join)


def weights_digest(weights: list[np.ndarray]) -> str:
    """sha256 of a model's weights (dtype, shape and bytes of each array, in order)."""
    h = hashlib.sha256()
    for w in weights:
        w = np.ascontiguousarray(w)
        h.update(f"{w.dtype.str}{w.shape}".encode())
        h.update(w.tobytes())
    return h.hexdigest()


def save_teacher(path: str, weights: list[np.ndarray], selection: dict) -> None:
    """Writes a teacher's weights and its fine-tuning selection record to `path` (.npz),
    atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pending = f"{path}.{os.getpid()}.pending.npz"
    np.savez(pending, *weights, selection=np.array(json.dumps(selection, sort_keys=True)))
    os.replace(pending, path)


def load_teacher(path: str) -> tuple[list[np.ndarray], dict] | None:
    """(weights, selection record) of a teacher saved by `save_teacher`, or None if `path` does
    not exist; ValueError naming the file if it is not such a file."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            n = sum(1 for k in f.files if k.startswith("arr_"))
            return [f[f"arr_{i}"] for i in range(n)], json.loads(str(f["selection"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a teacher saved by this suite ({e}); delete it and rerun "
                         "(the teacher is fine-tuned again)") from None
