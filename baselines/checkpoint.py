"""Stage checkpoints: what one pretraining stage leaves for the next stage and for the harness.

A stage checkpoint is a directory:

  meta.json            {"format_version": 1, "method": "simclr", "method_options": {...},
                        "backbone": {BackboneConfig fields}, "pretrain": {PretrainConfig fields} | null,
                        "steps_done": 1200, "finished": true, "code_version": "<git sha>[-dirty]",
                        "init_checkpoint": "<path the stage started from>" | null,
                        "head_shapes": [[512, 512], ...] | null}
  encoder.weights.h5   the encoder's Keras weights (written when the stage finishes)
  head.weights.h5      the projection head's weights, if the method has one (idem)
  curve.json           the training curve's summary, written by the chief with every state save:
                       {"format_version": 1, "steps": <steps done at that save>, "log_every": 10,
                        "batch_size": <global batch>, "first"/"last": {"step", <LOG_KEYS>,
                        "learning_rate"} (the first and last logged points), "chance": {<LOG_KEYS>
                        of an encoder that cannot tell views apart}} (contrastive stages only;
                       the whole curve is in the TensorBoard event files, see baselines/README.md)
  state/               resumable training state: `tf.train.Checkpoint` files (model incl. head,
                       optimizer incl. its step counter) written by a `tf.train.CheckpointManager`
                       every `PretrainConfig.checkpoint_every` steps, the last two kept

`meta.json` is written last and atomically, so `finished: true` means the weight files are complete.
The encoder is rebuilt from the `backbone` entry with `baselines.backbones.build_encoder`, so a stage
directory is self-describing: `load_encoder(dir)` needs nothing else.

A chain (e.g. SimCLR on ImageNet, then MICLe on medical images) passes the first stage's directory
as the second stage's `init_checkpoint`; `init_encoder` copies its encoder (and its head when the
shapes match) before step 0. `init_encoder` and `load_encoder` also accept a BiT `.npz` file
(`baselines.bit.load_bit_npz`), a whole `.keras` encoder file and the published SimCLR ImageNet
checkpoints, TF2 SavedModels and TF1 `model.ckpt-*` prefixes (`baselines.simclr_import`).
`describe_init` records which of these a run started from and a fingerprint of its weight files.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from baselines import bit, simclr_import
from baselines.api import BackboneConfig, PretrainConfig
from baselines.backbones import build_encoder
from medssl_common.provenance import code_version

FORMAT_VERSION = 1
META_FILE = "meta.json"
CURVE_FILE = "curve.json"
CURVE_FORMAT_VERSION = 1
ENCODER_FILE = "encoder.weights.h5"
HEAD_FILE = "head.weights.h5"
STATE_DIR = "state"
# Settings that change only how often state is saved, not what is trained.
_BOOKKEEPING_FIELDS = ("checkpoint_every",)


@dataclasses.dataclass(frozen=True)
class StageMeta:
    """The content of a stage's `meta.json`."""

    method: str
    backbone: BackboneConfig
    pretrain: PretrainConfig | None
    steps_done: int
    finished: bool
    code_version: str
    method_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    init_checkpoint: str | None = None
    head_shapes: tuple[tuple[int, ...], ...] | None = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["head_shapes"] = None if self.head_shapes is None else [list(s) for s in self.head_shapes]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str) -> "StageMeta":
        try:
            if data["format_version"] != FORMAT_VERSION:
                raise ValueError(f"format_version {data['format_version']!r}, expected {FORMAT_VERSION}")
            pretrain = data["pretrain"]
            head_shapes = data.get("head_shapes")
            return cls(
                method=str(data["method"]),
                backbone=BackboneConfig(**data["backbone"]),
                pretrain=None if pretrain is None else PretrainConfig(**pretrain),
                steps_done=int(data["steps_done"]),
                finished=bool(data["finished"]),
                code_version=str(data["code_version"]),
                method_options=dict(data.get("method_options") or {}),
                init_checkpoint=data.get("init_checkpoint"),
                head_shapes=None if head_shapes is None else tuple(tuple(s) for s in head_shapes),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"stage checkpoint {path}: malformed {META_FILE} ({e!r})") from e


def has_meta(checkpoint_dir: str) -> bool:
    """True if `checkpoint_dir` holds a stage `meta.json`."""
    return tf.io.gfile.exists(os.path.join(checkpoint_dir, META_FILE))


def read_meta(checkpoint_dir: str) -> StageMeta:
    """Reads `checkpoint_dir/meta.json`."""
    path = os.path.join(checkpoint_dir, META_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"stage checkpoint {checkpoint_dir}: no {META_FILE} (not a stage checkpoint "
                                "directory, or the stage never started)")
    with tf.io.gfile.GFile(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"stage checkpoint {checkpoint_dir}: {META_FILE} is not valid JSON ({e})") from e
    return StageMeta.from_json(data, checkpoint_dir)


def write_meta(checkpoint_dir: str, meta: StageMeta) -> None:
    """Writes `checkpoint_dir/meta.json` atomically (temporary file, then rename)."""
    tf.io.gfile.makedirs(checkpoint_dir)
    path = os.path.join(checkpoint_dir, META_FILE)
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(meta.to_json(), f, indent=2, sort_keys=True)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_curve(checkpoint_dir: str, curve: dict[str, Any]) -> None:
    """Writes `checkpoint_dir/curve.json` (`curve` without its format version) atomically."""
    tf.io.gfile.makedirs(checkpoint_dir)
    path = os.path.join(checkpoint_dir, CURVE_FILE)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump({"format_version": CURVE_FORMAT_VERSION, **curve}, f, indent=2, sort_keys=True)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def read_curve(checkpoint_dir: str) -> dict[str, Any] | None:
    """The curve summary in `checkpoint_dir/curve.json` without its format version; None if the
    stage has none (not a contrastive stage, or one written before curves were kept). Raises
    ValueError naming the file if it is unreadable or of another format."""
    path = os.path.join(checkpoint_dir, CURVE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        try:
            curve = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"stage checkpoint {checkpoint_dir}: {CURVE_FILE} is not valid JSON ({e}); "
                             f"delete it (only the pretraining summary of the rows is lost)") from None
    if not isinstance(curve, dict) or curve.get("format_version") != CURVE_FORMAT_VERSION:
        raise ValueError(f"stage checkpoint {checkpoint_dir}: {CURVE_FILE} is not a format "
                         f"{CURVE_FORMAT_VERSION} curve summary; delete it (only the pretraining "
                         "summary of the rows is lost)")
    return {k: v for k, v in curve.items() if k != "format_version"}


def variable_shapes(model: keras.Model) -> tuple[tuple[int, ...], ...]:
    """Shapes of all of `model`'s weights, in order."""
    return tuple(tuple(int(d) for d in w.shape) for w in model.weights)


def save_stage(
    checkpoint_dir: str,
    *,
    encoder: keras.Model,
    method: str,
    backbone: BackboneConfig,
    config: PretrainConfig | None,
    steps_done: int,
    head: keras.Model | None = None,
    method_options: dict[str, Any] | None = None,
    init_checkpoint: str | None = None,
) -> StageMeta:
    """Writes a finished stage: `encoder.weights.h5`, `head.weights.h5` (if `head`), then `meta.json`."""
    tf.io.gfile.makedirs(checkpoint_dir)
    encoder.save_weights(os.path.join(checkpoint_dir, ENCODER_FILE))
    if head is not None:
        head.save_weights(os.path.join(checkpoint_dir, HEAD_FILE))
    meta = StageMeta(method=method, backbone=backbone, pretrain=config, steps_done=int(steps_done),
                     finished=True, code_version=code_version(), method_options=dict(method_options or {}),
                     init_checkpoint=init_checkpoint,
                     head_shapes=None if head is None else variable_shapes(head))
    write_meta(checkpoint_dir, meta)
    return meta


def check_resumable(
    checkpoint_dir: str,
    meta: StageMeta,
    *,
    method: str,
    backbone: BackboneConfig,
    config: PretrainConfig | None,
    method_options: dict[str, Any] | None = None,
    init_checkpoint: str | None = None,
) -> None:
    """Raises ValueError if the stage in `checkpoint_dir` was started with other settings than these
    (a rerun must use the same method, options, backbone, pretraining settings and starting point;
    only `checkpoint_every` may differ)."""
    def strip(c: PretrainConfig | None):
        return None if c is None else dataclasses.replace(c, **{f: 0 for f in _BOOKKEEPING_FIELDS})

    wanted = {"method": method, "method_options": dict(method_options or {}), "backbone": backbone,
              "pretrain": strip(config), "init_checkpoint": init_checkpoint}
    stored = {"method": meta.method, "method_options": meta.method_options, "backbone": meta.backbone,
              "pretrain": strip(meta.pretrain), "init_checkpoint": meta.init_checkpoint}
    diffs = [f"{k}: stored {stored[k]!r} != requested {wanted[k]!r}" for k in wanted if stored[k] != wanted[k]]
    if diffs:
        raise ValueError(f"checkpoint_dir {checkpoint_dir} holds a stage with other settings ({'; '.join(diffs)}); "
                         "use a fresh checkpoint_dir or the original settings")


def _same_weights_layout(a: BackboneConfig, b: BackboneConfig) -> bool:
    """True if encoders of `a` and `b` have the same weights (synchronised BN does not change them)."""
    return dataclasses.replace(a, global_bn=False) == dataclasses.replace(b, global_bn=False)


def _layout_mismatch(what: str, stored: BackboneConfig, wanted: BackboneConfig) -> ValueError:
    """The error for a checkpoint whose encoder is not `wanted`'s; BoTNet weights of another image
    size are refused (their position tables are tied to it) rather than resized."""
    if _same_weights_layout(dataclasses.replace(stored, image_size=None),
                            dataclasses.replace(wanted, image_size=None)):
        return ValueError(f"{what} holds a {stored.family} encoder built for {stored.image_size}-px images, "
                          f"this run uses {wanted.image_size} px; its attention position tables are tied to "
                          "the image size, so its weights are not reused at another size (rerun that stage "
                          "at this image size)")
    return ValueError(f"{what} holds backbone {stored}, expected {wanted}")


def infer_bit_backbone(path: str) -> BackboneConfig:
    """The BiT BackboneConfig (depth, width) matching the weights in the `.npz` at `path`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"BiT weights {path}: no such file")
    with np.load(path) as npz:
        root = "resnet/root_block/standardized_conv2d/kernel"
        if root not in npz.files:
            raise ValueError(f"BiT weights {path}: missing key {root!r}; not a BiT .npz")
        width = int(npz[root].shape[-1]) // 64
        units = tuple(len({k.split("/")[2] for k in npz.files if k.startswith(f"resnet/block{b}/unit")})
                      for b in range(1, 5))
    depths = [d for d, u in bit.BIT_UNITS.items() if u == units]
    if not depths or width < 1:
        raise ValueError(f"BiT weights {path}: units per block {units} and root width {width * 64} match no "
                         f"BiT ResNetV2 (expected units {dict(bit.BIT_UNITS)})")
    return BackboneConfig(family="bit", depth=depths[0], width=width, small_stem=False, global_bn=False)


def _load_keras_file(path: str) -> keras.Model:
    if not os.path.exists(path):
        raise FileNotFoundError(f"encoder file {path}: no such file")
    model = keras.saving.load_model(path, compile=False)
    if not isinstance(model, keras.Model):
        raise ValueError(f"encoder file {path}: expected a saved keras.Model, got {type(model).__name__}")
    return model


def _copy_weights(source: keras.Model, target: keras.Model, what: str) -> None:
    if variable_shapes(source) != variable_shapes(target):
        raise ValueError(f"{what}: its weights {len(source.weights)} variables do not match the encoder being "
                         f"initialised ({len(target.weights)} variables, or different shapes)")
    target.set_weights(source.get_weights())


def _kind(path: str) -> str:
    if path.endswith(".npz"):
        return "npz"
    if path.endswith(".keras"):
        return "keras"
    if simclr_import.savedmodel_dir(path):
        return simclr_import.TF2
    if not has_meta(path) and simclr_import.tf1_prefix(path):
        return simclr_import.TF1
    if tf.io.gfile.isdir(path):
        return "stage"
    raise FileNotFoundError(f"checkpoint {path}: expected a stage checkpoint directory (with {META_FILE}), "
                            "a BiT .npz file, a .keras encoder file, a SimCLR TF2 SavedModel directory "
                            "or a SimCLR TF1 checkpoint prefix (model.ckpt-<step>)")


_INIT_KINDS = {"npz": "bit_npz", "keras": "keras", "stage": "stage",
               simclr_import.TF2: simclr_import.TF2, simclr_import.TF1: simclr_import.TF1}


def _weight_files(path: str, kind: str) -> list[str]:
    if kind in ("npz", "keras"):
        return [path]
    if kind == "stage":
        return [f for f in (os.path.join(path, ENCODER_FILE), os.path.join(path, HEAD_FILE))
                if tf.io.gfile.exists(f)]
    if kind == simclr_import.TF2:
        return sorted(tf.io.gfile.glob(os.path.join(simclr_import.savedmodel_dir(path), "variables", "*")))
    prefix = simclr_import.tf1_prefix(path)
    return [prefix + ".index"] + sorted(tf.io.gfile.glob(prefix + ".data-*"))


@functools.lru_cache(maxsize=16)
def _fingerprint(files: tuple[str, ...], stamps: tuple) -> str:
    del stamps  # part of the cache key: a rewritten file is hashed again
    digest = hashlib.sha256()
    for name in files:
        digest.update(f"{os.path.basename(name)}\0".encode())
        with tf.io.gfile.GFile(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _init_name(path: str, kind: str) -> str:
    if kind in ("npz", "keras"):
        return os.path.splitext(os.path.basename(path))[0]
    if kind == "stage":
        return os.path.basename(os.path.normpath(path))
    parts = os.path.normpath(simclr_import.savedmodel_dir(path) or path).split(os.sep)
    if parts[-1] == "saved_model" or re.fullmatch(r"model\.ckpt(-\d+)?", parts[-1]):
        parts = parts[:-1]
    return "/".join(p for p in parts[-3:] if p)


def describe_init(path: str | None) -> dict[str, str | None]:
    """What a run starts from: {"kind": "scratch" | "simclr_tf2" | "simclr_tf1" | "bit_npz" | "stage" |
    "keras", "name": short name from the path, "fingerprint": sha256 hex of its weight files (file
    names and bytes; for a stage its encoder and head files)}."""
    if path is None:
        return {"kind": "scratch", "name": None, "fingerprint": None}
    kind = _kind(path)
    files = _weight_files(path, kind)
    stamps = tuple((os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files)
    return {"kind": _INIT_KINDS[kind], "name": _init_name(path, kind),
            "fingerprint": _fingerprint(tuple(files), stamps)}


def _simclr_encoder(path: str, backbone: BackboneConfig | None) -> tuple[keras.Model, "simclr_import.SimclrWeights"]:
    weights = simclr_import.read(path)
    stored = simclr_import.infer_backbone(weights) if backbone is None else backbone
    encoder = build_encoder(stored)
    simclr_import.assign_encoder(encoder, stored, weights)
    return encoder, weights


def _finished_meta(checkpoint_dir: str) -> StageMeta:
    meta = read_meta(checkpoint_dir)
    weights = os.path.join(checkpoint_dir, ENCODER_FILE)
    if not meta.finished:
        raise ValueError(f"stage checkpoint {checkpoint_dir}: unfinished ({meta.steps_done} of "
                         f"{meta.pretrain.steps if meta.pretrain else '?'} steps, no final {ENCODER_FILE}); "
                         "rerun that stage with the same checkpoint_dir to finish it")
    if not tf.io.gfile.exists(weights):
        raise ValueError(f"stage checkpoint {checkpoint_dir}: {META_FILE} says finished but {weights} is "
                         f"missing; delete {os.path.join(checkpoint_dir, META_FILE)} and rerun the stage to "
                         f"rebuild it from its saved state (or delete {checkpoint_dir} to retrain it)")
    return meta


def _load_weights(model: keras.Model, path: str) -> None:
    """`model.load_weights(path)`, with an unreadable or truncated file as one ValueError naming it."""
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"weights file {path}: unreadable, truncated or of another model ({reason}); "
                         "delete its stage directory to retrain it") from None


def load_encoder(path: str, backbone: BackboneConfig | None = None) -> keras.Model:
    """The encoder stored at `path`: a finished stage directory (rebuilt from its meta.json), a BiT
    `.npz` or a SimCLR TF2 SavedModel / TF1 checkpoint (architecture inferred from the file unless
    `backbone` is given) or a `.keras` file.

    With `backbone`, a stage directory or `.npz` must match it (up to `global_bn`, which is then taken
    from `backbone`). Call under `strategy.scope()` to get distributed variables.
    """
    kind = _kind(path)
    if kind == "keras":
        return _load_keras_file(path)
    if kind in (simclr_import.TF2, simclr_import.TF1):
        return _simclr_encoder(path, backbone)[0]
    if kind == "npz":
        stored = infer_bit_backbone(path)
    else:
        stored = _finished_meta(path).backbone
    if backbone is not None and not _same_weights_layout(backbone, stored):
        raise _layout_mismatch(f"checkpoint {path}", stored, backbone)
    encoder = build_encoder(backbone or stored)
    if kind == "npz":
        bit.load_bit_npz(encoder, path)
    else:
        _load_weights(encoder, os.path.join(path, ENCODER_FILE))
    return encoder


def init_encoder(
    path: str,
    encoder: keras.Model,
    *,
    backbone: BackboneConfig,
    head: keras.Model | None = None,
) -> str:
    """Copies the weights at `path` (stage directory, BiT `.npz`, `.keras` encoder, SimCLR TF2
    SavedModel or TF1 checkpoint) into `encoder` (built from `backbone`), and into `head` when `path`
    is a stage or SimCLR checkpoint with a head of the same shapes. Returns a one-line description
    of what was loaded."""
    kind = _kind(path)
    if kind in (simclr_import.TF2, simclr_import.TF1):
        weights = simclr_import.read(path)
        simclr_import.assign_encoder(encoder, backbone, weights)
        if head is not None and simclr_import.assign_head(head, weights):
            return f"SimCLR encoder and projection head from {weights.path}"
        return f"SimCLR encoder from {weights.path}"
    if kind == "keras":
        _copy_weights(_load_keras_file(path), encoder, f"init_checkpoint {path}")
        return f"encoder from {path}"
    if kind == "npz":
        if backbone.family != "bit":
            raise ValueError(f"init_checkpoint {path}: a BiT .npz initialises only family='bit' backbones, "
                             f"got {backbone}")
        bit.load_bit_npz(encoder, path)
        return f"BiT encoder from {path}"
    meta = _finished_meta(path)
    if not _same_weights_layout(meta.backbone, backbone):
        raise _layout_mismatch(f"init_checkpoint {path}", meta.backbone, backbone)
    _load_weights(encoder, os.path.join(path, ENCODER_FILE))
    head_file = os.path.join(path, HEAD_FILE)
    if head is not None and meta.head_shapes == variable_shapes(head) and tf.io.gfile.exists(head_file):
        _load_weights(head, head_file)
        return f"encoder and projection head from {path} ({meta.method}, {meta.steps_done} steps)"
    return f"encoder from {path} ({meta.method}, {meta.steps_done} steps)"


def load_head(path: str, input_dim: int) -> keras.Model | None:
    """The projection head stored with the encoder at `path` (a finished stage with a head, or a
    SimCLR checkpoint whose head has `heads.projection_head`'s layout on `input_dim` features),
    as a `heads.projection_head`; None if there is none."""
    from baselines.heads import projection_head

    kind = _kind(path)
    if kind in (simclr_import.TF2, simclr_import.TF1):
        weights = simclr_import.read(path)
        shapes = simclr_import.head_shapes(weights)
        if shapes is None or shapes[0] != input_dim:
            return None
        head = projection_head(input_dim, num_layers=shapes[1], output_dim=shapes[2])
        simclr_import.assign_head(head, weights)
        return head
    if kind != "stage":
        return None
    meta = _finished_meta(path)
    if not meta.head_shapes or not tf.io.gfile.exists(os.path.join(path, HEAD_FILE)):
        return None
    kernels = [s for s in meta.head_shapes if len(s) == 2]
    head = projection_head(input_dim, num_layers=len(kernels), output_dim=kernels[-1][1])
    if variable_shapes(head) != meta.head_shapes:
        return None
    _load_weights(head, os.path.join(path, HEAD_FILE))
    return head


def untrained_stage(
    checkpoint_dir: str,
    *,
    method: str,
    backbone: BackboneConfig,
    strategy: tf.distribute.Strategy,
    seed: int,
    init_checkpoint: str | None = None,
    method_options: dict[str, Any] | None = None,
) -> keras.Model:
    """The encoder of a stage that trains nothing: the finished stage in `checkpoint_dir` (which
    must have been made with the same settings), else one built after
    `keras.utils.set_random_seed(seed)`, initialised from `init_checkpoint` if given, and saved to
    `checkpoint_dir` as a finished 0-step stage."""
    if has_meta(checkpoint_dir):
        check_resumable(checkpoint_dir, read_meta(checkpoint_dir), method=method, backbone=backbone,
                        config=None, method_options=method_options, init_checkpoint=init_checkpoint)
        with strategy.scope():
            return load_encoder(checkpoint_dir, backbone)
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        encoder = build_encoder(backbone)
        if init_checkpoint:
            init_encoder(init_checkpoint, encoder, backbone=backbone)
    if strategy.extended.should_checkpoint:
        save_stage(checkpoint_dir, encoder=encoder, method=method, backbone=backbone, config=None,
                   steps_done=0, method_options=method_options, init_checkpoint=init_checkpoint)
    return encoder


def state_manager(checkpoint_dir: str, checkpoint: tf.train.Checkpoint, *,
                  is_chief: bool = True) -> tf.train.CheckpointManager:
    """The manager of the resumable training state under `checkpoint_dir/state/` (two kept).

    Non-chief workers of a multi-worker strategy must also save (saving is collective); they write to a
    private temporary directory. Every worker restores with `restore_state(checkpoint_dir, ...)`.
    """
    directory = os.path.join(checkpoint_dir, STATE_DIR) if is_chief else tempfile.mkdtemp(prefix="state_")
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)


def state_checkpoints(checkpoint_dir: str) -> list[str]:
    """Prefixes of the training-state checkpoints in `checkpoint_dir/state/`, newest first, found
    by their `.index` files (the manager's `checkpoint` index file may be missing or stale)."""
    found = []
    for index in tf.io.gfile.glob(os.path.join(checkpoint_dir, STATE_DIR, "*.index")):
        prefix = index[:-len(".index")]
        match = re.search(r"-(\d+)$", prefix)
        if match:
            found.append((int(match.group(1)), prefix))
    return [prefix for _, prefix in sorted(found, reverse=True)]


def restore_state(checkpoint_dir: str, state: tf.train.Checkpoint, *, steps_done: int) -> str | None:
    """Restores `state` from the newest readable training-state checkpoint of `checkpoint_dir` and
    returns its prefix; None if there is none and `steps_done` (from meta.json) is 0.

    A checkpoint whose files are missing or unreadable (a crash or a full disk during its save) is
    skipped with a warning, and the next older one is used. Raises ValueError, naming the
    directory, when `steps_done` > 0 but no checkpoint can be restored: training would silently
    restart at step 0."""
    skipped = []
    for prefix in state_checkpoints(checkpoint_dir):
        try:
            state.restore(prefix).assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError) as e:  # IndexError: a truncated data file
            text = str(getattr(e, "message", e)).strip()
            reason = text.splitlines()[0] if text else type(e).__name__
            logging.warning("%s: training state unreadable (%s); trying an older one", prefix, reason)
            skipped.append(os.path.basename(prefix))
            continue
        if skipped:
            logging.warning("resuming from the older training state %s (skipped %s)", prefix,
                            ", ".join(skipped))
        return prefix
    if steps_done > 0:
        state_dir = os.path.join(checkpoint_dir, STATE_DIR)
        what = f"only unreadable checkpoints ({', '.join(skipped)})" if skipped else "no checkpoint"
        raise ValueError(f"stage checkpoint {checkpoint_dir}: {META_FILE} says {steps_done} steps were done "
                         f"but {state_dir} holds {what}; delete {checkpoint_dir} to restart the stage "
                         "from step 0")
    return None
