"""SimCLR ImageNet checkpoint import: the loaded encoder is numerically the published network.

Checkpoints come from `tests/simclr_fixture.py`, which names random weights as SimCLR's TF2
SavedModels / TF1 checkpoints do and computes the forward pass with plain tf.nn ops.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

import simclr_fixture as fx
from baselines import checkpoint, resnet, simclr_import
from baselines.api import BackboneConfig
from baselines.heads import projection_head, with_head_layers
from benchmark.board import lines as board_lines
from benchmark.board import render_tables
from benchmark.run import parse_backbone

IMAGES = tf.random.stateless_uniform([2, 32, 32, 3], [3, 4])  # in [0, 1], no mean/std


def reference(net, images=IMAGES):
    return {k: v.numpy() for k, v in net.forward({n: tf.constant(a) for n, a in net.values.items()},
                                                    images).items()}


# Each format with and without selective kernels, with and without a head, at width 1 and at
# another width (2, as published, for the SavedModel; 0.5 for the TF1 checkpoint, which holds three
# copies of the weights: at width 2 a 1 GB file). SK at width 1 only: a SavedModel of the SK
# ResNet-50x2 alone took over a minute to write.
@pytest.mark.parametrize("fmt,sk,width,head_layers", [
    ("tf2", True, 1, 3), ("tf1", True, 1, 0), ("tf2", False, 2, 0), ("tf1", False, 0.5, 3)])
def test_loaded_encoder_equals_the_source_final_avg_pool(tmp_path, fmt, sk, width, head_layers):
    net = fx.ReferenceNet(50, width, sk, head_layers, fmt, seed=int(width))
    path = fx.write(str(tmp_path), net)
    want = reference(net)
    encoder = checkpoint.load_encoder(path)  # architecture inferred from the file
    assert simclr_import.describe_backbone(simclr_import.infer_backbone(simclr_import.read(path))) == (
        f"resnet_v1-50x{width}" + ("-sk1" if sk else ""))
    got = encoder(IMAGES, training=False).numpy()
    np.testing.assert_allclose(got, want["final_avg_pool"], rtol=1e-5, atol=1e-5)
    if fmt == "tf2":  # the SavedModel's own output is the same function
        np.testing.assert_allclose(tf.saved_model.load(path)(IMAGES, False)["final_avg_pool"].numpy(),
                                   want["final_avg_pool"], rtol=1e-5, atol=1e-5)
    head = checkpoint.load_head(path, encoder.output_shape[-1])
    if head_layers:
        np.testing.assert_allclose(head(got, training=False).numpy(), want["proj_head_output"],
                                   rtol=1e-4, atol=1e-5)
    else:
        assert head is None


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A resnet_v1-18x0.25 stand-in (TF2, 2-layer head of 16) and its reference network."""
    net = fx.ReferenceNet(18, 0.25, False, 2, "tf2", proj_dim=16)
    return fx.write(str(tmp_path_factory.mktemp("small")), net), net


R18Q = BackboneConfig(family="resnet_v1", depth=18, width=0.25, small_stem=False)


def test_init_encoder_loads_the_head_only_when_the_methods_head_matches(small):
    path, net = small
    encoder = resnet.resnet_v1(18, 0.25)
    head = projection_head(128, num_layers=2, output_dim=16)
    assert "projection head" in checkpoint.init_encoder(path, encoder, backbone=R18Q, head=head)
    want = reference(net)
    np.testing.assert_allclose(head(encoder(IMAGES)).numpy(), want["proj_head_output"], rtol=1e-4, atol=1e-5)
    other = projection_head(128, num_layers=3, output_dim=16)
    before = [w.copy() for w in other.get_weights()]
    assert "projection head" not in checkpoint.init_encoder(path, encoder, backbone=R18Q, head=other)
    assert all(np.array_equal(a, b) for a, b in zip(before, other.get_weights()))


def test_ft_proj_selector_features_are_the_first_head_layer(small):
    path, net = small
    encoder = checkpoint.load_encoder(path)
    head = checkpoint.load_head(path, 128)
    model = with_head_layers(encoder, head, 1)
    dense, bn, _ = net.head[0]
    v = net.values
    feats = reference(net)["final_avg_pool"]
    want = np.maximum((feats @ v[dense] - v[f"{bn}/moving_mean"]) * v[f"{bn}/gamma"]
                      / np.sqrt(v[f"{bn}/moving_variance"] + 1e-5) + v[f"{bn}/beta"], 0)
    np.testing.assert_allclose(model(IMAGES).numpy(), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"ft_proj_selector=3: the projection head has 2 layers"):
        with_head_layers(encoder, head, 3)


def _corrupt(kind, tmp_path, small_path):
    """(path to load, backbone or None) of a bad input of `kind`."""
    if kind == "other_backbone":
        return small_path, BackboneConfig(family="resnet_v1", depth=18, width=0.5, small_stem=False)
    net = fx.ReferenceNet(18, 0.25, False, 0, "tf1")
    if kind == "wrong_shape":
        name = next(n for n in net.values if n.endswith("conv2d_3/kernel"))
        net.values[name] = np.zeros((3, 3, 16, 8), np.float32)
    if kind == "unknown_variable":
        net.values["base_model/dense/bias"] = np.zeros(4, np.float32)
    prefix = fx.write(str(tmp_path), net)
    if kind == "truncated":
        os.remove(tf.io.gfile.glob(prefix + ".data-*")[0])
    return prefix, None


@pytest.mark.parametrize("kind,message", [
    ("other_backbone", r"^[^\n]*/saved_model: variable resnet/conv2d_fixed_padding/conv2d/kernel has "
     r"shape \[7, 7, 3, 16\], expected \[7, 7, 3, 32\] for layer stem_conv of resnet_v1-18x0\.5 "
     r"\(the backbone being initialised is resnet_v1-18x0\.5; the file holds resnet_v1-18x0\.25\)$"),
    ("wrong_shape", r"^[^\n]*/model\.ckpt-1000: variable base_model/conv2d_3/kernel has shape "
     r"\[3, 3, 16, 8\], expected \[3, 3, 16, 16\] for layer group1_block1_conv2 of resnet_v1-18x0\.25$"),
    ("unknown_variable", r"^[^\n]*/model\.ckpt-1000: variable base_model/dense/bias \[4\] has no place in "
     r"a SimCLR resnet_v1 \(expected conv kernels and batch-norm parameters\)$"),
    ("truncated", r"^SimCLR checkpoint [^\n]*/model\.ckpt-1000: unreadable \([^\n]*\)$"),
])
def test_a_checkpoint_that_does_not_map_fails_with_one_line(tmp_path, small, kind, message):
    path, backbone = _corrupt(kind, tmp_path, small[0])
    with pytest.raises(ValueError, match=message):
        if backbone is None:
            checkpoint.load_encoder(path)
        else:
            checkpoint.init_encoder(path, resnet.resnet_v1(backbone.depth, backbone.width),
                                    backbone=backbone)


def test_describe_init_kinds_and_fingerprint(tmp_path, small):
    assert checkpoint.describe_init(None) == {"kind": "scratch", "name": None, "fingerprint": None}
    got = checkpoint.describe_init(small[0])
    assert got["kind"] == "simclr_tf2" and len(got["fingerprint"]) == 64
    net = fx.ReferenceNet(18, 0.25, False, 0, "tf1", seed=5)
    prefix = fx.write(str(tmp_path / "r18_1x_sk0"), net)
    tf1 = checkpoint.describe_init(prefix)
    assert tf1["kind"] == "simclr_tf1" and tf1["name"].endswith("r18_1x_sk0")
    assert checkpoint.describe_init(os.path.dirname(prefix)) == tf1  # the directory via its checkpoint file
    other = fx.write(str(tmp_path / "seed6"), fx.ReferenceNet(18, 0.25, False, 0, "tf1", seed=6))
    assert checkpoint.describe_init(other)["fingerprint"] != tf1["fingerprint"]


def test_parse_backbone_selective_kernels():
    assert parse_backbone("resnet_v1-50x1-sk1").sk_ratio == resnet.SK_RATIO
    assert parse_backbone("resnet_v1-50x2-sk0") == parse_backbone("resnet_v1-50x2")
    assert parse_backbone("resnet_v1-18-small-sk1").small_stem
    for bad in ("resnet_v1-50-sk2", "bit-50-sk1", "resnet_v1-50-sk0-sk1", "resnet_v1-50-sk1-sk1"):
        with pytest.raises(ValueError, match=r"expected resnet_v1-<depth>\[x<width>\]\[-small\]\[-sk0\|-sk1\]"):
            parse_backbone(bad)


def _row(seed, init=None, init_checkpoint=None):
    task = board_lines.task_info("derm")
    config = {"init_checkpoint": init_checkpoint}
    if init is not None:
        config["init"] = init
    return {"task": "derm", "synthetic": True, "preset": "smoke", "method": "m", "eval_mode": "finetune",
            "label_fraction": 1.0, "seed": seed, "deterministic": True, "config": config,
            "metrics": {task.test_sets[0]: {"values": {task.primary_metric: 0.5 + seed / 10}, "ci95": {}}}}


def test_leaderboard_never_pools_different_inits():
    task = board_lines.task_info("derm")
    ssl = {"kind": "simclr_tf2", "name": "simclrv2/pretrained/r50_1x_sk1", "fingerprint": "ab" * 32}
    rows = [_row(0), _row(1, init={"kind": "scratch", "name": None, "fingerprint": None}),
            _row(2, init=ssl), _row(3, init={**ssl, "fingerprint": "cd" * 32}),
            _row(4, init_checkpoint="/x/stage")]
    lines = board_lines.summarise(rows, task)
    assert sorted((l.init, dict(l.test_sets)[task.test_sets[0]].n_seeds) for l in lines) == sorted([
        ("scratch", 2), ("ImageNet-SSL simclrv2/pretrained/r50_1x_sk1 (abababab)", 1),
        ("ImageNet-SSL simclrv2/pretrained/r50_1x_sk1 (cdcdcdcd)", 1), ("checkpoint /x/stage", 1)])
    assert "| init |" in render_tables.render_markdown(task, lines, [])


def test_imagenet_ssl_only_scenario_runs_through_the_harness(small, tmp_path, smoke_data_dir):
    """Scenario (a): `--method=none` evaluates the imported encoder as it is, here from its first
    projection-head layer; the rows record the init and the selector."""
    import dataclasses

    from test_run import _config

    from benchmark.harness import runner

    path, _ = small
    cfg = _config(tmp_path, "derm", "none", smoke_data_dir, eval_modes=("linear",), label_fractions=(100.0,))
    preset = dataclasses.replace(cfg.preset, backbone=R18Q, finetune=dataclasses.replace(
        cfg.preset.finetune, ft_proj_selector=1))
    (row,) = runner.run(dataclasses.replace(cfg, preset=preset, init_checkpoint=path))
    assert row["config"]["init"]["kind"] == "simclr_tf2" and len(row["config"]["init"]["fingerprint"]) == 64
    assert row["config"]["finetune"]["ft_proj_selector"] == 1
    with pytest.raises(ValueError, match="--method=none evaluates the --init_checkpoint encoder"):
        runner.run(dataclasses.replace(cfg, output_dir=str(tmp_path / "other")))
