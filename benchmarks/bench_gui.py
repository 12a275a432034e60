"""GUI speed: slice-change time per frame and open-to-first-image time, against baselines run in the same process.

Usage: python benchmarks/bench_gui.py [CT_DATA_DIR]   (default: ../shared/data/ct beside the checkout)

Runs offscreen. Prints figures and ratios; asserts nothing. Targets from issue 2:
slice change with a preset applied under 8 ms per 512 x 512 frame (also with a 5 mm thick slab,
average or MIP, on the 1 mm series), first image of the 140-slice philips-phantom-1mm on screen
under 1 s.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from ichviewer.core.slab import AVERAGE, MIP, Slab  # noqa: E402
from ichviewer.core.windowing import WindowLUT, load_presets, window_to_uint8  # noqa: E402
from ichviewer.io import load_path  # noqa: E402
from ichviewer.qt.app import ensure_app  # noqa: E402
from ichviewer.qt.display import apply_window_rgb32  # noqa: E402
from ichviewer.qt.main_window import MainWindow  # noqa: E402
from ichviewer.qt.slice_view import Rgb32ImageItem  # noqa: E402

FRAMES = 120


def data_dir() -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    here = Path(__file__).resolve().parents[1]
    for p in [here.parent / "shared" / "data" / "ct", *(q / "shared" / "data" / "ct" for q in here.parents)]:
        if (p / "philips-phantom-1mm").is_dir():
            return p
    sys.exit("philips-phantom-1mm not found; pass the CT data folder as the first argument")


def ms(run: tuple[list[float], list[float]]) -> str:
    wall, cpu = run
    return (f"wall median {statistics.median(wall) * 1e3:6.2f} ms, p95 {np.percentile(wall, 95) * 1e3:6.2f} ms; "
            f"CPU median {statistics.median(cpu) * 1e3:6.2f} ms")


def ratio(base: tuple[list[float], list[float]], ours: tuple[list[float], list[float]]) -> str:
    return (f"x{statistics.median(base[0]) / statistics.median(ours[0]):.2f} wall, "
            f"x{statistics.median(base[1]) / max(statistics.median(ours[1]), 1e-9):.2f} CPU")


def frame_times(step, viewport, app: QApplication, frames: int = FRAMES, repeats: int = 3) -> list[float]:
    """Per-frame times of the least disturbed of `repeats` runs (other work shares the 2 cores).

    A frame is the change plus processEvents, which delivers the update request and
    paints every dirty widget (axial view, reformat level lines, annotations) into the
    backing store, as a real frame would.
    """
    runs = []
    for _ in range(repeats):
        wall, cpu = [], []
        for k in range(frames):
            t, c = time.perf_counter(), time.process_time()
            step(k)
            app.processEvents()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        runs.append((wall, cpu))
    return min(runs, key=lambda r: statistics.median(r[0]))


def main() -> None:
    root = data_dir()
    series = root / "philips-phantom-1mm"
    app = ensure_app()
    settings = Path(os.environ.get("TMPDIR", "/tmp")) / "ichviewer-bench-settings"

    # -- open to first image ------------------------------------------------------------
    opens = []
    for run in range(3):
        w = MainWindow(settings)
        w.resize(1500, 950)
        w.show()
        app.processEvents()
        # A real event loop (idle while the worker loads), as in the application.
        loop = QEventLoop()
        w.sig_volume_opened.connect(lambda _v: loop.quit())
        QTimer.singleShot(60000, loop.quit)
        t0 = time.perf_counter()
        w.open_path(series)
        loop.exec()
        if w.volume is None:
            sys.exit("timed out waiting for the viewer")
        w.axial.graphics.viewport().repaint()  # the first image is painted
        opens.append(time.perf_counter() - t0)
        if run < 2:
            w.shutdown()
            w.close()
            w.deleteLater()
            app.processEvents()
    load_only = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        load_path(series)
        load_only = min(load_only, time.perf_counter() - t)
    print(f"open philips-phantom-1mm to first image: first open in this process {opens[0]:.3f} s, repeat (best of 2) {min(opens[1:]):.3f} s (target < 1 s)")
    print(f"  baseline load_path alone (warm, best of 3): {load_only:.3f} s; open-to-image / load_path = x{min(opens[1:]) / load_only:.2f}")

    # -- slice change with a preset ---------------------------------------------------
    vol = w.volume
    assert vol is not None and vol.shape[1:] == (512, 512)
    w.state.choose_preset(1)
    vp = w.axial.graphics.viewport()
    n = vol.n_slices
    ours = frame_times(lambda k: w.state.set_slice_index(k % n), vp, app)
    # The same scroll through a 5 mm thick slab (5 slices averaged in float32, or their maximum).
    slabs = {}
    for mode in (AVERAGE, MIP):
        w.state.set_slab(Slab(5.0, mode))
        slabs[mode] = frame_times(lambda k: w.state.set_slice_index(k % n), vp, app)
    w.state.set_slab(Slab())

    # The same image path in a bare view (no reformats, no annotations), then two baselines
    # in that same bare view: pyqtgraph's own float path with auto levels, and numpy float
    # windowing to uint8 with fixed levels.
    view = pg.GraphicsView()
    vb = pg.ViewBox(lockAspect=True, invertY=True)
    view.setCentralItem(vb)
    ours_item = Rgb32ImageItem(axisOrder="row-major")
    item = pg.ImageItem(axisOrder="row-major")
    vb.addItem(ours_item)
    vb.addItem(item)
    view.resize(w.axial.size())
    view.show()
    win = load_presets()[0]
    ours_item.setImage(apply_window_rgb32(vol.hu[0], win), autoLevels=False, levels=None)
    vb.autoRange()
    app.processEvents()
    bare = frame_times(lambda k: ours_item.setImage(apply_window_rgb32(vol.hu[k % n], win), autoLevels=False, levels=None), view.viewport(), app)
    ours_item.setVisible(False)
    hu_f = vol.hu.astype(np.float32)
    item.setImage(hu_f[0])
    app.processEvents()
    base_auto = frame_times(lambda k: item.setImage(hu_f[k % n], autoLevels=True), view.viewport(), app)
    base_float = frame_times(
        lambda k: item.setImage(window_to_uint8(vol.hu[k % n], win), autoLevels=False, levels=(0, 255)), view.viewport(), app
    )

    # Windowing alone, without display.
    def per_call(fn, reps: int = 200) -> float:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for k in range(reps):
                fn(vol.hu[k % n])
            best = min(best, (time.perf_counter() - t) / reps)
        return best

    lut = WindowLUT(win)
    t_ours = per_call(lambda s: apply_window_rgb32(s, win))
    t_lut = per_call(lut.apply)
    t_float = per_call(lambda s: window_to_uint8(s, win))

    print(f"slice change, 512x512, Brain preset, {FRAMES} frames (set slice + processEvents incl. paint; best of 3 runs;")
    print("  CPU = this process's CPU time, which stays meaningful when other jobs share the cores):")
    print(f"  viewer (int16 -> RGB32 LUT, no levels; axial + reformat level lines + annotations): {ms(ours)}  (target < 8 ms)")
    for mode, run in slabs.items():
        print(f"  viewer with a 5 mm {mode} slab (5 slices per frame): {ms(run)}  -> x{statistics.median(run[0]) / statistics.median(ours[0]):.2f} "
              "the time of a plain slice change (target < 8 ms)")
    print("  same image path and two baselines in one bare pyqtgraph view of the axial view's size:")
    print(f"    viewer path (RGB32 LUT): {ms(bare)}")
    print(f"    baseline plain ImageItem, float HU, autoLevels: {ms(base_auto)}  -> viewer path faster by {ratio(base_auto, bare)}")
    print(f"    baseline numpy float windowing -> uint8, levels (0, 255): {ms(base_float)}  -> viewer path faster by {ratio(base_float, bare)}")
    print("windowing one slice alone:")
    print(f"  viewer apply_window_rgb32 {t_ours * 1e3:.2f} ms; WindowLUT.apply {t_lut * 1e3:.2f} ms (x{t_lut / t_ours:.2f}); "
          f"float window_to_uint8 {t_float * 1e3:.2f} ms (x{t_float / t_ours:.2f})")

    view.close()
    w.shutdown()
    w.close()
    w.deleteLater()
    app.processEvents()


if __name__ == "__main__":
    main()
