"""`ichviewer operating-points`: a site re-chooses an ensemble's thresholds on its own labelled studies."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from inference_fixtures import add_member, write_manifest

from ichviewer import LABELS
from ichviewer.cli import main
from ichviewer.evaluation.inputs import match_cases, read_labels, read_predictions
from ichviewer.evaluation.operating_point import choose_sensitivity_threshold, choose_specificity_threshold
from ichviewer.evaluation.triage import choose_triage_thresholds
from ichviewer.inference.manifest import load_manifest


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A two-member ensemble with checksums, eight labelled phantom studies and its `ichviewer infer` output on them."""
    root = tmp_path_factory.mktemp("site")
    ens = root / "ensemble"
    entries = [add_member(ens, "alpha", seed=1)[0], add_member(ens, "beta", seed=2)[0]]
    write_manifest(ens, entries, thresholds=dict.fromkeys(LABELS, 0.5))
    files = ["alpha.onnx", "alpha_cam.npz", "beta.onnx", "beta_cam.npz", "manifest.json"]
    (ens / "SHA256SUMS").write_text(subprocess.run(["sha256sum", *files], cwd=ens, capture_output=True, text=True, check=True).stdout)
    (ens / "evaluation.json").write_text("{}")  # a report about the original thresholds: not copied
    assert main(["phantom-set", str(root / "studies"), "--n", "8", "--matrix", "64", "--seed", "3"]) == 0
    assert main(["infer", str(root / "studies"), "--models", str(ens), "--json", str(root / "infer.json")]) == 0
    return root, ens


def test_thresholds_are_chosen_on_the_site_studies_and_used_by_infer(site, capsys):
    root, ens = site
    out = root / "site_ensemble"
    labels = root / "studies" / "labels.csv"
    argv = ["operating-points", "--models", str(ens), "--predictions", str(root / "infer.json"), "--labels", str(labels),
            "--out", str(out), "--min-sensitivity", "0.9"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "ANY: threshold 0.5 ->" in text and "fewer than 20 positive studies" in text
    # the same choice as the evaluation functions make on the matched studies
    matched = match_cases(read_predictions(root / "infer.json"), read_labels(labels))
    manifest = load_manifest(out / "manifest.json")
    for lab in LABELS:
        y, p = matched.y_true[lab], matched.y_prob[lab]
        expected = choose_sensitivity_threshold(y[~np.isnan(y)], p[~np.isnan(y)], 0.9).threshold
        assert manifest.operating_points.thresholds[lab] == pytest.approx(0.5 if expected is None else expected)
        # each subtype given a new threshold gets its "positive" tier too, never below it (none before)
        specific = manifest.operating_points.specific_threshold(lab)
        if lab == "ANY" or expected is None:
            assert specific is None
        else:
            sp = choose_specificity_threshold(y[~np.isnan(y)], p[~np.isnan(y)], 0.95, floor=expected)
            assert specific == pytest.approx(sp.threshold) and specific >= expected
    tri = choose_triage_thresholds(matched.y_true["ANY"], matched.y_prob["ANY"], 0.01, prevalence=0.1)
    assert manifest.operating_points.negative_below == pytest.approx(tri.negative_below)
    assert manifest.operating_points.positive_above == pytest.approx(tri.positive_above)
    assert manifest.operating_points.triage_prevalence == 0.1  # the CLI's default clinical prevalence
    # models unchanged, reports about the old thresholds left behind, checksums true, the record kept
    assert (out / "alpha.onnx").read_bytes() == (ens / "alpha.onnx").read_bytes()
    assert not (out / "evaluation.json").exists()
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True).returncode == 0
    record = json.loads((out / "operating_points.json").read_text())
    assert record["n_studies"] == 8 and record["labels"]["ANY"]["previous_threshold"] == 0.5
    assert json.loads((ens / "manifest.json").read_text())["operating_points"]["thresholds"]["ANY"] == 0.5
    # infer with the copy applies the new thresholds
    assert main(["infer", str(root / "studies"), "--models", str(out), "--json", str(root / "infer2.json")]) == 0
    study = json.loads((root / "infer2.json").read_text())["studies"][0]
    assert study["case"]["ANY"]["threshold"] == pytest.approx(manifest.operating_points.thresholds["ANY"])
    for lab, t in (manifest.operating_points.specific_thresholds or {}).items():
        assert study["case"][lab]["specific_threshold"] == pytest.approx(t)


def test_predictions_of_other_models_and_an_existing_folder_are_refused(site, tmp_path, capsys):
    root, ens = site
    labels = str(root / "studies" / "labels.csv")
    doc = json.loads((root / "infer.json").read_text())
    doc["studies"][0]["models"][0]["sha256"] = "0" * 64
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    base = ["operating-points", "--models", str(ens), "--labels", labels]
    assert main(base + ["--predictions", str(other), "--out", str(tmp_path / "a")]) == 1
    assert "scored by other models" in capsys.readouterr().err and not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    assert main(base + ["--predictions", str(root / "infer.json"), "--out", str(tmp_path / "b")]) == 1
    assert "already exists" in capsys.readouterr().err
    bad = tmp_path / "labels.csv"
    with bad.open("w", newline="") as fh:
        csv.writer(fh).writerows([["series_uid", "any"], ["nobody", "1"]])
    assert main(base + ["--predictions", str(root / "infer.json"), "--labels", str(bad), "--out", str(tmp_path / "c")]) == 1
    assert "no study in" in capsys.readouterr().err and not (tmp_path / "c").exists()
