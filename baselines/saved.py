"""A submitted backbone saved as a whole `.keras` encoder or a TF SavedModel, evaluated as it is
(no pretraining here): `--method=saved:/path/to/encoder.keras` or `--method=saved:/path/to/savedmodel`.

The saved model must follow the encoder contract of `baselines.api`: float32 images [B, S, S, 3]
in [0, 1] to features [B, D]. A SavedModel is wrapped with `keras.layers.TFSMLayer` (its
`serving_default` or Keras-export `serve` endpoint), trainable so that it can be fine-tuned.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from baselines import checkpoint
from baselines.api import Method

PREFIX = "saved:"


def _savedmodel_encoder(path: str) -> keras.Model:
    signatures = tf.saved_model.load(path).signatures
    endpoint = next((e for e in ("serving_default", "serve") if e in signatures), None)
    if endpoint is None:
        raise ValueError(f"{path}: SavedModel has no 'serving_default' or 'serve' signature "
                         f"(found {sorted(signatures)})")
    layer = keras.layers.TFSMLayer(path, call_endpoint=endpoint, trainable=True)
    inputs = keras.Input((None, None, 3), dtype="float32")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ValueError(f"{path}: endpoint {endpoint!r} returns {sorted(outputs)}; expected "
                             "one features tensor")
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name="saved_encoder")


class SavedBackbone(Method):
    """Loads the saved encoder at `path`; `pretrain` trains nothing."""

    name = "saved"

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise ValueError(f"--method={PREFIX}{path}: no such file or directory")
        if not (path.endswith(".keras") or os.path.isfile(os.path.join(path, "saved_model.pb"))):
            raise ValueError(f"--method={PREFIX}{path}: expected a .keras file or a SavedModel "
                             "directory (with saved_model.pb)")
        self.path = path

    def pretrain(self, groups, *, backbone, config, strategy, checkpoint_dir, init_checkpoint=None):
        del groups, backbone, config, checkpoint_dir, init_checkpoint
        with strategy.scope():
            if self.path.endswith(".keras"):
                return checkpoint.load_encoder(self.path)
            return _savedmodel_encoder(self.path)
