"""Writes small checkpoints in the published SimCLR formats with random weights, and computes their
forward pass with plain `tf.nn` ops — independently of `baselines` (no Keras layers, no loader code).

Layouts (google-research/simclr `tf2/resnet.py`, `tf2/model.py`; see baselines/simclr_import.py):
- TF2 SavedModel: variables named as Keras 2 creates them, e.g.
  `resnet/block_group1/bottleneck_block/conv2d_fixed_padding_1/conv2d_1/kernel:0`, batch norm as
  `.../batch_norm_relu_N/sync_batch_normalization_N/...`, head `projection_head/nl_<i>/dense_N/kernel`;
  `__call__(images, trainable)` returns the dict of SimCLR's saved models (`final_avg_pool`, ...).
- TF1 checkpoint `model.ckpt-<step>`: `base_model/conv2d_N/kernel`, `base_model/batch_normalization_N/*`,
  `head_contrastive/nl_<i>/{dense,batch_normalization}/*`, plus what a loader must skip: an
  `ema_model/` copy with other values, `.../Momentum` slots, `global_step`, `head_supervised/`.

Sizes scale with --depth/--width (depth 50 width 1 at 32 px runs in seconds on a CPU).

    python tests/simclr_fixture.py --out=/tmp/standin --format=tf2 --depth=18 --width=0.25
"""
from __future__ import annotations

import os
import sys

import numpy as np
import tensorflow as tf

LAYERS = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)),
          101: (True, (3, 4, 23, 3)), 152: (True, (3, 8, 36, 3))}
EPS = 1e-5
SK_RATIO = 0.0625


class _Names:
    """Keras-2 style unique names (`conv2d`, `conv2d_1`, ...) or TF1 ones, in creation order."""

    def __init__(self):
        self.counts = {}

    def __call__(self, base: str) -> str:
        n = self.counts.get(base, 0)
        self.counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"


class ReferenceNet:
    """A SimCLR ResNet v1 (+ projection head) with random weights, named in `fmt` ("tf2"/"tf1")."""

    def __init__(self, depth: int, width: float, sk: bool, head_layers: int, fmt: str, seed: int = 0,
                 proj_dim: int = 16, num_classes: int = 5):
        self.rng = np.random.default_rng(seed)
        self.fmt, self.sk = fmt, sk
        self.names = _Names()
        self.values: dict[str, np.ndarray] = {}
        bottleneck, layers = LAYERS[depth]
        base = int(64 * width)
        root = "resnet" if fmt == "tf2" else "base_model"
        if sk:
            self.stem = [self._conv(root, 3, 3, base // 2, 2), self._conv(root, 3, base // 2, base // 2, 1),
                         self._conv(root, 3, base // 2, base, 1)]
        else:
            self.stem = [self._conv(root, 7, 3, base, 2)]
        self.groups = []
        c = base
        for g, (n, stride) in enumerate(zip(layers, (1, 2, 2, 2))):
            filters = base * 2**g
            out = 4 * filters if bottleneck else filters
            blocks = []
            for b in range(n):
                scope = (f"{root}/block_group{g + 1}/{self.names('bottleneck_block' if bottleneck else 'residual_block')}"
                         if fmt == "tf2" else root)
                s = stride if b == 0 else 1
                block = {"stride": s, "proj": None}
                if b == 0:
                    block["proj"] = self._conv(scope, 1, c, out, 1 if sk else s, relu=False)
                if bottleneck:
                    block["a"] = self._conv(scope, 1, c, filters, 1)
                    if sk:
                        sk_scope = f"{scope}/{self.names('sk__conv2d')}" if fmt == "tf2" else scope
                        mid = max(int(filters * SK_RATIO), 32)
                        block["sk"] = (self._conv(sk_scope, 3, filters, 2 * filters, s),
                                       self._conv(sk_scope, 1, filters, mid, 1, wrapped=False),
                                       self._conv(sk_scope, 1, mid, 2 * filters, 1, wrapped=False, bn=False))
                    else:
                        block["b"] = self._conv(scope, 3, filters, filters, s)
                    block["c"] = self._conv(scope, 1, filters, out, 1, relu=False)
                else:
                    block["a"] = self._conv(scope, 3, c, filters, s)
                    block["c"] = self._conv(scope, 3, filters, filters, 1, relu=False)
                c = out
                blocks.append(block)
            self.groups.append(blocks)
        self.feature_dim = c
        self.head = []
        for i in range(head_layers):
            last = i == head_layers - 1
            scope = f"projection_head/nl_{i}" if fmt == "tf2" else f"head_contrastive/nl_{i}"
            dense = f"{scope}/{self.names('dense') if fmt == 'tf2' else 'dense'}/kernel"
            self.values[dense] = self.rng.normal(0, c ** -0.5, (c, proj_dim if last else c)).astype(np.float32)
            bn = self._bn(scope, proj_dim if last else c, center=not last, wrapped=fmt == "tf2",
                          tf1_name="batch_normalization")
            self.head.append((dense, bn, not last))
        sup = "head_supervised/linear_layer/" + (self.names("dense") if fmt == "tf2" else "dense")
        self.values[f"{sup}/kernel"] = self.rng.normal(0, 0.1, (c, num_classes)).astype(np.float32)
        self.values[f"{sup}/bias"] = self.rng.normal(0, 0.1, (num_classes,)).astype(np.float32)
        self.sup = sup

    def _bn(self, scope, channels, center=True, wrapped=True, tf1_name=None):
        if self.fmt == "tf2":
            prefix = f"{scope}/{self.names('batch_norm_relu')}/{self.names('sync_batch_normalization')}"
        else:
            prefix = f"{scope}/{tf1_name or self.names('batch_normalization')}"
        r = self.rng
        self.values[f"{prefix}/gamma"] = r.uniform(0.5, 1.5, channels).astype(np.float32)
        if center:
            self.values[f"{prefix}/beta"] = r.normal(0, 0.2, channels).astype(np.float32)
        self.values[f"{prefix}/moving_mean"] = r.normal(0, 0.2, channels).astype(np.float32)
        self.values[f"{prefix}/moving_variance"] = r.uniform(0.5, 2.0, channels).astype(np.float32)
        return prefix

    def _conv(self, scope, k, cin, cout, stride, relu=True, wrapped=True, bn=True):
        if self.fmt == "tf2":
            outer = f"{scope}/{self.names('conv2d_fixed_padding')}" if wrapped else scope
            name = f"{outer}/{self.names('conv2d')}/kernel"
        else:
            name = f"{scope}/{self.names('conv2d')}/kernel"
        self.values[name] = self.rng.normal(0, (k * k * cin) ** -0.5, (k, k, cin, cout)).astype(np.float32)
        return {"kernel": name, "k": k, "stride": stride, "relu": relu,
                "bn": self._bn(scope, cout) if bn else None}

    # Forward pass with plain tf.nn ops (inference-mode batch norm).
    def _batch_norm(self, v, x, prefix, relu):
        beta = v.get(f"{prefix}/beta", 0.0)
        x = (x - v[f"{prefix}/moving_mean"]) * v[f"{prefix}/gamma"] / tf.sqrt(v[f"{prefix}/moving_variance"] + EPS) + beta
        return tf.nn.relu(x) if relu else x

    def _apply(self, v, x, conv):
        k, s = conv["k"], conv["stride"]
        if s > 1:
            beg = (k - 1) // 2
            x = tf.pad(x, [[0, 0], [beg, k - 1 - beg], [beg, k - 1 - beg], [0, 0]])
        x = tf.nn.conv2d(x, v[conv["kernel"]], s, "VALID" if s > 1 else "SAME")
        return x if conv["bn"] is None else self._batch_norm(v, x, conv["bn"], conv["relu"])

    def forward(self, v, images):
        """SimCLR's saved-model outputs for float images in [0, 1]; `v`: name -> tensor."""
        out = {}
        x = images
        for conv in self.stem:
            x = self._apply(v, x, conv)
        out["initial_conv"] = x
        x = tf.nn.max_pool2d(x, 3, 2, "SAME")
        out["initial_max_pool"] = x
        for g, blocks in enumerate(self.groups):
            for block in blocks:
                shortcut = x
                if block["proj"] is not None:
                    if self.sk:
                        if block["stride"] > 1:
                            shortcut = tf.nn.avg_pool2d(tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]), 2, 2, "VALID")
                        else:
                            shortcut = tf.nn.avg_pool2d(x, 2, 1, "SAME")
                    shortcut = self._apply(v, shortcut, block["proj"])
                y = self._apply(v, x, block["a"])
                if "sk" in block:
                    streams = tf.stack(tf.split(self._apply(v, y, block["sk"][0]), 2, axis=3))
                    pooled = tf.reduce_mean(tf.reduce_sum(streams, 0), [1, 2], keepdims=True)
                    mixing = self._apply(v, self._apply(v, pooled, block["sk"][1]), block["sk"][2])
                    y = tf.reduce_sum(streams * tf.nn.softmax(tf.stack(tf.split(mixing, 2, axis=3)), axis=0), 0)
                elif "b" in block:
                    y = self._apply(v, y, block["b"])
                x = tf.nn.relu(self._apply(v, y, block["c"]) + shortcut)
            out[f"block_group{g + 1}"] = x
        features = tf.reduce_mean(x, [1, 2])
        out["final_avg_pool"] = features
        out["logits_sup"] = tf.matmul(features, v[f"{self.sup}/kernel"]) + v[f"{self.sup}/bias"]
        if self.head:
            h = features
            out["proj_head_input"] = h
            for dense, bn, relu in self.head:
                h = self._batch_norm(v, tf.matmul(h, v[dense]), bn, relu)
            out["proj_head_output"] = h
        return out


class _Exported(tf.Module):
    def __init__(self, net: ReferenceNet):
        super().__init__()
        self.net = net
        self.weights = {n: tf.Variable(a, name=n, trainable=True) for n, a in net.values.items()}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                  tf.TensorSpec([], tf.bool)])
    def __call__(self, inputs, trainable):
        del trainable  # inference-mode batch norm either way in this fixture
        return self.net.forward(self.weights, inputs)


def write(out: str, net: ReferenceNet, step: int = 1000) -> str:
    """Writes `net` in its format under `out`; returns the path a loader takes (the SavedModel
    directory or the TF1 prefix)."""
    os.makedirs(out, exist_ok=True)
    if net.fmt == "tf2":
        path = os.path.join(out, "saved_model")
        tf.saved_model.save(_Exported(net), path)
        return path
    saved = {n: tf.Variable(a) for n, a in net.values.items()}
    for n, a in net.values.items():
        saved[f"ema_model/{n}"] = tf.Variable(a + 1.0)
        saved[f"{n}/Momentum"] = tf.Variable(np.zeros_like(a))
    saved["global_step"] = tf.Variable(np.int64(step))
    prefix = os.path.join(out, f"model.ckpt-{step}")
    tf.compat.v1.train.Saver(var_list=saved).save(sess=None, save_path=prefix, write_meta_graph=False)
    return prefix


def main(argv: list[str]) -> None:
    from absl import flags

    flags.DEFINE_string("out", None, "Output directory.", required=True)
    flags.DEFINE_enum("format", "tf2", ["tf2", "tf1"], "SavedModel (tf2) or model.ckpt (tf1).")
    flags.DEFINE_integer("depth", 18, "ResNet depth (18, 34, 50, 101, 152).")
    flags.DEFINE_float("width", 0.25, "Width multiplier.")
    flags.DEFINE_bool("sk", False, "Selective kernels (sk1).")
    flags.DEFINE_integer("head_layers", 2, "Projection-head layers (0: none, as SimCLRv1).")
    flags.DEFINE_integer("proj_dim", 128, "Projection output size.")
    flags.DEFINE_integer("seed", 0, "Weight seed.")
    flags.FLAGS(argv)
    f = flags.FLAGS
    net = ReferenceNet(f.depth, f.width, f.sk, f.head_layers, f.format, seed=f.seed, proj_dim=f.proj_dim)
    print(write(f.out, net))


if __name__ == "__main__":
    main(sys.argv)
