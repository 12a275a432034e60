"""Benchmark of the review database: logging a read with 100,000 reads in the file, and statistics.

Run by hand:  .venv/bin/python benchmarks/bench_review.py [--reads 100000] [--samples 500]

Targets (issue 6): log a read < 20 ms at the 99th percentile with 100,000 reads
already in the file; statistics over 100,000 reads < 1 s. Ratios are against
baselines measured in the same run on the same file: a bare sqlite3
INSERT + COMMIT of one row (same WAL/synchronous settings), and a bare SELECT of
the columns the statistics read.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from ichviewer import LABELS
from ichviewer.review import Read, ReviewStore, compute_statistics, import_infer_json, queue_counts
from ichviewer.review.store import _INSERT_READ_SQL, utc_now


def populate(store: ReviewStore, tmp: Path, n_reads: int, n_series: int, n_readers: int, rng: np.random.Generator) -> list[str]:
    uids = [f"1.2.826.0.1.3680043.8.498.{i}" for i in range(n_series)]
    probs = rng.beta(0.6, 0.6, size=n_series)
    studies = []
    for uid, p in zip(uids, probs):
        case = {lab: {"probability": float(p), "decision": "positive" if p >= 0.5 else "negative", "threshold": 0.5} for lab in LABELS}
        studies.append({"path": f"/ct/{uid}", "study_uid": uid + ".0", "series_uid": uid, "n_slices": 40,
                        "case": case, "triage": "refer", "slices": [],
                        "models": [{"name": "m", "version": "1", "sha256": "0" * 64}],
                        "provider": "CPUExecutionProvider", "seconds": 1.0})
    infer = tmp / "infer.json"
    infer.write_text(json.dumps({"schema": "ichviewer.infer/1", "studies": studies, "failed": []}))
    import_infer_json(store, infer)
    truth = (rng.random(n_series) < np.clip(probs + rng.normal(0, 0.2, n_series), 0, 1)).astype(int)
    with store.write():
        for uid, t in zip(uids, truth):
            store.set_label(uid, "ANY", int(t), source="bench")
    readers = [store.add_reader(f"reader {i}", "resident" if i % 2 else "attending") for i in range(n_readers)]
    statuses = np.array(["present", "absent", "uncertain"])
    now = utc_now()
    rows = []
    for k in range(n_reads):
        s = int(rng.integers(n_series))
        r = readers[int(rng.integers(n_readers))]
        status = statuses[0 if truth[s] else 1] if rng.random() < 0.85 else statuses[int(rng.integers(3))]
        values = [uids[s], r.id, None]
        for lab in LABELS:
            values += [str(status), int(rng.integers(1, 6)), "accept"] if lab == "ANY" else [None, None, None]
        values += ["", float(rng.uniform(5, 120)), r.name, now]
        rows.append(values)
    with store.write():
        store.conn.executemany(_INSERT_READ_SQL, rows)
    return uids


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=100_000)
    ap.add_argument("--series", type=int, default=5_000)
    ap.add_argument("--readers", type=int, default=20)
    ap.add_argument("--samples", type=int, default=500)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = tmp / "review.sqlite"
        with ReviewStore(db, actor="bench") as store:
            t0 = time.perf_counter()
            uids = populate(store, tmp, args.reads, args.series, args.readers, rng)
            print(f"populated {store.read_count():,} reads over {len(uids):,} series in "
                  f"{time.perf_counter() - t0:.1f} s ({db.stat().st_size / 1e6:.1f} MB)")

            # Baseline: a bare sqlite3 INSERT + COMMIT of one row in the same file, same settings.
            base = sqlite3.connect(db)
            base.execute("PRAGMA synchronous = FULL")
            base.execute("CREATE TABLE IF NOT EXISTS bench_baseline (id INTEGER PRIMARY KEY, v TEXT) STRICT")
            base.commit()
            reader = store.reader("reader 0")
            baseline, logged = [], []
            # Interleave both so disk and checkpoint conditions are shared.
            for i in range(args.samples):
                t = time.perf_counter()
                base.execute("INSERT INTO bench_baseline (v) VALUES (?)", (f"row {i}",))
                base.commit()
                baseline.append(time.perf_counter() - t)
                read = Read(uids[i % len(uids)], {"ANY": "present", "SDH": "present"}, {"ANY": 4},
                            {"ANY": "accept"}, note="bench", seconds_spent=10.0)
                t = time.perf_counter()
                store.log_read(reader, read)
                logged.append(time.perf_counter() - t)
            base.close()
            print(f"\nlog a read with {args.reads:,} reads in the file ({args.samples} samples, synchronous=FULL):")
            for q in (50, 90, 99):
                b, r = percentile_ms(baseline, q), percentile_ms(logged, q)
                print(f"  p{q}: log_read {r:7.2f} ms   bare INSERT+COMMIT {b:7.2f} ms   ratio {r / b:5.2f}x")
            p99 = percentile_ms(logged, 99)
            print(f"  target p99 < 20 ms: {'met' if p99 < 20 else 'NOT met'} ({p99:.2f} ms)")

            # Statistics vs a bare scan of the same columns.
            scans, stats_times = [], []
            for _ in range(5):
                t = time.perf_counter()
                store.conn.execute("SELECT reader_id, series_uid, any_status FROM reads").fetchall()
                scans.append(time.perf_counter() - t)
                t = time.perf_counter()
                stats = compute_statistics(store)
                stats_times.append(time.perf_counter() - t)
            s_med, b_med = float(np.median(stats_times)), float(np.median(scans))
            print(f"\nstatistics over {store.read_count():,} reads ({len(stats['readers']['after'])} readers, "
                  f"{len(stats['reader_agreement']['cohen_kappa'])} reader pairs), median of 5:")
            print(f"  compute_statistics {s_med * 1000:8.1f} ms   bare SELECT of the columns {b_med * 1000:7.1f} ms"
                  f"   ratio {s_med / b_med:5.1f}x")
            print(f"  target < 1 s: {'met' if s_med < 1 else 'NOT met'} ({s_med:.3f} s)")

            # Worklist refresh (all three queues), which the GUI does after each saved read.
            q_times = []
            for _ in range(3):
                t = time.perf_counter()
                counts = queue_counts(store, reader="reader 0")
                q_times.append(time.perf_counter() - t)
            q_med = float(np.median(q_times))
            print(f"\nall three queues {counts}: {q_med * 1000:.1f} ms   ratio to bare SELECT {q_med / b_med:5.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
