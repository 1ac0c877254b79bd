"""Runs a method on a task and prints its result table.

    python -m benchmark.run --method=micle --task=cxr

With no --manual_dir, the embedded synthetic real-format sets are generated (once, cached under
--data_dir) and read by the same builders as real data. Rows go to <output_dir>/results.jsonl; a
rerun skips finished cells and resumes an interrupted pretraining. Runs are deterministic (same
code, data, flags and seeds give byte-identical predictions) unless --nondeterministic.
"""
from __future__ import annotations

import dataclasses
import os
import sys

if __name__ == "__main__":
    from benchmark import cli

    cli.quiet_start(sys.argv)

from absl import app, flags  # noqa: E402

import tensorflow as tf  # noqa: E402

from baselines import api, backbones, botnet, distribute, none, precision, registry  # noqa: E402
from benchmark import cli  # noqa: E402
from benchmark.board import report  # noqa: E402
from benchmark.harness import data, distill, protocol, results, runner  # noqa: E402
from benchmark.harness.backbone_names import parse_backbone  # noqa: E402
from benchmark.harness.results import EVAL_MODES  # noqa: E402
from benchmark.harness.presets import Preset, get_preset  # noqa: E402
from benchmark.harness.tasks import TaskOptions, get_task, with_test_sets  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "micle", "Registered method (micle, simclr, supervised) or an import "
                    "path package.module:ClassName of a baselines.api.Method subclass.")
flags.DEFINE_string("task", "cxr", "Task name: cxr, derm, or folder:<dir> (your own images with a "
                    "metadata.csv and a task.json; see the README, \"Your own data\").")
flags.DEFINE_string("preset", "cpu", "Named preset: cpu (CPU-sized default) or paper.")
flags.DEFINE_string("data_dir", os.path.join("runs", "data"),
                    "Where TFDS builds (and synthetic sets) are stored.")
flags.DEFINE_string("manual_dir", None, "Folder with one sub-folder per builder holding the real "
                    "downloads (e.g. <manual_dir>/cxr_chexpert/CheXpert-v1.0-small); unset = synthetic.")
flags.DEFINE_string("test_sets", None, "Comma-separated test sets to score: in_distribution, "
                    "shifted (default: all of the task's). A test set left out is not read, so its "
                    "source need not be downloaded (e.g. --test_sets=in_distribution without "
                    "PAD-UFES-20 or NIH ChestX-ray14).")
flags.DEFINE_string("output_dir", None, "Results folder (default runs/<task name>).")
flags.DEFINE_string("label_fractions", None, "Comma-separated label percentages, e.g. 1,10,100 "
                    "(default: the preset's).")
flags.DEFINE_string("seeds", None, "Comma-separated seeds (default: the preset's).")
flags.DEFINE_string("eval_modes", None, "Comma-separated: finetune, linear, distill (the fine-tuned "
                    "model distilled into the same backbone on all training images), "
                    "distill:<backbone> (into another backbone, e.g. distill:resnet_v1-18x0.25, "
                    "from scratch) (default: the preset's).")
flags.DEFINE_string("strategy", "default",
                    "default, one_device, mirrored, multi_worker (TF_CONFIG) or tpu.")
flags.DEFINE_string("tpu_address", None, "TPU address for --strategy=tpu.")
flags.DEFINE_string("backbone", None, "Backbone override: resnet_v1-<depth>[x<width>][-small][-sk0|-sk1], "
                    "bit-<depth>[x<width>] or botnet-50[x<width>][-small], e.g. resnet_v1-50x2, "
                    "resnet_v1-18-small, resnet_v1-50x1-sk1 (SimCLRv2 selective kernels), bit-50, "
                    "botnet-50x0.25-small.")
flags.DEFINE_integer("pretrain_steps", None, "Override the preset's pretraining steps.")
flags.DEFINE_integer("pretrain_seed", None, "Seed of pretraining (weights, views, shuffles) and of the "
                     "control's random weights (default: the preset's, 0). --seeds vary only the "
                     "label subset and fine-tuning; another pretraining seed is another pretraining "
                     "replicate: give it its own --name or --output_dir.")
flags.DEFINE_string("uncertainty", "u_ones", "CheXpert uncertainty policy: u_ones, u_zeros, u_ignore.")
flags.DEFINE_string("bag", None, "Which images of a case form a pretraining bag (a MICLe pair is two "
                    "images of one bag): case (all of the patient's / lesion's), study, frontal or "
                    "study_frontal (cxr only); default: the task's (see benchmark/tasks.py).")
flags.DEFINE_string("init_checkpoint", None,
                    "Where pretraining starts: an earlier stage's checkpoint dir, a BiT .npz, a SimCLR "
                    "TF2 SavedModel dir or a SimCLR TF1 model.ckpt-<step> prefix.")
flags.DEFINE_string("student_init", None, "Encoder the students of distill:<backbone> eval modes "
                    "start from (a stage folder, BiT .npz, .keras encoder or SimCLR checkpoint of "
                    "that backbone, e.g. a pretrained small network); default random weights.")
flags.DEFINE_integer("ft_proj_selector", None, "Fine-tune/probe from this layer of the pretraining "
                     "stage's projection head (SimCLRv2's ft_proj_selector; 0 = encoder features; "
                     "default: the preset's).")
flags.DEFINE_string("name", None, "The method's name in results and leaderboards (letters, digits, "
                    "._+-); default --method, required for import paths and saved backbones.")
flags.DEFINE_string("control", "random_init", "Control method also run on the same grid and "
                    "backbone into the same --output_dir (finished cells skipped), so the summary "
                    "shows each cell's difference to it: random_init, or none.")
flags.DEFINE_bool("progress", True, "Show progress bars (only ever on a terminal; --noprogress "
                  "also silences the TFDS build bars).")
flags.DEFINE_string("precision", "auto", "Training precision of pretraining and fine-tuning: float32, "
                    "bfloat16 (bfloat16 compute, float32 variables, loss and logits) or auto (bfloat16 "
                    "on TPUs, GPUs of compute capability >= 8.0 and CPUs with amx_bf16/avx512_bf16, "
                    "else float32).")
flags.DEFINE_bool("nondeterministic", False, "Fastest pipeline instead of reproducible results: op "
                  "determinism off, tf.data maps and batches in completion order (rows record "
                  "deterministic: false).")


def _sized_botnet(backbone: api.BackboneConfig, preset: Preset) -> api.BackboneConfig:
    """`backbone` built for the preset's image size; ValueError naming the flag when its attention
    layers would see less than a 2x2 map."""
    try:
        botnet.check_image_size(preset.image_size, backbone.small_stem)
    except ValueError as e:
        flag = f"--backbone={FLAGS.backbone}" if FLAGS.backbone is not None else "--backbone"
        raise ValueError(f"{flag} with --preset={preset.name}: {e}") from None
    return dataclasses.replace(backbone, image_size=preset.image_size)


def _items(text: str, flag: str) -> list[str]:
    if not text.strip():
        raise ValueError(f"--{flag}=: empty; give comma-separated values or leave the flag out "
                         "for the preset's")
    return [v.strip() for v in text.split(",")]


def _seeds(text: str) -> tuple[int, ...]:
    items = _items(text, "seeds")
    try:
        values = tuple(int(v) for v in items)
    except ValueError:
        raise ValueError(f"--seeds={text}: expected comma-separated integers >= 0") from None
    if any(v < 0 for v in values):
        raise ValueError(f"--seeds={text}: seeds must be >= 0")
    if len(set(values)) != len(values):
        raise ValueError(f"--seeds={text}: duplicate values")
    return values


def _modes(text: str) -> tuple[str, ...]:
    """--eval_modes as canonical mode names (`distill:<backbone>` written as `backbone_tag`)."""
    modes = []
    for mode in _items(text, "eval_modes"):
        if mode.startswith(f"{distill.MODE}:"):
            try:
                mode = distill.mode_name(distill.student_backbone(mode))
            except ValueError as e:
                raise ValueError(f"--eval_modes={text}: {e}") from None
        elif mode not in EVAL_MODES:
            raise ValueError(f"--eval_modes={text}: unknown mode {mode!r}; expected one of "
                             f"{EVAL_MODES} or {distill.MODE}:<backbone>")
        modes.append(mode)
    if len(set(modes)) != len(modes):
        raise ValueError(f"--eval_modes={text}: duplicate values")
    return tuple(modes)


def _folder(flag: str, path: str, *, must_exist: bool, writable: bool) -> None:
    """Checks that --flag=path is (or can become) a folder, and that it is writable if asked."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"--{flag}={path}: exists and is not a directory")
        if writable and not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"--{flag}={path}: directory is not writable")
        return
    if must_exist:
        raise ValueError(f"--{flag}={path}: no such directory")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--{flag}={path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--{flag}={path}: cannot be created ({parent} is not writable)")


def config_from_flags() -> runner.RunConfig:
    """Builds and validates the run configuration from the command-line flags; touches no data
    and does no TensorFlow work."""
    preset = get_preset(FLAGS.preset)
    task = get_task(FLAGS.task, TaskOptions(uncertainty=FLAGS.uncertainty, bag=FLAGS.bag))
    if FLAGS.test_sets is not None:
        task = with_test_sets(task, [v.strip() for v in FLAGS.test_sets.split(",")])
    method = registry.get_method(FLAGS.method)  # fail fast on an unknown method
    name = FLAGS.name or FLAGS.method
    if not results.METHOD_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"--name={name}: a method name is 1-63 characters from A-Z a-z 0-9 . _ + - "
                         "(set --name for an import path or saved backbone)")
    distribute.check_strategy(FLAGS.strategy, tpu_address=FLAGS.tpu_address)
    precision.check_request(FLAGS.precision)
    changes = {}
    if FLAGS.label_fractions is not None:
        _items(FLAGS.label_fractions, "label_fractions")
        changes["label_fractions"] = protocol.parse_fractions(FLAGS.label_fractions)
    if FLAGS.seeds is not None:
        changes["seeds"] = _seeds(FLAGS.seeds)
    if FLAGS.eval_modes is not None:
        changes["eval_modes"] = _modes(FLAGS.eval_modes)
    if FLAGS.backbone is not None:
        changes["backbone"] = parse_backbone(FLAGS.backbone)
    if FLAGS.ft_proj_selector is not None:
        if FLAGS.ft_proj_selector < 0:
            raise ValueError(f"--ft_proj_selector={FLAGS.ft_proj_selector}: expected 0 (encoder "
                             "features) or a projection-head layer >= 1")
        changes["finetune"] = dataclasses.replace(preset.finetune,
                                                  ft_proj_selector=FLAGS.ft_proj_selector)
    if FLAGS.pretrain_seed is not None:
        if FLAGS.pretrain_seed < 0:
            raise ValueError(f"--pretrain_seed={FLAGS.pretrain_seed}: expected an integer >= 0")
        changes["pretrain"] = dataclasses.replace(preset.pretrain, seed=FLAGS.pretrain_seed)
    if FLAGS.pretrain_steps is not None:
        if FLAGS.pretrain_steps < 1:
            raise ValueError(f"--pretrain_steps={FLAGS.pretrain_steps}: expected a positive integer")
        changes["pretrain"] = dataclasses.replace(changes.get("pretrain", preset.pretrain),
                                                  steps=FLAGS.pretrain_steps)
    preset = dataclasses.replace(preset, **changes)
    if preset.backbone.family == "botnet":
        preset = dataclasses.replace(preset, backbone=_sized_botnet(preset.backbone, preset))
    try:
        backbones.encoder_feature_dim(method.backbone(preset.backbone))
    except ValueError as e:
        raise ValueError(f"--method={FLAGS.method} with backbone {preset.backbone}: {e}") from None
    if FLAGS.init_checkpoint is not None and not (tf.io.gfile.exists(FLAGS.init_checkpoint) or
                                                  tf.io.gfile.exists(FLAGS.init_checkpoint + ".index")):
        raise ValueError(f"--init_checkpoint={FLAGS.init_checkpoint}: no such file or directory")
    if FLAGS.student_init is not None and not (tf.io.gfile.exists(FLAGS.student_init) or
                                               tf.io.gfile.exists(FLAGS.student_init + ".index")):
        raise ValueError(f"--student_init={FLAGS.student_init}: no such file or directory")
    runner.check_student_init(FLAGS.student_init, preset.eval_modes)
    if FLAGS.method == "none" and FLAGS.init_checkpoint is None:
        raise ValueError(none.MISSING_CHECKPOINT)
    if FLAGS.control != "none" and FLAGS.control not in runner.CONTROLS:
        raise ValueError(f"--control={FLAGS.control}: expected one of {runner.CONTROLS} or none")
    output_dir = FLAGS.output_dir or os.path.join("runs", task.name)
    _folder("output_dir", output_dir, must_exist=False, writable=True)
    _folder("data_dir", FLAGS.data_dir, must_exist=False, writable=False)
    if FLAGS.manual_dir is not None:
        _folder("manual_dir", FLAGS.manual_dir, must_exist=True, writable=False)
    data_cfg = data.DataConfig(data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
                               resolution=preset.resolution,
                               synthetic_sizes=preset.synthetic_sizes,
                               synthetic_image_size=preset.synthetic_image_size)
    return runner.RunConfig(method=FLAGS.method, task=task, preset=preset, data=data_cfg,
                            output_dir=output_dir,
                            strategy=FLAGS.strategy, tpu_address=FLAGS.tpu_address,
                            init_checkpoint=FLAGS.init_checkpoint, progress=FLAGS.progress,
                            student_init=FLAGS.student_init,
                            name=name, deterministic=not FLAGS.nondeterministic,
                            control=None if FLAGS.control == "none" else FLAGS.control)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; every setting is a --flag")
    if not FLAGS["verbosity"].present:
        cli.quiet_logs()
    try:
        cfg = config_from_flags()
        cfg = dataclasses.replace(cfg, progress=cli.progress_enabled(cfg.progress))
        # Multi-worker and TPU strategies must exist before any other TensorFlow op.
        strategy = distribute.get_strategy(FLAGS.strategy, tpu_address=FLAGS.tpu_address)
        chosen = precision.resolve(FLAGS.precision, devices=precision.local_devices(strategy),
                                   cpu_flags=precision.host_cpu_flags())
        print(f"precision: {chosen.used} ({chosen.reason})", flush=True)
        cfg = dataclasses.replace(cfg, precision=chosen)
        rows = runner.run(cfg, strategy)
        controls = runner.control_rows(cfg)
        with cli.row_warnings():
            table = report.summary_table(rows, controls, output_dir=cfg.output_dir)
    except cli.user_errors() as e:
        cli.exit_on_error(e)
    print("\n".join(report.pretrain_lines(rows)) + "\n")
    print(table)
    print(f"\nresults: {os.path.join(cfg.output_dir, 'results.jsonl')}")
    print(f"curves: tensorboard --logdir {os.path.join(cfg.output_dir, runner.TENSORBOARD_DIR)}")


if __name__ == "__main__":
    app.run(main)
