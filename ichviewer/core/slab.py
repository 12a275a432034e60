"""Thick-slab display of thin axial series: the average, or the maximum (MIP), of the slices in a slab.

Radiologists read thin (0.6-1.25 mm) head CT as 5 mm slabs, as the reading-room viewers offer
(Weasis, OHIF, Slicer): averaging lowers the noise a small bleed must stand out from, and a MIP
shows a dense dot on whichever thin slice it lies. The slab is centred on the slice shown and
clipped at the ends of the series. It is a display only: measurements and the AI read the
acquired slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

AVERAGE = "average"
MIP = "mip"
SLAB_MODES = (AVERAGE, MIP)
#: The thicknesses the viewer's key steps through (0: off), in mm.
SLAB_STEPS_MM = (0.0, 3.0, 5.0, 10.0)
#: Thickest slab accepted (a whole-head MIP is not a reading aid).
MAX_SLAB_MM = 50.0


@dataclass(frozen=True)
class Slab:
    """`thickness_mm` 0 for the acquired slice; `mode` AVERAGE or MIP."""

    thickness_mm: float = 0.0
    mode: str = AVERAGE

    def __post_init__(self) -> None:
        t = float(self.thickness_mm)
        if not (math.isfinite(t) and 0.0 <= t <= MAX_SLAB_MM):
            raise ValueError(f"slab thickness must be 0 (off) to {MAX_SLAB_MM:g} mm, not {self.thickness_mm!r}")
        if self.mode not in SLAB_MODES:
            raise ValueError(f"slab mode must be one of {SLAB_MODES}, not {self.mode!r}")
        object.__setattr__(self, "thickness_mm", t)

    @property
    def active(self) -> bool:
        return self.thickness_mm > 0.0

    def slice_range(self, slice_index: int, n_slices: int, spacing_mm: float) -> range:
        """The slices the slab takes around `slice_index`: round(thickness / spacing) of them,
        centred (one more above when even), clipped to the series; only the slice itself when off
        or when the series is already as thick."""
        n = max(1, round(self.thickness_mm / float(spacing_mm))) if self.active else 1
        first = max(0, int(slice_index) - (n - 1) // 2)
        last = min(int(n_slices) - 1, int(slice_index) + n // 2)
        return range(first, last + 1)

    @property
    def short_name(self) -> str:
        """'avg' or 'MIP', as the viewer's corners say it."""
        return "MIP" if self.mode == MIP else "avg"

    def describe(self, images: range) -> str:
        """Corner annotation: 'Slab: 5 mm avg (images 3-7)'."""
        return f"Slab: {self.thickness_mm:g} mm {self.short_name} (images {images.start + 1}-{images.stop})"


def slab_image(planes: np.ndarray, slice_index: int, spacing_mm: float, slab: Slab) -> tuple[np.ndarray, range]:
    """The image shown for `slice_index` of `planes` (z, rows, cols) and the slices it combines.

    One slice: that slice unchanged. Average: float32 mean (HU). MIP: the maximum, in the input dtype.
    """
    images = slab.slice_range(slice_index, planes.shape[0], spacing_mm)
    if len(images) == 1:
        return planes[images.start], images
    block = planes[images.start:images.stop]
    if slab.mode == MIP:
        return block.max(axis=0), images
    return block.mean(axis=0, dtype=np.float32), images
