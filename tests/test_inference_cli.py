"""`ichviewer infer`: real DICOM series in, the ichviewer.infer/1 JSON and CSV out, failures recorded."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ichviewer import LABELS
from ichviewer.cli import COMMAND_MODULES, main
from ichviewer.inference import load_ensemble, run_study
from ichviewer.inference.manifest import file_sha256
from inference_fixtures import add_member, make_volume, write_dicom_series, write_manifest

STUDY_KEYS = {
    "path", "study_uid", "series_uid", "n_slices", "case", "triage", "head_check", "incomplete", "slices", "models",
    "provider", "seconds", "warnings",
}


def run_cli(argv: list[str]) -> int:
    return main(argv)  # the real `ichviewer` entry point


@pytest.fixture
def models(tmp_path):
    directory = tmp_path / "models"
    a = add_member(directory, "alpha", seed=1, version="2.1")[0]
    b = add_member(directory, "beta", seed=2, degree=5)[0]
    write_manifest(directory, [a, b])
    return directory


def test_infer_writes_the_documented_json_and_csv_and_records_failures(tmp_path, models, capsys):
    rng = np.random.default_rng(5)
    good = make_volume(rng.integers(-40, 90, (4, 24, 20)).astype(np.int16), spacing=(5.0, 0.5, 0.5))
    write_dicom_series(good, tmp_path / "data" / "good")
    broken = write_dicom_series(make_volume(np.zeros((2, 24, 20), np.int16)), tmp_path / "data" / "broken")
    broken[1].write_bytes(broken[1].read_bytes()[:-200])  # truncated pixel data: one readable slice is too few

    out_json, out_csv = tmp_path / "out.json", tmp_path / "out.csv"
    code = run_cli(["infer", str(tmp_path / "data"), "--models", str(models), "--json", str(out_json), "--csv", str(out_csv)])
    err = capsys.readouterr().err
    assert code == 1  # one study failed
    assert "4/4 slices" in err and "FAILED" in err and "broken" in err

    report = json.loads(out_json.read_text())
    assert set(report) == {"schema", "studies", "failed"} and report["schema"] == "ichviewer.infer/1"
    (study,) = report["studies"]
    assert set(study) == STUDY_KEYS
    assert study["path"] == str(tmp_path / "data" / "good")
    assert study["n_slices"] == 4 and study["study_uid"] and study["series_uid"]
    assert list(study["case"]) == list(LABELS)
    any_positive = study["case"]["ANY"]["probability"] >= study["case"]["ANY"]["threshold"]
    for label, finding in study["case"].items():
        # no specific thresholds in this manifest: one tier, the tier is the decision
        assert set(finding) == {"probability", "decision", "threshold", "own_threshold_reached", "tier"}
        own = finding["probability"] >= finding["threshold"]
        assert finding["own_threshold_reached"] is own
        # ichviewer.core.decisions: a subtype is positive only in a study positive for ANY
        assert finding["decision"] == ("positive" if own and (label == "ANY" or any_positive) else "negative")
        assert finding["tier"] == finding["decision"]
    # Random noise in a 24 x 20 grid has no skull: flagged, and never triaged as "confident".
    assert study["head_check"]["applicable"] is False and "no slice shows a closed skull" in study["head_check"]["reason"]
    assert study["triage"] == "refer"
    assert "NOT A HEAD CT?" in err and str(tmp_path / "data" / "good") in err
    assert [s["index"] for s in study["slices"]] == [0, 1, 2, 3]
    assert all(set(s) == {"index", *LABELS} for s in study["slices"])
    assert study["models"] == [
        {"name": "alpha", "version": "2.1", "sha256": file_sha256(models / "alpha.onnx")},
        {"name": "beta", "version": "1.0", "sha256": file_sha256(models / "beta.onnx")},
    ]
    assert study["provider"] == "CPUExecutionProvider" and study["seconds"] >= 0
    # Same numbers as calling the engine directly, in ascending slice order.
    direct = run_study(good, load_ensemble(models))
    got = np.array([[s[label] for label in LABELS] for s in study["slices"]])
    np.testing.assert_allclose(got, direct.slice_probabilities, rtol=1e-5)
    assert study["case"]["ANY"]["probability"] == pytest.approx(got[:, 5].max())
    (fail,) = report["failed"]
    assert "broken" in fail["path"] and "truncated" in fail["reason"]

    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert float(rows[0]["ANY_probability"]) == pytest.approx(study["case"]["ANY"]["probability"], abs=1e-6)
    assert rows[0]["SDH_decision"] == study["case"]["SDH"]["decision"] and rows[0]["triage"] == study["triage"]
    assert rows[0]["SDH_tier"] == study["case"]["SDH"]["tier"] and rows[1]["SDH_tier"] == ""
    assert "truncated" in rows[1]["reason"]
    assert rows[0]["head_check"] == study["head_check"]["reason"] and rows[1]["head_check"] == ""


def test_infer_reads_a_series_without_its_damaged_file_and_says_so(tmp_path, models, capsys):
    holed = write_dicom_series(make_volume(np.full((5, 24, 20), 30, np.int16)), tmp_path / "holed")
    holed[2].write_bytes(holed[2].read_bytes()[:-200])  # one truncated file in five
    out = tmp_path / "o.json"
    assert run_cli(["infer", str(tmp_path / "holed"), "--models", str(models), "--json", str(out), "--quiet"]) == 0
    (study,) = json.loads(out.read_text())["studies"]
    assert study["n_slices"] == 4
    [left_out] = [w for w in study["warnings"] if w.startswith("unreadable slices left out: 1 file(s)")]
    assert holed[2].name in left_out
    assert f"WARNING {study['path']}: unreadable slices left out" in capsys.readouterr().err
    # The AI has not seen the whole series: never a confident triage (a negative would be a guess
    # about the slice it never read).
    assert study["incomplete"].startswith(left_out) and study["triage"] == "refer"


def test_infer_exit_zero_when_all_studies_run(tmp_path, models, capsys):
    write_dicom_series(make_volume(np.full((3, 16, 16), 40, np.int16)), tmp_path / "one")
    assert run_cli(["infer", str(tmp_path / "one"), "--models", str(models), "--json", str(tmp_path / "o.json"), "--quiet"]) == 0
    report = json.loads((tmp_path / "o.json").read_text())
    assert len(report["studies"]) == 1 and report["failed"] == []


def test_infer_gives_back_kept_results_and_says_so(tmp_path, models, capsys):
    """`--keep-results DIR`: a second run over the same folder runs no model on the series kept, and its
    report marks them (the same findings, with when they were computed)."""
    rng = np.random.default_rng(8)
    for name in ("one", "two"):
        write_dicom_series(make_volume(rng.integers(-40, 90, (3, 16, 16)).astype(np.int16)), tmp_path / "data" / name)
    argv = ["infer", str(tmp_path / "data"), "--models", str(models), "--quiet", "--keep-results", str(tmp_path / "kept")]
    assert run_cli([*argv, "--json", str(tmp_path / "first.json")]) == 0
    assert "kept from an earlier run" not in capsys.readouterr().err
    write_dicom_series(make_volume(rng.integers(-40, 90, (3, 16, 16)).astype(np.int16)), tmp_path / "data" / "three")
    assert run_cli([*argv, "--json", str(tmp_path / "second.json")]) == 0
    assert "3 studies done (2 of them kept from an earlier run, not run again), 0 failed" in capsys.readouterr().err
    first = {s["series_uid"]: s for s in json.loads((tmp_path / "first.json").read_text())["studies"]}
    second = {s["series_uid"]: s for s in json.loads((tmp_path / "second.json").read_text())["studies"]}
    for uid, study in second.items():
        if uid in first:
            assert study["restored"] and study["case"] == first[uid]["case"] and study["slices"] == first[uid]["slices"]
            assert set(study) == STUDY_KEYS | {"restored"}
        else:
            assert "restored" not in study and set(study) == STUDY_KEYS


def test_infer_reports_missing_input_and_missing_models_without_traceback(tmp_path, models, capsys, monkeypatch):
    code = run_cli(["infer", str(tmp_path / "nothing-here"), "--models", str(models), "--json", str(tmp_path / "o.json")])
    assert code == 1
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["studies"] == [] and "nothing-here" in report["failed"][0]["path"]
    monkeypatch.setenv("ICHVIEWER_MODELS_DIR", str(tmp_path / "no-models"))
    code = run_cli(["infer", str(tmp_path), "--json", str(tmp_path / "o2.json")])
    err = capsys.readouterr().err
    assert code == 1 and "models/default is missing" in err and "Traceback" not in err
    assert not (tmp_path / "o2.json").exists()


def test_infer_is_wired_into_the_ichviewer_command():
    assert "ichviewer.commands.infer" in COMMAND_MODULES


def test_batch_reads_each_series_only_when_its_turn_comes(tmp_path, models, monkeypatch):
    import ichviewer.inference.batch as batch
    import ichviewer.io as io

    rng = np.random.default_rng(6)
    for name in ("one", "two", "three"):
        vol = make_volume(rng.integers(-40, 90, (3, 16, 16)).astype(np.int16), spacing=(5.0, 0.5, 0.5))
        write_dicom_series(vol, tmp_path / "data" / name)
    events: list[str] = []
    real_load, real_run = io.load_series, batch.run_study_kept

    def load(series, **kw):
        events.append("load")
        return real_load(series, **kw)

    def run(volume, ensemble, kept, **kw):
        events.append("run")
        return real_run(volume, ensemble, kept, **kw)

    monkeypatch.setattr(io, "load_series", load)
    monkeypatch.setattr(batch, "run_study_kept", run)
    report = batch.infer_path(tmp_path / "data", load_ensemble(models))
    assert len(report.studies) == 3 and not report.failed
    assert events == ["load", "run"] * 3  # never all volumes in memory at once
