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


# pytest.ini runs pytest-xdist workers with `--dist loadfile`: a test file runs whole on one worker
# (its module fixtures are made once), and files are handed out in collection order as workers
# free up. Collecting the longest files first (CPU seconds measured on 2 cores, largest first) lets
# the two workers finish together; files not named here follow in their usual order.
LONGEST_FIRST = (
    "tests/test_run.py",
    "tests/test_determinism.py",
    "tests/test_distill.py",
    "tests/test_folder_task.py",
    "tests/test_run_integrity.py",
    "tests/test_simclr_import.py",
    "tests/test_methods.py",
    "tests/test_reproduce.py",
    "tests/test_leaderboard.py",
    "tests/test_submit.py",
    "tests/test_distribute.py",
    "tests/test_precision.py",
    "tests/test_positive_control.py",
    "tests/test_realdata.py",
    "tests/test_botnet.py",
    "tests/test_curves.py",
    "tests/test_board_integrity.py",
    "tests/test_finetune_selection.py",
    "tests/test_random_init.py",
    "tests/test_speed.py",
    "tests/test_linear_probe.py",
    "tests/test_dataset_card.py",
)


def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable
