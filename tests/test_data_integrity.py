"""Issue 21: shared data dirs are safe (one good build from concurrent preparations) and decoders
stay bounded (decompression bombs, truncated TFDS shards)."""
from __future__ import annotations

import zlib
import shutil
import warnings
from pathlib import Path

import pytest
from PIL import Image

from benchmark.harness import data
from tfds_builders import _common, synthetic
from shared_helpers import fork, wait

NAME = "derm_pad_ufes20"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _synthetic(data_dir: Path) -> data.DataConfig:
    return data.DataConfig(data_dir=str(data_dir), manual_dir=None, resolution="64px",
                           synthetic_sizes={NAME: 20}, synthetic_image_size=32)


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The synthetic set and the build one preparation makes on its own."""
    cfg = _synthetic(tmp_path_factory.mktemp("alone") / "data")
    builder = data.build(NAME, "64px", cfg)
    return cfg, builder


def test_concurrent_generations_of_one_set_publish_one_complete_set(alone, tmp_path):
    """Three processes generating one fresh synthetic set at once: before, they shared one
    `.partial` folder and could stamp a set complete with part of its files; now each writes its
    own folder and one is renamed into place, whole."""
    cfg, _ = alone
    expected = _files(Path(cfg.data_dir) / "synthetic" / data.synthetic_key(NAME, cfg) / "manual")
    for attempt in range(2):
        root = tmp_path / f"manual{attempt}"
        pids = [fork(lambda: synthetic.generate(NAME, root, size=20, image_size=32))
                for _ in range(3)]
        assert [wait(pid) for pid in pids] == [0, 0, 0]
        assert _files(root) == expected
        assert sorted(p.name for p in root.iterdir()) == [NAME]


def test_concurrent_preparations_of_one_data_dir_make_one_good_build(alone, tmp_path):
    """Two processes preparing one fresh --data_dir (generation, TFDS build, source record) at
    once: one waits for the other's lock and reuses its build."""
    cfg, builder = alone
    shared = _synthetic(tmp_path / "data")
    pids = [fork(lambda: data.build(NAME, "64px", shared)) for _ in range(2)]
    assert [wait(pid) for pid in pids] == [0, 0]
    ours = data.build(NAME, "64px", shared)
    assert data.build_fingerprints({"x": ours}) == data.build_fingerprints({"x": builder})
    assert ours.info.splits["train"].num_examples == builder.info.splits["train"].num_examples
    assert len(list(ours.as_dataset(split="train"))) == ours.info.splits["train"].num_examples
    root = Path(shared.data_dir) / "synthetic"
    assert sorted(p.name for p in root.iterdir()) == [data.synthetic_key(NAME, shared)]
    key = data.synthetic_key(NAME, cfg)
    assert (_files(root / key / "manual")
            == _files(Path(cfg.data_dir) / "synthetic" / key / "manual"))


def _png(width: int, height: int, rows: int | None = None) -> bytes:
    """A grayscale PNG of width x height black pixels whose data stream holds the first `rows`
    rows (all by default): a few hundred bytes can claim any size."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (len(body).to_bytes(4, "big") + kind + body
                + zlib.crc32(kind + body).to_bytes(4, "big"))

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    data = zlib.compress(b"\0" * ((width + 1) * (height if rows is None else rows)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side, warning", [(20_000, "error"), (9_000, "error"),
                                           (9_000, "default")])
def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path, side, warning):
    """A small file that would decode to 400 (or 81) megapixels is refused before decoding, in one
    line naming it: above twice the limit by Pillow's DecompressionBombError, above the limit by
    its DecompressionBombWarning, an error (as `_common` sets it on import; pytest resets the
    filters per test), or by the size check where the warning is not an error. A real X-ray's
    3000 x 3000 px still decodes."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(side, side, rows=1))
    assert path.stat().st_size < 1000
    with warnings.catch_warnings(record=True):
        warnings.simplefilter(warning, Image.DecompressionBombWarning)
        with pytest.raises(ValueError) as info:
            _common.load_image(path, mode="L", size=64, where="train.csv, line 2")
    assert str(info.value) == (
        f"train.csv, line 2: image {path} would decode to more than "
        f"{_common.MAX_IMAGE_PIXELS} pixels (a decompression bomb, or not an image of this "
        "dataset); refusing to decode it")
    ok = tmp_path / "xray.png"
    ok.write_bytes(_png(3000, 3000))
    assert len(_common.load_image(ok, mode="L", size=64, where="x")) > 0


def test_a_truncated_shard_names_the_build_to_delete(alone, tmp_path, capsys):
    """A TFDS shard cut short (a full disk, a killed copy) is one line naming the build folder to
    delete, when the build is reused; no traceback."""
    cfg, builder = alone
    data_dir = tmp_path / "data"
    shutil.copytree(cfg.data_dir, data_dir)
    cfg = _synthetic(data_dir)
    build_dir = Path(str(data.build(NAME, "64px", cfg).data_dir))
    shard = sorted(build_dir.glob("*.tfrecord*"))[0]
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(ValueError) as info:
        data.build(NAME, "64px", cfg)
    assert str(info.value) == (
        f"data build {build_dir}: shard {shard.name} is truncated (its last record is cut short "
        f"at byte {shard.stat().st_size}); delete {build_dir} to rebuild it")
    records, offset = [], 0  # where each record of the shard starts
    data_bytes = shard.read_bytes()
    while offset < len(data_bytes):
        records.append(offset)
        offset += 16 + int.from_bytes(data_bytes[offset:offset + 8], "little")
    shard.write_bytes(data_bytes[:records[-1]])  # the last record dropped whole
    with pytest.raises(ValueError) as info:
        data.build(NAME, "64px", cfg)
    expected = builder.info.splits["train"].num_examples
    assert str(info.value) == (
        f"data build {build_dir}: its shards hold {expected - 1} examples, its "
        f"dataset_info.json says {expected}; delete {build_dir} to rebuild it")
    shutil.rmtree(build_dir)
    rebuilt = data.build(NAME, "64px", cfg)
    assert rebuilt.info.splits["train"].num_examples == builder.info.splits["train"].num_examples

