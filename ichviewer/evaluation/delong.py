"""DeLong's nonparametric covariance of correlated AUCs, by the fast midrank algorithm of Sun & Xu.

DeLong, DeLong & Clarke-Pearson (Biometrics 1988) estimate the covariance of AUCs measured on
the same cases from the "structural components" (placement values) of each case. Sun & Xu
(IEEE Signal Processing Letters 2014) compute them from midranks in O(N log N) instead of the
O(m n) pairwise kernel; the two are identical, which the tests check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ichviewer.evaluation.metrics import CI_LEVEL, as_binary, as_scores


@dataclass(frozen=True)
class DeLongComponents:
    """AUCs, structural components and covariance for K score sets on the same m+n cases."""

    aucs: NDArray[np.float64]  # (K,)
    v10: NDArray[np.float64]  # (K, m): per positive case, fraction of negatives scored lower (ties 1/2)
    v01: NDArray[np.float64]  # (K, n): per negative case, fraction of positives scored higher (ties 1/2)
    covariance: NDArray[np.float64]  # (K, K): S10/m + S01/n (DeLong 1988, Eq. 2)


def _midranks(x: NDArray) -> NDArray[np.float64]:
    from scipy.stats import rankdata

    return rankdata(x, method="average", axis=-1)


def delong_components(y_true: ArrayLike, *scores: ArrayLike) -> DeLongComponents:
    """Structural components and covariance of the AUCs of one or more score sets.

    Raises ValueError if there is not at least one positive and one negative case.
    """
    y = as_binary(y_true)
    if not scores:
        raise ValueError("give at least one set of scores")
    s = np.stack([as_scores(sc, y.size, f"scores[{i}]") for i, sc in enumerate(scores)])
    pos = y == 1
    m = int(pos.sum())
    n = y.size - m
    if m == 0 or n == 0:
        raise ValueError(f"DeLong needs positive and negative cases, got {m} positive and {n} negative")
    x = s[:, pos]  # positives, shape (K, m)
    z = s[:, ~pos]  # negatives, shape (K, n)
    # Sun & Xu 2014, Algorithm 1: midranks within positives (tx), within negatives (ty) and
    # over all cases (tz); a positive's rank among all minus its rank among positives is the
    # number of negatives below it (ties 1/2).
    tx = _midranks(x)
    ty = _midranks(z)
    tz = _midranks(np.concatenate([x, z], axis=1))
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((s.shape[0], s.shape[0]))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((s.shape[0], s.shape[0]))
    return DeLongComponents(aucs=aucs, v10=v10, v01=v01, covariance=s10 / m + s01 / n)


def delong_auc_ci(y_true: ArrayLike, y_score: ArrayLike, level: float = CI_LEVEL) -> tuple[float, float, float, float]:
    """AUC, its DeLong standard error and the Wald interval (clipped to [0, 1])."""
    from scipy.stats import norm

    c = delong_components(y_true, y_score)
    auc = float(c.aucs[0])
    se = math.sqrt(max(float(c.covariance[0, 0]), 0.0))
    zq = float(norm.ppf(0.5 + level / 2))
    return auc, se, max(0.0, auc - zq * se), min(1.0, auc + zq * se)


@dataclass(frozen=True)
class DeLongTest:
    """Two-sided test of H0: AUC_a == AUC_b for two score sets on the same cases."""

    auc_a: float
    auc_b: float
    difference: float  # auc_a - auc_b
    se_difference: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float
    correlation: float  # correlation of the two AUC estimates
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict:
        return {
            "auc_a": self.auc_a,
            "auc_b": self.auc_b,
            "difference": self.difference,
            "se_difference": self.se_difference,
            "ci": [self.ci_low, self.ci_high],
            "z": self.z,
            "p_value": self.p_value,
            "correlation": self.correlation,
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
        }


def delong_test(y_true: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, level: float = CI_LEVEL) -> DeLongTest:
    """DeLong's test for two correlated AUCs (e.g. two ensembles, or a model and a reader).

    z = (A_a - A_b) / sqrt(L S L'), L = (1, -1) (DeLong 1988, Eq. 4 with a single contrast);
    the p-value is two-sided from the standard normal. When the variance of the difference is
    zero (identical rankings) the p-value is 1 if the AUCs are equal and z is NaN.
    """
    from scipy.stats import norm

    y = as_binary(y_true)
    c = delong_components(y, scores_a, scores_b)
    a, b = float(c.aucs[0]), float(c.aucs[1])
    cov = c.covariance
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = a - b
    zq = float(norm.ppf(0.5 + level / 2))
    if var > 1e-300:
        se = math.sqrt(var)
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    else:
        se = 0.0
        z = float("nan")
        p = 1.0 if abs(diff) < 1e-12 else 0.0
    denom = math.sqrt(max(cov[0, 0], 0.0) * max(cov[1, 1], 0.0))
    corr = float(cov[0, 1] / denom) if denom > 0 else float("nan")
    m = int(y.sum())
    return DeLongTest(
        auc_a=a,
        auc_b=b,
        difference=diff,
        se_difference=se,
        ci_low=diff - zq * se,
        ci_high=diff + zq * se,
        z=z,
        p_value=p,
        correlation=corr,
        n_positive=m,
        n_negative=y.size - m,
    )
