"""Triage curve and operating points chosen on validation data, worked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ichviewer.evaluation import (
    assign_triage,
    choose_operating_points,
    choose_sensitivity_threshold,
    choose_triage_thresholds,
    evaluate_cases,
    triage_curve,
    triage_operating_point,
)

# Six studies, ANY probability and truth. Auto-reporting everything below a threshold, which
# sits halfway to the next probability up (p < 0.15 takes the same studies as p <= 0.1):
#   p < 0.15: 1 study,  0 bleeds -> fraction 1/6, miss rate 0
#   p < 0.25: 3 studies, 1 bleed -> fraction 3/6, miss rate 1/3   (the two 0.2s go together)
#   p < 0.40: 4 studies, 1 bleed -> fraction 4/6, miss rate 1/4   (miss rate falls again)
#   p < 0.65: 5 studies, 2 bleeds -> 5/6, 2/5
#   p < 0.8+: 6 studies, 3 bleeds -> 1, 1/2
P = np.array([0.1, 0.2, 0.2, 0.3, 0.5, 0.8])
Y = np.array([0, 0, 1, 0, 1, 1])


def test_triage_curve_by_hand() -> None:
    c = triage_curve(Y, P)
    np.testing.assert_allclose(c.negative_below[:4], [0.15, 0.25, 0.40, 0.65])
    assert c.negative_below[4] > 0.8 and c.negative_below[4] == pytest.approx(0.8)
    np.testing.assert_array_equal(c.highest_included, [0.1, 0.2, 0.3, 0.5, 0.8])
    np.testing.assert_array_equal(c.n_auto, [1, 3, 4, 5, 6])
    np.testing.assert_array_equal(c.n_missed, [0, 1, 1, 2, 3])
    np.testing.assert_allclose(c.fraction, [1 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    np.testing.assert_allclose(c.miss_rate, [0, 1 / 3, 1 / 4, 2 / 5, 1 / 2])
    # The curve is independent of the order the studies come in.
    order = np.array([5, 2, 0, 4, 1, 3])
    np.testing.assert_array_equal(triage_curve(Y[order], P[order]).n_missed, c.n_missed)


def test_triage_operating_point_reports_the_most_studies_within_the_target() -> None:
    c = triage_curve(Y, P)
    zero = triage_operating_point(c, 0.0)
    assert (zero.negative_below, zero.n_auto, zero.n_missed) == (pytest.approx(0.15), 1, 0)
    # p < 0.25 misses 1/3 > 0.30, but p < 0.4 misses only 1/4: the larger auto-reported set qualifies.
    thirty = triage_operating_point(c, 0.30)
    assert (thirty.negative_below, thirty.n_auto, thirty.n_missed) == (pytest.approx(0.4), 4, 1)
    assert thirty.fraction_auto == pytest.approx(4 / 6)
    assert thirty.miss_rate_ci[0] < 0.25 < thirty.miss_rate_ci[1]
    # With the exact upper bound required, one study with no miss is far from proving 0 %.
    strict = triage_operating_point(c, 0.30, use_upper_bound=True)
    assert strict.negative_below is None and strict.n_auto == 0
    # If the lowest-scored study bleeds, no threshold reaches a zero miss rate.
    none = triage_operating_point(triage_curve([1, 0, 0], [0.1, 0.2, 0.3]), 0.0)
    assert none.negative_below is None and math.isnan(none.miss_rate)


def test_choose_triage_thresholds_and_assign_categories() -> None:
    t = choose_triage_thresholds(Y, P, target_miss_rate=0.0)
    # Negative side: only the 0.1 study. Positive side: 0.5 and 0.8 are two bleeds and no normal;
    # going down to 0.3 would flag a normal. Cuts lie halfway to the neighbouring probability.
    assert t.negative_below == pytest.approx(0.15) and t.positive_above == pytest.approx(0.4)
    assert t.negative_reached and t.positive_reached
    assert t.fraction_negative == pytest.approx(1 / 6) and t.miss_rate == 0.0
    assert t.fraction_positive == pytest.approx(2 / 6) and t.false_positive_rate == 0.0
    assert t.classify(P) == [
        "confident negative",
        "refer",
        "refer",
        "refer",
        "confident positive",
        "confident positive",
    ]
    # Same rule as inference: strictly below / strictly above; a switched-off side never fires.
    assert assign_triage([0.0, 0.15, 0.4, 1.0], 0.15, 0.4) == ["confident negative", "refer", "refer", "confident positive"]
    assert assign_triage([0.0, 1.0], 0.0, 1.0) == ["refer", "refer"]


def test_loose_targets_never_make_a_study_both_negative_and_positive() -> None:
    t = choose_triage_thresholds(Y, P, target_miss_rate=0.5, target_false_positive_rate=0.5)
    assert t.fraction_negative == 1.0  # everything is "negative" at a 50 % miss rate
    assert t.positive_above >= t.negative_below and not t.positive_reached
    cats = t.classify(P)
    assert cats.count("confident negative") == 6
    # Unreachable targets switch a side off instead of inventing a threshold.
    # The lowest-scored study bleeds (no miss-free negative set); the highest is a bleed, the next is not.
    off = choose_triage_thresholds([1, 0, 1, 0], [0.1, 0.2, 0.3, 0.25], target_miss_rate=0.0, target_false_positive_rate=0.0)
    assert (off.negative_below, off.negative_reached) == (0.0, False)
    assert 0.25 < off.positive_above < 0.3 and off.fraction_positive == 0.25 and off.false_positive_rate == 0.0


def test_sensitivity_threshold_reaches_the_target_with_best_specificity() -> None:
    # 20 positives scored 0.31..0.50, 10 negatives scored 0.05..0.50 (one tie with a positive).
    pos = np.linspace(0.50, 0.31, 20)
    neg = np.r_[np.linspace(0.05, 0.30, 9), 0.50]
    y = np.r_[np.ones(20), np.zeros(10)].astype(int)
    p = np.r_[pos, neg]
    op = choose_sensitivity_threshold(y, p, 0.95, label="ANY")
    # 0.95 * 20 = 19 positives must be caught: the threshold lies between the 19th highest
    # positive score and the next score below it (the 20th positive, 0.31).
    assert op.threshold == pytest.approx((pos[18] + pos[19]) / 2)
    assert op.sensitivity == pytest.approx(19 / 20)
    assert op.specificity == pytest.approx(9 / 10)
    assert op.achieved
    # Any threshold above the 19th positive misses the target.
    assert np.mean(p[y == 1] >= np.nextafter(pos[18], 1)) < 0.95


def test_operating_points_for_every_label_and_unreachable_label() -> None:
    y = {"ANY": np.array([1, 1, 0, 0]), "EDH": np.array([0, 0, 0, 0])}
    p = {"ANY": np.array([0.9, 0.6, 0.7, 0.1]), "EDH": np.array([0.1, 0.2, 0.3, 0.4])}
    ops = choose_operating_points(y, p, 0.95)
    # Both bleeds caught: between the lower bleed (0.6) and the next score down (0.1).
    assert ops["ANY"].threshold == pytest.approx(0.35)
    assert ops["ANY"].sensitivity == 1.0 and ops["ANY"].specificity == 0.5
    assert ops["EDH"].threshold is None and not ops["EDH"].achieved
    # The chosen thresholds feed straight back into the evaluation.
    r = evaluate_cases({"ANY": y["ANY"]}, {"ANY": p["ANY"]}, {"ANY": ops["ANY"].threshold}, n_boot=50)
    assert r["labels"]["ANY"]["operating_point"]["sensitivity"]["value"] == 1.0


def test_evaluate_cases_size_mimic_and_observed_triage_tables() -> None:
    y_any = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p_any = np.array([0.2, 0.9, 0.6, 0.99, 0.8, 0.7, 0.1, 0.02, 0.6, 0.3, 0.01])
    volume = np.array([0.05, 0.08, 3.0, 40.0, np.nan, np.nan, 0, 0, 0, 0, 0])
    mimic = [None, None, None, None, None, "calcification", "calcification", "metal", "beam hardening", "", None]
    triage = assign_triage(p_any, 0.05, 0.95)
    r = evaluate_cases({"ANY": y_any}, {"ANY": p_any}, {"ANY": 0.5}, volume_ml=volume, mimic=mimic,
                       n_boot=100, triage=triage)
    bins = {b["name"]: b["sensitivity"] for b in r["by_size"]["bins"]}
    assert (bins["punctate"]["k"], bins["punctate"]["n"]) == (1, 2)  # 0.2 missed, 0.9 found
    assert (bins["small"]["k"], bins["small"]["n"]) == (1, 1)
    assert (bins["larger"]["k"], bins["larger"]["n"]) == (1, 1)
    assert r["by_size"]["n_positive_unknown_volume"] == 1
    from sklearn.metrics import roc_auc_score

    neg = y_any == 0
    aucs = {b["name"]: b["auc_vs_negatives"]["value"] for b in r["by_size"]["bins"]}
    punct = (volume <= 0.1) & (y_any == 1)
    assert aucs["punctate"] == pytest.approx(roc_auc_score(y_any[punct | neg], p_any[punct | neg]))
    assert aucs["larger"] == pytest.approx(1.0)
    without = r["by_size"]["auc_without_punctate"]
    assert without["n_positive"] == 3  # the unknown-volume positive stays in
    assert without["value"] == pytest.approx(roc_auc_score(y_any[~punct], p_any[~punct]))
    assert without["ci"][0] <= without["value"] <= without["ci"][1]
    kinds = {k["mimic"]: k["false_positive_rate"] for k in r["mimics"]["kinds"]}
    assert (kinds["calcification"]["k"], kinds["calcification"]["n"]) == (1, 2)
    assert (kinds["metal"]["k"], kinds["metal"]["n"]) == (0, 1)
    assert (kinds["beam-hardening"]["k"], kinds["beam-hardening"]["n"]) == (1, 1)
    assert (kinds["none"]["k"], kinds["none"]["n"]) == (0, 2)
    obs = r["triage"]["observed"]
    assert obs["counts"] == {"confident negative": 2, "refer": 8, "confident positive": 1}
    assert obs["miss_rate"]["k"] == 0 and obs["false_positive_rate"]["k"] == 0
    with pytest.raises(ValueError, match="unknown mimic"):
        evaluate_cases({"ANY": y_any}, {"ANY": p_any}, {"ANY": 0.5}, mimic=["blood"] * 11, n_boot=10)


def test_headline_auc_is_the_share_weighted_mean_of_the_size_bins_and_the_card_says_so() -> None:
    from sklearn.metrics import roc_auc_score

    from ichviewer.evaluation.summary import size_decomposition_text

    rng = np.random.default_rng(3)
    y_any = np.r_[np.ones(40, int), np.zeros(60, int)]
    volume = np.r_[np.exp(rng.uniform(np.log(0.02), np.log(60), 40)), np.zeros(60)]
    p_any = np.clip(rng.normal(0.3, 0.2, 100) + 0.4 * y_any * (volume > 0.1), 0, 1)
    r = evaluate_cases({"ANY": y_any}, {"ANY": p_any}, {"ANY": 0.5}, volume_ml=volume, n_boot=20)
    bins = r["by_size"]["bins"]
    assert sum(b["share_of_positives"] for b in bins) == pytest.approx(1.0)
    weighted = sum(b["share_of_positives"] * b["auc_vs_negatives"]["value"] for b in bins)
    assert weighted == pytest.approx(roc_auc_score(y_any, p_any))
    text = size_decomposition_text(bins)
    punct = bins[0]
    ceiling = 1 - punct["share_of_positives"] * (1 - punct["auc_vs_negatives"]["value"])
    assert f"= {weighted:.3f}" in text and f"at {ceiling:.3f}" in text
    assert size_decomposition_text([]) == ""


# --- miss rates at a stated prevalence (DeepRadiologyNet measured them on a clinical stream) ---


def test_miss_rate_at_prevalence_by_hand() -> None:
    # Y, P above: 3 bleeds, 3 not. Below 0.25: 1 of 3 bleeds (FNR 1/3) and 2 of 3 others (TNR 2/3).
    # At 10 % prevalence: 0.1 * 1/3 / (0.1 * 1/3 + 0.9 * 2/3) = 1/19.
    c = triage_curve(Y, P)
    assert (c.n_positive, c.n_negative) == (3, 3)
    assert c.miss_rate_at(0.1)[1] == pytest.approx(1 / 19)
    assert c.fraction_at(0.1)[1] == pytest.approx(0.1 / 3 + 0.9 * 2 / 3)
    # At the data's own prevalence the weighted rate is the plain share among the studies.
    np.testing.assert_allclose(c.miss_rate_at(0.5), c.miss_rate)
    np.testing.assert_allclose(c.fraction_at(0.5), c.fraction)


def test_prevalence_weighting_equals_resampling_to_that_prevalence() -> None:
    # Repeating each negative 9 times turns a balanced set into a 10 % one: the plain miss rate
    # of the repeated set must equal the weighted one of the balanced set, at every threshold.
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(40), np.zeros(40)].astype(int)
    p = np.r_[rng.uniform(0.2, 1.0, 40), rng.uniform(0.0, 0.8, 40)]
    balanced = triage_curve(y, p)
    y9 = np.r_[np.ones(40), np.zeros(360)].astype(int)
    p9 = np.r_[p[:40], np.repeat(p[40:], 9)]
    repeated = triage_curve(y9, p9)
    np.testing.assert_allclose(balanced.miss_rate_at(0.1), repeated.miss_rate)
    np.testing.assert_allclose(balanced.fraction_at(0.1), repeated.fraction)
    t = choose_triage_thresholds(y, p, 0.02, 0.05, prevalence=0.1)
    t9 = choose_triage_thresholds(y9, p9, 0.02, 0.05)
    assert (t.negative_below, t.positive_above) == (t9.negative_below, t9.positive_above)
    assert t.miss_rate == pytest.approx(t9.miss_rate) and t.false_positive_rate == pytest.approx(t9.false_positive_rate)
    assert t.fraction_negative_at_prevalence == pytest.approx(t9.fraction_negative)
    assert t.fraction_positive_at_prevalence == pytest.approx(t9.fraction_positive)


def test_a_balanced_set_whose_lowest_study_bleeds_can_still_triage_at_clinical_prevalence() -> None:
    # 50 bleeds and 50 normals; the lowest score is a bleed, then 20 normals. Among the studies
    # themselves every negative set has a miss; at 10 % prevalence 1 miss in 50 bleeds against 20
    # of 50 normals is 0.1 * 0.02 / (0.1 * 0.02 + 0.9 * 0.4) = 0.55 %, under a 1 % target.
    y = np.r_[1, np.zeros(20), np.ones(49), np.zeros(30)].astype(int)
    p = np.linspace(0.01, 0.99, 100)
    off = choose_triage_thresholds(y, p, 0.01)
    assert not off.negative_reached and off.prevalence is None
    on = choose_triage_thresholds(y, p, 0.01, prevalence=0.1)
    assert on.negative_reached and on.prevalence == 0.1
    assert on.fraction_negative == pytest.approx(21 / 100)
    assert on.miss_rate == pytest.approx(0.1 * 0.02 / (0.1 * 0.02 + 0.9 * 0.4))
    point = triage_operating_point(triage_curve(y, p), 0.01, prevalence=0.1)
    lo, hi = point.miss_rate_ci
    assert lo <= point.miss_rate <= hi and point.fraction_auto_at_prevalence == pytest.approx(0.1 * 0.02 + 0.9 * 0.4)
    # The exact upper bound (1 of 50 bleeds can be 10 % of them) does not meet 1 %: switched off.
    strict = triage_operating_point(triage_curve(y, p), 0.01, use_upper_bound=True, prevalence=0.1)
    assert strict.negative_below is None


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_prevalence_must_lie_strictly_between_0_and_1(bad: float) -> None:
    with pytest.raises(ValueError, match="prevalence"):
        choose_triage_thresholds(Y, P, 0.01, prevalence=bad)


def test_evaluate_reports_triage_at_prevalence_and_the_manifest_keeps_it(tmp_path) -> None:
    from ichviewer.inference.manifest import ManifestError, OperatingPoints

    # 4 bleeds, 6 not; the inferred triage called 3 negative (1 bleed among them) and 2 positive (1 not).
    y = np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 0])
    p = np.array([0.1, 0.05, 0.02, 0.5, 0.97, 0.4, 0.6, 0.3, 0.96, 0.45])
    tri = assign_triage(p, 0.15, 0.95)
    r = evaluate_cases({"ANY": y}, {"ANY": p}, {"ANY": 0.5}, n_boot=20, triage=tri, triage_prevalence=0.1)
    t = r["triage"]
    assert t["prevalence"] == 0.1 and len(t["operating_points_at_prevalence"]) == len(t["operating_points"])
    obs = t["observed"]
    # FNR 1/4, TNR 2/6 -> 0.1 * 0.25 / (0.025 + 0.9 / 3) = 0.0769...; FPR 1/6 against TPR 1/4 at 0.9.
    assert obs["miss_rate_at_prevalence"]["value"] == pytest.approx(0.025 / (0.025 + 0.3))
    assert obs["false_positive_rate_at_prevalence"]["value"] == pytest.approx(0.15 / (0.15 + 0.025))
    lo, hi = obs["miss_rate_at_prevalence"]["ci"]
    assert lo <= obs["miss_rate_at_prevalence"]["value"] <= hi
    assert evaluate_cases({"ANY": y}, {"ANY": p}, {"ANY": 0.5}, n_boot=20, triage=tri)["triage"]["prevalence"] is None
    # The manifest records the prevalence its triage rates were stated at, and refuses nonsense.
    ops = OperatingPoints(negative_below=0.2, positive_above=0.9, triage_prevalence=0.1)
    assert ops.to_dict()["triage"]["prevalence"] == 0.1
    assert "prevalence" not in OperatingPoints().to_dict()["triage"]
    with pytest.raises(ValueError, match="prevalence"):
        OperatingPoints(triage_prevalence=1.0)
    from inference_fixtures import add_member, write_manifest

    from ichviewer.inference.manifest import load_manifest

    entries = [add_member(tmp_path, "alpha", seed=1)[0]]
    path = write_manifest(tmp_path, entries)
    data = json.loads(path.read_text())
    data["operating_points"]["triage"]["prevalence"] = 0.1
    path.write_text(json.dumps(data))
    assert load_manifest(path).operating_points.triage_prevalence == 0.1
    data["operating_points"]["triage"]["prevalence"] = 0.0
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="prevalence"):
        load_manifest(path)


def test_triage_prevalence_on_the_command_lines() -> None:
    import argparse

    from ichviewer.commands.evaluate import prevalence_argument, triage_summary_line
    from ichviewer.commands.train import recipe_config_from_args
    from ichviewer.cli import build_parser
    from ichviewer.evaluation.triage import CLINICAL_ICH_PREVALENCE

    assert prevalence_argument("0.08") == 0.08 and prevalence_argument("observed") is None
    for bad in ("0", "1", "ten", "-0.2"):
        with pytest.raises(argparse.ArgumentTypeError, match="between 0 and 1"):
            prevalence_argument(bad)
    parser = build_parser()
    args = parser.parse_args(["train", "--out", "x"])
    assert recipe_config_from_args(args).triage_prevalence == CLINICAL_ICH_PREVALENCE
    args = parser.parse_args(["train", "--out", "x", "--triage-prevalence", "observed"])
    assert recipe_config_from_args(args).triage_prevalence is None
    assert parser.parse_args(["evaluate", "--predictions", "a", "--labels", "b", "--json", "c"]).triage_prevalence == 0.1
    y = np.r_[1, np.zeros(20), np.ones(49), np.zeros(30)].astype(int)
    line = triage_summary_line(choose_triage_thresholds(y, np.linspace(0.01, 0.99, 100), 0.01, prevalence=0.1).to_dict())
    assert "confident negative below" in line and "at 0.1 prevalence" in line


def test_triage_never_contradicts_the_any_call() -> None:
    # At 10 % prevalence a 20 % miss-rate target alone would auto-report studies up to about 0.66,
    # above an ANY operating point of 0.5: those would be "positive" and "confident negative" at once.
    y = np.r_[1, np.zeros(20), np.ones(49), np.zeros(30)].astype(int)
    p = np.linspace(0.01, 0.99, 100)
    free = choose_triage_thresholds(y, p, 0.2, prevalence=0.1)
    assert free.negative_below > 0.5
    capped = choose_triage_thresholds(y, p, 0.2, prevalence=0.1, decision_threshold=0.5)
    assert 0.0 < capped.negative_below <= 0.5 and capped.negative_reached and capped.miss_rate <= 0.2
    assert all(c != "confident negative" for c, v in zip(capped.classify(p), p) if v >= 0.5)
    # The mirror image (labels reversed along the scores, prevalence 0.9): the positive side stays
    # at or above the ANY threshold.
    y2 = 1 - y[::-1]
    free2 = choose_triage_thresholds(y2, p, 0.0, 0.2, prevalence=0.9)
    assert free2.positive_reached and free2.positive_above < 0.5
    capped2 = choose_triage_thresholds(y2, p, 0.0, 0.2, prevalence=0.9, decision_threshold=0.5)
    assert capped2.positive_reached and capped2.positive_above >= 0.5
    assert all(c != "confident positive" for c, v in zip(capped2.classify(p), p) if v < 0.5)
