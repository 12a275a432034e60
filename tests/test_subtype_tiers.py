"""A called subtype is "positive" or "possible" (ichviewer.core.decisions, stop 26): the rule, the
thresholds behind it, the manifest, the findings, the evaluation and the recipe that chooses them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inference_fixtures import add_member, constant_slices_volume, write_manifest

from ichviewer import LABELS
from ichviewer.core.decisions import subtype_tier
from ichviewer.evaluation import choose_specificity_threshold, evaluate_cases, evaluate_files
from ichviewer.inference import load_ensemble, run_study
from ichviewer.inference.manifest import ManifestError, OperatingPoints, load_manifest


def test_the_tier_of_a_call():
    called = np.array([True, True, False, True])
    p = np.array([0.9, 0.4, 0.95, 0.5])
    assert subtype_tier(called, p, 0.5).tolist() == ["positive", "possible", "negative", "positive"]  # at = reached
    assert subtype_tier(called, p, None).tolist() == ["positive", "positive", "negative", "positive"]
    assert subtype_tier(called, p, np.array([0.95, 0.3, 0.1, 0.6])).tolist() == [
        "possible", "positive", "negative", "possible"]


def test_specificity_threshold_is_the_lowest_meeting_the_target():
    # 40 negatives scored 0.01..0.40, 10 positives 0.15..0.60 (ties with negatives included)
    neg = np.linspace(0.01, 0.40, 40)
    pos = np.linspace(0.15, 0.60, 10)
    y = np.r_[np.zeros(40), np.ones(10)].astype(int)
    p = np.r_[neg, pos]
    sp = choose_specificity_threshold(y, p, 0.95, "SAH")
    # at most floor(0.05 * 40) = 2 negatives may reach it: above the third-highest negative (0.38),
    # halfway to the next higher score of any case
    v = np.sort(neg)[-3]
    nxt = p[p > v].min()
    assert sp.threshold == pytest.approx((v + nxt) / 2)
    assert sp.specificity == pytest.approx(38 / 40) and sp.achieved
    assert sp.sensitivity == pytest.approx(np.mean(pos >= sp.threshold))
    # any lower threshold (down to the next score) lets a third negative in
    assert np.mean(neg < v) < 0.95
    # the floor keeps the tier inside the calls; a floor below the result changes nothing
    assert choose_specificity_threshold(y, p, 0.95, floor=0.5).threshold == 0.5
    assert choose_specificity_threshold(y, p, 0.95, floor=0.1).threshold == sp.threshold


def test_specificity_threshold_edges():
    none = choose_specificity_threshold([1, 1], [0.2, 0.3], 0.95)
    assert none.threshold is None and not none.achieved
    saturated = choose_specificity_threshold([0, 0, 1], [1.0, 1.0, 1.0], 0.95)
    assert saturated.threshold == 1.0 and not saturated.achieved
    top = choose_specificity_threshold([0, 0, 1], [0.2, 0.7, 0.5], 1.0)
    assert 0.7 < top.threshold < 1.0 and top.specificity == 1.0 and top.sensitivity == 0.0
    with pytest.raises(ValueError, match="min_specificity"):
        choose_specificity_threshold([0, 1], [0.1, 0.9], 0.0)


def test_operating_points_check_specific_thresholds(tmp_path):
    th = dict.fromkeys(LABELS, 0.3)
    ops = OperatingPoints(thresholds=th, specific_thresholds={"SAH": 0.8, "IPH": 0.3})
    assert ops.specific_threshold("SAH") == 0.8 and ops.specific_threshold("IVH") is None
    assert ops.specific_threshold("ANY") is None
    assert ops.to_dict()["specific_thresholds"] == {"IPH": 0.3, "SAH": 0.8}
    assert "specific_thresholds" not in OperatingPoints(thresholds=th).to_dict()
    with pytest.raises(ValueError, match="subtypes only"):
        OperatingPoints(thresholds=th, specific_thresholds={"ANY": 0.9})
    with pytest.raises(ValueError, match="its own threshold"):
        OperatingPoints(thresholds=th, specific_thresholds={"SDH": 0.2})
    write_manifest(tmp_path, [constant_model(tmp_path)], thresholds=th, specific_thresholds={"SDH": 0.1})
    with pytest.raises(ManifestError, match="manifest.json.*specific threshold for SDH"):
        load_manifest(tmp_path / "manifest.json")


def constant_model(directory, probs=np.full(6, 0.5)):
    """A member whose every slice gets `probs` (LABELS order): zero weights, the logits as biases."""
    probs = np.asarray(probs, np.float64)
    return add_member(
        directory, "const", degree=1, n_features=1,
        conv_weights=[np.zeros((1, 3, 1, 1), np.float32)], conv_biases=[np.zeros(1, np.float32)],
        head_weight=np.zeros((6, 1), np.float32), head_bias=np.log(probs / (1 - probs)).astype(np.float32),
    )[0]


def _study(tmp_path, probs, thresholds, specific):
    entry = constant_model(tmp_path, probs)
    write_manifest(tmp_path, [entry], thresholds=thresholds, specific_thresholds=specific)
    return run_study(constant_slices_volume([30.0, 35.0, 40.0]), load_ensemble(tmp_path), check_head=False)


def test_findings_name_positive_and_possible_subtypes(tmp_path):
    from ichviewer.qt.findings_panel import verdict_text

    probs = np.array([0.9, 0.3, 0.1, 0.6, 0.4, 0.95])  # IPH IVH SDH EDH SAH ANY
    thresholds = {"IPH": 0.5, "IVH": 0.2, "SDH": 0.2, "EDH": 0.5, "SAH": 0.1, "ANY": 0.5}
    result = _study(tmp_path / "a", probs, thresholds, {"IPH": 0.8, "IVH": 0.6, "SAH": 0.7})
    tiers = {lab: f.tier for lab, f in result.case.items()}
    # IPH over its specific threshold; IVH, SAH called below theirs; EDH called, no specific threshold: positive
    assert tiers == {"IPH": "positive", "IVH": "possible", "SDH": "negative", "EDH": "positive", "SAH": "possible",
                     "ANY": "positive"}
    assert all(result.case[lab].decision == "positive" for lab in ("IPH", "IVH", "EDH", "SAH"))  # decisions unchanged
    assert verdict_text(result.case) == "Positive for haemorrhage: IPH, EDH; possible IVH, SAH"
    case = result.to_dict()
    assert case["case"]["IVH"]["tier"] == "possible" and case["case"]["IVH"]["specific_threshold"] == 0.6
    assert "specific_threshold" not in case["case"]["EDH"] and case["case"]["EDH"]["tier"] == "positive"
    # only possibles, and a study negative for haemorrhage names none of them
    only = _study(tmp_path / "b", probs, thresholds, {"IPH": 0.95, "EDH": 0.95, "IVH": 0.6, "SAH": 0.7})
    assert verdict_text(only.case) == "Positive for haemorrhage: possible IPH, IVH, EDH, SAH"
    negative = _study(tmp_path / "c", probs, {**thresholds, "ANY": 0.99}, {"IVH": 0.6})
    assert all(f.tier == "negative" for f in negative.case.values())
    assert verdict_text(negative.case).startswith("No haemorrhage found by the AI")


def test_evaluation_scores_the_positive_tier(tmp_path):
    rng = np.random.default_rng(4)
    n = 60
    y_any = (rng.random(n) < 0.5).astype(int)
    y_sah = y_any * (rng.random(n) < 0.5)
    p_any = np.clip(0.3 * y_any + rng.random(n) * 0.7, 0, 1)
    p_sah = np.clip(0.4 * y_sah + rng.random(n) * 0.6, 0, 1)
    r = evaluate_cases({"ANY": y_any, "SAH": y_sah}, {"ANY": p_any, "SAH": p_sah}, {"ANY": 0.5, "SAH": 0.3},
                       n_boot=20, specific_thresholds={"SAH": 0.7})
    e = r["labels"]["SAH"]
    sure = (p_any >= 0.5) & (p_sah >= 0.7)
    tier = e["operating_point_positive_tier"]
    assert tier["tp"] == int((sure & (y_sah == 1)).sum()) and tier["fp"] == int((sure & (y_sah == 0)).sum())
    assert e["operating_point"]["tp"] == int(((p_any >= 0.5) & (p_sah >= 0.3) & (y_sah == 1)).sum())
    assert e["specific_threshold"] == 0.7 and "tier_rule" in r["settings"]
    assert "operating_point_positive_tier" not in r["labels"]["ANY"]
    plain = evaluate_cases({"SAH": y_sah}, {"SAH": p_sah}, {"SAH": 0.3}, n_boot=20)
    assert "operating_point_positive_tier" not in plain["labels"]["SAH"] and "tier_rule" not in plain["settings"]


def test_evaluate_files_reads_specific_thresholds_from_infer_json(tmp_path, capsys):
    studies, rows = [], ["series_uid,any,sah"]
    for i, (p_any, p_sah, y_any, y_sah) in enumerate([(0.9, 0.8, 1, 1), (0.9, 0.4, 1, 0), (0.6, 0.5, 1, 1), (0.2, 0.9, 0, 0)]):
        case = {"ANY": {"probability": p_any, "threshold": 0.5},
                "SAH": {"probability": p_sah, "threshold": 0.3, "specific_threshold": 0.7}}
        studies.append({"series_uid": f"s{i}", "study_uid": f"t{i}", "case": case, "triage": "refer"})
        rows.append(f"s{i},{y_any},{y_sah}")
    (tmp_path / "infer.json").write_text(json.dumps({"schema": "ichviewer.infer/1", "studies": studies, "failed": []}))
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    r = evaluate_files(tmp_path / "infer.json", tmp_path / "labels.csv", n_boot=20)
    tier = r["labels"]["SAH"]["operating_point_positive_tier"]
    # calls (ANY >= 0.5 and SAH >= 0.3): s0 (TP), s1 (FP), s2 (TP); positive tier (SAH >= 0.7): s0 only
    assert (tier["tp"], tier["fp"], tier["fn"]) == (1, 0, 1)
    assert r["labels"]["SAH"]["operating_point"]["fp"] == 1
    from ichviewer.cli import main

    assert main(["evaluate", "--predictions", str(tmp_path / "infer.json"), "--labels", str(tmp_path / "labels.csv"),
                 "--json", str(tmp_path / "eval.json")]) == 0
    sah_line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("SAH"))
    assert 'PPV 0.667; "positive" tier: sensitivity 0.500  specificity 1.000  PPV 1.000' in sah_line
    # a prediction without the key: no positive tier for that label
    studies[0]["case"]["SAH"].pop("specific_threshold")
    (tmp_path / "infer.json").write_text(json.dumps({"schema": "ichviewer.infer/1", "studies": studies, "failed": []}))
    assert "operating_point_positive_tier" not in evaluate_files(tmp_path / "infer.json", tmp_path / "labels.csv", n_boot=20)["labels"]["SAH"]


def test_model_card_and_report_show_the_positive_tier(tmp_path):
    from ichviewer.evaluation.model_card import positive_tier_lines
    from ichviewer.evaluation.report import render_report

    rng = np.random.default_rng(1)
    y_any = np.r_[np.ones(20), np.zeros(20)].astype(int)
    y_ivh = np.r_[np.ones(8), np.zeros(32)].astype(int)
    p_any = np.clip(0.5 * y_any + 0.5 * rng.random(40), 0, 1)
    p_ivh = np.clip(0.5 * y_ivh + 0.5 * rng.random(40), 0, 1)
    r = evaluate_cases({"ANY": y_any, "IVH": y_ivh}, {"ANY": p_any, "IVH": p_ivh}, {"ANY": 0.5, "IVH": 0.3},
                       n_boot=20, specific_thresholds={"IVH": 0.8})
    lines = positive_tier_lines(r)
    assert any(line.startswith("| IVH | 0.8") for line in lines) and "possible" in "\n".join(lines)
    assert positive_tier_lines(evaluate_cases({"ANY": y_any}, {"ANY": p_any}, {"ANY": 0.5}, n_boot=20)) == []
    html = render_report(r)
    assert 'Subtypes: "positive" and "possible"' in html and "<td><b>IVH</b></td><td class=\"num\">0.8</td>" in html
    assert "possible" not in render_report(evaluate_cases({"ANY": y_any}, {"ANY": p_any}, {"ANY": 0.5}, n_boot=20))


def test_recipe_chooses_specific_thresholds_on_validation():
    from ichviewer.training.data import CaseRecord, SliceCache
    from ichviewer.training.ensembling import choose_operating_points

    rng = np.random.default_rng(2)
    n_cases, per = 80, 2
    cases, lab = [], np.zeros((n_cases * per, 6), np.float32)
    for i in range(n_cases):
        sub = [0] * 5
        if i % 2:
            sub[i % 5] = 1
        labels = [*sub, int(any(sub))]
        cases.append(CaseRecord(f"c{i}", i * per, (i + 1) * per, labels))
        lab[i * per] = labels
    cache = SliceCache(np.zeros((n_cases * per, 3, 4, 4), np.uint8), lab, np.ones_like(lab), cases, 4)
    probs = np.clip(0.6 * lab + 0.5 * rng.random(lab.shape), 0, 1)
    ops, report = choose_operating_points(cache, probs, 0.95, 0.01, 0.1, min_specificity=0.9)
    for j, label in enumerate(LABELS[:5]):
        case_p = probs.reshape(n_cases, per, 6).max(axis=1)[:, j]
        y = np.array([c.labels[j] for c in cases])
        expected = choose_specificity_threshold(y, case_p, 0.9, floor=ops.thresholds[label]).threshold
        assert ops.specific_thresholds[label] == pytest.approx(expected)
        assert ops.specific_thresholds[label] >= ops.thresholds[label]
        assert report["specific"][label]["min_specificity"] == 0.9
    assert "ANY" not in ops.specific_thresholds
    one_tier, _ = choose_operating_points(cache, probs, 0.95, 0.01, 0.1, min_specificity=None)
    assert one_tier.specific_thresholds is None


def test_probability_decimals_keep_each_figure_on_its_side_of_its_threshold():
    from ichviewer.core.decisions import probability_and_threshold_text, probability_decimals

    assert probability_and_threshold_text(0.97553, 0.97672) == ("0.976", "0.977")  # seen live: "0.98 negative"
    assert probability_and_threshold_text(0.97690, 0.97672) == ("0.98", "0.98")  # reached: equal figures read as >=
    assert probability_and_threshold_text(0.41, 0.76) == ("0.41", "0.76")
    assert probability_decimals(0.764353, 0.764354) == 4  # never more than four decimals
    assert probability_and_threshold_text(0.5, None) == ("0.50", "")
    assert probability_decimals(float("nan"), 0.5) == 2
    # a subtype's specific threshold counts too: "possible" at 0.9836 under 0.9842 reads 0.9836 against 0.9842
    assert probability_decimals(0.9836, 0.4, 0.9842) == 4 and probability_decimals(0.9836, 0.4) == 2


@pytest.mark.gui
def test_the_findings_table_never_shows_a_negative_call_at_its_threshold_figure(qtbot, tmp_path):
    from ichviewer.qt.findings_panel import FindingsPanel, decision_tooltip, findings_summary

    probs = np.array([0.9, 0.3, 0.1, 0.97553, 0.4, 0.95])  # IPH IVH SDH EDH SAH ANY
    thresholds = {"IPH": 0.5, "IVH": 0.2, "SDH": 0.2, "EDH": 0.97672, "SAH": 0.1, "ANY": 0.5}
    result = _study(tmp_path / "a", probs, thresholds, {})
    edh = result.case["EDH"]
    assert edh.tier == "negative"
    panel = FindingsPanel()
    qtbot.addWidget(panel)
    panel.finish(result)
    row = LABELS.index("EDH")
    assert panel.table.item(row, 1).text() == "0.976" and "threshold 0.977" in panel.table.item(row, 1).toolTip()
    assert panel.table.item(LABELS.index("IPH"), 1).text() == "0.90"
    assert decision_tooltip(edh, result.case["ANY"]).startswith("0.976: positive when probability \u2265 0.977")
    assert "EDH 0.976 negative" in findings_summary(result)
