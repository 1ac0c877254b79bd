"""The process-wide switch between deterministic and fastest execution.

Deterministic mode is TensorFlow's op determinism: deterministic kernels, and `tf.data` keeps the
element order of every parallel map and batch (overriding `deterministic=False`). Together with
seeded weight initialisation and stateless, per-element seeded augmentation (`baselines.augment`),
a run is then a function of its code, data, configuration and seeds.
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # the only way to switch it off again


def set_deterministic(enabled: bool) -> None:
    """Switches op determinism on (`enabled`) or off for the whole process."""
    if enabled:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def is_deterministic() -> bool:
    """Whether op determinism is on."""
    return tf_config.is_op_determinism_enabled()
