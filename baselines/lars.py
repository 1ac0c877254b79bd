"""LARS (You et al. 2017) as a Keras-3 optimizer, following SimCLR's LARS with classic momentum.

Per variable w with (all-reduced) gradient g:
  g' = g + weight_decay * w                       (L2 in the gradient; skipped for excluded variables)
  r  = eta * ||w|| / ||g'|| if both norms > 0 else 1   (trust ratio; 1 for excluded variables)
  v  = momentum * v + learning_rate * r * g'
  w  = w - v
"""
from __future__ import annotations

import re
from typing import Sequence

import keras
import tensorflow as tf

# Normalisation scales/offsets (BatchNormalization, GroupNormalization, LayerNormalization) and biases.
DEFAULT_EXCLUDE = (r"(^|/)(gamma|beta|bias)$",)


@keras.saving.register_keras_serializable(package="baselines")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise adaptive rate scaling with momentum and L2 weight decay.

    Args:
      learning_rate: float or `keras.optimizers.schedules.LearningRateSchedule`.
      momentum: momentum coefficient in [0, 1).
      weight_decay: L2 coefficient added to the gradient (SimCLR style, not decoupled).
      eta: trust coefficient.
      exclude_from_weight_decay: regexes searched in each variable's `path` (e.g.
        "block1/batch_normalization/gamma"); matching variables get no weight decay.
      exclude_from_layer_adaptation: regexes as above for the trust ratio; None means the same as
        `exclude_from_weight_decay`.
        (Keras' `Optimizer.exclude_from_weight_decay()` method, which matches `v.name`, is not used.)
      name, **kwargs: passed to `keras.optimizers.Optimizer` (e.g. clipnorm, loss_scale_factor).
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        exclude_from_weight_decay: Sequence[str] = DEFAULT_EXCLUDE,
        exclude_from_layer_adaptation: Sequence[str] | None = None,
        name: str = "lars",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS: momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0 or eta <= 0:
            raise ValueError(f"LARS: need weight_decay >= 0 and eta > 0, got {weight_decay}, {eta}")
        self.momentum = float(momentum)
        self.eta = float(eta)
        self.exclude_from_weight_decay_patterns = tuple(exclude_from_weight_decay)
        self.exclude_from_layer_adaptation_patterns = (
            None if exclude_from_layer_adaptation is None else tuple(exclude_from_layer_adaptation))
        for pattern in self._patterns(decay=True) + self._patterns(decay=False):
            re.compile(pattern)

    def _patterns(self, *, decay: bool) -> tuple[str, ...]:
        if decay or self.exclude_from_layer_adaptation_patterns is None:
            return self.exclude_from_weight_decay_patterns
        return self.exclude_from_layer_adaptation_patterns

    def build(self, variables):
        """Creates one momentum slot per variable and fixes the exclusions from each `v.path`."""
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        decay, adapt = self._patterns(decay=True), self._patterns(decay=False)
        self._use_decay = [not any(re.search(p, v.path) for p in decay) for v in variables]
        self._use_adaptation = [not any(re.search(p, v.path) for p in adapt) for v in variables]

    def _apply_weight_decay(self, variables):
        """No decoupled decay: LARS adds weight decay to the gradient in `update_step`."""

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        w = tf.convert_to_tensor(variable)
        g = tf.cast(gradient, dtype)
        if self._use_decay[index] and self.weight_decay:
            g = g + tf.cast(self.weight_decay, dtype) * w
        lr = tf.cast(learning_rate, dtype)
        if self._use_adaptation[index]:  # the trust ratio in float32 at least, whatever the variable's dtype
            ratio_dtype = tf.float64 if dtype == tf.float64 else tf.float32
            w_norm = tf.norm(tf.cast(w, ratio_dtype))
            g_norm = tf.norm(tf.cast(g, ratio_dtype))
            ratio = tf.where((w_norm > 0) & (g_norm > 0),
                             tf.cast(self.eta, ratio_dtype) * w_norm / tf.maximum(g_norm, 1e-30),
                             tf.ones_like(w_norm))
            lr = lr * tf.cast(ratio, dtype)
        m = self.momentums[index]
        self.assign(m, tf.cast(self.momentum, dtype) * m + lr * g)
        self.assign_sub(variable, m)

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "eta": self.eta,
            "exclude_from_weight_decay": list(self.exclude_from_weight_decay_patterns),
            "exclude_from_layer_adaptation": (
                None if self.exclude_from_layer_adaptation_patterns is None
                else list(self.exclude_from_layer_adaptation_patterns)),
        })
        return config
