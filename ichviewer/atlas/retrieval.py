"""Prediction basis: the atlas examples whose features best explain a finding on a slice (Lee et al. 2019, Eq. 5-7).

For slice x and label c the explaining member gives the last block's features A_L;
the overall attention map is M^c = ReLU(sum_k w_k^c A_L,k / S_L) (Eq. 5, exact for the
GAP + linear head) and each selected atlas feature (l, k) gives M_l,k^c =
ReLU(alpha_l,k^c A_l,k) (Eq. 6) with alpha the spatial mean of dz^c/dA_l,k (w_k^c / S_L
on the last block). Both are L2-normalised and features are ranked by
d = || M_l,k/||M_l,k|| - M/||M|| || (Eq. 7); the atlas entries of the closest features
are the prediction basis. As in the paper (Fig. 5b-c: an IPH finding retrieves IPH atlas
images, a false IVH call retrieves IVH images), only the features the atlas selected
for c are ranked (for ANY, every selected feature); `label_features=False` ranks every
feature, a diagnostic of how much the Eq. 7 distance alone separates the subtypes.
A feature whose map is all zero on this slice (it does not speak for c here) is not ranked.

Beside it, a simpler ranking: nearest atlas slices by the cosine of pooled (global
average) last-block features, so the two can be compared.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ichviewer import LABELS
from ichviewer.atlas.build import LAST_BLOCK, explaining_member
from ichviewer.atlas.store import Atlas, AtlasEntry
from ichviewer.inference.cam import any_is_noisy_or, class_activation_map, noisy_or_any_mix
from ichviewer.inference.model import LoadedModel, _sigmoid
from ichviewer.inference.preprocessing import apply_taps, geometry_for, model_inputs, resample_taps

#: Examples returned per ranking by default (the panel shows 4-8).
DEFAULT_K = 6
#: Entries taken from one feature before moving to the next closest (variety over repetition).
DEFAULT_PER_FEATURE = 2


@dataclass(frozen=True, eq=False)
class RetrievedExample:
    """One prediction-basis example: the atlas entry and its distance under the ranking that found it."""

    entry: AtlasEntry
    distance: float
    method: str  # "attention" (Eq. 7) or "pooled"

    def to_dict(self, *, arrays: bool = False) -> dict[str, Any]:
        return {"method": self.method, "distance": round(float(self.distance), 6), **self.entry.to_dict(arrays=arrays)}


@dataclass(frozen=True, eq=False)
class Retrieval:
    """The prediction basis of one slice and label, by Eq. 7 (`examples`) and by pooled features (`pooled_examples`)."""

    label: str
    slice_index: int
    model: str
    model_sha256: str
    probability: float
    examples: tuple[RetrievedExample, ...]
    pooled_examples: tuple[RetrievedExample, ...]
    n_features_ranked: int
    reason: str = ""
    seconds: float = 0.0
    search_seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, arrays: bool = False) -> dict[str, Any]:
        return {
            "schema": "ichviewer.atlas.query/1",
            "label": self.label,
            "slice_index": self.slice_index,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "probability": round(self.probability, 6),
            "n_features_ranked": self.n_features_ranked,
            "reason": self.reason,
            "examples": [e.to_dict(arrays=arrays) for e in self.examples],
            "pooled_examples": [e.to_dict(arrays=arrays) for e in self.pooled_examples],
            "seconds": round(self.seconds, 4),
            "search_seconds": round(self.search_seconds, 5),
        }


def _l2_rows(m: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(m, axis=-1, keepdims=True)
    return np.divide(m, norm, out=np.zeros_like(m), where=norm > 0)


def resample_grid(maps: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Maps (..., h, w) over the model input resampled to another grid over the same input (antialiased)."""
    maps = np.asarray(maps, dtype=np.float32)
    h, w = maps.shape[-2:]
    if (h, w) == tuple(grid):
        return maps
    taps = [resample_taps(g, n, n / g, 0.5 * n / g - 0.5, mode="edge") for g, n in ((grid[0], h), (grid[1], w))]
    lead = maps.shape[:-2]
    out = apply_taps(maps.reshape((-1, h, w)), taps[0], taps[1])
    return out.reshape(lead + out.shape[-2:])


@dataclass(frozen=True)
class _FeatureIndex:
    """The atlas's selected filters grouped by block, computed once per atlas (cached on it)."""

    blocks: tuple[str, ...]
    channels: dict[str, np.ndarray]  # block -> unique channels
    row_filter: np.ndarray  # feature row -> index into the concatenation of unique filters (block order)


def feature_index(atlas: Atlas) -> _FeatureIndex:
    cached = getattr(atlas, "_feature_index", None)
    if cached is not None:
        return cached
    blocks = tuple(dict.fromkeys(str(b) for b in atlas.feature_block))
    channels: dict[str, np.ndarray] = {}
    row_filter = np.zeros(atlas.n_features, dtype=np.int64)
    offset = 0
    for b in blocks:
        rows = np.flatnonzero(atlas.feature_block == b)
        uniq, inverse = np.unique(atlas.feature_channel[rows], return_inverse=True)
        channels[b] = uniq
        row_filter[rows] = offset + inverse
        offset += uniq.size
    index = _FeatureIndex(blocks, channels, row_filter)
    atlas._feature_index = index  # type: ignore[attr-defined]
    return index


def feature_distances(
    atlas: Atlas,
    block_features: dict[str, np.ndarray],
    channel_weights: dict[str, np.ndarray],
    overall: np.ndarray,
) -> np.ndarray:
    """Eq. 7 distance of every atlas feature row to the overall map (inf where its Eq. 6 map is all zero).

    `block_features[b]` (K_b, h_b, w_b) of the query slice; `channel_weights[b]` (K_b,)
    the Eq. 6 weights alpha (spatial mean of dz^c/dA); `overall` M^c (h_L, w_L). Maps of
    other blocks are resampled to the last block's grid before comparing.
    """
    index = feature_index(atlas)
    grid = overall.shape
    ref = _l2_rows(np.asarray(overall, dtype=np.float32).reshape(1, -1))[0]
    dists = []
    for b in index.blocks:
        ch = index.channels[b]
        maps = np.maximum(block_features[b][ch] * channel_weights[b][ch, None, None].astype(np.float32), 0.0)  # Eq. 6
        maps = resample_grid(maps, grid).reshape(ch.size, -1)
        nonzero = maps.max(axis=1) > 0
        d = np.linalg.norm(_l2_rows(maps) - ref, axis=1)  # Eq. 7
        d[~nonzero] = np.inf
        dists.append(d)
    per_filter = np.concatenate(dists) if dists else np.zeros(0)
    return per_filter[index.row_filter]


def entries_by_distance(atlas: Atlas, row_distances: np.ndarray, k: int, per_feature: int = DEFAULT_PER_FEATURE) -> list[tuple[int, float]]:
    """(entry id, distance) of the closest features' entries: up to `per_feature` per feature, one per training slice, `k` in all."""
    finite = np.flatnonzero(np.isfinite(row_distances))
    if finite.size == 0 or k <= 0:
        return []
    order = finite[np.argsort(row_distances[finite], kind="stable")]  # selected features: hundreds, sorting is cheap
    out: list[tuple[int, float]] = []
    seen: set[int] = set()
    # first up to `per_feature` from each feature in distance order; if that leaves fewer than k,
    # a second pass takes the closest features' further entries
    for limit in (per_feature, None):
        for row in order:
            taken = 0
            for e in atlas.feature_entries(int(row)):
                img = _entry_image(atlas, int(e))
                if img in seen:
                    continue
                seen.add(img)
                out.append((int(e), float(row_distances[row])))
                taken += 1
                if len(out) >= k:
                    return sorted(out, key=lambda hit: hit[1])
                if limit is not None and taken >= limit:
                    break
    return sorted(out, key=lambda hit: hit[1])  # closest first (stable: strongest entry first within a feature)


def _entry_image(atlas: Atlas, entry_id: int) -> int:
    lookup = getattr(atlas, "_entry_image_by_id", None)
    if lookup is None:
        lookup = np.empty(int(atlas.entry_order.max()) + 1 if atlas.n_entries else 0, dtype=np.int64)
        lookup[atlas.entry_order] = atlas.entry_image
        atlas._entry_image_by_id = lookup  # type: ignore[attr-defined]
    return int(lookup[entry_id])


def pooled_neighbours(atlas: Atlas, pooled: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(entry id, distance) of the `k` atlas slices nearest by pooled features (L2 of normalised vectors), each slice's strongest entry."""
    if atlas.n_images == 0 or k <= 0:
        return []
    q = _l2_rows(np.asarray(pooled, dtype=np.float32).reshape(1, -1))[0]
    sims = atlas.pooled @ q
    kk = min(k, sims.size)
    top = np.argpartition(-sims, kk - 1)[:kk] if kk < sims.size else np.arange(sims.size)
    top = top[np.argsort(-sims[top], kind="stable")]
    out = []
    for img in top:
        ents = atlas.image_entries(int(img))
        if ents.size:
            out.append((int(ents[0]), float(np.sqrt(max(0.0, 2.0 - 2.0 * float(sims[img]))))))
    return out


def channel_weights_for(
    model: LoadedModel, label_index: int, block_features: dict[str, np.ndarray], blocks: Sequence[str], channels: dict[str, np.ndarray] | None = None,
    *, label_mix: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Eq. 6 weights alpha per block: w^c / S on the last block (exact); gradient tails for intermediate blocks (only `channels`).

    With `label_mix` (one weight per label) the weights are those of sum_c mix_c z^c: ANY made as
    the noisy-OR of the subtypes (`ichviewer.inference.cam.noisy_or_any_mix`).
    """
    out: dict[str, np.ndarray] = {}
    for b in blocks:
        a = block_features[b]
        if b == LAST_BLOCK:
            w = (np.tensordot(label_mix, model.cam_weight.astype(np.float64), axes=(0, 0)) if label_mix is not None
                 else model.cam_weight[label_index].astype(np.float64))
            out[b] = w / float(a.shape[-1] * a.shape[-2])
        else:
            out[b] = model.block_gradient_weights(b, a, label_index, None if channels is None else channels.get(b),
                                                  label_mix=label_mix)
    return out


def search_atlas(
    atlas: Atlas,
    block_features: dict[str, np.ndarray],
    channel_weights: dict[str, np.ndarray],
    overall: np.ndarray,
    *,
    k: int = DEFAULT_K,
    per_feature: int = DEFAULT_PER_FEATURE,
    label: str | None = None,
) -> tuple[tuple[RetrievedExample, ...], tuple[RetrievedExample, ...], int]:
    """The atlas side of a query, given the slice's block features and Eq. 6 weights and its Eq. 5 map.

    Returns (examples by Eq. 7, examples by pooled features, number of features ranked).
    With a subtype `label`, only the features selected for it are ranked (None or ANY: all).
    This is what `benchmarks/bench_atlas.py` times: everything after the model's forward pass.
    """
    pooled_hits = pooled_neighbours(atlas, block_features[LAST_BLOCK].reshape(block_features[LAST_BLOCK].shape[0], -1).mean(axis=1), k)
    hits: list[tuple[int, float]] = []
    n_ranked = 0
    if float(np.max(overall)) > 0:
        row_d = feature_distances(atlas, block_features, channel_weights, overall)
        if label is not None and label != "ANY":
            row_d = np.where(atlas.feature_label == label, row_d, np.inf)
        n_ranked = int(np.isfinite(row_d).sum())
        hits = entries_by_distance(atlas, row_d, k, per_feature)
    examples = tuple(RetrievedExample(atlas.entry(e), d, "attention") for e, d in hits)
    pooled = tuple(RetrievedExample(atlas.entry(e), d, "pooled") for e, d in pooled_hits)
    return examples, pooled, n_ranked


def retrieve(
    volume: Any,
    slice_index: int,
    label: str,
    atlas: Atlas,
    source: Any,
    *,
    k: int = DEFAULT_K,
    per_feature: int = DEFAULT_PER_FEATURE,
    model: str | None = None,
    label_features: bool = True,
    also_all_features: bool = False,
) -> Retrieval:
    """The prediction basis of `label` on slice `slice_index` (Eq. 5-7) and the pooled-feature neighbours beside it.

    `source` is an Ensemble (its explaining member) or a LoadedModel. The atlas must
    have been built with that model (AtlasMismatchError otherwise). `label_features`
    (default) ranks only the features the atlas selected for `label`, as the paper does;
    `also_all_features` adds the ranking over every feature from the same forward pass, in
    `extras["all_features_examples"]` (the held-out check's diagnostic).
    """
    t0 = time.perf_counter()
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    loaded = source if isinstance(source, LoadedModel) else explaining_member(source, model)
    atlas.check_model(loaded.spec.sha256, loaded.name, loaded.path.parent)
    n = int(volume.hu.shape[0])
    if not 0 <= slice_index < n:
        raise IndexError(f"slice index {slice_index} is outside 0..{n - 1}")
    c = LABELS.index(label)
    blocks = tuple(dict.fromkeys((*feature_index(atlas).blocks, LAST_BLOCK)))
    geometry = geometry_for(volume, loaded.spec.input_size, loaded.spec.crop)
    spec = loaded.spec
    x = model_inputs(volume, [slice_index], spec, geometry)
    logits, feats = loaded.block_features(x, blocks)
    feats = {b: f[0] for b, f in feats.items()}
    probability = float(_sigmoid(logits[0, c]) if spec.activation == "sigmoid" else logits[0, c])
    label_mix = None
    cam_weight = loaded.cam_weight[c]
    if label == "ANY" and spec.activation == "sigmoid" and any_is_noisy_or(source):
        # The ANY the reader sees is the noisy-OR of the subtypes, not the networks' ANY head:
        # explain and report that one, as the attention map does.
        label_mix, probability = noisy_or_any_mix(logits[0])
        cam_weight = np.tensordot(label_mix, loaded.cam_weight.astype(np.float64), axes=(0, 0))
    weights = channel_weights_for(loaded, c, feats, blocks, feature_index(atlas).channels, label_mix=label_mix)
    t_search = time.perf_counter()
    overall = class_activation_map(feats[LAST_BLOCK], cam_weight)  # Eq. 5
    examples, pooled, n_ranked = search_atlas(
        atlas, feats, weights, overall, k=k, per_feature=per_feature, label=label if label_features else None
    )
    extras: dict[str, Any] = {}
    if also_all_features:
        extras["all_features_examples"] = (
            search_atlas(atlas, feats, weights, overall, k=k, per_feature=per_feature)[0] if label_features else examples
        )
    search = time.perf_counter() - t_search
    reason = ""
    if float(overall.max()) <= 0:
        reason = f"the model's attention map for {label} is empty on this slice, so no feature explains it"
    elif not examples and label_features and label != "ANY" and not (atlas.feature_label == label).any():
        reason = f"the atlas has no features selected for {label}"
    elif not examples:
        reason = f"no atlas feature responds to {label} on this slice"
    return Retrieval(
        label=label,
        slice_index=int(slice_index),
        model=loaded.name,
        model_sha256=loaded.spec.sha256,
        probability=probability,
        examples=examples,
        pooled_examples=pooled,
        n_features_ranked=n_ranked,
        reason=reason,
        seconds=time.perf_counter() - t0,
        search_seconds=search,
        extras=extras,
    )


__all__ = ["Retrieval", "RetrievedExample", "feature_distances", "pooled_neighbours", "retrieve", "search_atlas"]
