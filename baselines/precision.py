"""Numeric precision of training: float32, or bfloat16 compute with float32 variables.

`resolve` turns a requested precision (`float32`, `bfloat16` or `auto`) into the one used, with the
reason; `auto` means bfloat16 where the device has fast bfloat16 units (TPU, GPU of compute
capability >= 8.0, CPU with AMX-BF16 or AVX512-BF16), else float32. `scope` runs a block in a
precision: for bfloat16 it is Keras's `mixed_bfloat16` policy, so layers built inside compute in
bfloat16 and keep float32 variables (hence float32 optimizer slots and saved weights). Where the
numbers need it the code stays in float32 whatever the policy: the NT-Xent loss
(`baselines.objective` promotes), batch-norm statistics (`baselines.batch_norm`), LARS
(`baselines.lars`) and the classifier's logits (a float32 head).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterable, Iterator, Sequence

import keras

PRECISIONS = ("float32", "bfloat16")
REQUESTS = PRECISIONS + ("auto",)
# CPU flags (/proc/cpuinfo, lscpu) of instructions that make bfloat16 matrix products fast.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


@dataclasses.dataclass(frozen=True)
class Device:
    """What `resolve` needs to know of an accelerator: its kind ("TPU", "GPU", "CPU") and, for a GPU,
    its compute capability (major, minor)."""

    kind: str
    compute_capability: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class Precision:
    """A precision request, the precision used, and why."""

    requested: str
    used: str
    reason: str

    def record(self) -> dict[str, str]:
        return dataclasses.asdict(self)


FLOAT32 = Precision("float32", "float32", "requested")


def check_request(requested: str, flag: str = "--precision") -> None:
    """ValueError naming `flag` unless `requested` is float32, bfloat16 or auto."""
    if requested not in REQUESTS:
        raise ValueError(f"{flag}={requested}: expected one of {', '.join(REQUESTS)}")


def resolve(requested: str, *, devices: Sequence[Device], cpu_flags: Iterable[str]) -> Precision:
    """The precision to train in. `devices` are the accelerators the strategy computes on (empty or
    CPU-only: the host CPU, described by `cpu_flags`)."""
    check_request(requested)
    if requested != "auto":
        return Precision(requested, requested, "requested")
    kinds = {d.kind for d in devices}
    if "TPU" in kinds:
        return Precision(requested, "bfloat16", "TPU")
    gpus = [d for d in devices if d.kind == "GPU"]
    if gpus:
        slow = [d for d in gpus if d.compute_capability is None or d.compute_capability < (8, 0)]
        if slow:
            return Precision(requested, "float32", "GPU without fast bfloat16 (compute capability < 8.0)")
        return Precision(requested, "bfloat16", "GPU with compute capability >= 8.0")
    fast = [f for f in BF16_CPU_FLAGS if f in set(cpu_flags)]
    if fast:
        return Precision(requested, "bfloat16", f"CPU with {'/'.join(fast)}")
    return Precision(requested, "float32", f"CPU without {' or '.join(BF16_CPU_FLAGS)}")


def host_cpu_flags(path: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The instruction-set flags of this machine's CPU (none where /proc/cpuinfo is missing)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return tuple(value.split())
    except OSError:
        pass
    return ()


def local_devices(strategy) -> tuple[Device, ...]:
    """The accelerators `strategy` computes on, as `Device`s (GPUs with the first GPU's compute
    capability); for the default strategy, the GPUs and TPUs TensorFlow sees, else the CPU."""
    import tensorflow as tf

    try:
        names = list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy places ops itself: on an accelerator if there is one
        names = [d.name for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "TPU")]
    gpus = tf.config.list_physical_devices("GPU")
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") if gpus else None
    kinds = [tf.DeviceSpec.from_string(name).device_type or "CPU" for name in names]
    return tuple(Device(kind, capability if kind == "GPU" else None) for kind in kinds) or (Device("CPU"),)


def policy_name(precision: str) -> str:
    """The Keras dtype policy of a used precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    return _POLICIES[precision]


@contextlib.contextmanager
def scope(precision: str) -> Iterator[None]:
    """Keras's global dtype policy set for `precision` during the block (layers built inside
    compute in it), restored afterwards."""
    wanted = keras.mixed_precision.Policy(policy_name(precision))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(wanted)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def clone_in(model: keras.Model, precision: str) -> keras.Model:
    """A fresh copy of `model`'s architecture (new, unset weights) whose layers compute in
    `precision`; float32 variables either way."""
    policy = policy_name(precision)

    def clone_layer(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone_layer)
        return layer.__class__.from_config({**layer.get_config(), "dtype": policy})

    return keras.models.clone_model(model, clone_function=clone_layer)
