"""Throughput of the SimCLR and MICLe pretraining steps and of their input pipelines.

    python -m benchmark.speed [--steps=5] [--repeats=3] [--warmup=2] [--batch_size=N] [--configs=r50_64,bot50_64,r18_32]
        [--modes=nondeterministic,deterministic] [--precision=float32,bfloat16] [--pipeline_tasks=cxr,derm]

On synthetic random patient groups held in memory (no dataset build), for each configuration and
method it prints views/s (2 views per pair) of
  pipeline  the tf.data input pipeline alone (sampling + augmentation + batching),
  step      the distributed train step on one fixed batch (compute only),
  e2e       the train step fed by the pipeline (what pretraining runs at),
each the median of --repeats timings of --steps steps (shared machines are noisy), and the
process's peak resident memory so far (resource.getrusage), in each mode (`baselines.determinism`:
deterministic = the run default, nondeterministic = `benchmark.run --nondeterministic`); a
deterministic row also shows its e2e views/s as a fraction of the nondeterministic row's, in each
precision (`baselines.precision`; one row per precision, a bfloat16 row also shows its step views/s
as a multiple of the float32 row's). TensorFlow's oneDNN kernels are on unless TF_ENABLE_ONEDNN_OPTS
says otherwise (see `benchmark/__init__.py`).

A second table times the input pipeline alone at 224 px the way a run reads real data: a small
synthetic real-format set (JPEG/PNG files) is written to a temporary folder and built by the
task's TFDS builders at resolution 224px; the pretraining pipeline then decodes, samples pairs,
augments and batches. It prints views/s and views/s per CPU core for three ablations (decode only:
a centre 224-px slice; decode + random resized crop and flip; the task's full view function), so
the differences show where the time goes.
"""
from __future__ import annotations

import dataclasses
import os
import resource
import sys
import tempfile
import time

if __name__ == "__main__":
    from benchmark import cli

    cli.quiet_start(sys.argv)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from baselines import augment, determinism, precision, pretrain  # noqa: E402
from baselines.api import BackboneConfig, PretrainConfig  # noqa: E402
from baselines.backbones import build_encoder  # noqa: E402
from baselines.micle import micle_pairs  # noqa: E402
from baselines.simclr import build_contrastive_model, simclr_pairs  # noqa: E402
from benchmark import cli  # noqa: E402
from benchmark.harness import data  # noqa: E402
from benchmark.harness.tasks import get_task  # noqa: E402

CONFIGS: dict[str, tuple[BackboneConfig, int, int]] = {
    # name: (backbone, image size, batch size)
    "r50_64": (BackboneConfig(family="resnet_v1", depth=50, width=1, small_stem=False), 64, 32),
    # BoT50 beside R50 at the same image size and batch: c5 attends at 4x4, then at 2x2.
    "bot50_64": (BackboneConfig(family="botnet", depth=50, width=1, small_stem=False, image_size=64), 64, 32),
    "r18_32": (BackboneConfig(family="resnet_v1", depth=18, width=1, small_stem=True), 32, 64),
    # The cpu preset's pretraining (benchmark/presets.py).
    "cpu": (BackboneConfig(family="resnet_v1", depth=18, width=0.25, small_stem=False), 32, 128),
    # The BoTNet leaderboard rows: the cpu preset with --backbone=botnet-50x0.25-small (c5 at 4x4).
    "bot_cpu": (BackboneConfig(family="botnet", depth=50, width=0.25, small_stem=True, image_size=32), 32, 128),
}
PAIR_FNS = {"simclr": simclr_pairs, "micle": micle_pairs}
MODES = {"nondeterministic": False, "deterministic": True}


def synthetic_groups(num_groups: int, *, image_size: int, max_images: int = 4, seed: int = 0) -> tf.data.Dataset:
    """`num_groups` groups {"group_id": "g<k>", "images": uint8 random [n, H, H, 3]} with n uniform in
    [1, max_images] and H = 5/4 * image_size, cached in memory."""
    rng = np.random.default_rng(seed)
    size = image_size * 5 // 4
    groups = [rng.integers(0, 256, (rng.integers(1, max_images + 1), size, size, 3), dtype=np.uint8)
              for _ in range(num_groups)]

    def generate():
        for k, images in enumerate(groups):
            yield {"group_id": f"g{k}", "images": images}

    spec = {"group_id": tf.TensorSpec([], tf.string), "images": tf.TensorSpec([None, size, size, 3], tf.uint8)}
    return tf.data.Dataset.from_generator(generate, output_signature=spec).cache()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(fn, warmup: int, steps: int, repeats: int) -> float:
    """Median seconds taken by `fn(steps)` over `repeats` calls, after a `fn(warmup)` call."""
    fn(warmup)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(steps)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


@dataclasses.dataclass(frozen=True)
class SpeedResult:
    config: str
    method: str
    batch_size: int
    deterministic: bool
    precision: str
    pipeline_views_per_s: float
    step_views_per_s: float
    e2e_views_per_s: float
    peak_rss_mb: float


def measure(name: str, method: str, *, steps: int, warmup: int, repeats: int = 1, batch_size: int | None = None,
            jit_compile: bool = False, num_groups: int = 128, deterministic: bool = True,
            strategy: tf.distribute.Strategy | None = None, precision_used: str = "float32") -> SpeedResult:
    """Throughputs of `method` ("simclr" or "micle") on configuration `name` of CONFIGS, with op
    determinism switched to `deterministic` (it stays so afterwards), the model computing in
    `precision_used` ("float32" or "bfloat16")."""
    determinism.set_deterministic(deterministic)
    backbone, image_size, default_batch = CONFIGS[name]
    strategy = strategy or tf.distribute.get_strategy()
    config = PretrainConfig(image_size=image_size, batch_size=batch_size or default_batch, steps=10_000,
                            precision=precision_used)
    groups = synthetic_groups(num_groups, image_size=image_size)
    dataset = pretrain.contrastive_dataset(groups, pair_fn=PAIR_FNS[method], config=config, seed=0,
                                           shuffle_buffer=num_groups)
    views = 2 * config.batch_size

    batches = iter(dataset)
    pipeline_s = _timed(lambda n: [next(batches) for _ in range(n)], warmup, steps, repeats)
    fixed = tf.data.Dataset.from_tensors(next(batches)).repeat()
    del batches  # stop its background prefetching

    with strategy.scope(), precision.scope(config.precision):
        model = build_contrastive_model(build_encoder(backbone), backbone=backbone, config=config,
                                        mask_same_group=method == "micle")
        pretrain.compile_model(model, config)
    loop = pretrain.make_train_loop(model, strategy, jit_compile=jit_compile)

    fixed_it = iter(strategy.experimental_distribute_dataset(fixed))
    step_s = _timed(lambda n: loop(fixed_it, tf.constant(n))["loss"].numpy(), warmup, steps, repeats)

    e2e_it = iter(strategy.experimental_distribute_dataset(dataset))
    e2e_s = _timed(lambda n: loop(e2e_it, tf.constant(n))["loss"].numpy(), warmup, steps, repeats)
    return SpeedResult(name, method, config.batch_size, deterministic, precision_used, views * steps / pipeline_s, views * steps / step_s,
                       views * steps / e2e_s, peak_rss_mb())


PIPELINE_SIZE = 224
# Groups written per builder for the 224-px pipeline set (the pretraining builder's groups are
# shuffled and repeated, so a small set suffices).
PIPELINE_SET_SIZE = 24
ABLATIONS = ("decode", "decode+crop", "full view")
MODES_NOTE = "deterministic mode"


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    task: str
    ablation: str
    views_per_s: float
    cores: int

    @property
    def views_per_s_per_core(self) -> float:
        return self.views_per_s / self.cores


def _ablation_view(ablation: str, task_view):
    """The view function of one ablation of the 224-px pipeline (see the module docstring)."""
    if ablation == "decode":
        return lambda image, size, *, seed: augment.to_float(tf.image.resize_with_crop_or_pad(image, size, size))

    def crop(image, size, *, seed):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        return augment.random_flip(augment.random_resized_crop(image, size, seed=crop_seed), seed=flip_seed)

    return crop if ablation == "decode+crop" else task_view


def pipeline_224(task_name: str, *, steps: int, warmup: int, repeats: int, batch_size: int = 32,
                 data_dir: str) -> list[PipelineResult]:
    """Views/s of the pretraining input pipeline of `task_name` at 224 px on a synthetic real-format
    set built under `data_dir` by the task's builders, for each of ABLATIONS (SimCLR pairs: two
    views per decoded image)."""
    task = get_task(task_name)
    cfg = data.DataConfig(data_dir=data_dir, manual_dir=None, resolution=f"{PIPELINE_SIZE}px",
                          synthetic_sizes={name: PIPELINE_SET_SIZE for name in data.builder_names(task)},
                          synthetic_image_size=PIPELINE_SIZE * 5 // 4)
    groups = data.pretrain_groups(data.prepare(task, cfg), task, None)
    config = PretrainConfig(image_size=PIPELINE_SIZE, batch_size=batch_size, steps=10_000,
                            augmentation=task.augmentation)
    cores = len(os.sched_getaffinity(0))
    out = []
    for ablation in ABLATIONS:
        view = _ablation_view(ablation, augment.get_view_fn(config.augmentation))

        def pairs(groups, *, view_fn, image_size, seed, start, view=view):
            return simclr_pairs(groups, view_fn=view, image_size=image_size, seed=seed, start=start,
                                shuffle_buffer=4 * PIPELINE_SET_SIZE)

        batches = iter(pretrain.contrastive_dataset(groups, pair_fn=pairs, config=config, seed=0,
                                                    shuffle_buffer=PIPELINE_SET_SIZE))
        seconds = _timed(lambda n: [next(batches) for _ in range(n)], warmup, steps, repeats)
        out.append(PipelineResult(task_name, ablation, 2 * batch_size * steps / seconds, cores))
        del batches
    return out


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """This entry point's flags; defined only when it runs (its --precision differs from
    `benchmark.run`'s, and both modules may be imported in one process), in `flag_values`."""
    define = {"flag_values": flag_values}
    flags.DEFINE_integer("steps", 5, "Timed steps (and pipeline batches) per timing.", **define)
    flags.DEFINE_integer("repeats", 3, "Timings per measurement; the median is printed.", **define)
    flags.DEFINE_integer("warmup", 2, "Untimed steps before timing (tracing, autotuning).", **define)
    flags.DEFINE_integer("batch_size", None, "Pairs per batch; default: each configuration's own "
                         "(CONFIGS).", **define)
    flags.DEFINE_list("configs", list(CONFIGS), f"Configurations among {list(CONFIGS)}.", **define)
    flags.DEFINE_list("methods", list(PAIR_FNS), f"Methods among {list(PAIR_FNS)}.", **define)
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the per-replica train step.", **define)
    flags.DEFINE_list("modes", list(MODES), f"Modes among {list(MODES)}.", **define)
    flags.DEFINE_list("precision", list(precision.PRECISIONS), "Precisions among "
                      f"{list(precision.PRECISIONS)}, one table row each.", **define)
    flags.DEFINE_list("pipeline_tasks", ["cxr", "derm"], "Tasks whose 224-px real-format input "
                      "pipeline is timed (empty: none).", **define)


def check_precisions(values: list[str]) -> tuple[str, ...]:
    """The --precision list, checked: each of float32/bfloat16 at most once, at least one."""
    bad = [v for v in values if v not in precision.PRECISIONS]
    if bad or not values or len(set(values)) != len(values):
        raise app.UsageError(f"--precision={','.join(values)}: expected one or both of "
                             f"{','.join(precision.PRECISIONS)}, each once")
    return tuple(values)


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        cli.quiet_logs()
    cli.progress_enabled(False)  # no dataset-build bars in the tables
    unknown = ([c for c in FLAGS.configs if c not in CONFIGS] + [m for m in FLAGS.methods if m not in PAIR_FNS]
               + [m for m in FLAGS.modes if m not in MODES])
    if unknown:
        raise app.UsageError(f"unknown --configs/--methods/--modes {unknown}; expected {list(CONFIGS)} / "
                             f"{list(PAIR_FNS)} / {list(MODES)}")
    if FLAGS.steps < 1 or FLAGS.repeats < 1 or FLAGS.warmup < 0:
        raise app.UsageError(f"--steps={FLAGS.steps} --repeats={FLAGS.repeats} --warmup={FLAGS.warmup}: "
                             "expected steps >= 1, repeats >= 1, warmup >= 0")
    if FLAGS.batch_size is not None and FLAGS.batch_size < 1:
        raise app.UsageError(f"--batch_size={FLAGS.batch_size}: expected a positive integer")
    if not FLAGS.configs or not FLAGS.methods or not FLAGS.modes:
        raise app.UsageError(f"--configs={','.join(FLAGS.configs)} --methods={','.join(FLAGS.methods)} "
                             f"--modes={','.join(FLAGS.modes)}: expected at least one of each")
    precisions = check_precisions(FLAGS.precision)
    for task in FLAGS.pipeline_tasks:
        try:
            get_task(task)
        except ValueError as e:
            raise app.UsageError(f"--pipeline_tasks={','.join(FLAGS.pipeline_tasks)}: {e}") from None
    flags_of_cpu = precision.host_cpu_flags()
    print(f"CPU bfloat16 instructions: {', '.join(f for f in precision.BF16_CPU_FLAGS if f in flags_of_cpu) or 'none'}")
    print(f"{'config':8} {'method':7} {'batch':>5} {'pipeline':>9} {'step':>7} {'e2e':>7}  views/s   "
          f"peak RSS  {'mode':16} {'precision':9} e2e/nondet step/f32")
    for name in FLAGS.configs:
        for method in FLAGS.methods:
            e2e, step = {}, {}
            for mode in FLAGS.modes:
                for used in precisions:
                    try:
                        r = measure(name, method, steps=FLAGS.steps, warmup=FLAGS.warmup,
                                    repeats=FLAGS.repeats, batch_size=FLAGS.batch_size,
                                    jit_compile=FLAGS.jit_compile, deterministic=MODES[mode],
                                    precision_used=used)
                    except (ValueError, OSError, tf.errors.OpError) as e:
                        cli.exit_on_error(e)
                    e2e[mode, used] = r.e2e_views_per_s
                    step[mode, used] = r.step_views_per_s
                    nondet = e2e.get(("nondeterministic", used))
                    ratio = (f"{r.e2e_views_per_s / nondet:10.2f}" if mode == "deterministic" and nondet
                             else " " * 10)
                    f32 = step.get((mode, "float32"))
                    speedup = f"{r.step_views_per_s / f32:8.2f}" if used != "float32" and f32 else ""
                    print(f"{r.config:8} {r.method:7} {r.batch_size:5d} {r.pipeline_views_per_s:9.1f} "
                          f"{r.step_views_per_s:7.1f} {r.e2e_views_per_s:7.1f}            {r.peak_rss_mb:7.0f} MiB  "
                          f"{mode:16} {used:9} {ratio} {speedup}".rstrip(), flush=True)
    if FLAGS.pipeline_tasks:
        print(f"\ninput pipeline alone at {PIPELINE_SIZE} px, real-format files through the builders "
              f"(SimCLR pairs, batch 32, {MODES_NOTE})")
        print(f"{'task':5} {'ablation':12} {'views/s':>8} {'cores':>5} {'views/s/core':>12}")
        determinism.set_deterministic(True)
        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.ERROR)  # TFDS warns about each fresh build folder
        with tempfile.TemporaryDirectory(prefix="speed_pipeline_") as tmp:
            for task in FLAGS.pipeline_tasks:
                try:
                    rows = pipeline_224(task, steps=FLAGS.steps, warmup=FLAGS.warmup, repeats=FLAGS.repeats,
                                        data_dir=tmp)
                except (ValueError, OSError, tf.errors.OpError) as e:
                    cli.exit_on_error(e)
                for p in rows:
                    print(f"{p.task:5} {p.ablation:12} {p.views_per_s:8.1f} {p.cores:5d} "
                          f"{p.views_per_s_per_core:12.1f}", flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
