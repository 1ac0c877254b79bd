"""Shared helpers for the manual-download builders: manual-dir checks, CSV rows with line numbers, images.

Public API (kept small and stable; used by the CXR and dermatology builders):
  require_manual_dir(manual_dir, *, dataset, expected, obtain) -> pathlib.Path
  manual_dir_of(dl_manager, *, dataset, expected, obtain) -> pathlib.Path
  read_csv(path, *, headers) -> CsvTable
  read_text_lines(path) -> list[(line, text)]
  row_error(path, line, message) -> ValueError
  check_constant(records, *, key, fields, case) (rows of one case must agree on `fields`)
  index_files(root, *, suffixes) -> dict[str, pathlib.Path]
  load_image(path, *, mode, size, where) -> bytes  (every PIL mode of JPEG/PNG, see its docstring)
  resize_shorter_center_crop(image, size) -> PIL.Image.Image
  imap_ordered(fn, items, *, workers=8, chunk=256) -> Iterator  (threaded map, input order kept)
  ImageConfig, image_configs(*, original, encoding, group=None, grouped_original_note="")
  SourceRow  (base of the builders' parsed-row records: file, line, `where`)
"""
from __future__ import annotations

import codecs
import concurrent.futures
import csv
import dataclasses
import gzip
import io
import itertools
import os
import pathlib
import warnings
import zlib
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageCms

# The most pixels an image of these datasets may decode to (source X-rays reach ~3000 x 3000 px,
# smartphone lesion photos ~4000 x 3000); more is a decompression bomb or not an image of them.
MAX_IMAGE_PIXELS = 50_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


IMAGE_SIZES = (None, 224, 64)  # None = source resolution


@dataclasses.dataclass(eq=False)
class ImageConfig(tfds.core.BuilderConfig):
    """size: shorter side after resize + centre crop (None = source resolution); grouped: one
    example per group (patient, lesion) holding all of its images."""

    size: int | None = None
    grouped: bool = False


def image_configs(*, original: str, encoding: str, group: str | None = None,
                  grouped_original_note: str = "") -> list[ImageConfig]:
    """Configs `original`, `224px`, `64px` (one example per image), and with `group` (e.g. "patient")
    also `<group>s_original`, ... (one example per group). `original` describes the source images,
    `encoding` the stored resized ones; `grouped_original_note` is appended to `<group>s_original`."""
    configs = []
    for grouped in (False, True) if group else (False,):
        for size in IMAGE_SIZES:
            res = "original" if size is None else f"{size}px"
            configs.append(ImageConfig(
                name=f"{group}s_{res}" if grouped else res, size=size, grouped=grouped,
                description=(
                    (f"One example per {group} holding all of its images, " if grouped else "One example per image, ")
                    + (f"{original}." if size is None else f"shorter side resized to {size} px, centre-cropped, {encoding}.")
                    + (grouped_original_note if grouped and size is None else "")),
            ))
    return configs


@dataclasses.dataclass(frozen=True)
class SourceRow:
    """Where a parsed row comes from: `csv` (the source file) and its 1-based `line`."""

    csv: pathlib.Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.csv}, line {self.line}"


def require_manual_dir(manual_dir, *, dataset: str, expected: str, obtain: str) -> pathlib.Path:
    """Returns `manual_dir` as a Path, or raises FileNotFoundError describing the expected layout."""
    if manual_dir is None or not pathlib.Path(manual_dir).is_dir():
        raise FileNotFoundError(
            f"{dataset}: manual_dir {manual_dir!s} does not exist; expected it to contain {expected}. "
            f"Obtain the data from {obtain} and pass its folder as manual_dir."
        )
    return pathlib.Path(manual_dir)


def manual_dir_of(dl_manager, *, dataset: str, expected: str, obtain: str) -> pathlib.Path:
    """`dl_manager.manual_dir` checked by `require_manual_dir`; TFDS's own complaint (manual_dir not
    given, missing or empty) becomes the same FileNotFoundError naming the layout and the source."""
    try:
        manual_dir = dl_manager.manual_dir
    except AssertionError as e:
        raise FileNotFoundError(
            f"{dataset}: {str(e).splitlines()[0]} Expected it to contain {expected}. "
            f"Obtain the data from {obtain}."
        ) from None
    return require_manual_dir(manual_dir, dataset=dataset, expected=expected, obtain=obtain)


def row_error(path, line: int, message: str) -> ValueError:
    """A ValueError whose message names the CSV file and its 1-based line number."""
    return ValueError(f"{path}, line {line}: {message}")


@dataclasses.dataclass(frozen=True)
class CsvTable:
    """A parsed CSV: which accepted header matched, and the data rows with their line numbers."""

    path: pathlib.Path
    header: tuple[str, ...]
    header_index: int  # index into the `headers` argument of read_csv
    rows: tuple[tuple[int, tuple[str, ...]], ...]  # (line number of the row's end, fields)

    def records(self):
        """Yields (line, {column: value}) for every row (later duplicate column names win)."""
        for line, fields in self.rows:
            yield line, dict(zip(self.header, fields))


def _decode(path: pathlib.Path) -> str:
    """The text of `path`: UTF-8 (optional byte-order mark) or UTF-16 with a byte-order mark, gzip-
    compressed or not (some redistributions ship `Data_Entry_2017_v2020.csv.gz`, `train.csv.gz`).
    Raises ValueError naming file and line for any other encoding or a broken gzip stream."""
    data = path.read_bytes()
    if data.startswith(b"\x1f\x8b"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise row_error(path, 1, f"broken gzip file ({e}); expected a complete .gz or plain text") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
        if b"\0" in data:
            line = data[:data.index(b"\0")].count(b"\n") + 1
            raise row_error(path, line, "contains NUL bytes (UTF-16 without a byte-order mark?); "
                                        "save it as UTF-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise row_error(path, line, f"byte 0x{data[e.start]:02x} is not {encoding.split('-sig')[0].upper()} "
                                    "(latin-1 or another legacy encoding?); save the file as UTF-8") from None


def read_text_lines(path) -> list[tuple[int, str]]:
    """(1-based line, stripped text) of every non-blank line of a text file (encodings as read_csv);
    FileNotFoundError if missing, ValueError (file + line) if undecodable or without any entry."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    lines = [(n, t.strip()) for n, t in enumerate(_decode(path).splitlines(), start=1) if t.strip()]
    if not lines:
        raise row_error(path, 1, "empty file, expected one entry per line")
    return lines


def _header_problem(header: tuple[str, ...], accepted: list[tuple[str, ...]]) -> str:
    closest = min(accepted, key=lambda h: len(set(h) ^ set(header)))
    missing = [c for c in closest if c not in header]
    extra = [c for c in header if c not in closest]
    parts = ([f"missing column(s) {', '.join(map(repr, missing))}"] if missing else []) + (
        [f"unexpected column(s) {', '.join(map(repr, extra))}"] if extra else [])
    return "; ".join(parts) or "columns in another order"


def read_csv(path, *, headers: Sequence[Sequence[str]]) -> CsvTable:
    """Reads a CSV whose header must equal one of `headers`; every row must have as many fields.

    Accepts UTF-8 (with or without a byte-order mark) and UTF-16 with a byte-order mark, plain or
    gzip-compressed, LF or CRLF line ends, with or without a line end after the last row; blank lines
    are skipped. Raises FileNotFoundError if the file is missing and ValueError
    (file + line) on another encoding, a bad header, a malformed row or no data rows at all.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    reader = csv.reader(io.StringIO(_decode(path), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise row_error(path, 1, "empty file, expected a header line")
        header = tuple(h.strip() for h in header)
        accepted = [tuple(h) for h in headers]
        if header not in accepted:
            shown = " or ".join(repr(",".join(h)) for h in accepted)
            raise row_error(path, 1, f"unexpected header {','.join(header)!r} ({_header_problem(header, accepted)}); "
                                     f"expected {shown}")
        rows = []
        for fields in reader:
            if not fields or fields == [""]:
                continue
            if len(fields) != len(header):
                raise row_error(
                    path, reader.line_num, f"expected {len(header)} fields, found {len(fields)}"
                )
            rows.append((reader.line_num, tuple(fields)))
    except csv.Error as e:
        raise row_error(path, reader.line_num, f"malformed CSV ({e})") from None
    if not rows:
        raise row_error(path, 2, "no data rows after the header; expected at least one")
    return CsvTable(path=path, header=header, header_index=accepted.index(header), rows=tuple(rows))


def check_constant(records: Iterable, *, key: str, fields: Sequence[str], case: str) -> None:
    """Raises ValueError naming both rows if two records with the same `key` attribute (a `case`,
    e.g. "lesion") disagree on one of `fields`; blank string values count as unknown, not as a value."""
    first: dict = {}
    for rec in records:
        seen = first.setdefault(getattr(rec, key), {})
        for field in fields:
            value = getattr(rec, field)
            if value == "":
                continue
            other = seen.setdefault(field, rec)
            if getattr(other, field) != value:
                raise ValueError(
                    f"{case} {getattr(rec, key)} has {field} {getattr(other, field)!r} at {other.where} but "
                    f"{value!r} at {rec.where}; a {case}'s {field} must be the same in all its rows")


def index_files(root, *, suffixes: Sequence[str]) -> dict[str, pathlib.Path]:
    """Maps file name -> path for every file under `root` (recursively) ending in one of `suffixes`.

    Raises ValueError if one file name occurs in two folders.
    """
    suffixes = tuple(s.lower() for s in suffixes)
    found: dict[str, pathlib.Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.lower().endswith(suffixes) or name.startswith("._"):
                continue
            path = pathlib.Path(dirpath) / name
            if name in found:
                raise ValueError(f"image {name} found twice: {found[name]} and {path}; keep one copy")
            found[name] = path
    return found


def resize_shorter_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resizes so the shorter side is `size` (antialiased bilinear), then centre-crops size x size."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_8bit(image: Image.Image, where: str, path) -> Image.Image:
    """16-bit grayscale (PIL "I;16*" or "I" from a 16-bit PNG) as "L", rescaled by the bit depth
    (round(v * 255 / 65535)); a value outside 0..65535 is an error, never clipped."""
    values = np.asarray(image, dtype=np.int64)
    if values.min() < 0 or values.max() > 65535:
        raise ValueError(f"{where}: image {path} has {image.mode} values {values.min()}..{values.max()}, "
                         "outside the 16-bit range 0..65535")
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK via its embedded ICC profile to sRGB, or without one R = (255 - C)(255 - K) / 255 etc."""
    profile = image.info.get("icc_profile")
    if profile:
        try:
            return ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                             ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: fall back to the profile-free conversion
    cmyk = np.asarray(image, dtype=np.int64)
    rgb = ((255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), mode="RGB")


def convert_mode(image: Image.Image, mode: str, *, where: str = "", path="") -> Image.Image:
    """`image` in PIL `mode` ("L" or "RGB"): 16-bit grayscale rescaled by bit depth; palette ("P",
    with or without transparency) through its palette; alpha ("RGBA", "LA", "PA") dropped, keeping
    the stored colours (no compositing); CMYK through its ICC profile (or the standard formula);
    1-bit as 0/255; colour to gray by ITU-R 601-2 luma, gray to colour by repeating the channel."""
    if image.mode == mode:
        return image
    if image.mode in _SIXTEEN_BIT:
        image = _to_8bit(image, where, path)
    elif image.mode == "CMYK":
        image = _cmyk_to_rgb(image)
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        image = image.convert("RGB")
    elif image.mode == "LA":
        image = image.getchannel("L")
    elif image.mode not in ("L", "RGB", "1"):
        raise ValueError(f"{where}: image {path} has PIL mode {image.mode}, which this builder cannot read")
    return image if image.mode == mode else image.convert(mode)


def load_image(path, *, mode: str, size: int | None, where: str) -> bytes:
    """Decodes an image file, converts it to PIL `mode` ("L" or "RGB", see `convert_mode`) and returns
    encoded bytes.

    size=None keeps the source resolution and returns the file's own bytes when its mode already matches
    (otherwise it is re-encoded losslessly as PNG); an int resizes the shorter side and centre-crops
    (PNG for "L", JPEG quality 95 for "RGB"). `where` (e.g. "train.csv, line 12") prefixes error messages.
    Raises FileNotFoundError for a missing file and ValueError for an unreadable one or one of more
    than MAX_IMAGE_PIXELS pixels (before decoding it).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {path} not found")
    bomb = ValueError(f"{where}: image {path} would decode to more than {MAX_IMAGE_PIXELS} pixels "
                      "(a decompression bomb, or not an image of this dataset); refusing to decode it")
    try:
        data = path.read_bytes()
        image = Image.open(io.BytesIO(data))  # reads the header only
        if image.width * image.height > MAX_IMAGE_PIXELS:  # also where the warning is not an error
            raise bomb
        if size is not None and image.format == "JPEG":
            image.draft(mode, (size, size))
        image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise bomb from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for corrupt/truncated files
        if e is bomb:
            raise
        raise ValueError(f"{where}: image {path} is unreadable ({e})") from None
    if image.format not in ("JPEG", "PNG"):
        raise ValueError(f"{where}: image {path} is {image.format}, expected JPEG or PNG")
    if size is None and image.mode == mode:
        return data
    image = convert_mode(image, mode, where=where, path=path)
    fmt = "PNG"
    if size is not None:
        image = resize_shorter_center_crop(image, size)
        fmt = "PNG" if mode == "L" else "JPEG"
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def imap_ordered(fn: Callable, items: Iterable, *, workers: int = 8, chunk: int = 256) -> Iterator:
    """Yields fn(item) for every item in input order, computing up to `chunk` items ahead on threads.

    Exceptions raised by `fn` propagate to the caller unchanged (image decoding releases the GIL).
    """
    items = iter(items)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        while True:
            batch = [pool.submit(fn, item) for item in itertools.islice(items, chunk)]
            if not batch:
                return
            for future in batch:
                yield future.result()
