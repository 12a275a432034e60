"""DeLong's test: a hand-worked example, a published one, and the slow pairwise definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from evaluation_fixtures import hanley_mcneil_data
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from ichviewer.evaluation import delong_auc_ci, delong_components, delong_test


def slow_delong(y: np.ndarray, *scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. 1988 straight from the definition: the m x n kernel psi(X_i, Y_j)."""
    pos, neg = y == 1, y == 0
    m, n = pos.sum(), neg.sum()
    v10, v01, aucs = [], [], []
    for s in scores:
        x, z = s[pos][:, None], s[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))  # structural component of each positive
        v01.append(psi.mean(axis=0))  # structural component of each negative
    v10, v01 = np.array(v10), np.array(v01)
    k = len(scores)
    s10 = np.array([[np.sum((v10[a] - aucs[a]) * (v10[b] - aucs[b])) / (m - 1) for b in range(k)] for a in range(k)])
    s01 = np.array([[np.sum((v01[a] - aucs[a]) * (v01[b] - aucs[b])) / (n - 1) for b in range(k)] for a in range(k)])
    return np.array(aucs), s10 / m + s01 / n


def test_hand_worked_example() -> None:
    # Three positives and three negatives, two models, one tie (A: 0.4 vs 0.4).
    # Model A: positives 0.9, 0.6, 0.4; negatives 0.7, 0.4, 0.2
    #   V10 = (1, 2/3, 1/2), V01 = (1/3, 5/6, 1), AUC = 13/18
    # Model B: positives 0.8, 0.7, 0.3; negatives 0.5, 0.6, 0.1
    #   V10 = (1, 1, 1/3),   V01 = (2/3, 2/3, 1), AUC = 14/18
    # S10 = [[7, 8], [8, 16]] / 108, S01 = [[13, 5], [5, 4]] / 108  (divisor m - 1 = n - 1 = 2)
    # S = S10/3 + S01/3 = [[20, 13], [13, 20]] / 324
    # var(A - B) = (20 + 20 - 26) / 324 = 14/324;  z = (-1/18) / (sqrt(14)/18) = -1/sqrt(14)
    y = np.array([1, 1, 1, 0, 0, 0])
    a = np.array([0.9, 0.6, 0.4, 0.7, 0.4, 0.2])
    b = np.array([0.8, 0.7, 0.3, 0.5, 0.6, 0.1])
    c = delong_components(y, a, b)
    np.testing.assert_allclose(c.aucs, [13 / 18, 14 / 18])
    np.testing.assert_allclose(c.v10, [[1, 2 / 3, 1 / 2], [1, 1, 1 / 3]])
    np.testing.assert_allclose(c.v01, [[1 / 3, 5 / 6, 1], [2 / 3, 2 / 3, 1]])
    np.testing.assert_allclose(c.covariance, np.array([[20, 13], [13, 20]]) / 324)
    t = delong_test(y, a, b)
    assert t.difference == pytest.approx(-1 / 18)
    assert t.se_difference == pytest.approx(math.sqrt(14) / 18)
    assert t.z == pytest.approx(-1 / math.sqrt(14))
    assert t.p_value == pytest.approx(2 * norm.sf(1 / math.sqrt(14)))
    assert t.p_value == pytest.approx(0.7893, abs=1e-4)
    assert t.correlation == pytest.approx(13 / 20)


def test_hanley_mcneil_1982_example_single_auc() -> None:
    # Hanley & McNeil report A = 0.893 with standard error 0.032 from their exponential
    # approximation; DeLong's nonparametric estimate on the same ratings agrees to within 0.002.
    y, s = hanley_mcneil_data()
    auc, se, low, high = delong_auc_ci(y, s)
    assert auc == pytest.approx(0.893, abs=0.0005)
    assert se == pytest.approx(0.032, abs=0.002)
    assert low == pytest.approx(auc - 1.959964 * se) and high == pytest.approx(auc + 1.959964 * se)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fast_algorithm_equals_slow_pairwise_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 150
    y = (rng.random(n) < 0.35).astype(int)
    a = rng.normal(size=n) + 1.0 * y
    b = 0.6 * a + rng.normal(size=n) * 0.8 + 0.4 * y
    if seed % 2:
        a, b = np.round(a, 1), np.round(b, 1)  # ties on odd seeds
    c = delong_components(y, a, b)
    aucs, cov = slow_delong(y, a, b)
    np.testing.assert_allclose(c.aucs, aucs, atol=1e-12)
    np.testing.assert_allclose(c.covariance, cov, atol=1e-12)
    assert c.aucs[0] == pytest.approx(roc_auc_score(y, a))


def test_identical_models_are_not_different_and_a_clearly_better_one_is() -> None:
    rng = np.random.default_rng(4)
    n = 400
    y = (rng.random(n) < 0.5).astype(int)
    good = y * 2.0 + rng.normal(size=n)
    poor = y * 0.3 + rng.normal(size=n)
    same = delong_test(y, good, good)
    assert same.p_value == 1.0 and same.difference == 0.0
    better = delong_test(y, good, poor)
    assert better.difference > 0 and better.p_value < 1e-6
    assert better.ci_low > 0
    with pytest.raises(ValueError, match="positive and negative"):
        delong_test(np.ones(5, int), np.arange(5.0), np.arange(5.0))
