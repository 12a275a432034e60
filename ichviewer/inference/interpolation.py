"""Slice interpolation at inference (Lee et al. 2019, Eq. 4 and Methods, "Slice interpolation").

For slice s and each beta of the model's degree, two images are made from the
preprocessed model inputs: beta * x_s + (1 - beta) * x_{s-1} ("lower") and
beta * x_s + (1 - beta) * x_{s+1} ("upper"). The first slice has no s-1 and the
last no s+1: the existing neighbour stands in on both sides (so their two
interpolated images per beta coincide).

The slice's probability is the linear combination of the probabilities of the
original image (weight 1) and of each interpolated image (weight = its beta, the
share of slice s it contains), divided by the sum of weights 1 + 2 * sum(betas).
Degree 3: p = (p_s + 0.67 p_lower + 0.67 p_upper) / 2.34.
"""

from __future__ import annotations

import numpy as np

from ichviewer.inference.manifest import CONTEXT_SLICES, INTERPOLATION_BETAS


def interpolation_betas(degree: int) -> tuple[float, ...]:
    """The paper's betas for degree 3, 5, 7 or 9 (degree 1: none)."""
    try:
        return INTERPOLATION_BETAS[degree]
    except KeyError:
        raise ValueError(f"interpolation degree must be one of {sorted(INTERPOLATION_BETAS)}, got {degree}") from None


def image_weights(degree: int) -> np.ndarray:
    """Normalised weights of the `degree` images in `interpolated_images` order."""
    betas = interpolation_betas(degree)
    w = [1.0]
    for b in betas:
        w += [b, b]
    arr = np.asarray(w, dtype=np.float64)
    return arr / arr.sum()


def neighbours(indices: np.ndarray, n_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) neighbour index of each slice; at the ends the existing neighbour serves both sides."""
    if n_slices < 2:
        raise ValueError("slice interpolation needs at least 2 slices")
    idx = np.asarray(indices, dtype=np.int64)
    lower = np.where(idx == 0, 1, idx - 1)
    upper = np.where(idx == n_slices - 1, n_slices - 2, idx + 1)
    return lower, upper


def with_context(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, context_slices: int) -> np.ndarray:
    """Model inputs of `context_slices` slices: (n, C, H, W) -> (n, context_slices * C, H, W).

    Channels are slice-major: the lower neighbour's windows, then the slice's, then the upper
    neighbour's (`neighbours` gives the rows; at the ends the one neighbour serves both sides,
    as for Eq. 4). With 1 the slice's own inputs are returned unchanged.
    """
    if context_slices not in CONTEXT_SLICES:
        raise ValueError(f"context slices must be one of {CONTEXT_SLICES}, got {context_slices}")
    if context_slices == 1:
        return x
    return np.concatenate([lower, x, upper], axis=1)


def interpolated_images(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, degree: int) -> np.ndarray:
    """Stack (degree, n, ...) images: originals, then (lower, upper) per beta (Lee et al. 2019, Eq. 4).

    `x`, `lower`, `upper` are (n, ...) preprocessed inputs of each slice and its neighbours.
    """
    betas = interpolation_betas(degree)
    out = np.empty((len(image_weights(degree)),) + x.shape, dtype=np.float32)
    out[0] = x
    for j, b in enumerate(betas):
        b32, c32 = np.float32(b), np.float32(1.0 - b)
        np.multiply(x, b32, out=out[1 + 2 * j])
        out[1 + 2 * j] += c32 * lower
        np.multiply(x, b32, out=out[2 + 2 * j])
        out[2 + 2 * j] += c32 * upper
    return out


def combine(probabilities: np.ndarray, degree: int) -> np.ndarray:
    """Weighted combination over the first axis (degree, n, L) -> (n, L), with `image_weights`."""
    w = image_weights(degree)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape[0] != w.size:
        raise ValueError(f"degree {degree} needs {w.size} images per slice, got {p.shape[0]}")
    return np.tensordot(w, p, axes=(0, 0))
