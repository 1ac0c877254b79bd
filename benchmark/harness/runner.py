"""One benchmark run: data → pretraining → fine-tuning over label fractions × seeds × eval modes →
scores on the in-distribution and shifted test sets → one results row per cell.

Resumable: finished cells (by `results.cell_key`) are skipped, and pretraining resumes from its
checkpoint under `output_dir/pretrain/`.

The control: after the method's cells, a run also computes the cells of the same grid for its
control method (`RunConfig.control`, e.g. `random_init`: the same backbone without pretraining)
into the same output dir, so every cell can be compared with it on the same test examples (see
`control_config` for what the control shares with the method and how it is named).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import socket
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from baselines import api, checkpoint, determinism, distribute, registry
from baselines.backbones import build_encoder, encoder_feature_dim
from baselines.precision import FLOAT32, Precision, clone_in
from baselines.heads import with_head_layers
from benchmark.harness import data, distill, finetune, linear_probe, protocol, results, scoring
from benchmark.harness.backbone_names import backbone_tag
from benchmark.harness.presets import Preset
from medssl_common.provenance import code_digest, code_version, machine
from benchmark.harness.tasks import Task


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; the CLI builds it from flags."""

    method: str  # registered name, import path or saved:<path> (see baselines.registry.get_method)
    task: Task
    preset: Preset
    data: data.DataConfig
    output_dir: str
    strategy: str = "default"
    tpu_address: str | None = None
    init_checkpoint: str | None = None
    progress: bool = True
    name: str | None = None  # the method's name in results; default `method`
    deterministic: bool = True  # op determinism on (see baselines.determinism); False = fastest
    control: str | None = None  # control method also run on the grid (see control_config); None = none
    # Training precision of pretraining and fine-tuning (see baselines.precision).
    precision: Precision = FLOAT32
    # Encoder the `distill:<backbone>` students start from (None: random, from the pretraining seed)
    student_init: str | None = None

    @property
    def method_name(self) -> str:
        return self.name or self.method


def _scaled(own: api.FinetunePolicy, settings) -> api.FinetunePolicy:
    """A method's own schedule shortened by the preset's `steps_scale`, its batch at most the preset's."""
    scale = settings.steps_scale
    return dataclasses.replace(
        own, steps=max(1, math.ceil(own.steps * scale)), batch_size=min(own.batch_size, settings.batch_size),
        warmup_steps=max(0, math.ceil(own.warmup_steps * scale)),
        decay_boundaries=tuple(math.ceil(b * scale) for b in own.decay_boundaries))


def finetune_grid(method: api.Method, preset: Preset, num_examples: int
                  ) -> tuple[str, tuple[api.FinetunePolicy, ...]]:
    """("method", the method's own schedule or grid shortened by the preset) when the method has a
    policy (`Method.finetune_policy`), else ("preset", the preset's grid: every learning rate of
    `learning_rates` for every multiple in `length_scales` of the epochs rule's steps, see
    `presets.FinetuneSettings`); schedules in grid order, duplicates dropped."""
    settings = preset.finetune
    own = method.finetune_policy(num_examples)
    if own is not None:
        own = (own,) if isinstance(own, api.FinetunePolicy) else tuple(own)
        return "method", tuple(dict.fromkeys(_scaled(p, settings) for p in own))
    steps = finetune.epochs_length(settings.steps, settings.epochs, settings.min_steps,
                                   num_examples, settings.batch_size)
    grid = [finetune.step_schedule(max(1, math.ceil(steps * scale)), learning_rate,
                                   settings.batch_size, settings.warmup_fraction)
            for scale in settings.length_scales for learning_rate in settings.learning_rates]
    return "preset", tuple(dict.fromkeys(grid))


def _copy_encoder(encoder: keras.Model, strategy, used_precision: str = "float32") -> keras.Model:
    """A copy of `encoder` (same weights) computing in `used_precision`."""
    with strategy.scope():
        clone = clone_in(encoder, used_precision)
        clone.set_weights(encoder.get_weights())
    return clone


def _pretrain_config(cfg: RunConfig) -> api.PretrainConfig:
    """The preset's pretraining settings with the task's views, in the run's precision."""
    return dataclasses.replace(cfg.preset.pretrain, precision=cfg.precision.used,
                               augmentation=cfg.task.augmentation)


def _config_record(cfg: RunConfig, method: api.Method) -> dict:
    preset = cfg.preset
    return {
        "task": cfg.task.name, "method": cfg.method_name, "method_spec": cfg.method,
        "preset": preset.name,
        "task_options": dataclasses.asdict(cfg.task.options),
        "resolution": preset.resolution, "image_size": preset.image_size,
        "backbone": api.backbone_record(method.backbone(preset.backbone)),
        "requested_backbone": api.backbone_record(preset.backbone),
        "pretrain": dataclasses.asdict(_pretrain_config(cfg)),
        "finetune": dataclasses.asdict(preset.finetune),
        "distill": dataclasses.asdict(preset.distill),
        "strategy": cfg.strategy, "init_checkpoint": cfg.init_checkpoint,
        "init": checkpoint.describe_init(cfg.init_checkpoint),
        "synthetic": data.is_synthetic(cfg.task, cfg.data), "manual_dir": cfg.data.manual_dir,
        "data": {"resolution": cfg.data.resolution, "synthetic_sizes": dict(cfg.data.synthetic_sizes),
                 "synthetic_image_size": cfg.data.synthetic_image_size,
                 "synthetic_seed": cfg.data.synthetic_seed},
        "bootstrap_samples": preset.bootstrap_samples,
        "precision": cfg.precision.record(),
        # only when --test_sets left some out (absent: all of the task's, as before the flag)
        **({"test_sets": list(cfg.task.test_sets)} if cfg.task.left_out else {}),
        **({"folder_task": cfg.task.folder.record()} if cfg.task.folder else {}),
        # only with --student_init (absent: students of another backbone start from random weights)
        **({"student_init_checkpoint": cfg.student_init,
            "student_init": checkpoint.describe_init(cfg.student_init)} if cfg.student_init else {}),
    }


LOCK_FILE = ".run.lock"


@contextlib.contextmanager
def hold_output_dir(output_dir: str):
    """Holds an exclusive lock on `output_dir` (`<output_dir>/.run.lock`, which records the
    holder's pid, host, start time and command line) for the block; raises ValueError naming the
    holder if another run has it, or naming the lock file if it is a link (`results.refuse_link`)."""
    path = os.path.join(output_dir, LOCK_FILE)
    results.refuse_link(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "r+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(f.read())
                who = (f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: "
                       f"{holder['command']}")
            except (ValueError, KeyError, TypeError):
                who = "holder not recorded yet"
            raise ValueError(f"output dir {output_dir} is in use by another run ({who}); wait for "
                             "it to finish or use another --output_dir") from None
        f.truncate(0)
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "command": " ".join(sys.argv)}, f)
        f.flush()
        yield


def _differences(stored, current, prefix: str = "") -> list[str]:
    """Dotted keys at which two JSON values differ, in key order."""
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for key in sorted(stored.keys() | current.keys()):
            name = f"{prefix}{key}"
            if key not in stored or key not in current:
                out.append(name)
            else:
                out += _differences(stored[key], current[key], name + ".")
        return out
    return [] if stored == current else [prefix.rstrip(".") or "config"]


def _check_stored_config(store: results.ResultsStore, line: int, row: dict, config: dict) -> None:
    """Raises ValueError if a stored cell was computed with another configuration than `config`
    (a `_config_record`): it is not this run's result."""
    current = json.loads(json.dumps(config))
    stored = row.get("config")
    diffs = _differences(stored if isinstance(stored, dict) else {}, current)
    if diffs:
        def value(record, key):
            for part in key.split("."):
                record = record.get(part, "<missing>") if isinstance(record, dict) else "<missing>"
            return record

        shown = "; ".join(f"{k}: stored {value(stored, k)!r} != this run {value(current, k)!r}"
                          for k in diffs[:3])
        raise ValueError(f"{store.path}:{line}: cell {results.cell_key(row)} is stored from another "
                         f"configuration ({shown}); rerun with its settings, or use another --name "
                         "or --output_dir")


def _check_grid(preset: Preset) -> None:
    for field in ("eval_modes", "label_fractions", "seeds"):
        values = getattr(preset, field)
        if len(set(values)) != len(values):
            raise ValueError(f"{field}={values}: duplicate values")
    for mode in preset.eval_modes:
        if results.is_distill_mode(mode):
            distill.student_backbone(mode)  # names a backbone the suite builds
        elif mode not in results.EVAL_MODES:
            raise ValueError(f"eval mode {mode!r}: expected one of {results.EVAL_MODES} or "
                             f"{distill.MODE}:<backbone>")


def run(cfg: RunConfig, strategy: tf.distribute.Strategy | None = None) -> list[dict]:
    """Runs every unfinished cell of the grid and returns all rows of this task and method.
    `strategy` (default: built from `cfg.strategy`) must be created before other TensorFlow work
    for the multi-worker and TPU strategies, so entry points create it first. Holds the lock of
    `cfg.output_dir` throughout (`hold_output_dir`); a stored cell counts as done only if it was
    computed with this configuration (else ValueError)."""
    method = registry.get_method(cfg.method)
    _check_grid(cfg.preset)
    check_student_init(cfg.student_init, cfg.preset.eval_modes)
    control_config(cfg)  # a bad control or a --name that is the control's: before any work
    os.makedirs(cfg.output_dir, exist_ok=True)
    with hold_output_dir(cfg.output_dir):
        rows = _run_locked(cfg, method, strategy)
        _run_control(cfg, strategy)
        return rows


CONTROLS = ("random_init",)  # methods `RunConfig.control` may name


def control_config(cfg: RunConfig) -> RunConfig | None:
    """The run of `cfg`'s control cells, or None when there is no control (`cfg.control` None) or
    the method is the control itself.

    The control runs the same grid (task, preset, eval modes, label fractions, seeds, data,
    strategy, determinism) on the backbone the method trains (`Method.backbone`), from no
    checkpoint. It does not pretrain, so settings that only shape pretraining do not make it
    another control: it records the preset's own pretraining steps (a `--pretrain_steps` of the
    method is not applied to it), and it fine-tunes from the encoder features (a
    `--ft_proj_selector` needs a projection head, which it has none of). Its name in results is
    the control's (e.g. `random_init`) when that backbone is the preset's default, else
    `<control>-<backbone_tag>` (e.g. `random_init-bit-50x0.25`), followed by `-pseed<N>` when the
    pretraining seed (which draws the control's weights) is not the preset's: cell keys hold
    neither the backbone nor the pretraining seed, so such controls never share cells."""
    if cfg.control is None or cfg.method == cfg.control:
        return None
    if cfg.control not in CONTROLS:
        raise ValueError(f"--control={cfg.control}: expected one of {CONTROLS} or none")
    from benchmark.harness.presets import PRESETS

    preset = cfg.preset
    backbone = registry.get_method(cfg.method).backbone(preset.backbone)
    default = PRESETS.get(preset.name)
    registered_steps = default.pretrain.steps if default else preset.pretrain.steps
    name = (cfg.control if default is not None and backbone == default.backbone
            else f"{cfg.control}-{backbone_tag(backbone)}")
    if default is not None and preset.pretrain.seed != default.pretrain.seed:
        name += f"-pseed{preset.pretrain.seed}"
    if cfg.method_name == name:
        raise ValueError(f"--name={name}: the control's rows are named {name}; choose another "
                         "--name, or run without the control (--control=none)")
    preset = dataclasses.replace(
        preset, backbone=backbone,
        pretrain=dataclasses.replace(preset.pretrain, steps=registered_steps),
        finetune=dataclasses.replace(preset.finetune, ft_proj_selector=0))
    return dataclasses.replace(cfg, method=cfg.control, name=name, preset=preset,
                               init_checkpoint=None, control=None)


def _run_control(cfg: RunConfig, strategy) -> None:
    """Runs the unfinished cells of `cfg`'s control (`control_config`) under the held lock."""
    control = control_config(cfg)
    if control is not None:
        _run_locked(control, registry.get_method(control.method), strategy)


def control_rows(cfg: RunConfig) -> list[dict]:
    """The stored rows of `cfg`'s control on its grid's task and preset (empty without one)."""
    control = control_config(cfg)
    if control is None:
        return []
    store = results.ResultsStore(os.path.join(cfg.output_dir, "results.jsonl"))
    return [r for r in store.rows() if (r["task"], r["method"], r["preset"])
            == (control.task.name, control.method_name, control.preset.name)]


def _run_locked(cfg: RunConfig, method: api.Method, strategy) -> list[dict]:
    task, preset = cfg.task, cfg.preset
    store = results.ResultsStore(os.path.join(cfg.output_dir, "results.jsonl"))
    cells = [(mode, fraction, seed) for mode in preset.eval_modes
             for fraction in preset.label_fractions for seed in preset.seeds]
    key_of = {c: results.cell_key(_cell(cfg, *c)) for c in cells}
    config = _config_record(cfg, method)
    todo = []
    for c in cells:
        found = store.find(key_of[c])
        if found is None:
            todo.append(c)
        else:
            _check_stored_config(store, *found, config)
    if todo:
        _check_mode(cfg, store)
        determinism.set_deterministic(cfg.deterministic)
        strategy = strategy or distribute.get_strategy(cfg.strategy, tpu_address=cfg.tpu_address)
        builders = data.prepare(task, cfg.data)
        splits = data.split_task(builders, task,
                                 validation_fraction=task.options.validation_fraction,
                                 test_fraction=task.options.test_fraction)
        _check_validation(task, splits)
        keras.utils.set_random_seed(preset.pretrain.seed)  # for methods that do not seed themselves
        stage = f"{task.name}_{cfg.method_name}"
        stage_dir = os.path.join(cfg.output_dir, "pretrain", stage)
        encoder = method.pretrain(
            data.pretrain_groups(builders, task, set(splits.train.group_ids)),
            backbone=method.backbone(preset.backbone),
            config=_pretrain_config(cfg),
            strategy=strategy,
            checkpoint_dir=stage_dir,
            init_checkpoint=cfg.init_checkpoint,
            **api.accepted_pretrain_args(
                method, summary_dir=os.path.join(cfg.output_dir, TENSORBOARD_DIR, stage, "pretrain")))
        summary = pretrain_summary(stage_dir, getattr(method, "name", cfg.method))
        if preset.finetune.ft_proj_selector:
            encoder = _from_head_layer(encoder, stage_dir, method.backbone(preset.backbone),
                                       preset.finetune.ft_proj_selector, strategy)
        _finetune_cells(cfg, method, encoder, strategy, builders, splits, todo, store,
                        pretrain_summary=summary)
    return [r for r in store.rows() if r["task"] == task.name and r["method"] == cfg.method_name
            and r["preset"] == preset.name]


TENSORBOARD_DIR = "tensorboard"  # <output_dir>/tensorboard/{<task>_<method>/pretrain, finetune/<cell>}


def pretrain_summary(stage_dir: str, method_name: str) -> dict:
    """A row's `pretrain_summary` from its pretraining stage directory: {"method": the stage's
    method, "steps": steps trained (None if the method keeps no stage meta.json), "curve": the
    stage's curve.json without its step count (log_every, batch_size, first and last logged points,
    chance levels), or None for stages that log no curve (no contrastive pretraining)}."""
    if not checkpoint.has_meta(stage_dir):
        return {"method": method_name, "steps": None, "curve": None}
    meta = checkpoint.read_meta(stage_dir)
    curve = checkpoint.read_curve(stage_dir)
    return {"method": meta.method, "steps": meta.steps_done,
            "curve": None if curve is None else {k: v for k, v in curve.items() if k != "steps"}}


def _from_head_layer(encoder, stage_dir: str, backbone: api.BackboneConfig, selector: int, strategy):
    """The encoder extended by the first `selector` layers of its stage's projection head."""
    with strategy.scope():
        head = checkpoint.load_head(stage_dir, encoder_feature_dim(backbone))
        if head is None:
            raise ValueError(f"--ft_proj_selector={selector}: the pretraining stage {stage_dir} has no "
                             "projection head (methods with one: simclr, micle, and none from a SimCLR "
                             "checkpoint with a head)")
        return with_head_layers(encoder, head, selector)


def train_subset(task: Task, splits: data.TaskSplits, fraction: float, seed: int
                 ) -> tuple[data.Meta, set[str]]:
    """The labelled training examples of a cell (`fraction` in percent) and their groups."""
    strata = data.group_strata(splits.train, task.kind)
    groups = protocol.label_fraction_groups(splits.train.group_ids, strata, fraction / 100.0,
                                            seed, salt=task.name)
    return splits.train.subset(np.isin(splits.train.group_ids, sorted(groups))), groups


def _check_mode(cfg: RunConfig, store: results.ResultsStore) -> None:
    """Refuses to add cells to a grid whose finished rows ran in the other mode."""
    for row in store.rows():
        if (row["task"], row["method"], row["preset"]) != (cfg.task.name, cfg.method_name, cfg.preset.name):
            continue
        if row.get("deterministic", False) != cfg.deterministic:
            flag = "--nondeterministic" if cfg.deterministic else "no --nondeterministic"
            raise ValueError(
                f"{store.path}: the finished cells of {cfg.task.name}/{cfg.method_name}/{cfg.preset.name} "
                f"ran with deterministic={row.get('deterministic', False)}; rerun with {flag}, or use "
                "another --output_dir")


def _test_sets(builders, task: Task, splits: data.TaskSplits) -> dict[str, tf.data.Dataset]:
    """Each test set's labelled examples (decoded once, at their first use)."""
    return {name: data.labelled_dataset(builders, data.test_sources(task, name),
                                        splits.tests[name].example_ids).cache()
            for name in task.test_sets}


def _finetune_cells(cfg, method, encoder, strategy, builders, splits, todo, store, *, pretrain_summary):
    task, preset = cfg.task, cfg.preset
    test_data = _test_sets(builders, task, splits)
    train_split = data.load_split(builders, task.train, splits.train.example_ids)
    validation_split = data.load_split(builders, data.validation_source(task),
                                       splits.validation.example_ids)
    common = {"config": _config_record(cfg, method), "code_version": code_version(),
              "code_digest": code_digest(), "machine": machine(),
              "packages": results.package_versions(),
              "synthetic": data.is_synthetic(task, cfg.data),
              "data_build": data.build_fingerprints(builders), "pretrain_summary": pretrain_summary}
    features = None  # the frozen encoder's features, computed at the first linear cell
    trainer = None  # the fine-tuning classifier (and distillation's teacher), built at first use
    students: dict[str, finetune.Trainer] = {}  # distill mode -> its student, built at first use
    validation = finetune.validation_set(validation_split.dataset(), len(splits.validation.example_ids),
                                         image_size=preset.image_size, metric=task.primary_metric,
                                         class_names=task.class_names)
    keep_teachers = any(results.is_distill_mode(m) for m in preset.eval_modes)
    for mode, fraction, seed in todo:
        start = time.time()
        chosen, groups = train_subset(task, splits, fraction, seed)
        tag = _cell_tag(cfg, mode, fraction, seed)
        extra = {}
        if mode == "linear":
            # The encoder in the run's precision, as fine-tuning copies it: the one pretraining
            # left in memory and the one reloaded from its finished stage then compute alike.
            features = features or _probe_features(
                _copy_encoder(encoder, strategy, cfg.precision.used), train_split,
                validation_split, test_data, preset.image_size)
            probe = _fit_cell_probe(features, chosen, task, preset)
            extra["linear_probe"] = probe.record
        else:
            trainer = trainer or finetune.Trainer(
                _copy_encoder(encoder, strategy, cfg.precision.used), kind=task.kind,
                num_classes=len(task.class_names), image_size=preset.image_size,
                weight_decay=preset.finetune.weight_decay, strategy=strategy)
            labelled = train_split.dataset(chosen.example_ids)

            def search(chosen=chosen, labelled=labelled, fraction=fraction, seed=seed):
                """The fine-tuning search of the cell; its curves go to the finetune cell's folder
                also when a distill cell fine-tunes its teacher."""
                source, grid = finetune_grid(method, preset, len(chosen.example_ids))
                tag = _cell_tag(cfg, "finetune", fraction, seed)
                return trainer.search(
                    lambda policy: finetune.train_input(labelled, image_size=preset.image_size,
                                                        policy=policy, seed=seed),
                    validation, grid, source=source, eval_points=preset.finetune.eval_points,
                    seed=seed, progress=cfg.progress,
                    summary_dir=os.path.join(cfg.output_dir, TENSORBOARD_DIR, "finetune", tag))

            if mode == "finetune":
                extra["finetune_selection"] = search()
                if keep_teachers:
                    distill.save_teacher(_teacher_path(cfg, fraction, seed),
                                         trainer.model.get_weights(), extra["finetune_selection"])
                model = trainer.model
            else:
                teacher = _teacher(cfg, method, trainer, store, search, fraction, seed)
                if mode not in students:
                    students[mode] = _student_trainer(cfg, mode, encoder, strategy)
                model = students[mode].model
                extra["distillation"] = _distill_cell(
                    cfg, mode, students[mode], trainer.model, teacher, train_split, chosen,
                    validation, seed, tag)
        scored, files = {}, {}
        for name, ds in test_data.items():
            if mode == "linear":
                preds = _probe_predictions(probe, features[name])
            else:
                preds = finetune.predict(model, ds, kind=task.kind, image_size=preset.image_size)
            rel = os.path.join("predictions", f"{tag}_{name}.csv")
            final = os.path.join(cfg.output_dir, rel)
            # Written under a temporary name; store.append renames it with the row.
            pending = os.path.join(os.path.dirname(final),
                                   f".{os.path.basename(final)}.{os.getpid()}.pending")
            results.write_predictions(pending, preds["example_id"], preds["group_id"],
                                      preds["label"], preds["score"], task.class_names)
            files[pending] = final
            collapsed = scoring.collapse(task.kind, task.class_names, preds["label"], preds["score"])
            if collapsed is not None:
                print(f"warning: {tag}: collapsed predictions on {name}: "
                      f"{scoring.describe_collapse(collapsed)}", file=sys.stderr, flush=True)
            scored[name] = {
                "primary": task.primary_metric,
                **scoring.score_task(task, name, preds["example_id"], preds["label"],
                                     preds["score"], preds["group_id"],
                                     bootstrap_samples=preset.bootstrap_samples, seed=seed),
                "n_examples": int(len(preds["example_id"])),
                "n_groups": int(len(set(preds["group_id"]))),
                "fingerprint": results.examples_fingerprint(preds["example_id"], preds["label"]),
                "predictions": rel,
                "collapsed": collapsed,
            }
        store.append({
            "schema": results.SCHEMA_VERSION, **_cell(cfg, mode, fraction, seed), "metrics": scored,
            "n_train_examples": int(len(chosen.example_ids)),
            "n_train_groups": int(len(groups)),
            "data_fingerprint": results.examples_fingerprint(chosen.example_ids, chosen.labels),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_seconds": round(time.time() - start, 2), "deterministic": cfg.deterministic, **common,
            **extra,
        }, files=files)


def _cell(cfg: RunConfig, mode: str, fraction: float, seed: int) -> dict:
    """The cell key fields (`results.CELL_KEY_FIELDS`) of `cfg`'s cell (mode, fraction in %, seed)."""
    return {"task": cfg.task.name, "method": cfg.method_name, "preset": cfg.preset.name,
            "eval_mode": mode, "label_fraction": fraction / 100.0, "seed": int(seed)}


def _cell_tag(cfg: RunConfig, mode: str, fraction: float, seed: int) -> str:
    """A cell's file and folder name, e.g. cxr_micle_cpu_finetune_f10_s0 (`distill:<backbone>`
    is written distill-<backbone>)."""
    return (f"{cfg.task.name}_{cfg.method_name}_{cfg.preset.name}_{mode.replace(':', '-')}"
            f"_f{fraction:g}_s{seed}")


TEACHERS_DIR = "teachers"  # <output_dir>/teachers/<finetune cell tag>.npz: distillation's teachers


def _teacher_path(cfg: RunConfig, fraction: float, seed: int) -> str:
    return os.path.join(cfg.output_dir, TEACHERS_DIR, _cell_tag(cfg, "finetune", fraction, seed) + ".npz")


def _teacher(cfg: RunConfig, method, trainer: finetune.Trainer, store: results.ResultsStore,
             search, fraction: float, seed: int) -> dict:
    """Leaves `trainer` holding the fine-tuned teacher of the cell (`fraction`, `seed`) — saved by
    its finetune cell, else fine-tuned now by `search` and saved — and returns the row's
    `distillation.teacher` record. A deterministic run refuses a teacher whose selection differs
    from the stored finetune row of that cell."""
    path = _teacher_path(cfg, fraction, seed)
    saved = distill.load_teacher(path)
    if saved is None:
        selection = search()
        weights = trainer.model.get_weights()
        distill.save_teacher(path, weights, selection)
    else:
        weights, selection = saved
        try:
            trainer.model.set_weights(weights)
        except ValueError as e:
            raise ValueError(f"{path}: does not fit this run's model ({e}); delete it and rerun") from None
    cell = _cell(cfg, "finetune", fraction, seed)
    found = store.find(results.cell_key(cell))
    if found is not None and cfg.deterministic:
        line, row = found
        if json.loads(json.dumps(row.get("finetune_selection"))) != json.loads(json.dumps(selection)):
            raise ValueError(f"{path}: this teacher's fine-tuning selection differs from the finetune "
                             f"row at {store.path}:{line}; delete the teacher file and rerun")
    return {"cell": cell, "backbone": api.backbone_record(method.backbone(cfg.preset.backbone)),
            "weights_sha256": distill.weights_digest(weights),
            "validation": selection["chosen"]["validation"]}


def check_student_init(student_init: str | None, eval_modes) -> None:
    """Refuses a student encoder (`--student_init`) without a student of another backbone to start."""
    if student_init and not any(m.startswith(f"{distill.MODE}:") for m in eval_modes):
        raise ValueError(f"--student_init={student_init}: only students of another backbone "
                         f"(eval modes {distill.MODE}:<backbone>) start from an encoder of their own; "
                         f"the eval modes are {','.join(eval_modes)}")


def _student_backbone(cfg: RunConfig, mode: str) -> api.BackboneConfig | None:
    """The backbone a distill mode names, sized for the preset; None for self-distillation."""
    backbone = distill.student_backbone(mode)
    if backbone is not None and backbone.family == "botnet":
        backbone = dataclasses.replace(backbone, image_size=cfg.preset.image_size)
    return backbone


def _student_trainer(cfg: RunConfig, mode: str, encoder: keras.Model, strategy) -> finetune.Trainer:
    """The student of a distill mode: the pretrained encoder (self-distillation) or the mode's
    backbone, randomly initialised from the pretraining seed or loaded from `cfg.student_init`, in
    the run's precision, with a zero-initialised head and the distillation loss."""
    preset = cfg.preset
    backbone = _student_backbone(cfg, mode)
    if backbone is None:
        start = encoder
    else:
        keras.utils.set_random_seed(preset.pretrain.seed)
        with strategy.scope():
            start = build_encoder(backbone)
            if cfg.student_init:
                try:
                    checkpoint.init_encoder(cfg.student_init, start, backbone=backbone)
                except ValueError as e:
                    raise ValueError(f"--student_init={cfg.student_init} for eval mode {mode}: {e}") from None
    return finetune.Trainer(
        _copy_encoder(start, strategy, cfg.precision.used), kind=cfg.task.kind,
        num_classes=len(cfg.task.class_names), image_size=preset.image_size,
        weight_decay=preset.finetune.weight_decay, strategy=strategy,
        loss_fn=distill.DistillationLoss)


def _student_init_text(cfg: RunConfig, backbone: api.BackboneConfig | None) -> str:
    """What a student started from, as its row's `distillation.student.init` says."""
    if backbone is None:
        return "teacher's pretrained encoder"
    if cfg.student_init:
        init = checkpoint.describe_init(cfg.student_init)
        return f"{init['kind']} {init['name']} ({str(init['fingerprint'])[:8]}): {cfg.student_init}"
    return f"random (pretraining seed {cfg.preset.pretrain.seed})"


def _distill_cell(cfg: RunConfig, mode: str, student: finetune.Trainer, teacher_model,
                  teacher: dict, train_split: data.LoadedSplit, chosen: data.Meta,
                  validation: finetune.Validation, seed: int, tag: str) -> dict:
    """Trains the student of a distill cell on the teacher's logits over every training image
    (and the labels of `chosen`, the labelled ones), choosing its schedule on `validation`;
    returns the row's `distillation` record."""
    preset = cfg.preset
    ids, logits = distill.teacher_logits(teacher_model, train_split.dataset(),
                                         image_size=preset.image_size)
    examples = distill.student_examples(train_split.dataset(), ids, logits, chosen.example_ids,
                                        chosen.labels)
    grid = distill.distill_grid(preset.distill, len(ids))
    selection = student.search(
        lambda policy: finetune.train_input(examples, image_size=preset.image_size, policy=policy,
                                            seed=seed),
        validation, grid, source="preset", eval_points=preset.distill.eval_points, seed=seed,
        progress=cfg.progress,
        summary_dir=os.path.join(cfg.output_dir, TENSORBOARD_DIR, "finetune", tag))
    backbone = _student_backbone(cfg, mode)
    return {"teacher": teacher,
            "student": {"backbone": teacher["backbone"] if backbone is None
                        else api.backbone_record(backbone),
                        "init": _student_init_text(cfg, backbone)},
            "n_images": int(len(ids)), "n_labelled_images": int(len(chosen.example_ids)),
            "n_unlabelled_images": int(len(ids) - len(chosen.example_ids)),
            "selection": selection}


_PROBE_TRAIN, _PROBE_VALIDATION = "<train>", "<validation>"  # beside the test set names


def _check_validation(task: Task, splits: data.TaskSplits) -> None:
    """Raises ValueError if the validation split is empty: fine-tuning chooses its schedule and
    the linear probe its C there."""
    if not len(splits.validation.example_ids):
        raise ValueError(f"task {task.name}: its validation split holds no patients "
                         f"(validation_fraction={task.options.validation_fraction}), and fine-tuning "
                         "chooses its schedule and the linear probe its C there; use more data")


def _probe_features(encoder, train: data.LoadedSplit, validation: data.LoadedSplit,
                    test_data: dict, image_size: int) -> dict[str, linear_probe.Features]:
    """The encoder's features of the training split, the validation split and each test set."""
    sets = {_PROBE_TRAIN: train.dataset(), _PROBE_VALIDATION: validation.dataset(), **test_data}
    return {name: linear_probe.extract_features(encoder, ds, image_size=image_size)
            for name, ds in sets.items()}


def _fit_cell_probe(features: dict, chosen: data.Meta, task: Task,
                    preset: Preset) -> linear_probe.Probe:
    """The probe of a cell: fitted on its training examples, C chosen on the validation split."""
    train = features[_PROBE_TRAIN].subset(chosen.example_ids)
    validation = features[_PROBE_VALIDATION]
    return linear_probe.fit_probe(train.x, train.label, validation.x, validation.label,
                                  kind=task.kind, class_names=task.class_names,
                                  metric=task.primary_metric, grid=preset.finetune.probe_grid)


def _probe_predictions(probe: linear_probe.Probe, test: linear_probe.Features) -> dict:
    return {"example_id": test.example_id, "group_id": test.group_id, "label": test.label,
            "score": probe.scores(test.x)}
