"""Synthetic HAM10000 and PAD-UFES-20 copies in the real on-disk formats (dataset_formats.md §5, §8).

`write_ham10000` lays out the Dataverse release (8-column `HAM10000_metadata.csv`, JPEGs split over
`HAM10000_images_part_1/` and `_part_2/`); `write_pad_ufes20` the Mendeley release (26-column
`metadata.csv` with its `fitspatrick`/`biopsed` spellings, PNGs under `images/imgs_part_k/imgs_part_k/`).

Images are rendered from a per-lesion trait set (shape, border, colours, texture, skin, hairs) that
depends on the diagnosis; every image of a lesion re-renders the same traits under a new rotation, zoom,
offset and lighting. HAM images look dermoscopic (pinkish fair skin, polarised detail, dermoscope circle or
vignette per acquisition site); PAD images look like smartphone clinical photos (skin tone per Fitzpatrick
type, smaller lesion, flash and colour cast, drape background, blur, sensor noise, weaker texture) while the
diagnosis cues stay (nv/NEV, mel/MEL, bcc/BCC, bkl/SEK, akiec/ACK+SCC share one appearance model each).
"""
from __future__ import annotations

import csv
import dataclasses
import pathlib

import numpy as np
from PIL import Image, ImageFilter

HAM_HEADER = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset")
PAD_HEADER = (
    "patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother", "age",
    "pesticide", "gender", "skin_cancer_history", "cancer_history", "has_piped_water",
    "has_sewage_system", "fitspatrick", "region", "diameter_1", "diameter_2", "diagnostic", "itch",
    "grew", "hurt", "changed", "bleed", "elevation", "img_id", "biopsed",
)

# Real HAM10000 value counts (dataset_formats.md §5), used as sampling weights.
HAM_DX = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}
HAM_IMAGES_PER_LESION = {1: 5514, 2: 1423, 3: 490, 4: 34, 5: 5, 6: 4}
_HAM_LOCALIZATION = {
    "back": 2192, "lower extremity": 2077, "trunk": 1404, "upper extremity": 1118, "abdomen": 1022,
    "face": 745, "chest": 407, "foot": 319, "unknown": 234, "neck": 168, "scalp": 128, "hand": 90,
    "ear": 56, "genital": 48, "acral": 7,
}
# dx_type given dx: malignant lesions are histology-proven, follow-up exists only for nevi.
_HAM_DX_TYPE = {
    "nv": {"follow_up": 0.553, "histo": 0.38, "consensus": 0.067},
    "mel": {"histo": 1.0}, "bcc": {"histo": 1.0}, "akiec": {"histo": 1.0},
    "bkl": {"histo": 0.64, "consensus": 0.30, "confocal": 0.06},
    "df": {"histo": 0.5, "consensus": 0.5},
    "vasc": {"histo": 0.4, "consensus": 0.6},
}
# Acquisition site (`dataset` column): follow-up nevi come from MoleMax; the rest as in the real totals.
_HAM_SITE_NON_FOLLOW_UP = {"vidir_modern": 3363, "rosendahl": 2259, "vienna_dias": 439, "vidir_molemax": 250}
_HAM_FIRST_IMAGE_NUMBER = 24306  # ISIC_0024306 is the first image of HAM10000_images_part_1

# PAD-UFES-20 per-image class counts (dataset_formats.md §8) and grouping shape (1,373 patients,
# 1,641 lesions, 2,298 images).
PAD_DX = {"BCC": 845, "ACK": 730, "NEV": 244, "SEK": 235, "SCC": 192, "MEL": 52}
_PAD_LESIONS_PER_PATIENT = {1: 0.84, 2: 0.12, 3: 0.04}
_PAD_IMAGES_PER_LESION = {1: 0.65, 2: 0.27, 3: 0.08}
_PAD_REGION = {
    "FACE": 570, "FOREARM": 392, "CHEST": 280, "BACK": 248, "ARM": 192, "NOSE": 158, "HAND": 126,
    "NECK": 93, "THIGH": 73, "EAR": 73, "ABDOMEN": 36, "LIP": 23, "SCALP": 18, "FOOT": 16,
}
_PAD_BACKGROUND = ("POMERANIA", "GERMANY", "ITALY", "BRAZIL", "NETHERLANDS", "PORTUGAL", "POLAND",
                   "UNK", "SPAIN", "AUSTRIA", "NORWAY", "CZECH", "ISRAEL", "FRANCE")
_PAD_FITZPATRICK = (0.10, 0.45, 0.30, 0.10, 0.04, 0.01)
_PAD_BIOPSY_RATE = {"BCC": 1.0, "SCC": 1.0, "MEL": 1.0, "ACK": 0.25, "NEV": 0.2, "SEK": 0.1}
_PAD_PARTS = 3

# Appearance model of each diagnosis (PAD codes map onto the HAM model they share).
_MODEL_OF = {"nv": "nv", "mel": "mel", "bcc": "bcc", "bkl": "bkl", "akiec": "akiec", "df": "df",
             "vasc": "vasc", "NEV": "nv", "MEL": "mel", "BCC": "bcc", "SEK": "bkl", "ACK": "akiec",
             "SCC": "scc"}

# Skin tone (RGB in [0, 1]) per Fitzpatrick type I..VI.
_FITZPATRICK_RGB = np.array([
    [0.94, 0.80, 0.72], [0.89, 0.72, 0.60], [0.80, 0.60, 0.46],
    [0.64, 0.46, 0.33], [0.46, 0.31, 0.22], [0.30, 0.20, 0.15],
], np.float32)


# --------------------------------------------------------------------------------------------------
# Allocation helpers


def _allocate(rng: np.random.Generator, n: int, weights, *, every: bool = False) -> np.ndarray:
    """n category indices in shuffled order with counts proportional to `weights` (largest remainder).

    every=True gives each category at least one draw when n allows it.
    """
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    counts = np.floor(w * n).astype(int)
    if every and n >= len(w):
        counts = np.maximum(counts, 1)
    while counts.sum() > n:  # only after the every-floor: take from the most over-allocated of those > 1
        counts[np.argmax(np.where(counts > 1, counts - w * n, -np.inf))] -= 1
    order = np.argsort(-(w * n - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    out = np.repeat(np.arange(len(w)), counts)
    rng.shuffle(out)
    return out


def _choice(rng: np.random.Generator, table: dict):
    """One key of `table` drawn with probability proportional to its value."""
    p = np.asarray(list(table.values()), np.float64)
    return list(table)[rng.choice(len(p), p=p / p.sum())]


# --------------------------------------------------------------------------------------------------
# Rendering


@dataclasses.dataclass(frozen=True)
class _Grid:
    """Pixel grid of one image and the affine map from frame to lesion coordinates (unit = lesion radius)."""

    x: np.ndarray  # [W] frame coordinates (unit = shorter image side)
    y: np.ndarray  # [H]
    affine: np.ndarray  # [2, 3]: (u, v) = affine @ (x, y, 1)

    def uv(self):
        """Lesion coordinates (u, v) of every pixel, each [H, W]."""
        a = self.affine
        u = a[0, 0] * self.x[None, :] + a[0, 1] * self.y[:, None] + a[0, 2]
        v = a[1, 0] * self.x[None, :] + a[1, 1] * self.y[:, None] + a[1, 2]
        return u, v


@dataclasses.dataclass(frozen=True)
class _Noise:
    """A smooth random field: a sum of K plane waves with unit variance."""

    freqs: np.ndarray  # [K, 2]
    phases: np.ndarray  # [K]
    amps: np.ndarray  # [K]

    def __call__(self, grid: _Grid, mix=None) -> np.ndarray:
        """The field at lesion coordinates `mix @ (u, v)` of every pixel, as [H, W].

        Plane waves of an affine coordinate map separate into row and column factors, so the field is
        one [H, 2K] @ [2K, W] product.
        """
        a = grid.affine if mix is None else np.asarray(mix, np.float32) @ grid.affine
        alpha, beta, gamma = self.freqs @ a[:, 0], self.freqs @ a[:, 1], self.freqs @ a[:, 2]
        ax = grid.x[:, None] * alpha + (gamma + self.phases)
        by = grid.y[:, None] * beta
        left = np.concatenate([np.cos(by), -np.sin(by)], 1)
        right = np.concatenate([np.cos(ax) * self.amps, np.sin(ax) * self.amps], 1)
        return left @ right.T


def _noise(rng: np.random.Generator, lo: float, hi: float, k: int = 8) -> _Noise:
    radius = np.exp(rng.uniform(np.log(lo), np.log(hi), k))
    angle = rng.uniform(0, 2 * np.pi, k)
    amps = rng.uniform(0.5, 1.0, k)
    amps = amps / np.sqrt(0.5 * np.sum(amps ** 2))
    return _Noise(
        freqs=np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1).astype(np.float32),
        phases=rng.uniform(0, 2 * np.pi, k).astype(np.float32),
        amps=amps.astype(np.float32),
    )


@dataclasses.dataclass(frozen=True)
class _Lesion:
    """Everything every image of one lesion shares."""

    model: str
    radius: float  # fraction of the image's shorter side at zoom 1
    aspect: float
    harmonics: np.ndarray  # [H, 2]: amplitude, phase of the border's k-th harmonic (k = 1..H)
    ragged: float  # fine border irregularity
    softness: float  # border blur in lesion radii
    opacity: float
    palette: np.ndarray  # [C, 3]
    palette_sharpness: float
    center_dark: float
    fields: tuple  # per-lesion noise fields used by the model
    extras: np.ndarray  # model-specific numbers (blob centres, radii...)
    skin: np.ndarray  # [3]
    hairs: np.ndarray  # [N, 5]: x0, y0, angle, width, bend


def _jitter(rng, rgb, amount=0.05):
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, amount, 3), 0.02, 0.98).astype(np.float32)


def _lesion_traits(rng: np.random.Generator, model: str, skin: np.ndarray, hairy: bool) -> _Lesion:
    """Samples the shared traits of one lesion of appearance `model`."""
    irregular = {"nv": 0.02, "mel": 0.16, "bcc": 0.07, "bkl": 0.05, "akiec": 0.09, "scc": 0.09,
                 "df": 0.03, "vasc": 0.03}[model]
    k = np.arange(1, 7)
    amp = irregular * rng.uniform(0.4, 1.0, 6) / k ** 0.6
    if model == "mel":
        amp[0] *= 2.0  # asymmetric: strong first harmonic
    harmonics = np.stack([amp, rng.uniform(0, 2 * np.pi, 6)], 1).astype(np.float32)
    radius = {"nv": (0.20, 0.30), "mel": (0.28, 0.40), "bcc": (0.22, 0.32), "bkl": (0.25, 0.36),
              "akiec": (0.22, 0.32), "scc": (0.22, 0.32), "df": (0.15, 0.22),
              "vasc": (0.18, 0.28)}[model]
    aspect = 1.0 + {"nv": 0.08, "mel": 0.35, "bkl": 0.25, "df": 0.05}.get(model, 0.15) * rng.uniform()
    ragged = {"mel": 0.08, "akiec": 0.06, "scc": 0.06, "bcc": 0.03}.get(model, 0.012)
    softness = {"nv": 0.03, "mel": 0.06, "bcc": 0.08, "bkl": 0.025, "akiec": 0.16, "scc": 0.12,
                "df": 0.10, "vasc": 0.03}[model]
    opacity = {"bcc": rng.uniform(0.65, 0.85), "akiec": rng.uniform(0.7, 0.85),
               "scc": rng.uniform(0.75, 0.9)}.get(model, rng.uniform(0.88, 0.97))
    if model == "nv":
        brown = _jitter(rng, [0.52, 0.33, 0.20], 0.04)
        palette = [brown, brown * 0.82]
    elif model == "mel":
        full = [[0.10, 0.07, 0.07], [0.30, 0.17, 0.11], [0.55, 0.36, 0.24], [0.42, 0.48, 0.60],
                [0.72, 0.30, 0.30], [0.88, 0.84, 0.84]]
        chosen = np.concatenate([[0, 1], rng.choice(np.arange(2, 6), rng.integers(2, 5), replace=False)])
        palette = [_jitter(rng, full[i], 0.03) for i in chosen]
    elif model == "bcc":
        palette = [_jitter(rng, [0.86, 0.52, 0.56], 0.03), _jitter(rng, [0.94, 0.86, 0.88], 0.02)]
    elif model == "bkl":
        tan = _jitter(rng, [0.70, 0.52, 0.38], 0.05)
        palette = [tan, tan * 0.78]
    elif model in ("akiec", "scc"):
        palette = [_jitter(rng, [0.82, 0.42, 0.38], 0.03), _jitter(rng, [0.70, 0.30, 0.30], 0.03)]
    elif model == "df":
        palette = [_jitter(rng, [0.62, 0.43, 0.30], 0.03), _jitter(rng, [0.55, 0.36, 0.26], 0.03)]
    else:  # vasc
        palette = [_jitter(rng, [0.62, 0.10, 0.22], 0.03), _jitter(rng, [0.42, 0.14, 0.40], 0.03)]
    if model == "vasc":  # lobules: centre x, y, radius
        n = rng.integers(4, 10)
        ang = rng.uniform(0, 2 * np.pi, n)
        dist = np.sqrt(rng.uniform(0.0, 0.5, n))
        extras = np.stack([dist * np.cos(ang), dist * np.sin(ang), rng.uniform(0.28, 0.45, n)], 1)
    elif model == "bcc":  # blue-grey ovoid nests
        n = rng.integers(0, 4)
        ang = rng.uniform(0, 2 * np.pi, n)
        dist = rng.uniform(0.1, 0.7, n)
        extras = np.stack([dist * np.cos(ang), dist * np.sin(ang), rng.uniform(0.08, 0.16, n)], 1)
    elif model in ("df", "scc"):  # central white patch / keratin: offset x, y, radius
        extras = np.array([[*rng.normal(0, 0.08, 2), rng.uniform(0.35, 0.55)]])
    else:
        extras = np.zeros((0, 3))
    fields = (
        _noise(rng, 0.8, 3.0),  # colour field 1 / vessel mask
        _noise(rng, 0.8, 3.0),  # colour field 2
        _noise(rng, 5.0, 9.0),  # fissures, vessels, first network family
        _noise(rng, 12.0, 22.0),  # dots, scale, milia
        _noise(rng, 4.0, 10.0),  # ragged border
        _noise(rng, 1.0, 4.0),  # skin mottling
        _noise(rng, 25.0, 45.0),  # skin pores
        _noise(rng, 9.0, 14.0),  # second network family
    ) + tuple(_noise(rng, 0.8, 2.5) for _ in range(max(0, len(palette) - 2)))
    n_hairs = rng.integers(1, 5) if hairy else 0
    hairs = np.stack([rng.uniform(-1.5, 1.5, n_hairs), rng.uniform(-1.5, 1.5, n_hairs),
                      rng.uniform(0, np.pi, n_hairs), rng.uniform(0.003, 0.007, n_hairs),
                      rng.normal(0, 0.15, n_hairs)], 1)
    return _Lesion(
        model=model, radius=float(rng.uniform(*radius)), aspect=float(aspect), harmonics=harmonics,
        ragged=ragged, softness=softness, opacity=float(opacity),
        palette=np.asarray(palette, np.float32), palette_sharpness=float(rng.uniform(2.0, 3.5)),
        center_dark=float({"nv": 0.15, "mel": 0.1, "bkl": 0.05}.get(model, 0.0)),
        fields=fields, extras=extras.astype(np.float32), skin=skin.astype(np.float32),
        hairs=hairs.astype(np.float32),
    )


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _mix(a, b, w):
    return a + (b - a) * w[..., None]


_SWAP = ((0.0, 1.0), (1.0, 0.0))  # evaluates a field at (v, u): a second, independent-looking field


def _border(les: _Lesion, uu, vv, rho):
    """Radius of the lesion border in the direction of each pixel: 1 + sum_k a_k cos(k phi + psi_k)."""
    z = (uu + 1j * vv) / np.maximum(rho, 1e-6)
    zk = np.ones_like(z)
    border = np.ones_like(rho)
    for amp, phase in les.harmonics:
        zk = zk * z
        border += amp * (zk.real * np.cos(phase) - zk.imag * np.sin(phase))
    return border


def _render_lesion(les: _Lesion, grid: _Grid, detail: float):
    """Lesion colour [H, W, 3] and coverage [H, W] on `grid`."""
    f_c1, f_c2, f_mid, f_fine, f_rag = les.fields[:5]
    u, v = grid.uv()
    if les.model == "vasc":
        d = np.hypot(u[..., None] - les.extras[:, 0], v[..., None] - les.extras[:, 1]) / les.extras[:, 2]
        nearest = np.sort(d, axis=-1)
        cover = _sigmoid((1.0 - nearest[..., 0]) / les.softness)
        colour = les.palette[np.argmin(d, axis=-1) % len(les.palette)]
        septum = np.exp(-((nearest[..., 1] - nearest[..., 0]) / 0.12) ** 2)
        colour = _mix(colour, np.float32([0.30, 0.08, 0.15]), 0.5 * detail * septum * cover)
        return colour, cover * les.opacity
    uu, vv = u / les.aspect, v * les.aspect
    rho = np.hypot(uu, vv)
    border = _border(les, uu, vv, rho) + les.ragged * f_rag(grid)
    cover = _sigmoid((border - rho) / les.softness)
    colour_fields = [f_c1(grid), f_c2(grid)] + [f(grid) for f in les.fields[8:]]
    logits = np.stack(colour_fields[: len(les.palette)], -1) * les.palette_sharpness
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    colour = weights @ les.palette
    colour = colour * (1.0 - les.center_dark * np.clip(1.0 - rho, 0, 1))[..., None]
    model = les.model
    if model in ("nv", "mel", "df"):  # pigment network: mesh of two line families, patchy in melanoma
        f_net = les.fields[7]
        line = np.maximum(np.exp(-(f_mid(grid) / 0.3) ** 2), np.exp(-(f_net(grid) / 0.3) ** 2))
        strength = {"nv": 0.25, "mel": 0.35, "df": 0.25}[model]
        if model == "mel":
            line = line * _sigmoid(2.0 * f_c2(grid, _SWAP))
        if model == "df":
            line = line * _sigmoid((rho - 0.5) / 0.08)
        colour = colour * (1.0 - strength * detail * line)[..., None]
    if model == "bcc":  # arborising vessels in patches, pearly sheen, blue-grey nests
        vessel = np.exp(-(f_mid(grid) / 0.12) ** 2) * _sigmoid(3.0 * f_c1(grid, _SWAP))
        colour = _mix(colour, np.float32([0.70, 0.08, 0.14]), 0.85 * detail * vessel)
        for x0, y0, r in les.extras:
            nest = _sigmoid((r - np.hypot(u - x0, v - y0)) / 0.03)
            colour = _mix(colour, np.float32([0.38, 0.42, 0.52]), 0.8 * detail * nest)
    if model == "bkl":  # cerebriform fissures, milia-like cysts, comedo-like openings
        fissure = np.exp(-(f_mid(grid) / 0.3) ** 2)
        colour = colour * (1.0 - 0.35 * detail * fissure)[..., None]
        fine = f_fine(grid)
        colour = _mix(colour, np.float32([0.95, 0.93, 0.85]), 0.9 * detail * _sigmoid((fine - 1.6) / 0.15))
        colour = _mix(colour, np.float32([0.22, 0.15, 0.10]), 0.7 * detail * _sigmoid((-fine - 1.8) / 0.15))
    if model in ("akiec", "scc"):  # scale: white-yellow speckles on red, strawberry-like follicles
        scale = _sigmoid((f_fine(grid) - 0.9) / 0.2) * _sigmoid(1.5 * f_c2(grid) + 0.5)
        colour = _mix(colour, np.float32([0.93, 0.89, 0.78]), 0.85 * detail * scale)
    if model in ("df", "scc"):  # central white scar (df) / keratin crust (scc)
        x0, y0, r = les.extras[0]
        centre = _sigmoid((r - np.hypot(u - x0, v - y0) + 0.08 * f_rag(grid, _SWAP)) / 0.08)
        target = np.float32([0.92, 0.88, 0.84]) if model == "df" else np.float32([0.88, 0.82, 0.62])
        colour = _mix(colour, target, 0.9 * centre)
    return colour, cover * les.opacity


def _render(les: _Lesion, rng: np.random.Generator, h: int, w: int, *, clinical: bool,
            circle: float, vignette: float) -> np.ndarray:
    """One uint8 [h, w, 3] view of `les`: new rotation, zoom, offset, flip and lighting."""
    side = np.float32(min(h, w))
    x1 = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / side
    y1 = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / side
    theta = rng.uniform(0, 2 * np.pi)
    lo, hi = (0.7, 1.3) if clinical else (0.85, 1.2)
    size = les.radius * np.exp(rng.uniform(np.log(lo), np.log(hi))) * (0.85 if clinical else 1.0)
    off = rng.normal(0, 0.09 if clinical else 0.05, 2)
    flip = -1.0 if rng.uniform() < 0.5 else 1.0
    rot = np.array([[flip * np.cos(theta), flip * np.sin(theta)], [-np.sin(theta), np.cos(theta)]]) / size
    grid = _Grid(x=x1, y=y1, affine=np.concatenate([rot, -rot @ off[:, None]], 1).astype(np.float32))
    x, y = x1[None, :], y1[:, None]
    detail = 0.65 if clinical else 1.0
    f_mottle, f_pore = les.fields[5], les.fields[6]
    texture = 1.0 + 0.05 * f_mottle(grid, 0.3 * np.eye(2)) + 0.015 * detail * f_pore(grid)
    skin = les.skin * texture[..., None]
    colour, alpha = _render_lesion(les, grid, detail)
    if clinical:  # pigment reads darker on darker skin
        lum = float(les.skin @ np.float32([0.3, 0.59, 0.11]))
        colour = colour * np.float32(min(1.0, 0.7 + 0.3 * lum / 0.75))
    img = _mix(skin, colour, alpha)
    if len(les.hairs):
        u, v = grid.uv()
        ca, sa = np.cos(les.hairs[:, 2]), np.sin(les.hairs[:, 2])
        du, dv = u[..., None] - les.hairs[:, 0], v[..., None] - les.hairs[:, 1]
        along, across = du * ca + dv * sa, dv * ca - du * sa
        dist = np.abs(across - les.hairs[:, 4] * along ** 2) / (les.hairs[:, 3] / les.radius)
        hair = np.exp(-(dist ** 2).min(-1))
        img = _mix(img, np.float32([0.14, 0.10, 0.08]), 0.75 * hair)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = np.float32(np.cos(angle)) * x + np.float32(np.sin(angle)) * y
    if clinical:  # phone: colour cast, flash hot-spot, strong gradient, drape, sensor noise, blur
        cast = np.float32([1.06, 1.0, 0.90]) if rng.uniform() < 0.6 else np.float32([0.93, 1.0, 1.07])
        cast = 1.0 + (cast - 1.0) * rng.uniform(0.3, 1.0)
        gain = (rng.uniform(0.75, 1.15) * cast * (1.0 + rng.normal(0, 0.02, 3))).astype(np.float32)
        hx, hy = rng.uniform(-0.4, 0.4, 2)
        flash = np.float32(rng.uniform(0.0, 0.2)) * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / 0.08)
        img = img * (1.0 + 0.2 * gradient)[..., None] * gain + flash[..., None]
        if rng.uniform() < 0.35:
            edge_angle = rng.uniform(0, 2 * np.pi)
            edge = np.float32(np.cos(edge_angle)) * x + np.float32(np.sin(edge_angle)) * y
            drape = _sigmoid((edge - np.float32(rng.uniform(0.35, 0.6))) / 0.02)
            cloth = [[0.30, 0.48, 0.60], [0.30, 0.55, 0.42], [0.85, 0.85, 0.85], [0.45, 0.45, 0.48]]
            fabric = _jitter(rng, cloth[rng.integers(len(cloth))], 0.03) * gain
            img = _mix(img, fabric, drape)
        noise_sd = rng.uniform(0.01, 0.03)
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise_sd)
    else:  # dermoscope: even lighting, vignette, black outside the lens circle
        gain = (rng.uniform(0.88, 1.08) * (1.0 + rng.normal(0, 0.03, 3))).astype(np.float32)
        img = img * (1.0 + 0.08 * gradient)[..., None] * gain
        radial = np.hypot(x, y)
        img = img * (1.0 - vignette * np.clip(radial / 0.75, 0, 1) ** 2)[..., None]
        if circle:
            img = img * _sigmoid((circle - radial) / 0.01)[..., None]
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.008)
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if clinical:
        blur = rng.uniform(0.4, 1.2) * min(h, w) / 128
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(blur)))
    return out


def _lesion_rng(seed: int, tag: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, tag, index])


# --------------------------------------------------------------------------------------------------
# HAM10000


def _write_csv(path: pathlib.Path, header, rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_ham10000(root, *, num_lesions: int, seed: int = 0, image_size: int = 128) -> pathlib.Path:
    """Writes a synthetic HAM10000 (Dataverse layout) with `num_lesions` lesions; returns the manual_dir.

    Images are 4:3 landscape JPEGs (600x450 in the real set) of height `image_size`.
    """
    if num_lesions < 1:
        raise ValueError(f"num_lesions must be >= 1, got {num_lesions}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    root = pathlib.Path(root)
    rng = np.random.default_rng([seed, 0])
    dx_names = list(HAM_DX)
    dx = [dx_names[i] for i in _allocate(rng, num_lesions, list(HAM_DX.values()), every=True)]
    counts = np.asarray(list(HAM_IMAGES_PER_LESION))[
        _allocate(rng, num_lesions, list(HAM_IMAGES_PER_LESION.values()))]
    lesion_numbers = rng.choice(max(7_650, 2 * num_lesions), num_lesions, replace=False)  # HAM_00076xx
    n_images = int(counts.sum())
    image_numbers = _HAM_FIRST_IMAGE_NUMBER + rng.permutation(n_images)
    part_1_end = _HAM_FIRST_IMAGE_NUMBER + (n_images + 1) // 2
    # the blank-age and unknown-sex quirks (57 rows each in 10,015) appear at least once from 20 lesions
    quirk_rate = 57 / 10015
    blank_age = rng.uniform(size=num_lesions) < quirk_rate
    unknown_sex = rng.uniform(size=num_lesions) < quirk_rate
    if num_lesions >= 20:
        blank_age[rng.integers(num_lesions)] = True
        unknown_sex[rng.integers(num_lesions)] = True
    height, width = image_size, round(image_size * 600 / 450)
    for part in (1, 2):
        (root / f"HAM10000_images_part_{part}").mkdir(parents=True, exist_ok=True)
    rows = []
    next_image = 0
    for i in range(num_lesions):
        lrng = _lesion_rng(seed, 1, i)
        dx_type = _choice(lrng, _HAM_DX_TYPE[dx[i]])
        site = "vidir_molemax" if dx_type == "follow_up" else _choice(lrng, _HAM_SITE_NON_FOLLOW_UP)
        age = "" if blank_age[i] else f"{float(np.clip(5 * np.round(lrng.normal(52, 17) / 5), 0, 85)):.1f}"
        sex = "unknown" if unknown_sex[i] else ("male" if lrng.uniform() < 5406 / 9958 else "female")
        localization = _choice(lrng, _HAM_LOCALIZATION)
        fitz = lrng.choice(3, p=[0.35, 0.45, 0.20])
        skin = _jitter(lrng, _FITZPATRICK_RGB[fitz] * np.float32([1.0, 0.94, 0.96]), 0.02)
        les = _lesion_traits(lrng, _MODEL_OF[dx[i]], skin, hairy=lrng.uniform() < 0.25)
        circle = {"rosendahl": 0.62, "vienna_dias": 0.58}.get(site, 0.0) * lrng.uniform(0.95, 1.05)
        vignette = {"vidir_modern": 0.35, "vidir_molemax": 0.15}.get(site, 0.1)
        lesion_id = f"HAM_{lesion_numbers[i]:07d}"
        for _ in range(counts[i]):
            number = int(image_numbers[next_image])
            next_image += 1
            image_id = f"ISIC_{number:07d}"
            part = 1 if number < part_1_end else 2
            pixels = _render(les, lrng, height, width, clinical=False, circle=circle, vignette=vignette)
            Image.fromarray(pixels).save(
                root / f"HAM10000_images_part_{part}" / f"{image_id}.jpg", format="JPEG", quality=90)
            rows.append((lesion_id, image_id, dx[i], dx_type, age, sex, localization, site))
    _write_csv(root / "HAM10000_metadata.csv", HAM_HEADER, rows)
    return root


# --------------------------------------------------------------------------------------------------
# PAD-UFES-20


def _bool(rng: np.random.Generator, p_true: float, p_unk: float = 0.0) -> str:
    r = rng.uniform()
    return "UNK" if r < p_unk else ("True" if r < p_unk + p_true else "False")


def write_pad_ufes20(root, *, num_patients: int, seed: int = 0, image_size: int = 128) -> pathlib.Path:
    """Writes a synthetic PAD-UFES-20 (Mendeley layout) with `num_patients` patients; returns the manual_dir.

    Images are PNG smartphone-style photos whose shorter side is `image_size` (the longer side varies).
    """
    if num_patients < 1:
        raise ValueError(f"num_patients must be >= 1, got {num_patients}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    root = pathlib.Path(root)
    rng = np.random.default_rng([seed, 100])
    lesions_per_patient = np.asarray(list(_PAD_LESIONS_PER_PATIENT))[
        _allocate(rng, num_patients, list(_PAD_LESIONS_PER_PATIENT.values()))]
    num_lesions = int(lesions_per_patient.sum())
    dx_names = list(PAD_DX)
    dx = [dx_names[i] for i in _allocate(rng, num_lesions, list(PAD_DX.values()), every=True)]
    images_per_lesion = np.asarray(list(_PAD_IMAGES_PER_LESION))[
        _allocate(rng, num_lesions, list(_PAD_IMAGES_PER_LESION.values()))]
    n_images = int(images_per_lesion.sum())
    patient_numbers = rng.choice(np.arange(1, 2 * num_patients + 100), num_patients, replace=False)
    lesion_numbers = rng.choice(np.arange(1, 3 * num_lesions + 100), num_lesions, replace=False)
    image_numbers = rng.permutation(n_images)
    parts = min(_PAD_PARTS, n_images)
    for part in range(1, parts + 1):
        (root / "images" / f"imgs_part_{part}" / f"imgs_part_{part}").mkdir(parents=True, exist_ok=True)
    rows = []
    lesion, image = 0, 0
    for p in range(num_patients):
        prng = _lesion_rng(seed, 2, p)
        patient = f"PAT_{patient_numbers[p]}"
        own = range(lesion, lesion + lesions_per_patient[p])
        lesion += lesions_per_patient[p]
        biopsied = {j: prng.uniform() < _PAD_BIOPSY_RATE[dx[j]] for j in own}
        # the real file only has the interview fields for (almost all) biopsied patients
        interviewed = any(biopsied.values()) or prng.uniform() < 0.1
        fitz = int(prng.choice(6, p=_PAD_FITZPATRICK))
        age = str(int(np.clip(prng.normal(60, 15), 6, 94)))
        if interviewed:
            father, mother = prng.choice(_PAD_BACKGROUND, 2)
            social = dict(
                smoke=_bool(prng, 0.15), drink=_bool(prng, 0.25), background_father=str(father),
                background_mother=str(mother), pesticide=_bool(prng, 0.3),
                gender="MALE" if prng.uniform() < 0.5 else "FEMALE",
                skin_cancer_history=_bool(prng, 0.45), cancer_history=_bool(prng, 0.5),
                has_piped_water=_bool(prng, 0.85), has_sewage_system=_bool(prng, 0.7),
                fitspatrick=f"{fitz + 1:.1f}")
        else:
            social = dict.fromkeys(
                ("smoke", "drink", "background_father", "background_mother", "pesticide", "gender",
                 "skin_cancer_history", "cancer_history", "has_piped_water", "has_sewage_system",
                 "fitspatrick"), "")
        skin = _jitter(prng, _FITZPATRICK_RGB[fitz], 0.025)
        for j in own:
            lrng = _lesion_rng(seed, 3, j)
            les = _lesion_traits(lrng, _MODEL_OF[dx[j]], skin, hairy=lrng.uniform() < 0.1)
            region = _choice(lrng, _PAD_REGION)
            d1 = float(np.round(max(2.0, lrng.gamma(3.0, 3.5))))
            d2 = float(np.round(max(1.0, d1 * lrng.uniform(0.6, 1.0))))
            diameters = (f"{d1:.1f}", f"{d2:.1f}") if interviewed else ("", "")
            malignant = dx[j] in ("BCC", "SCC", "MEL")
            symptoms = [_bool(lrng, 0.6 if malignant else 0.4, 0.02) for _ in range(6)]
            for _ in range(images_per_lesion[j]):
                number = int(image_numbers[image])
                image += 1
                img_id = f"PAT_{patient_numbers[p]}_{lesion_numbers[j]}_{number}.png"
                long_side = round(image_size * lrng.uniform(1.0, 1.35))
                h, w = (image_size, long_side) if lrng.uniform() < 0.5 else (long_side, image_size)
                pixels = _render(les, lrng, h, w, clinical=True, circle=0.0, vignette=0.0)
                part = 1 + number * parts // n_images
                Image.fromarray(pixels).save(
                    root / "images" / f"imgs_part_{part}" / f"imgs_part_{part}" / img_id, format="PNG",
                    compress_level=1)
                row = dict(patient_id=patient, lesion_id=str(lesion_numbers[j]), age=age, region=region,
                           diameter_1=diameters[0], diameter_2=diameters[1], diagnostic=dx[j],
                           img_id=img_id, biopsed=str(bool(biopsied[j])), **social)
                row.update(zip(("itch", "grew", "hurt", "changed", "bleed", "elevation"), symptoms))
                rows.append(tuple(row[c] for c in PAD_HEADER))
    order = rng.permutation(len(rows))
    _write_csv(root / "metadata.csv", PAD_HEADER, [rows[i] for i in order])
    return root
