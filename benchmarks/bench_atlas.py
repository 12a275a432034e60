"""Prediction-basis query time on a 100,000-entry atlas against a brute-force scan of every entry, same run.

Target (issue 5): under 50 ms per query on this machine. The atlas is synthetic in
content but real in form: a SQLite atlas file written by `write_atlas` with ResNet-50
sized blocks (block3: 1024 filters on a 16 x 16 grid with a gradient tail, last block
2048 filters on 8 x 8), the top 5 % of filters per subtype selected (Lee et al. 2019),
100,000 entries with 48 x 48 patches and heat maps, 20,000 distinct training slices
with 2048-d pooled features.

Timed ("indexed"): `search_atlas`, i.e. everything after the explaining model's
forward pass: Eq. 6 maps of the selected filters, Eq. 7 distances, the entries of
the closest features, pooled-feature nearest neighbours, and reading the k shown
entries (patch, heat map, provenance) from the file. The forward pass itself is the
model's cost (see bench_inference.py).

Baseline ("brute force"): the same answer computed per entry, as a naive
implementation would: each of the 100,000 entries gets its filter's Eq. 6 map and
Eq. 7 distance, all are sorted; the pooled ranking compares against every entry's
slice features and sorts them all.
Run: .venv/bin/python benchmarks/bench_atlas.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ichviewer import SUBTYPES
from ichviewer.atlas import open_atlas
from ichviewer.atlas.retrieval import _l2_rows, resample_grid, search_atlas
from ichviewer.atlas.store import write_atlas
from ichviewer.inference.cam import class_activation_map

N_ENTRIES = 100_000
N_IMAGES = 20_000
BLOCKS = {"block3": (1024, 16, 16), "features": (2048, 8, 8)}
FRACTION = 0.05
PATCH = 48
K = 6
QUERIES = 30


def synthetic_atlas(path: Path, rng: np.random.Generator) -> Path:
    n_filters = sum(k for k, _, _ in BLOCKS.values())
    keep = int(np.ceil(FRACTION * n_filters))
    features = []
    for label in SUBTYPES:
        for rank, f in enumerate(rng.choice(n_filters, keep, replace=False)):
            block = "block3" if f < BLOCKS["block3"][0] else "features"
            channel = int(f if block == "block3" else f - BLOCKS["block3"][0])
            features.append({"block": block, "channel": channel, "label": label, "relevance": int(50 - rank // 4), "label_rank": rank})
    yy, xx = np.mgrid[0:PATCH, 0:PATCH]
    templates = [np.round(30 + 40 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0)).astype(np.int16) for cy, cx in rng.integers(8, 40, (16, 2))]
    heats = [np.round(255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0)).astype(np.uint8) for cy, cx in rng.integers(8, 40, (16, 2))]
    context = np.full((128, 128), 30, np.int16)
    images = [
        {"study_uid": f"1.2.3.{i // 30}", "series_uid": f"1.2.3.{i // 30}.1", "source": f"synthetic study {i // 30}", "slice_index": i % 30,
         "labels": (SUBTYPES[i % 5],), "rows": 512, "cols": 512, "pixel_dy": 0.45, "pixel_dx": 0.45, "context": context,
         "pooled": rng.random(BLOCKS["features"][0], dtype=np.float32)}
        for i in range(N_IMAGES)
    ]
    feature_of = np.sort(rng.integers(0, len(features), N_ENTRIES))
    entries = [
        {"feature": int(f), "image": int(rng.integers(N_IMAGES)), "rank": 0, "max_activation": 1.0, "box": (0.2, 0.2, 0.4, 0.4),
         "patch": templates[i % 16], "heat": heats[i % 16]}
        for i, f in enumerate(feature_of)
    ]
    header = {"model_name": "synthetic", "model_sha256": "0" * 64, "labels": list(SUBTYPES), "blocks": {b: list(s) for b, s in BLOCKS.items()}}
    return write_atlas(path, header, images, features, entries)


def brute_force(atlas, feats, weights, overall, entry_pooled, k):
    """Per-entry scan: Eq. 6 and Eq. 7 for every entry, full sorts; pooled similarity to every entry's slice."""
    ref = _l2_rows(overall.reshape(1, -1))[0]
    d = np.empty(atlas.n_entries)
    fb = atlas.feature_block[atlas.entry_feature]
    fc = atlas.feature_channel[atlas.entry_feature]
    for block in BLOCKS:
        rows = np.flatnonzero(fb == block)
        ch = fc[rows]
        maps = np.maximum(feats[block][ch] * weights[block][ch, None, None].astype(np.float32), 0.0)
        maps = resample_grid(maps, overall.shape).reshape(rows.size, -1)
        dist = np.linalg.norm(_l2_rows(maps) - ref, axis=1)
        dist[maps.max(axis=1) <= 0] = np.inf
        d[rows] = dist
    order = np.argsort(d, kind="stable")
    q = _l2_rows(feats["features"].reshape(feats["features"].shape[0], -1).mean(axis=1)[None])[0]
    sims = entry_pooled @ q
    porder = np.argsort(-sims, kind="stable")
    shown = [atlas.entry(int(atlas.entry_order[i])) for i in order[:k]] + [atlas.entry(int(atlas.entry_order[i])) for i in porder[:k]]
    return shown


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = synthetic_atlas(Path(tmp) / "bench.atlas.sqlite", rng)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        atlas = open_atlas(path)
        t_open = time.perf_counter() - t0
        print(f"atlas: {atlas.n_entries:,} entries, {atlas.n_features} selected features (top {FRACTION:.0%} per subtype of "
              f"{sum(k for k, _, _ in BLOCKS.values())} filters), {atlas.n_images:,} training slices, "
              f"{path.stat().st_size / 1e6:.0f} MB on disk; written in {t_write:.1f} s, opened in {t_open * 1000:.0f} ms")
        entry_pooled = atlas.pooled[atlas.entry_image]  # what a per-entry scan has to compare against
        queries = []
        for _ in range(QUERIES):
            feats = {b: np.maximum(rng.standard_normal(s, dtype=np.float32), 0) for b, s in BLOCKS.items()}
            weights = {b: rng.standard_normal(s[0]) / (s[1] * s[2]) for b, s in BLOCKS.items()}
            overall = class_activation_map(feats["features"], weights["features"] * 64)
            queries.append((feats, weights, overall))
        search_atlas(atlas, *queries[0], k=K)  # warm caches (feature index, entry lookup)
        t_idx, t_bf, same = [], [], 0
        for feats, weights, overall in queries:
            t0 = time.perf_counter()
            examples, pooled, _ = search_atlas(atlas, feats, weights, overall, k=K)
            t_idx.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            brute = brute_force(atlas, feats, weights, overall, entry_pooled, K)
            t_bf.append(time.perf_counter() - t0)
            same += (examples[0].entry.block, examples[0].entry.channel) == (brute[0].block, brute[0].channel)
        idx, bf = np.median(t_idx) * 1000, np.median(t_bf) * 1000
        print(f"query (median of {QUERIES}, k={K} per ranking): indexed {idx:.1f} ms (max {max(t_idx) * 1000:.1f} ms), "
              f"brute force {bf:.1f} ms -> {bf / idx:.1f}x faster; target < 50 ms: {'met' if idx < 50 else 'NOT met'}")
        print(f"closest filter agrees with the brute-force scan in {same}/{QUERIES} queries")
        atlas.close()


if __name__ == "__main__":
    main()
