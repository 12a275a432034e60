"""Filter relevance: which filters of the explaining model stand for which haemorrhage subtype (Lee et al. 2019, Methods).

"For each filter from each block, N activation maps were generated. These activation
maps were sorted by their maximum activation values from highest to lowest. Then we
quantified the relevance of each activation map to a particular label by counting the
number of activation maps assigned to the label consecutively from the top ... Then all
activation maps at all blocks for each label were sorted from the highest to lowest
relevance count, and the top 5% of them were selected."
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Share of all filters (all chosen blocks together) kept per label (Lee et al. 2019: top 5 %).
DEFAULT_FRACTION = 0.05


def relevance_counts(sorted_labels: np.ndarray) -> np.ndarray:
    """Relevance count per label of one filter, given its images' labels in descending max-activation order.

    `sorted_labels` (N, L) bool: row 0 is the image with the highest maximum
    activation. The count for a label is the length of the run of images carrying
    it from the top, so the paper's example (SAH+IPH, then SAH, then SDH) gives
    SAH 2, IPH 1 and 0 for every other label (SDH's image is not at the top).
    """
    labels = np.asarray(sorted_labels, dtype=bool)
    if labels.ndim != 2:
        raise ValueError(f"sorted labels must be (images, labels), got shape {labels.shape}")
    if labels.shape[0] == 0:
        return np.zeros(labels.shape[1], dtype=np.int64)
    return np.cumprod(labels, axis=0, dtype=np.int64).sum(axis=0)


def filter_relevance(max_activations: np.ndarray, labels: np.ndarray, top: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Relevance counts (F, L) of every filter, and for each filter its `top` strongest images (F, top).

    `max_activations` (N, F): each image's maximum activation per filter; `labels`
    (N, L) bool. Images on which a filter does not fire (maximum <= 0) carry no
    evidence and end the run, so a dead filter has count 0 everywhere. Ties keep
    image order (stable sort), so the result is deterministic.
    """
    acts = np.asarray(max_activations, dtype=np.float32)
    lab = np.asarray(labels, dtype=bool)
    if acts.ndim != 2 or lab.ndim != 2 or acts.shape[0] != lab.shape[0]:
        raise ValueError(f"need max activations (N, F) and labels (N, L) for the same N, got {acts.shape} and {lab.shape}")
    n, f = acts.shape
    counts = np.zeros((f, lab.shape[1]), dtype=np.int64)
    tops = np.full((f, max(0, top)), -1, dtype=np.int64)
    for j in range(f):
        order = np.argsort(-acts[:, j], kind="stable")
        firing = int(np.count_nonzero(acts[order, j] > 0))
        counts[j] = relevance_counts(lab[order[:firing]])
        if top:
            k = min(top, n)
            tops[j, :k] = order[:k]
    return counts, tops


@dataclass(frozen=True)
class Selection:
    """One filter chosen to represent one label: global filter index, label index, its relevance count and rank."""

    filter_index: int
    label_index: int
    relevance: int
    rank: int


def select_filters(counts: np.ndarray, fraction: float = DEFAULT_FRACTION, *, label_indices: Sequence[int] | None = None) -> list[Selection]:
    """Per label, the top `fraction` of all filters by relevance count (Lee et al. 2019: 5 %); count 0 never qualifies.

    The number kept per label is ceil(fraction x number of filters), at least one.
    Equal counts keep filter order (blocks in the order given, then channel).
    """
    c = np.asarray(counts)
    if c.ndim != 2:
        raise ValueError(f"relevance counts must be (filters, labels), got shape {c.shape}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    keep = max(1, math.ceil(fraction * c.shape[0]))
    out: list[Selection] = []
    for li in label_indices if label_indices is not None else range(c.shape[1]):
        order = np.argsort(-c[:, li], kind="stable")
        rank = 0
        for fi in order[:keep]:
            if c[fi, li] <= 0:
                break
            out.append(Selection(int(fi), int(li), int(c[fi, li]), rank))
            rank += 1
    return out
