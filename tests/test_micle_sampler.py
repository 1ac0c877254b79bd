"""The MICLe pair sampler and SimCLR's image pairs, checked with images tagged by a constant colour."""
import collections
import itertools

import numpy as np
import pytest
import tensorflow as tf

from baselines.augment import get_view_fn
from baselines.micle import micle_pairs
from baselines.simclr import simclr_pairs

SIZES = (1, 2, 3, 5)  # images per group


def tagged_groups(sizes=SIZES, size=12):
    """Group g holds images whose pixels are all (g, i, 200): group g, image i."""
    groups = [np.stack([np.full((size, size, 3), (g, i, 200), np.uint8) for i in range(n)])
              for g, n in enumerate(sizes)]

    def generate():
        for g, images in enumerate(groups):
            yield {"group_id": f"case{g}", "images": images}

    spec = {"group_id": tf.TensorSpec([], tf.string), "images": tf.TensorSpec([None, size, size, 3], tf.uint8)}
    return tf.data.Dataset.from_generator(generate, output_signature=spec)


def identity_view(image, size, *, seed):
    """Resizes without changing colours, so a view still carries its image's tag."""
    return tf.image.resize(tf.cast(image, tf.float32), [size, size], method="nearest")


def tag(view):
    g, i, marker = np.unique(view.reshape(-1, 3), axis=0)[0]
    assert marker == 200 and len(np.unique(view.reshape(-1, 3), axis=0)) == 1
    return int(g), int(i)


def draws(pairs):
    out = []
    for ex in pairs.as_numpy_iterator():
        out.append((ex["group_id"].decode(), tag(ex["view1"]), tag(ex["view2"])))
    return out


def test_micle_pairs_same_case_distinct_images_and_fallback():
    pairs = micle_pairs(tagged_groups().repeat(100), view_fn=identity_view, image_size=8, seed=3)
    seen = collections.defaultdict(collections.Counter)
    for group_id, (g1, i1), (g2, i2) in draws(pairs):
        assert group_id == f"case{g1}" and g1 == g2, "a pair mixes two cases"
        n = SIZES[g1]
        if n >= 2:
            assert i1 != i2, f"case with {n} images paired an image with itself"
        else:
            assert i1 == i2 == 0
        seen[g1][(i1, i2)] += 1
    # Every image is drawn in both positions; every ordered pair for cases of up to 3 images.
    for g, n in enumerate(SIZES):
        assert {a for a, _ in seen[g]} == {b for _, b in seen[g]} == set(range(n)), f"case{g}: {seen[g]}"
        if n <= 3:
            expected = {(0, 0)} if n == 1 else set(itertools.permutations(range(n), 2))
            assert set(seen[g]) == expected, f"case{g}: drew {sorted(seen[g])}"
    # Roughly uniform over the 6 ordered pairs of the 3-image case (100 draws, ~17 expected each).
    assert min(seen[2].values()) >= 5 and max(seen[2].values()) <= 30, seen[2]


def test_micle_pairs_deterministic_choice_given_seed():
    def indices(seed):  # the output order is not deterministic (parallel map), the choices are
        pairs = micle_pairs(tagged_groups().repeat(5), view_fn=identity_view, image_size=8, seed=seed)
        return sorted(draws(pairs))

    assert indices(7) == indices(7)
    assert indices(7) != indices(8)


def test_micle_pairs_with_real_augmentation_shapes():
    view_fn = get_view_fn("simclr")
    for ex in micle_pairs(tagged_groups(size=40), view_fn=view_fn, image_size=32, seed=0).as_numpy_iterator():
        for key in ("view1", "view2"):
            assert ex[key].shape == (32, 32, 3) and ex[key].dtype == np.float32
            assert 0.0 <= ex[key].min() and ex[key].max() <= 1.0


def test_micle_pairs_rejects_empty_group():
    empty = tf.data.Dataset.from_tensors({"group_id": tf.constant("case0"),
                                          "images": tf.zeros([0, 8, 8, 3], tf.uint8)})
    with pytest.raises(tf.errors.InvalidArgumentError, match="group has no images"):
        list(micle_pairs(empty, view_fn=identity_view, image_size=8, seed=0))


def test_simclr_pairs_every_image_once_two_views_of_it():
    pairs = simclr_pairs(tagged_groups(), view_fn=identity_view, image_size=8, seed=0, shuffle_buffer=16)
    got = draws(pairs)
    for group_id, first, second in got:
        assert first == second, "SimCLR views must come from the same image"
        assert group_id == f"case{first[0]}"
    assert sorted(first for _, first, _ in got) == [(g, i) for g, n in enumerate(SIZES) for i in range(n)]
