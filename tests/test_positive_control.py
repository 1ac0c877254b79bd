"""Positive control of the contrastive machinery: a few seconds of SimCLR on a tiny synthetic set
must learn its instance-discrimination task (accuracy clearly above chance) and give features that
a frozen-feature probe separates better than the same probe on random_init features. A broken
loss, augmentation or pair sampler makes it fail."""
import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression

from baselines import augment, determinism, pretrain
from baselines.api import BackboneConfig, PretrainConfig
from baselines.random_init import RandomInit
from baselines.simclr import SimCLR

SIZE, BATCH, STEPS, CLASSES, PER_CLASS = 32, 32, 150, 4, 32
BACKBONE = BackboneConfig(family="resnet_v1", depth=10, width=0.25, small_stem=False)


def _dataset(seed=0):
    """CLASSES layout templates (three blob sites each); every instance jitters its template's sites
    and draws its own blob sizes, colours and background, so instances are distinct and a class
    is a spatial layout under colour nuisance. Returns uint8 images [N, 48, 48, 3] and labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    templates = rng.uniform(0.15, 0.85, (CLASSES, 3, 2))
    images, labels = [], []
    for k in range(CLASSES):
        for _ in range(PER_CLASS):
            image = np.full((48, 48, 3), rng.uniform(0.0, 0.4))
            for cy, cx in templates[k] + rng.normal(0, 0.05, (3, 2)):
                s = rng.uniform(0.06, 0.12)
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
                image = image * (1 - blob[..., None]) + blob[..., None] * rng.uniform(0.2, 1.0, 3)
            images.append(np.clip(image * 255, 0, 255).astype(np.uint8))
            labels.append(k)
    return np.stack(images), np.array(labels)


def _groups(images):
    return tf.data.Dataset.from_tensor_slices(
        {"group_id": [f"g{i}" for i in range(len(images))], "images": images[:, None]})


def _features(encoder, images):
    views = tf.stack([augment.eval_view(tf.constant(x), SIZE) for x in images])
    return encoder(views, training=False).numpy()


def _probe_accuracy(features, labels) -> float:
    """Logistic regression on 5 labelled instances per class, scored on the rest."""
    train = np.concatenate([np.flatnonzero(labels == k)[:5] for k in range(CLASSES)])
    test = np.setdiff1d(np.arange(len(labels)), train)
    mean, std = features[train].mean(0), features[train].std(0) + 1e-6
    model = LogisticRegression(C=1.0, max_iter=2000).fit((features[train] - mean) / std, labels[train])
    return float((model.predict((features[test] - mean) / std) == labels[test]).mean())


def _pretrain(tmp_path, method, images):
    logs = []
    config = PretrainConfig(image_size=SIZE, batch_size=BATCH, steps=STEPS, base_learning_rate=4.0,
                            temperature=0.2, warmup_fraction=0.1, checkpoint_every=STEPS,
                            min_crop_area=0.5)
    options = pretrain.LoopOptions(steps_per_loop=1, progress=False,
                                   callbacks=[lambda step, l, model: l and logs.append(l)])
    encoder = (SimCLR(options) if method == "simclr" else RandomInit()).pretrain(
        _groups(images), backbone=BACKBONE, config=config, strategy=tf.distribute.get_strategy(),
        checkpoint_dir=str(tmp_path / method))
    return encoder, logs


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    was_deterministic = determinism.is_deterministic()
    determinism.set_deterministic(True)
    images, labels = _dataset()
    tmp = tmp_path_factory.mktemp("control")
    simclr, logs = _pretrain(tmp, "simclr", images)
    random, _ = _pretrain(tmp, "random_init", images)
    yield logs, _probe_accuracy(_features(simclr, images), labels), _probe_accuracy(
        _features(random, images), labels)
    determinism.set_deterministic(was_deterministic)


def test_contrastive_accuracy_rises_far_above_chance(control):
    logs, _, _ = control
    chance = 1.0 / (2 * BATCH - 1)
    first = np.mean([l["contrast_acc"] for l in logs[:10]])
    last = np.mean([l["contrast_acc"] for l in logs[-30:]])
    assert last > 5 * chance and last > 2 * first, (first, last, chance)
    chance_loss = 2 * np.log(2 * BATCH - 1)  # nt_xent_loss sums both directions
    assert np.mean([l["loss"] for l in logs[-30:]]) < chance_loss - 0.8


def test_pretrained_features_beat_random_init_features_under_the_same_probe(control):
    _, pretrained, random = control
    assert pretrained > random + 0.1, (pretrained, random)
