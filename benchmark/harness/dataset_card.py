"""Dataset cards of a manual download, read with the builders' own CSV readers: what a researcher
checks before a long build.

Per source (a builder's metadata file): images, patients / studies / lesions and images per case,
views, label counts and prevalence (cxr: the task's five pathologies, CheXpert as positive /
negative / uncertain / blank; derm: every diagnosis and the harmonised class it joins), age
(min / median / max, missing) and sex; and, when the images are there, how many rows name a
missing or (decoding with the builder's loader) unreadable image, the first few named. A source
is found as `<manual_dir>/<builder>/` (the layout `benchmark.harness.data` builds from) or given
as a lone metadata file (e.g. a full `chexpert_train.csv.gz` without images). A malformed file is
the builder's one-line error for that source; the other sources still get their cards. A folder
task (`--task=folder:<dir>`) has a card of its own (`folder_card`).
"""
from __future__ import annotations

import collections
import dataclasses
import pathlib
import statistics
from typing import Callable

import numpy as np

from benchmark.harness import tasks
from tfds_builders import _common
from tfds_builders.cxr_chexpert import cxr_chexpert_dataset_builder as chexpert
from tfds_builders.cxr_nih14 import cxr_nih14_dataset_builder as nih
from tfds_builders.derm_ham10000 import derm_ham10000_dataset_builder as ham
from tfds_builders.derm_pad_ufes20 import derm_pad_ufes20_dataset_builder as pad
from tfds_builders.folder_task import spec as folder_spec

BUILDERS = ("cxr_chexpert", "cxr_nih14", "derm_ham10000", "derm_pad_ufes20")
NAMED = 5  # missing / unreadable images named per source; the rest are counted
_NIH_TASK_FINDINGS = dict(zip(tasks.CXR_CLASSES, ("Atelectasis", "Cardiomegaly", "Consolidation",
                                                  "Edema", "Effusion")))
_HAM_CLASS = {dx: tasks.DERM_CLASSES[i] for dx, i in tasks.HAM_TO_DERM.items()}
_PAD_CLASS = {dx: tasks.DERM_CLASSES[i] for dx, i in tasks.PAD_TO_DERM.items()}


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """Rows whose image file is absent or does not decode (each "<csv>, line N: <path>")."""

    checked: int
    missing: tuple[str, ...]
    unreadable: tuple[str, ...]
    decoded: bool  # False: only whether each file exists was checked


@dataclasses.dataclass(frozen=True)
class Facts:
    """What a card shows of one metadata file."""

    builder: str
    csv: pathlib.Path
    images: int
    cases: dict[str, collections.Counter]  # "patients" -> images per patient id ...
    views: dict[str, collections.Counter]  # "Frontal/Lateral" -> value counts ...
    labels: dict[str, collections.Counter]  # class -> state counts (cxr) / {"images": n} (derm)
    label_note: str
    ages: list[float]  # known ages
    ages_missing: int
    sex: collections.Counter
    splits: dict[str, int]  # split list -> images (NIH's lists), when present
    images_check: ImageCheck | None  # None: no images to check (a lone metadata file)


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One metadata file to card, with the folder its images sit in (None: metadata only)."""

    builder: str
    csv: pathlib.Path
    folder: pathlib.Path | None


def find_sources(manual_dir: str | None, metadata_files: dict[str, str]) -> list[SourceFile]:
    """The builders' metadata files in `manual_dir/<builder>/` (CheXpert: train.csv, valid.csv and
    test_labels.csv when present) and the lone `metadata_files` ({builder: path}), builder order.
    FileNotFoundError (one line) when a builder folder has no metadata file, or `manual_dir`
    holds no builder folder and no file is given."""
    found = []
    for name in BUILDERS:
        if name in metadata_files:
            found.append(SourceFile(name, pathlib.Path(metadata_files[name]), None))
        folder = pathlib.Path(manual_dir) / name if manual_dir else None
        if folder is None or not folder.is_dir():
            continue
        if name == "cxr_chexpert":
            top = chexpert.find_dataset_dir(folder)
            found += [SourceFile(name, top / csv, top) for _, csv, _ in chexpert.SPLIT_FILES
                      if (top / csv).is_file()]
        elif name == "cxr_nih14":
            found.append(SourceFile(name, nih.find_csv(folder), folder))
        elif name == "derm_ham10000":
            found.append(SourceFile(name, ham.find_metadata(folder), folder))
        else:
            if not (folder / pad.METADATA_FILE).is_file():
                raise FileNotFoundError(f"derm_pad_ufes20: no {pad.METADATA_FILE} in {folder}")
            found.append(SourceFile(name, folder / pad.METADATA_FILE, folder))
    if not found:
        raise FileNotFoundError(
            f"--manual_dir={manual_dir}: holds none of the builder folders "
            f"{', '.join(b + '/' for b in BUILDERS)}; expected one sub-folder per builder")
    return found


def check_images(rows: list[tuple[str, pathlib.Path | None]], mode: str, *,
                 decode: bool) -> ImageCheck:
    """Which of (where, file) name no file (None or absent) or, with `decode`, a file the builders'
    loader cannot read in PIL `mode`."""
    missing, unreadable = [], []
    for where, file in rows:
        if file is None or not file.is_file():
            missing.append(f"{where}: {file}")
        elif decode:
            try:
                _common.load_image(file, mode=mode, size=None, where=where)
            except (OSError, ValueError) as e:
                unreadable.append(str(e))
    return ImageCheck(len(rows), tuple(missing), tuple(unreadable), decode)


def _counts(values) -> collections.Counter:
    return collections.Counter(values)


def _chexpert(src: SourceFile, decode: bool | None) -> Facts:
    name = src.csv.name
    header, folder = chexpert.HEADER, "train"
    for _, csv, hdr in chexpert.SPLIT_FILES:
        if csv == name:
            header = hdr
    if name.startswith("valid"):
        folder = "valid"
    elif name.startswith("test"):
        folder = "test"
    records = chexpert.read_split_csv(src.csv, header=header, folder=folder, dataset_dir=src.folder)
    labels = {c: _counts(r.labels[chexpert.snake_case(c)] for r in records)
              for c in chexpert.COMPETITION_TASKS}
    check = None if decode is None else check_images(
        [(r.where, r.file) for r in records], "L", decode=decode)
    has_meta = header != chexpert.TEST_HEADER
    return Facts(
        "cxr_chexpert", src.csv, len(records),
        {"patients": _counts(r.patient_id for r in records),
         "studies": _counts(r.study_id for r in records)},
        {"Frontal/Lateral": _counts(r.view for r in records),
         "AP/PA": _counts(r.ap_pa or "blank" for r in records)},
        labels, "states of the task's five pathologies (blank = not mentioned)",
        [r.age for r in records] if has_meta else [], 0 if has_meta else len(records),
        _counts(r.sex for r in records) if has_meta else collections.Counter(),
        {}, check)


def _nih(src: SourceFile, decode: bool | None) -> Facts:
    entries = nih.read_entries(src.csv)
    records = list(entries.values())
    labels = {c: _counts("positive" if r.labels[nih.label_key(f)] else "negative" for r in records)
              for c, f in _NIH_TASK_FINDINGS.items()}
    labels["No Finding"] = _counts("positive" if r.labels["no_finding"] else "negative"
                                   for r in records)
    splits, check = {}, None
    if src.folder is not None and decode is not None:
        if all((src.folder / f).is_file() for _, f in nih.SPLIT_FILES):
            splits = {f: len(items) for (_, f), items in
                      zip(nih.SPLIT_FILES, nih.read_split_lists(src.folder, entries).values())}
        files = {}
        for d in (p for p in sorted(src.folder.iterdir())
                  if p.is_dir() and p.name.startswith("images")):
            files.update(_common.index_files(d, suffixes=(".png",)))
        check = check_images([(r.where, files.get(r.image_index)) for r in records], "L",
                             decode=decode)
    return Facts(
        "cxr_nih14", src.csv, len(records), {"patients": _counts(r.patient_id for r in records)},
        {"View Position": _counts(r.view for r in records)}, labels,
        "the task's five pathologies (NIH Effusion as Pleural Effusion) and No Finding",
        [r.age for r in records], 0, _counts(r.sex for r in records), splits, check)


def _derm_labels(diagnoses, classes: dict[str, str]) -> dict[str, collections.Counter]:
    counts = _counts(diagnoses)
    return {f"{dx} -> {classes.get(dx, 'dropped')}": collections.Counter(images=n)
            for dx, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def _ham(src: SourceFile, decode: bool | None) -> Facts:
    records = ham.parse_metadata(src.csv)
    check = None
    if src.folder is not None and decode is not None:
        folders = [src.folder / f for f in ham.IMAGE_FOLDERS if (src.folder / f).is_dir()]
        files = {}
        for f in folders:
            files.update(_common.index_files(f, suffixes=(".jpg",)))
        check = check_images([(r.where, files.get(f"{r.image_id}.jpg")) for r in records],
                             "RGB", decode=decode)
    return Facts(
        "derm_ham10000", src.csv, len(records), {"lesions": _counts(r.lesion_id for r in records)},
        {"dx_type": _counts(r.dx_type for r in records),
         "dataset (site)": _counts(r.site or "blank" for r in records)},
        _derm_labels((r.diagnosis for r in records), _HAM_CLASS),
        "dx -> the task's harmonised class (df, vasc: dropped)",
        [r.age for r in records if r.age >= 0], sum(r.age < 0 for r in records),
        _counts(r.sex for r in records), {}, check)


def _pad(src: SourceFile, decode: bool | None) -> Facts:
    records = pad.parse_metadata(src.csv)
    check = None
    if src.folder is not None and decode is not None:
        files = _common.index_files(src.folder, suffixes=(".png",))
        check = check_images([(r.where, files.get(r.img_id)) for r in records], "RGB",
                             decode=decode)
    return Facts(
        "derm_pad_ufes20", src.csv, len(records),
        {"patients": _counts(r.patient_id for r in records),
         "lesions": _counts((r.patient_id, r.lesion_id) for r in records)},
        {"region": _counts(r.region for r in records)},
        _derm_labels((r.diagnosis for r in records), _PAD_CLASS),
        "diagnostic -> the task's harmonised class", [], 0,
        _counts(r.gender for r in records), {}, check)


READERS: dict[str, Callable[[SourceFile, bool | None], Facts]] = {
    "cxr_chexpert": _chexpert, "cxr_nih14": _nih, "derm_ham10000": _ham,
    "derm_pad_ufes20": _pad}


def read_facts(src: SourceFile, *, decode: bool) -> Facts:
    """The card's facts of `src`; images (when `src.folder` has them) checked for presence, and
    decoded too with `decode`. Raises the builder reader's one-line ValueError/FileNotFoundError."""
    return READERS[src.builder](src, None if src.folder is None else decode)


def _share(n: int, total: int) -> str:
    return f"{n:,} ({100 * n / total:.1f}%)" if total else f"{n:,}"


def _spread(values) -> str:
    values = sorted(values)
    return f"min {values[0]:g} / median {statistics.median(values):g} / max {values[-1]:g}"


def _top(counter: collections.Counter, total: int, limit: int = 8) -> str:
    items = counter.most_common()
    shown = ", ".join(f"{k} {_share(n, total)}" for k, n in items[:limit])
    return shown + (f", {len(items) - limit} more values" if len(items) > limit else "")


def _named(kind: str, items: tuple[str, ...]) -> list[str]:
    lines = [f"    {kind}: {x}" for x in items[:NAMED]]
    if len(items) > NAMED:
        lines.append(f"    ... and {len(items) - NAMED:,} more {kind}")
    return lines


def render(facts: Facts) -> list[str]:
    """The card's lines (the first is its title)."""
    n = facts.images
    out = [f"{facts.builder}: {facts.csv}", f"  images (rows)   {n:,}"]
    for kind, per in facts.cases.items():
        out.append(f"  {kind:<15} {len(per):,}  (images per case: {_spread(per.values())})"
                   if per else f"  {kind:<15} 0")
    for split, count in facts.splits.items():
        out.append(f"  split list      {split}: {count:,} images")
    for field, counts in facts.views.items():
        out.append(f"  {field[:15]:<15} {_top(counts, n)}")
    out.append(f"  labels          {facts.label_note}")
    for name, states in facts.labels.items():
        if set(states) == {"images"}:
            out.append(f"    {name:<28} {_share(states['images'], n)}")
        else:
            order = [s for s in chexpert.LABEL_STATES if s in states] + sorted(
                set(states) - set(chexpert.LABEL_STATES))
            out.append(f"    {name:<28} " + ", ".join(f"{s} {_share(states[s], n)}" for s in order))
    if facts.ages:
        out.append(f"  age             {_spread(facts.ages)}; missing {facts.ages_missing:,}")
    else:
        out.append(f"  age             not in this file ({facts.ages_missing:,} rows without)"
                   if facts.ages_missing else "  age             not read by the builder")
    out.append(f"  sex             {_top(facts.sex, n)}" if facts.sex
               else "  sex             not in this file")
    check = facts.images_check
    if check is None:
        out.append("  image files     not checked (metadata file only)")
    else:
        how = "present and decode" if check.decoded else "present (not decoded: --metadata_only)"
        ok = check.checked - len(check.missing) - len(check.unreadable)
        out.append(f"  image files     {ok:,} of {check.checked:,} {how}; missing "
                   f"{len(check.missing):,}" + (f", unreadable {len(check.unreadable):,}"
                                                if check.decoded else ""))
        out += _named("missing", check.missing) + _named("unreadable", check.unreadable)
    return out


def folder_card(folder: folder_spec.Folder) -> list[str]:
    """The dataset card of a checked folder task: its definition, per split the images, groups,
    bags and label counts, the sites, the images' modes and sizes, and the fingerprints."""
    from PIL import Image

    task = folder.task
    if task.kind == "multilabel":
        labels = f"multilabel, label columns {', '.join(task.classes)}"
    else:
        labels = f"multiclass, class column {task.class_column}: {', '.join(task.classes)}"
    shift = (f"shift column {task.shift.column}: in-distribution {', '.join(task.shift.in_distribution)}, "
             f"shifted {', '.join(task.shift.shifted)}" if task.shift else "no shift (in-distribution only)")
    splits = (f"split column {task.split_column}" if task.split_column else
              "no split column (train/validation/test drawn group-disjoint by the harness)")
    lines = [f"folder task {task.name}{' (SYNTHETIC)' if task.synthetic else ''} at {folder.root}",
             f"  {labels}; primary metric {task.primary_metric}",
             f"  group column {task.group_column}; bag column {task.bag_column or '(none: bags are groups)'}",
             f"  {shift}; {splits}",
             f"  metadata kept: {', '.join(folder.metadata_columns) or '(none)'}",
             "  split        images  groups    bags  " + "  ".join(
                 f"{c} ({'1/0/-1/blank' if task.kind == 'multilabel' else 'images'})" for c in task.classes)]
    for split in folder.splits:
        rows = folder.split_rows(split)
        counts = []
        for k in range(len(task.classes)):
            values = [r.label[k] for r in rows]
            if task.kind == "multilabel":
                counts.append("/".join(str(sum(v == s for v in values)) for s in (1.0, 0.0, -1.0))
                              + f"/{sum(np.isnan(v) for v in values)}")
            else:
                counts.append(str(int(sum(values))))
        lines.append(f"  {split:<12} {len(rows):>6}  {len({r.group_id for r in rows}):>6}  "
                     f"{len({r.bag_id for r in rows}):>6}  " + "  ".join(counts))
    if task.shift:
        sites = {}
        for r in folder.rows:
            sites[r.site] = sites.get(r.site, 0) + 1
        lines.append("  images per site: " + ", ".join(f"{s} {n}" for s, n in sorted(sites.items())))
    kinds = {}
    for r in folder.rows:
        with Image.open(r.path) as image:
            key = f"{image.format} {image.mode} {image.size[0]}x{image.size[1]}"
        kinds[key] = kinds.get(key, 0) + 1
    lines.append("  images (format mode WxH): " + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())))
    prints = folder_spec.fingerprints(folder)
    lines.append("  sha256: " + ", ".join(f"{k} {v[:12]}" for k, v in prints.items()))
    return lines
