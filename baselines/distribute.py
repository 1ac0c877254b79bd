"""Builds the tf.distribute strategy named on the command line (`--strategy`)."""
from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def check_strategy(name: str, *, tpu_address: str | None = None, num_gpus: int | None = None) -> None:
    """Raises ValueError if `get_strategy` would reject these arguments (checked without any
    TensorFlow work: a name, its TPU address, `num_gpus`, and TF_CONFIG for multi_worker)."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy={name!r}: unknown strategy; expected one of {list(STRATEGIES)}")
    if num_gpus is not None and name != "mirrored":
        raise ValueError(f"--strategy={name}: num_gpus only applies to --strategy=mirrored")
    if tpu_address and name != "tpu":
        raise ValueError(f"--strategy={name}: a TPU address only applies to --strategy=tpu")
    if name == "tpu" and not tpu_address:
        raise ValueError("--strategy=tpu needs a TPU address (grpc://host:8470, a TPU name, or 'local')")
    if name == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                             '(e.g. {"cluster": {"worker": ["host:port", ...]}, '
                             '"task": {"type": "worker", "index": 0}})')
        try:
            tf_config = json.loads(raw)
            tf_config["cluster"]["worker"]
            tf_config["task"]["index"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"--strategy=multi_worker: TF_CONFIG is not valid JSON with cluster.worker and "
                             f"task.index ({e!r})") from e


def get_strategy(name: str, *, tpu_address: str | None = None, num_gpus: int | None = None
                 ) -> tf.distribute.Strategy:
    """Returns the strategy `name`:

    - "default": the no-op default strategy (one replica, current device).
    - "one_device": one replica on the first GPU, else on the CPU.
    - "mirrored": one replica per GPU (the first `num_gpus` if given); without GPUs, one per logical CPU.
    - "multi_worker": MultiWorkerMirroredStrategy over the cluster in the TF_CONFIG environment variable;
      create it at program start, before any other TensorFlow op.
    - "tpu": TPUStrategy on the TPU at `tpu_address` (a grpc:// address, a TPU name, or "local" on a TPU VM).
    """
    check_strategy(name, tpu_address=tpu_address, num_gpus=num_gpus)
    if name == "default":
        return tf.distribute.get_strategy()
    # Listing devices initialises the runtime, which multi_worker and tpu must configure first.
    gpus = tf.config.list_logical_devices("GPU") if name in ("one_device", "mirrored") else []
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        if num_gpus is not None:
            if not 0 < num_gpus <= len(gpus):
                raise ValueError(f"--strategy=mirrored: num_gpus={num_gpus} but {len(gpus)} GPU(s) "
                                 "are visible")
            gpus = gpus[:num_gpus]
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        # Collective keys restart at 1 in every MirroredStrategy, so a second collective-based instance in
        # one process (e.g. in a test session) aborts with "Collective instance N ... mismatch"; CPU
        # replicas reduce on one device instead, which keeps any number of instances independent.
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    # name == "tpu"
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
