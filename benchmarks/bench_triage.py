"""Background triage of a worklist folder: does it slow the study the reader opens, and what does it cost?

The workstation analyses the opened folder's other series in the background
(`InferenceController.queue_background`), one at a time and never beside the reader's own
study: a background job in flight stops at its next chunk when the reader opens a series.
This measures, in the same run with the bundled ensemble on this machine's provider:

1. the reader's study analysed from idle (baseline) against the same study opened while a
   background job is busy: the ratio is what the background costs the reader (target: the
   background job stops within one chunk, so at most about 1.2x);
2. the whole folder triaged in the background against the same series analysed one after the
   other by `run_study` with no Qt in between (target: about 1.0x, the queue adds no overhead);
3. the folder triaged again in a later session (a new controller, new volume objects, the results
   kept on disk by the first: `ichviewer.inference.result_cache`) against its first triage, which
   also wrote them (target: a small fraction; what is left is hashing the voxels and reading files).

Prints figures and ratios; asserts nothing.
Run: .venv/bin/python benchmarks/bench_triage.py   (needs the bundled models under models/default)
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402

from ichviewer.core.phantom import generate_case  # noqa: E402
from ichviewer.inference import default_models_dir, load_ensemble, run_study  # noqa: E402
from ichviewer.inference.result_cache import ResultCache  # noqa: E402
from ichviewer.qt.app import ensure_app  # noqa: E402
from ichviewer.qt.inference_controller import InferenceController  # noqa: E402

REPEATS = 3
FOLDER = [("IPH", 0), ("none", 1), ("SDH", 2), ("none", 3), ("SAH", 4), ("EDH", 5)]


def wait_for(signal, timeout_s: float = 300.0) -> tuple:
    """Run the event loop until `signal` fires; its arguments."""
    loop, got = QEventLoop(), []

    def done(*args):
        got.append(args)
        loop.quit()

    signal.connect(done)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(done)
    if not got:
        raise TimeoutError(f"no {signal} within {timeout_s} s")
    return got[0]


def spin(seconds: float) -> None:
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def main() -> None:
    ensure_app()
    models = default_models_dir()
    print(f"Generating {len(FOLDER)} phantom studies (5 mm, 256 x 256) ...", flush=True)
    folder = [generate_case(seed, subtype=subtype, slice_mm=5.0, matrix=256).volume for subtype, seed in FOLDER]
    reader_study = generate_case(10, subtype="IVH", slice_mm=5.0, matrix=256).volume
    controller = InferenceController(models, chunk=8)
    controller.open_volume(copy.copy(reader_study))  # loads the models (checksums, sessions): not timed
    wait_for(controller.sig_finished, timeout_s=600)
    print(f"Models: {models} on {controller.ensemble.provider}; reader's study {reader_study.n_slices} slices, "
          f"folder {sum(v.n_slices for v in folder)} slices in {len(folder)} series\n")

    alone, busy = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        controller.open_volume(copy.copy(reader_study))  # a new object: nothing kept, a full run
        wait_for(controller.sig_finished)
        alone.append(time.perf_counter() - t0)

        controller.queue_background([copy.copy(v) for v in folder])
        spin(0.3)  # the first background job is well under way
        assert controller.background_pending > 0
        t0 = time.perf_counter()
        controller.open_volume(copy.copy(reader_study))
        wait_for(controller.sig_finished)
        busy.append(time.perf_counter() - t0)
        controller.queue_background([])
        controller.wait(60000)
        spin(0.05)
    a, b = statistics.median(alone), statistics.median(busy)
    print(f"1. Reader's study from idle:                 median {a:.2f} s  ({', '.join(f'{x:.2f}' for x in alone)})")
    print(f"   Reader's study with a background job busy: median {b:.2f} s  ({', '.join(f'{x:.2f}' for x in busy)})")
    print(f"   ratio busy / idle: x{b / a:.2f}  (target: at most about x1.2)\n")

    ensemble = load_ensemble(models)
    t0 = time.perf_counter()
    for v in folder:
        run_study(copy.copy(v), ensemble)
    sequential = time.perf_counter() - t0
    volumes = [copy.copy(v) for v in folder]
    finished = []
    controller.sig_background_finished.connect(lambda v, _r: finished.append(v))
    t0 = time.perf_counter()
    controller.queue_background(volumes)
    while len(finished) < len(volumes):
        spin(0.02)
    background = time.perf_counter() - t0
    print(f"2. Folder one run_study after another: {sequential:.2f} s; triaged in the background: {background:.2f} s")
    print(f"   ratio background / sequential: x{background / sequential:.2f}  (target: about x1.0)\n")
    controller.shutdown(10000)

    with tempfile.TemporaryDirectory() as kept_dir:
        times = []
        for session in ("first", "later"):
            c = InferenceController(models, chunk=8, kept_results=ResultCache(kept_dir))
            c.open_volume(copy.copy(reader_study), run=False)  # the reader on another study, not analysed
            c.cache.get(models)  # the models loaded at start-up: not timed
            done: list = []
            c.sig_background_finished.connect(lambda _v, r, done=done: done.append(r))
            vols = [copy.copy(v) for v in folder]
            t0 = time.perf_counter()
            c.queue_background(vols)
            while len(done) < len(vols):
                spin(0.005)
            times.append(time.perf_counter() - t0)
            assert all(bool(r.restored) == (session == "later") for r in done)
            c.shutdown(10000)
    first, later = times
    print(f"3. Folder triaged in the first session (results kept): {first:.2f} s; in a later session from the kept "
          f"results: {later:.3f} s")
    print(f"   ratio later / first: x{later / first:.3f}  (target: a small fraction)")


if __name__ == "__main__":
    main()
