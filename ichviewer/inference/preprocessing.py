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

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ichviewer.core.volume import AIR_HU
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


def _apply_taps(x: np.ndarray, ty: tuple[np.ndarray, np.ndarray], tx: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
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

    @cached_property
    def mm_per_input_pixel(self) -> float:
        (h0, w0), (dy, dx), (h, w) = self.source_shape, self.pixel_spacing, self.input_size
        return max(h0 * dy / h, w0 * dx / w)

    @cached_property
    def padding_mm(self) -> tuple[float, float]:
        """Air added before the slice on each axis (y, x), in mm; the same again after it."""
        (h0, w0), (dy, dx), (h, w) = self.source_shape, self.pixel_spacing, self.input_size
        s = self.mm_per_input_pixel
        return ((h * s - h0 * dy) / 2.0, (w * s - w0 * dx) / 2.0)

    def _axis(self, axis: int) -> tuple[int, int, float, float, bool]:
        n_src, d = self.source_shape[axis], self.pixel_spacing[axis]
        n_in, pad = self.input_size[axis], self.padding_mm[axis]
        return n_src, n_in, d, pad, pad > 1e-6 * self.mm_per_input_pixel

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
        out = _apply_taps(maps.reshape((-1,) + maps.shape[-2:]), ty, tx)
        return out.reshape(lead + out.shape[-2:])


def geometry_for(volume, input_size: tuple[int, int]) -> SliceGeometry:
    """The SliceGeometry of a CTVolume's axial slices for a model input size."""
    return SliceGeometry(volume.hu.shape[1:], (volume.spacing[1], volume.spacing[2]), input_size)


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
    resized = _apply_taps(x, ty, tx)
    resized += air
    out = multi_window(resized, tuple(windows))
    if mean is not None:
        out -= np.asarray(mean, dtype=np.float32)[:, None, None]
    if std is not None:
        out /= np.asarray(std, dtype=np.float32)[:, None, None]
    return out
