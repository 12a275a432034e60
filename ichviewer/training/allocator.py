"""Keep freed memory in the process during training (glibc `mallopt`), for cheaper steps.

Every training step allocates and frees the same large buffers (augmented batches,
activations, gradients, a few MB each). glibc serves blocks above its mmap threshold
with fresh `mmap` calls and returns them with `munmap`, so each step pays again for the
kernel to map and zero those pages: measured at stop 17 on this 2-core machine, system
time was about a third of a step's wall time. Turning off mmap for large blocks
(`M_MMAP_MAX = 0`) and never trimming the heap top (`M_TRIM_THRESHOLD` huge) keeps the
pages mapped and reuses them: the same effect as starting Python with
`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000`, applied from inside the process
so the documented command needs no environment. Only the allocator changes, never a
number the network computes: weights are bit-identical with and without it
(`tests/test_training_pipeline.py`). The cost is that the process's peak heap is not
returned to the system until it exits; `benchmarks/bench_training.py` prints both the
speed-up and the peak resident memory.

Other C libraries (musl, macOS, Windows) are left alone and the reason is recorded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: Bytes of free heap top glibc may keep before trimming (mallopt takes an int: the largest, 2 GiB).
KEEP_HEAP_BYTES = 2**31 - 1
#: Set to "0" to leave the allocator as it is (benchmarks and comparisons).
DISABLE_ENV = "ICHVIEWER_MALLOC_TUNING"


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc


def tune_allocator_for_training() -> dict:
    """Apply the glibc settings above to this process; return what was done, for the training log.

    `{"applied": True, "settings": {...}}` when both `mallopt` calls succeeded;
    otherwise `{"applied": False, "reason": ...}`. Safe to call more than once.
    """
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return {"applied": False, "reason": f"{DISABLE_ENV}=0"}
    libc = _glibc()
    if libc is None:
        return {"applied": False, "reason": "not glibc: allocator left as it is"}
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    trim = KEEP_HEAP_BYTES
    ok_mmap = libc.mallopt(M_MMAP_MAX, 0)
    ok_trim = libc.mallopt(M_TRIM_THRESHOLD, trim)
    if ok_mmap != 1 or ok_trim != 1:
        return {"applied": False, "reason": f"mallopt refused (M_MMAP_MAX -> {ok_mmap}, M_TRIM_THRESHOLD -> {ok_trim})"}
    return {
        "applied": True,
        "glibc": libc.gnu_get_libc_version().decode(),
        "settings": {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": trim},
    }


def peak_resident_mb() -> float | None:
    """This process image's peak resident memory in MB (Linux `VmHWM`), None where /proc is missing.

    Not `getrusage(...).ru_maxrss`: that high-water mark survives fork and exec, so a benchmark's
    child process started by a parent holding gigabytes reports the parent's figure."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
