"""CTVolume: HU voxels (z, y, x) with DICOM geometry, and resampling to a regular grid for MPR."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

#: HU used to fill voxels outside the acquired field of view.
AIR_HU = -1024
#: Head tissue against air (REFERENCE.md: air -1000, fat -100 to -50): below fat and above
#: air, so skin and scalp count. The head mask of the model input and of the attention overlay.
HEAD_TISSUE_HU = -300.0
#: Denser than any blood or brain (REFERENCE.md: acute blood 50-90 HU; skull several hundred
#: to 2,000 HU): bone, calcification, metal. The head-CT check's bone and the phantoms'
#: "visible blood" edge.
DENSE_HU = 300.0
#: Relative tolerance on slice spacing before a series counts as unevenly spaced.
SPACING_TOLERANCE_MM = 0.05

#: How the loader's warnings begin when a series lacks part of itself (files it could not read, or
#: gaps where slices are missing): the AI has not seen the whole head (`incomplete_series`).
SLICES_LEFT_OUT = "unreadable slices left out"
SLICES_MISSING = "missing slices"


def incomplete_series(volume: Any) -> str:
    """The warnings of `volume` that say part of the series is missing, joined ("" when it is whole)."""
    return "; ".join(w for w in getattr(volume, "warnings", ()) if w.startswith((SLICES_LEFT_OUT, SLICES_MISSING)))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n == 0:
        raise ValueError("zero-length direction vector")
    return v / n


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A validated axial CT volume in Hounsfield units.

    Slices are indexed in ascending order along the slice normal (row x column
    direction cosines, DICOM LPS), so slice 0 is the most inferior slice of a
    head-first axial series. `hu` is (z, y, x): z the slice, y the DICOM row, x the
    DICOM column. `spacing` is (z, y, x) in mm, z being the median distance between
    slices along the normal. `slice_origins` keeps each slice's
    ImagePositionPatient, so a tilted or unevenly spaced series is described
    exactly; `regularized()` resamples it onto an orthogonal, even grid.

    The constructor either yields a valid volume or raises ValueError.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    direction: np.ndarray
    slice_origins: np.ndarray
    study_uid: str = ""
    series_uid: str = ""
    modality: str = "CT"
    series_description: str = ""
    gantry_tilt_deg: float = 0.0
    warnings: tuple[str, ...] = ()
    source_files: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu)
        if hu.ndim != 3:
            raise ValueError(f"a CT volume needs 3-D voxels (z, y, x), got shape {hu.shape}")
        if hu.shape[0] < 2:
            raise ValueError(f"a CT volume needs at least 2 slices, got {hu.shape[0]}")
        if hu.dtype not in (np.int16, np.float32):
            raise ValueError(f"HU voxels must be int16 or float32, got {hu.dtype}")
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(s > 0 and np.isfinite(s) for s in spacing):
            raise ValueError(f"spacing must be three positive numbers (z, y, x) in mm, got {self.spacing}")
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.shape != (3, 3) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
            raise ValueError("direction must be a 3x3 orthonormal matrix (columns: row, column, normal)")
        origins = np.asarray(self.slice_origins, dtype=np.float64)
        if origins.shape != (hu.shape[0], 3):
            raise ValueError(f"slice_origins must be ({hu.shape[0]}, 3), got {origins.shape}")
        positions = (origins - origins[0]) @ direction[:, 2]
        if not np.all(np.diff(positions) > 0):
            raise ValueError("slices must be in strictly ascending order along the slice normal")
        hu.setflags(write=False)
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "slice_origins", origins)
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "source_files", tuple(str(f) for f in self.source_files))
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    # -- geometry -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def origin(self) -> np.ndarray:
        """Patient position (LPS, mm) of voxel (0, 0, 0)."""
        return self.slice_origins[0]

    @property
    def slice_positions_mm(self) -> np.ndarray:
        """Each slice's distance along the normal from slice 0 (mm), ascending."""
        return (self.slice_origins - self.slice_origins[0]) @ self.direction[:, 2]

    @property
    def slice_locations_mm(self) -> np.ndarray:
        """Each slice's absolute position along the normal (mm), as viewers show it."""
        return self.slice_origins @ self.direction[:, 2]

    @property
    def slice_gaps_mm(self) -> np.ndarray:
        return np.diff(self.slice_positions_mm)

    @property
    def uniform_spacing(self) -> bool:
        gaps = self.slice_gaps_mm
        return bool(np.ptp(gaps) <= SPACING_TOLERANCE_MM) if gaps.size else True

    @property
    def in_plane_shifts_mm(self) -> np.ndarray:
        """(z, 2) shift of each slice's origin along (column x, row y) relative to slice 0.

        Non-zero for gantry-tilted series, whose slices are stacked along the table
        axis rather than along the slice normal.
        """
        d = self.slice_origins - self.slice_origins[0]
        return np.stack([d @ self.direction[:, 0], d @ self.direction[:, 1]], axis=1)

    @property
    def is_regular(self) -> bool:
        """True when voxels lie on an orthogonal grid with even slice spacing."""
        return self.uniform_spacing and bool(np.all(np.abs(self.in_plane_shifts_mm) < 1e-3 + 0.01 * min(self.spacing[1:])))

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def hu_range(self) -> tuple[float, float]:
        return float(self.hu.min()), float(self.hu.max())

    def voxel_to_patient(self, z: float, y: float, x: float) -> np.ndarray:
        """Patient LPS position (mm) of a voxel; z must be a slice index."""
        zi = int(round(z))
        return (
            self.slice_origins[zi]
            + x * self.spacing[2] * self.direction[:, 0]
            + y * self.spacing[1] * self.direction[:, 1]
        )

    def pixel_sha256(self) -> str:
        """SHA-256 of the HU voxels: identifies the pixel data without patient details.

        Computed once per volume (the voxels are read-only): the review database and the kept AI
        results both ask for it, about 0.1 s for 140 slices of 512 x 512.
        """
        known = self.__dict__.get("_pixel_sha256")
        if known is None:
            h = hashlib.sha256()
            h.update(str(self.hu.dtype).encode() + str(self.hu.shape).encode())
            h.update(np.ascontiguousarray(self.hu).tobytes())
            known = h.hexdigest()
            object.__setattr__(self, "_pixel_sha256", known)
        return known

    # -- resampling -----------------------------------------------------------------
    def regularized(self, spacing_z: float | None = None) -> CTVolume:
        """This volume on an orthogonal grid with even slice spacing, for MPR.

        Tilted series are de-sheared (each slice moved in plane by its origin's shift,
        so voxels line up along the slice normal) and the grid enlarged to keep every
        acquired voxel; uneven slice spacing is resampled linearly to `spacing_z`
        (default: the median gap). A regular volume is returned unchanged. The result
        carries a warning saying it was resampled.
        """
        if self.is_regular and spacing_z is None:
            return self
        from scipy import ndimage

        dz = float(spacing_z or np.median(self.slice_gaps_mm))
        dy, dx = self.spacing[1], self.spacing[2]
        shifts = self.in_plane_shifts_mm  # (z, 2) as (x, y) in mm
        sx, sy = shifts[:, 0] / dx, shifts[:, 1] / dy
        pad_x0, pad_x1 = int(np.ceil(max(0.0, -sx.min()))), int(np.ceil(max(0.0, sx.max())))
        pad_y0, pad_y1 = int(np.ceil(max(0.0, -sy.min()))), int(np.ceil(max(0.0, sy.max())))
        nz, ny, nx = self.shape
        out_y, out_x = ny + pad_y0 + pad_y1, nx + pad_x0 + pad_x1
        aligned = np.full((nz, out_y, out_x), AIR_HU, dtype=np.float32)
        for i in range(nz):
            canvas = np.full((out_y, out_x), AIR_HU, dtype=np.float32)
            canvas[pad_y0 : pad_y0 + ny, pad_x0 : pad_x0 + nx] = self.hu[i]
            if abs(sx[i]) > 1e-6 or abs(sy[i]) > 1e-6:
                canvas = ndimage.shift(canvas, (sy[i], sx[i]), order=1, mode="constant", cval=AIR_HU)
            aligned[i] = canvas
        pos = self.slice_positions_mm
        n_out = int(np.floor((pos[-1] - pos[0]) / dz + 1e-6)) + 1
        targets = pos[0] + dz * np.arange(n_out)
        upper = np.clip(np.searchsorted(pos, targets, side="right"), 1, nz - 1)
        lower = upper - 1
        w = ((targets - pos[lower]) / (pos[upper] - pos[lower])).astype(np.float32)[:, None, None]
        resampled = aligned[lower] * (1 - w) + aligned[upper] * w
        r, c, n = self.direction[:, 0], self.direction[:, 1], self.direction[:, 2]
        origin0 = self.slice_origins[0] - pad_x0 * dx * r - pad_y0 * dy * c
        origins = origin0[None, :] + targets[:, None] * n[None, :] - pos[0] * n[None, :]
        note = (
            f"resampled to a regular grid for MPR: {nz} slices -> {n_out} at {dz:.2f} mm"
            + (f", de-sheared for {self.gantry_tilt_deg:.1f} deg gantry tilt" if abs(self.gantry_tilt_deg) > 0.01 else "")
        )
        return replace(
            self,
            hu=resampled.astype(np.float32),
            spacing=(dz, dy, dx),
            slice_origins=origins,
            gantry_tilt_deg=0.0,
            warnings=self.warnings + (note,),
            source_files=(),
            metadata={**self.metadata, "resampled_from_shape": self.shape, "acquired_gantry_tilt_deg": self.gantry_tilt_deg},
        )


def direction_from_orientation(iop: np.ndarray | list[float]) -> np.ndarray:
    """3x3 direction matrix (columns: row dir, column dir, normal) from ImageOrientationPatient."""
    iop = np.asarray(iop, dtype=np.float64)
    r, c = _unit(iop[:3]), _unit(iop[3:6])
    n = _unit(np.cross(r, c))
    return np.stack([r, c, n], axis=1)
