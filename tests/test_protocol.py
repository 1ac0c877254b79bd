"""Hashed splits, nested stratified label fractions and --label_fractions parsing."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmark.harness import protocol


def _groups_with_strata(rng, n_groups=2000):
    """Group ids and a skewed stratum per group, including a stratum of three groups."""
    ids = [f"patient{i:05d}" for i in range(n_groups)]
    strata = list(rng.choice(["nv", "mel", "bkl", "bcc"], size=n_groups, p=[0.7, 0.15, 0.1, 0.05]))
    strata[:3] = ["akiec"] * 3
    return ids, strata


def test_hash_fraction_is_pinned_and_uniform():
    # Pinned: changing the hash would silently change every split and label fraction.
    assert protocol.hash_fraction("patient00001", "cxr") == 0.5383516897293347
    assert protocol.hash_fraction("patient00001", "derm") == 0.5936630803624978
    u = np.array([protocol.hash_fraction(f"k{i}", "s") for i in range(20000)])
    assert u.min() >= 0 and u.max() < 1
    deciles = np.bincount((u * 10).astype(int), minlength=10) / u.size
    assert np.all(np.abs(deciles - 0.1) < 0.01)
    with pytest.raises(ValueError, match="must be str"):
        protocol.hash_fraction(1, "s")


def test_hash_fraction_does_not_depend_on_python_hash_seed():
    code = "from benchmark.harness.protocol import hash_fraction; print(repr(hash_fraction('p7', 'cxr')))"
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert outputs == {repr(protocol.hash_fraction("p7", "cxr")) + "\n"}


def test_split_groups_is_patient_disjoint_covering_and_proportional():
    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in rng.integers(0, 5000, size=20000)]
    fractions = {"train": 0.9, "validation": 0.1}
    parts = protocol.split_groups(patients, fractions=fractions, salt="cxr")
    assert list(parts) == ["train", "validation"]
    train, val = parts["train"], parts["validation"]
    assert train.dtype == bool and train.shape == (20000,)
    assert not np.any(train & val) and np.all(train | val)
    patients = np.array(patients)
    assert not set(patients[train]) & set(patients[val])
    assert len(set(patients[val])) / len(set(patients)) == pytest.approx(0.1, abs=0.015)
    again = protocol.split_groups(patients[::-1], fractions=fractions, salt="cxr")
    assert np.array_equal(again["validation"][::-1], val)
    other = protocol.split_groups(patients, fractions=fractions, salt="derm")
    assert not np.array_equal(other["validation"], val)


def test_split_groups_three_parts_zero_part_and_bytes_ids():
    ids = [f"lesion{i}".encode() for i in range(3000)]
    parts = protocol.split_groups(ids, fractions={"train": 0.7, "validation": 0.1, "test": 0.2},
                                  salt="derm")
    sizes = {k: v.mean() for k, v in parts.items()}
    assert sizes == pytest.approx({"train": 0.7, "validation": 0.1, "test": 0.2}, abs=0.03)
    assert np.array_equal(sum(v.astype(int) for v in parts.values()), np.ones(3000))
    parts = protocol.split_groups(ids, fractions={"train": 1.0, "validation": 0.0}, salt="derm")
    assert parts["train"].all() and not parts["validation"].any()


@pytest.mark.parametrize("fractions, match", [
    ({"train": 0.9, "validation": 0.2}, "sum to 1"),
    ({"train": 1.1, "validation": -0.1}, r"fractions\['train'\]"),
    ({}, "at least one part"),
])
def test_split_groups_rejects_bad_fractions(fractions, match):
    with pytest.raises(ValueError, match=match):
        protocol.split_groups(["a", "b"], fractions=fractions, salt="s")


def test_split_groups_rejects_non_string_ids():
    with pytest.raises(ValueError, match=r"group_ids\[1\]"):
        protocol.split_groups(["a", 3], fractions={"all": 1.0}, salt="s")


@pytest.mark.parametrize("seed", range(4))
def test_label_fractions_are_nested(seed):
    ids, strata = _groups_with_strata(np.random.default_rng(seed))
    chosen = [protocol.label_fraction_groups(ids, strata, f, seed, salt="derm")
              for f in (0.01, 0.05, 0.1, 0.5, 1.0)]
    for small, large in zip(chosen, chosen[1:]):
        assert small < large
    assert chosen[-1] == set(ids)


def test_label_fractions_are_stratified():
    ids, strata = _groups_with_strata(np.random.default_rng(0))
    chosen = protocol.label_fraction_groups(ids, strata, 0.1, 0, salt="derm")
    for stratum in set(strata):
        members = {g for g, s in zip(ids, strata) if s == stratum}
        assert len(chosen & members) == math.ceil(0.1 * len(members))
    tiny = protocol.label_fraction_groups(ids, strata, 0.01, 0, salt="derm")
    assert {s for g, s in zip(ids, strata) if g in tiny} == set(strata)  # every stratum represented


def test_label_fractions_deterministic_and_seed_dependent():
    ids, strata = _groups_with_strata(np.random.default_rng(1))
    a = protocol.label_fraction_groups(ids, strata, 0.1, 0, salt="derm")
    assert a == protocol.label_fraction_groups(ids[::-1], strata[::-1], 0.1, 0, salt="derm")
    b = protocol.label_fraction_groups(ids, strata, 0.1, 1, salt="derm")
    c = protocol.label_fraction_groups(ids, strata, 0.1, 0, salt="cxr")
    assert len(a) == len(b) == len(c)
    assert len(a & b) < 0.5 * len(a) and len(a & c) < 0.5 * len(a)


def test_label_fractions_accept_per_example_ids_and_reject_conflicts():
    ids = ["p1", "p1", "p2", "p3", "p3", "p4"]
    strata = ["a", "a", "a", "b", "b", "b"]
    chosen = protocol.label_fraction_groups(ids, strata, 0.5, 0, salt="t")
    assert len(chosen) == 2 and len(chosen & {"p1", "p2"}) == 1
    with pytest.raises(ValueError, match="'p1' has two strata"):
        protocol.label_fraction_groups(["p1", "p1"], ["a", "b"], 0.5, 0, salt="t")
    with pytest.raises(ValueError, match="fraction must be in"):
        protocol.label_fraction_groups(ids, strata, 0.0, 0, salt="t")
    with pytest.raises(ValueError, match="fraction must be in"):
        protocol.label_fraction_groups(ids, strata, 1.5, 0, salt="t")
    with pytest.raises(ValueError, match="group_strata"):
        protocol.label_fraction_groups(ids, strata[:-1], 0.5, 0, salt="t")
    with pytest.raises(ValueError, match="seed"):
        protocol.label_fraction_groups(ids, strata, 0.5, "0", salt="t")


def test_parse_fractions():
    assert protocol.parse_fractions("1,10,100") == (1.0, 10.0, 100.0)
    assert protocol.parse_fractions(" 50, 0.1 ,12.5") == (0.1, 12.5, 50.0)
    assert protocol.parse_fractions("100") == (100.0,)


@pytest.mark.parametrize("text, bad", [
    ("0,10", "'0'"), ("10,101", "'101'"), ("-1", "'-1'"), ("1,ten", "'ten'"), ("1,,10", "''"),
    ("10,10", "'10'"), ("10,10.0", "'10.0'"), ("nan", "'nan'"), ("inf", "'inf'"), ("", "''"),
])
def test_parse_fractions_errors_name_flag_and_value(text, bad):
    with pytest.raises(ValueError, match="--label_fractions") as info:
        protocol.parse_fractions(text)
    assert bad in str(info.value)
