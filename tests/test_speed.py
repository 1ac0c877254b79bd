"""benchmark.speed measures all three throughputs (a tiny batch; the figures themselves are the
benchmark's job, not a test's)."""
import math

import pytest

from baselines import determinism
from benchmark import speed


@pytest.mark.parametrize("deterministic", [False, True])
def test_measure_reports_positive_throughputs(deterministic):
    result = speed.measure("r18_32", "micle", steps=1, warmup=1, repeats=2, batch_size=4, num_groups=8,
                           deterministic=deterministic)
    assert (result.config, result.method, result.batch_size, result.deterministic) == (
        "r18_32", "micle", 4, deterministic)
    assert determinism.is_deterministic() == deterministic
    for value in (result.pipeline_views_per_s, result.step_views_per_s, result.e2e_views_per_s, result.peak_rss_mb):
        assert math.isfinite(value) and value > 0
