"""Synthetic generators writing the real on-disk formats of the suite's datasets.

Each writer takes a root folder, a size and a seed and lays the files out exactly as the real
download does, so the real builders read them unchanged. `generate` addresses them by builder name
and caches: a finished folder holds a `.synthetic.json` stamp of its arguments (and of
`GENERATOR_VERSION`) and is reused only if the stamp matches; otherwise it is regenerated.
"""
from __future__ import annotations

import json
import pathlib
import shutil

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


def generate(name: str, root: str | pathlib.Path, *, size: int, seed: int = 0,
             image_size: int = 128) -> pathlib.Path:
    """Writes (once) the synthetic set for builder `name` under `root/name` and returns that manual_dir."""
    wanted = stamp(name, size=size, seed=seed, image_size=image_size)
    writer, size_arg = WRITERS[name]
    target = pathlib.Path(root) / name
    stamp_file = target / _STAMP
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == wanted:
        return target
    if target.exists():
        shutil.rmtree(target)
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    writer(partial, **{size_arg: size}, seed=seed, image_size=image_size)
    (partial / _STAMP).write_text(json.dumps(wanted, sort_keys=True))
    partial.rename(target)
    return target
