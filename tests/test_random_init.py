"""The random_init reference method: seeded weights for any backbone, a finished stage that round-trips."""
import re

import numpy as np
import pytest
import tensorflow as tf

from baselines import checkpoint
from baselines.api import BackboneConfig, PretrainConfig
from baselines.registry import get_method

R10 = BackboneConfig(family="resnet_v1", depth=10, width=0.25, small_stem=True)
BOT = BackboneConfig(family="botnet", depth=50, width=0.25, small_stem=True, image_size=16)
DEFAULT = tf.distribute.get_strategy()


def _pretrain(directory, backbone, seed, **kwargs):
    return get_method("random_init").pretrain(None, backbone=backbone, config=PretrainConfig(seed=seed),
                                              strategy=DEFAULT, checkpoint_dir=str(directory), **kwargs)


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("backbone", [R10, BOT], ids=["resnet_v1", "botnet"])
def test_weights_are_a_function_of_the_seed_and_the_stage_round_trips(tmp_path, backbone):
    first = _pretrain(tmp_path / "a", backbone, seed=3).get_weights()
    assert _same(_pretrain(tmp_path / "b", backbone, seed=3).get_weights(), first)
    assert not _same(_pretrain(tmp_path / "c", backbone, seed=4).get_weights(), first)
    meta = checkpoint.read_meta(str(tmp_path / "a"))
    assert (meta.method, meta.backbone, meta.finished, meta.steps_done, meta.method_options) == (
        "random_init", backbone, True, 0, {"seed": 3})
    assert _same(checkpoint.load_encoder(str(tmp_path / "a")).get_weights(), first)
    assert _same(_pretrain(tmp_path / "a", backbone, seed=3).get_weights(), first)  # the stored stage


def test_a_stage_of_another_seed_or_a_starting_checkpoint_is_refused(tmp_path):
    _pretrain(tmp_path, R10, seed=0)
    with pytest.raises(ValueError, match=re.escape("method_options: stored {'seed': 0} != requested {'seed': 1}")):
        _pretrain(tmp_path, R10, seed=1)
    with pytest.raises(ValueError, match=re.escape(
            f"method 'random_init' starts from random weights; init_checkpoint={tmp_path} would make it "
            "another method (use no --init_checkpoint)")):
        _pretrain(tmp_path / "new", R10, seed=0, init_checkpoint=str(tmp_path))
