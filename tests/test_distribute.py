"""Replica equivalence: MirroredStrategy over 2 logical CPUs and a 2-process MultiWorkerMirroredStrategy
give the single-device loss and LARS update; get_strategy errors."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from baselines.distribute import get_strategy
from baselines.lars import LARS
from baselines.objective import nt_xent_loss

REPO = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 8


def _encoder(dtype):
    inputs = keras.Input((8, 8, 3), dtype=dtype)
    x = inputs
    for filters, stride in [(4, 1), (8, 2)]:
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, dtype=dtype)(x)
        x = keras.layers.BatchNormalization(synchronized=True, dtype=dtype)(x)
        x = keras.layers.ReLU(dtype=dtype)(x)
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype)(x)
    x = keras.layers.Dense(8, use_bias=False, dtype=dtype)(x)  # projection head
    x = keras.layers.BatchNormalization(synchronized=True, dtype=dtype)(x)
    x = keras.layers.ReLU(dtype=dtype)(x)
    return keras.Model(inputs, keras.layers.Dense(4, dtype=dtype)(x))


def _run_two_steps(strategy, init_weights, batch, masked, dtype):
    """Two LARS steps on the global batch, split evenly over the replicas; returns (losses, weights)."""
    with strategy.scope():
        model = _encoder(dtype)
        model.set_weights(init_weights)
        optimizer = LARS(learning_rate=0.1, momentum=0.9, weight_decay=1e-3, eta=0.01)
        optimizer.build(model.trainable_variables)
    replicas = strategy.num_replicas_in_sync
    local = GLOBAL_BATCH // replicas

    def shard(ctx):
        start = ctx.replica_id_in_sync_group * local
        return tuple(tf.constant(t[start:start + local]) for t in batch)

    def replica_step(x1, x2, groups):
        with tf.GradientTape() as tape:
            z1, z2 = tf.split(model(tf.concat([x1, x2], 0), training=True), 2)
            loss, _, _ = nt_xent_loss(z1, z2, temperature=0.2, group_ids=groups, mask_same_group=masked)
            scaled = loss / replicas
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def step(x1, x2, groups):
        per_replica = strategy.run(replica_step, args=(x1, x2, groups))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    data = strategy.experimental_distribute_values_from_function(shard)
    losses = [float(step(*data)) for _ in range(2)]
    return losses, [w.numpy() for w in model.weights]


# float64 shows the equivalence is exact (measured |diff| ~1e-15); float32 differs by rounding only (the
# all-reduce sums in another order; measured |diff| ~1e-5 on BN gamma/beta after updates of ~0.5).
@pytest.mark.parametrize("masked,dtype,tol", [(True, "float64", 1e-10), (False, "float32", 5e-5)],
                         ids=["micle64", "simclr32"])
def test_mirrored_two_replicas_equal_single_device(masked, dtype, tol):
    assert len(tf.config.list_logical_devices("CPU")) >= 2, "root conftest.py should make 2 logical CPUs"
    rng = np.random.default_rng(3)
    x1 = rng.uniform(size=(GLOBAL_BATCH, 8, 8, 3)).astype(dtype)
    x2 = np.clip(x1 + 0.2 * rng.normal(size=x1.shape), 0, 1).astype(dtype)
    # Same-patient pairs straddle the replica boundary (rows 3 and 4).
    groups = np.array(["a", "b", "c", "d", "d", "e", "b", "f"])
    keras.utils.set_random_seed(0)
    init = _encoder(dtype).get_weights()

    batch = (x1, x2, groups)
    single_losses, single_weights = _run_two_steps(tf.distribute.get_strategy(), init, batch, masked, dtype)
    mirrored = get_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    mirrored_losses, mirrored_weights = _run_two_steps(mirrored, init, batch, masked, dtype)

    np.testing.assert_allclose(mirrored_losses, single_losses, rtol=tol)
    assert single_losses[1] != single_losses[0]  # the first step changed the weights
    for w_m, w_s, w_0 in zip(mirrored_weights, single_weights, init):
        np.testing.assert_allclose(w_m, w_s, rtol=tol, atol=tol)
    moved = [np.abs(w_s - w_0).max() for w_s, w_0 in zip(single_weights, init)]
    assert min(moved) > 1e-6  # every weight, including BN moving statistics, was updated


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_worker_two_processes_agree_with_single_process():
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    script = REPO / "tests" / "_multiworker_worker.py"
    procs = []
    try:
        for index in range(2):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                       PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                       TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                             "task": {"type": "worker", "index": index}}))
            procs.append(subprocess.Popen([sys.executable, str(script)], env=env, cwd=REPO,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        deadline = time.monotonic() + 240
        for proc in procs:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            assert proc.returncode == 0, f"worker failed:\n{err[-3000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    assert sorted(r["task"] for r in results) == [0, 1]
    np.testing.assert_allclose(results[0]["losses"], results[1]["losses"], rtol=1e-6)
    spec = importlib.util.spec_from_file_location("_multiworker_worker", script)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    reference = worker.train(tf.distribute.get_strategy())
    np.testing.assert_allclose(results[0]["losses"], reference, rtol=1e-10)
    assert reference[-1] < reference[0]


def test_get_strategy_builds_local_strategies():
    assert get_strategy("default") is tf.distribute.get_strategy()
    assert get_strategy("one_device").num_replicas_in_sync == 1
    assert get_strategy("mirrored").num_replicas_in_sync == max(
        len(tf.config.list_logical_devices("GPU")), len(tf.config.list_logical_devices("CPU")))


def test_get_strategy_errors(monkeypatch):
    with pytest.raises(ValueError, match="--strategy='gpu': unknown strategy"):
        get_strategy("gpu")
    with pytest.raises(ValueError, match="--strategy=tpu needs a TPU address"):
        get_strategy("tpu")
    with pytest.raises(ValueError, match="TPU address only applies"):
        get_strategy("mirrored", tpu_address="grpc://10.0.0.1:8470")
    with pytest.raises(ValueError, match="num_gpus only applies"):
        get_strategy("one_device", num_gpus=1)
    with pytest.raises(ValueError, match="num_gpus=99"):
        get_strategy("mirrored", num_gpus=99)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="--strategy=multi_worker needs the TF_CONFIG"):
        get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        get_strategy("multi_worker")
