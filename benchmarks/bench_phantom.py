"""Phantom generation speed, printed as ratios to a same-run baseline (no assertions).

Baseline: drawing and smoothing the noise of a volume the same size, the least any
generator of a realistic case has to do. Run: `python benchmarks/bench_phantom.py`.
"""

from __future__ import annotations

import time

import numpy as np


def _best_of(fn, n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _noise_baseline(shape: tuple[int, int, int]) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=(0, 0.75, 0.75))


def main() -> None:
    from ichviewer.core.phantom import generate_case

    generate_case(0, subtype="none", matrix=64)  # imports and caches out of the timing
    print(f"{'case':<34} {'shape':>16} {'seconds':>8} {'x noise baseline':>17}")
    for label, kwargs in (
        ("adult 5 mm 512, IPH 20 mL", dict(subtype="IPH", volume_ml=20.0, matrix=512)),
        ("adult 5 mm 256, SDH 30 mL", dict(subtype="SDH", volume_ml=30.0, matrix=256)),
        ("adult 5 mm 128, mixed", dict(subtype="mixed", volume_ml=10.0, matrix=128)),
        ("child 1 mm 256, SAH 5 mL", dict(subtype="SAH", volume_ml=5.0, matrix=256, slice_mm=1.0, age="child")),
        ("adult 5 mm 512, none + metal", dict(subtype="none", mimic="metal", matrix=512)),
    ):
        case = generate_case(1, **kwargs)
        shape = case.volume.shape
        t = _best_of(lambda: generate_case(1, **kwargs))
        base = _best_of(lambda: _noise_baseline(shape))
        print(f"{label:<34} {str(shape):>16} {t:8.2f} {t / base:16.1f}x")


if __name__ == "__main__":
    main()
