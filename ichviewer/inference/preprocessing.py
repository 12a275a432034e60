"""Slice -> model input: keep-aspect pad with air, antialiased resize, multi-window channels; and the way back.

Geometry (documented in models/README.md): each axial slice (H0 x W0 pixels of
dy x dx mm) is centred on a canvas with the model's input aspect, big enough to
hold the whole slice in millimetres (so non-square pixels are corrected), padded
with air (-1024 HU); the canvas is resampled to the input size (H x W) with a
separable triangle filter that widens when shrinking (antialiased bilinear).
HU below air (e.g. the scanner's padding outside the reconstruction circle) and
NaN are raised to air first. The resampled HU then go through the model's windows
(`multi_window`, Lee et al. 2019 multi-window conversion), one channel each in
[0, 1], then optionally `(x - mean) / std` per channel.

`SliceGeometry.to_source` inverts the mapping for maps computed on the model's
grid (attention maps), so they land on the original slice pixels.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ichviewer.core.volume import AIR_HU, HEAD_TISSUE_HU
from ichviewer.core.windowing import LEE_WINDOWS, Window, multi_window


def resample_taps(n_out: int, n_src: int, scale: float, shift: float, *, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """1-D triangle-filter resampling as taps: (index, weight) arrays, each (n_out, T).

    Output sample i sits at source coordinate u_i = scale * i + shift (in source
    pixels, pixel centres at integers). The filter radius is max(1, scale), so
    shrinking averages (antialiasing) and enlarging interpolates linearly.
    mode "air": taps outside the source count as zero-valued padding (weights still
    normalised over all taps, the outside ones then get weight 0); mode "edge":
    taps outside are clamped to the border.
    """
    if mode not in ("air", "edge"):
        raise ValueError(f"mode must be 'air' or 'edge', got {mode!r}")
    radius = max(1.0, float(scale))
    u = scale * np.arange(n_out, dtype=np.float64) + shift
    first = np.floor(u - radius).astype(np.int64) + 1
    n_taps = int(np.ceil(2 * radius)) + 1
    taps = first[:, None] + np.arange(n_taps)[None, :]
    w = np.maximum(0.0, 1.0 - np.abs(taps - u[:, None]) / radius)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    if mode == "air":
        w[(taps < 0) | (taps >= n_src)] = 0.0
    return np.clip(taps, 0, n_src - 1), w.astype(np.float32)


def resample_matrix(n_out: int, n_src: int, scale: float, shift: float, *, mode: str) -> np.ndarray:
    """The (n_out, n_src) matrix of `resample_taps` (for inspection and tests)."""
    idx, w = resample_taps(n_out, n_src, scale, shift, mode=mode)
    m = np.zeros((n_out, n_src), dtype=np.float64)
    np.add.at(m, (np.repeat(np.arange(n_out), idx.shape[1]), idx.ravel()), w.ravel())
    return m.astype(np.float32)


def apply_taps(x: np.ndarray, ty: tuple[np.ndarray, np.ndarray], tx: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Separable resampling of (n, h, w) images with per-axis taps: columns first, then rows."""
    (iy, wy), (ix, wx) = ty, tx
    x = np.asarray(x, dtype=np.float32)
    cols = x[:, :, ix[:, 0]] * wx[:, 0]
    for t in range(1, ix.shape[1]):
        cols += x[:, :, ix[:, t]] * wx[:, t]
    out = cols[:, iy[:, 0], :] * wy[:, 0, None]
    for t in range(1, iy.shape[1]):
        out += cols[:, iy[:, t], :] * wy[:, t, None]
    return out


@dataclass(frozen=True)
class SliceGeometry:
    """How a slice of `source_shape` pixels with `pixel_spacing` (dy, dx mm) maps onto a model input."""

    source_shape: tuple[int, int]
    pixel_spacing: tuple[float, float]
    input_size: tuple[int, int]
    #: Optional region (y0, x0, y1, x1) in mm from the slice's top-left pixel edge, centred on the canvas.
    crop_mm: tuple[float, float, float, float] | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        src = tuple(int(s) for s in self.source_shape)
        spacing = tuple(float(s) for s in self.pixel_spacing)
        size = tuple(int(s) for s in self.input_size)
        if len(src) != 2 or min(src) < 1:
            raise ValueError(f"source shape must be two positive integers, got {self.source_shape}")
        if len(spacing) != 2 or not all(s > 0 and np.isfinite(s) for s in spacing):
            raise ValueError(f"pixel spacing must be two positive numbers (mm), got {self.pixel_spacing}")
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"input size must be two positive integers, got {self.input_size}")
        object.__setattr__(self, "source_shape", src)
        object.__setattr__(self, "pixel_spacing", spacing)
        object.__setattr__(self, "input_size", size)
        if self.crop_mm is not None:
            crop = tuple(float(v) for v in self.crop_mm)
            if len(crop) != 4 or not all(np.isfinite(crop)) or crop[2] <= crop[0] or crop[3] <= crop[1]:
                raise ValueError(f"crop must be (y0, x0, y1, x1) mm with y1 > y0 and x1 > x0, got {self.crop_mm}")
            object.__setattr__(self, "crop_mm", crop)

    @cached_property
    def region_mm(self) -> tuple[float, float, float, float]:
        """(y0, x0, y1, x1) in mm of the slice region the canvas is fitted to: the crop, or the whole slice."""
        if self.crop_mm is not None:
            return self.crop_mm
        (h0, w0), (dy, dx) = self.source_shape, self.pixel_spacing
        return (0.0, 0.0, h0 * dy, w0 * dx)

    @cached_property
    def mm_per_input_pixel(self) -> float:
        y0, x0, y1, x1 = self.region_mm
        h, w = self.input_size
        return max((y1 - y0) / h, (x1 - x0) / w)

    @cached_property
    def padding_mm(self) -> tuple[float, float]:
        """Where the canvas starts, as mm of air before the slice's top/left edge (negative: inside the slice)."""
        y0, x0, y1, x1 = self.region_mm
        h, w = self.input_size
        s = self.mm_per_input_pixel
        return ((h * s - (y1 - y0)) / 2.0 - y0, (w * s - (x1 - x0)) / 2.0 - x0)

    def _axis(self, axis: int) -> tuple[int, int, float, float, bool]:
        n_src, d = self.source_shape[axis], self.pixel_spacing[axis]
        n_in, pad = self.input_size[axis], self.padding_mm[axis]
        # A crop may reach past the slice on one side: then outside taps must be air too.
        outside = pad > 1e-6 * self.mm_per_input_pixel or self.crop_mm is not None
        return n_src, n_in, d, pad, outside

    def input_taps(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Per-axis (index, weight) taps taking (HU - air) on the slice to the model grid."""
        if "in" not in self._cache:
            s = self.mm_per_input_pixel
            mats = []
            for axis in (0, 1):
                n_src, n_in, d, pad, padded = self._axis(axis)
                # input pixel i centre at (i + 0.5) * s - pad mm from the slice edge
                scale, shift = s / d, (0.5 * s - pad) / d - 0.5
                mats.append(resample_taps(n_in, n_src, scale, shift, mode="air" if padded else "edge"))
            self._cache["in"] = tuple(mats)
        return self._cache["in"]

    def source_taps(self, grid: tuple[int, int]) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Per-axis taps taking a map on an h x w grid covering the model input onto the slice."""
        key = ("src", tuple(int(g) for g in grid))
        if key not in self._cache:
            s = self.mm_per_input_pixel
            mats = []
            for axis in (0, 1):
                n_src, n_in, d, pad, _ = self._axis(axis)
                cell = s * n_in / key[1][axis]  # mm per map cell
                scale, shift = d / cell, (0.5 * d + pad) / cell - 0.5
                mats.append(resample_taps(n_src, key[1][axis], scale, shift, mode="edge"))
            self._cache[key] = tuple(mats)
        return self._cache[key]

    def to_source(self, maps: np.ndarray) -> np.ndarray:
        """Resample map(s) (..., h, w) defined over the model input back onto the slice (..., H0, W0)."""
        maps = np.asarray(maps, dtype=np.float32)
        ty, tx = self.source_taps(maps.shape[-2:])
        lead = maps.shape[:-2]
        out = apply_taps(maps.reshape((-1,) + maps.shape[-2:]), ty, tx)
        return out.reshape(lead + out.shape[-2:])


#: Input framings a manifest may ask for ("none": the whole slice; "head": `head_crop_mm`).
CROPS: tuple[str, ...] = ("none", "head")
#: Tissue threshold for the head mask (below fat and above air, so skin and scalp count).
HEAD_MASK_HU = HEAD_TISSUE_HU
#: Margin added around the head's bounding box, as a fraction of its larger side.
HEAD_MARGIN = 0.04


def head_crop_mm(hu: np.ndarray, pixel_spacing: tuple[float, float]) -> tuple[float, float, float, float] | None:
    """A square (y0, x0, y1, x1) in mm around the head in a series (n, H, W), or None if no head is found.

    The mask is tissue above HEAD_MASK_HU in any slice; its largest connected component
    is the head (a table or headrest that does not touch it is left out). The square's
    side is the box's larger side in mm plus HEAD_MARGIN on each side; it is centred on
    the box and may reach past the slice (the preprocessing pads with air there).
    """
    from scipy import ndimage

    hu = np.asarray(hu)
    if hu.ndim == 2:
        hu = hu[None]
    mask = (hu > HEAD_MASK_HU).any(axis=0)
    if not mask.any():
        return None
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(np.argmax(sizes))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    dy, dx = float(pixel_spacing[0]), float(pixel_spacing[1])
    y0, y1 = rows[0] * dy, (rows[-1] + 1) * dy
    x0, x1 = cols[0] * dx, (cols[-1] + 1) * dx
    side = max(y1 - y0, x1 - x0) * (1.0 + 2.0 * HEAD_MARGIN)
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return (cy - side / 2.0, cx - side / 2.0, cy + side / 2.0, cx + side / 2.0)


#: The last series' head crop (weak reference to its HU array, spacing, crop): attention maps and
#: atlas queries ask for the geometry of one series slice after slice.
_LAST_HEAD_CROP: list = [None, None, None]


def _cached_head_crop(hu: np.ndarray, spacing: tuple[float, float]):
    ref, sp, crop = _LAST_HEAD_CROP
    if ref is not None and ref() is hu and sp == spacing:
        return crop
    crop = head_crop_mm(hu, spacing)
    try:
        _LAST_HEAD_CROP[:] = [weakref.ref(hu), spacing, crop]
    except TypeError:  # not weak-referenceable (e.g. a memory map subclass)
        pass
    return crop


def slab_half_width(slice_mm: float, slab_mm: float | None) -> int:
    """Neighbours averaged on each side of a slice for a slab of about `slab_mm` (0: the slice alone).

    round((slab / spacing - 1) / 2): 1 mm slices in a 5 mm slab -> 2 (five slices);
    0.625 mm -> 3 (4.4 mm; halves round down); 2 mm -> 1 (6 mm); 2.5 mm and thicker -> 0.
    """
    if not slab_mm or not slice_mm or slice_mm <= 0:
        return 0
    return max(0, int(round((float(slab_mm) / float(slice_mm) - 1.0) / 2.0 - 1e-9)))


def slab_slices(volume, indices, slab_mm: float | None = None) -> np.ndarray:
    """HU of the slices `indices` of a CTVolume, each averaged with its neighbours into a slab of about `slab_mm`.

    Neighbours are those within `slab_half_width` positions along the series (fewer at its
    ends: the mean is over the slices that exist). HU below air count as air. Without a
    slab, or for slices already that thick, the stored slices are returned as they are.
    """
    hu = volume.hu
    idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
    half = slab_half_width(float(volume.spacing[0]), slab_mm)
    if half == 0 or idx.size == 0:
        return hu[idx]
    n = hu.shape[0]
    out = np.empty((idx.size,) + hu.shape[1:], dtype=np.float32)
    air = np.float32(AIR_HU)
    for j, z in enumerate(idx):
        lo, hi = max(0, int(z) - half), min(n, int(z) + half + 1)
        block = np.fmax(hu[lo:hi].astype(np.float32), air)
        out[j] = block.mean(axis=0)
    return out


def model_inputs(volume, indices, spec, geometry: SliceGeometry | None = None) -> np.ndarray:
    """What member `spec` (a manifest ModelSpec) reads for the slices `indices` of a CTVolume: (n, C, H, W).

    Each slice as the manifest's input asks: in its slab (`slab_slices`), framed and resized
    (`geometry`, made here when not given), through its windows and normalisation; with
    `spec.context_slices` 3, with its lower and upper neighbour's inputs as further channels
    (`ichviewer.inference.interpolation.with_context`). For one slice or a few (attention maps,
    the atlas); `run_study` prepares whole chunks itself.
    """
    from ichviewer.inference.interpolation import neighbours, with_context

    idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
    if geometry is None:
        geometry = geometry_for(volume, spec.input_size, spec.crop)

    def prepare(rows: np.ndarray) -> np.ndarray:
        return preprocess_slices(slab_slices(volume, rows, spec.slab_mm), geometry, spec.windows, spec.mean, spec.std)

    if spec.context_slices == 1:
        return prepare(idx)
    lower, upper = neighbours(idx, int(volume.hu.shape[0]))
    rows, where = np.unique(np.concatenate([idx, lower, upper]), return_inverse=True)
    x = prepare(rows)
    k = idx.size
    return with_context(x[where[:k]], x[where[k : 2 * k]], x[where[2 * k :]], spec.context_slices)


def geometry_for(volume, input_size: tuple[int, int], crop: str = "none") -> SliceGeometry:
    """The SliceGeometry of a CTVolume's axial slices for a model input size and framing (see CROPS)."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    spacing = (float(volume.spacing[1]), float(volume.spacing[2]))
    region = _cached_head_crop(volume.hu, spacing) if crop == "head" else None
    return SliceGeometry(volume.hu.shape[1:], spacing, input_size, region)


def preprocess_slices(
    hu: np.ndarray,
    geometry: SliceGeometry,
    windows: tuple[Window, ...] | list[Window] = LEE_WINDOWS,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> np.ndarray:
    """HU slices (n, H0, W0) -> model input (n, C, H, W) float32, as the module docstring describes."""
    hu = np.asarray(hu)
    if hu.ndim == 2:
        hu = hu[None]
    if hu.shape[1:] != geometry.source_shape:
        raise ValueError(f"slices are {hu.shape[1:]}, geometry expects {geometry.source_shape}")
    air = np.float32(AIR_HU)
    x = hu.astype(np.float32)
    np.fmax(x, air, out=x)  # fmax also turns NaN into air
    x -= air  # air -> 0, so padding adds nothing
    ty, tx = geometry.input_taps()
    resized = apply_taps(x, ty, tx)
    resized += air
    out = multi_window(resized, tuple(windows))
    if mean is not None:
        out -= np.asarray(mean, dtype=np.float32)[:, None, None]
    if std is not None:
        out /= np.asarray(std, dtype=np.float32)[:, None, None]
    return out
