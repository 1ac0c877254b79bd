"""One worker of the 2-process MultiWorkerMirroredStrategy test (tests/test_distribute.py).

Run with TF_CONFIG set: trains a few NT-Xent + LARS steps of a tiny SyncBN model on a fixed global batch
and prints {"task": index, "losses": [...]} as the last stdout line. The test also imports `train` to
compute the single-process reference; float64 makes the two agree up to rounding (~1e-15).
"""
import json
import os
import sys

import numpy as np

GLOBAL_BATCH = 8
STEPS = 3


def global_batch():
    """Two views [GLOBAL_BATCH, 8] and patient ids; fixed, identical in every process."""
    rng = np.random.default_rng(42)
    x1 = rng.normal(size=(GLOBAL_BATCH, 8))
    x2 = x1 + 0.3 * rng.normal(size=x1.shape)
    groups = np.array([f"patient{i // 2}" for i in range(GLOBAL_BATCH)])
    return x1, x2, groups


def train(strategy, steps=STEPS):
    """Runs `steps` training steps under `strategy`; returns the global-mean loss of each step."""
    import keras
    import tensorflow as tf

    from baselines.lars import LARS
    from baselines.objective import nt_xent_loss

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([
            keras.Input((8,), dtype="float64"),
            keras.layers.Dense(16, use_bias=False, dtype="float64"),
            keras.layers.BatchNormalization(synchronized=True, dtype="float64"),
            keras.layers.ReLU(dtype="float64"),
            keras.layers.Dense(4, dtype="float64"),
        ])
        optimizer = LARS(learning_rate=0.1, momentum=0.9, weight_decay=1e-3, eta=0.01)
        optimizer.build(model.trainable_variables)

    x1, x2, groups = global_batch()
    replicas = strategy.num_replicas_in_sync
    local = GLOBAL_BATCH // replicas

    def shard(ctx):
        rows = slice(ctx.replica_id_in_sync_group * local, (ctx.replica_id_in_sync_group + 1) * local)
        return tf.constant(x1[rows]), tf.constant(x2[rows]), tf.constant(groups[rows])

    def replica_step(a, b, g):
        with tf.GradientTape() as tape:
            z1, z2 = tf.split(model(tf.concat([a, b], 0), training=True), 2)
            loss, _, _ = nt_xent_loss(z1, z2, temperature=0.5, group_ids=g, mask_same_group=True)
            scaled = loss / replicas
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def step(a, b, g):
        per_replica = strategy.run(replica_step, args=(a, b, g))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    data = strategy.experimental_distribute_values_from_function(shard)
    return [float(step(*data)) for _ in range(steps)]


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from baselines.distribute import get_strategy

    strategy = get_strategy("multi_worker")
    losses = train(strategy)
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    print(json.dumps({"task": task, "losses": losses}), flush=True)
