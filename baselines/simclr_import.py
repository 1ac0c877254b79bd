"""Reads the published SimCLR ImageNet checkpoints (google-research/simclr, v1 and v2) into our
`resnet_v1` encoder and projection head.

Two formats:
- TF2 SavedModel directory (`saved_model.pb` + `variables/`; its parent also works): its
  variables are read by their creation names (its functions are not loaded), e.g.
  `resnet/block_group1/bottleneck_block/conv2d_fixed_padding_1/conv2d_1/kernel:0` and
  `resnet/.../sync_batch_normalization_4/gamma:0`, the head under `projection_head/nl_<i>/`.
- TF1 checkpoint prefix `model.ckpt-<step>` (or its directory, via its `checkpoint` file):
  `base_model/conv2d[_N]/kernel`, `base_model/batch_normalization[_N]/{gamma,beta,moving_mean,
  moving_variance}`, the head under `head_contrastive/nl_<i>/`. The `ema_model/` copy, optimizer
  slots (`.../Momentum`), `global_step` and the supervised head are not read.

In both, conv layers and batch-norm layers carry counters in creation order (none = 0). Sorted by
counter they line up one to one with `resnet.simclr_layers`, which is checked shape by shape; the
architecture (depth, width, selective kernels, stem) is inferred from the kernel shapes. A head is
used when it has SimCLR's projection-head layout (dense without bias, then batch norm; offset on
every layer but the last) and hidden widths equal to the feature size, as `heads.projection_head`.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re

import keras
import numpy as np
import tensorflow as tf
from google.protobuf import message
from tensorflow.core.protobuf import saved_model_pb2, trackable_object_graph_pb2

from baselines import resnet
from baselines.api import BackboneConfig

TF2 = "simclr_tf2"
TF1 = "simclr_tf1"
BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")
_CONV = re.compile(r"(?:^|/)conv2d(?:_(\d+))?/kernel$")
_BN = re.compile(r"(?:^|/)((?:sync_)?batch_normalization(?:_(\d+))?)/(gamma|beta|moving_mean|moving_variance)$")
_DENSE = re.compile(r"(?:^|/)dense(?:_\d+)?/kernel$")
_NL = re.compile(r"(?:^|/)nl_(\d+)/")


@dataclasses.dataclass(frozen=True)
class HeadLayer:
    """One projection-head layer: dense kernel [in, out] and its batch norm (checkpoint names)."""

    kernel: tuple[str, np.ndarray]
    bn: dict[str, tuple[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class SimclrWeights:
    """The backbone and projection-head tensors of a SimCLR checkpoint, in creation order."""

    path: str
    format: str  # TF2 or TF1
    convs: tuple[tuple[str, np.ndarray], ...]
    bns: tuple[dict[str, tuple[str, np.ndarray]], ...]  # param -> (checkpoint name, value)
    head: tuple[HeadLayer, ...]


def savedmodel_dir(path: str) -> str | None:
    """The SavedModel directory at `path` (or at `path/saved_model`), None if there is none."""
    for candidate in (path, os.path.join(path, "saved_model")):
        if tf.io.gfile.exists(os.path.join(candidate, "saved_model.pb")):
            return candidate
    return None


def tf1_prefix(path: str) -> str | None:
    """The TF1 checkpoint prefix named by `path` (a prefix with a `.index` file, or a directory with
    a `checkpoint` file), None if it names none."""
    if tf.io.gfile.exists(path + ".index"):
        return path
    if tf.io.gfile.isdir(path) and tf.io.gfile.exists(os.path.join(path, "checkpoint")):
        return tf.train.latest_checkpoint(path)
    return None


def _counter(match: re.Match, group: int) -> int:
    return int(match.group(group) or 0)


def _first_line(e: Exception) -> str:
    text = str(getattr(e, "message", e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_tf2(directory: str) -> dict[str, np.ndarray]:
    """The SavedModel's variables by creation name, read from its object graph and variables
    checkpoint without loading its functions (the object at a path of attribute names in the
    SavedModel's graph is the object at that path in the checkpoint's)."""
    try:
        with tf.io.gfile.GFile(os.path.join(directory, "saved_model.pb"), "rb") as f:
            saved = saved_model_pb2.SavedModel.FromString(f.read())
        objects = saved.meta_graphs[0].object_graph_def.nodes
        reader = tf.train.load_checkpoint(os.path.join(directory, "variables", "variables"))
        stored = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
            reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")).nodes
        found, pending, seen = {}, [(0, 0)], {0}
        while pending:
            node, key = pending.pop()
            if objects[node].WhichOneof("kind") == "variable":
                [value] = [a.checkpoint_key for a in stored[key].attributes if a.name == "VARIABLE_VALUE"]
                name = objects[node].variable.name
                found[name[:-2] if name.endswith(":0") else name] = reader.get_tensor(value)
            children = {c.local_name: c.node_id for c in stored[key].children}
            for child in objects[node].children:
                if child.local_name in children and child.node_id not in seen:
                    seen.add(child.node_id)
                    pending.append((child.node_id, children[child.local_name]))
    except (OSError, ValueError, IndexError, message.DecodeError, tf.errors.OpError) as e:
        raise ValueError(f"SimCLR SavedModel {directory}: unreadable ({_first_line(e)})") from None
    return found


def _read_tf1(prefix: str) -> dict[str, np.ndarray]:
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_shape_map()
        return {n: reader.get_tensor(n) for n in names
                if n.startswith(("base_model/", "head_contrastive/"))}
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ValueError(f"SimCLR checkpoint {prefix}: unreadable ({_first_line(e)})") from None


def _in_scope(name: str, fmt: str) -> str | None:
    """"backbone", "head" or None (not read) for a variable name of format `fmt`."""
    parts = name.split("/")
    if fmt == TF1:
        return {"base_model": "backbone", "head_contrastive": "head"}.get(parts[0])
    if "resnet" in parts[:-1]:
        return "backbone"
    if "projection_head" in parts[:-1] or "head_contrastive" in parts[:-1]:
        return "head"
    return None


def read(path: str) -> SimclrWeights:
    """The SimCLR weights at `path` (a TF2 SavedModel directory or a TF1 checkpoint prefix);
    ValueError naming the file for anything that is not one, or a backbone variable with no place
    in a ResNet."""
    directory = savedmodel_dir(path)
    prefix = None if directory else tf1_prefix(path)
    if directory is None and prefix is None:
        raise ValueError(f"{path}: not a SimCLR TF2 SavedModel directory (saved_model.pb) or TF1 "
                         "checkpoint prefix (model.ckpt-<step> with its .index file)")
    fmt, where = (TF2, directory) if directory else (TF1, prefix)
    tensors = _read_tf2(directory) if fmt == TF2 else _read_tf1(prefix)
    convs, bns, head_convs, head_bns = {}, {}, {}, {}
    for name in sorted(tensors):
        scope = _in_scope(name, fmt)
        if scope is None or name.rsplit("/", 1)[-1] not in ("kernel", "bias") + BN_PARAMS:
            continue  # another model's scope, or an optimizer slot such as .../Momentum
        conv, bn = _CONV.search(name), _BN.search(name)
        if scope == "head":
            nl = _NL.search(name)
            if nl is None:
                continue
            if _DENSE.search(name):
                head_convs[int(nl.group(1))] = (name, tensors[name])
            elif bn:
                head_bns.setdefault(int(nl.group(1)), {})[bn.group(3)] = (name, tensors[name])
            continue
        if conv:
            key, table = _counter(conv, 1), convs
            if key in table:
                raise ValueError(f"{where}: variables {table[key][0]} and {name} carry the same "
                                 "creation number; expected one backbone (no copies)")
            table[key] = (name, tensors[name])
        elif bn:
            params = bns.setdefault(_counter(bn, 2), {})
            if bn.group(3) in params:
                raise ValueError(f"{where}: variables {params[bn.group(3)][0]} and {name} carry the "
                                 "same creation number; expected one backbone (no copies)")
            params[bn.group(3)] = (name, tensors[name])
        else:
            raise ValueError(f"{where}: variable {name} {list(tensors[name].shape)} has no place in a "
                             "SimCLR resnet_v1 (expected conv kernels and batch-norm parameters)")
    head = []
    for i in itertools.count():
        if i not in head_convs or i not in head_bns:
            break
        head.append(HeadLayer(head_convs[i], head_bns[i]))
    return SimclrWeights(path=where, format=fmt, convs=tuple(convs[k] for k in sorted(convs)),
                         bns=tuple(bns[k] for k in sorted(bns)), head=tuple(head))


def describe_backbone(config: BackboneConfig) -> str:
    """`config` as a --backbone value, e.g. resnet_v1-50x1-sk1."""
    text = f"{config.family}-{config.depth}x{config.width:g}"
    if config.small_stem:
        text += "-small"
    return text + ("-sk1" if config.sk_ratio == resnet.SK_RATIO else
                   f"-sk{config.sk_ratio:g}" if config.sk_ratio else "")


def _candidates():
    for depth, width, sk, small in itertools.product(resnet.SIMCLR_DEPTHS, resnet.WIDTHS,
                                                     (0.0, resnet.SK_RATIO), (False, True)):
        yield BackboneConfig(family="resnet_v1", depth=depth, width=width, small_stem=small, sk_ratio=sk)


def _conv_mismatch(weights: SimclrWeights, config: BackboneConfig) -> tuple[int, str] | None:
    """(number of leading convs that match, message) for the first conv that does not fit `config`,
    None if all fit."""
    expected, _ = resnet.simclr_layers(config.depth, config.width, config.small_stem, config.sk_ratio)
    for i, ((layer, shape), got) in enumerate(itertools.zip_longest(expected, weights.convs,
                                                                     fillvalue=(None, None))):
        if layer is None:
            return i, (f"{weights.path}: variable {got[0]} {list(got[1].shape)} has no place in "
                       f"{describe_backbone(config)} (it has {len(expected)} conv layers)")
        if got is None:
            return i, (f"{weights.path}: no variable for conv layer {layer} (expected shape "
                       f"{list(shape)} in {describe_backbone(config)}; the file has {len(weights.convs)} "
                       "conv kernels)")
        if tuple(got[1].shape) != shape:
            return i, (f"{weights.path}: variable {got[0]} has shape {list(got[1].shape)}, expected "
                       f"{list(shape)} for layer {layer} of {describe_backbone(config)}")
    return None


def infer_backbone(weights: SimclrWeights) -> BackboneConfig:
    """The resnet_v1 BackboneConfig whose conv shapes are those of `weights`; ValueError naming the
    first variable that fits no architecture (compared with the closest one)."""
    closest = None
    for config in _candidates():
        mismatch = _conv_mismatch(weights, config)
        if mismatch is None:
            return config
        if closest is None or mismatch[0] > closest[0]:
            closest = mismatch
    raise ValueError(closest[1])


def assign_encoder(encoder: keras.Model, backbone: BackboneConfig, weights: SimclrWeights) -> None:
    """Assigns `weights` to `encoder` (built from `backbone`); ValueError naming the variable, the
    expected shape and the file for the first tensor that does not fit."""
    if backbone.family != "resnet_v1":
        raise ValueError(f"{weights.path}: a SimCLR checkpoint initialises only family 'resnet_v1' "
                         f"backbones, got {backbone}")
    mismatch = _conv_mismatch(weights, backbone)
    if mismatch is not None:
        raise ValueError(mismatch[1] + f" (the backbone being initialised is {describe_backbone(backbone)}"
                         + _inferred_hint(weights) + ")")
    convs, bns = resnet.simclr_layers(backbone.depth, backbone.width, backbone.small_stem, backbone.sk_ratio)
    for (layer, _), (_, value) in zip(convs, weights.convs):
        encoder.get_layer(layer).kernel.assign(value)
    if len(bns) != len(weights.bns):
        raise ValueError(f"{weights.path}: {len(weights.bns)} batch-norm layers, expected {len(bns)} "
                         f"for {describe_backbone(backbone)}")
    for (layer, channels), params in zip(bns, weights.bns):
        bn = encoder.get_layer(layer)
        for param in BN_PARAMS:
            if param not in params:
                some = next(iter(params.values()))[0]
                raise ValueError(f"{weights.path}: no {param} next to {some} (expected shape "
                                 f"[{channels}] for layer {layer})")
            name, value = params[param]
            if tuple(value.shape) != (channels,):
                raise ValueError(f"{weights.path}: variable {name} has shape {list(value.shape)}, "
                                 f"expected [{channels}] for layer {layer} of {describe_backbone(backbone)}")
            getattr(bn, param).assign(value)


def _inferred_hint(weights: SimclrWeights) -> str:
    try:
        return f"; the file holds {describe_backbone(infer_backbone(weights))}"
    except ValueError:
        return ""


def head_shapes(weights: SimclrWeights) -> tuple[int, int, int] | None:
    """(input dim, number of layers, output dim) if the checkpoint's head has the layout of
    `heads.projection_head`, else None."""
    layers = weights.head
    if not layers:
        return None
    dim = layers[0].kernel[1].shape[0]
    for i, layer in enumerate(layers):
        kernel = layer.kernel[1]
        last = i == len(layers) - 1
        if kernel.ndim != 2 or kernel.shape[0] != dim or (not last and kernel.shape[1] != dim):
            return None
        wanted = set(BN_PARAMS) - ({"beta"} if last else set())
        if set(layer.bn) != wanted or any(v.shape != (kernel.shape[1],) for _, v in layer.bn.values()):
            return None
    return dim, len(layers), int(layers[-1].kernel[1].shape[1])


def assign_head(head: keras.Model, weights: SimclrWeights) -> bool:
    """Assigns the checkpoint's projection head to `head` (a `heads.projection_head`) if they have
    the same layers and shapes; returns whether it did."""
    dense = [l for l in head.layers if isinstance(l, keras.layers.Dense)]
    norms = [l for l in head.layers if isinstance(l, keras.layers.BatchNormalization)]
    shapes = head_shapes(weights)
    if shapes is None or len(dense) != shapes[1] or len(norms) != shapes[1]:
        return False
    for d, n, layer in zip(dense, norms, weights.head):
        if tuple(d.kernel.shape) != layer.kernel[1].shape or (n.beta is None) != ("beta" not in layer.bn):
            return False
    for d, n, layer in zip(dense, norms, weights.head):
        d.kernel.assign(layer.kernel[1])
        for param, (_, value) in layer.bn.items():
            getattr(n, param).assign(value)
    return True
