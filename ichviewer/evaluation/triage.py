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

That share depends on how common haemorrhage is among the studies read. DeepRadiologyNet
measured it on a clinical stream; validation and test sets here are balanced (half the
studies bleed), where no useful threshold reaches a 1 % miss rate. With `prevalence` set, the
miss rate is the one the same threshold would give on studies with that prevalence (Bayes'
rule on the validation set's sensitivity and specificity below the threshold):

    miss rate(pi) = pi * FNR / (pi * FNR + (1 - pi) * TNR)

where FNR is the share of positives and TNR the share of negatives auto-reported. The
default clinical figure, `CLINICAL_ICH_PREVALENCE`, is about one emergency head CT in ten
(an assumption, not a measurement: the share is lower after minor head injury and higher on
stroke pathways); a site states its own.

Thresholds chosen here sit halfway between the last study auto-reported and the next
probability up, so they do not hinge on one validation study's exact score.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ichviewer.evaluation.metrics import CI_LEVEL, as_binary, as_scores, clopper_pearson

TRIAGE_NEGATIVE = "confident negative"
TRIAGE_POSITIVE = "confident positive"
TRIAGE_REFER = "refer"
TRIAGE_CATEGORIES: tuple[str, ...] = (TRIAGE_NEGATIVE, TRIAGE_REFER, TRIAGE_POSITIVE)
#: Share of studies with haemorrhage at which triage miss rates are stated by default (see above).
CLINICAL_ICH_PREVALENCE = 0.10


def check_prevalence(prevalence: float | None) -> float | None:
    """None (the data's own mix) or a prevalence strictly between 0 and 1."""
    if prevalence is None:
        return None
    v = float(prevalence)
    if not 0.0 < v < 1.0:
        raise ValueError(f"prevalence must be between 0 and 1 (exclusive), got {prevalence}")
    return v


def miss_rate_at_prevalence(
    n_missed: ArrayLike, n_auto: ArrayLike, n_positive: int, n_negative: int, prevalence: float
) -> NDArray[np.float64]:
    """Share of auto-reported studies with haemorrhage at `prevalence` (module docstring).

    `n_missed` positives and `n_auto - n_missed` negatives of `n_positive` and `n_negative`
    fall below the threshold. NaN where nothing would be auto-reported.
    """
    k = np.asarray(n_missed, dtype=np.float64)
    return _weighted_share(*_class_shares(k, np.asarray(n_auto, dtype=np.float64) - k, n_positive, n_negative), prevalence)


def _class_shares(k_positive: ArrayLike, k_negative: ArrayLike, n_positive: int, n_negative: int):
    """(k_positive / n_positive, k_negative / n_negative), 0 for a class with no studies."""
    kp, kn = np.asarray(k_positive, dtype=np.float64), np.asarray(k_negative, dtype=np.float64)
    return (kp / n_positive if n_positive else np.zeros_like(kp)), (kn / n_negative if n_negative else np.zeros_like(kn))


def _share_of_studies(fnr: ArrayLike, tnr: ArrayLike, prevalence: float) -> NDArray[np.float64]:
    """Share of all studies selected when `fnr` of positives and `tnr` of negatives are, at `prevalence`."""
    return prevalence * np.asarray(fnr, dtype=np.float64) + (1.0 - prevalence) * np.asarray(tnr, dtype=np.float64)


def _weighted_share(fnr: ArrayLike, tnr: ArrayLike, prevalence: float) -> NDArray[np.float64]:
    a = prevalence * np.asarray(fnr, dtype=np.float64)
    b = (1.0 - prevalence) * np.asarray(tnr, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a + b > 0, a / np.where(a + b > 0, a + b, 1.0), np.nan)


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
    n_positive: int

    @property
    def n_negative(self) -> int:
        return self.n_total - self.n_positive

    @property
    def fraction(self) -> NDArray[np.float64]:
        """Fraction of all studies auto-reported."""
        return self.n_auto / self.n_total

    @property
    def miss_rate(self) -> NDArray[np.float64]:
        """False negatives / studies auto-reported (DeepRadiologyNet's miss rate)."""
        return self.n_missed / self.n_auto

    def miss_rate_at(self, prevalence: float) -> NDArray[np.float64]:
        """The miss rate each point would have on studies with haemorrhage at `prevalence`."""
        return miss_rate_at_prevalence(self.n_missed, self.n_auto, self.n_positive, self.n_negative, prevalence)

    def fraction_at(self, prevalence: float) -> NDArray[np.float64]:
        """The share of studies each point would auto-report at `prevalence`."""
        fnr, tnr = _class_shares(self.n_missed, self.n_auto - self.n_missed, self.n_positive, self.n_negative)
        return _share_of_studies(fnr, tnr, prevalence)

    def to_dict(self) -> dict:
        return {
            "negative_below": self.negative_below.tolist(),
            "n_auto": self.n_auto.tolist(),
            "n_missed": self.n_missed.tolist(),
            "fraction_auto": self.fraction.tolist(),
            "miss_rate": self.miss_rate.tolist(),
            "n_total": self.n_total,
            "n_positive": self.n_positive,
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
        n_positive=int(ys.sum()),
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
    #: None: miss rate among these very studies; else at this prevalence (module docstring).
    prevalence: float | None = None
    #: Share of studies auto-reported at `prevalence` (None when prevalence is None).
    fraction_auto_at_prevalence: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["miss_rate_ci"] = list(self.miss_rate_ci)
        return d


def triage_operating_point(
    curve: TriageCurve,
    target_miss_rate: float,
    use_upper_bound: bool = False,
    level: float = CI_LEVEL,
    prevalence: float | None = None,
    highest_cut: float | None = None,
) -> TriagePoint:
    """The threshold auto-reporting the most studies whose miss rate is <= the target.

    With `use_upper_bound` the exact (Clopper-Pearson) upper confidence bound of the miss rate
    must meet the target instead, which is what a small validation set warrants: 0 misses in
    50 studies is compatible with a true miss rate of 7 %.

    With `prevalence` the miss rate is the one at that prevalence (module docstring); its
    interval, and the bound `use_upper_bound` tests, combine the exact bounds of the two
    shares it is made of (upper FNR with lower TNR, and the reverse), which is conservative.
    With `highest_cut` only thresholds at or below it are considered.
    """
    if not 0.0 <= target_miss_rate < 1.0:
        raise ValueError(f"target miss rate must be in [0, 1), got {target_miss_rate}")
    prevalence = check_prevalence(prevalence)
    if prevalence is None:
        if use_upper_bound:
            rate = np.array([clopper_pearson(int(k), int(n), level)[1] for k, n in zip(curve.n_missed, curve.n_auto)])
        else:
            rate = curve.miss_rate
    elif use_upper_bound:
        rate = np.array([_prevalence_interval(curve, i, prevalence, level)[1] for i in range(curve.n_auto.size)])
    else:
        rate = curve.miss_rate_at(prevalence)
    admissible = np.nan_to_num(rate, nan=np.inf) <= target_miss_rate + 1e-12
    if highest_cut is not None:
        admissible &= curve.negative_below <= highest_cut
    ok = np.flatnonzero(admissible)
    if ok.size == 0:
        return TriagePoint(
            target_miss_rate, None, 0, 0, 0.0, float("nan"), (float("nan"), float("nan")), prevalence,
            0.0 if prevalence is not None else None,
        )
    i = int(ok[-1])  # n_auto increases along the curve, so the last admissible point reports most
    k, n = int(curve.n_missed[i]), int(curve.n_auto[i])
    if prevalence is None:
        miss, ci, frac_prev = k / n, clopper_pearson(k, n, level), None
    else:
        miss = float(curve.miss_rate_at(prevalence)[i])
        ci = _prevalence_interval(curve, i, prevalence, level)
        frac_prev = float(curve.fraction_at(prevalence)[i])
    return TriagePoint(
        target_miss_rate=target_miss_rate,
        negative_below=float(curve.negative_below[i]),
        n_auto=n,
        n_missed=k,
        fraction_auto=n / curve.n_total,
        miss_rate=miss,
        miss_rate_ci=ci,
        prevalence=prevalence,
        fraction_auto_at_prevalence=frac_prev,
    )


def _prevalence_interval(curve: TriageCurve, i: int, prevalence: float, level: float) -> tuple[float, float]:
    """Miss-rate interval at `prevalence` from the exact intervals of point i's FNR and TNR."""
    k, n = int(curve.n_missed[i]), int(curve.n_auto[i])
    return share_at_prevalence(k, n - k, curve.n_positive, curve.n_negative, prevalence, level)[1]


def share_at_prevalence(
    k_positive: int, k_negative: int, n_positive: int, n_negative: int, prevalence: float, level: float = CI_LEVEL
) -> tuple[float, tuple[float, float]]:
    """Share of a selected group that has haemorrhage, were the studies `prevalence` positive.

    `k_positive` of `n_positive` positives and `k_negative` of `n_negative` negatives are in the
    group (e.g. auto-reported negative). Returns the share and an interval combining the exact
    (Clopper-Pearson) bounds of the two proportions, each at `level`: conservative.
    """
    fnr = clopper_pearson(k_positive, n_positive, level) if n_positive else (0.0, 0.0)
    tnr = clopper_pearson(k_negative, n_negative, level) if n_negative else (0.0, 0.0)
    value = _weighted_share(*_class_shares(k_positive, k_negative, n_positive, n_negative), prevalence)
    lo = _weighted_share(fnr[0], tnr[1], prevalence)
    hi = _weighted_share(fnr[1], tnr[0], prevalence)
    return float(value), (float(lo), float(hi))


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
    #: None: the two rates above are among these very studies; else at this prevalence of haemorrhage.
    prevalence: float | None = None
    #: Shares of studies triaged negative / positive at `prevalence` (None when prevalence is None).
    fraction_negative_at_prevalence: float | None = None
    fraction_positive_at_prevalence: float | None = None

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
    prevalence: float | None = None,
    decision_threshold: float | None = None,
) -> TriageThresholds:
    """Choose confident-negative and confident-positive thresholds on validation data.

    `negative_below` auto-reports the most studies whose miss rate (false negatives /
    auto-reported) is at most `target_miss_rate`; `positive_above` symmetrically flags the most
    studies whose false-positive share (no haemorrhage / flagged) is at most
    `target_false_positive_rate` (default: the same as the miss-rate target). The positive side
    is chosen among studies not auto-reported negative, so no study is both. With `prevalence`
    both shares are those at that prevalence of haemorrhage (module docstring), not among the
    validation studies themselves. With `decision_threshold` (the ANY operating point: positive
    when p >= it) no study at or above it is auto-reported negative and none below it is
    flagged confident positive, so triage never contradicts the ANY call.
    """
    y = as_binary(y_any, "y_any")
    p = as_scores(p_any, y.size, "p_any")
    prevalence = check_prevalence(prevalence)
    fp_target = target_miss_rate if target_false_positive_rate is None else target_false_positive_rate
    neg = triage_operating_point(
        triage_curve(y, p), target_miss_rate, use_upper_bound, prevalence=prevalence, highest_cut=decision_threshold
    )
    t_neg = 0.0 if neg.negative_below is None else neg.negative_below
    rest = p >= t_neg
    t_pos = 1.0
    if rest.any():
        # The positive side is the same curve on the mirrored problem: -p (exact in floating
        # point, unlike 1 - p) with labels flipped (so the prevalence too); -p < c means p > -c.
        # Its shares are of all studies of each class, not only of those left after the
        # negative side, so the curve over the rest keeps the whole set's totals.
        mirrored = replace(
            triage_curve(1 - y[rest], -p[rest]), n_total=int(y.size), n_positive=int(y.size - y.sum())
        )
        pos = triage_operating_point(
            mirrored, fp_target, use_upper_bound, prevalence=None if prevalence is None else 1.0 - prevalence,
            highest_cut=None if decision_threshold is None else -decision_threshold,
        )
        if pos.negative_below is not None:
            t_pos = max(-pos.negative_below, t_neg)
    is_neg = p < t_neg
    is_pos = p > t_pos
    n_neg, n_pos = int(is_neg.sum()), int(is_pos.sum())
    n_y = int(y.sum())
    out = dict(
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
    if prevalence is not None:
        n0 = y.size - n_y
        fnr, tnr = _class_shares(y[is_neg].sum(), (1 - y[is_neg]).sum(), n_y, n0)
        tpr, fpr = _class_shares(y[is_pos].sum(), (1 - y[is_pos]).sum(), n_y, n0)
        out.update(
            miss_rate=float(_weighted_share(fnr, tnr, prevalence)),
            false_positive_rate=float(_weighted_share(fpr, tpr, 1.0 - prevalence)),
            prevalence=prevalence,
            fraction_negative_at_prevalence=float(_share_of_studies(fnr, tnr, prevalence)),
            fraction_positive_at_prevalence=float(_share_of_studies(tpr, fpr, prevalence)),
        )
    return TriageThresholds(**out)
