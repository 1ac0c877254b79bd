"""Image rates of a builder's source: read + decode of the source files with the builders' loader,
`download_and_prepare` of the 64px config, and reading the built set (decoded), in images/s; for a
real manual folder and for a synthetic real-format set of the same builder side by side."""
from __future__ import annotations

import dataclasses
import pathlib
import statistics
import time

import tensorflow_datasets as tfds
from PIL import Image

import tfds_builders  # noqa: F401  (registers the builders)
from tfds_builders import _common, synthetic

_SUFFIX = {"cxr_chexpert": ".jpg", "cxr_nih14": ".png", "derm_ham10000": ".jpg",
           "derm_pad_ufes20": ".png"}
_MODE = {"cxr_chexpert": "L", "cxr_nih14": "L", "derm_ham10000": "RGB", "derm_pad_ufes20": "RGB"}


@dataclasses.dataclass(frozen=True)
class Rates:
    """Images/s of one source (and what was timed)."""

    builder: str
    kind: str  # "real" or "synthetic"
    images: int  # source image files
    size: str  # median width x height of the source images
    decode: float  # source read + decode, images/s
    build: float  # download_and_prepare of the 64px config, images/s
    read_built: float  # as_dataset iteration of every split, decoded, images/s
    built: int  # examples in the build


def source_files(builder: str, folder: pathlib.Path) -> list[pathlib.Path]:
    """The image files (the builder's suffix) under `folder`, sorted."""
    return sorted(_common.index_files(folder, suffixes=(_SUFFIX[builder],)).values())


def measure(builder: str, folder: pathlib.Path, data_dir: pathlib.Path, kind: str) -> Rates:
    """Times `builder` on the manual folder `folder`, building into `data_dir` (which must not
    hold a build of it yet, or the build time is ~0)."""
    files = source_files(builder, folder)
    start = time.perf_counter()
    for f in files:
        _common.load_image(f, mode=_MODE[builder], size=None, where=str(f))
    decode_s = time.perf_counter() - start
    sizes = [Image.open(f).size for f in files[:200]]
    size = (f"{statistics.median(w for w, _ in sizes):g}x{statistics.median(h for _, h in sizes):g}"
            if sizes else "n/a")
    tfds_builder = tfds.builder(builder, config="64px", data_dir=str(data_dir))
    start = time.perf_counter()
    tfds_builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(folder)))
    build_s = time.perf_counter() - start
    split = "+".join(tfds_builder.info.splits)
    start = time.perf_counter()
    built = sum(1 for _ in tfds.as_numpy(tfds_builder.as_dataset(split=split)))
    read_s = time.perf_counter() - start
    return Rates(builder, kind, len(files), size, len(files) / decode_s, len(files) / build_s,
                 built / read_s, built)


def measure_synthetic(builder: str, work_dir: pathlib.Path, *, size: int,
                      image_size: int) -> Rates:
    """`measure` on a synthetic set of `builder` generated under `work_dir` (`size` cases)."""
    manual = synthetic.generate(builder, str(work_dir / "manual"), size=size, seed=0,
                                image_size=image_size)
    return measure(builder, pathlib.Path(manual), work_dir / "tfds", "synthetic")


def render(rates: list[Rates]) -> list[str]:
    """A table of `rates`."""
    out = [f"  {'source':<30} {'images':>7} {'px (median)':>11}  {'read+decode':>11}  "
           f"{'build 64px':>10}  {'read built':>10}   (images/s)"]
    for r in rates:
        out.append(f"  {r.builder + ' ' + r.kind:<30} {r.images:>7,} {r.size:>11}  "
                   f"{r.decode:>11,.0f}  {r.build:>10,.0f}  {r.read_built:>10,.0f}")
    return out
