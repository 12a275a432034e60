"""How well attention maps point at the bleed: Lee et al. 2019, Methods, "Localization performance evaluation
of attention maps", on phantoms whose lesions are known voxel by voxel.

The paper's procedure: segment the attention map by keeping the pixels above 20 % of its highest
value (after Zhou et al.), count a "bleeding point" (a radiologist's mark at the centre of the
haemorrhage) as found when it falls inside that segmentation, and report the share of points found
and the segmentation's mean area as a share of the head. Here the bleeding point is the lesion
pixel nearest the lesion's centroid on the slice (a crescent's centroid can lie outside it), the
slice is the one where the subtype's lesion is largest, and the map is that subtype's. Only the
synthetic ground truth makes this possible without radiologists' marks; the paper chose its
explaining network (ResNet-50) by this figure, and `evaluate_localization(..., members=...)` scores
every member that has a CAM head the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ichviewer import SUBTYPES
from ichviewer.evaluation.metrics import clopper_pearson
from ichviewer.evaluation.summary import SIZE_BINS  # the evaluation's strata, here of the subtype's lesion

#: Lee et al.: "pixels of which activation values were higher than 20% of the highest value".
SEGMENT_FRACTION = 0.2
#: HU above which a pixel is inside the head (soft tissue, bone), for the area's denominator.
HEAD_HU = -300.0


@dataclass(frozen=True)
class LocalizationResult:
    """One (case, subtype, member) check."""

    case_seed: int
    kind: str
    label: str
    model: str
    slice_index: int
    lesion_ml: float
    probability: float  # the member's p of `label` on the slice alone
    found: bool  # the bleeding point is inside the segmented map
    area_fraction: float  # segmented map area / head area on the slice
    grid_cell_mm: float  # the side of one cell of the map's grid (the last block's), in mm on the slice


def bleeding_point(mask2d: np.ndarray) -> tuple[int, int]:
    """The lesion pixel nearest the lesion's centroid on this slice, as (row, column)."""
    ys, xs = np.nonzero(mask2d)
    if ys.size == 0:
        raise ValueError("no lesion pixel on this slice")
    cy, cx = ys.mean(), xs.mean()
    k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(ys[k]), int(xs[k])


def head_mask(hu2d: np.ndarray) -> np.ndarray:
    """Pixels inside the head on one slice (holes such as the ventricles and air cells filled)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(np.asarray(hu2d) > HEAD_HU)


def localize(attention: np.ndarray, point: tuple[int, int], head: np.ndarray,
             fraction: float = SEGMENT_FRACTION) -> tuple[bool, float]:
    """(the point is inside the segmented map, the segmented area as a share of the head).

    A map with no positive value segments nothing: the point is not found and the area is 0.
    """
    attention = np.asarray(attention, dtype=np.float64)
    peak = float(attention.max()) if attention.size else 0.0
    if not peak > 0.0:
        return False, 0.0
    segmented = attention >= fraction * peak
    head_area = int(np.count_nonzero(head))
    area = float(np.count_nonzero(segmented & head)) / head_area if head_area else 0.0
    return bool(segmented[point]), area


def largest_lesion_slice(mask3d: np.ndarray) -> int:
    """The slice on which a lesion mask covers the most pixels."""
    return int(np.argmax(np.asarray(mask3d).reshape(mask3d.shape[0], -1).sum(axis=1)))


def localize_case(case: Any, ensemble: Any, members: Sequence[str] | None = None, kind: str = "") -> list[LocalizationResult]:
    """Every subtype present in a `PhantomCase`, on its largest slice, by each member named (default:
    the ensemble's explaining member)."""
    from ichviewer.inference.cam import attention_map

    names = list(members) if members else [ensemble.cam_model.name]
    out = []
    for label in SUBTYPES:
        mask = case.masks[label]
        if not mask.any():
            continue
        z = largest_lesion_slice(mask)
        point = bleeding_point(mask[z])
        head = head_mask(case.volume.hu[z])
        for name in names:
            amap = attention_map(case.volume, z, label, ensemble, model=name)
            found, area = localize(amap.map, point, head)
            out.append(LocalizationResult(int(case.seed), kind, label, name, z, float(case.volume_ml.get(label, 0.0)),
                                          float(amap.probability), found, area, _cell_mm(amap)))
    return out


def _cell_mm(amap: Any) -> float:
    """Side of one attention-grid cell in mm: the framed field of view over the grid's width."""
    g = amap.geometry
    if g.crop_mm is not None:
        width_mm = float(g.crop_mm[3] - g.crop_mm[1])
    else:
        width_mm = float(g.source_shape[1] * g.pixel_spacing[1])
    return width_mm / float(amap.grid_map.shape[1])


def _rate(rows: Sequence[LocalizationResult]) -> dict[str, Any]:
    k, n = sum(r.found for r in rows), len(rows)
    lo, hi = clopper_pearson(k, n) if n else (None, None)
    return {"found": k, "n": n, "value": k / n if n else None, "ci": [lo, hi],
            "mean_area_fraction": float(np.mean([r.area_fraction for r in rows])) if rows else None}


def summarize(results: Sequence[LocalizationResult]) -> dict[str, Any]:
    """Per member: the share of bleeding points found (exact 95 % CI) and the mean segmented area, overall,
    per subtype and per lesion size."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r.model for r in results):
        rows = [r for r in results if r.model == name]
        sizes = {bin_name: _rate([r for r in rows if (low < r.lesion_ml or low == 0.0) and r.lesion_ml <= high])
                 for bin_name, low, high in SIZE_BINS}
        out[name] = {
            "grid_cell_mm": float(np.mean([r.grid_cell_mm for r in rows])),
            "overall": _rate(rows),
            "by_label": {label: _rate([r for r in rows if r.label == label]) for label in SUBTYPES
                         if any(r.label == label for r in rows)},
            "by_size": sizes,
        }
    return out


def evaluate_localization(plans: Sequence[Any], ensemble: Any, *, members: Sequence[str] | None = None,
                          matrix: int = 256, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Generate each planned phantom (those with a haemorrhage) and localise its subtypes' attention maps."""
    positives = [p for p in plans if p.subtype != "none"]  # None: the seed draws one
    results: list[LocalizationResult] = []
    n_cases = 0
    for i, plan in enumerate(positives):
        case = plan.generate(matrix)
        found = localize_case(case, ensemble, members, kind=plan.kind)
        n_cases += bool(found)
        results += found
        if progress is not None:
            progress(i + 1, len(positives))
    return {
        "method": ("Lee et al. 2019 (Methods): the subtype's attention map on the slice where its lesion is largest, "
                   f"segmented at {SEGMENT_FRACTION:g} of its highest value; found = the lesion pixel nearest the "
                   "lesion's centroid is inside; area = segmented pixels inside the head / head pixels"),
        "segment_fraction": SEGMENT_FRACTION,
        "n_cases": n_cases,  # studies with a haemorrhage, each scored once per subtype present
        "members": summarize(results),
        "results": [asdict(r) for r in results],
    }
