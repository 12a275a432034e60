"""The model card quotes the evaluation JSON and the training log, never hand-typed numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ichviewer.evaluation import evaluate_cases
from ichviewer.evaluation.report import write_json


def test_model_card_carries_the_evaluated_figures_and_commands(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    p = np.clip(y * 0.6 + rng.normal(0.2, 0.2, 120), 0, 1)
    mimic = ["metal" if (i % 7 == 0 and not y[i]) else "" for i in range(120)]
    hidden = np.flatnonzero(y)[:2]  # two positives whose blood cannot be seen (visible_voxels 0)
    visible = np.where(y, 40.0, 0.0)
    visible[hidden] = 0.0
    result = evaluate_cases({"ANY": y, "SDH": y}, {"ANY": p, "SDH": p}, 0.5, volume_ml=np.where(y, 2.0, 0.0),
                            mimic=mimic, n_boot=200, seed=0, visible_voxels=visible)
    write_json(result, tmp_path / "eval.json")
    log = {"members": [{"name": "resnet", "parameters": 1234, "interpolation_degree": 3}],
           "ensemble": {"method": "mean"}, "data": {"train": {"cases": 400}, "validation": {"cases": 100}},
           "hardware": {"processor": "x86_64", "torch": "2.13.0+cpu", "torch_threads": 2}, "seconds_total": 2520.0}
    (tmp_path / "log.json").write_text(json.dumps(log))
    out = subprocess.run([sys.executable, "-m", "ichviewer", "model-card", "--evaluation", str(tmp_path / "eval.json"),
                          "--training-log", str(tmp_path / "log.json"), "--out", str(tmp_path / "CARD.md"),
                          "--command", "train=ichviewer train --out models/default --seed 0",
                          "--command", "evaluate=ichviewer evaluate --predictions p.json --labels l.csv --json e.json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    card = (tmp_path / "CARD.md").read_text()
    auc = result["labels"]["ANY"]["auc"]
    assert f"ROC AUC: **{auc['value']:.3f} ({auc['ci'][0]:.3f}–{auc['ci'][1]:.3f})**" in card
    sens = result["labels"]["ANY"]["operating_point"]["sensitivity"]
    assert f"{sens['k']}/{sens['n']}" in card
    assert "ichviewer train --out models/default --seed 0" in card and "Not for clinical use" in card
    assert "| metal |" in card and "42 minutes" in card
    vis = result["by_visibility"]
    assert vis["n_positive_hidden"] == 2
    assert (f"2 positive studies have labelled haemorrhage that cannot be seen" in card
            and f"AUC(ANY) with them left out ({int(y.sum()) - 2} positives against all negatives): "
                f"{vis['auc_visible_only']['value']:.3f}" in card)
    met = auc["value"] >= 0.97 and sens["value"] >= 0.95
    assert ("**met**" in card) == met and ("NOT met" in card) == (not met)


def test_model_card_input_line_names_the_stem_and_precision() -> None:
    from ichviewer.evaluation.model_card import _input_text

    plain = _input_text({"input_size": 128, "crop": "head", "windows": "brain-subdural-bone", "slab_mm": 5.0})
    assert plain == ("128 x 128 pixels of a square around the head, three channels (brain, subdural and bone windows); "
                     "thin slices averaged into 5 mm slabs")
    stem = _input_text({"input_size": 256, "crop": "head", "windows": "brain-subdural-bone", "slab_mm": 5.0,
                        "input_stem": True, "precision": "bf16"})
    assert "256 x 256 pixels of a square around the head, through a learned 2x downsampling stem" in stem
    assert "128 x 128" in stem and "bfloat16" in stem and "16 channels" not in stem
    # the channel count and names come from the run's window set, not a fixed "three"
    four = _input_text({"input_size": 256, "crop": "head", "windows": "brain-blood-subdural-bone"})
    assert "four channels (brain, blood, subdural and bone windows)" in four and "three" not in four
    lee = _input_text({"input_size": 128, "windows": "lee", "context_slices": 3})
    assert "nine channels (Lee et al.'s tissue, brain and blood windows of the slice and its neighbours)" in lee
    wide = _input_text({"input_size": 256, "input_stem": True, "wide_stem": True})
    assert "stem of 16 channels, all fed to the network (every later layer works at 128 x 128)" in wide


def test_model_card_sets_other_test_sets_and_real_normal_series_beside_the_held_out(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    evals = {}
    for name, shift in (("heldout", 0.6), ("integrated", 0.3)):
        y = rng.integers(0, 2, 100)
        p = np.clip(y * shift + rng.normal(0.2, 0.2, 100), 0, 1)
        evals[name] = evaluate_cases({"ANY": y}, {"ANY": p}, 0.5, volume_ml=np.where(y, rng.choice([0.05, 2.0, 9.0], 100), 0.0),
                                     n_boot=100, seed=0)
        write_json(evals[name], tmp_path / f"{name}.json")
    (tmp_path / "log.json").write_text(json.dumps({"members": [], "data": {}, "hardware": {}}))
    infer = {"schema": "ichviewer.infer/1", "studies": [
        {"path": "/data/ct/ge-head-tilted", "n_slices": 28, "triage": "refer",
         "case": {"SAH": {"probability": 0.755, "decision": "positive"}, "IPH": {"probability": 0.01, "decision": "negative"},
                  "ANY": {"probability": 0.765, "decision": "positive"}},
         "head_check": {"applicable": True, "reason": "", "intracranial_median_hu": 31.0}},
        {"path": "/data/ct/phantom", "n_slices": 28, "triage": "refer",
         "case": {"IPH": {"probability": 0.999, "decision": "positive"}, "ANY": {"probability": 0.999, "decision": "positive"}},
         "head_check": {"applicable": False, "reason": "the skull encloses -961 HU", "intracranial_median_hu": -961.0}},
        {"path": "/data/ct/cta", "n_slices": 3, "triage": "refer", "case": {"ANY": {"probability": 0.9}},
         "head_check": {"applicable": False, "reason": "the DICOM header names a contrast agent ('OMNIPAQUE')",
                        "intracranial_median_hu": None}},
        {"path": "/data/ct/old-run", "n_slices": 3, "triage": "refer", "case": {"ANY": {"probability": 0.1}}}],
        "failed": [{"path": "/data/ct/broken", "reason": "no DICOM files"}]}
    (tmp_path / "real.json").write_text(json.dumps(infer))
    args = [sys.executable, "-m", "ichviewer", "model-card", "--evaluation", str(tmp_path / "heldout.json"),
            "--training-log", str(tmp_path / "log.json"), "--out", str(tmp_path / "CARD.md"),
            "--extra-evaluation", f"integrated 5 mm slices={tmp_path / 'integrated.json'}",
            "--command", "integrated 5 mm slices=ichviewer phantom-set pv3 --thickness-planes 3",
            "--command", "integrated 5 mm slices=ichviewer infer pv3 --json pv3.json",
            "--normal-series", str(tmp_path / "real.json"), "--command", "normal series=ichviewer infer ct --json real.json"]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    card = (tmp_path / "CARD.md").read_text()
    for name, row_name in (("heldout", "held-out test set (above)"), ("integrated", "integrated 5 mm slices")):
        auc = evals[name]["labels"]["ANY"]["auc"]
        assert f"| {row_name} | 100 | {auc['value']:.3f} ({auc['ci'][0]:.3f}–{auc['ci'][1]:.3f}) |" in card
    # both commands of the named set are quoted, in order
    assert "ichviewer phantom-set pv3 --thickness-planes 3\nichviewer infer pv3 --json pv3.json" in card
    assert "| ge-head-tilted | 28 | 0.77 | positive | refer | SAH 0.76 | fits (skull encloses 31 HU) |" in card
    assert "| phantom | 28 | 1.00 | positive | refer | IPH 1.00 | **not a head CT** (skull encloses -961 HU) |" in card
    assert "| old-run | 3 | 0.10 | ? | refer | n/a | not run |" in card
    assert "| cta | 3 | 0.90 | ? | refer | n/a | **not a head CT** (the DICOM header names a contrast agent ('OMNIPAQUE')) |" in card  # a JSON from before the check
    assert "| broken | | failed: no DICOM files |" in card and "ichviewer infer ct --json real.json" in card
    # a malformed option is refused with a message naming it
    bad = subprocess.run(args[:10] + ["--extra-evaluation", "no-equals-sign"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--extra-evaluation must be NAME=EVAL.json" in bad.stderr


def test_committed_model_card_matches_the_committed_evaluations() -> None:
    # The card is rendered from these JSONs by `ichviewer model-card`; a hand edit or a stale card fails here.
    from ichviewer.evaluation.model_card import _ci

    models = Path(__file__).resolve().parents[1] / "models"
    card = (models / "MODEL_CARD.md").read_text("utf-8")
    ev = json.loads((models / "default" / "evaluation.json").read_text("utf-8"))
    assert f"ROC AUC: **{_ci(ev['labels']['ANY']['auc'])}**" in card
    other = sorted((models / "default" / "other_sets").glob("evaluation_*.json"))
    for path in other:
        assert f"| {_ci(json.loads(path.read_text('utf-8'))['labels']['ANY']['auc'])} |" in card, path.name
    real = models / "default" / "other_sets" / "real_normal_series_infer.json"
    if real.exists():
        for st in json.loads(real.read_text("utf-8"))["studies"]:
            assert f"| {Path(st['path']).name} | {st['n_slices']} | {st['case']['ANY']['probability']:.2f} |" in card


def test_model_card_names_the_lesion_map_loss_when_it_was_used() -> None:
    from ichviewer.evaluation.model_card import _loss_text

    assert _loss_text({}) == "class-weighted binary cross-entropy of the slice labels (Lee et al. Eq. 2-3)"
    assert "lesion-map" not in _loss_text({"lesion_map_weight": 0.0})
    assert "plus 3 x a lesion-map loss" in _loss_text({"lesion_map_weight": 3.0})
    assert "stride" not in _loss_text({"lesion_map_weight": 3.0, "lesion_map_stride": None})
    assert "block at stride 8 (8-pixel cells)" in _loss_text({"lesion_map_weight": 3.0, "lesion_map_stride": 8})
    assert "mimic-map" not in _loss_text({"mimic_map_weight": 0.0})
    assert "plus 1 x a mimic-map loss" in _loss_text({"mimic_map_weight": 1.0})
    assert "departure 24" in _loss_text({"ignore_invisible": True}) and "departure 24" not in _loss_text({})


def test_model_card_says_how_the_5mm_phantoms_were_sampled() -> None:
    from ichviewer.evaluation.model_card import _thickness_text

    assert _thickness_text({}) == "; 5 mm phantom slices sampled at their centre plane"
    assert _thickness_text({"thickness_planes": 3}) == "; 5 mm phantom slices integrated over 3 planes across the slice"
    assert _thickness_text({"thickness_planes": [1, 3]}) == (
        "; 5 mm phantom slices drawn per case from: sampled at their centre plane, integrated over 3 planes across the slice")


def test_model_card_says_how_any_is_made() -> None:
    from ichviewer.evaluation.model_card import _any_rule_text, _loss_text

    assert "noisy-OR" not in _loss_text({}) and "noisy-OR" not in _loss_text({"noisy_or_any_weight": 0.0})
    assert "plus 1 x the class-weighted cross-entropy of the five subtypes' noisy-OR" in _loss_text({"noisy_or_any_weight": 1.0})
    assert "departure 27" not in _loss_text({"twin_rank_weight": 0.0})
    assert "plus 0.5 x a pairwise loss that ranks each bleeding slice's noisy-OR ANY" in _loss_text({"twin_rank_weight": 0.5})
    assert _any_rule_text({}) == _any_rule_text({"any_rule": "model"}) == ""
    assert "noisy-OR of the five subtype probabilities" in _any_rule_text({"any_rule": "noisy-or"})


def test_model_card_names_the_calibration_studies_when_there_were_some() -> None:
    from ichviewer.evaluation.model_card import _calibration_text, _n_calibration

    assert _calibration_text({}) == _calibration_text({"data": {"validation": {"cases": 100}}}) == ""
    log = {"data": {"validation": {"cases": 100}, "calibration": {"cases": 200}}}
    assert _n_calibration(log) == 200
    assert "plus 200 calibration studies" in _calibration_text(log) and "only the operating points" in _calibration_text(log)


def test_readme_and_model_card_quote_the_bundled_command() -> None:
    # README's reproduce block, the model card and `recipe.BUNDLED_COMMAND` (the benchmark's source) must agree.
    from ichviewer.training.recipe import BUNDLED_COMMAND

    root = Path(__file__).resolve().parents[1]
    assert ".venv/bin/" + BUNDLED_COMMAND + "\n" in (root / "README.md").read_text("utf-8")
    assert "\n" + BUNDLED_COMMAND + "\n" in (root / "models" / "MODEL_CARD.md").read_text("utf-8")


def test_model_card_says_how_the_triage_thresholds_were_placed() -> None:
    from ichviewer.evaluation.model_card import _triage_choice_text

    assert _triage_choice_text({}) == ""
    base = {"negative_below": 0.484, "positive_above": 0.994, "target_miss_rate": 0.01,
            "target_false_positive_rate": 0.01, "fraction_negative": 0.01, "fraction_positive": 0.4}
    reached = _triage_choice_text({**base, "negative_reached": True})
    assert "below 0.484" in reached and "above 0.994" in reached and "switched off" not in reached
    off = _triage_choice_text({**base, "negative_below": 0.0, "negative_reached": False})
    assert "switched off" in off and "clears a haemorrhage with it" in off
    prev = _triage_choice_text({**base, "negative_reached": True, "prevalence": 0.1, "miss_rate": 0.0058,
                                "fraction_negative_at_prevalence": 0.37})
    assert "at 0.10 prevalence" in prev and "Bayes' rule" in prev and "0.0058" in prev and "0.37 of studies" in prev


def test_model_card_quotes_operating_points_chosen_again_from_the_log_record() -> None:
    from ichviewer.evaluation.model_card import _replaced_lines

    assert _replaced_lines({}) == []
    rec = {"replaced_on": "2026-12-06T16:00:00+00:00", "command": ["python", "-m", "ichviewer.training.recalibrate", "models/default"],
           "changed_options": {"triage_prevalence": 0.1}, "reproduction_check": {"validation_case_auc_any": {"rebuilt": 0.9488, "training_log": 0.9488}}}
    text = "\n".join(_replaced_lines({"operating_points_replaced": [rec]}))
    assert "python -m ichviewer.training.recalibrate models/default" in text
    assert "2026-12-06" in text and "triage prevalence 0.1" in text and "0.9488 against 0.9488" in text
    assert "newly chosen" not in text
    rec["added_options"] = {"min_specificity": 0.95}
    text = "\n".join(_replaced_lines({"operating_points_replaced": [rec]}))
    assert "triage prevalence 0.1; newly chosen: min specificity 0.95 (the subtypes' \"positive\"" in text


def test_model_card_names_the_explaining_member_and_how_it_was_chosen() -> None:
    from ichviewer.evaluation.model_card import _explainer_lines

    assert _explainer_lines({}) == []
    rec = {"chosen": "inception", "validation_studies": 100,
           "members": {"vgg": {"found": 29, "n": 55}, "resnet": {"found": 20, "n": 55}, "inception": {"found": 40, "n": 55}}}
    (line,) = _explainer_lines({"explaining_model_choice": rec})
    assert line.startswith("- Attention maps and prediction basis: inception, the member whose maps found the most")
    assert "vgg 29/55, resnet 20/55, inception 40/55" in line


def test_the_committed_held_out_predictions_give_the_committed_evaluation(tmp_path) -> None:
    # models/default keeps the held-out predictions (`ichviewer infer` output, gzip) and labels, so every
    # figure of the card can be derived again in seconds; evaluating them must give evaluation.json.
    default = Path(__file__).resolve().parents[1] / "models" / "default"
    out = tmp_path / "evaluation.json"
    run = subprocess.run(
        [sys.executable, "-m", "ichviewer", "evaluate", "--predictions", str(default / "heldout_infer.json.gz"),
         "--labels", str(default / "heldout_labels.csv"), "--json", str(out)],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    shipped = json.loads((default / "evaluation.json").read_text("utf-8"))
    again = json.loads(out.read_text("utf-8"))
    flat_a, flat_b = {}, {}

    def flatten(x, path, into):
        if isinstance(x, dict):
            for k, v in x.items():
                flatten(v, f"{path}/{k}", into)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                flatten(v, f"{path}[{i}]", into)
        else:
            into[path] = x

    flatten(shipped, "", flat_a)
    flatten(again, "", flat_b)
    assert flat_a.keys() == flat_b.keys()
    for key in ("/inputs/predictions", "/inputs/labels"):  # the files' names as the card's command gives them
        assert Path(flat_b.pop(key)).name in ("heldout_infer.json.gz", "heldout_labels.csv")
        flat_a.pop(key)
    for key, value in flat_a.items():
        if isinstance(value, float):
            assert flat_b[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert flat_b[key] == value, key


def test_each_threshold_says_how_many_validation_positives_it_was_chosen_on() -> None:
    from ichviewer.evaluation.model_card import _chosen_on

    # five of five found: an exact 95 % interval from 0.478, so such a threshold is uncertain
    assert _chosen_on({"n_positive": 5, "sensitivity": 1.0}) == "5 positives: 1.000 (0.478–1.000)"
    assert _chosen_on({"n_positive": 50, "sensitivity": 0.96}).startswith("50 positives: 0.960 (0.863")
    assert _chosen_on(None) == "–" and _chosen_on({"n_positive": 0}) == "–"
    card = (Path(__file__).resolve().parents[1] / "models" / "MODEL_CARD.md").read_text("utf-8")
    assert "| chosen on |" in card and "positives: " in card
