"""Case-level classification metrics: ROC, precision-recall, AUC, AP, binomial and bootstrap intervals.

Only numpy and scipy are used at run time. The ROC and precision-recall curves reproduce
scikit-learn's definitions exactly (including ties, which are one threshold, so a tied block
is a single diagonal step of the ROC curve), because that is what readers of other papers
compare against; the tests check this against scikit-learn itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Two-sided confidence level used throughout the evaluation room.
CI_LEVEL = 0.95


def as_binary(y_true: ArrayLike, name: str = "y_true") -> NDArray[np.int8]:
    """Return `y_true` as a 1-D int8 array of 0/1, raising ValueError on anything else."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.int8)
    if y.size and not np.all((y == 0) | (y == 1)):
        bad = y[~((y == 0) | (y == 1))][:5]
        raise ValueError(f"{name} must contain only 0 and 1, found {bad.tolist()}")
    return y.astype(np.int8)


def as_scores(y_score: ArrayLike, n: int, name: str = "y_score") -> NDArray[np.float64]:
    """Return `y_score` as a finite 1-D float array of length `n`."""
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] != n:
        raise ValueError(f"{name} must be one-dimensional with {n} values, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return s


def _binary_clf_curve(y: NDArray, s: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """True and false positives at every distinct score, highest score first (as scikit-learn)."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order].astype(np.float64)
    # A threshold sits at the last index of each run of equal scores: tied cases flip together.
    distinct = np.flatnonzero(np.diff(s_sorted))
    idx = np.r_[distinct, y_sorted.size - 1]
    tps = np.cumsum(y_sorted)[idx]
    fps = 1 + idx - tps
    return fps, tps, s_sorted[idx]


@dataclass(frozen=True)
class RocCurve:
    """Empirical ROC curve; a case is called positive when its score is >= the threshold."""

    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]
    thresholds: NDArray[np.float64]  # first entry is +inf (nothing called positive)


def roc_curve(y_true: ArrayLike, y_score: ArrayLike, drop_intermediate: bool = True) -> RocCurve:
    """ROC curve as scikit-learn's `roc_curve` (collinear points dropped by default)."""
    y = as_binary(y_true)
    s = as_scores(y_score, y.size)
    if y.size == 0:
        raise ValueError("cannot build a ROC curve from zero cases")
    fps, tps, thr = _binary_clf_curve(y, s)
    if drop_intermediate and fps.size > 2:
        keep = np.flatnonzero(
            np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        )
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    thr = np.r_[np.inf, thr]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thr)


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the empirical ROC curve (= Mann-Whitney U / (n1 n0), ties counted as 1/2).

    NaN when only one class is present, because the area is then undefined.
    """
    y = as_binary(y_true)
    s = as_scores(y_score, y.size)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    from scipy.stats import rankdata

    # Midranks make the rank-sum identical to the trapezoidal area with ties (Hanley & McNeil 1982).
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Precision-recall curve in scikit-learn's order: recall decreasing, ending at (recall 0, precision 1)."""

    precision: NDArray[np.float64]
    recall: NDArray[np.float64]
    thresholds: NDArray[np.float64]  # one shorter than precision and recall, increasing


def precision_recall_curve(y_true: ArrayLike, y_score: ArrayLike) -> PrecisionRecallCurve:
    """Precision-recall curve as scikit-learn's `precision_recall_curve` (no points dropped)."""
    y = as_binary(y_true)
    s = as_scores(y_score, y.size)
    if y.size == 0:
        raise ValueError("cannot build a precision-recall curve from zero cases")
    fps, tps, thr = _binary_clf_curve(y, s)
    ps = tps + fps
    precision = np.divide(tps, ps, out=np.zeros_like(tps), where=ps != 0)
    if tps[-1] == 0:
        recall = np.ones_like(tps)  # scikit-learn's convention when there are no positives
    else:
        recall = tps / tps[-1]
    rev = slice(None, None, -1)
    return PrecisionRecallCurve(
        precision=np.r_[precision[rev], 1.0],
        recall=np.r_[recall[rev], 0.0],
        thresholds=thr[rev],
    )


def average_precision(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Average precision, AP = sum_n (R_n - R_{n-1}) P_n (scikit-learn's step-wise definition).

    NaN when there are no positive cases (scikit-learn warns and returns a meaningless value).
    """
    y = as_binary(y_true)
    s = as_scores(y_score, y.size)
    if y.sum() == 0:
        return float("nan")
    fps, tps, _ = _binary_clf_curve(y, s)
    return _ap_from_counts(fps, tps)


def _ap_from_counts(fps: NDArray, tps: NDArray) -> float:
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    # Lee et al. 2019, Methods "Model selection": AP is the area under the precision-recall
    # curve, summed as rectangles of width dR at the precision reached there (no interpolation).
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(ap_by_label: dict[str, float]) -> float:
    """Mean of the defined (finite) per-label average precisions; NaN if none is defined."""
    values = [v for v in ap_by_label.values() if math.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


# --------------------------------------------------------------------------- proportions


@dataclass(frozen=True)
class Proportion:
    """A binomial proportion k/n with its exact (Clopper-Pearson) two-sided confidence interval."""

    k: int
    n: int
    value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | int | list[float]]:
        return {"k": self.k, "n": self.n, "value": self.value, "ci": [self.ci_low, self.ci_high]}


def clopper_pearson(k: int, n: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) binomial confidence interval for k successes in n trials.

    Computed from beta quantiles (scipy.stats.beta); identical to statsmodels'
    `proportion_confint(method="beta")`. (NaN, NaN) when n == 0.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import beta

    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def proportion(k: int, n: int, level: float = CI_LEVEL) -> Proportion:
    """k/n with its Clopper-Pearson interval; value NaN when n == 0."""
    k, n = int(k), int(n)
    low, high = clopper_pearson(k, n, level)
    return Proportion(k=k, n=n, value=(k / n if n else float("nan")), ci_low=low, ci_high=high)


@dataclass(frozen=True)
class ConfusionAtThreshold:
    """Counts and rates of binary decisions at an operating point, each with an exact CI."""

    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion

    def to_dict(self) -> dict:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "sensitivity": self.sensitivity.to_dict(),
            "specificity": self.specificity.to_dict(),
            "ppv": self.ppv.to_dict(),
            "npv": self.npv.to_dict(),
        }


def confusion_at(y_true: ArrayLike, decision: ArrayLike, level: float = CI_LEVEL) -> ConfusionAtThreshold:
    """Sensitivity, specificity, PPV and NPV of binary decisions, with Clopper-Pearson CIs.

    Lee et al. 2019 (Statistical analyses) report "binomial proportion CIs"; their figures
    (e.g. 98.0 %, 95.3-100 %) are Wald intervals. We use the exact interval instead because the
    Wald interval collapses to zero width at 100 % and overshoots 1 near it, which is exactly
    where a high-sensitivity operating point lives.
    """
    y = as_binary(y_true)
    d = np.asarray(decision).astype(bool)
    if d.shape != y.shape:
        raise ValueError(f"decision has shape {d.shape}, expected {y.shape}")
    pos = y == 1
    tp = int(np.sum(d & pos))
    fn = int(np.sum(~d & pos))
    fp = int(np.sum(d & ~pos))
    tn = int(np.sum(~d & ~pos))
    return ConfusionAtThreshold(
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=proportion(tp, tp + fn, level),
        specificity=proportion(tn, tn + fp, level),
        ppv=proportion(tp, tp + fp, level),
        npv=proportion(tn, tn + fn, level),
    )


# --------------------------------------------------------------------------- bootstrap

#: Resamples drawn per block, so memory stays bounded for large test sets.
_BOOT_BLOCK = 250


def bootstrap_indices(n: int, n_boot: int, seed: int) -> Iterator[NDArray[np.intp]]:
    """Yield blocks of case-level resampling indices (rows of n draws with replacement).

    The same (n, n_boot, seed) always yields the same resamples, so every label evaluated
    in one run sees the same resampled test sets (Lee et al. 2019, Statistical analyses).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        b = min(_BOOT_BLOCK, n_boot - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def auc_of_resamples(y: NDArray, s: NDArray, idx: NDArray[np.intp]) -> NDArray[np.float64]:
    """AUC of each resample (rows of `idx`); NaN for a resample lacking one of the classes."""
    from scipy.stats import rankdata

    yb = y[idx].astype(bool)
    sb = s[idx]
    n1 = yb.sum(axis=1)
    n0 = yb.shape[1] - n1
    ranks = rankdata(sb, axis=1)
    rank_sum = np.where(yb, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    auc[(n1 == 0) | (n0 == 0)] = np.nan
    return auc


def ap_of_resamples(y: NDArray, s: NDArray, idx: NDArray[np.intp]) -> NDArray[np.float64]:
    """Average precision of each resample (rows of `idx`); NaN for a resample without positives."""
    out = np.full(idx.shape[0], np.nan)
    for b, row in enumerate(idx):
        yb = y[row]
        if yb.sum() == 0:
            continue
        fps, tps, _ = _binary_clf_curve(yb, s[row])
        out[b] = _ap_from_counts(fps, tps)
    return out


def percentile_interval(values: NDArray, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval (2.5th-97.5th for 95 %), ignoring NaN resamples."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class BootstrapInterval:
    """Point estimate with its percentile bootstrap interval over case-level resamples."""

    value: float
    ci_low: float
    ci_high: float
    n_boot: int  # resamples drawn
    n_valid: int  # resamples where the statistic was defined (both classes present)

    def to_dict(self) -> dict:
        return {
            "value": self.value,
            "ci": [self.ci_low, self.ci_high],
            "n_boot": self.n_boot,
            "n_valid": self.n_valid,
        }


def bootstrap_ci(
    statistic: Callable[[NDArray, NDArray, NDArray[np.intp]], NDArray[np.float64]],
    y_true: ArrayLike,
    y_score: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = CI_LEVEL,
    point: float | None = None,
) -> BootstrapInterval:
    """Case-level percentile bootstrap interval of `statistic` (e.g. `auc_of_resamples`).

    Lee et al. 2019, Statistical analyses: n cases drawn with replacement, 2,000 times,
    interval between the 2.5th and 97.5th percentiles. Resamples where the statistic is
    undefined (one class only) are left out and counted in `n_valid`.
    """
    y = as_binary(y_true)
    s = as_scores(y_score, y.size)
    values = np.concatenate([statistic(y, s, idx) for idx in bootstrap_indices(y.size, n_boot, seed)])
    low, high = percentile_interval(values, level)
    if point is None:
        point = float(statistic(y, s, np.arange(y.size)[None, :])[0])
    return BootstrapInterval(point, low, high, n_boot, int(np.isfinite(values).sum()))

