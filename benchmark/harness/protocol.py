"""The evaluation protocol as pure functions: hashed patient-disjoint splits, nested stratified
label fractions, and parsing of `--label_fractions`.

Every choice is a function of stable strings (a salt such as the task name, group ids, a seed) via
SHA-256, so it is identical across runs, machines and Python processes.
"""
from __future__ import annotations

import decimal
import hashlib
import math
from typing import Hashable, Iterable, Mapping

import numpy as np

_FRACTION_TOLERANCE = 1e-9


def hash_fraction(key: str, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) determined by `salt` and `key` (SHA-256)."""
    if not isinstance(key, str) or not isinstance(salt, str):
        raise ValueError(f"hash_fraction: key and salt must be str, got {type(key).__name__} and "
                         f"{type(salt).__name__}")
    digest = hashlib.sha256(f"{len(salt)}:{salt}|{key}".encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def _as_ids(values: Iterable, argument: str) -> list[str]:
    """Group ids as str (bytes are decoded as UTF-8, as tf.string tensors yield them)."""
    ids = []
    for i, v in enumerate(values):
        if isinstance(v, (bytes, np.bytes_)):
            v = bytes(v).decode("utf-8")
        if not isinstance(v, str):
            raise ValueError(f"{argument}[{i}]: expected a str id, got {type(v).__name__} {v!r}")
        ids.append(str(v))
    return ids


def split_groups(group_ids, *, fractions: Mapping[str, float], salt: str) -> dict[str, np.ndarray]:
    """Boolean masks over the examples, one per part of `fractions` (e.g. {"train": 0.9,
    "validation": 0.1}, summing to 1): every example of a group lands in the same part, chosen by
    `hash_fraction(group_id, salt)`. Parts are disjoint and cover all examples."""
    ids = _as_ids(group_ids, "group_ids")
    if not fractions:
        raise ValueError("split_groups: fractions must name at least one part")
    for name, f in fractions.items():
        if not (isinstance(f, (int, float)) and 0 <= f <= 1):
            raise ValueError(f"split_groups: fractions[{name!r}] must be in [0, 1], got {f!r}")
    total = sum(fractions.values())
    if abs(total - 1.0) > _FRACTION_TOLERANCE:
        raise ValueError(f"split_groups: fractions must sum to 1, got {dict(fractions)} "
                         f"(sum {total})")
    names = list(fractions)
    bounds = np.cumsum([fractions[n] for n in names])
    bounds[-1] = 1.0
    unique, inverse = np.unique(np.asarray(ids, dtype=object), return_inverse=True)
    u = np.array([hash_fraction(g, salt) for g in unique])
    part_of_group = np.searchsorted(bounds, u, side="right")
    part = part_of_group[inverse.reshape(-1)] if len(ids) else np.zeros(0, dtype=np.int64)
    return {name: part == i for i, name in enumerate(names)}


def label_fraction_groups(group_ids, group_strata, fraction: float, seed: int, *,
                          salt: str) -> set[str]:
    """The groups (patients, lesions) whose labels are used at `fraction` of the labelled data.

    `group_strata[i]` is the stratum (e.g. the primary diagnosis, or any str key for multi-label)
    of `group_ids[i]`; ids may repeat (one entry per example) if their stratum agrees. Within each
    stratum, groups are ranked by `hash_fraction(group_id, f"{salt}/seed={seed}")` and the first
    ceil(fraction * stratum size) are taken, so a non-empty stratum always contributes a group,
    fraction 1.0 takes all, and for a fixed seed a smaller fraction's groups are a subset of a
    larger one's.
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"label_fraction_groups: fraction must be in (0, 1], got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"label_fraction_groups: seed must be an int, got {seed!r}")
    ids = _as_ids(group_ids, "group_ids")
    strata = list(group_strata)
    if len(strata) != len(ids):
        raise ValueError(f"label_fraction_groups: {len(ids)} group_ids but {len(strata)} "
                         "group_strata")
    stratum_of: dict[str, Hashable] = {}
    for g, s in zip(ids, strata):
        if stratum_of.setdefault(g, s) != s:
            raise ValueError(f"label_fraction_groups: group {g!r} has two strata, "
                             f"{stratum_of[g]!r} and {s!r}")
    members: dict[Hashable, list[str]] = {}
    for g, s in stratum_of.items():
        members.setdefault(s, []).append(g)
    rank_salt = f"{salt}/seed={int(seed)}"
    chosen = set()
    for groups in members.values():
        count = math.ceil(fraction * len(groups) - _FRACTION_TOLERANCE)
        ranked = sorted(groups, key=lambda g: (hash_fraction(g, rank_salt), g))
        chosen.update(ranked[:max(1, count)])
    return chosen


def parse_fractions(text: str) -> tuple[float, ...]:
    """Label fractions from `--label_fractions`, a comma-separated list of percentages in (0, 100],
    returned as percentages in ascending order: "100,1,10" -> (1.0, 10.0, 100.0). (Result rows
    store `label_fraction` as a fraction of 1, i.e. percentage / 100.)"""
    values = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            percent = decimal.Decimal(item)
        except decimal.InvalidOperation:
            raise ValueError(f"--label_fractions={text}: {item!r} is not a number; expected "
                             "comma-separated percentages in (0, 100], e.g. 1,10,100") from None
        if not percent.is_finite() or not 0 < percent <= 100:
            raise ValueError(f"--label_fractions={text}: {item!r} is outside (0, 100]; values are "
                             "percentages, e.g. 1,10,100")
        if float(percent) in values:
            raise ValueError(f"--label_fractions={text}: {item!r} is repeated")
        values.append(float(percent))
    return tuple(sorted(values))
