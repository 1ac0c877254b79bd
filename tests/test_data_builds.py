"""Builds know what they were built from (issue 10 item 2) and --data_dir problems are one line (item 7)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile

import pytest

from benchmark.harness import data
from tfds_builders.synthetic import derm

NAME = "derm_pad_ufes20"


def _synthetic(tmp_path, size, **changes):
    return data.DataConfig(data_dir=str(tmp_path / "data"), manual_dir=None, resolution="64px",
                           synthetic_sizes={NAME: size}, synthetic_image_size=32, **changes)


def _count(builder):
    return builder.info.splits["train"].num_examples


def test_presets_with_other_synthetic_sizes_never_share_a_build(tmp_path):
    small, large = _synthetic(tmp_path, 3), _synthetic(tmp_path, 6)
    a = data.build(NAME, "64px", small)
    b = data.build(NAME, "64px", large)
    assert _count(a) < _count(b)
    assert _count(data.build(NAME, "64px", small)) == _count(a)  # reused, not regenerated
    fa, fb = data.build_fingerprints({"x": a}), data.build_fingerprints({"x": b})
    assert list(fa) == [f"{NAME}/64px/1.0.0"] and re.fullmatch(r"[0-9a-f]{64}", fa[f"{NAME}/64px/1.0.0"])
    assert fa != fb
    seeded = data.build(NAME, "64px", dataclasses.replace(small, synthetic_seed=1))
    assert data.build_fingerprints({"x": seeded}) != fa


def test_synthetic_build_with_a_stale_record_is_rebuilt_with_one_line(tmp_path, capsys):
    cfg = _synthetic(tmp_path, 3)
    builder = data.build(NAME, "64px", cfg)
    record = str(builder.data_dir) + data.SOURCE_RECORD_SUFFIX
    stale = json.loads(open(record).read())
    stale["source"]["generator"]["num_patients"] = 99
    with open(record, "w") as f:
        json.dump(stale, f)
    capsys.readouterr()
    data.build(NAME, "64px", cfg)
    out = capsys.readouterr().out
    assert (f"rebuilding {builder.data_dir}: it was built from synthetic generator_version=1, image_size=32, "
            f"name={NAME}, num_patients=99, seed=0, not synthetic generator_version=1, image_size=32, "
            f"name={NAME}, num_patients=3, seed=0 (the synthetic parameters differ)") in out
    assert json.loads(open(record).read())["source"]["generator"]["num_patients"] == 3


@pytest.fixture
def real(tmp_path):
    manual = tmp_path / "manual"
    derm.write_pad_ufes20(manual / NAME, num_patients=3, seed=0, image_size=32)
    cfg = data.DataConfig(data_dir=str(tmp_path / "data"), manual_dir=str(manual))
    builder = data.build(NAME, "64px", cfg)
    return cfg, builder, manual / NAME


def _refusal(cfg, build_dir, manual):
    with pytest.raises(ValueError) as info:
        data.build(NAME, "64px", cfg)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"data build {build_dir} ")
    assert message.endswith(f"; pass another --data_dir, or delete {build_dir} to rebuild it from {manual}")
    return message


def test_real_build_is_reused_while_its_source_is_unchanged(real):
    cfg, builder, _ = real
    again = data.build(NAME, "64px", cfg)
    assert data.build_fingerprints({"a": again}) == data.build_fingerprints({"a": builder})


def test_real_build_is_refused_after_its_source_files_changed(real):
    cfg, builder, source = real
    old = data.source_fingerprint(source)
    with open(source / "metadata.csv", "a") as f:
        f.write("\n")
    new = data.source_fingerprint(source)
    message = _refusal(cfg, builder.data_dir, source)
    assert (f"was built from {source} ({old['files']} files, {old['bytes']} bytes, fingerprint "
            f"{old['sha256'][:12]}), not {source} ({new['files']} files, {new['bytes']} bytes, fingerprint "
            f"{new['sha256'][:12]}) (the source files' names, sizes or modification times changed)") in message


def test_real_build_is_refused_for_another_manual_dir(real, tmp_path):
    cfg, builder, source = real
    other = tmp_path / "other"
    shutil.copytree(source, other / NAME)
    message = _refusal(dataclasses.replace(cfg, manual_dir=str(other)), builder.data_dir, other / NAME)
    assert message.endswith(f"(another source folder); pass another --data_dir, or delete {builder.data_dir} "
                            f"to rebuild it from {other / NAME}")


def test_real_build_without_a_record_is_refused(real):
    cfg, builder, source = real
    os.remove(str(builder.data_dir) + data.SOURCE_RECORD_SUFFIX)
    message = _refusal(cfg, builder.data_dir, source)
    assert "has no record of what it was built from (made by an older version or another tool)" in message


def test_source_fingerprint_sees_names_sizes_and_times_only(tmp_path):
    (tmp_path / "a").write_bytes(b"12")
    first = data.source_fingerprint(tmp_path)
    assert (first["files"], first["bytes"]) == (1, 2)
    (tmp_path / "a").write_bytes(b"34")
    os.utime(tmp_path / "a", ns=(1, 1))
    second = data.source_fingerprint(tmp_path)
    os.utime(tmp_path / "a", ns=(2, 2))
    assert data.source_fingerprint(tmp_path)["sha256"] != second["sha256"] != first["sha256"]


def test_data_dir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    cfg = dataclasses.replace(_synthetic(tmp_path, 3), data_dir=str(path))
    with pytest.raises(ValueError, match=rf"^--data_dir={re.escape(str(path))} is a file; expected a folder "
                                         r"for the dataset builds$"):
        data.build(NAME, "64px", cfg)


def _sys_is_read_only() -> bool:
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            return False
    except OSError:
        return os.path.isdir("/sys")


@pytest.mark.skipif(not _sys_is_read_only(), reason="needs a read-only /sys")
@pytest.mark.parametrize("data_dir", ["/sys", "/sys/medssl_data"])
def test_read_only_data_dir_is_one_line(tmp_path, data_dir):
    cfg = dataclasses.replace(_synthetic(tmp_path, 3), data_dir=data_dir)
    with pytest.raises(ValueError, match=rf"^--data_dir={data_dir} is not a writable folder \(.+\); "
                                         r"pass a folder you can write to$"):
        data.build(NAME, "64px", cfg)


def test_permission_error_while_building_is_one_line(real, monkeypatch):
    cfg, builder, _ = real
    shutil.rmtree(builder.data_dir)
    import tensorflow_datasets as tfds

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", os.path.join(cfg.data_dir, NAME, "64px"))

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    with pytest.raises(ValueError, match=rf"^cannot write the {NAME} build under --data_dir={re.escape(cfg.data_dir)}: "
                                         rf"Permission denied \({re.escape(cfg.data_dir)}/{NAME}/64px\)$"):
        data.build(NAME, "64px", cfg)


def test_real_build_with_an_unreadable_record_is_refused(real):
    cfg, builder, source = real
    record = str(builder.data_dir) + data.SOURCE_RECORD_SUFFIX
    with open(record, "w") as f:
        f.write("{not json")
    message = _refusal(cfg, builder.data_dir, source)
    assert f"has an unreadable source record {record};" in message
