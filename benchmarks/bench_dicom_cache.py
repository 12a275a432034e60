"""Peak memory of caching a site's labelled DICOM for training, against loading the folder first, same run.

Target: `ichviewer train --source dicom` holds one CT volume at a time, so its peak memory
stays near the size of the model-input cache however many studies the folder has; reading the
whole folder into CT volumes first (what it did before stop 37: `load_path`, then the inputs)
grows with the folder, about 0.5 GB per 1 mm study at 512 x 512, and a site's few hundred studies
would not fit in memory.

Case: synthetic phantoms written as DICOM (`ichviewer phantom`), 512 x 512, a mix of 5 mm and
1 mm series, labelled per slice by series UID; model inputs at 256 pixels in the four bundled
windows, 5 mm slabs.

Timed ("streaming"): `ichviewer.training.data.build_dicom_cache`, in a fresh process.
Baseline ("load first"): `ichviewer.io.load_path` on the folder, then `volume_to_inputs` per
volume, in a fresh process. Both must give the same model inputs (SHA-256 per series); the benchmark stops if not.
Figures: peak resident memory (VmHWM) of each process when its inputs are ready, their ratio,
and the wall times.
Run: .venv/bin/python benchmarks/bench_dicom_cache.py [--studies 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import hashlib, json, sys, time
import numpy as np
from ichviewer.core.windowing import INPUT_WINDOW_SETS
from ichviewer.training.allocator import peak_resident_mb
from ichviewer.training.data import build_dicom_cache, volume_to_inputs
mode, data, labels = sys.argv[1:4]
windows = INPUT_WINDOW_SETS["brain-blood-subdural-bone"]
t0 = time.perf_counter()
if mode == "streaming":
    cache = build_dicom_cache(data, labels, 256, windows=windows, crop="head", slab_mm=5.0)
    by_series = {c.case_id: cache.images[c.start:c.stop] for c in cache.cases}
else:
    from ichviewer.io import load_path
    volumes = load_path(data).volumes
    by_series = {v.series_uid: volume_to_inputs(v, 256, windows, "head", 5.0) for v in volumes}
seconds = time.perf_counter() - t0
peak_mb = peak_resident_mb()  # not ru_maxrss, which carries the parent's (it wrote the phantoms) over
digests = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() + str(v.shape) for k, v in by_series.items()}
print(json.dumps({"peak_mb": peak_mb, "seconds": seconds, "digests": digests,
                  "inputs_mb": sum(v.nbytes for v in by_series.values()) / 2**20}))
"""


def write_folder(root: Path, n: int) -> tuple[Path, Path, int]:
    from ichviewer.commands.phantom import write_phantom
    from ichviewer.core.phantom import generate_case

    subtypes = ["SDH", "none", "IPH", "none", "SAH", "none", "IVH", "none", "EDH", "none"]
    lines = ["series_uid,slice_index,any,iph,ivh,sdh,edh,sah"]
    slices = 0
    for k in range(n):
        thin = k % 3 == 2  # every third study a 1 mm series
        case = generate_case(900 + k, subtype=subtypes[k % len(subtypes)], matrix=512, slice_mm=1.0 if thin else 5.0)
        write_phantom(root / "data" / f"s{k:02d}", case)
        slices += case.volume.n_slices
        for i, d in enumerate(case.slice_labels):
            lines.append(",".join([case.volume.series_uid, str(i)] + [str(d[x]) for x in ("ANY", "IPH", "IVH", "SDH", "EDH", "SAH")]))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "data", root / "labels.csv", slices


def run(mode: str, data: Path, labels: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(data), str(labels)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=12)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        data, labels, slices = write_folder(root, args.studies)
        print(f"{args.studies} studies, {slices} slices of 512 x 512 written in {time.perf_counter() - t0:.0f} s")
        base = run("load-first", data, labels)
        new = run("streaming", data, labels)
        if base["digests"] != new["digests"]:
            print("the two ways gave different model inputs; stopping")
            return 1
    print(f"model-input cache: {new['inputs_mb']:.0f} MB (identical both ways)")
    print(f"load first (baseline): peak {base['peak_mb']:.0f} MB, {base['seconds']:.1f} s")
    print(f"streaming (ichviewer train): peak {new['peak_mb']:.0f} MB, {new['seconds']:.1f} s")
    print(f"peak memory ratio streaming / load first: {new['peak_mb'] / base['peak_mb']:.2f}; "
          f"time ratio {new['seconds'] / base['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
