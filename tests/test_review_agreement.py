"""Kappas and accuracy measures of the review room against statsmodels and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from ichviewer.review import cohen_kappa, diagnostic_metrics, fleiss_kappa, ratings_to_counts


@pytest.mark.parametrize("seed", range(8))
def test_fleiss_kappa_matches_statsmodels_on_random_ratings(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_subjects, n_raters, n_cat = rng.integers(5, 80), rng.integers(2, 9), rng.integers(2, 5)
    # Correlated raters so kappa is not always near 0.
    truth = rng.integers(0, n_cat, size=n_subjects)
    ratings = np.where(rng.random((n_subjects, n_raters)) < 0.7, truth[:, None],
                       rng.integers(0, n_cat, size=(n_subjects, n_raters)))
    counts, _ = aggregate_raters(ratings, n_cat=n_cat)
    assert fleiss_kappa(counts) == pytest.approx(sm_fleiss_kappa(counts, method="fleiss"), abs=1e-12)
    assert fleiss_kappa(ratings_to_counts(ratings, categories=range(n_cat))) == pytest.approx(
        sm_fleiss_kappa(counts, method="fleiss"), abs=1e-12)


def test_fleiss_kappa_six_experts_binary_like_kang() -> None:
    # Six raters, present/absent, as in Kang et al.'s panel.
    rng = np.random.default_rng(161)
    ratings = (rng.random((161, 6)) < 0.5).astype(int)
    counts, _ = aggregate_raters(ratings, n_cat=2)
    assert fleiss_kappa(counts) == pytest.approx(sm_fleiss_kappa(counts), abs=1e-12)


def test_fleiss_kappa_perfect_agreement_is_one_and_rejects_ragged_tables() -> None:
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number of raters"):
        fleiss_kappa([[3, 0], [1, 1]])
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))


@pytest.mark.parametrize("seed", range(8))
def test_cohen_kappa_matches_sklearn_on_random_ratings(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 300))
    cats = ["present", "absent", "uncertain"][: int(rng.integers(2, 4))]
    a = rng.choice(cats, size=n)
    b = np.where(rng.random(n) < 0.6, a, rng.choice(cats, size=n))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_cohen_kappa_known_value() -> None:
    # 2x2 table [[20, 5], [10, 15]]: p_o = 0.7, p_e = 0.5 -> kappa 0.4.
    a = [1] * 25 + [0] * 25
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa_score(a, b) == pytest.approx(0.4)


def test_diagnostic_metrics_counts_and_rates() -> None:
    m = diagnostic_metrics([1, 1, 1, 0, 0], [1, 0, 1, 0, 1])
    assert (m.tp, m.fn, m.tn, m.fp) == (2, 1, 1, 1)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.specificity == pytest.approx(1 / 2)
    assert m.accuracy == pytest.approx(3 / 5)
    assert diagnostic_metrics([0, 0], [0, 0]).sensitivity is None
