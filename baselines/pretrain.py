"""The shared contrastive pretraining loop of SimCLR and MICLe (and any two-view method).

`pretrain_contrastive` builds the encoder and the method's two-view model under the strategy's
scope, the optimizer (LARS with SimCLR's linearly batch-scaled warm-up + cosine learning rate, or
Adam), the input pipeline (shuffled, repeated groups -> the method's pair sampler -> global batches
-> `strategy.experimental_distribute_dataset`), and runs `strategy.run(model.train_step)` inside a
`tf.function` for `config.steps` steps with a tqdm progress bar.

Checkpoints (format in `baselines.checkpoint`): the training state is saved every
`config.checkpoint_every` steps; a rerun with the same `checkpoint_dir` resumes from the last saved
step (same step count, weights and optimizer state, and the input stream continues where it
stopped: the pair at position i is a function of (`config.seed`, i)), and a
`checkpoint_dir` holding a finished stage returns its encoder without training. `init_checkpoint`
(an earlier stage) initialises the encoder, and the projection head when shapes match, at step 0.

Curves: at the first loop boundary, at every boundary that passes a multiple of
`LoopOptions.log_every` steps and at the last step, the model's logged values (`LOG_KEYS`) and the
learning rate of that step's update are a point of the curve. The chief writes every point to
TensorBoard event files in `summary_dir` (if given: a directory for this stage's events only; a
new stage first removes event files left there, a resumed one appends only the steps after the
last one already there) and, with every state save, the first and last points, the logging
interval and the chance levels to `curve.json` in `checkpoint_dir` (`checkpoint.write_curve`).
Logging reads values the loop returns anyway: it changes nothing that is trained.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Protocol, Sequence

import keras
import tensorflow as tf
import tqdm

from baselines import checkpoint, events, precision
from baselines.api import BackboneConfig, PretrainConfig
from baselines.augment import get_view_fn
from baselines.backbones import build_encoder
from baselines.lars import LARS
from baselines.schedules import WarmupCosine, scaled_learning_rate
from medssl_common.provenance import code_version

LARS_MOMENTUM = 0.9
LR_SCALING = "linear"  # SimCLR: peak lr = base_learning_rate * batch_size / 256


class PairFn(Protocol):
    """A pair sampler: groups {"group_id", "images"} -> {"view1", "view2": float32 [S, S, 3], "group_id"}.

    Every random draw of the pair at position i must be a function of (`seed`, i) (see
    `augment.with_element_seeds`), and the first `start` pairs are skipped, cheaply (before
    augmentation), so that a resumed run sees the stream an uninterrupted one would."""

    def __call__(self, groups: tf.data.Dataset, *, view_fn: Callable, image_size: int,
                 seed: int, start: int) -> tf.data.Dataset: ...


# Called as callback(step, logs, model): once after set-up (logs == {}), then after every loop.
Callback = Callable[[int, dict[str, float], keras.Model], None]


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """How the loop runs (not what it trains): steps per `tf.function` call, XLA, shuffle buffer
    (groups; SimCLR also shuffles images with it), progress bar, step callbacks, and the interval
    of the logged curve (steps; points are taken at loop boundaries)."""

    steps_per_loop: int = 1
    jit_compile: bool = False
    shuffle_buffer: int = 1024
    progress: bool = True
    callbacks: Sequence[Callback] = ()
    log_every: int = 10


def learning_rate_schedule(config: PretrainConfig) -> WarmupCosine:
    """The warm-up + cosine schedule of `build_optimizer` (step i's update uses its value at i - 1)."""
    warmup = int(round(config.warmup_fraction * config.steps))
    if config.optimizer == "lars":
        peak = scaled_learning_rate(config.base_learning_rate, config.batch_size, LR_SCALING)
        return WarmupCosine(peak, config.steps, warmup)
    if config.optimizer == "adam":
        return WarmupCosine(config.base_learning_rate, config.steps, warmup)
    raise ValueError(f"PretrainConfig.optimizer={config.optimizer!r}: expected 'lars' or 'adam'")


def build_optimizer(config: PretrainConfig) -> keras.optimizers.Optimizer:
    """LARS (momentum 0.9, L2 weight decay in the gradient, BN/bias excluded) on a warm-up + cosine
    schedule peaking at `base_learning_rate * batch_size / 256`; or Adam on the same schedule shape
    peaking at the unscaled `base_learning_rate` (weight decay is then an L2 loss term, see
    `simclr.ContrastiveModel`)."""
    schedule = learning_rate_schedule(config)
    if config.optimizer == "lars":
        return LARS(schedule, momentum=LARS_MOMENTUM, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(schedule)


def compile_model(model: keras.Model, config: PretrainConfig) -> keras.optimizers.Optimizer:
    """Compiles `model` with `build_optimizer(config)` and creates the optimizer's variables now
    (call under `strategy.scope()`; slots created lazily inside a distributed step fail)."""
    optimizer = build_optimizer(config)
    model.compile(optimizer=optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def _hash_group_id(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """String group ids -> int64 fingerprints (strings cannot be fed to TPUs)."""
    return {**example, "group_id": tf.strings.to_hash_bucket_fast(example["group_id"], 2**63 - 1)}


def contrastive_dataset(
    groups: tf.data.Dataset,
    *,
    pair_fn: PairFn,
    config: PretrainConfig,
    seed: int,
    shuffle_buffer: int,
    start: int = 0,
) -> tf.data.Dataset:
    """Endless global batches {"view1", "view2": float32 [B, S, S, 3], "group_id": int64 [B]}, from
    pair `start` of the stream on.

    The stream is a function of `seed` (and TensorFlow's global seed, which `tf.data` shuffles mix
    in). Its order is fixed when op determinism is on (`tf.config.experimental.enable_op_determinism`,
    the harness default), which overrides the `deterministic=False` ordering used for speed here."""
    groups = groups.shuffle(shuffle_buffer, seed=seed).repeat()
    pairs = pair_fn(groups, view_fn=get_view_fn(config.augmentation, config.min_crop_area, config.color_scale), image_size=config.image_size, seed=seed,
                    start=start)
    ds = pairs.map(_hash_group_id, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(config.batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=False)
    options = tf.data.Options()
    options.deterministic = False
    options.autotune.enabled = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def make_train_loop(model: keras.Model, strategy: tf.distribute.Strategy, *, jit_compile: bool = False):
    """`loop(iterator, num_steps)`: runs `num_steps` distributed `model.train_step`s in one
    `tf.function`; returns the replica-mean logs of the last step. (No autograph: tracing the
    step without source conversion is seconds faster.)"""
    step_fn = tf.function(model.train_step, jit_compile=True) if jit_compile else model.train_step

    @tf.function(autograph=False)
    def loop(iterator, num_steps):
        def body(i, logs):
            per_replica = strategy.run(step_fn, args=(next(iterator),))
            return i + 1, {key: strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica[key], axis=None)
                           for key in model.LOG_KEYS}

        logs = {key: tf.zeros([], tf.float32) for key in model.LOG_KEYS}
        _, logs = tf.while_loop(lambda i, _: i < num_steps, body, (tf.constant(0, tf.int32), logs))
        return logs

    return loop


def _validate(config: PretrainConfig, strategy: tf.distribute.Strategy, options: LoopOptions) -> None:
    for name in ("steps", "batch_size", "checkpoint_every", "image_size"):
        if getattr(config, name) <= 0:
            raise ValueError(f"PretrainConfig.{name}={getattr(config, name)}: expected a positive integer")
    if config.precision not in precision.PRECISIONS:
        raise ValueError(f"PretrainConfig.precision={config.precision!r}: expected one of {precision.PRECISIONS}")
    if not 0.0 <= config.warmup_fraction <= 1.0:
        raise ValueError(f"PretrainConfig.warmup_fraction={config.warmup_fraction}: expected a value in [0, 1]")
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"PretrainConfig.batch_size={config.batch_size}: must be divisible by the "
                         f"{replicas} replicas of the strategy")
    if options.steps_per_loop <= 0 or options.shuffle_buffer <= 0 or options.log_every <= 0:
        raise ValueError(f"LoopOptions: steps_per_loop, shuffle_buffer and log_every must be positive, "
                         f"got {options}")


class _Curve:
    """The logged points of a stage: every point to TensorBoard events in `summary_dir` (chief
    only), the first and last with the chance levels to the stage's curve.json at each save."""

    DESCRIPTIONS = {
        "loss": "NT-Xent loss of the step's global batch, both directions summed (chance 2 ln(2B-1))",
        "contrast_acc": "fraction of anchors whose nearest candidate is their positive (chance 1/(2B-1))",
        "learning_rate": "learning rate of the step's update",
    }

    def __init__(self, checkpoint_dir: str, summary_dir: str | None, *, model: keras.Model,
                 config: PretrainConfig, log_every: int, step: int, resumed: bool, is_chief: bool):
        self.checkpoint_dir, self.is_chief, self.log_every = checkpoint_dir, is_chief, log_every
        self.schedule = learning_rate_schedule(config)
        chance = getattr(model, "chance_levels", None)
        self.record = {"log_every": log_every, "batch_size": config.batch_size,
                       "chance": chance(config.batch_size) if chance else {}, "first": None, "last": None}
        stored = checkpoint.read_curve(checkpoint_dir) if resumed else None
        if stored and stored.get("first") and stored["first"]["step"] <= step:
            self.record["first"] = stored["first"]
        if stored and stored.get("last") and stored["last"]["step"] <= step:
            self.record["last"] = stored["last"]
        self.writer, self.written_until = None, 0
        if summary_dir and is_chief:
            if resumed:  # points an interrupted attempt wrote after its last save are not repeated
                self.written_until = events.last_step(summary_dir) or 0
            else:  # a new stage: events left by an earlier stage in this directory are not its curve
                events.remove_events(summary_dir)
            self.writer = events.ScalarWriter(summary_dir, self.DESCRIPTIONS)

    def due(self, before: int, step: int, last_step: int) -> bool:
        """Whether the loop boundary after steps (before, step] is a point of the curve."""
        return before == 0 or step == last_step or step // self.log_every > before // self.log_every

    def log(self, step: int, logs: dict[str, float]) -> None:
        point = {"step": step, **logs, "learning_rate": float(self.schedule(step - 1))}
        self.record["first"] = self.record["first"] or point
        self.record["last"] = point
        if self.writer and step > self.written_until:
            self.writer.write(step, {k: v for k, v in point.items() if k != "step"})

    def save(self, step: int) -> None:
        if self.is_chief:
            checkpoint.write_curve(self.checkpoint_dir, {"steps": step, **self.record})

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def pretrain_contrastive(
    groups: tf.data.Dataset,
    *,
    pair_fn: PairFn,
    build_model: Callable[[keras.Model], keras.Model],
    method: str,
    backbone: BackboneConfig,
    config: PretrainConfig,
    strategy: tf.distribute.Strategy,
    checkpoint_dir: str,
    init_checkpoint: str | None = None,
    method_options: dict[str, Any] | None = None,
    options: LoopOptions = LoopOptions(),
    summary_dir: str | None = None,
) -> keras.Model:
    """Pretrains an encoder on `groups` with a two-view model and returns the encoder.

    Args:
      groups: the `baselines.api` data contract, {"group_id", "images": uint8 [n, H, W, 3]}.
      pair_fn: turns (shuffled, endless) groups into view pairs, e.g. `simclr.simclr_pairs`.
      build_model: encoder -> model with `.encoder`, `.head`, `LOG_KEYS` and a `train_step` taking a
        batch of pairs (e.g. `simclr.ContrastiveModel`), and optionally `chance_levels(global_batch)`
        (the `LOG_KEYS` values of chance, recorded in curve.json); called under `strategy.scope()`.
      method, method_options: recorded in meta.json; a rerun must use the same ones.
      backbone, config, strategy, checkpoint_dir, init_checkpoint: as in `Method.pretrain`.
      options: loop options (`LoopOptions`).
      summary_dir: where the chief writes the curve as TensorBoard event files (None: not written;
        curve.json is kept either way).
    """
    _validate(config, strategy, options)
    method_options = dict(method_options or {})
    stored = None
    if checkpoint.has_meta(checkpoint_dir):
        stored = checkpoint.read_meta(checkpoint_dir)
        checkpoint.check_resumable(checkpoint_dir, stored, method=method, backbone=backbone, config=config,
                                   method_options=method_options, init_checkpoint=init_checkpoint)
        if stored.finished:
            logging.info("%s: finished stage in %s, not training", method, checkpoint_dir)
            with strategy.scope():
                return checkpoint.load_encoder(checkpoint_dir, backbone)

    keras.utils.set_random_seed(config.seed)  # weight initialisation and tf.data shuffles
    with strategy.scope(), precision.scope(config.precision):
        encoder = build_encoder(backbone)
        model = build_model(encoder)
        optimizer = compile_model(model, config)
    state = tf.train.Checkpoint(model=model, optimizer=optimizer)
    is_chief = strategy.extended.should_checkpoint
    manager = checkpoint.state_manager(checkpoint_dir, state, is_chief=is_chief)
    latest = checkpoint.restore_state(checkpoint_dir, state, steps_done=stored.steps_done if stored else 0)
    if latest:
        logging.info("%s: resumed from %s", method, latest)
    elif init_checkpoint:
        logging.info("%s: initialised %s", method,
                     checkpoint.init_encoder(init_checkpoint, encoder, backbone=backbone, head=model.head))

    version = code_version()

    def meta(steps_done: int) -> checkpoint.StageMeta:
        return checkpoint.StageMeta(
            method=method, backbone=backbone, pretrain=config, steps_done=steps_done, finished=False,
            code_version=version, method_options=method_options,
            init_checkpoint=init_checkpoint)

    step = int(optimizer.iterations.numpy())
    if is_chief and stored is None:
        checkpoint.write_meta(checkpoint_dir, meta(step))

    dataset = contrastive_dataset(groups, pair_fn=pair_fn, config=config, seed=config.seed,
                                  shuffle_buffer=options.shuffle_buffer, start=step * config.batch_size)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    loop = make_train_loop(model, strategy, jit_compile=options.jit_compile)
    curve = _Curve(checkpoint_dir, summary_dir, model=model, config=config, log_every=options.log_every,
                   step=step, resumed=stored is not None, is_chief=is_chief)
    for callback in options.callbacks:
        callback(step, {}, model)
    bar_options = {} if options.progress else {"disable": True}  # {}: tqdm's defaults (TQDM_DISABLE)
    with tqdm.tqdm(total=config.steps, initial=step, desc=f"{method} pretraining", unit="step",
                   dynamic_ncols=True, **bar_options) as bar:
        while step < config.steps:
            next_save = (step // config.checkpoint_every + 1) * config.checkpoint_every
            num_steps = min(options.steps_per_loop, config.steps - step, next_save - step)
            try:
                logs = loop(iterator, tf.constant(num_steps, tf.int32))
            except tf.errors.OutOfRangeError as e:
                raise ValueError(f"{method}: the groups dataset is empty; expected at least one group") from e
            before, step = step, int(optimizer.iterations.numpy())
            logs = {key: float(value) for key, value in logs.items()}
            bar.update(num_steps)
            bar.set_postfix(logs)
            if curve.due(before, step, config.steps):
                curve.log(step, logs)
            if step % config.checkpoint_every == 0 or step == config.steps:
                manager.save(checkpoint_number=step)
                curve.save(step)
                if is_chief:
                    checkpoint.write_meta(checkpoint_dir, meta(step))
            for callback in options.callbacks:
                callback(step, logs, model)
    curve.close()
    if is_chief:
        checkpoint.save_stage(checkpoint_dir, encoder=encoder, method=method, backbone=backbone, config=config,
                              steps_done=step, head=model.head, method_options=method_options,
                              init_checkpoint=init_checkpoint)
    return encoder
