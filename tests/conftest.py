"""Runs several test files read: each is computed once per test process (each pytest-xdist worker
has its own) and never changed afterwards; a test that adds to a run works on a copy
(`shared_helpers.copy_run`)."""
import dataclasses
import types

import pytest


@pytest.fixture(scope="session")
def derm_simclr_runs(smoke_data_dir, tmp_path_factory):
    """The smoke preset's derm SimCLR grid at 100 % of the labels, fine-tuned:

    - `first`: seed 0 with its `random_init` control (one output dir: the method's row, the
      control's row, their predictions, the pretraining stage and the TensorBoard curves);
      `first.rows` is what `runner.run` returned (the method's rows).
    - `extended`: a copy of `first` extended to seeds 0 and 1 without the control (seed 1 fine-tunes
      the finished stage); `extended.rows` is what that second `runner.run` returned.

    Test files reading it: test_run (the control), test_curves (pretraining summaries, random_init
    rows), test_finetune_selection (the control's row is a random_init row)."""
    from benchmark.harness import runner
    from shared_helpers import copy_run, smoke_config

    root = tmp_path_factory.mktemp("derm_simclr_runs")
    cfg = dataclasses.replace(smoke_config(root / "first", "derm", "simclr", smoke_data_dir,
                                           label_fractions=(100.0,)),
                              control="random_init")
    first = types.SimpleNamespace(cfg=cfg, rows=runner.run(cfg))
    more = copy_run(first.cfg, root / "extended")
    more = dataclasses.replace(more, control=None,
                               preset=dataclasses.replace(more.preset, seeds=(0, 1)))
    extended = types.SimpleNamespace(cfg=more, rows=runner.run(more))
    return types.SimpleNamespace(first=first, extended=extended)
