"""benchmark.speed measures all three throughputs (a tiny batch; the figures themselves are the
benchmark's job, not a test's)."""
import math

import pytest

from baselines import determinism
from benchmark import speed


@pytest.mark.parametrize("deterministic", [False, True])
def test_measure_reports_positive_throughputs(deterministic):
    # "cpu": the smallest configuration (the cpu preset's ResNet-18x0.25 at 32 px).
    result = speed.measure("cpu", "micle", steps=1, warmup=1, repeats=2, batch_size=4, num_groups=8,
                           deterministic=deterministic)
    assert (result.config, result.method, result.batch_size, result.deterministic) == (
        "cpu", "micle", 4, deterministic)
    assert determinism.is_deterministic() == deterministic
    for value in (result.pipeline_views_per_s, result.step_views_per_s, result.e2e_views_per_s, result.peak_rss_mb):
        assert math.isfinite(value) and value > 0
