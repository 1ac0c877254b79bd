"""Learning-rate schedules: SimCLR's warm-up + cosine decay and batch scaling, BiT's warm-up + x0.1 steps."""
from __future__ import annotations

import math
from typing import Sequence

import keras
import tensorflow as tf

from baselines.api import FinetunePolicy


def scaled_learning_rate(base_lr: float, batch_size: int, scaling: str = "linear") -> float:
    """SimCLR's batch-size scaling: "linear" base_lr * batch_size / 256, "sqrt" base_lr * sqrt(batch_size)
    (SimCLR recommends base_lr 0.075 with "sqrt" for small batches / long training)."""
    if batch_size <= 0:
        raise ValueError(f"scaled_learning_rate: batch_size must be > 0, got {batch_size}")
    if scaling == "linear":
        return base_lr * batch_size / 256.0
    if scaling == "sqrt":
        return base_lr * math.sqrt(batch_size)
    raise ValueError(f"scaled_learning_rate: scaling must be 'linear' or 'sqrt', got {scaling!r}")


@keras.saving.register_keras_serializable(package="baselines")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = peak * step / warmup_steps for step < warmup_steps, then cosine decay from peak to 0
    at total_steps (0 afterwards)."""

    def __init__(self, peak_learning_rate: float, total_steps: int, warmup_steps: int):
        if not 0 <= warmup_steps <= total_steps or total_steps <= 0:
            raise ValueError("WarmupCosine: need 0 <= warmup_steps <= total_steps and total_steps > 0, "
                             f"got warmup_steps={warmup_steps}, total_steps={total_steps}")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak = tf.constant(self.peak_learning_rate, tf.float32)
        warmup = float(max(self.warmup_steps, 1))
        warm = peak * step / warmup
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="baselines")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = learning_rate * step / warmup_steps for step < warmup_steps, then learning_rate
    times 0.1 for every boundary <= step."""

    def __init__(self, learning_rate: float, warmup_steps: int, boundaries: Sequence[int] = ()):
        boundaries = tuple(int(b) for b in boundaries)
        if warmup_steps < 0 or any(b <= 0 for b in boundaries) or list(boundaries) != sorted(set(boundaries)):
            raise ValueError("WarmupStepDecay: need warmup_steps >= 0 and strictly increasing positive "
                             f"boundaries, got warmup_steps={warmup_steps}, boundaries={boundaries}")
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = boundaries

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.learning_rate, tf.float32)
        num_decays = tf.zeros([], tf.float32)
        for boundary in self.boundaries:
            num_decays += tf.cast(step >= boundary, tf.float32)
        decayed = lr * tf.pow(0.1, num_decays)
        if self.warmup_steps == 0:
            return decayed
        return tf.where(step < self.warmup_steps, lr * step / self.warmup_steps, decayed)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
                "boundaries": list(self.boundaries)}


def piecewise_warmup(policy: FinetunePolicy) -> WarmupStepDecay:
    """BiT-style schedule of a fine-tuning policy: linear warm-up over `policy.warmup_steps` to
    `policy.learning_rate`, x0.1 at each of `policy.decay_boundaries`."""
    if policy.warmup_steps > policy.steps or any(b > policy.steps for b in policy.decay_boundaries):
        raise ValueError("piecewise_warmup: warmup_steps and decay_boundaries must be <= "
                         f"steps={policy.steps}, got {policy.warmup_steps} and {policy.decay_boundaries}")
    return WarmupStepDecay(policy.learning_rate, policy.warmup_steps, policy.decay_boundaries)
