"""Test-wide settings: quiet TensorFlow, the harness's CPU kernels, two logical CPU devices for
replica tests."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import benchmark  # noqa: E402,F401  (TensorFlow's CPU kernel choice, made before TensorFlow loads)

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:  # already initialised by an earlier import
    pass


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smoke_data_dir(tmp_path_factory):
    """One `--data_dir` for the session's synthetic builds: builds are keyed by what they were
    generated from, so tests whose runs share a preset share its builds. The pytest-xdist workers
    share it too (a build is made under its lock, `benchmark.harness.data.build`: a worker wanting
    a build another one is making waits for it and reuses it)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker's base temp: <session base temp>/popen-gw<N>
        shared = tmp_path_factory.getbasetemp().parent / "shared_data"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("shared_data")
