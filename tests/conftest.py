"""Runs several test files read. Each is computed once per test session, by whichever test process
(pytest-xdist worker) asks first while the others wait for it, and never changed afterwards; a
test that adds to a run works on a copy (`shared_helpers.copy_run`)."""
import contextlib
import dataclasses
import fcntl
import os
import shutil
import types

import pytest


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory):
    """`shared_dir(name, build)`: the folder `name`, made by `build(folder)` once in the session
    (under a lock: a worker asking while another builds it waits) and only read afterwards."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # each worker's base temp is <session base temp>/popen-gw<N>
    root = root / "shared_runs"
    root.mkdir(exist_ok=True)

    def get(name, build):
        folder = root / name
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not (root / f"{name}.done").exists():
                    shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
                    build(folder)
                    (root / f"{name}.done").touch()
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(lock, fcntl.LOCK_UN)
        return folder

    return get


def _rows(cfg):
    """The rows `runner.run(cfg)` returns: the stored rows of cfg's task, method and preset."""
    from benchmark.harness import results

    store = results.ResultsStore(os.path.join(cfg.output_dir, "results.jsonl"))
    return [r for r in store.rows() if (r["task"], r["method"], r["preset"])
            == (cfg.task.name, cfg.method_name, cfg.preset.name)]


@pytest.fixture(scope="session")
def derm_simclr_runs(smoke_data_dir, shared_dir):
    """The smoke preset's derm SimCLR grid at 100 % of the labels, fine-tuned:

    - `first`: seed 0 with its `random_init` control (one output dir: the method's row, the
      control's row, their predictions, the pretraining stage and the TensorBoard curves);
      `first.rows` are the rows `runner.run` returned (the method's).
    - `extended`: a copy of `first` extended to seeds 0 and 1 without the control (seed 1 fine-tunes
      the finished stage); `extended.rows` are the rows that second `runner.run` returned.

    Read by test_run (the control, the linear probe of the stage), test_curves (pretraining
    summaries, random_init rows) and test_finetune_selection (the control's row: a random_init
    row)."""
    from benchmark.harness import runner
    from shared_helpers import copy_run, smoke_config

    def configs(root):
        first = dataclasses.replace(smoke_config(root / "first", "derm", "simclr", smoke_data_dir,
                                                 label_fractions=(100.0,)), control="random_init")
        more = dataclasses.replace(first, output_dir=str(root / "extended" / "out"), control=None,
                                   preset=dataclasses.replace(first.preset, seeds=(0, 1)))
        return first, more

    def build(root):
        first, more = configs(root)
        runner.run(first)
        copy_run(first, more.output_dir)
        runner.run(more)

    first, more = configs(shared_dir("derm_simclr", build))
    return types.SimpleNamespace(first=types.SimpleNamespace(cfg=first, rows=_rows(first)),
                                 extended=types.SimpleNamespace(cfg=more, rows=_rows(more)))
