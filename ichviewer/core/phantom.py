"""Synthetic head CT: seeded volumes in HU with labelled haemorrhages and high-density mimics.

`generate_case(seed, ...)` builds an axial non-contrast head CT as a `CTVolume` (int16
HU, slice 0 the most inferior) with a boolean voxel mask per haemorrhage subtype, the
per-slice labels derived from the masks, and the lesion volumes in mL by voxel count.

How it is built (all vectorised numpy, values from ../shared/REFERENCE.md):

* Anatomy lives in an adult "atlas" frame in mm (X to the patient's left, Y posterior,
  Z superior, origin near the AC-PC midpoint). Each case scales, stretches and rotates
  the atlas (seeded), so head size, shape and position vary. Because the rotation is
  about the table axis only, atlas X/Y are 2-D arrays and Z is 1-D; every structure is
  an implicit (approximately signed-distance) function painted over the previous ones
  with a one-pixel anti-aliasing ramp, which gives partial volume at the edges.
* Gyri and sulci come from the zero set of a smooth random field near the brain
  surface: sulcal CSF where |F| is small, a grey-matter band around it and under the
  surface (the cortical ribbon), white matter deeper.
* Lesions are grown by ranking: within the tissue the subtype belongs to (parenchyma,
  ventricles, subarachnoid spaces, the space under the inner table), voxels are ordered
  by a priority whose level sets have the expected shape (a lens for EDH, a flat-topped
  crescent for SDH, an irregular ball for IPH, a dependent fluid level or a cast for IVH,
  a spread from a cistern or sulcus for SAH) and exactly N = round(V / voxel volume)
  voxels are taken. The realised volume is therefore the target to within half a voxel,
  which is within 10 % whenever the target is at least five voxels. Sub-voxel targets
  are rounded up to one voxel (the mask lives on the voxel grid; a lesion smaller than a
  voxel is still shown at full density and labelled), so for a punctate bleed on coarse
  grids the realised volume can exceed the target; `PhantomCase.volume_ml` always
  reports the realised, voxel-counted volume.
* Shapes and places follow REFERENCE.md: EDH a lens against the inner table (temporal or
  parietal; kept between the coronal and lambdoid sutures and off the sagittal one), SDH a
  flat-topped crescent over the convexity on one side of the falx, above the tentorium;
  SAH in sulci, Sylvian and interhemispheric fissures and basal cisterns; IVH layering in
  the dependent occipital horns (a horizontal fluid level) or casting a ventricle; IPH an
  irregular ball in putamen, thalamus, a lobe or the cerebellum, often with an oedema rim.
  Lesions above ~8 mL push the midline structures and ventricles away (midline shift up
  to 9 mm); the skull, scalp and cortex surface are not deformed.
* Mimics (calcification of choroid plexus, pineal or falx; metal with streaks; beam
  hardening between the petrous bones) change HU only, never a mask or a label.
* Noise is gaussian, slightly correlated in plane (~0.35 mm), 2.5-4 HU SD on 5 mm slices
  and sqrt(5 / slice_mm) times more on thinner ones.
* A slice is labelled positive for a subtype when that subtype's mask has at least one
  voxel on the slice; ANY is the union.
* Slice thickness: by default each slice is the volume sampled at its centre plane (no
  partial volume across the slice). With `thickness_planes=k` each slice is the mean of k
  equally spaced planes across its thickness, as a real CT slice integrates over its
  thickness: the anatomy, lesions and mimics are built on the fine planes, the noise is
  added to the averaged slice (at the thick slice's level), a slice's mask is the union of
  its planes' masks, and lesion volumes are counted on the fine planes. Metal and
  beam-hardening streaks are drawn once per slice (they come from its reconstruction) and
  weighted per plane by that plane's metal or beam-hardening amount.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ichviewer import LABELS, SUBTYPES
from ichviewer.core.volume import DENSE_HU, CTVolume

#: Accepted values of `subtype` besides None (random).
SUBTYPE_CHOICES: tuple[str, ...] = (*SUBTYPES, "mixed", "none")
#: Accepted values of `mimic` besides None.
MIMIC_KINDS: tuple[str, ...] = ("calcification", "metal", "beam-hardening")
#: A streak pixel counts as the mimic's (`PhantomCase.mimic_mask`) once it adds this many HU: enough
#: to lift brain (20-45 HU) into the blood range (50-90 HU) on its own or with the noise.
MIMIC_STREAK_HU = 20.0
#: Subtype pairs drawn for `subtype="mixed"` (REFERENCE.md: IPH+IVH, SAH+IVH, SDH+SAH).
MIXED_COMBOS: tuple[tuple[str, str], ...] = (("IPH", "IVH"), ("SAH", "IVH"), ("SDH", "SAH"))
AGES: tuple[str, ...] = ("adult", "child")
#: Largest lesion volume the generator accepts (mL).
MAX_VOLUME_ML = 150.0
#: Highest stored CT value (12-bit scanners saturate here; metal reaches it).
HU_MAX = 3071
HU_MIN = -1024

# Tissue codes of the label map in `PhantomCase.tissue`.
_AIR, _SCALP, _BONE, _CSF, _GM, _WM, _VENT, _DEEP, _NUC, _CBL, _BS = range(11)
_PARENCHYMA = (_GM, _WM, _NUC, _CBL, _BS)
#: Name -> code of `PhantomCase.tissue` (the tissue a voxel is mostly made of, before lesions).
TISSUE_CODES: dict[str, int] = {
    "air": _AIR,
    "scalp": _SCALP,
    "bone": _BONE,
    "csf": _CSF,  # subarachnoid: sulci, fissures, cisterns
    "grey_matter": _GM,
    "white_matter": _WM,
    "ventricle": _VENT,
    "skull_base_soft_tissue": _DEEP,
    "deep_grey_nuclei": _NUC,
    "cerebellum": _CBL,
    "brainstem": _BS,
}


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """One synthetic head CT with its ground truth.

    `masks[s]` is a bool (z, y, x) array per subtype in `SUBTYPES` (all False when absent);
    `slice_labels[i]` maps every label in `LABELS` to 0/1 for slice i (ascending,
    inferior to superior); `volume_ml` holds the voxel-counted volume per subtype and
    `"total"` (union of the masks).
    """

    volume: CTVolume
    masks: dict[str, np.ndarray]
    slice_labels: list[dict[str, int]]
    volume_ml: dict[str, float]
    subtype: str
    mimic: str | None
    age: str
    seed: int
    slice_mm: float
    requested_volume_ml: float | None = None
    mimic_detail: str = ""
    sites: dict[str, str] = field(default_factory=dict)
    #: int8 (z, y, x) tissue map, codes in `TISSUE_CODES` (the anatomy under any lesion).
    tissue: np.ndarray | None = None
    #: int8 (y, x): +1 on the patient's left of the midsagittal plane, -1 on the right, 0 within 1 mm of it.
    hemisphere: np.ndarray | None = None
    #: bool (z, y, x): the voxels the mimic made dense or blood-like (`_Canvas.mark_mimic`); None without a mimic.
    mimic_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = self.volume.shape
        if set(self.masks) != set(SUBTYPES):
            raise ValueError(f"masks must have exactly the subtypes {SUBTYPES}, got {sorted(self.masks)}")
        for name, m in self.masks.items():
            if m.shape != shape or m.dtype != bool:
                raise ValueError(f"mask {name} must be bool with shape {shape}, got {m.dtype} {m.shape}")
        if len(self.slice_labels) != shape[0]:
            raise ValueError(f"need one label mapping per slice ({shape[0]}), got {len(self.slice_labels)}")
        if self.mimic_mask is not None and (self.mimic_mask.shape != shape or self.mimic_mask.dtype != bool):
            raise ValueError(f"mimic_mask must be bool with shape {shape}, got {self.mimic_mask.dtype} {self.mimic_mask.shape}")

    @property
    def present(self) -> tuple[str, ...]:
        """Subtypes with at least one voxel, in `SUBTYPES` order."""
        return tuple(s for s in SUBTYPES if self.volume_ml[s] > 0)

    def labels_json(self) -> dict[str, Any]:
        """The `labels.json` document written next to the DICOM series."""
        return {
            "series_uid": self.volume.series_uid,
            "study_uid": self.volume.study_uid,
            "seed": self.seed,
            "subtype": self.subtype,
            "present": list(self.present),
            "age": self.age,
            "mimic": self.mimic,
            "mimic_detail": self.mimic_detail,
            "slice_mm": self.slice_mm,
            "n_slices": self.volume.n_slices,
            "sites": dict(self.sites),
            "requested_volume_ml": self.requested_volume_ml,
            "slices": [dict(d) for d in self.slice_labels],
            "volume_ml": {k: round(v, 4) for k, v in self.volume_ml.items()},
        }


# ----------------------------------------------------------------------------- helpers
def _sig(t: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(t, dtype=np.float32)))


def _ellipsoid_sdf(X, Y, Z, c, r) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to an axis-aligned ellipsoid."""
    dx, dy, dz = (X - c[0]) / r[0], (Y - c[1]) / r[1], (Z - c[2]) / r[2]
    q = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-6
    g = np.sqrt((dx / r[0]) ** 2 + (dy / r[1]) ** 2 + (dz / r[2]) ** 2) / q + 1e-6
    return ((q - 1.0) / g).astype(np.float32)


def _capsule_sdf(X, Y, Z, a, b, ra, rb) -> np.ndarray:
    """Signed distance to a segment a-b whose radius goes linearly from ra to rb."""
    a = np.asarray(a, dtype=np.float32)
    ab = np.asarray(b, dtype=np.float32) - a
    L2 = float(ab @ ab)
    px, py, pz = X - a[0], Y - a[1], Z - a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / L2, 0.0, 1.0)
    d = np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2)
    return (d - (ra + (rb - ra) * t)).astype(np.float32)


def _ridge(X):
    """Y (atlas mm) of the petrous ridge / dorsum line that bounds the posterior fossa."""
    return 6.0 + 0.55 * np.abs(X)


def _tentorium(X, Y):
    """Z (atlas mm) of the tentorium: highest at the incisura, sloping down posteriorly."""
    return -8.0 - 0.28 * (Y - 15.0) - 0.10 * np.abs(X)


def _floor(X, Y):
    """Z (atlas mm) of the cranial floor: anterior, middle and posterior fossae."""
    # Orbital roofs bulge upwards on either side; the cribriform plate dips in the midline.
    ant = -27.0 + 8.0 * np.exp(-(((np.abs(X) - 28.0) / 13.0) ** 2)) * np.exp(-(((Y + 50.0) / 22.0) ** 2)) - 4.0 * np.exp(-((X / 6.0) ** 2))
    mid = -30.0 + (-44.0 + 30.0) * _sig((np.abs(X) - 17.0) / 3.0)  # sella vs temporal fossae
    post = -64.0
    # The sphenoid ridge curves forwards laterally, where the temporal poles sit.
    f = ant + (mid - ant) * _sig((Y + 22.0 + 0.3 * np.abs(X)) / 3.0)
    return f + (post - f) * _sig((Y - _ridge(X)) / 2.5)


#: Inner-table ellipsoid of the adult atlas (semi-axes in mm); Z semi-axis differs below 0.
_IC_CENTRE = (0.0, 4.0, 0.0)
_IC_AXES = (64.0, 84.0, 72.0)
_IC_AZ_LOW = 95.0


def _ic_sdf(X, Y, Z) -> tuple[np.ndarray, np.ndarray]:
    """Approximate signed distance (atlas mm) to the inner table: (with the skull base, ellipsoid only).

    X and Y may be (1, ny, nx) and Z (nz, 1, 1): the in-plane and through-plane terms are
    computed separately and only combined once, which keeps this cheap on big grids.
    """
    Yc = Y - _IC_CENTRE[1]
    ax = _IC_AXES[0] * (1.0 + 0.06 * np.clip(Yc / _IC_AXES[1], -1, 1))  # wider posteriorly
    az = np.where(Z < 0, _IC_AZ_LOW, _IC_AXES[2]).astype(np.float32)
    a_xy = (X / ax) ** 2 + (Yc / _IC_AXES[1]) ** 2
    b_xy = (X / ax**2) ** 2 + (Yc / _IC_AXES[1] ** 2) ** 2
    a_z = (Z / az) ** 2
    b_z = (Z / az**2) ** 2
    q = np.sqrt(a_xy + a_z) + np.float32(1e-6)
    ell = (q - 1.0) * q / (np.sqrt(b_xy + b_z) + np.float32(1e-9))
    ell = ell.astype(np.float32)
    return np.maximum(ell, (_floor(X, Y) - Z).astype(np.float32)), ell


def _surface_point(direction: np.ndarray, origin=(0.0, 4.0, 5.0)) -> np.ndarray:
    """Where a ray from `origin` along `direction` meets the inner table (atlas mm)."""
    o = np.asarray(origin, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    lo, hi = 0.0, 200.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        p = o + mid * d
        s, _ = _ic_sdf(np.float32(p[0]), np.float32(p[1]), np.float32(p[2]))
        lo, hi = (mid, hi) if float(s) < 0 else (lo, mid)
    return o + lo * d


def _smooth_field(rng: np.random.Generator, sigma_mm: float, step: float = 2.0) -> tuple[np.ndarray, tuple]:
    """A smooth gaussian random field on a coarse atlas grid, scaled so |grad| ~ 1 per mm."""
    from scipy import ndimage

    lo = np.array([-96.0, -116.0, -80.0])
    n = (np.array([192.0, 232.0, 180.0]) / step).astype(int) + 1
    white = rng.standard_normal((n[2], n[1], n[0])).astype(np.float32)
    f = ndimage.gaussian_filter(white, sigma_mm / step, mode="wrap")
    gz, gy, gx = np.gradient(f, step)
    f /= float(np.median(np.sqrt(gx * gx + gy * gy + gz * gz)))
    return f, (lo, step)


def _sample_field(field_: np.ndarray, geom: tuple, X2: np.ndarray, Y2: np.ndarray, Zs: np.ndarray) -> np.ndarray:
    """Trilinear samples of a coarse field at atlas points (X2, Y2 per pixel, Zs per slice)."""
    from scipy import ndimage

    lo, step = geom
    shape = (Zs.size, *X2.shape)
    coords = np.empty((3, *shape), dtype=np.float32)
    coords[0] = ((Zs - lo[2]) / step)[:, None, None]
    coords[1] = ((Y2 - lo[1]) / step)[None]
    coords[2] = ((X2 - lo[0]) / step)[None]
    return ndimage.map_coordinates(field_, coords, order=1, mode="nearest", output=np.float32)


def _upsample2(a: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Bilinear 2x in-plane upsampling of a[:, ::2, ::2]-style samples back to `shape`."""
    nz, ny, nx = shape
    out = np.empty((nz, 2 * a.shape[1], 2 * a.shape[2]), dtype=np.float32)
    out[:, ::2, ::2] = a
    out[:, ::2, 1:-1:2] = 0.5 * (a[:, :, :-1] + a[:, :, 1:])
    out[:, ::2, -1] = a[:, :, -1]
    out[:, 1:-1:2, :] = 0.5 * (out[:, 0:-2:2, :] + out[:, 2::2, :])
    out[:, -1, :] = out[:, -2, :]
    return out[:, :ny, :nx]


def _radial_field(field_: np.ndarray, geom: tuple, X2, Y2, Zs, where: np.ndarray, r0: float = 70.0) -> np.ndarray:
    """F at each voxel's direction from the brain centre, in mm of tangential distance (99 elsewhere)."""
    from scipy import ndimage

    lo, step = geom
    out = np.full(where.shape, 99.0, dtype=np.float32)
    idx = np.flatnonzero(where)
    zi, yi, xi = np.unravel_index(idx, where.shape)
    px, py, pz = X2[yi, xi], Y2[yi, xi] - 4.0, Zs[zi] - 5.0
    r = np.sqrt(px * px + py * py + pz * pz) + 1e-3
    k = np.float32(r0) / r
    coords = np.stack([(pz * k + 5.0 - lo[2]) / step, (py * k + 4.0 - lo[1]) / step, (px * k - lo[0]) / step])
    vals = ndimage.map_coordinates(field_, coords, order=1, mode="nearest")
    out.ravel()[idx] = vals / k * 1.2
    return out


class _Canvas:
    """The HU volume being painted, its tissue map and the atlas coordinates of its voxels."""

    def __init__(self, X2: np.ndarray, Y2: np.ndarray, Zs: np.ndarray, aa_mm: float, hu=None, tissue=None, to_rc=None,
                 X2_inner: np.ndarray | None = None, pad: float = 0.0) -> None:
        self.X2, self.Y2, self.Z = X2, Y2, Zs
        self.to_rc = to_rc  # atlas (X, Y) -> (row, col) of this canvas
        # Brain structures use X2_inner: the atlas displaced by mass effect (the skull is not).
        self.X2_inner = X2 if X2_inner is None else X2_inner
        self.pad = float(pad)
        shape = (Zs.size, *X2.shape)
        self.hu = np.full(shape, -1000.0, dtype=np.float32) if hu is None else hu
        self.tissue = np.zeros(shape, dtype=np.int8) if tissue is None else tissue
        self.aa = np.float32(aa_mm)  # one output pixel in atlas mm: the anti-aliasing ramp
        self.mimic: np.ndarray | None = None  # the mimic's voxels, once one is painted (`mark_mimic`)
        self.full = (slice(None), slice(None), slice(None))

    def box(self, lo, hi):
        """Index slices of the voxels whose atlas coordinates fall in [lo, hi] (empty slices if none)."""
        empty = (slice(0, 0), slice(0, 0), slice(0, 0))
        lo = (lo[0] - self.pad, lo[1], lo[2])
        hi = (hi[0] + self.pad, hi[1], hi[2])
        zi = np.nonzero((self.Z >= lo[2]) & (self.Z <= hi[2]))[0]
        if zi.size == 0:
            return empty
        ny, nx = self.X2.shape
        if self.to_rc is not None:
            # Corners of the atlas box in pixel space: the rotation is about the table axis.
            r, c = self.to_rc(np.array([lo[0], lo[0], hi[0], hi[0]]), np.array([lo[1], hi[1], lo[1], hi[1]]))
            r0, r1 = max(int(np.floor(r.min())), 0), min(int(np.ceil(r.max())) + 1, ny)
            c0, c1 = max(int(np.floor(c.min())), 0), min(int(np.ceil(c.max())) + 1, nx)
            if r0 >= r1 or c0 >= c1:
                return empty
            return (slice(zi[0], zi[-1] + 1), slice(r0, r1), slice(c0, c1))
        m = (self.X2 >= lo[0]) & (self.X2 <= hi[0]) & (self.Y2 >= lo[1]) & (self.Y2 <= hi[1])
        if not m.any():
            return empty
        rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        return (slice(zi[0], zi[-1] + 1), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))

    def around(self, c, r):
        return self.box(np.asarray(c) - np.asarray(r), np.asarray(c) + np.asarray(r))

    def coords(self, b, fixed: bool = False):
        """Atlas (X, Y, Z) of a box, broadcastable; `fixed` ignores mass effect (skull, face)."""
        X2 = self.X2 if fixed else self.X2_inner
        return X2[b[1], b[2]][None], self.Y2[b[1], b[2]][None], self.Z[b[0]][:, None, None]

    def mark_mimic(self, b, where: np.ndarray) -> None:
        """Add `where` (bool, the shape of box `b`) to the mimic's voxels (`PhantomCase.mimic_mask`)."""
        if self.mimic is None:
            self.mimic = np.zeros(self.hu.shape, dtype=bool)
        self.mimic[b] |= where

    def paint(self, b, sdf: np.ndarray, value, code: int | None = None, opacity: float | np.ndarray = 1.0) -> None:
        if b is None:
            return
        a = np.clip(0.5 - sdf / self.aa, 0.0, 1.0)
        if not (np.isscalar(opacity) and opacity == 1.0):
            a *= np.asarray(opacity, dtype=np.float32)
        h = self.hu[b]
        h += a * (np.float32(value) - h) if np.isscalar(value) else a * (value - h)
        if code is not None:
            t = self.tissue[b]
            t[a > 0.5] = code


# ----------------------------------------------------------------------------- plan
@dataclass
class _Params:
    scale: float
    sx: float
    sy: float
    yaw: float
    skull: float
    scalp: float
    gm: float
    wm: float
    csf: float
    sub_csf: float
    sulcal_width: float
    sulcal_depth: float
    vent: float
    nuc: float


def _draw_params(rng: np.random.Generator, age: str) -> _Params:
    child = age == "child"
    scale = rng.uniform(0.80, 0.88) if child else rng.uniform(0.93, 1.06)
    atrophy = rng.uniform(0.6, 0.8) if child else rng.uniform(0.8, 1.4)
    gm = rng.uniform(34.0, 37.0) if child else rng.uniform(37.0, 42.0)
    wm = gm - (rng.uniform(4.0, 6.0) if child else rng.uniform(11.0, 15.0))
    return _Params(
        scale=scale,
        sx=scale * rng.uniform(0.95, 1.05),
        sy=scale * rng.uniform(0.96, 1.04),
        yaw=math.radians(rng.uniform(-6.0, 6.0)),
        skull=rng.uniform(2.0, 3.0) if child else rng.uniform(5.0, 7.0),
        scalp=rng.uniform(3.0, 4.0) if child else rng.uniform(4.5, 6.5),
        gm=gm,
        wm=wm,
        csf=rng.uniform(4.0, 10.0),
        sub_csf=(0.6 if child else 1.0) * atrophy,
        sulcal_width=(1.1 if child else 1.6) * atrophy,
        sulcal_depth=rng.uniform(11.0, 15.0),
        vent=rng.uniform(0.85, 1.0) if child else rng.uniform(0.9, 1.1) * math.sqrt(atrophy),
        nuc=gm - rng.uniform(2.0, 4.0),
    )


# ----------------------------------------------------------------------------- anatomy
_VENT_NODES = {  # adult lateral ventricle skeleton (X for the left side; mirrored): (X, Y, Z), radius
    "F0": ((5.5, -33.0, 9.0), 3.5),
    "F1": ((6.5, -20.0, 13.0), 5.0),
    "B1": ((8.0, -2.0, 17.0), 5.0),
    "B2": ((12.0, 16.0, 17.0), 5.0),
    "A": ((19.0, 28.0, 8.0), 7.0),
    "O": ((17.0, 50.0, 3.0), 2.5),
    "T1": ((28.0, 14.0, -8.0), 4.0),
    "T2": ((30.0, -8.0, -18.0), 2.5),
}
#: Approximate volume (mL) of all ventricles of the atlas at unit scale and dilation.
_VENT_ML = 20.0
_VENT_SEGMENTS = (("F0", "F1"), ("F1", "B1"), ("B1", "B2"), ("B2", "A"), ("A", "O"), ("A", "T1"), ("T1", "T2"))


def _vent_node(name: str, side: int, vs: float) -> tuple[np.ndarray, float]:
    (x, y, z), r = _VENT_NODES[name]
    # Dilated ventricles keep a thin septum: push the centre out by the extra radius.
    return np.array([side * (x + (vs - 1.0) * r), y, z], dtype=np.float32), r * vs


def _paint_anatomy(cv: _Canvas, p: _Params, F: np.ndarray, coarse: np.ndarray, geom: tuple) -> dict[str, np.ndarray]:
    X2, Y2, Zs = cv.X2, cv.Y2, cv.Z
    full = cv.full
    X, Y, Z = X2[None], Y2[None], Zs[:, None, None]
    sdf_ic, sdf_ell = _ic_sdf(X, Y, Z)
    T = p.skull / p.scale
    S = p.scalp / p.scale
    # Thinner skull over the temporal squama, thicker scalp there (temporalis muscle).
    temporal = (np.exp(-(((Y - 5.0) / 28.0) ** 2)) * np.exp(-(((Z + 5.0) / 22.0) ** 2)) * _sig((np.abs(X) - 40.0) / 4.0)).astype(np.float32)
    T_loc = T * (1.0 - 0.45 * temporal)
    S_loc = S + (7.0 / p.scale) * temporal

    # Scalp: skin and galea with subcutaneous fat between.
    outer = sdf_ell - T_loc - S_loc
    cv.paint(full, outer, 38.0, _SCALP)
    cv.paint(full, np.maximum(sdf_ell - T_loc - 0.65 * S_loc, -(sdf_ell - T_loc - 0.4 * S_loc)), -60.0, _SCALP, opacity=0.8 - 0.7 * temporal)
    head = sdf_ell - T_loc  # negative inside the outer table
    # Below the cranial floor and inside the head: skull base, face and neck soft tissue.
    cv.paint(full, np.maximum(head, -(sdf_ic - 2.0)), 42.0, _DEEP)
    # Calvarium (outer table, diploe, inner table) and the thick bone of the skull base.
    base = (_floor(X, Y) - Z).astype(np.float32)
    cv.paint(full, np.maximum(head, -sdf_ell), 1450.0, _BONE)
    cv.paint(full, np.maximum(np.maximum(sdf_ell - 0.7 * T_loc, -(sdf_ell - 0.3 * T_loc)), base - 1.0), 520.0, _BONE)
    cv.paint(full, np.maximum(np.maximum(base - 6.0, -(base + 0.5)), head), 1300.0, _BONE)
    del base, outer, temporal

    _paint_skull_base(cv, head)
    del head

    # Intracranial: CSF under the inner table, then the brain.
    cv.paint(full, sdf_ic, p.csf, _CSF)
    depth = -sdf_ic - p.sub_csf  # depth below the brain surface (atlas mm)
    cv.paint(full, sdf_ic + p.sub_csf, p.wm, _WM)

    # Cortex: ribbon under the surface and a band around each sulcus. Sulci are radial
    # sheets: the zero set of a smooth field sampled on a sphere and extended inwards, so
    # they run from the surface into the brain as they do, not parallel to it.
    band = (depth < p.sulcal_depth + 4.0) & (sdf_ic < 0)
    if cv.aa < 0.6:
        # The field is smooth on a 4 mm scale: sample every other pixel and interpolate.
        Fs = _upsample2(_radial_field(coarse, geom, X2[::2, ::2], Y2[::2, ::2], Zs, band[:, ::2, ::2]), band.shape)
    else:
        Fs = _radial_field(coarse, geom, X2, Y2, Zs, band)
    # Sulci wander as they deepen and their depth varies from one to the next.
    Fs = np.abs(Fs + (0.25 * depth / p.sulcal_depth) * F)
    s_depth = p.sulcal_depth * np.clip(0.8 + 0.06 * F, 0.4, 1.2)
    half_w = np.maximum(0.5 * p.sulcal_width * (1.0 - 0.6 * depth / s_depth), 0.2)
    gm_t = 2.6
    grey = np.minimum(depth - gm_t, np.maximum(Fs - half_w - gm_t, depth - s_depth - gm_t))
    cv.paint(full, np.maximum(grey, sdf_ic + p.sub_csf), p.gm, _GM)
    sulci = np.maximum(Fs - half_w, depth - s_depth)
    cv.paint(full, np.maximum(sulci, sdf_ic), p.csf, _CSF)
    del grey, sulci, half_w, Fs

    # Medial surface: interhemispheric fissure with the falx, stopping at the corpus callosum.
    b = cv.box((-8, -120, -40), (8, 120, 100))
    if b is not None:
        x, y, z = cv.coords(b)
        ic = sdf_ic[b]
        cc_top = 22.0 + 6.0 * np.sqrt(np.clip(1.0 - (y / 38.0) ** 2, 0.0, 1.0))
        outside_cc = -np.maximum(np.abs(y) - 38.0, z - cc_top)
        supra = -np.maximum(_ridge(x) - y, z - _tentorium(x, y))  # negative above the tentorium
        w_ih = 0.3 + 0.35 * p.sulcal_width
        cv.paint(b, np.maximum(np.maximum(np.abs(x) - w_ih - 2.6, outside_cc), np.maximum(ic + p.sub_csf, supra)), p.gm, _GM)
        cv.paint(b, np.maximum(np.maximum(np.abs(x) - w_ih, outside_cc), np.maximum(ic, supra)), p.csf, _CSF)
        cv.paint(b, np.maximum(np.maximum(np.abs(x) - 0.3, outside_cc), np.maximum(ic, supra)), 52.0)

    # Insula, Sylvian fissures and the insular cisterns.
    for s in (-1, 1):
        b = cv.box((min(s * 30, s * 70), -40, -30), (max(s * 30, s * 70), 40, 35))
        if b is None:
            continue
        x, y, z = cv.coords(b)
        ax = np.abs(x)
        ic = sdf_ic[b]
        yz = np.maximum(np.abs(y + 4.0) - 16.0, np.abs(z - 2.0) - 12.0)
        ins_x = 34.5 - 0.012 * (y + 4.0) ** 2 + 0.5 * F[b]  # the insula bows outwards
        cv.paint(b, np.maximum(np.maximum(np.abs(ax - ins_x) - 2.2, yz), ic + p.sub_csf), p.gm, _GM)
        y_sf = 0.35 * (ax - 36.0) + 0.25 * z - 2.0 + 0.6 * F[b]
        lateral = np.maximum(36.5 - ax, np.abs(z - 1.0) - 19.0)
        w_sf = 0.9 + 0.4 * p.sulcal_width
        cv.paint(b, np.maximum(np.maximum(np.abs(y - y_sf) - w_sf - 2.6, lateral), ic + p.sub_csf), p.gm, _GM)
        syl = np.maximum(np.abs(y - y_sf) * 0.94 - w_sf, lateral)
        cv.paint(b, np.maximum(syl, ic), p.csf, _CSF)
        cv.paint(b, np.maximum(np.maximum(np.abs(ax - ins_x - 2.9) - 0.6, yz + 3.0), ic), p.csf, _CSF, opacity=0.35)

    # Deep grey nuclei: caudate heads, lentiform nuclei, thalami.
    for s in (-1, 1):
        for c, r in (((s * 13.5, -17.0, 9.0), (4.0, 9.0, 9.0)), ((s * 26.0, -4.0, 0.0), (6.5, 13.0, 9.0)), ((s * 9.5, 8.0, 4.0), (6.5, 12.0, 9.0))):
            b = cv.around(c, np.add(r, 2))
            x, y, z = cv.coords(b)
            cv.paint(b, _ellipsoid_sdf(x, y, z, c, r) * 0.35, p.nuc, _NUC)  # soft edges

    # Posterior fossa: cerebellum with folia, then brainstem and cisterns.
    b = cv.box((-75, 0, -80), (75, 100, 0))
    if b is not None:
        x, y, z = cv.coords(b)
        ic = sdf_ic[b]
        pf = np.maximum(np.maximum(ic + p.sub_csf + 0.5, _ridge(x) + 2.0 - y), z - _tentorium(x, y) + 1.5)
        cv.paint(b, pf, 0.5 * (p.gm + p.wm) + 3.0, _CBL)
        for s in (-1, 1):
            cv.paint(b, np.maximum(_ellipsoid_sdf(x, y, z, (s * 21.0, 40.0, -38.0), (11.0, 13.0, 9.0)) * 0.3, pf), p.wm + 2.0, _CBL)
        rc = np.sqrt(x * x + (y - 22.0) ** 2 + (z + 30.0) ** 2) + 1.5 * F[b]
        lam = 5.0
        folia = (np.abs(np.sin(np.pi * rc / lam)) - 0.12) * lam / np.pi
        core = np.minimum(*(_ellipsoid_sdf(x, y, z, (s * 21.0, 40.0, -38.0), (13.0, 15.0, 11.0)) for s in (-1, 1)))
        cv.paint(b, np.maximum(np.maximum(folia, pf + 1.0), -core), p.csf + 12.0, _CBL, opacity=0.55)
        cv.paint(b, np.maximum(_ellipsoid_sdf(x, y, z, (0.0, 66.0, -54.0), (9.0, 12.0, 9.0)), ic), p.csf, _CSF)  # cisterna magna
        # Tentorium: a thin dural sheet, slightly dense.
        tent = np.maximum(np.abs(z - _tentorium(x, y) + 0.8) - 0.4, np.maximum(_ridge(x) - y, ic))
        cv.paint(b, tent, 48.0, opacity=0.4)

    b = cv.box((-40, -30, -80), (40, 45, 0))
    if b is not None:
        x, y, z = cv.coords(b)
        ic = sdf_ic[b]
        zn = z[:, 0, 0]
        nodes = np.array([-90.0, -50.0, -42.0, -26.0, -20.0, -2.0])
        cy = np.interp(zn, nodes, [18.0, 16.0, 9.0, 9.0, 13.0, 13.0])[:, None, None]
        rx = np.interp(zn, nodes, [9.0, 9.0, 15.5, 15.5, 12.5, 12.5])[:, None, None]
        ry = np.interp(zn, nodes, [8.0, 8.0, 12.5, 12.5, 10.0, 10.0])[:, None, None]
        q = np.sqrt((x / rx) ** 2 + ((y - cy) / ry) ** 2)
        bs = np.maximum((q - 1.0) * np.minimum(rx, ry), z + 3.0).astype(np.float32)
        # Ambient and prepontine cisterns wrap the brainstem (not behind the pons).
        ring = np.maximum(bs - 1.3, np.where(z < -22.0, (y - cy) - 0.2 * ry, -100.0))
        cv.paint(b, np.maximum(ring, ic), p.csf, _CSF, opacity=0.55)
        cv.paint(b, np.maximum(bs, ic + 0.5), 0.5 * (p.gm + p.wm) + 1.0, _BS)
        # Interpeduncular notch of the midbrain.
        cv.paint(b, np.maximum(_ellipsoid_sdf(x, y, z, (0.0, 3.0, -12.0), (3.0, 5.0, 7.0)), ic), p.csf, _CSF)
        cv.paint(b, np.maximum(_ellipsoid_sdf(x, y, z, (0.0, 27.0, -34.0), (6.5, 3.5, 8.0)), ic), p.csf, _VENT)  # 4th ventricle
        # Suprasellar cistern (a five-pointed star) and the Sylvian valleculae.
        rho = np.sqrt(x * x + (y + 8.0) ** 2)
        th = np.arctan2(y + 8.0, x)
        star = np.maximum(rho - (9.0 + 3.0 * np.cos(5.0 * th + np.pi / 2.0)), np.abs(z + 18.0) - 5.0)
        cv.paint(b, np.maximum(star, ic), p.csf, _CSF)
        for s in (-1, 1):
            cv.paint(b, np.maximum(_capsule_sdf(x, y, z, (s * 8.0, -9.0, -17.0), (s * 38.0, -4.0, -9.0), 1.8, 1.4), ic), p.csf, _CSF)
        cv.paint(b, np.maximum(_ellipsoid_sdf(x, y, z, (0.0, 27.0, -3.0), (8.0, 6.0, 6.0)), ic), p.csf, _CSF)  # quadrigeminal

    # Ventricles: lateral (frontal, body, atrium, occipital and temporal horns) and third.
    for s in (-1, 1):
        for a_name, b_name in _VENT_SEGMENTS:
            a, ra = _vent_node(a_name, s, p.vent)
            c, rb = _vent_node(b_name, s, p.vent)
            lo = np.minimum(a, c) - max(ra, rb) - 2
            hi = np.maximum(a, c) + max(ra, rb) + 2
            b = cv.box(lo, hi)
            x, y, z = cv.coords(b)
            cv.paint(b, _capsule_sdf(x, y, z, a, c, ra, rb), p.csf, _VENT)
    c3 = (0.0, 0.0, 0.0)
    r3 = (1.6 + 1.2 * p.vent, 12.0, 10.0)
    b = cv.around(c3, np.add(r3, 2))
    x, y, z = cv.coords(b)
    cv.paint(b, _ellipsoid_sdf(x, y, z, c3, r3), p.csf, _VENT)

    return {"sdf_ic": sdf_ic}


def _paint_skull_base(cv: _Canvas, head: np.ndarray) -> None:
    """Orbits, sinuses, petrous bones and mastoid air cells below the cranial floor."""
    b = cv.box((-80, -110, -80), (80, 60, -5))
    if b is None:
        return
    x, y, z = cv.coords(b, fixed=True)
    inside = head[b]

    def paint(sdf: np.ndarray, value: float, code: int) -> None:
        # Everything here stays inside the head outline.
        cv.paint(b, np.maximum(sdf, inside), value, code)

    for s in (-1, 1):
        oc = (s * 31.0, -58.0, -40.0)
        paint(_ellipsoid_sdf(x, y, z, (s * 31.0, -56.0, -40.0), (14.5, 23.0, 14.5)), 1200.0, _BONE)
        paint(_ellipsoid_sdf(x, y, z, oc, (12.5, 21.0, 12.5)), -85.0, _DEEP)
        g = (s * 32.0, -68.0, -40.0)
        paint(_ellipsoid_sdf(x, y, z, g, (12.0, 12.0, 12.0)), 45.0, _DEEP)
        paint(_ellipsoid_sdf(x, y, z, g, (11.0, 11.0, 11.0)), 8.0, _DEEP)
        paint(_ellipsoid_sdf(x, y, z, (s * 32.0, -78.5, -40.0), (4.0, 1.6, 4.0)), 110.0, _DEEP)
        paint(_capsule_sdf(x, y, z, (s * 30.0, -48.0, -40.0), (s * 10.0, -20.0, -36.0), 2.2, 2.0), 35.0, _DEEP)  # optic nerve
        # Petrous bone along the ridge, very dense, with mastoid air cells behind it laterally.
        ridge_y = _ridge(x)
        pet = np.maximum(np.maximum(np.abs(y - ridge_y + 4.0) - 6.0, np.abs(x) - 58.0), np.maximum(14.0 - np.abs(x), np.maximum(z + 30.0, -(z + 62.0))))
        paint(np.maximum(pet, -s * x), 1750.0, _BONE)
    # Sphenoid sinus and ethmoid air cells (midline), nasal cavity.
    paint(_ellipsoid_sdf(x, y, z, (0.0, -14.0, -42.0), (13.0, 11.0, 9.0)), -980.0, _DEEP)
    eth = np.maximum(_ellipsoid_sdf(x, y, z, (0.0, -55.0, -40.0), (11.0, 22.0, 14.0)), z + 31.0)
    paint(np.maximum(eth, 1.2 * np.sin(x * 0.9) * np.sin(y * 0.8) * np.sin(z * 0.7)), -900.0, _DEEP)
    paint(np.maximum(np.abs(x) - 0.8, eth), 900.0, _BONE)
    # Maxillary sinuses and nasal cavity at the lowest levels, in thin bony walls.
    for s in (-1, 1):
        mc = (s * 24.0, -52.0, -62.0)
        paint(_ellipsoid_sdf(x, y, z, mc, (15.0, 17.0, 14.0)), 900.0, _BONE)
        paint(_ellipsoid_sdf(x, y, z, mc, (13.5, 15.5, 12.5)), -990.0, _DEEP)
    paint(_ellipsoid_sdf(x, y, z, (0.0, -62.0, -62.0), (7.0, 20.0, 14.0)), -990.0, _DEEP)
    paint(np.maximum(np.abs(x) - 0.8, _ellipsoid_sdf(x, y, z, (0.0, -62.0, -62.0), (7.0, 20.0, 14.0))), 600.0, _BONE)
    # Mastoid air cells: mottled air lateral to the posterior fossa.
    for s in (-1, 1):
        m = _ellipsoid_sdf(x, y, z, (s * 52.0, 30.0, -52.0), (9.0, 9.0, 10.0))
        cells = np.maximum(m, np.sin(x * 1.3) * np.sin(y * 1.1) * np.sin(z * 0.9) * 3.0)
        paint(cells, -700.0, _DEEP)


# ----------------------------------------------------------------------------- lesions
def _default_volume(rng: np.random.Generator) -> float:
    """Punctate (<= 0.1 mL), small (<= 5 mL) or large (up to 60 mL), log-uniform within each."""
    u = rng.random()
    lo, hi = (0.02, 0.1) if u < 0.2 else (0.1, 5.0) if u < 0.6 else (5.0, 60.0)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _take_lowest(priority: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """The flat indices `idx` with the n lowest priorities."""
    if n >= idx.size:
        return idx
    return idx[np.argpartition(priority, n - 1)[:n]]


@dataclass
class _LesionPlan:
    subtype: str
    volume_ml: float
    side: int
    site: str
    centre: np.ndarray | None = None  # atlas mm
    radius: float = 0.0  # extent of an extra-axial lesion along the inner table (atlas mm)
    thickness: float = 0.0  # its greatest thickness (atlas mm)
    axes: tuple[float, float, float] = (1.0, 1.0, 1.0)  # IPH ellipsoid proportions

    @property
    def mass_effect_mm(self) -> float:
        """Midline shift this lesion causes: none below ~8 mL, about 4 mm at 30 mL, at most 9 mm."""
        if self.subtype not in ("EDH", "SDH", "IPH") or self.site == "cerebellum":
            return 0.0
        return float(np.clip(0.16 * (self.volume_ml - 8.0), 0.0, 9.0))


def _place_lesion(plan: _LesionPlan, rng: np.random.Generator, p: _Params) -> None:
    """Draw where a planned lesion sits and its proportions (before the anatomy is painted)."""
    s = plan.side
    if plan.subtype == "EDH":
        y0, z0 = (rng.uniform(-12, 18), rng.uniform(-8, 15)) if plan.site == "temporal" else (rng.uniform(0, 35), rng.uniform(25, 48))
        k = rng.uniform(0.32, 0.42)  # thickness / radius of the lens
        plan.radius = (2.0 * plan.volume_ml * 1000.0 / (math.pi * k)) ** (1 / 3) / p.scale
        plan.thickness = max(k * plan.radius, 1.5)
        plan.centre = _surface_point(np.array([s * 100.0, y0 - 4.0, z0 - 5.0]))
    elif plan.subtype == "SDH":
        y0, z0 = {"frontoparietal": (-25, 30), "parietal": (10, 38), "temporoparietal": (12, 10)}[plan.site]
        y0, z0 = y0 + rng.uniform(-8, 8), z0 + rng.uniform(-6, 6)
        k = rng.uniform(0.16, 0.22)
        plan.radius = (3.0 * plan.volume_ml * 1000.0 / (2.0 * math.pi * k)) ** (1 / 3) / p.scale
        plan.thickness = k * plan.radius
        if plan.thickness < 1.2:
            plan.thickness = 1.2
            plan.radius = math.sqrt(3.0 * plan.volume_ml * 1000.0 / (2.0 * math.pi * 1.2)) / p.scale
        plan.centre = _surface_point(np.array([s * 100.0, y0 - 4.0, z0 - 5.0]))
    elif plan.subtype == "IPH":
        centre = {
            "putamen": (s * 27.0, -3.0, 2.0),
            "thalamus": (s * 10.0, 8.0, 6.0),
            "cerebellum": (s * 22.0, 46.0, -40.0),
        }.get(plan.site)
        if centre is None:
            lobe = str(rng.choice(["frontal", "parietal", "occipital", "temporal"]))
            centre = {"frontal": (s * 28, -45, 22), "parietal": (s * 34, 22, 38), "occipital": (s * 22, 58, 14), "temporal": (s * 44, -4, -16)}[lobe]
            plan.site = f"lobar {lobe}"
        plan.centre = np.asarray(centre, dtype=np.float64)
        plan.axes = (1.0, float(rng.uniform(0.8, 1.35)), float(rng.uniform(0.7, 1.0)))
    elif plan.subtype == "SAH":
        if plan.site == "basal":
            plan.centre = np.array([0.0, -8.0, -18.0])
        elif plan.site == "sylvian":
            plan.centre = np.array([s * 45.0, 6.0, 2.0])
        else:
            plan.centre = _surface_point(np.array([s * 100.0, rng.uniform(-30, 30), rng.uniform(30, 60)]))


def _plan_lesions(rng: np.random.Generator, subtype: str, volume_ml: float | None) -> list[_LesionPlan]:
    if subtype == "none":
        return []
    total = volume_ml if volume_ml is not None else _default_volume(rng)
    if subtype == "mixed":
        pair = MIXED_COMBOS[int(rng.integers(len(MIXED_COMBOS)))]
        frac = rng.uniform(0.55, 0.8)
        parts = [(pair[0], total * frac), (pair[1], total * (1.0 - frac))]
    else:
        parts = [(subtype, total)]
    side = int(rng.choice((-1, 1)))
    plans = []
    for st, v in parts:
        if st == "IPH":
            if any(q == "IVH" for q, _ in parts):
                site = "thalamus" if v <= 10 else "putamen"
            else:
                opts = ["lobar"] + (["putamen"] if v <= 45 else []) + (["thalamus"] if v <= 10 else []) + (["cerebellum"] if v <= 15 else [])
                site = str(rng.choice(opts))
        elif st == "EDH":
            site = str(rng.choice(["temporal", "parietal"]))
        elif st == "SDH":
            site = str(rng.choice(["frontoparietal", "parietal", "temporoparietal"]))
        elif st == "SAH":
            site = "basal" if v > 8 or (len(parts) > 1 and parts[0][0] != "SDH") else str(rng.choice(["basal", "sylvian", "convexity"]))
        else:  # IVH
            site = "layering" if v <= 4 and rng.random() < 0.7 else "cast"
        plans.append(_LesionPlan(st, float(v), side, site))
    return plans


def _grow_lesions(
    cv: _Canvas, anat: dict, plans: list[_LesionPlan], rng: np.random.Generator, F: np.ndarray, voxel_ml: float, p: _Params
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    shape = cv.hu.shape
    taken = np.zeros(shape, dtype=bool)
    masks = {s: np.zeros(shape, dtype=bool) for s in SUBTYPES}
    sites: dict[str, str] = {}
    sdf_ic = anat["sdf_ic"]
    tissue = cv.tissue
    for plan in plans:
        n = max(1, int(round(plan.volume_ml / voxel_ml)))
        s = plan.side
        if plan.subtype in ("EDH", "SDH"):
            allowed = (sdf_ic < 0) & (tissue != _DEEP) & (tissue != _BONE)
        elif plan.subtype == "IPH":
            # Parenchyma, and the sulci and fissures it engulfs (not the surface CSF or ventricles).
            allowed = np.isin(tissue, _PARENCHYMA) | ((tissue == _CSF) & (sdf_ic < -3.0))
        elif plan.subtype == "IVH":
            allowed = tissue == _VENT
        else:  # SAH: sulci, fissures, cisterns, the thin layer under the inner table
            allowed = tissue == _CSF
        allowed &= ~taken
        idx = np.flatnonzero(allowed)
        zi, yi, xi = np.unravel_index(idx, shape)
        X = cv.X2[yi, xi]
        Y = cv.Y2[yi, xi]
        Z = cv.Z[zi].astype(np.float32)
        if plan.subtype in ("EDH", "SDH"):
            if plan.subtype == "EDH":
                power = 2.0  # parabolic thickness profile: a biconvex lens
                # Does not cross sutures: stay between the coronal and lambdoid sutures, off the sagittal one.
                keep = (s * X > 6.0) & (Y > -38.0) & (Y < 62.0) & (Z > _floor(X, Y) + 1.0)
            else:
                power = 4.0  # flat-topped profile: a crescent that tapers at its ends
                # Crosses sutures but not the midline (falx), and stays above the tentorium.
                keep = (s * X > 1.5) & ((Z > _tentorium(X, Y) + 1.0) | (Y < _ridge(X)))
            c = plan.centre
            depth = -sdf_ic.ravel()[idx]
            dist = np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2)
            pri = depth / plan.thickness + (dist / plan.radius) ** power
            pri = np.where(keep, pri, np.inf).astype(np.float32)
            sites[plan.subtype] = f"{plan.site} {'left' if s > 0 else 'right'}"
        elif plan.subtype == "IPH":
            centre, ax = plan.centre, plan.axes
            if plan.site != "cerebellum":
                # A parenchymal clot stays in its hemisphere (the falx and the ventricles bound it).
                pri_side = np.where(s * X > -1.0, 0.0, np.inf).astype(np.float32)
            else:
                pri_side = np.zeros(X.shape, dtype=np.float32)
            d = np.sqrt(((X - centre[0]) / ax[0]) ** 2 + ((Y - centre[1]) / ax[1]) ** 2 + ((Z - centre[2]) / ax[2]) ** 2)
            r_est = (3.0 * plan.volume_ml * 1000.0 / (4.0 * math.pi)) ** (1 / 3) / p.scale
            pri = d * (1.0 + 0.18 * np.tanh(F.ravel()[idx] / max(r_est, 3.0) * 2.0)) + pri_side
            sites["IPH"] = f"{plan.site} {'left' if s > 0 else 'right'}"
        elif plan.subtype == "IVH":
            if plan.site == "layering":
                # Supine patient: blood settles where it is most dependent. Gravity runs along
                # the patient's posterior axis (image rows), whatever the head's rotation, so
                # the fluid level is a straight horizontal line across both occipital horns.
                pri = -yi.astype(np.float32) + 0.001 * np.abs(X)
            else:
                seed_pt, _ = _vent_node("B1", s, p.vent)
                pri = np.sqrt((X - seed_pt[0]) ** 2 + (Y - seed_pt[1]) ** 2 + (Z - seed_pt[2]) ** 2)
            sites["IVH"] = plan.site
        else:
            c = plan.centre
            pri = np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2) + 4.0 * F.ravel()[idx]
            sites["SAH"] = plan.site + ("" if plan.site == "basal" else f" {'left' if s > 0 else 'right'}")
        finite = np.isfinite(pri)
        if finite.sum() < n:
            raise ValueError(f"cannot place a {plan.volume_ml:.1f} mL {plan.subtype} in this head (room for {finite.sum() * voxel_ml:.1f} mL)")
        sel = _take_lowest(pri, idx, n)
        masks[plan.subtype].ravel()[sel] = True
        taken.ravel()[sel] = True
    return masks, sites


def _paint_lesions(cv: _Canvas, masks: dict[str, np.ndarray], rng: np.random.Generator, pix_mm: float) -> None:
    """Blood at 50-90 HU with partial volume at the edges; an oedema rim around some IPH."""
    from scipy import ndimage

    union = np.zeros(cv.hu.shape, dtype=bool)
    for st in SUBTYPES:
        m = masks[st]
        if not m.any():
            continue
        union |= m
        zz, yy, xx = np.nonzero(m)
        pad = 6
        b = (
            slice(max(zz.min() - 1, 0), zz.max() + 2),
            slice(max(yy.min() - pad, 0), yy.max() + pad + 1),
            slice(max(xx.min() - pad, 0), xx.max() + pad + 1),
        )
        mb = m[b]
        if st == "IPH" and rng.random() < 0.7:
            # Perihaematomal oedema (10-20 HU) in the parenchyma around the clot.
            rim_mm = rng.uniform(2.0, 5.0)
            dist = ndimage.distance_transform_edt(~mb, sampling=(50.0, pix_mm, pix_mm))
            rim = (dist > 0) & (dist <= rim_mm) & np.isin(cv.tissue[b], _PARENCHYMA)
            h = cv.hu[b]
            h[rim] += 0.85 * (rng.uniform(12.0, 18.0) - h[rim])
        blood = rng.uniform(62.0, 80.0) if st == "SAH" else rng.uniform(60.0, 84.0)
        soft = ndimage.gaussian_filter(mb.astype(np.float32), sigma=(0, 0.7, 0.7))
        f = np.where(mb, np.maximum(soft, 0.9), 0.8 * soft) * ~(union[b] & ~mb)
        h = cv.hu[b]
        h += f * (np.float32(blood) - h)


# ----------------------------------------------------------------------------- mimics
def _streaks(rng: np.random.Generator, shape2: tuple[int, int], centre_rc: tuple[float, float], pix_mm: float, n: int = 12,
             axis_deg: float | None = None, width_deg: tuple[float, float] = (0.8, 2.5)) -> tuple[np.ndarray, np.ndarray]:
    """Narrow bright and dark streaks radiating from a point of one slice, and the radius (mm).

    Each streak is a thin angular gaussian (about 1-3 degrees) of random sign running both
    ways through the point, as photon starvation and beam hardening draw them; with
    `axis_deg` more of them, and the darkest, lie along the object's long axis.
    """
    r = (np.arange(shape2[0], dtype=np.float32)[:, None] - centre_rc[0]) * pix_mm
    c = (np.arange(shape2[1], dtype=np.float32)[None, :] - centre_rc[1]) * pix_mm
    th = np.arctan2(r, c)
    pat = np.zeros(shape2, dtype=np.float32)
    for j in range(n):
        if axis_deg is not None and j < n // 3:
            ang, sign = math.radians(axis_deg + rng.normal(0, 4)), -1.5
        else:
            ang, sign = rng.uniform(0, np.pi), float(rng.choice((-1.0, 1.0))) * rng.uniform(0.4, 1.0)
        w = math.radians(rng.uniform(*width_deg))
        d = np.abs(((th - ang + np.pi / 2) % np.pi) - np.pi / 2)  # angle to the streak line, either direction
        pat += sign * np.exp(-((d / w) ** 2))
    return pat, np.sqrt(r * r + c * c)


def _paint_mimic(cv: _Canvas, kind: str, rng: np.random.Generator, p: _Params, anat: dict, pix_mm: float,
                 planes: int = 1) -> str:
    """Paint one mimic; return its detail tag. `planes`: consecutive canvas planes that make one slice.

    Streaks come from reconstructing a slice, so the planes of one slice share one streak
    pattern (each plane weighted by its own metal or beam-hardening amount); drawing one per
    plane would average several patterns into a blur when the slice integrates its planes.
    """
    X2, Y2, Zs = cv.X2, cv.Y2, cv.Z
    if kind == "calcification":
        which = str(rng.choice(["choroid", "pineal", "falx"]))
        if which == "choroid":
            for s in (-1, 1):
                a, _ = _vent_node("A", s, p.vent)
                c = a + np.array([s * rng.uniform(-1, 1), rng.uniform(-1, 2), rng.uniform(-2, 1)], dtype=np.float32)
                r = rng.uniform(2.5, 4.0, size=3)
                b = cv.around(c, r + 2)
                sdf = _ellipsoid_sdf(*cv.coords(b), c, r)
                cv.paint(b, sdf, rng.uniform(250, 600))
                cv.mark_mimic(b, sdf < 0.5 * cv.aa)
        elif which == "pineal":
            c = np.array([0.0, rng.uniform(16, 19), rng.uniform(1, 4)], dtype=np.float32)
            r = rng.uniform(2.5, 4.0, size=3)
            b = cv.around(c, r + 2)
            sdf = _ellipsoid_sdf(*cv.coords(b), c, r)
            cv.paint(b, sdf, rng.uniform(250, 700))
            cv.mark_mimic(b, sdf < 0.5 * cv.aa)
        else:
            for _ in range(int(rng.integers(1, 3))):
                c = np.array([0.0, rng.uniform(-50, -15), rng.uniform(35, 55)], dtype=np.float32)
                r = np.array([1.0, rng.uniform(5, 10), rng.uniform(2.5, 5)], dtype=np.float32)
                b = cv.around(c, r + 2)
                sdf = _ellipsoid_sdf(*cv.coords(b), c, r)
                cv.paint(b, sdf, rng.uniform(400, 900))
                cv.mark_mimic(b, sdf < 0.5 * cv.aa)
        return f"calcification:{which}"
    if kind == "metal":
        which = str(rng.choice(["clip", "coil", "shunt"]))
        s = int(rng.choice((-1, 1)))
        metal = np.zeros(cv.hu.shape, dtype=bool)
        parts = []
        if which == "clip":
            a = np.array([s * 16.0, -9.0, -15.0], dtype=np.float32)
            parts.append((a, a + np.array([s * 6.0, 3.0, 2.0], dtype=np.float32), 1.2))
        elif which == "coil":
            c = np.array([0.0, -14.0, -14.0], dtype=np.float32)
            parts.append((c, c + 0.5, 3.5))
        else:
            tip, _ = _vent_node("F1", s, p.vent)
            hole = _surface_point(np.array([s * 30.0, -60.0, 45.0]))
            d = (hole - tip) / np.linalg.norm(hole - tip)
            valve = (hole + d * (p.skull + 0.5 * p.scalp) / p.scale).astype(np.float32)
            # Catheter: barium-impregnated silicone, dense but not metal.
            b = cv.around((tip + hole) / 2, np.abs(hole - tip) / 2 + 3)
            sdf = _capsule_sdf(*cv.coords(b), tip, hole, 1.1, 1.1)
            cv.paint(b, sdf, 700.0)
            cv.mark_mimic(b, sdf < 0.5 * cv.aa)
            parts.append((valve - 2.0 * d, valve + 2.0 * d, 5.0))
        for a, c, r in parts:
            a = np.asarray(a, dtype=np.float32)
            c = np.asarray(c, dtype=np.float32)
            b = cv.around((a + c) / 2, np.abs(c - a) / 2 + r + 6)
            sdf = _capsule_sdf(*cv.coords(b), a, c, r, r)
            cv.paint(b, sdf, float(HU_MAX))
            hit = sdf < 0.5 * cv.aa
            if not hit.any() and sdf.size:
                # Smaller than a voxel on a coarse grid: the nearest voxel still saturates.
                hit.ravel()[int(np.argmin(sdf))] = True
            metal[b] |= hit
        head = cv.tissue != _AIR
        for ks in _by_slice(np.nonzero(metal.any(axis=(1, 2)))[0], planes):
            _, rr, cc = np.nonzero(metal[ks])
            pat, rad = _streaks(rng, metal.shape[1:], (rr.mean(), cc.mean()), pix_mm, 18, axis_deg=rng.uniform(0, 180))
            for k in ks:
                amount = min(1.0, math.sqrt(max(int(metal[k].sum()) * pix_mm * pix_mm, 4.0) / 20.0))
                streak = (260.0 * amount) * pat / (1.0 + rad / 8.0) - (40.0 * amount) / (1.0 + rad / 20.0)
                sl = cv.hu[k]
                sl += np.where(head[k] & ~metal[k], streak, 0.0).astype(np.float32)
                cv.mark_mimic((k,), head[k] & (streak >= MIMIC_STREAK_HU))
        cv.metal = metal
        cv.mark_mimic(cv.full, metal)
        return f"metal:{which}"
    # Beam hardening between the petrous bones: a dark Hounsfield bar and bright streaks.
    zk = np.nonzero((Zs > -60.0) & (Zs < -26.0))[0]
    inside = anat["sdf_ic"] < 0
    X, Y = X2, Y2
    bar = _capsule_sdf(X, Y, np.float32(0.0), (-24.0, 19.0, 0.0), (24.0, 19.0, 0.0), 0.0, 0.0)
    for ks in _by_slice(zk, planes):
        streaks = []
        for s in (-1, 1):
            px = s * 24.0
            py = float(_ridge(np.float32(px)))
            d2 = (X - px) ** 2 + (Y - py) ** 2
            r0, c0 = np.unravel_index(int(np.argmin(d2)), d2.shape)
            pat, rad = _streaks(rng, X.shape, (float(r0), float(c0)), pix_mm, 8, axis_deg=0.0, width_deg=(2.0, 5.0))
            streaks.append((pat, rad))
        for k in ks:
            amp = float(np.exp(-((Zs[k] + 42.0) / 12.0) ** 2))
            add = -35.0 * amp * np.exp(-((bar / 5.0) ** 2))
            for pat, rad in streaks:
                add += amp * 240.0 * pat / (1.0 + rad / 10.0)
            sl = cv.hu[k]
            sl += np.where(inside[k], add, 0.0).astype(np.float32)
            cv.mark_mimic((k,), inside[k] & (add >= MIMIC_STREAK_HU))
    return "beam-hardening"


def _by_slice(ks: np.ndarray, planes: int) -> list[np.ndarray]:
    """Canvas plane indices `ks` (ascending) grouped by the slice they belong to (`planes` per slice)."""
    ks = np.asarray(ks)
    if ks.size == 0:
        return []
    cuts = np.nonzero(np.diff(ks // planes))[0] + 1
    return np.split(ks, cuts)


# ----------------------------------------------------------------------------- entry point
def check_thickness_planes(thickness_planes, slice_mm: float = 5.0) -> None:
    """Raise ValueError unless `thickness_planes` is an integer from 1 to 10 with planes at least 0.5 mm apart."""
    if isinstance(thickness_planes, bool) or not isinstance(thickness_planes, (int, np.integer)) or not (
        1 <= thickness_planes <= 10 and float(slice_mm) / thickness_planes >= 0.5
    ):
        raise ValueError(
            f"thickness_planes must be an integer from 1 to 10 with planes at least 0.5 mm apart, got {thickness_planes!r} "
            f"for {slice_mm!r} mm slices"
        )


def _validate(seed, subtype, volume_ml, mimic, slice_mm, age, matrix) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if subtype is not None and subtype not in SUBTYPE_CHOICES:
        raise ValueError(f"subtype must be one of {', '.join(SUBTYPE_CHOICES)} or None, got {subtype!r}")
    if volume_ml is not None:
        if subtype == "none":
            raise ValueError("volume_ml makes no sense with subtype 'none'")
        if not (isinstance(volume_ml, (int, float)) and 0 < volume_ml <= MAX_VOLUME_ML):
            raise ValueError(f"volume_ml must be in (0, {MAX_VOLUME_ML:g}] mL, got {volume_ml!r}")
    if mimic is not None and mimic not in MIMIC_KINDS:
        raise ValueError(f"mimic must be one of {', '.join(MIMIC_KINDS)} or None, got {mimic!r}")
    if not (isinstance(slice_mm, (int, float)) and 0.5 <= slice_mm <= 10.0):
        raise ValueError(f"slice_mm must be between 0.5 and 10 mm, got {slice_mm!r}")
    if age not in AGES:
        raise ValueError(f"age must be 'adult' or 'child', got {age!r}")
    if not (isinstance(matrix, (int, np.integer)) and 64 <= matrix <= 1024):
        raise ValueError(f"matrix must be an integer between 64 and 1024, got {matrix!r}")


def generate_case(
    seed: int,
    subtype: str | None = None,
    volume_ml: float | None = None,
    mimic: str | None = None,
    slice_mm: float = 5.0,
    age: str = "adult",
    matrix: int = 512,
    thickness_planes: int = 1,
) -> PhantomCase:
    """A synthetic non-contrast head CT with labelled haemorrhage(s); the same arguments give the same case.

    `subtype` None draws one of the five subtypes or "mixed"; "none" gives a normal head.
    `volume_ml` is the target lesion volume (total for "mixed"); None draws it from a
    punctate / small / large mixture. `matrix` sets the in-plane size; the field of view
    stays 220-250 mm, so the pixel spacing grows as the matrix shrinks.
    `thickness_planes` > 1 averages that many planes across each slice's thickness (see
    the module docstring); 1 samples each slice at its centre plane.
    """
    from pydicom.uid import generate_uid

    _validate(seed, subtype, volume_ml, mimic, slice_mm, age, matrix)
    check_thickness_planes(thickness_planes, slice_mm)
    planes = int(thickness_planes)
    seed = int(seed)
    matrix = int(matrix)
    slice_mm = float(slice_mm)
    # Independent streams, so a mimic or a lesion never changes the anatomy of a seed.
    rng_anat, rng_field, rng_les, rng_mim, rng_noise = (np.random.default_rng([seed, k]) for k in range(5))

    if subtype is None:
        subtype = str(rng_les.choice([*SUBTYPES, "mixed"]))
    p = _draw_params(rng_anat, age)
    fov = rng_anat.uniform(220.0, 250.0)
    pix = fov / matrix
    plans = _plan_lesions(rng_les, subtype, volume_ml)
    for plan in plans:
        _place_lesion(plan, rng_les, p)
        if plan.subtype == "IVH":
            # Hydrocephalus: dilate the ventricles when the target would not fit.
            capacity = _VENT_ML * (p.scale**3) * p.vent**2
            if plan.volume_ml > 0.7 * capacity:
                p.vent = math.sqrt(plan.volume_ml / (0.7 * _VENT_ML * p.scale**3))

    # Grid: columns along +x (patient left), rows along +y (posterior), slices along +z.
    centre = np.array([rng_anat.uniform(-8, 8), rng_anat.uniform(-10, 10)])
    x = (np.arange(matrix) - (matrix - 1) / 2.0) * pix
    y = (np.arange(matrix) - (matrix - 1) / 2.0) * pix
    z_lo, z_hi = -52.0 * p.scale, _IC_AXES[2] * p.scale + p.skull + p.scalp
    n_slices = int(math.ceil((z_hi - z_lo) / slice_mm)) + 1
    z_table = 40.0 + rng_anat.uniform(-20, 20)  # AC-PC plane in patient coordinates
    z = z_table + z_lo + slice_mm * np.arange(n_slices)
    # The planes the volume is built on: each slice's centre plane, or `planes` planes
    # spread evenly across its thickness (their mean is the slice centre).
    step = slice_mm / planes
    z_fine = (z[:, None] + step * (np.arange(planes) - (planes - 1) / 2.0)[None, :]).ravel()
    n_fine = n_slices * planes
    cs, sn = math.cos(p.yaw), math.sin(p.yaw)
    dx, dy = (x[None, :] - centre[0]), (y[:, None] - centre[1])
    X2 = ((cs * dx + sn * dy) / p.sx).astype(np.float32)
    Y2 = ((-sn * dx + cs * dy) / p.sy).astype(np.float32)
    Zs = ((z_fine - z_table) / p.scale).astype(np.float32)

    def to_rc(Xa, Ya, r_off=0, c_off=0):
        px = cs * Xa * p.sx - sn * Ya * p.sy + centre[0]
        py = sn * Xa * p.sx + cs * Ya * p.sy + centre[1]
        return (py - y[0]) / pix - r_off, (px - x[0]) / pix - c_off

    cv = _Canvas(X2, Y2, Zs, pix / p.scale, to_rc=to_rc)
    coarse, geom = _smooth_field(rng_field, 4.5)
    F = np.zeros(cv.hu.shape, dtype=np.float32)
    sdf_ic = np.full(cv.hu.shape, 1000.0, dtype=np.float32)
    # Paint the anatomy a few slices at a time inside the head's bounding box: the arrays
    # then stay in cache, which makes the many elementwise passes several times faster.
    in_head = (X2 / 95.0) ** 2 + ((Y2 - 4.0) / 108.0) ** 2 <= 1.0
    rows, cols = np.nonzero(in_head.any(1))[0], np.nonzero(in_head.any(0))[0]
    r_, c_ = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    chunk = max(1, 400_000 // ((r_.stop - r_.start) * (c_.stop - c_.start)))
    shift = max((pl.mass_effect_mm for pl in plans), default=0.0)
    if shift > 0:
        chunk = 1  # the displacement depends on the slice
        src = max(plans, key=lambda pl: pl.mass_effect_mm)
    for k0 in range(0, n_fine, chunk):
        k = slice(k0, min(k0 + chunk, n_fine))
        Xc, Yc = X2[r_, c_], Y2[r_, c_]
        if pix < 0.6:
            F[k, r_, c_] = _upsample2(_sample_field(coarse, geom, Xc[::2, ::2], Yc[::2, ::2], Zs[k]), F[k, r_, c_].shape)
        else:
            F[k, r_, c_] = _sample_field(coarse, geom, Xc, Yc, Zs[k])
        X_inner = None
        if shift > 0:
            # Mass effect: midline structures and ventricles pushed away from the lesion
            # (subfalcine shift), most at the lesion's level, none at the inner table.
            w = (
                np.exp(-(((Yc - src.centre[1]) / 50.0) ** 2))
                * math.exp(-(((float(Zs[k0]) - src.centre[2]) / 40.0) ** 2))
                * np.clip(1.0 - (Xc / 60.0) ** 2, 0.0, 1.0)
            )
            X_inner = (Xc + src.side * (shift / p.scale) * w).astype(np.float32)
        sub = _Canvas(Xc, Yc, Zs[k], pix / p.scale, cv.hu[k, r_, c_], cv.tissue[k, r_, c_],
                      to_rc=lambda a, b: to_rc(a, b, r_.start, c_.start), X2_inner=X_inner, pad=shift / p.scale)
        sdf_ic[k, r_, c_] = _paint_anatomy(sub, p, F[k, r_, c_], coarse, geom)["sdf_ic"]
    anat = {"sdf_ic": sdf_ic}

    voxel_ml = step * pix * pix / 1000.0
    masks, sites = _grow_lesions(cv, anat, plans, rng_les, F, voxel_ml, p)
    _paint_lesions(cv, masks, rng_les, pix)
    mimic_detail = _paint_mimic(cv, mimic, rng_mim, p, anat, pix, planes) if mimic else ""
    # Lesion volumes are counted on the planes the lesions were grown on.
    vols = {s: float(masks[s].sum()) * voxel_ml for s in SUBTYPES}
    union = np.zeros(masks[SUBTYPES[0]].shape, dtype=bool)
    for s in SUBTYPES:
        union |= masks[s]
    vols["total"] = float(union.sum()) * voxel_ml
    metal = getattr(cv, "metal", None)
    mimic_mask = cv.mimic if mimic else None
    if mimic and mimic_mask is None:
        mimic_mask = np.zeros(cv.hu.shape, dtype=bool)  # a mimic that fell outside the scanned slices
    tissue = cv.tissue
    if planes > 1:
        # Each slice integrates its planes (partial volume across the slice thickness).
        shape2 = cv.hu.shape[1:]
        cv.hu = cv.hu.reshape(n_slices, planes, *shape2).mean(axis=1, dtype=np.float32)
        masks = {s: m.reshape(n_slices, planes, *shape2).any(axis=1) for s, m in masks.items()}
        union = union.reshape(n_slices, planes, *shape2).any(axis=1)
        if metal is not None:
            metal = metal.reshape(n_slices, planes, *shape2).any(axis=1)
        if mimic_mask is not None:
            mimic_mask = mimic_mask.reshape(n_slices, planes, *shape2).any(axis=1)
        tissue = tissue.reshape(n_slices, planes, *shape2)[:, planes // 2]  # the centre plane's tissue

    # Noise: slightly correlated in plane, larger on thin slices (fewer photons per voxel).
    from scipy import ndimage

    sd = rng_noise.uniform(2.5, 4.0) * math.sqrt(5.0 / slice_mm) * (0.9 if age == "child" else 1.0)
    noise = rng_noise.standard_normal(cv.hu.shape, dtype=np.float32)
    sig_px = 0.35 / pix
    if sig_px > 0.3:
        noise = ndimage.gaussian_filter(noise, sigma=(0, sig_px, sig_px))
        delta = np.zeros(41, dtype=np.float64)
        delta[20] = 1.0
        kernel = ndimage.gaussian_filter1d(delta, sig_px)
        noise *= np.float32(1.0 / float(np.sum(kernel**2)))  # back to unit SD (2-D: sum(k^2)^2, sqrt)
    cv.hu += noise * np.float32(sd)
    if metal is not None:
        cv.hu[metal] = HU_MAX  # metal saturates the detector range, noise or not
    hu = np.clip(np.rint(cv.hu), HU_MIN, HU_MAX).astype(np.int16)

    key = [
        "ichviewer-phantom-v1",
        str(seed),
        subtype,
        repr(None if volume_ml is None else round(float(volume_ml), 6)),
        str(mimic),
        f"{slice_mm:g}",
        age,
        str(matrix),
    ] + ([f"planes{planes}"] if planes > 1 else [])
    study_uid = generate_uid(entropy_srcs=[*key, "study"])
    series_uid = generate_uid(entropy_srcs=[*key, "series"])
    x0 = float(x[0])
    y0 = float(y[0])
    origins = np.stack([np.full(n_slices, x0), np.full(n_slices, y0), z], axis=1)
    per_slice = {s: masks[s].any(axis=(1, 2)) for s in SUBTYPES}
    any_slice = union.any(axis=(1, 2))
    slice_labels = [
        {**{s: int(per_slice[s][i]) for s in SUBTYPES}, "ANY": int(any_slice[i])} for i in range(n_slices)
    ]
    assert list(slice_labels[0]) == list(LABELS)
    desc_bits = [f"PHANTOM seed {seed}", subtype]
    if vols["total"] > 0:
        desc_bits.append(f"{vols['total']:.2f} mL")
    if mimic:
        desc_bits.append(mimic)
    desc_bits.append(f"{slice_mm:g}mm")
    volume = CTVolume(
        hu=hu,
        spacing=(slice_mm, pix, pix),
        direction=np.eye(3),
        slice_origins=origins,
        study_uid=study_uid,
        series_uid=series_uid,
        modality="CT",
        series_description=" ".join(desc_bits),
        metadata={
            "synthetic": True,
            "phantom_seed": seed,
            "patient_age": "006Y" if age == "child" else "045Y",
            "patient_name": f"PHANTOM^SEED{seed}",
        },
    )
    return PhantomCase(
        volume=volume,
        masks=masks,
        slice_labels=slice_labels,
        volume_ml=vols,
        subtype=subtype,
        mimic=mimic,
        age=age,
        seed=seed,
        slice_mm=slice_mm,
        requested_volume_ml=None if volume_ml is None else float(volume_ml),
        mimic_detail=mimic_detail,
        sites=sites,
        tissue=tissue,
        hemisphere=(np.sign(X2) * (np.abs(X2) * p.sx > 1.0)).astype(np.int8),
        mimic_mask=mimic_mask,
    )


#: Denser than any blood or brain: bone, calcification, metal (`volume.DENSE_HU`).
DENSE_EDGE_HU = DENSE_HU


def visible_blood_by_slice(case: PhantomCase, dense_hu: float = DENSE_EDGE_HU) -> np.ndarray:
    """(z, 6) int in LABELS order: per slice, the blood voxels of each subtype that a reader could see; ANY of their union.

    A voxel counts when it is at least two pixels (in plane, on its own slice) from every pixel
    denser than `dense_hu` (bone, calcification, metal). The pixel next to the inner table is
    a partial-volume mixture of bone and whatever lies under it: on normal phantoms its HU
    spans about 5-300 (10th-99th percentile), so blood there (60-90 HU) looks like any other
    stretch of the skull's edge, while two pixels in normal brain stays under about 50 HU.
    A punctate SDH or EDH of 5-7 voxels can lie wholly in that first pixel: labelled blood that
    no reader, and no model, can see; so can the edge slices of a larger bleed (6.7 % of the
    positive slices of 80 training-like phantoms, stop 23).
    """
    from scipy import ndimage

    out = np.zeros((case.volume.hu.shape[0], len(LABELS)), dtype=np.int64)
    union = np.zeros(case.volume.hu.shape, dtype=bool)
    for st in SUBTYPES:
        union |= case.masks[st]
    for z in np.flatnonzero(union.any(axis=(1, 2))):
        far = ndimage.distance_transform_edt(case.volume.hu[z] <= dense_hu) >= 2.0
        for st in SUBTYPES:
            out[z, LABELS.index(st)] = int((case.masks[st][z] & far).sum())
        out[z, LABELS.index("ANY")] = int((union[z] & far).sum())
    return out


def visible_blood_voxels(case: PhantomCase, dense_hu: float = DENSE_EDGE_HU) -> int:
    """Blood voxels of `case` that a reader could tell apart from the bone's partial-volume edge
    (`visible_blood_by_slice`, summed over the slices' union of subtypes).

    `phantom-set` writes this count per study (`visible_voxels` in labels.csv) and
    `ichviewer evaluate` reports AUC(ANY) with studies at 0 left out beside the headline figure
    (models/EXPERIMENTS.md, stop 19). Returns 0 for a case without haemorrhage.
    """
    return int(visible_blood_by_slice(case, dense_hu)[:, LABELS.index("ANY")].sum())
