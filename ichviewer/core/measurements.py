"""Measurements a reader draws on an axial slice: a length (ruler), an elliptical ROI's HU statistics,
the ABC/2 haemorrhage volume estimate made from two lengths, and a haematoma's volume by voxel
counting from one click (seeded 3D region growing over the acute-blood HU range).

Points are continuous voxel coordinates (y, x) of the slice, in the same convention as
`ichviewer.qt.display.Orientation` (voxel (i, j) covers [i, i + 1) x [j, j + 1), its centre is
at i + 0.5, j + 0.5), so a measurement does not depend on how the series is shown on screen.
No Qt here: the views draw these, the review database stores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

#: A straight line: its length in mm.
LENGTH = "length"
#: An ellipse inscribed in the box its two points span: mean, SD, min and max HU of the voxels whose
#: centres lie inside, and its area.
ELLIPSE = "ellipse"
#: A click inside a haematoma: the voxels in the blood HU range connected to it in 3D, counted (mL).
VOLUME = "volume"
KINDS = (LENGTH, ELLIPSE, VOLUME)

#: Acute blood is 50 to 90 HU (REFERENCE "Attenuation"); 100 keeps a dense clot and leaves out
#: calcification (100 to 1000 HU) and grey matter (35 to 45 HU).
DEFAULT_BLOOD_HU = (50.0, 100.0)
#: Bone, calcification and metal: voxels within BONE_MARGIN_PIXELS of these (in the slice) are left
#: out of a grown region, so it cannot run round the skull's partial-volume edge, which passes
#: through the blood range between brain and bone.
BONE_HU = 300.0
BONE_MARGIN_PIXELS = 1
#: In-plane median window (pixels) the HU range is tested on.
SMOOTHING_PIXELS = 3
#: A grown region stops this far from its seed (mm): a leak is bounded and shows as too large a figure.
MAX_GROW_RADIUS_MM = 80.0
#: With necks cut (the default), the region spreads only through parts of the blood range at least
#: this wide (mm) in the slice: on real heads the cortex against the inner table, which beam hardening
#: lifts above 50 HU, and the venous sinuses are thin ribbons of the range joined to everything, and
#: a click in a clot beside them ran round the head (the real GE head, 40 clicks in the intracranial
#: blood range: median 38 mL; with necks cut 0.2 mL, and the 6 clicks on ribbons thinner than this
#: are followed as before and say so).
NECK_MM = 2.0
#: ... and then takes back the parts of the range within this distance (mm, in the slice, through the
#: range) of what it reached, so a clot keeps its edge and a crescent most of its tapering ends
#: (phantoms: IPH 20.0 of 20.0 mL either way, SDH 26.9 against 27.3 mL with every connection followed).
NECK_RESTORE_MM = 2.0

#: Two lengths on one slice count as perpendicular for ABC/2 within this many degrees of 90.
ABC2_PERPENDICULAR_TOLERANCE_DEG = 20.0


class MeasurementError(ValueError):
    """A measurement that cannot be made (unknown kind, a point that is not a number, an empty slice)."""


@dataclass(frozen=True)
class Measurement:
    """One measurement on axial slice `slice_index`: `kind` and the two points it was drawn between.

    `id` is the review database's row id once stored (None before). `sop_instance_uid` is the
    image it was made on (DICOM's SOP Instance UID), when the series carries one: a saved measurement
    is put back on that image wherever it sits in the copy opened (`slice_index` is where it was made).
    """

    kind: str
    slice_index: int
    start: tuple[float, float]  # (y, x) voxel coordinates; for VOLUME the seed
    end: tuple[float, float]  # for VOLUME the same as start
    id: int | None = None
    hu_range: tuple[float, float] | None = None  # VOLUME: the HU range grown over (DEFAULT_BLOOD_HU)
    cut_necks: bool | None = None  # VOLUME: grown with connections narrower than NECK_MM cut (default True)
    sop_instance_uid: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MeasurementError(f"measurement kind must be one of {KINDS}, not {self.kind!r}")
        if isinstance(self.slice_index, bool) or int(self.slice_index) != self.slice_index or self.slice_index < 0:
            raise MeasurementError(f"measurement slice must be a non-negative integer, not {self.slice_index!r}")
        for name in ("start", "end"):
            point = tuple(float(v) for v in getattr(self, name))
            if len(point) != 2 or not all(math.isfinite(v) for v in point):
                raise MeasurementError(f"measurement {name} must be two finite numbers (y, x), not {getattr(self, name)!r}")
            object.__setattr__(self, name, point)
        object.__setattr__(self, "slice_index", int(self.slice_index))
        if self.kind == VOLUME:
            lo, hi = self.hu_range if self.hu_range is not None else DEFAULT_BLOOD_HU
            if not (math.isfinite(float(lo)) and math.isfinite(float(hi)) and float(lo) < float(hi)):
                raise MeasurementError(f"a volume's HU range must be two numbers, low below high, not {self.hu_range!r}")
            object.__setattr__(self, "hu_range", (float(lo), float(hi)))
            object.__setattr__(self, "end", self.start)
            object.__setattr__(self, "cut_necks", True if self.cut_necks is None else bool(self.cut_necks))
        elif self.hu_range is not None or self.cut_necks is not None:
            raise MeasurementError(f"only a volume has an HU range and a growing method, not a {self.kind}")

    def with_id(self, row_id: int) -> Measurement:
        return replace(self, id=int(row_id))


@dataclass(frozen=True)
class EllipseStats:
    """HU statistics of the voxels inside an elliptical ROI (OHIF and Weasis show the same figures)."""

    n_voxels: int
    mean_hu: float
    sd_hu: float
    min_hu: float
    max_hu: float
    area_mm2: float  # of the drawn ellipse (pi a b), not of the voxels counted


def length_mm(start: tuple[float, float], end: tuple[float, float], spacing_yx: tuple[float, float]) -> float:
    """Distance between two in-plane points in mm, with the row (y) and column (x) spacing of the slice."""
    dy = (float(end[0]) - float(start[0])) * float(spacing_yx[0])
    dx = (float(end[1]) - float(start[1])) * float(spacing_yx[1])
    return math.hypot(dy, dx)


def ellipse_mask(shape: tuple[int, int], start: tuple[float, float], end: tuple[float, float]) -> np.ndarray:
    """(rows, cols) bool mask of the voxels whose centres lie inside the ellipse inscribed in the box start-end."""
    ny, nx = int(shape[0]), int(shape[1])
    (y0, x0), (y1, x1) = start, end
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    ry, rx = abs(y1 - y0) / 2.0, abs(x1 - x0) / 2.0
    mask = np.zeros((ny, nx), dtype=bool)
    if ry <= 0 or rx <= 0:
        return mask
    # Only the rows and columns the box touches.
    r_lo, r_hi = max(0, math.floor(cy - ry)), min(ny, math.ceil(cy + ry) + 1)
    c_lo, c_hi = max(0, math.floor(cx - rx)), min(nx, math.ceil(cx + rx) + 1)
    if r_lo >= r_hi or c_lo >= c_hi:
        return mask
    yy = (np.arange(r_lo, r_hi) + 0.5 - cy) / ry
    xx = (np.arange(c_lo, c_hi) + 0.5 - cx) / rx
    mask[r_lo:r_hi, c_lo:c_hi] = yy[:, None] ** 2 + xx[None, :] ** 2 <= 1.0
    return mask


def ellipse_stats(hu_slice: np.ndarray, start: tuple[float, float], end: tuple[float, float],
                  spacing_yx: tuple[float, float]) -> EllipseStats | None:
    """Statistics of an elliptical ROI on one slice of HU; None when no voxel centre lies inside it."""
    hu_slice = np.asarray(hu_slice)
    if hu_slice.ndim != 2:
        raise MeasurementError(f"an ROI needs one slice (rows, cols), got shape {hu_slice.shape}")
    mask = ellipse_mask(hu_slice.shape, start, end)
    values = hu_slice[mask].astype(np.float64)
    if values.size == 0:
        return None
    a_mm = abs(float(end[0]) - float(start[0])) * float(spacing_yx[0]) / 2.0
    b_mm = abs(float(end[1]) - float(start[1])) * float(spacing_yx[1]) / 2.0
    return EllipseStats(
        n_voxels=int(values.size),
        mean_hu=float(values.mean()),
        # the sample SD, as the reading-room viewers report it
        sd_hu=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        min_hu=float(values.min()),
        max_hu=float(values.max()),
        area_mm2=math.pi * a_mm * b_mm,
    )


@dataclass(frozen=True)
class GrownRegion:
    """The voxels a VOLUME measurement counted: `mask` over slices `z0`..`z0 + len(mask) - 1`."""

    mask: np.ndarray  # (slices, rows, cols) bool, the full in-plane size
    z0: int
    volume_ml: float
    n_voxels: int
    mean_hu: float
    touches_limit: bool  # reached MAX_GROW_RADIUS_MM: the region may have leaked
    connections: str = "cut"  # "cut" (necks narrower than NECK_MM), "all", or "all-thin" (asked to cut, too thin to)

    def slice_mask(self, z: int) -> np.ndarray | None:
        k = z - self.z0
        return self.mask[k] if 0 <= k < len(self.mask) and self.mask[k].any() else None

    @property
    def slices(self) -> int:
        return int(np.count_nonzero(self.mask.any(axis=(1, 2))))


def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy * yy + xx * xx <= radius * radius


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def check_seed(hu: np.ndarray, seed_zyx: tuple[int, int, int], hu_range: tuple[float, float]) -> None:
    """Raise MeasurementError unless the seed is inside the series and its voxel in `hu_range`.

    The only reasons `grow_region` refuses a seed; cheap, so the workstation checks a click before it
    grows the region on a worker thread.
    """
    nz, ny, nx = np.shape(hu)
    z, y, x = (int(v) for v in seed_zyx)
    if not (0 <= z < nz and 0 <= y < ny and 0 <= x < nx):
        raise MeasurementError(f"the seed ({z}, {y}, {x}) is outside the series ({nz} x {ny} x {nx})")
    lo, hi = float(hu_range[0]), float(hu_range[1])
    value = float(hu[z, y, x])
    if not lo <= value <= hi:
        raise MeasurementError(f"the clicked voxel is {value:.0f} HU, outside the blood range {lo:g} to {hi:g} HU: "
                               "click inside the haematoma (or change the range)")


def grow_region(hu: np.ndarray, spacing_zyx: tuple[float, float, float], seed_zyx: tuple[int, int, int],
                hu_range: tuple[float, float] = DEFAULT_BLOOD_HU,
                max_radius_mm: float = MAX_GROW_RADIUS_MM, cut_necks: bool = True) -> GrownRegion:
    """The voxels in `hu_range` connected (faces, 3D) to the seed, away from bone; their volume in mL.

    Voxel counting (REFERENCE "Volume": more accurate than ABC/2 on irregular bleeds); the range is
    tested on the slice smoothed by a SMOOTHING_PIXELS in-plane median. Voxels within
    BONE_MARGIN_PIXELS of bone or calcification on their slice are not counted, so the region does not
    follow the partial-volume edge of the skull (an extra-axial bleed loses that rim, about 1 mm).

    With `cut_necks` the region spreads (in the slice and across slices) only through the part of
    the range at least NECK_MM wide in its slice (the range eroded by a disc of half that
    diameter), then takes back, slice by slice, the part of the range within NECK_RESTORE_MM of
    what it reached (geodesic, through the range), so a clot is not joined to the beam-hardened
    cortex or a venous sinus by a thin ribbon. A click on a part of the range thinner than NECK_MM
    and further than NECK_RESTORE_MM from any wider part (a thin subdural, subarachnoid blood, the
    ribbon itself) grows as without `cut_necks`, so the region always holds the voxel clicked, and
    says so (`connections` "all-thin").
    Raises MeasurementError when the seed is outside the volume or not itself in the range.
    """
    from scipy import ndimage

    hu = np.asarray(hu)
    nz, ny, nx = hu.shape
    check_seed(hu, seed_zyx, hu_range)
    z, y, x = (int(v) for v in seed_zyx)
    lo, hi = float(hu_range[0]), float(hu_range[1])
    sz, sy, sx = (float(v) for v in spacing_zyx)
    rz, ry, rx = (int(math.ceil(max_radius_mm / s)) for s in (sz, sy, sx))
    z_lo, z_hi = max(0, z - rz), min(nz, z + rz + 1)
    rows, cols = slice(max(0, y - ry), min(ny, y + ry + 1)), slice(max(0, x - rx), min(nx, x + rx + 1))
    yy, xx = np.ogrid[rows, cols]
    in_plane_mm2 = ((yy - y) * sy) ** 2 + ((xx - x) * sx) ** 2
    disc = np.ones((3, 3), bool)
    pixel_mm = math.sqrt(sy * sx)
    neck = _disc(max(1, int(round(NECK_MM / 2.0 / pixel_mm))))
    restore_steps = int(round(NECK_MM / 2.0 / pixel_mm + NECK_RESTORE_MM / pixel_mm))

    def within_radius(k: int) -> np.ndarray:
        return in_plane_mm2 + ((k - z) * sz) ** 2 <= max_radius_mm**2

    slices: dict[int, tuple[np.ndarray, ...]] = {}
    cores: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def slice_of(k: int) -> tuple[np.ndarray, ...]:
        """(candidate, in-plane labels, smoothed, within, near bone) of slice k, computed when first reached.

        Brain noise (3-5 HU SD, more on thin slices) puts single grey-matter voxels above 50 HU, and
        face-connected they would carry the region through the cortex: the range is tested on the
        slice smoothed by a SMOOTHING_PIXELS median, which keeps a clot's edge where it is (a mean
        lost 13 % of a 5 mL clot at 0.9 mm pixels). Only the slices the region reaches are smoothed:
        the median of a whole 1 mm series took 2.3 s.
        """
        if k not in slices:
            plane = hu[k, rows, cols].astype(np.float32)
            smooth = ndimage.median_filter(plane, size=SMOOTHING_PIXELS) if SMOOTHING_PIXELS > 1 else plane
            near_bone = plane > BONE_HU
            if BONE_MARGIN_PIXELS > 0:  # (scipy dilates until nothing changes when iterations is 0)
                near_bone = ndimage.binary_dilation(near_bone, structure=disc, iterations=BONE_MARGIN_PIXELS)
            within = within_radius(k)
            candidate = (smooth >= lo) & (smooth <= hi) & ~near_bone & within
            slices[k] = (candidate, ndimage.label(candidate)[0], smooth, within, near_bone)  # 4-connected in plane
        return slices[k]

    def core_of(k: int) -> tuple[np.ndarray, np.ndarray]:
        """(core, in-plane labels) of slice k: the range where a NECK_MM disc fits."""
        if k not in cores:
            core = ndimage.binary_erosion(slice_of(k)[0], structure=neck)
            cores[k] = (core, ndimage.label(core)[0])
        return cores[k]

    seed_local = (y - rows.start, x - cols.start)
    candidate, labels, smooth, _within, near_bone = slice_of(z)
    if not candidate[seed_local]:
        if near_bone[seed_local]:
            raise MeasurementError("the clicked voxel is at the edge of bone or calcification: click further inside the haematoma")
        raise MeasurementError(f"around the clicked voxel the slice is {float(smooth[seed_local]):.0f} HU (median of "
                               f"{SMOOTHING_PIXELS} x {SMOOTHING_PIXELS}), outside {lo:g} to {hi:g} HU: "
                               "click further inside the haematoma")

    def grow(layer, start: np.ndarray) -> dict[int, np.ndarray]:
        """6-connected in 3D, slice by slice, over `layer`'s (mask, in-plane labels): a slice's in-plane
        components that overlap the region on a neighbouring slice join it; repeat until nothing changes
        (the same voxels as labelling the block)."""
        region = {z: start}
        todo = [z]
        while todo:
            k = todo.pop()
            for j in (k - 1, k + 1):
                if not z_lo <= j < z_hi:
                    continue
                cand_j, labels_j = layer(j)[:2]
                reached = region[k] & cand_j
                if j in region:
                    reached &= ~region[j]
                if not reached.any():
                    continue
                joined = np.isin(labels_j, np.unique(labels_j[reached]))
                region[j] = joined if j not in region else region[j] | joined
                todo.append(j)
        return region

    clicked = labels == labels[seed_local]  # the clicked part of the range on its slice
    connections, region = "all", None
    if cut_necks:
        core, core_labels = core_of(z)
        reachable = core & clicked
        if reachable.any():
            if core[seed_local]:
                start = core_labels == core_labels[seed_local]
            else:  # clicked near the edge: the nearest core of the part clicked
                ys, xs = np.nonzero(reachable)
                i = int(np.argmin((ys - seed_local[0]) ** 2 + (xs - seed_local[1]) ** 2))
                start = core_labels == core_labels[ys[i], xs[i]]
            # take back the edge, in the slice and through the range only
            region = {k: ndimage.binary_dilation(m, structure=_CROSS, iterations=restore_steps, mask=slices[k][0])
                      for k, m in grow(core_of, start).items()}
            if region[z][seed_local]:
                connections = "cut"
            else:  # the click is on a thin part further than that from any core: measure what was clicked
                region = None
        if region is None:
            connections = "all-thin"
    if region is None:
        region = grow(slice_of, clicked)
    planes = sorted(k for k, m in region.items() if m.any())
    full = np.zeros((planes[-1] - planes[0] + 1, ny, nx), dtype=bool)
    touches = False
    values = []
    for k in planes:
        m = region[k]
        full[k - planes[0], rows, cols] = m
        values.append(hu[k, rows, cols][m])
        # Reached the limit: a voxel with a face neighbour beyond the radius, in the slice or across
        # it (outside the series' own edges counts as inside: that is not a limit of ours).
        edge = ~ndimage.binary_erosion(slices[k][3], border_value=1)
        for j in (k - 1, k + 1):
            if 0 <= j < nz:
                edge |= ~within_radius(j)
        touches = touches or bool((m & edge).any())
    n = int(full.sum())
    return GrownRegion(full, planes[0], n * sz * sy * sx / 1000.0, n, float(np.concatenate(values).mean()), touches,
                       connections)


def format_ml(volume_ml: float) -> str:
    """'12.3 mL'; below 1 mL two decimals ('0.04 mL': a punctate bleed is not '0.0 mL')."""
    return f"{volume_ml:.2f} mL" if volume_ml < 0.995 else f"{volume_ml:.1f} mL"


def describe_volume(region: GrownRegion, hu_range: tuple[float, float]) -> str:
    """'12.3 mL (9876 voxels, 5 slices, mean 68 HU; 50 to 100 HU)', and how it grew when that was not the default.

    A warning is added when it reached its limit.
    """
    slices = f"{region.slices} slice" + ("s" if region.slices != 1 else "")
    text = (f"{format_ml(region.volume_ml)} ({region.n_voxels} voxels, {slices}, "
            f"mean {region.mean_hu:.0f} HU; {hu_range[0]:g} to {hu_range[1]:g} HU)")
    if region.connections == "all":
        text += "\nthin connections followed"
    elif region.connections == "all-thin":
        text += f"\nthinner than {NECK_MM:g} mm where clicked: thin connections followed"
    if region.touches_limit:
        text += f"\nreached {MAX_GROW_RADIUS_MM:g} mm from the click: it may have leaked"
    return text


def describe(measurement: Measurement, hu_slice: np.ndarray, spacing_yx: tuple[float, float]) -> str:
    """The text shown beside a ruler or ROI and stored with it: what the reader saw (a volume: `describe_volume`)."""
    if measurement.kind == VOLUME:
        raise MeasurementError("a volume is described from its grown region (describe_volume), not one slice")
    if measurement.kind == LENGTH:
        return f"{length_mm(measurement.start, measurement.end, spacing_yx):.1f} mm"
    stats = ellipse_stats(hu_slice, measurement.start, measurement.end, spacing_yx)
    if stats is None:
        return "ROI too small: no voxel centre inside"
    area = f"{stats.area_mm2 / 100.0:.2f} cm\u00b2" if stats.area_mm2 >= 100.0 else f"{stats.area_mm2:.1f} mm\u00b2"
    return (f"mean {stats.mean_hu:.0f} \u00b1 {stats.sd_hu:.0f} HU  (min {stats.min_hu:.0f}, max {stats.max_hu:.0f})"
            f"\n{area}, {stats.n_voxels} px")


def angle_between_deg(a: Measurement, b: Measurement, spacing_yx: tuple[float, float]) -> float:
    """The acute angle between two lines in the slice plane (mm space), 0-90 degrees."""
    def direction(m: Measurement) -> tuple[float, float]:
        return ((m.end[0] - m.start[0]) * spacing_yx[0], (m.end[1] - m.start[1]) * spacing_yx[1])

    (ay, ax), (by, bx) = direction(a), direction(b)
    na, nb = math.hypot(ay, ax), math.hypot(by, bx)
    if na == 0 or nb == 0:
        return 0.0
    cos = abs(ay * by + ax * bx) / (na * nb)
    return math.degrees(math.acos(min(1.0, cos)))


@dataclass(frozen=True)
class Abc2Estimate:
    """ABC/2 (REFERENCE "Volume"): A and B in cm on the largest slice, C = slices x thickness in cm."""

    a_cm: float
    b_cm: float
    c_cm: float
    slices: float  # Kothari et al. weigh slices: 1 where the bleed is >= 75 % of its largest area, 0.5 for 25-75 %
    volume_ml: float
    angle_deg: float  # between A and B; near 90 for a proper ABC/2

    def describe(self) -> str:
        return (f"ABC/2 = {self.a_cm:.1f} x {self.b_cm:.1f} x {self.c_cm:.1f} / 2 = {self.volume_ml:.1f} mL"
                f"  (C = {self.slices:g} slice{'s' if self.slices != 1 else ''})")


def abc2_volume(lengths: list[Measurement], slices: float, slice_thickness_mm: float,
                spacing_yx: tuple[float, float]) -> Abc2Estimate:
    """ABC/2 from length measurements on one slice and the number of slices the bleed spans.

    A is the longest line, B the longest of the others within ABC2_PERPENDICULAR_TOLERANCE_DEG of
    perpendicular to it; C = `slices` x `slice_thickness_mm`, where `slices` may
    count half slices (Kothari et al. 1996: a slice where the bleed is 25-75 % of its largest
    area counts 0.5). Raises MeasurementError naming what is missing: two lines on the same
    slice, close to perpendicular (within ABC2_PERPENDICULAR_TOLERANCE_DEG), and C > 0.
    """
    lines = [m for m in lengths if m.kind == LENGTH]
    if len(lines) < 2:
        raise MeasurementError("ABC/2 needs two length measurements on the slice where the bleed is largest "
                               f"(A, its largest diameter, and B perpendicular to it); this slice has {len(lines)}")
    if len({m.slice_index for m in lines}) != 1:
        raise MeasurementError("ABC/2 needs A and B on the same slice")
    if isinstance(slices, bool) or not (isinstance(slices, (int, float)) and math.isfinite(slices) and slices > 0):
        raise MeasurementError(f"C needs the number of slices the bleed spans (more than 0), not {slices!r}")
    if not (math.isfinite(slice_thickness_mm) and slice_thickness_mm > 0):
        raise MeasurementError(f"C needs a positive slice thickness, not {slice_thickness_mm!r} mm")
    ranked = sorted(lines, key=lambda m: length_mm(m.start, m.end, spacing_yx), reverse=True)
    a = ranked[0]
    # B: the longest of the other lines that is close to perpendicular to A.
    perpendicular = [m for m in ranked[1:] if angle_between_deg(a, m, spacing_yx) >= 90.0 - ABC2_PERPENDICULAR_TOLERANCE_DEG]
    if not perpendicular:
        angle = angle_between_deg(a, ranked[1], spacing_yx)
        raise MeasurementError(f"ABC/2 needs B perpendicular to A (the longest line); the next line on this slice "
                               f"meets it at {angle:.0f} degrees")
    b = perpendicular[0]
    angle = angle_between_deg(a, b, spacing_yx)
    a_cm = length_mm(a.start, a.end, spacing_yx) / 10.0
    b_cm = length_mm(b.start, b.end, spacing_yx) / 10.0
    c_cm = float(slices) * float(slice_thickness_mm) / 10.0
    return Abc2Estimate(a_cm, b_cm, c_cm, float(slices), a_cm * b_cm * c_cm / 2.0, angle)
