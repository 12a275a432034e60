"""Per-label decision thresholds chosen on validation data (high-sensitivity operating points)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

from ichviewer.evaluation.metrics import as_binary, as_scores

#: Lee et al. 2019 chose "the high sensitivity operating point from the validation subset";
#: the project's target (issue 4) is sensitivity >= 0.95 where achievable.
DEFAULT_MIN_SENSITIVITY = 0.95
#: The specific tier of a subtype call (`ichviewer.core.decisions`, stop 26): "positive" for a
#: subtype is said at a threshold with validation specificity >= this.
DEFAULT_MIN_SPECIFICITY = 0.95


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold for one label (positive when probability >= threshold)."""

    label: str
    threshold: float | None  # None when the label has no positive validation case
    min_sensitivity: float
    sensitivity: float  # achieved on the validation data
    specificity: float
    n_positive: int
    n_negative: int
    achieved: bool  # False when the target could not be met (no positives)

    def to_dict(self) -> dict:
        return asdict(self)


def _halfway(low: float, high: float) -> float:
    """A threshold strictly above `low` and at most `high` (low < high): their midpoint, or `high`
    when the two are adjacent floats and the midpoint rounds onto `low`. Decisions use p >= t, so
    it separates the two scores without hinging on either's exact value."""
    t = (low + high) / 2.0
    return t if t > low else high


def choose_sensitivity_threshold(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    min_sensitivity: float = DEFAULT_MIN_SENSITIVITY,
    label: str = "",
) -> OperatingPoint:
    """The highest threshold whose validation sensitivity is at least `min_sensitivity`.

    The highest such threshold gives the best specificity among those meeting the target: the
    k-th highest positive score s_k with k = ceil(min_sensitivity * n_positive). Decisions use
    p >= threshold, and the threshold returned sits halfway between s_k and the next lower
    probability of any validation case, which gives the same validation results without
    hinging on one case's exact score.
    """
    if not 0.0 < min_sensitivity <= 1.0:
        raise ValueError(f"min_sensitivity must be in (0, 1], got {min_sensitivity}")
    y = as_binary(y_true)
    p = as_scores(y_prob, y.size, "y_prob")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0:
        return OperatingPoint(label, None, min_sensitivity, math.nan, math.nan, 0, n_neg, False)
    k = max(1, math.ceil(min_sensitivity * n_pos - 1e-9))  # tolerance: 0.95 * 20 is not exactly 19
    pos_desc = np.sort(p[y == 1])[::-1]
    s_k = float(pos_desc[k - 1])
    lower = p[p < s_k]
    t = _halfway(float(lower.max()), s_k) if lower.size else s_k
    called = p >= t
    sens = float(called[y == 1].mean())
    spec = float((~called[y == 0]).mean()) if n_neg else math.nan
    return OperatingPoint(label, t, min_sensitivity, sens, spec, n_pos, n_neg, True)


@dataclass(frozen=True)
class SpecificityPoint:
    """A subtype's specific threshold ("positive" rather than "possible"; `ichviewer.core.decisions`)."""

    label: str
    threshold: float | None  # None when the label has no negative validation case
    min_specificity: float
    sensitivity: float  # achieved on the validation data (nan without positives)
    specificity: float
    n_positive: int
    n_negative: int
    achieved: bool  # False when no threshold in [0, 1] meets the target (saturated negatives)

    def to_dict(self) -> dict:
        return asdict(self)


def choose_specificity_threshold(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    min_specificity: float = DEFAULT_MIN_SPECIFICITY,
    label: str = "",
    floor: float | None = None,
) -> SpecificityPoint:
    """The lowest threshold whose validation specificity is at least `min_specificity`, and not below `floor`.

    The lowest such threshold keeps the most sensitivity among those meeting the target: at most
    m = floor((1 - min_specificity) * n_negative) negatives may reach it, so it lies above the
    (m+1)-th highest negative score v, halfway to the next higher probability of any validation
    case (the same validation results without hinging on one case's exact score). `floor` (the
    label's sensitive threshold) keeps the specific tier inside the calls: a higher result is
    returned unchanged, a lower one is raised to `floor`.
    """
    if not 0.0 < min_specificity <= 1.0:
        raise ValueError(f"min_specificity must be in (0, 1], got {min_specificity}")
    y = as_binary(y_true)
    p = as_scores(y_prob, y.size, "y_prob")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_neg == 0:
        return SpecificityPoint(label, None, min_specificity, math.nan, math.nan, n_pos, 0, False)
    allowed = int(math.floor((1.0 - min_specificity) * n_neg + 1e-9))
    neg_desc = np.sort(p[y == 0])[::-1]
    v = float(neg_desc[allowed]) if allowed < n_neg else -math.inf
    achieved = True
    if v == -math.inf:
        t = 0.0
    else:
        higher = p[p > v]
        if higher.size:
            t = _halfway(v, float(higher.min()))
        elif v < 1.0:
            t = float(np.nextafter(v, 2.0))
        else:
            t, achieved = 1.0, False
    if floor is not None:
        t = max(t, float(floor))
    called = p >= t
    sens = float(called[y == 1].mean()) if n_pos else math.nan
    spec = float((~called[y == 0]).mean())
    return SpecificityPoint(label, t, min_specificity, sens, spec, n_pos, n_neg, achieved)


def choose_operating_points(
    y_true: Mapping[str, ArrayLike],
    y_prob: Mapping[str, ArrayLike],
    min_sensitivity: float = DEFAULT_MIN_SENSITIVITY,
) -> dict[str, OperatingPoint]:
    """`choose_sensitivity_threshold` for every label present in both mappings."""
    missing = set(y_true) ^ set(y_prob)
    if missing:
        raise ValueError(f"y_true and y_prob must have the same labels; differing: {sorted(missing)}")
    return {lab: choose_sensitivity_threshold(y_true[lab], y_prob[lab], min_sensitivity, lab) for lab in y_true}
