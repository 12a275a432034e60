"""Series load speed: ichviewer's loader against SimpleITK and a plain pydicom loop, in the same run.

Target (issue 2): loading philips-phantom-1mm (140 slices) warm is at least 1.5x
faster than SimpleITK's ImageSeriesReader and no slower than a plain pydicom loop.
Run: .venv/bin/python benchmarks/bench_load.py [SERIES_DIR]   (needs the `bench` extra)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import find_ct_data_dir  # noqa: E402

from ichviewer.io import load_path  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm the page cache and imports
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ichviewer_load(folder: Path) -> np.ndarray:
    return load_path(folder).volumes[0].hu


def pydicom_loop(folder: Path) -> np.ndarray:
    """What a plain script does: read every file, keep the images, sort by InstanceNumber, rescale."""
    slices = []
    for f in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(f)
        except pydicom.errors.InvalidDicomError:
            continue
        if "PixelData" not in ds:
            continue
        slices.append((int(ds.InstanceNumber), ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)))
    slices.sort(key=lambda s: s[0])
    return np.stack([s[1] for s in slices])


def sitk_load(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else (find_ct_data_dir() or Path(".")) / "philips-phantom-1mm"
    repeats = 7
    results = {
        "ichviewer load_path": timed(lambda: ichviewer_load(folder), repeats),
        "plain pydicom loop": timed(lambda: pydicom_loop(folder), repeats),
        "SimpleITK ImageSeriesReader": timed(lambda: sitk_load(folder), repeats),
    }
    a, b, c = ichviewer_load(folder), pydicom_loop(folder), sitk_load(folder)
    assert a.shape == b.shape == c.shape, (a.shape, b.shape, c.shape)
    print(f"series: {folder} ({a.shape[0]} slices, {a.shape[1]}x{a.shape[2]}), warm, median of {repeats}")
    med = {k: statistics.median(v) for k, v in results.items()}
    for k, v in med.items():
        print(f"  {k:30s} {v * 1000:8.1f} ms")
    ours = med["ichviewer load_path"]
    print(f"  speed-up vs SimpleITK:      {med['SimpleITK ImageSeriesReader'] / ours:5.2f}x  (target >= 1.5x)")
    print(f"  speed-up vs pydicom loop:   {med['plain pydicom loop'] / ours:5.2f}x  (target >= 1.0x)")


if __name__ == "__main__":
    main()
