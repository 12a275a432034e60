"""Time to grow a haematoma's volume from one click (the Volume tool) against smoothing the whole block, same run.

Target: the click's figure within about a second on this 2-core machine on a thin (1 mm)
series, under 0.2 s on a routine 5 mm one. The workstation grows the region on a worker thread
(the click shows "counting..." meanwhile), so this is the reader's wait for the figure, and the
time each saved volume takes to draw again when its series is reopened.

Case: synthetic phantoms with a 20 mL intraparenchymal haematoma, 512 x 512, at 1 mm
(140 slices) and at 5 mm, the seed at the clot's centre.

Timed ("lazy"): `ichviewer.core.measurements.grow_region`, which smooths (3 x 3 median) and
labels only the slices the region reaches, following every connection (`cut_necks=False`), and
as the tool runs by default (necks narrower than NECK_MM cut: an erosion, labelling of the cores
and the edge taken back on the slices reached).
Baseline ("whole block"): the answer following every connection as a plain implementation
computes it: the median of every slice within 80 mm of the click, then 3D labelling of the
block. It and the lazy growth must give the same voxels; the benchmark stops if they do not.
Run: .venv/bin/python benchmarks/bench_measure.py
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy import ndimage

from ichviewer.core import measurements as meas
from ichviewer.core.phantom import generate_case


def whole_block(hu: np.ndarray, spacing, seed, lo: float = 50.0, hi: float = 100.0) -> np.ndarray:
    """The reference: every slice of the 80 mm box smoothed and thresholded, then labelled in 3D."""
    z, y, x = seed
    sz, sy, sx = spacing
    r = meas.MAX_GROW_RADIUS_MM
    box = tuple(slice(max(0, c - math.ceil(r / s)), min(n, c + math.ceil(r / s) + 1))
                for c, s, n in zip(seed, spacing, hu.shape))
    sub = hu[box].astype(np.float32)
    smooth = ndimage.median_filter(sub, size=(1, meas.SMOOTHING_PIXELS, meas.SMOOTHING_PIXELS))
    near_bone = ndimage.binary_dilation(sub > meas.BONE_HU, structure=np.ones((1, 3, 3), bool),
                                        iterations=meas.BONE_MARGIN_PIXELS)
    zz, yy, xx = np.ogrid[box[0], box[1], box[2]]
    within = ((zz - z) * sz) ** 2 + ((yy - y) * sy) ** 2 + ((xx - x) * sx) ** 2 <= r**2
    labels, _ = ndimage.label((smooth >= lo) & (smooth <= hi) & ~near_bone & within)
    region = labels == labels[z - box[0].start, y - box[1].start, x - box[2].start]
    full = np.zeros(hu.shape, bool)
    full[box] = region
    return full


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    for slice_mm in (1.0, 5.0):
        case = generate_case(7, subtype="IPH", volume_ml=20.0, slice_mm=slice_mm, matrix=512)
        v = case.volume
        seed = tuple(int(round(c)) for c in np.argwhere(case.masks["IPH"]).mean(axis=0))
        region = meas.grow_region(v.hu, v.spacing, seed, cut_necks=False)
        grown = np.zeros(v.shape, bool)
        grown[region.z0 : region.z0 + len(region.mask)] = region.mask
        if not np.array_equal(grown, whole_block(v.hu, v.spacing, seed)):
            raise SystemExit("bench_measure: the lazy growth and the whole-block reference disagree")
        cut = meas.grow_region(v.hu, v.spacing, seed)
        lazy = best_of(lambda: meas.grow_region(v.hu, v.spacing, seed, cut_necks=False))
        lazy_cut = best_of(lambda: meas.grow_region(v.hu, v.spacing, seed))
        block = best_of(lambda: whole_block(v.hu, v.spacing, seed))
        print(f"{slice_mm:g} mm, {v.n_slices} slices: truth {case.volume_ml['IPH']:.2f} mL; followed {region.volume_ml:.2f} mL "
              f"in {lazy * 1000:.0f} ms ({block / lazy:.1f}x faster than the whole block's {block * 1000:.0f} ms); "
              f"necks cut (the default) {cut.volume_ml:.2f} mL in {lazy_cut * 1000:.0f} ms ({block / lazy_cut:.1f}x)")


if __name__ == "__main__":
    main()
