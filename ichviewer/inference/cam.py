"""Attention maps: CAM from the last convolutional features and the linear head (Lee et al. 2019, Eqs. 5-7).

For a head z^c = sum_k w_k^c * GAP(A_k) + b^c, the gradient dz^c/dA_k,ij is w_k^c / S
(S = h * w), so Eq. 5 (Grad-CAM) is exactly M^c = ReLU(sum_k w_k^c A_k / S): the
classic CAM scaled by 1/S. With this scaling the map's pre-ReLU values sum to
z^c - b^c. Maps are computed on the original slice only (no interpolated images)
and resampled back onto the slice pixels by undoing the pad/resize.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ichviewer import LABELS
from ichviewer.inference.ensemble import Ensemble
from ichviewer.inference.errors import ModelContractError
from ichviewer.inference.findings import ANY_COLUMN, SUBTYPE_COLUMNS, apply_any_rule
from ichviewer.inference.model import LoadedModel, _sigmoid
from ichviewer.inference.preprocessing import SliceGeometry, geometry_for, model_inputs


def class_activation_map(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Lee et al. 2019, Eq. 5: M^c = ReLU(sum_k A_k * w_k^c / S) for features (K, h, w) and weights (K,)."""
    a = np.asarray(features, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    s = a.shape[-1] * a.shape[-2]
    return np.maximum(np.tensordot(w, a, axes=(0, 0)) / s, 0.0)


def feature_attention_maps(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Lee et al. 2019, Eq. 6: M_k^c = ReLU(A_k * w_k^c / S), one map per feature, (K, h, w)."""
    a = np.asarray(features, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    s = a.shape[-1] * a.shape[-2]
    return np.maximum(a * (w / s)[:, None, None], 0.0)


def _l2_normalised(m: np.ndarray) -> np.ndarray:
    flat = m.reshape(m.shape[0], -1) if m.ndim == 3 else m.reshape(1, -1)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 0)


def map_distances(feature_maps: np.ndarray, overall: np.ndarray) -> np.ndarray:
    """Lee et al. 2019, Eq. 7: || M_k/||M_k|| - M/||M|| ||_2 for each of (K, h, w) maps against (h, w).

    An all-zero map stays the zero vector after "normalisation" (its distance to a
    non-zero normalised map is then 1).
    """
    fm = np.asarray(feature_maps, dtype=np.float64)
    if fm.ndim == 2:
        fm = fm[None]
    return np.linalg.norm(_l2_normalised(fm) - _l2_normalised(np.asarray(overall, dtype=np.float64)), axis=1)


@dataclass(frozen=True, eq=False)
class AttentionMap:
    """An attention map for one slice and label.

    `map` (H0, W0) lies on the original slice pixels, in Eq. 5 units (>= 0);
    `grid_map` (h, w) is the same on the feature grid. `features` (K, h, w) and
    `weights` (K,) allow the per-feature maps of Eq. 6 (`feature_maps()`). For ANY in an
    ensemble whose manifest makes ANY as the noisy-OR of the subtypes, `weights` mix the
    subtype heads (`noisy_or_any_weights`) and `logit`/`probability` are the member's noisy-OR.
    """

    label: str
    slice_index: int
    model: str
    map: np.ndarray
    grid_map: np.ndarray
    features: np.ndarray
    weights: np.ndarray
    logit: float
    probability: float
    geometry: SliceGeometry

    def normalized(self) -> np.ndarray:
        """`map` scaled to [0, 1] by its maximum (all zeros if the map is empty), for display."""
        peak = float(self.map.max()) if self.map.size else 0.0
        return (self.map / peak).astype(np.float32) if peak > 0 else np.zeros_like(self.map, dtype=np.float32)

    def feature_maps(self, on_slice: bool = False) -> np.ndarray:
        """Eq. 6 maps (K, h, w), or (K, H0, W0) on the slice with `on_slice=True`."""
        maps = feature_attention_maps(self.features, self.weights)
        return self.geometry.to_source(maps) if on_slice else maps

    def distances(self) -> np.ndarray:
        """Eq. 7 distance of each feature map to the overall map (on the feature grid)."""
        return map_distances(self.feature_maps(), self.grid_map)


def noisy_or_any_mix(logits: np.ndarray) -> tuple[np.ndarray, float]:
    """(mix (6,) over LABELS, ANY): each subtype's share of the noisy-OR ANY of a member's logits.

    ANY = 1 - prod_s (1 - p_s), so -log(1 - ANY) = sum_s h_s with h_s = -log(1 - p_s): each
    subtype's share of the noisy-OR is h_s / sum h (equal shares when every subtype is at 0);
    the ANY column of the mix is 0. ANY's map and its Eq. 6 weights are those of
    sum_c mix_c z^c, the subtypes that make the slice's ANY in proportion.
    """
    probabilities = _sigmoid(np.asarray(logits, dtype=np.float64))
    p = probabilities[SUBTYPE_COLUMNS]
    hazard = -np.log1p(-np.minimum(p, 1.0 - 1e-12))
    total = float(hazard.sum())
    mix = np.zeros(len(probabilities), dtype=np.float64)
    mix[SUBTYPE_COLUMNS] = hazard / total if total > 0 else np.full(len(p), 1.0 / len(p))
    return mix, float(apply_any_rule(probabilities, "noisy-or")[ANY_COLUMN])


def noisy_or_any_weights(cam_weight: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, float]:
    """CAM weights (K,) for ANY when the manifest makes ANY as the noisy-OR of the subtypes, and that ANY.

    The ANY map is the CAM (Eq. 5, linear in the weights) of the subtype head weights mixed by
    their shares of the noisy-OR (`noisy_or_any_mix`), sum_s (h_s / sum h) w^s: the map of
    whichever subtypes make the slice's ANY, in proportion. Uses the explaining member's own
    subtype probabilities on the slice.
    """
    mix, any_probability = noisy_or_any_mix(logits)
    return np.tensordot(mix, np.asarray(cam_weight, dtype=np.float64), axes=(0, 0)), any_probability


def any_is_noisy_or(source: Any) -> bool:
    """True when `source` is an Ensemble whose manifest makes ANY as the noisy-OR of its subtypes."""
    return isinstance(source, Ensemble) and source.manifest.aggregation.any_rule == "noisy-or"


def slice_features(volume: Any, slice_index: int, model: LoadedModel) -> tuple[np.ndarray, np.ndarray, SliceGeometry]:
    """(logits (6,), features (K, h, w), geometry) of one original slice through `model`."""
    n = int(volume.hu.shape[0])
    if not 0 <= slice_index < n:
        raise IndexError(f"slice index {slice_index} is outside 0..{n - 1}")
    spec = model.spec
    geometry = geometry_for(volume, spec.input_size, spec.crop)
    x = model_inputs(volume, [slice_index], spec, geometry)
    logits, feats = model.logits_and_features(x)
    return logits[0], feats[0], geometry


def attention_map(
    volume: Any,
    slice_index: int,
    label: str | int,
    source: Ensemble | LoadedModel,
    *,
    model: str | None = None,
) -> AttentionMap:
    """CAM (Lee et al. 2019, Eq. 5) of `label` on slice `slice_index`, resampled onto the slice.

    `source` is an Ensemble (its `attention_model`, or the first member with a CAM
    head; `model=` picks another member) or one LoadedModel. Features are cached per
    volume in the ensemble, so switching label on the same slice is cheap. When the
    ensemble's manifest says `"aggregation": {"any": "noisy-or"}`, ANY's map is the mix of the
    subtype maps that makes the displayed ANY (`noisy_or_any_weights`), not the ANY head's.
    """
    label_name = LABELS[label] if isinstance(label, int) else str(label)
    if label_name not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    c = LABELS.index(label_name)
    if isinstance(source, Ensemble):
        loaded = source.model(model) if model else source.cam_model
        if loaded is None:
            raise ModelContractError(source.name, source.directory, "no member has a CAM head, so there are no attention maps")
        logits, feats = source.cached_features(
            volume, loaded, slice_index, lambda: slice_features(volume, slice_index, loaded)[:2]
        )
        geometry = geometry_for(volume, loaded.spec.input_size, loaded.spec.crop)
    else:
        loaded = source
        logits, feats, geometry = slice_features(volume, slice_index, loaded)
    if loaded.cam_weight is None:
        raise ModelContractError(loaded.name, loaded.path, "the manifest gives no CAM weights for this model")
    weights = loaded.cam_weight[c].astype(np.float64)
    sigmoid = loaded.spec.activation == "sigmoid"
    logit = float(logits[c])
    probability = float(_sigmoid(logits[c]) if sigmoid else logits[c])
    if label_name == "ANY" and sigmoid and any_is_noisy_or(source):
        weights, probability = noisy_or_any_weights(loaded.cam_weight, logits)
        logit = float(np.log(max(probability, 1e-300)) - np.log(max(1.0 - probability, 1e-300)))
    grid = class_activation_map(feats, weights)
    on_slice = np.maximum(geometry.to_source(grid), 0.0)
    return AttentionMap(
        label=label_name,
        slice_index=int(slice_index),
        model=loaded.name,
        map=on_slice,
        grid_map=grid.astype(np.float32),
        features=feats,
        weights=weights,
        logit=logit,
        probability=probability,
        geometry=geometry,
    )
