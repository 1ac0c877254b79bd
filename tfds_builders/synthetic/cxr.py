"""Synthetic CheXpert and NIH ChestX-ray14 copies in the real on-disk formats (seeded, deterministic).

Images are 8-bit grayscale radiograph-like renderings of a chest (body, lungs with vessel markings,
mediastinum, heart, diaphragm, ribs, clavicles). Each label draws its own signal: heart size
(cardiomegaly), basal meniscus opacity (effusion), perihilar haze (edema), focal dense opacity
(consolidation), plate-like band with volume loss (atelectasis), and others (devices, nodules, pneumothorax,
...). Anatomy and lesion sites are per patient, so every image of a patient shares them; frontal and lateral
projections differ. NIH images are an acquisition-shifted population (contrast, gamma, noise, blur, field of
view, prevalence) with the same pathology signals.
"""
from __future__ import annotations

import dataclasses
import io
import pathlib

import numpy as np
from PIL import Image, ImageFilter

from tfds_builders.cxr_chexpert.cxr_chexpert_dataset_builder import HEADER as CHEXPERT_HEADER
from tfds_builders.cxr_chexpert.cxr_chexpert_dataset_builder import OBSERVATIONS
from tfds_builders.cxr_chexpert.cxr_chexpert_dataset_builder import TEST_HEADER as CHEXPERT_TEST_HEADER
from tfds_builders.cxr_nih14.cxr_nih14_dataset_builder import FINDINGS

# Real train.csv counts (blank, 1.0, 0.0, -1.0) per observation, 223,414 rows (dataset_formats.md §1).
_CHEXPERT_COUNTS = {
    "No Finding": (201033, 22381, 0, 0),
    "Enlarged Cardiomediastinum": (178575, 10798, 21638, 12403),
    "Cardiomegaly": (177211, 27000, 11116, 8087),
    "Lung Opacity": (105636, 105581, 6599, 5598),
    "Lung Lesion": (211470, 9186, 1270, 1488),
    "Edema": (137458, 52246, 20726, 12984),
    "Consolidation": (152792, 14783, 28097, 27742),
    "Pneumonia": (195806, 6039, 2799, 18770),
    "Atelectasis": (154971, 33376, 1328, 33739),
    "Pneumothorax": (144480, 19448, 56341, 3145),
    "Pleural Effusion": (90203, 86187, 35396, 11628),
    "Pleural Other": (216922, 3523, 316, 2653),
    "Fracture": (211220, 9040, 2512, 642),
    "Support Devices": (100197, 116001, 6137, 1079),
}
# Real image counts per finding out of 112,120 (dataset_formats.md §2).
_NIH_COUNTS = {
    "Infiltration": 19894, "Effusion": 13317, "Atelectasis": 11559, "Nodule": 6331, "Mass": 5782,
    "Pneumothorax": 5302, "Consolidation": 4667, "Pleural_Thickening": 3385, "Cardiomegaly": 2776,
    "Emphysema": 2516, "Edema": 2303, "Fibrosis": 1686, "Pneumonia": 1431, "Hernia": 227,
}
_NIH_NO_FINDING = 60361 / 112120

# Which rendered sign each label draws.
_SIGN_OF_CHEXPERT = {
    "Enlarged Cardiomediastinum": "mediastinum", "Cardiomegaly": "cardiomegaly", "Lung Opacity": "opacity",
    "Lung Lesion": "nodule", "Edema": "edema", "Consolidation": "consolidation", "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis", "Pneumothorax": "pneumothorax", "Pleural Effusion": "effusion",
    "Pleural Other": "pleural_thickening", "Fracture": "fracture", "Support Devices": "devices",
}
_SIGN_OF_NIH = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Consolidation": "consolidation",
    "Edema": "edema", "Effusion": "effusion", "Emphysema": "emphysema", "Fibrosis": "fibrosis",
    "Hernia": "hernia", "Infiltration": "opacity", "Mass": "mass", "Nodule": "nodule",
    "Pleural_Thickening": "pleural_thickening", "Pneumonia": "pneumonia", "Pneumothorax": "pneumothorax",
}
_PATHOLOGIES = tuple(o for o in OBSERVATIONS if o not in ("No Finding", "Support Devices"))
_STUDY_PERSISTENCE = 0.7  # chance a patient's later study repeats a label draw of the earlier one
_VALUE_OF_STATE = {0: "", 1: "1.0", 2: "0.0", 3: "-1.0"}  # blank, positive, negative, uncertain


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """Per-image acquisition: grey-level mapping, noise, blur, geometry."""

    contrast: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    noise: float = 0.02
    blur: float = 0.0  # Gaussian radius as a fraction of the image width
    zoom: float = 1.0  # >1 shows more of the body
    rotation: float = 0.0  # radians
    shift: tuple[float, float] = (0.0, 0.0)
    ap: bool = False  # anteroposterior: magnified heart, scapulae over the lungs, shallower inspiration
    border: float = 0.0  # width of a black collimation border (fraction of the image)
    marker: bool = False  # a bright laterality marker in the upper corner


# ----------------------------------------------------------------------------------------------- rendering

def _sig(x):
    """A cheap logistic-like step: 0 below x=-2, 1 above x=2, smooth in between."""
    y = np.clip(0.5 + 0.25 * x, 0.0, 1.0)
    return y * y * (3.0 - 2.0 * y)


def _smooth(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] with about `cells` blobs across the width."""
    h, w = shape
    grid = rng.random((max(2, round(cells * h / w)), cells), dtype=np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)).clip(0, 1)


def _segment_dist(u, v, p0, p1):
    du, dv = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((u - p0[0]) * du + (v - p0[1]) * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
    return np.hypot(u - p0[0] - t * du, v - p0[1] - t * dv)


def _line(u, v, points, width):
    d = np.min([_segment_dist(u, v, a, b) for a, b in zip(points[:-1], points[1:])], axis=0)
    return np.exp(-((d / width) ** 2))


def _ellipse(u, v, cu, cv, ru, rv):
    """Normalised squared radius: < 1 inside the ellipse."""
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2


def patient_traits(rng: np.random.Generator) -> dict:
    """Anatomy and lesion sites of one patient (shared by all of the patient's images)."""
    def n(mean, sd):  # Python floats keep the float32 image arithmetic in float32
        return float(rng.normal(mean, sd))

    return {
        "body_w": n(0.9, 0.04), "lung_cx": n(0.43, 0.02), "lung_rx": n(0.34, 0.015),
        "lung_cy": n(-0.02, 0.03), "lung_ry": n(0.66, 0.04), "dome": n(0.5, 0.03),
        "heart_cx": n(0.08, 0.02), "heart_rx": n(0.27, 0.018), "heart_ry": n(0.23, 0.015),
        "mediastinum": n(0.1, 0.008), "rib_spacing": n(0.15, 0.01), "rib_phase": float(rng.random()),
        "rib_slope": n(0.45, 0.05), "rib_curve": n(0.9, 0.1), "texture_seed": int(rng.integers(2**31)),
        "depth": n(0.0, 0.2),  # antero-posterior site of focal lesions in lateral views
        "sites": {  # per sign: (side, rel_u, rel_v, size, angle)
            sign: (float(rng.choice([-1.0, 1.0])), float(rng.uniform(-0.55, 0.55)), float(rng.uniform(lo, hi)),
                   float(rng.uniform(0.8, 1.2)), n(0.15, 0.2))
            for sign, lo, hi in (
                ("consolidation", -0.1, 0.6), ("opacity", -0.5, 0.5), ("pneumonia", 0.1, 0.65),
                ("atelectasis", 0.3, 0.65), ("nodule", -0.6, 0.5), ("mass", -0.4, 0.4),
                ("pneumothorax", 0.0, 0.0), ("pleural_thickening", -0.3, 0.3), ("fracture", -0.6, 0.3),
            )
        },
        "effusion_sides": (((-1.0,), (1.0,), (-1.0, 1.0))[rng.choice(3, p=[0.35, 0.25, 0.4])]),
        "device": int(rng.integers(3)),
    }


_RENDER_WIDTH = 96  # anatomy is drawn at most this wide, then resized; noise is added at full size


def render(traits: dict, signs: dict, *, lateral: bool, acq: Acquisition, height: int, width: int,
           rng: np.random.Generator) -> np.ndarray:
    """A uint8 [height, width] radiograph of the patient with the given sign severities (0..1)."""
    s = {k: float(v) for k, v in signs.items() if v > 0}
    rw = min(width, _RENDER_WIDTH)
    rh = max(1, round(height * rw / width))
    j = (np.arange(rw, dtype=np.float32) + 0.5 - rw / 2) / (rw / 2)
    i = (np.arange(rh, dtype=np.float32) + 0.5 - rh / 2) / (rw / 2)
    u0, v0 = np.meshgrid(j * acq.zoom, i * acq.zoom)
    c, sn = float(np.cos(acq.rotation)), float(np.sin(acq.rotation))
    u = c * u0 - sn * v0 + acq.shift[0]
    v = sn * u0 + c * v0 + acq.shift[1]
    texture_rng = np.random.default_rng(traits["texture_seed"])
    markings = _smooth(texture_rng, u.shape, 14) * 0.6 + _smooth(texture_rng, u.shape, 30) * 0.4
    lumpy = _smooth(rng, u.shape, 10)
    fine = _smooth(rng, u.shape, 40)
    draw = _draw_lateral if lateral else _draw_frontal
    img = np.clip(draw(traits, s, u, v, acq, markings, lumpy, fine), 0.0, 1.0)
    if (rh, rw) != (height, width):
        img = np.asarray(Image.fromarray(img.astype(np.float32)).resize((width, height), Image.Resampling.BICUBIC))
    img = np.clip(acq.brightness + acq.contrast * (img - 0.5) + 0.5, 0.0, 1.0) ** acq.gamma
    img = img + acq.noise * rng.standard_normal(img.shape, dtype=np.float32)
    if acq.marker:
        img[max(1, height // 20): max(2, height // 9), max(1, width // 20): max(2, width // 12)] = 0.95
    if acq.border > 0:
        b = max(1, round(acq.border * width))
        img[:, :b] = img[:, -b:] = 0.0
    out = Image.fromarray((np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))
    if acq.blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(acq.blur * width))
    return np.asarray(out)


def _draw_frontal(t, s, u, v, acq, markings, lumpy, fine):
    au = np.abs(u)
    torso = _sig((t["body_w"] * (1.0 - 0.35 * np.clip(-v - 0.75, 0, None)) - au) / 0.03)
    tissue = 0.04 + 0.58 * torso
    dome_shift = 0.06 if acq.ap else 0.0  # supine, shallow inspiration
    emph = s.get("emphysema", 0.0)
    heart_mag = 1.1 if acq.ap else 1.0
    atel_side, atel_u, atel_v, atel_size, atel_angle = t["sites"]["atelectasis"]
    atel = s.get("atelectasis", 0.0)
    shift = 0.05 * atel * atel_side  # mediastinal shift toward the collapsed side
    air = np.zeros_like(u)
    fluid = np.zeros_like(u)
    ptx = np.zeros_like(u)
    pleural_line = np.zeros_like(u)
    lungs = {}
    for side in (-1.0, 1.0):
        cx, rx, ry, cy = side * t["lung_cx"], t["lung_rx"], t["lung_ry"], t["lung_cy"]
        rxe = np.where((u - cx) * side < 0, np.float32(rx * 0.85), np.float32(rx))  # flatter medial border
        dome = t["dome"] + dome_shift + 0.08 * emph - (0.04 if side < 0 else 0.0)
        if atel and side == atel_side:
            dome -= 0.14 * atel
        dome_curve = dome - (0.12 - 0.08 * emph) * np.clip(1 - ((u - cx) / rx) ** 2, 0, None)
        r = _ellipse(u, v, cx, cy, rxe, ry)
        lung = _sig((1 - r) / 0.05) * _sig((dome_curve - v) / 0.012)
        lungs[side] = (lung, cx, rx, ry, cy, r, dome)
        if "effusion" in s and side in t["effusion_sides"]:
            sev = s["effusion"]
            level = dome - 0.05 - 0.3 * sev - 0.1 * sev * np.clip((u - cx) * side / rx, -1, 1)
            fluid = np.maximum(fluid, lung * _sig((v - level) / 0.02))
        if "pneumothorax" in s and side == t["sites"]["pneumothorax"][0]:
            sev = s["pneumothorax"]
            k = 1 - 0.35 * sev
            rc = _ellipse(u, v, cx - side * rx * (1 - k) * 0.6, cy + ry * (1 - k) * 0.5, rxe * k, ry * k)
            inner = _sig((1 - rc) / 0.04)
            ptx = np.maximum(ptx, lung * (1 - inner))
            pleural_line = np.maximum(pleural_line, lung * np.exp(-(((1 - rc) / 0.05) ** 2)))
        air = np.maximum(air, lung)
    # heart, mediastinum, spine
    hs = s.get("cardiomegaly", 0.0)
    hcx = t["heart_cx"] + shift + 0.04 * hs
    hcy = t["dome"] + dome_shift - t["heart_ry"] * 0.85
    heart = _sig((1 - _ellipse(u, v, hcx, hcy, t["heart_rx"] * heart_mag * (1 + 0.5 * hs),
                               t["heart_ry"] * heart_mag * (1 + 0.2 * hs))) / 0.06)
    mw = t["mediastinum"] * (1 + 0.7 * s.get("mediastinum", 0.0)) * (1.1 if acq.ap else 1.0)
    mediast = _sig((mw - np.abs(u - 0.02 - shift)) / 0.015) * _sig((hcy - v) / 0.05)
    air = air * (1 - heart) * (1 - mediast)
    # parenchymal opacities (fill air spaces)
    opac = np.zeros_like(u)
    if "edema" in s:
        hil = np.exp(-(((au - 0.18) / 0.32) ** 2 + ((v - t["lung_cy"] - 0.05) / 0.42) ** 2))
        opac += s["edema"] * (0.3 * hil + 0.08 + 0.15 * fine)
    for sign, density, radius in (("consolidation", 0.95, 0.16), ("opacity", 0.5, 0.2), ("pneumonia", 0.65, 0.13),
                                  ("nodule", 1.0, 0.035), ("mass", 1.0, 0.09)):
        if sign in s:
            side, ru, rv, size, _ = t["sites"][sign]
            lung, cx, rx, ry, cy = lungs[side][:5]
            d = np.sqrt(_ellipse(u, v, cx + ru * rx, cy + rv * ry, radius * size, radius * size * 1.2))
            edge = 0.35 if radius > 0.05 else 0.1
            sev = s[sign] if radius > 0.05 else 0.6 + 0.4 * s[sign]
            opac += density * sev * _sig((1 - d + edge * (lumpy - 0.5)) / 0.08)
    if atel:
        lung, cx, rx, ry, cy = lungs[atel_side][:5]
        pu, pv = cx + atel_u * rx * 0.5, cy + atel_v * ry
        ca, sa = np.cos(atel_angle), np.sin(atel_angle)
        along, perp = (u - pu) * ca + (v - pv) * sa, -(u - pu) * sa + (v - pv) * ca
        opac += (0.7 + 0.3 * atel) * atel * np.exp(-((perp / (0.025 + 0.03 * atel)) ** 2) - (along / (0.8 * rx)) ** 4)
    if "fibrosis" in s:
        opac += 0.6 * s["fibrosis"] * np.clip(3 * fine - 1.2, 0, 1) * _sig((au - 0.35) / 0.08) * _sig((0.1 - v) / 0.1)
    if "pleural_thickening" in s:
        side = t["sites"]["pleural_thickening"][0]
        lung, cx, rx, ry, cy, r = lungs[side][:6]
        opac += 0.8 * s["pleural_thickening"] * np.exp(-(((1 - r) / 0.12) ** 2)) * _sig((u - cx) * side / 0.05)
    vessels = markings * np.exp(-(((au - 0.12) / 0.4) ** 2)) * (1 - ptx) * (1 - 0.6 * emph)
    air = air * (1 - fluid) * (1 - np.clip(opac, 0, 1))
    att = tissue - (0.5 + 0.12 * emph) * air + 0.12 * vessels * air - 0.06 * ptx + 0.2 * pleural_line
    # bones
    xr = au - 0.06
    thorax = (_sig((t["lung_cx"] + t["lung_rx"] + 0.06 - au) / 0.03) * _sig(xr / 0.02)
              * _sig((t["dome"] + 0.1 - v) / 0.05))
    phase = (v + t["rib_slope"] * xr - t["rib_curve"] * xr ** 2) / t["rib_spacing"] + t["rib_phase"]
    ribs = np.clip((np.cos(2 * np.pi * phase) - 0.5) / 0.5, 0, 1)
    if "fracture" in s:
        _, fu, fv, _, _ = t["sites"]["fracture"]
        gap = np.exp(-(((au - 0.3 - 0.2 * fu) / 0.02) ** 2 + ((v - 0.3 * fv) / 0.08) ** 2))
        ribs = ribs * (1 - 0.9 * s["fracture"] * gap)
    ant_phase = (v - 0.5 * xr) / (t["rib_spacing"] * 1.3) + t["rib_phase"]
    ribs_ant = np.clip((np.cos(2 * np.pi * ant_phase) - 0.7) / 0.3, 0, 1) * _sig((0.1 - v) / 0.1)
    cl_v = -0.62 - (0.08 if acq.ap else 0.0)
    clav = sum(_line(u, v, [(sd * 0.08, cl_v), (sd * 0.58, cl_v - 0.1)], 0.028) for sd in (-1, 1))
    spine = _sig((0.06 - au) / 0.01) * (0.6 + 0.4 * (np.cos(2 * np.pi * v / 0.11) > -0.5))
    att += thorax * (0.11 * ribs + 0.05 * ribs_ant) + 0.14 * clav + 0.07 * spine * torso
    if acq.ap:
        att += 0.07 * sum(_sig((1 - _ellipse(u, v, sd * 0.66, -0.35, 0.14, 0.3)) / 0.1) for sd in (-1, 1))
    if "hernia" in s:
        hh = _sig((1 - _ellipse(u, v, 0.05, t["dome"] - 0.05, 0.13, 0.09)) / 0.08)
        bubble = _sig((1 - _ellipse(u, v, 0.05, t["dome"] - 0.08, 0.09, 0.04)) / 0.1)
        att += s["hernia"] * (0.18 * hh - 0.25 * bubble)
    if "devices" in s:
        att += _devices(t["device"], u, v, hcx, hcy)
    return att


def _devices(kind, u, v, hcx, hcy):
    tube = _line(u, v, [(0.01, -1.3), (0.01, -0.35)], 0.012)
    if kind == 0:  # endotracheal tube + enteric tube
        return 0.45 * tube + 0.4 * _line(u, v, [(-0.02, -1.3), (-0.02, 0.2), (0.15, 0.7)], 0.01)
    if kind == 1:  # pacemaker with a lead into the heart
        box = _sig((0.06 - np.abs(u - 0.5)) / 0.01) * _sig((0.045 - np.abs(v + 0.62)) / 0.01)
        return 0.7 * box + 0.45 * _line(u, v, [(0.45, -0.6), (0.1, -0.45), (hcx - 0.05, hcy)], 0.01)
    return 0.45 * _line(u, v, [(-0.45, -0.75), (-0.12, -0.55), (0.0, -0.05)], 0.012)  # central line


def _draw_lateral(t, s, u, v, acq, markings, lumpy, fine):
    """Left lateral projection: anterior on the image left, spine on the right."""
    torso = _sig((1 - _ellipse(u, v, 0.05, 0.05, t["body_w"] * 0.95, 1.25)) / 0.04)
    tissue = 0.1 + 0.62 * torso
    dome = t["dome"] + 0.05
    dome_curve = dome - 0.15 * np.clip(1 - (u / 0.6) ** 2, 0, None) + 0.12 * _sig((u - 0.35) / 0.08)
    lung = _sig((1 - _ellipse(u, v, 0.05, t["lung_cy"] - 0.02, 0.58, t["lung_ry"] + 0.05)) / 0.05)
    lung = lung * _sig((dome_curve - v) / 0.015)
    hs = s.get("cardiomegaly", 0.0)
    hcy = dome - 0.2
    heart = _sig((1 - _ellipse(u, v, -0.28 + 0.08 * hs, hcy, 0.26 * (1 + 0.45 * hs), 0.22 * (1 + 0.12 * hs))) / 0.06)
    air = lung * (1 - heart)
    fluid = np.zeros_like(u)
    if "effusion" in s:
        sev = s["effusion"]
        level = dome + 0.1 - 0.38 * sev - 0.15 * sev * np.clip((u - 0.1) / 0.5, -1, 1)
        fluid = lung * _sig((v - level) / 0.02)
    opac = np.zeros_like(u)
    if "edema" in s:
        hil = np.exp(-((u / 0.4) ** 2 + ((v - t["lung_cy"]) / 0.4) ** 2))
        opac += s["edema"] * (0.28 * hil + 0.08 + 0.15 * fine)
    for sign, density, radius in (("consolidation", 0.95, 0.16), ("opacity", 0.5, 0.2), ("pneumonia", 0.65, 0.13),
                                  ("nodule", 1.0, 0.035), ("mass", 1.0, 0.09)):
        if sign in s:
            _, ru, rv, size, _ = t["sites"][sign]
            d = np.sqrt(_ellipse(u, v, t["depth"] + 0.2 * ru, t["lung_cy"] + rv * t["lung_ry"], radius * size * 1.2,
                                 radius * size * 1.2))
            sev = s[sign] if radius > 0.05 else 0.6 + 0.4 * s[sign]
            opac += density * sev * _sig((1 - d + 0.3 * (lumpy - 0.5)) / 0.08)
    if "atelectasis" in s:
        atel = s["atelectasis"]
        perp = (v - (dome - 0.25)) - 0.5 * u
        opac += (0.6 + 0.4 * atel) * atel * np.exp(-((perp / (0.025 + 0.02 * atel)) ** 2) - (u / 0.5) ** 4)
    if "fibrosis" in s:
        opac += 0.5 * s["fibrosis"] * np.clip(3 * fine - 1.2, 0, 1) * _sig((0.1 - v) / 0.1)
    emph = s.get("emphysema", 0.0)
    air = air * (1 - fluid) * (1 - np.clip(opac, 0, 1))
    vessels = markings * np.exp(-((u / 0.5) ** 2))
    att = tissue - (0.42 + 0.1 * emph) * air + 0.1 * vessels * air
    vert = _sig((0.09 - np.abs(u - 0.66)) / 0.012) * (0.55 + 0.45 * (np.cos(2 * np.pi * v / 0.12) > -0.6))
    sternum = _sig((0.025 - np.abs(u + 0.72 + 0.05 * v)) / 0.01) * _sig((0.25 - v) / 0.05)
    arms = _sig((1 - _ellipse(u, v, 0.05, -0.85, 0.5, 0.3)) / 0.1)
    att += 0.2 * vert + 0.12 * sternum + 0.1 * arms
    if "hernia" in s:
        att += s["hernia"] * 0.18 * _sig((1 - _ellipse(u, v, 0.1, dome - 0.05, 0.15, 0.1)) / 0.08)
    if "devices" in s:
        att += 0.45 * _line(u, v, [(-0.2, -1.3), (-0.15, -0.35)], 0.012)
    return att


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 6}))
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- labels

def _state_probs(counts):
    blank, pos, neg, unc = counts
    total = blank + pos + neg + unc
    return pos / total, neg / total, unc / total


def _chexpert_study_states(rng, u_patient, normal_u, *, p_normal):
    """Label states (0 blank, 1 pos, 2 neg, 3 unc) of one study from patient-persistent uniforms."""
    normal = normal_u < p_normal
    states = {}
    for obs in OBSERVATIONS[1:]:
        p_pos, p_neg, p_unc = _state_probs(_CHEXPERT_COUNTS[obs])
        x = u_patient[obs]
        if obs != "Support Devices":
            scale = 0.0 if normal else 1.0 / (1.0 - p_normal)
            p_pos, p_unc = p_pos * scale, p_unc * scale
        states[obs] = 1 if x < p_pos else 3 if x < p_pos + p_unc else 2 if x < p_pos + p_unc + p_neg else 0
    if not normal and not any(states[o] in (1, 3) for o in _PATHOLOGIES):
        states[rng.choice(["Lung Opacity", "Pleural Effusion", "Edema", "Atelectasis", "Cardiomegaly"])] = 1
    states["No Finding"] = 1 if normal else 0
    return states


def _severities(rng, states: dict, mild: dict) -> dict:
    """Rendered severity per CheXpert observation: strong when positive, weak/ambiguous when uncertain."""
    sev = {}
    for obs, st in states.items():
        if obs == "No Finding":
            continue
        m = mild[obs]
        if st == 1:
            sev[obs] = 0.55 + 0.45 * m
        elif st == 3:
            sev[obs] = 0.5 * m if rng.random() < 0.7 else 0.0
        elif st == 0 and rng.random() < 0.04:  # not mentioned in the report, yet present
            sev[obs] = 0.3 + 0.3 * m
        else:
            sev[obs] = 0.0
    return sev


def _persistent_uniforms(rng, previous: dict | None, keys) -> dict:
    fresh = {k: rng.random() for k in keys}
    if previous is None:
        return fresh
    return {k: previous[k] if rng.random() < _STUDY_PERSISTENCE else fresh[k] for k in keys}


# ----------------------------------------------------------------------------------------------- CheXpert

_TOPS = {"small": "CheXpert-v1.0-small", "full": "CheXpert-v1.0", "unpacked": "CheXpert-v1.0-small"}


def _normal(rng):
    return lambda mean, sd: float(rng.normal(mean, sd))


def _chexpert_acquisition(rng, *, ap: bool, lateral: bool) -> Acquisition:
    n = _normal(rng)
    return Acquisition(
        contrast=n(1.0, 0.1) * (0.92 if ap else 1.0) * (0.9 if lateral else 1.0),
        brightness=n(0.0, 0.06), gamma=float(np.exp(n(0.0, 0.12))), noise=0.03 if ap else 0.02,
        zoom=n(1.0, 0.03), rotation=n(0.0, 0.03), shift=(n(0.0, 0.02), n(0.0, 0.02)), ap=ap and not lateral,
    )


def _split_sizes(num_patients: int, with_test: bool) -> tuple[int, int, int]:
    n_valid = max(1, round(0.1 * num_patients))
    n_test = max(1, round(0.1 * num_patients)) if with_test else 0
    n_train = num_patients - n_valid - n_test
    if n_train < 1:
        raise ValueError(f"num_patients={num_patients} is too small: need at least {2 + with_test}")
    return n_train, n_valid, n_test


def write_chexpert(root, *, num_patients: int, seed: int = 0, image_size: int = 128, variant: str = "small",
                   with_test: bool = True) -> pathlib.Path:
    """Writes a synthetic CheXpert copy under `root` and returns `root` (the manual_dir).

    About 80% of the patients go to train.csv, 10% to valid.csv (and 10% to test_labels.csv when
    with_test), numbered consecutively like the real release. variant: "small" writes
    CheXpert-v1.0-small/, "full" CheXpert-v1.0/, "unpacked" the small variant without its top folder.
    Images are JPEG, `image_size` pixels wide and 0-22% taller (portrait, like the downsampled release).
    """
    if variant not in _TOPS:
        raise ValueError(f"variant={variant!r}; expected one of {sorted(_TOPS)}")
    if image_size < 16:
        raise ValueError(f"image_size={image_size}; expected >= 16")
    root = pathlib.Path(root)
    top = _TOPS[variant]
    base = root if variant == "unpacked" else root / top
    n_train, n_valid, n_test = _split_sizes(num_patients, with_test)
    p_normal = _CHEXPERT_COUNTS["No Finding"][1] / sum(_CHEXPERT_COUNTS["No Finding"])
    splits = (("train", 1, n_train), ("valid", n_train + 1, n_valid), ("test", n_train + n_valid + 1, n_test))
    rows = {"train": [], "valid": [], "test": []}
    for split, first, count in splits:
        for pid in range(first, first + count):
            rows[split] += _chexpert_patient(base, top, split, pid, seed=seed, image_size=image_size, p_normal=p_normal)
    if n_train >= 20:  # the real train.csv has exactly one row with sex "Unknown"
        r = rows["train"][len(rows["train"]) // 2]
        r[1] = "Unknown"
    if n_train >= 500:  # and a handful of decubitus frontals
        frontal = [r for r in rows["train"] if r[3] == "Frontal"]
        frontal[len(frontal) // 3][4] = "LL"
    base.mkdir(parents=True, exist_ok=True)
    _write_csv(base / "train.csv", CHEXPERT_HEADER, rows["train"])
    _write_csv(base / "valid.csv", CHEXPERT_HEADER, rows["valid"])
    if with_test:
        _write_csv(base / "test_labels.csv", CHEXPERT_TEST_HEADER, [[r[0], *r[5:]] for r in rows["test"]])
    return root


def _chexpert_patient(base, top, split, pid, *, seed, image_size, p_normal):
    rng = np.random.default_rng([seed, 1, pid])
    traits = patient_traits(rng)
    sex = "Male" if rng.random() < 0.594 else "Female"
    age = int(np.clip(rng.normal(61, 17), 18, 90))
    if split == "train":
        n_studies = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        p_lateral = 0.2
    else:
        n_studies, p_lateral = 1, (0.17 if split == "valid" else 0.34)
    mild = {o: rng.random() for o in OBSERVATIONS}
    aspect = rng.uniform(1.0, 1.22)
    u_prev, rows, n_images = None, [], 0
    for study in range(1, n_studies + 1):
        u_now = _persistent_uniforms(rng, u_prev, (*OBSERVATIONS, "_normal"))
        u_prev = u_now
        states = _chexpert_study_states(rng, u_now, u_now["_normal"], p_normal=p_normal)
        sev = _severities(rng, states, mild)
        if split != "train":  # binary consensus of radiologists reading the image
            states = {o: (1 if sev[o] >= 0.3 else 2) for o in OBSERVATIONS[1:]}
            states["No Finding"] = 2 if any(states[o] == 1 for o in _PATHOLOGIES) else 1
        signs = {_SIGN_OF_CHEXPERT[o]: sev[o] for o in _SIGN_OF_CHEXPERT}
        p_ap = 0.95 if states["Support Devices"] == 1 else 0.72
        ap = rng.random() < p_ap
        views = ["frontal"] + (["lateral"] if rng.random() < p_lateral and n_images < 3 else [])
        for view_no, view in enumerate(views, start=1):
            n_images += 1
            lateral = view == "lateral"
            acq = _chexpert_acquisition(rng, ap=ap, lateral=lateral)
            width = image_size
            height = round(image_size * (aspect if not lateral else rng.uniform(1.0, 1.22)))
            img = render(traits, signs, lateral=lateral, acq=acq, height=height, width=width,
                         rng=np.random.default_rng([seed, 2, pid, study, view_no]))
            rel = f"{split}/patient{pid:05d}/study{study}/view{view_no}_{view}.jpg"
            path = base / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_encode(img, "JPEG"))
            prefix = "CheXpert-v1.0" if split == "test" else top  # the released test labels use the full name
            rows.append([
                f"{prefix}/{rel}", sex, str(min(90, age + study - 1)), "Lateral" if lateral else "Frontal",
                "" if lateral else ("AP" if ap else "PA"),
                *(_VALUE_OF_STATE[states[o]] for o in OBSERVATIONS),
            ])
    return rows


def _write_csv(path: pathlib.Path, header, rows) -> None:
    """Comma-joined lines; no value in these files contains a comma or a quote."""
    lines = [",".join(header)] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------- NIH

_NIH_HEADER_LINE = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def _nih_acquisition(rng, *, ap: bool) -> Acquisition:
    n = _normal(rng)
    return Acquisition(
        contrast=n(0.78, 0.06), brightness=n(0.07, 0.03), gamma=float(np.exp(n(-0.25, 0.08))),
        noise=0.045 if ap else 0.035, blur=abs(n(0.006, 0.002)), zoom=n(1.15, 0.04), rotation=n(0.0, 0.04),
        shift=(n(0.0, 0.03), n(-0.05, 0.03)), ap=ap, border=0.03 if rng.random() < 0.25 else 0.0,
        marker=bool(rng.random() < 0.5),
    )


def write_nih14(root, *, num_patients: int, seed: int = 0, image_size: int = 128, csv_variant: str = "v2020",
                archive_layout: bool = False) -> pathlib.Path:
    """Writes a synthetic ChestX-ray14 copy under `root` and returns `root` (the manual_dir).

    csv_variant "v2020" writes Data_Entry_2017_v2020.csv; "2017" writes Data_Entry_2017.csv with its
    trailing comma on every line. archive_layout puts images in images_001/images/, images_002/images/, ...
    (as unpacked from the 12 archives) instead of images/. About 20% of patients form test_list.txt.
    Images are square PNGs of `image_size` pixels.
    """
    if csv_variant not in ("v2020", "2017"):
        raise ValueError(f"csv_variant={csv_variant!r}; expected 'v2020' or '2017'")
    if num_patients < 2:
        raise ValueError(f"num_patients={num_patients} is too small: need at least 2")
    root = pathlib.Path(root)
    n_test = max(1, round(0.2 * num_patients))
    split_rng = np.random.default_rng([seed, 3])
    test_patients = set(split_rng.choice(np.arange(1, num_patients + 1), n_test, replace=False).tolist())
    lines, train_list, test_list = [], [], []
    per_archive = max(1, -(-num_patients // 12))
    for pid in range(1, num_patients + 1):
        folder = root / (f"images_{(pid - 1) // per_archive + 1:03d}/images" if archive_layout else "images")
        for index, line in _nih_patient(folder, pid, seed=seed, image_size=image_size):
            lines.append(line + ("," if csv_variant == "2017" else ""))
            (test_list if pid in test_patients else train_list).append(index)
    header = _NIH_HEADER_LINE + ("," if csv_variant == "2017" else "")
    name = "Data_Entry_2017_v2020.csv" if csv_variant == "v2020" else "Data_Entry_2017.csv"
    (root / name).write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    (root / "train_val_list.txt").write_text("\n".join(train_list) + "\n", encoding="utf-8")
    (root / "test_list.txt").write_text("\n".join(test_list) + "\n", encoding="utf-8")
    return root


def _nih_patient(folder: pathlib.Path, pid: int, *, seed: int, image_size: int):
    rng = np.random.default_rng([seed, 4, pid])
    traits = patient_traits(rng)
    sex = "M" if rng.random() < 0.565 else "F"
    age = int(np.clip(rng.normal(47, 17), 1, 95))
    n_follow = int(rng.choice([1, 2, 3, 4, 5], p=[0.45, 0.2, 0.15, 0.1, 0.1]))
    mild = {f: rng.random() for f in FINDINGS}
    keys = (*FINDINGS, "_normal")
    u_prev = None
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for fu in range(n_follow):
        u_now = _persistent_uniforms(rng, u_prev, keys)
        u_prev = u_now
        found = []
        if u_now["_normal"] >= _NIH_NO_FINDING:
            found = [f for f in FINDINGS if u_now[f] < _NIH_COUNTS[f] / 112120 / (1 - _NIH_NO_FINDING)]
            if not found:
                found = [str(rng.choice(["Infiltration", "Effusion", "Atelectasis"]))]
        # Text-mined labels: about 8% of stated findings are not visible on the image.
        signs = {_SIGN_OF_NIH[f]: (0.45 + 0.55 * mild[f]) * (rng.random() >= 0.08) for f in found}
        ap = rng.random() < 0.4
        acq = _nih_acquisition(rng, ap=ap)
        img = render(traits, signs, lateral=False, acq=acq, height=image_size, width=image_size,
                     rng=np.random.default_rng([seed, 5, pid, fu]))
        index = f"{pid:08d}_{fu:03d}.png"
        (folder / index).write_bytes(_encode(img, "PNG"))
        size_w, size_h = (2500, 2048) if rng.random() < 0.3 else (3056, 2544) if rng.random() < 0.3 else (2992, 2991)
        spacing = str(rng.choice(["0.14300000000000002", "0.139", "0.168", "0.171"], p=[0.6, 0.15, 0.15, 0.1]))
        labels = "|".join(f for f in FINDINGS if f in found) or "No Finding"
        out.append((index, f"{index},{labels},{fu},{pid},{age + fu // 2},{sex},{'AP' if ap else 'PA'},"
                           f"{size_w},{size_h},{spacing},{spacing}"))
    return out
