"""A synthetic folder task (`tfds_builders.folder_task`): a multi-site set with several images
per patient, in the folder format (task.json, metadata.csv, images below the folder).

    python -m tfds_builders.synthetic.folder /tmp/my_cxr [--patients=60] [--kind=multiclass]

Patients of site A are in-distribution; sites B and C (shifted) image the same findings with
another brightness, contrast, noise, image size and file format. Each patient has one or two
studies of one or two images (`study_id` is the bag column). Multi-label findings: `opacity` (a
large soft blob), `nodule` (a small bright dot), `effusion` (a bright band at the bottom), with
some labels uncertain (-1) or unknown (blank); multi-class: the `finding` column names one of them.
Columns task.json does not name (age, sex, licence) are kept as metadata. Files are 8-bit gray PNG
(site A), RGB JPEG (site B) and 16-bit gray PNG (site C), so the builder's mode conversion is used.
"""
from __future__ import annotations

import argparse
import csv
import json
import pathlib

import numpy as np
from PIL import Image

FINDINGS = ("opacity", "nodule", "effusion")
SITES = {"A": (1.0, 0.0, 0.04), "B": (0.8, 0.12, 0.04), "C": (1.1, -0.05, 0.1)}  # contrast, offset, noise
_SPLIT_OF = ("train",) * 6 + ("validation", "test") * 2


def _render(rng: np.random.Generator, findings: np.ndarray, site: str, h: int, w: int) -> np.ndarray:
    """A [h, w] float image in [0, 1] showing `findings` (0/1 per FINDINGS) as imaged at `site`."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    image = 0.25 + 0.2 * np.exp(-((xx - 0.5) ** 2) / 0.08) + 0.05 * rng.standard_normal((h, w))
    if findings[0]:
        cy, cx = rng.uniform(0.3, 0.7, 2)
        image += 0.35 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
    if findings[1]:
        cy, cx = rng.uniform(0.2, 0.8, 2)
        image += 0.6 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 0.003)
    if findings[2]:
        image += 0.3 * (yy > rng.uniform(0.75, 0.85))
    contrast, offset, noise = SITES[site]
    image = contrast * (image - 0.5) + 0.5 + offset + noise * rng.standard_normal((h, w))
    return np.clip(image, 0.0, 1.0)


def _save(image: np.ndarray, path: pathlib.Path, site: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if site == "A":
        Image.fromarray((image * 255).round().astype(np.uint8), mode="L").save(path)
    elif site == "B":
        gray = (image * 255).round().astype(np.uint8)
        Image.fromarray(np.stack([gray, gray, (gray * 0.9).astype(np.uint8)], -1), mode="RGB").save(
            path, quality=92)
    else:
        Image.fromarray((image * 65535).round().astype(np.uint16)).save(path)


def write_folder(root, *, num_patients: int = 48, num_shifted_patients: int = 20, seed: int = 0,
                 image_size: int = 96, kind: str = "multilabel", name: str = "my_cxr",
                 shift: bool = True, split_column: bool = False, bag_column: bool = True) -> pathlib.Path:
    """Writes the folder task at `root` (created) and returns it: `num_patients` patients at site A,
    and with `shift` `num_shifted_patients` more at sites B and C; `split_column` adds a `split`
    column (of every 10 patients 6 train, 2 validation, 2 test), `bag_column` names
    `study_id` as the MICLe bag."""
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = list(FINDINGS) if kind == "multilabel" else []
    header = (["file_name", "patient_id", "study_id", "site"] + (["split"] if split_column else [])
              + (labels or ["finding"]) + ["age", "sex", "licence"])
    rows, seen = [], {}
    sites = ["A"] * num_patients + (["B", "C"] * num_shifted_patients)[:num_shifted_patients * shift]
    for i, site in enumerate(sites):
        patient = f"p{i:04d}"
        split = (_SPLIT_OF[i % 10] if split_column else "train") if site == "A" else "test"
        forced = seen.setdefault(split, 0) % len(FINDINGS)  # every finding in every split
        seen[split] += 1
        findings = (rng.random(len(FINDINGS)) < 0.35).astype(int)
        findings[forced] = 1
        if kind == "multiclass":
            findings = np.eye(len(FINDINGS), dtype=int)[forced]
        age, sex = int(rng.integers(20, 90)), ("F", "M")[int(rng.integers(2))]
        for study in range(1 + int(rng.random() < 0.6)):
            for view in range(1 + int(rng.random() < 0.7)):
                h, w = (image_size, image_size) if site == "A" else (image_size + 16 * (site == "C"), image_size + 24)
                ext = "jpg" if site == "B" else "png"
                file_name = f"images/{site}/{patient}/s{study}_v{view}.{ext}"
                _save(_render(rng, findings, site, h, w), root / file_name, site)
                if kind == "multilabel":
                    states = [("" if rng.random() < 0.08 else "-1" if rng.random() < 0.05 else str(f))
                              for f in findings]
                    states[forced] = "1"
                else:
                    states = [FINDINGS[int(np.argmax(findings))]]
                rows.append([file_name, patient, f"s{study}", site, *([split] if split_column else []),
                             *states, age, sex, "CC-BY-4.0"])
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    task = {"name": name, "kind": kind, "label_columns": labels or None,
            "class_column": None if labels else "finding", "classes": None if labels else list(FINDINGS),
            "group_column": "patient_id", "bag_column": "study_id" if bag_column else None,
            "shift": {"column": "site", "in_distribution": ["A"], "shifted": ["B", "C"]} if shift else None,
            "split_column": "split" if split_column else None, "primary_metric": None, "synthetic": True}
    (root / "task.json").write_text(json.dumps(task, indent=1) + "\n")
    return root


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--patients", type=int, default=48, help="in-distribution patients (site A)")
    parser.add_argument("--shifted_patients", type=int, default=20, help="shifted patients (sites B, C)")
    parser.add_argument("--kind", choices=("multilabel", "multiclass"), default="multilabel")
    parser.add_argument("--name", default="my_cxr")
    parser.add_argument("--split_column", action="store_true", help="write a train/validation/test column")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = write_folder(args.folder, num_patients=args.patients, num_shifted_patients=args.shifted_patients,
                        seed=args.seed, kind=args.kind, name=args.name, split_column=args.split_column)
    print(f"wrote {root}: task.json, metadata.csv and images/ (python -m benchmark.run --method=micle "
          f"--task=folder:{root})")


if __name__ == "__main__":
    main()
