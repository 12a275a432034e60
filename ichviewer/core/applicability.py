"""Is this series a head CT as the AI knows it? A check of what the skull encloses, before the AI's findings are trusted.

The ensemble was made for non-contrast head CT: a skull around brain (white matter 20-30 HU,
grey matter 35-45 HU, CSF 0-15 HU; `../shared/REFERENCE.md`). Out of what it was made for it
still returns numbers, and can return confident ones: the bundled ensemble calls the
air-filled Philips skull phantom (`../shared/data/ct/philips-phantom-*`, its DICOM headers
say "BRAIN" and "PLAIN HEAD") "confident positive" for IPH at 1.00, because the test inserts
are bright discs inside a skull. The generalisation papers (`../shared/seeds/000_*`,
`001_*`) name inputs unlike the training data as the first way such models fail in use.

The check works at about 2 mm pixels on at most 48 slices (0.03-0.1 s on the three real
series, 512 x 512, up to 140 slices):

1. on each slice, bone is HU >= `BONE_HU`; a morphological closing bridges sutures and
   small gaps, and the holes of the closed bone are filled. What the fill adds, less a
   margin along the bone, is the slice's intracranial space;
2. slices whose intracranial space covers at least `MIN_CAVITY_CM2` are assessed (the
   vertex and the skull base, where the space is small or open, are not);
3. the series fits when at least one slice is assessed and the median HU of the assessed
   intracranial voxels lies in `BRAIN_MEDIAN_HU` (brain with some CSF and blood; the limits
   are wide so that hydrocephalus, a large haematoma or a child's watery brain still fit).

Before the image check, the DICOM header: a series whose Contrast/Bolus Agent (0018,0010)
names an agent is contrast-enhanced, and enhancing vessels, sinuses and choroid plexus are
as bright as blood; the ensemble was made for non-contrast CT, as all five seeds' data were.
Values that say there was none ("NONE", "NO", "N/A", "-") are not an agent.

A series that does not fit is read by the AI all the same; its findings are shown with the
reason, and its triage is "refer" rather than either confident class (`StudyResult.triage`).
A false alarm (for example a large craniectomy that leaves no closed skull on any slice)
therefore costs the reader nothing but the triage shortcut. A skull that the field of view
cuts on one side still fits, because the narrower slices near the vertex and the skull base
keep a closed ring (tested on the real head cut 1.4 cm into the skull on every slice); one
cut on both sides of every slice would not, and is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ichviewer.core.volume import DENSE_HU

#: Voxels at or above this HU are bone (skull: several hundred to 2,000 HU; blood is 50-90 HU).
#: A calcification above it inside the skull is a hole in nothing: it is filled like the brain
#: around it and moves the median by a few of its voxels at most.
BONE_HU = DENSE_HU
#: Slices with less intracranial space than this (cm2) are not assessed.
MIN_CAVITY_CM2 = 30.0
#: The median intracranial HU a head CT's brain gives (inclusive limits).
BRAIN_MEDIAN_HU = (-10.0, 70.0)
#: In-plane pixel size the check works at (mm); finer series are subsampled.
CHECK_PIXEL_MM = 2.0
#: Margin (mm) left out along the inner table, so its partial-volume edge does not count.
BONE_MARGIN_MM = 2.0
#: At most this many slices are assessed (evenly spaced over the series).
MAX_SLICES = 48


#: Contrast/Bolus Agent values that mean no contrast was given (upper-cased, stripped).
NO_CONTRAST_VALUES = frozenset({"", "NONE", "NO", "N", "N/A", "NA", "-", "0", "NIL", "NO CONTRAST", "WITHOUT"})


def contrast_agent(volume: Any) -> str:
    """The contrast agent the series' DICOM header names ("" when none, or when it says there was none)."""
    metadata = getattr(volume, "metadata", None) or {}
    agent = str(metadata.get("contrast_agent", "") or "").strip()
    return "" if agent.upper() in NO_CONTRAST_VALUES else agent


@dataclass(frozen=True)
class HeadCTCheck:
    """The result of `check_head_ct`: whether the series fits, and why not if it does not."""

    applicable: bool
    reason: str
    intracranial_median_hu: float | None
    slices_assessed: int
    slices_checked: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "applicable": self.applicable,
            "reason": self.reason,
            "intracranial_median_hu": None if self.intracranial_median_hu is None else round(self.intracranial_median_hu, 1),
            "slices_assessed": self.slices_assessed,
            "slices_checked": self.slices_checked,
        }


def head_check_failure(check: Any) -> str | None:
    """Read a check's JSON form (`HeadCTCheck.to_dict`, as `ichviewer infer` writes it): None when the
    series was not checked, "" when it looks like a head CT, else why it does not."""
    if check is None:
        return None
    return "" if check.get("applicable", True) else str(check.get("reason") or "not a head CT")


def _cavity(bone: np.ndarray, closing_px: int, margin_px: int) -> np.ndarray:
    # Padded, so a skull cut by the field of view's edge is not eroded away by the closing.
    padded = np.pad(bone, closing_px)
    closed = ndi.binary_closing(padded, structure=ndi.generate_binary_structure(2, 1), iterations=closing_px)
    closed = closed[closing_px:-closing_px, closing_px:-closing_px]
    filled = ndi.binary_fill_holes(closed)
    return filled & ~ndi.binary_dilation(closed, iterations=margin_px)


def check_head_ct(volume: Any) -> HeadCTCheck:
    """Check that `volume` (a CTVolume, or anything with `hu` (z, y, x) and `spacing` (z, y, x) mm) looks like a head CT."""
    hu = np.asarray(volume.hu)
    z, _, _ = hu.shape
    agent = contrast_agent(volume)
    if agent:
        return HeadCTCheck(
            False,
            f"the DICOM header names a contrast agent ({agent!r}): the AI was trained on non-contrast head CT, "
            "and enhancing vessels look like blood",
            None,
            0,
            0,
        )
    dy, dx = float(volume.spacing[1]), float(volume.spacing[2])
    sy, sx = max(1, round(CHECK_PIXEL_MM / dy)), max(1, round(CHECK_PIXEL_MM / dx))
    pixel_cm2 = (dy * sy) * (dx * sx) / 100.0
    closing_px = max(1, round(4.0 / (dx * sx)))
    margin_px = max(1, round(BONE_MARGIN_MM / (dx * sx)))
    picked = np.unique(np.linspace(0, z - 1, min(z, MAX_SLICES)).round().astype(int))
    values: list[np.ndarray] = []
    assessed = 0
    for k in picked:
        img = hu[k, ::sy, ::sx].astype(np.float32)
        cavity = _cavity(img >= BONE_HU, closing_px, margin_px)
        if cavity.sum() * pixel_cm2 < MIN_CAVITY_CM2:
            continue
        assessed += 1
        values.append(img[cavity])
    lo, hi = BRAIN_MEDIAN_HU
    if not assessed:
        return HeadCTCheck(
            False,
            f"no slice shows a closed skull around at least {MIN_CAVITY_CM2:.0f} cm\u00b2 "
            f"(bone \u2265 {BONE_HU:.0f} HU); not a head CT as the AI was trained on",
            None,
            0,
            len(picked),
        )
    median = float(np.median(np.concatenate(values)))
    if not lo <= median <= hi:
        return HeadCTCheck(
            False,
            f"the skull encloses {median:.0f} HU (median over {assessed} slices), not brain "
            f"({lo:.0f} to {hi:.0f} HU expected): a phantom, or not a head CT as the AI was trained on",
            median,
            assessed,
            len(picked),
        )
    return HeadCTCheck(True, "", median, assessed, len(picked))
