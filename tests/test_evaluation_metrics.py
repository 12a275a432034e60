"""Metrics of the evaluation room against scikit-learn, statsmodels and a published example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from evaluation_fixtures import hanley_mcneil_data
from sklearn import metrics as skm
from statsmodels.stats.proportion import proportion_confint

from ichviewer.evaluation import (
    auc_of_resamples,
    average_precision,
    bootstrap_ci,
    clopper_pearson,
    confusion_at,
    evaluate_cases,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)
from ichviewer.evaluation.metrics import bootstrap_indices

def random_cases(seed: int, n: int = 300, tied: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = rng.normal(size=n) + 1.2 * y
    if tied:
        s = np.round(s * 2) / 2  # about a dozen distinct values: heavy ties, like rating data
    return y, s


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_and_auc_match_scikit_learn(seed: int, tied: bool) -> None:
    y, s = random_cases(seed, tied=tied)
    ours = roc_curve(y, s)
    fpr, tpr, thr = skm.roc_curve(y, s)
    np.testing.assert_allclose(ours.fpr, fpr)
    np.testing.assert_allclose(ours.tpr, tpr)
    np.testing.assert_array_equal(ours.thresholds, thr)
    full = roc_curve(y, s, drop_intermediate=False)
    fpr_f, tpr_f, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(full.fpr, fpr_f)
    np.testing.assert_allclose(full.tpr, tpr_f)
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_and_average_precision_match_scikit_learn(seed: int, tied: bool) -> None:
    y, s = random_cases(seed, tied=tied)
    ours = precision_recall_curve(y, s)
    precision, recall, thr = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(ours.precision, precision)
    np.testing.assert_allclose(ours.recall, recall)
    np.testing.assert_array_equal(ours.thresholds, thr)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


def test_auc_of_all_tied_scores_is_one_half_and_one_class_is_undefined() -> None:
    assert roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
    assert math.isnan(average_precision([0, 0, 0], [0.2, 0.5, 0.9]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        roc_auc([0, 2, 1], [0.1, 0.2, 0.3])


def test_auc_reproduces_hanley_mcneil_1982_rating_example() -> None:
    # The paper's trapezoidal (Wilcoxon) area for these ratings is 0.893.
    y, s = hanley_mcneil_data()
    assert roc_auc(y, s) == pytest.approx(0.893, abs=0.0005)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (49, 50), (98, 100), (93, 100), (3, 17), (1, 1)])
def test_clopper_pearson_matches_statsmodels_beta_method(k: int, n: int) -> None:
    low, high = clopper_pearson(k, n)
    ref_low, ref_high = proportion_confint(k, n, alpha=0.05, method="beta")
    assert low == pytest.approx(ref_low, abs=1e-10)
    assert high == pytest.approx(ref_high, abs=1e-10)


def test_clopper_pearson_known_value_and_edges() -> None:
    # 0 events in n trials: the exact upper bound is 1 - (alpha/2)^(1/n) (the "rule of three" region).
    assert clopper_pearson(0, 30)[1] == pytest.approx(1 - 0.025 ** (1 / 30), rel=1e-9)
    assert clopper_pearson(30, 30) == (pytest.approx(0.025 ** (1 / 30), rel=1e-9), 1.0)
    assert all(math.isnan(v) for v in clopper_pearson(0, 0))
    with pytest.raises(ValueError):
        clopper_pearson(5, 3)


def test_confusion_at_threshold_counts_rates_and_exact_intervals() -> None:
    y = np.array([1] * 50 + [0] * 50)
    decision = np.array([True] * 49 + [False] + [True] * 5 + [False] * 45)
    c = confusion_at(y, decision)
    assert (c.tp, c.fn, c.fp, c.tn) == (49, 1, 5, 45)
    assert c.sensitivity.value == pytest.approx(0.98)
    assert c.specificity.value == pytest.approx(0.90)
    assert c.ppv.value == pytest.approx(49 / 54)
    assert c.npv.value == pytest.approx(45 / 46)
    ref = proportion_confint(49, 50, method="beta")
    assert (c.sensitivity.ci_low, c.sensitivity.ci_high) == pytest.approx(ref)
    # Unlike the Wald interval Lee et al. printed (95.3-100 % for 98/100), the exact one stays inside [0, 1]
    # and keeps a lower bound below the estimate.
    assert c.sensitivity.ci_low < 0.98 < c.sensitivity.ci_high <= 1.0


def test_bootstrap_auc_interval_is_seeded_reproducible_and_contains_the_estimate() -> None:
    y, s = random_cases(5, n=150)
    a = bootstrap_ci(auc_of_resamples, y, s, n_boot=2000, seed=7)
    b = bootstrap_ci(auc_of_resamples, y, s, n_boot=2000, seed=7)
    c = bootstrap_ci(auc_of_resamples, y, s, n_boot=2000, seed=8)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.value == pytest.approx(skm.roc_auc_score(y, s))
    assert a.ci_low < a.value < a.ci_high
    assert a.n_boot == 2000 and a.n_valid == 2000
    # Width is what the normal approximation predicts for this sample size, not a degenerate interval.
    assert 0.05 < a.ci_high - a.ci_low < 0.3


def test_vectorised_bootstrap_auc_equals_scikit_learn_on_every_resample() -> None:
    y, s = random_cases(3, n=60, tied=True)
    idx = next(bootstrap_indices(y.size, 40, seed=1))
    ours = auc_of_resamples(y, s, idx)
    ref = np.array([skm.roc_auc_score(y[row], s[row]) for row in idx])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    percentile = np.percentile(ref, [2.5, 97.5])
    got = bootstrap_ci(auc_of_resamples, y, s, n_boot=40, seed=1)
    assert (got.ci_low, got.ci_high) == pytest.approx(tuple(percentile))


def test_evaluate_cases_matches_scikit_learn_per_label_and_map() -> None:
    rng = np.random.default_rng(11)
    n = 120
    y_any = (rng.random(n) < 0.5).astype(int)
    y = {"ANY": y_any, "SDH": y_any & (rng.random(n) < 0.4), "SAH": y_any & (rng.random(n) < 0.4)}
    p = {k: 1 / (1 + np.exp(-(3 * v - 1.5 + rng.normal(0, 1.5, n)))) for k, v in y.items()}
    r = evaluate_cases(y, p, {"ANY": 0.5, "SDH": 0.4, "SAH": 0.4}, n_boot=300, seed=0)
    assert list(r["labels"]) == ["SDH", "SAH", "ANY"]  # project label order
    for lab in y:
        e = r["labels"][lab]
        assert e["auc"]["value"] == pytest.approx(skm.roc_auc_score(y[lab], p[lab]))
        assert e["average_precision"]["value"] == pytest.approx(skm.average_precision_score(y[lab], p[lab]))
        lo, hi = e["auc"]["ci"]
        assert lo < e["auc"]["value"] < hi
        own = p[lab] >= (0.5 if lab == "ANY" else 0.4)
        tn, fp, fn, tp = skm.confusion_matrix(y[lab], own).ravel()
        assert (e["operating_point_own_threshold"]["tp"], e["operating_point_own_threshold"]["fn"]) == (tp, fn)
        assert e["operating_point_own_threshold"]["specificity"]["value"] == pytest.approx(tn / (tn + fp))
        # The workstation's decision: a subtype is positive only in a study whose ANY is.
        called = own if lab == "ANY" else own & (p["ANY"] >= 0.5)
        tn, fp, fn, tp = skm.confusion_matrix(y[lab], called).ravel()
        assert (e["operating_point"]["tp"], e["operating_point"]["fn"]) == (tp, fn)
        assert e["operating_point"]["specificity"]["value"] == pytest.approx(tn / (tn + fp))
        if lab != "ANY":  # the two differ here, so the test tells the rules apart
            assert e["operating_point"]["tp"] < e["operating_point_own_threshold"]["tp"]
    assert r["settings"]["decision_rule"].startswith("ANY positive when")
    expected_map = np.mean([skm.average_precision_score(y[k], p[k]) for k in y])
    assert r["map"]["value"] == pytest.approx(expected_map)
    assert r["map_subtypes"]["labels"] == ["SDH", "SAH"]
