"""Confidence-based triage as in DeepRadiologyNet: which studies can be auto-reported, at what miss rate.

Convention shared with inference (`ichviewer.inference.manifest.OperatingPoints` and
`ichviewer.inference.findings.triage`): on the case-level ANY probability p, a study is

* "confident negative" when p < negative_below (auto-reported as no haemorrhage),
* "confident positive" when p > positive_above (flagged first on the worklist),
* "refer" otherwise (read as usual),

with negative_below <= positive_above. The DeepRadiologyNet paper (Sections 5-6) measures the
miss rate *within* the auto-reported set: false negatives / all studies auto-reported, not /
all positives; "false positives are zero by construction" because only negatives are
auto-reported.

Thresholds chosen here sit halfway between the last study auto-reported and the next
probability up, so they do not hinge on one validation study's exact score.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ichviewer.evaluation.metrics import CI_LEVEL, as_binary, as_scores, clopper_pearson

TRIAGE_NEGATIVE = "confident negative"
TRIAGE_POSITIVE = "confident positive"
TRIAGE_REFER = "refer"
TRIAGE_CATEGORIES: tuple[str, ...] = (TRIAGE_NEGATIVE, TRIAGE_REFER, TRIAGE_POSITIVE)


@dataclass(frozen=True)
class TriageCurve:
    """Auto-reporting as confident negative at every distinct probability (ascending).

    At point i the studies with p < `negative_below[i]` are auto-reported: `n_auto[i]` of them,
    `n_missed[i]` of which have haemorrhage. `highest_included[i]` is the largest probability
    among them.
    """

    negative_below: NDArray[np.float64]
    highest_included: NDArray[np.float64]
    n_auto: NDArray[np.int64]
    n_missed: NDArray[np.int64]
    n_total: int

    @property
    def fraction(self) -> NDArray[np.float64]:
        """Fraction of all studies auto-reported."""
        return self.n_auto / self.n_total

    @property
    def miss_rate(self) -> NDArray[np.float64]:
        """False negatives / studies auto-reported (DeepRadiologyNet's miss rate)."""
        return self.n_missed / self.n_auto

    def to_dict(self) -> dict:
        return {
            "negative_below": self.negative_below.tolist(),
            "n_auto": self.n_auto.tolist(),
            "n_missed": self.n_missed.tolist(),
            "fraction_auto": self.fraction.tolist(),
            "miss_rate": self.miss_rate.tolist(),
            "n_total": self.n_total,
        }


def _cuts(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cut points just above each of the sorted distinct `values`: midway to the next one."""
    nxt = np.r_[values[1:], np.nextafter(values[-1], np.inf)]
    mid = values + (nxt - values) / 2.0
    # Halfway can round back onto the lower value when the two are adjacent floats.
    return np.where(mid > values, mid, nxt)


def triage_curve(y_any: ArrayLike, p_any: ArrayLike) -> TriageCurve:
    """The DeepRadiologyNet trade-off: fraction auto-reported negative against the miss rate among them."""
    y = as_binary(y_any, "y_any")
    p = as_scores(p_any, y.size, "p_any")
    if y.size == 0:
        raise ValueError("cannot build a triage curve from zero studies")
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    # Studies with equal probability are auto-reported together: one point per distinct value.
    last = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]
    return TriageCurve(
        negative_below=_cuts(ps[last]),
        highest_included=ps[last],
        n_auto=(last + 1).astype(np.int64),
        n_missed=np.cumsum(ys)[last].astype(np.int64),
        n_total=int(y.size),
    )


@dataclass(frozen=True)
class TriagePoint:
    """One triage operating point on the negative side, with the miss rate's exact CI."""

    target_miss_rate: float
    negative_below: float | None  # None when no non-empty auto-reported set meets the target
    n_auto: int
    n_missed: int
    fraction_auto: float
    miss_rate: float
    miss_rate_ci: tuple[float, float]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["miss_rate_ci"] = list(self.miss_rate_ci)
        return d


def triage_operating_point(
    curve: TriageCurve, target_miss_rate: float, use_upper_bound: bool = False, level: float = CI_LEVEL
) -> TriagePoint:
    """The threshold auto-reporting the most studies whose miss rate is <= the target.

    With `use_upper_bound` the exact (Clopper-Pearson) upper confidence bound of the miss rate
    must meet the target instead, which is what a small validation set warrants: 0 misses in
    50 studies is compatible with a true miss rate of 7 %.
    """
    if not 0.0 <= target_miss_rate < 1.0:
        raise ValueError(f"target miss rate must be in [0, 1), got {target_miss_rate}")
    if use_upper_bound:
        rate = np.array([clopper_pearson(int(k), int(n), level)[1] for k, n in zip(curve.n_missed, curve.n_auto)])
    else:
        rate = curve.miss_rate
    ok = np.flatnonzero(rate <= target_miss_rate + 1e-12)
    if ok.size == 0:
        return TriagePoint(target_miss_rate, None, 0, 0, 0.0, float("nan"), (float("nan"), float("nan")))
    i = int(ok[-1])  # n_auto increases along the curve, so the last admissible point reports most
    k, n = int(curve.n_missed[i]), int(curve.n_auto[i])
    return TriagePoint(
        target_miss_rate=target_miss_rate,
        negative_below=float(curve.negative_below[i]),
        n_auto=n,
        n_missed=k,
        fraction_auto=n / curve.n_total,
        miss_rate=k / n,
        miss_rate_ci=clopper_pearson(k, n, level),
    )


@dataclass(frozen=True)
class TriageThresholds:
    """Triage thresholds chosen on validation data, and what they achieved there.

    The field names are those of `ichviewer.inference.manifest.OperatingPoints`: p <
    negative_below -> confident negative; p > positive_above -> confident positive; otherwise
    refer. When a target cannot be met the side is switched off (negative_below = 0.0,
    positive_above = 1.0) and its `*_reached` flag is False.
    """

    negative_below: float
    positive_above: float
    target_miss_rate: float
    target_false_positive_rate: float
    negative_reached: bool
    positive_reached: bool
    fraction_negative: float
    miss_rate: float  # false negatives / confident negatives on the validation data (NaN if none)
    fraction_positive: float
    false_positive_rate: float  # no haemorrhage / confident positives on the validation data (NaN if none)

    def to_dict(self) -> dict:
        return asdict(self)

    def classify(self, p_any: ArrayLike) -> list[str]:
        """Triage categories for ANY probabilities under these thresholds."""
        return assign_triage(p_any, self.negative_below, self.positive_above)


def assign_triage(p_any: ArrayLike, negative_below: float, positive_above: float) -> list[str]:
    """Triage category of each ANY probability (see the module docstring for the convention)."""
    p = np.asarray(p_any, dtype=np.float64)
    out = []
    for v in p:
        if v < negative_below:
            out.append(TRIAGE_NEGATIVE)
        elif v > positive_above:
            out.append(TRIAGE_POSITIVE)
        else:
            out.append(TRIAGE_REFER)
    return out


def choose_triage_thresholds(
    y_any: ArrayLike,
    p_any: ArrayLike,
    target_miss_rate: float = 0.01,
    target_false_positive_rate: float | None = None,
    use_upper_bound: bool = False,
) -> TriageThresholds:
    """Choose confident-negative and confident-positive thresholds on validation data.

    `negative_below` auto-reports the most studies whose miss rate (false negatives /
    auto-reported) is at most `target_miss_rate`; `positive_above` symmetrically flags the most
    studies whose false-positive share (no haemorrhage / flagged) is at most
    `target_false_positive_rate` (default: the same as the miss-rate target). The positive side
    is chosen among studies not auto-reported negative, so no study is both.
    """
    y = as_binary(y_any, "y_any")
    p = as_scores(p_any, y.size, "p_any")
    fp_target = target_miss_rate if target_false_positive_rate is None else target_false_positive_rate
    neg = triage_operating_point(triage_curve(y, p), target_miss_rate, use_upper_bound)
    t_neg = 0.0 if neg.negative_below is None else neg.negative_below
    rest = p >= t_neg
    t_pos = 1.0
    if rest.any():
        # The positive side is the same curve on the mirrored problem: -p (exact in floating
        # point, unlike 1 - p) with labels flipped; -p < c means p > -c.
        pos = triage_operating_point(triage_curve(1 - y[rest], -p[rest]), fp_target, use_upper_bound)
        if pos.negative_below is not None:
            t_pos = max(-pos.negative_below, t_neg)
    is_neg = p < t_neg
    is_pos = p > t_pos
    n_neg, n_pos = int(is_neg.sum()), int(is_pos.sum())
    return TriageThresholds(
        negative_below=t_neg,
        positive_above=t_pos,
        target_miss_rate=target_miss_rate,
        target_false_positive_rate=fp_target,
        negative_reached=n_neg > 0,
        positive_reached=n_pos > 0,
        fraction_negative=n_neg / y.size,
        miss_rate=(float(y[is_neg].sum()) / n_neg) if n_neg else math.nan,
        fraction_positive=n_pos / y.size,
        false_positive_rate=(float((1 - y[is_pos]).sum()) / n_pos) if n_pos else math.nan,
    )
