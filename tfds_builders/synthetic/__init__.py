"""Synthetic generators writing the real on-disk formats of the suite's datasets.

Each writer takes a root folder, a size and a seed and lays the files out exactly as the real
download does, so the real builders read them unchanged. `generate` addresses them by builder name
and caches: a finished folder holds a `.synthetic.json` stamp of its arguments (and of
`GENERATOR_VERSION`), written last, and is reused only if the stamp matches; otherwise it is
regenerated. A set is published whole, by one rename, so concurrent runs never see half of one.
"""
from __future__ import annotations

import errno
import json
import pathlib
import shutil
import tempfile

from tfds_builders.synthetic import cxr, derm

# builder name -> (writer, name of its size argument)
WRITERS = {
    "cxr_chexpert": (cxr.write_chexpert, "num_patients"),
    "cxr_nih14": (cxr.write_nih14, "num_patients"),
    "derm_ham10000": (derm.write_ham10000, "num_lesions"),
    "derm_pad_ufes20": (derm.write_pad_ufes20, "num_patients"),
}
_STAMP = ".synthetic.json"
# Bump whenever a writer's output for the same arguments changes, so older sets and builds are not reused.
GENERATOR_VERSION = 1


def stamp(name: str, *, size: int, seed: int, image_size: int) -> dict:
    """What the synthetic set of builder `name` is made from (recorded with the set and its builds)."""
    if name not in WRITERS:
        raise ValueError(f"no synthetic generator for {name!r}; expected one of {sorted(WRITERS)}")
    return {"name": name, WRITERS[name][1]: size, "seed": seed, "image_size": image_size,
            "generator_version": GENERATOR_VERSION}


def _stamped(target: pathlib.Path, wanted: dict) -> bool:
    try:
        return json.loads((target / _STAMP).read_text()) == wanted
    except (OSError, ValueError):
        return False


def generate(name: str, root: str | pathlib.Path, *, size: int, seed: int = 0,
             image_size: int = 128) -> pathlib.Path:
    """Writes (once) the synthetic set for builder `name` under `root/name` and returns that
    manual_dir. Safe to run in several processes at once: each writes its own folder beside the
    target, stamps it last, and publishes it by one rename; a process that finds the set already
    published keeps it and discards its own. A set without the matching stamp is replaced."""
    wanted = stamp(name, size=size, seed=seed, image_size=image_size)
    writer, size_arg = WRITERS[name]
    target = pathlib.Path(root) / name
    if _stamped(target, wanted):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target.parent))
    try:
        writer(partial, **{size_arg: size}, seed=seed, image_size=image_size)
        (partial / _STAMP).write_text(json.dumps(wanted, sort_keys=True))
        if _stamped(target, wanted):
            return target
        if target.exists():  # another generator version or size, or an unstamped set
            stale = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.stale-", dir=target.parent))
            target.rename(stale / name)
            shutil.rmtree(stale)
        try:
            partial.rename(target)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not _stamped(target, wanted):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
