"""BoTNet: relative-position logits, MHSA, BoT50 parameter count, gradients, replica equivalence,
stage checkpoints, image-size rules and the --backbone flag."""
import dataclasses
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from baselines import botnet, checkpoint, resnet
from baselines import api
from baselines.api import BackboneConfig
from baselines.backbones import build_encoder, encoder_feature_dim
import test_results
from benchmark import run
from shared_helpers import parsed_flags
from benchmark.board import lines as board_lines
from benchmark.board import render_csv
from benchmark.board import render_tables

SIZE = 16  # small stem: c5 attends at 4x4, then 2x2
SMALL = BackboneConfig(family="botnet", depth=50, width=0.25, small_stem=True, image_size=SIZE)


def _brute_relative_logits(q, rel_h, rel_w):
    b, h, w, n, _ = q.shape
    out = np.zeros((b, n, h, w, h, w))
    for i in range(b):
        for head in range(n):
            for x in range(h):
                for y in range(w):
                    for x2 in range(h):
                        for y2 in range(w):
                            out[i, head, x, y, x2, y2] = q[i, x, y, head] @ (
                                rel_h[x2 - x + h - 1] + rel_w[y2 - y + w - 1])
    return out


def test_relative_logits_equal_a_loop_over_positions_on_a_non_square_map():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 3, 5, 2, 4))
    rel_h, rel_w = rng.normal(size=(5, 4)), rng.normal(size=(9, 4))
    got = botnet.relative_logits(tf.constant(q), tf.constant(rel_h), tf.constant(rel_w)).numpy()
    np.testing.assert_allclose(got, _brute_relative_logits(q, rel_h, rel_w), rtol=1e-12, atol=1e-12)


def test_attention_layer_equals_a_reference_computation():
    """Scaled q, content + position logits, softmax over all positions, heads concatenated."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
    layer = botnet.RelativeSelfAttention2D(heads=2, head_dim=4)
    layer.build(x.shape)
    for var in layer.weights:  # larger than the init so that positions matter
        var.assign(rng.normal(size=var.shape).astype(np.float32) * 0.5)
    assert [tuple(w.shape) for w in layer.weights] == [(6, 8)] * 3 + [(5, 4), (9, 4)]
    wq, wk, wv, rel_h, rel_w = (w.numpy().astype(np.float64) for w in layer.weights)
    q = (x @ wq).reshape(2, 3, 5, 2, 4) / 2.0  # d^-1/2 with d = 4
    k, v = (x @ wk).reshape(2, 3, 5, 2, 4), (x @ wv).reshape(2, 3, 5, 2, 4)
    logits = np.einsum("bxynd,bXYnd->bnxyXY", q, k) + _brute_relative_logits(q, rel_h, rel_w)
    logits = logits.reshape(2, 2, 15, 15)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = np.einsum("bnij,bjnd->bind", weights, v.reshape(2, 15, 2, 4)).reshape(2, 3, 5, 8)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_bot50_at_224px_has_r50s_parameters_minus_c5_convs_plus_qkv_and_tables():
    r50 = resnet.resnet_v1(50, input_shape=(224, 224, 3))
    bot50 = build_encoder(BackboneConfig(family="botnet", depth=50, width=1, small_stem=False, image_size=224))
    c5_conv3x3 = 3 * 3 * 512 * 512
    qkv = 3 * 512 * 512
    tables = 128 * ((27 + 27) + 2 * (13 + 13))  # c5 attends at 14x14, then twice at 7x7
    assert bot50.count_params() == r50.count_params() - 3 * c5_conv3x3 + 3 * qkv + tables
    trainable = sum(int(np.prod(w.shape)) for w in bot50.trainable_weights)
    assert 18.7e6 < trainable < 18.9e6  # vs 23.5 M for R50 without a classifier
    mhsa = [bot50.get_layer(f"group4_block{b}_mhsa") for b in (1, 2, 3)]
    assert [(l.heads, l.head_dim, tuple(l.rel_height.shape), tuple(l.rel_width.shape)) for l in mhsa] == [
        (4, 128, (27, 128), (27, 128)), (4, 128, (13, 128), (13, 128)), (4, 128, (13, 128), (13, 128))]
    assert bot50.output.shape == (None, 2048) == (None, encoder_feature_dim(BackboneConfig(family="botnet", depth=50)))


def test_only_c5_changes_and_the_projection_shortcut_ends_in_relu():
    keras.utils.set_random_seed(0)
    model = build_encoder(SMALL)
    names = {layer.name for layer in model.layers}
    assert not any(n.startswith("group4") and n.endswith("conv2") for n in names)
    assert {"group3_block6_conv2", "group4_block1_mhsa", "group4_block1_pool"} <= names
    assert "group4_block2_pool" not in names
    assert "group4_block1_proj_bn_relu" in names  # the authors' code; timm's port has no ReLU here
    timm_like = botnet.botnet(50, 0.25, image_size=SIZE, small_stem=True, shortcut_relu=False)
    assert "group4_block1_proj_bn_relu" not in {layer.name for layer in timm_like.layers}
    for name in resnet.last_bn_names(50):  # every residual branch, attention blocks too, starts at zero
        assert not np.any(model.get_layer(name).gamma.numpy())
    bn = model.get_layer("group4_block2_bn2")
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    assert model.get_layer("group4_block1_mhsa").output.shape == (None, 4, 4, 128)
    assert model.get_layer("group4_block2_mhsa").output.shape == (None, 2, 2, 128)


def _with_open_residuals(model):
    """`model` with every last-BN gamma at 0.5, so the attention layers get gradients."""
    for name in resnet.last_bn_names(50):
        gamma = model.get_layer(name).gamma
        gamma.assign(np.full(gamma.shape, 0.5, gamma.dtype))
    return model


def test_gradients_are_finite_and_reach_the_position_tables():
    keras.utils.set_random_seed(0)
    model = _with_open_residuals(build_encoder(SMALL))
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=True)))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    by_path = {v.path: g for v, g in zip(model.trainable_variables, grads)}
    for block in (1, 2, 3):
        for table in ("rel_height", "rel_width", "query", "key", "value"):
            assert np.abs(by_path[f"group4_block{block}_mhsa/{table}"].numpy()).max() > 0


def _sgd_step(strategy, weights, images):
    """One SGD step on mean squared features of the global batch split over the replicas."""
    with strategy.scope():
        model = build_encoder(dataclasses.replace(SMALL, global_bn=True))
        model.set_weights(weights)
        optimizer = keras.optimizers.SGD(learning_rate=0.5)
        optimizer.build(model.trainable_variables)
    replicas = strategy.num_replicas_in_sync
    local = len(images) // replicas

    def shard(ctx):
        start = ctx.replica_id_in_sync_group * local
        return tf.constant(images[start:start + local])

    def replica_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(x, training=True))) / len(images)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def step(x):  # eager: tracing the 50-layer step costs more than running it
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=(x,)), axis=None)

    loss = float(step(strategy.experimental_distribute_values_from_function(shard)))
    return loss, [w.numpy() for w in model.weights]


@pytest.fixture
def float64():
    """Builds in float64 while the test runs: the replica equivalence is then exact up to ~1e-12
    (in float32 the all-reduce's other summation order, amplified by batch norm over 4 images,
    moves weights by up to ~1% of their update; a ResNet does the same)."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)


def test_mirrored_step_on_two_cpus_equals_the_single_device_step(float64):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "root conftest.py should make 2 logical CPUs"
    keras.utils.set_random_seed(0)
    weights = _with_open_residuals(build_encoder(SMALL)).get_weights()
    assert weights[0].dtype == np.float64
    images = np.random.default_rng(4).random((4, SIZE, SIZE, 3))
    single_loss, single = _sgd_step(tf.distribute.OneDeviceStrategy(devices[0]), weights, images)
    # All-reduces through one device, not collective ops: eager collectives here would reuse the
    # instance keys of other tests' (float32) collectives in this process and abort.
    mirrored = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    mirrored_loss, mirrored = _sgd_step(mirrored, weights, images)
    assert mirrored_loss == pytest.approx(single_loss, rel=1e-12)
    moved = [not np.array_equal(a, b) for a, b in zip(single, weights)]
    assert sum(moved) > len(weights) // 2  # the step changed the model
    for a, b, start in zip(mirrored, single, weights):
        np.testing.assert_allclose(a - start, b - start, rtol=1e-9, atol=1e-9)


def test_stage_checkpoint_round_trips_and_refuses_another_image_size(tmp_path):
    keras.utils.set_random_seed(0)
    encoder = _with_open_residuals(build_encoder(SMALL))  # so that the attention weights matter
    checkpoint.save_stage(str(tmp_path), encoder=encoder, method="random_init", backbone=SMALL, config=None,
                          steps_done=0)
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    first, second, clone = (checkpoint.load_encoder(str(tmp_path)),
                            checkpoint.load_encoder(str(tmp_path), dataclasses.replace(SMALL, global_bn=True)),
                            keras.models.clone_model(encoder))
    clone.set_weights(encoder.get_weights())
    expected = encoder(images, training=False).numpy()
    for model in (first, second, clone):
        np.testing.assert_array_equal(model(images, training=False).numpy(), expected)
    other_size = dataclasses.replace(SMALL, image_size=32)
    with pytest.raises(ValueError, match=rf"checkpoint {tmp_path} holds a botnet encoder built for 16-px "
                                         r"images, this run uses 32 px; its attention position tables"):
        checkpoint.load_encoder(str(tmp_path), other_size)
    with pytest.raises(ValueError, match=r"init_checkpoint .* built for 16-px images, this run uses 32 px"):
        checkpoint.init_encoder(str(tmp_path), build_encoder(other_size), backbone=other_size)


@pytest.mark.parametrize("image_size,small_stem,message", [
    (32, False, "image size 32 with the ImageNet stem gives c5 a 2x2 input, so its last blocks attend over "
                "1x1 (attention needs at least 2x2); use images of at least 33 px, or the small stem "
                "(-small) from 9 px"),
    (16, False, "image size 16 with the ImageNet stem gives c5 a 1x1 input, so its last blocks attend over "
                "1x1 (attention needs at least 2x2); use images of at least 33 px, or the small stem"),
    (8, True, "image size 8 with the small stem gives c5 a 2x2 input, so its last blocks attend over 1x1 "
              "(attention needs at least 2x2); use images of at least 9 px"),
    (None, True, "botnet needs the image size its position tables are built for (BackboneConfig.image_size), "
                 "got None"),
], ids=["imagenet_stem_32px", "imagenet_stem_16px", "small_stem_8px", "no_image_size"])
def test_too_small_images_are_refused_with_the_smallest_usable_size(image_size, small_stem, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_encoder(BackboneConfig(family="botnet", depth=50, width=0.25, small_stem=small_stem,
                                     image_size=image_size))


def test_an_input_shape_of_another_size_is_refused():
    with pytest.raises(ValueError, match=re.escape("input_shape=(32, 32, 3): a botnet encoder is built for "
                                                   "BackboneConfig.image_size=16")):
        build_encoder(SMALL, input_shape=(32, 32, 3))


def test_smallest_usable_sizes_build():
    assert (botnet.min_image_size(True), botnet.min_image_size(False)) == (9, 33)
    assert botnet.attention_sizes(9, True) == (3, 2) and botnet.attention_sizes(33, False) == (3, 2)
    assert botnet.attention_sizes(32, True) == (8, 4) and botnet.attention_sizes(224, False) == (14, 7)
    model = build_encoder(dataclasses.replace(SMALL, image_size=9))
    assert model.get_layer("group4_block3_mhsa").output.shape == (None, 2, 2, 128)


def _config_from(argv):
    with parsed_flags(["benchmark.run", *argv]):
        return run.config_from_flags()


def test_backbone_flag_builds_botnet_for_the_presets_image_size(tmp_path):
    assert run.parse_backbone("botnet-50x0.25-small") == BackboneConfig(
        family="botnet", depth=50, width=0.25, small_stem=True)
    cfg = _config_from(["--backbone=botnet-50x0.25-small", "--preset=cpu", f"--output_dir={tmp_path}",
                        "--method=random_init"])
    assert cfg.preset.backbone == BackboneConfig(family="botnet", depth=50, width=0.25, small_stem=True,
                                                 image_size=32)
    assert run.parse_backbone("botnet-50x2").small_stem is False
    assert api.backbone_record(cfg.preset.backbone)["image_size"] == 32
    assert "image_size" not in api.backbone_record(BackboneConfig())  # rows of other families as before


@pytest.mark.parametrize("argv,message", [
    (["--backbone=botnet-50x0.25", "--preset=cpu"],
     "--backbone=botnet-50x0.25 with --preset=cpu: image size 32 with the ImageNet stem gives c5 a 2x2 "
     "input, so its last blocks attend over 1x1 (attention needs at least 2x2); use images of at least "
     "33 px, or the small stem (-small) from 9 px"),
    (["--backbone=botnet-101"], "--backbone=botnet-101: botnet depth=101: expected one of [50]"),
    (["--backbone=botnet-50x5"], "--backbone=botnet-50x5: botnet width=5.0: expected one of"),
    (["--backbone=botnet-50-big"], "--backbone=botnet-50-big: expected resnet_v1-<depth>[x<width>][-small][-sk0|-sk1], "
                                   "bit-<depth>[x<width>] or botnet-50[x<width>][-small]"),
], ids=["imagenet_stem_at_cpu_preset", "depth_101", "width_5", "unknown_suffix"])
def test_backbone_flag_errors(argv, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        _config_from([*argv, f"--output_dir={tmp_path}"])


def _board_row(method, seed, backbone, auc):
    row = test_results._row(method=method, seed=seed, config={"backbone": backbone})
    row["metrics"]["in_distribution"]["values"]["mean_auc"] = auc
    return row


def test_leaderboard_never_pools_backbones_and_shows_them_where_they_meet():
    task = board_lines.TaskInfo("cxr", "mean_auc", ("in_distribution", "shifted"))
    resnet18 = {"family": "resnet_v1", "depth": 18, "width": 0.25, "small_stem": False, "global_bn": False}
    bot50 = {"family": "botnet", "depth": 50, "width": 0.25, "small_stem": True, "global_bn": False,
             "image_size": 32}
    rows = [_board_row("micle", 0, resnet18, 0.6), _board_row("micle", 1, resnet18, 0.8),
            _board_row("micle", 0, bot50, 0.9)]
    lines = board_lines.summarise(rows, task)
    assert [(l.backbone, dict(l.test_sets)["in_distribution"].n_seeds) for l in lines] == [
        ("botnet-50x0.25-small", 1), ("resnet_v1-18x0.25", 2)]
    assert dict(lines[1].test_sets)["in_distribution"].mean == pytest.approx(0.7)
    markdown = render_tables.render_markdown(task, lines, [])
    assert "| method (SYNTHETIC data) | backbone | init | eval mode |" in markdown
    assert "| micle | botnet-50x0.25-small | scratch | finetune | cpu | 10% | 0.9000 ± 0.0000 |" in markdown
    assert "<th>backbone</th>" in render_tables.render_html(task, lines, [])
    one_backbone = board_lines.summarise(rows[:2], task)
    assert "| backbone |" not in render_tables.render_markdown(task, one_backbone, [])  # no column
    csv_text = render_csv.render_csv(task, one_backbone, [])
    assert csv_text.splitlines()[0].startswith("section,task,method,backbone,precision,init,eval_mode,")
    assert ",micle,resnet_v1-18x0.25,,scratch,finetune," in csv_text  # precision not recorded
    assert board_lines.backbone_name({"config": {}}) == ""  # a row that does not record it
