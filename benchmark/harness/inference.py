"""A model's outputs on a batch of images, under any distribution strategy."""
from __future__ import annotations

import keras
import numpy as np


def infer(model: keras.Model, images) -> np.ndarray:
    """`model`'s inference-mode outputs on the batch `images`, one row per image. Keras's
    `predict_on_batch` runs the whole batch on every replica and concatenates the replicas'
    outputs (2 replicas: 2N rows for N images), so the batch goes through `predict`, which splits
    it over the replicas and keeps their order."""
    return np.asarray(model.predict(images, batch_size=int(images.shape[0]), verbose=0))
