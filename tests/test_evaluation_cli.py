"""`ichviewer evaluate` end to end: infer JSON + LABELS.csv in, metrics JSON and HTML report out."""

from __future__ import annotations

import argparse
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from evaluation_fixtures import infer_study, write_csv, write_infer
from sklearn.metrics import average_precision_score, roc_auc_score

from ichviewer import LABELS, cli
from ichviewer.commands import evaluate as evaluate_command


def run(argv: list[str]) -> int:
    """Parse and run exactly as `ichviewer` does, through the command module's own `register`."""
    parser = argparse.ArgumentParser(prog="ichviewer")
    evaluate_command.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def make_study_set(n: int = 40, seed: int = 3) -> tuple[list[dict], list[list[object]], dict[str, np.ndarray]]:
    """Predictions and label rows for n series; subtypes follow ANY, probabilities are noisy."""
    rng = np.random.default_rng(seed)
    y_any = np.array([i % 2 for i in range(n)])
    truth = {"ANY": y_any}
    for lab in ("SDH", "SAH"):
        truth[lab] = y_any * (rng.random(n) < 0.5)
    studies, rows = [], []
    for i in range(n):
        uid = f"1.2.826.0.1.{i}"
        probs = {lab: float(np.clip(0.5 * truth.get(lab, y_any)[i] + rng.random() * 0.6, 0, 1)) for lab in LABELS}
        studies.append(infer_study(uid, probs, threshold=0.5))
        volume = ["0.05", "2.5", "30"][i % 3] if y_any[i] else ""
        mimic = ["calcification", "metal", "beam hardening", ""][i % 4] if not y_any[i] else ""
        rows.append([uid, f"study-{uid}", y_any[i], truth["SDH"][i], truth["SAH"][i], volume, mimic])
    return studies, rows, truth


HEADER = ["SERIES_UID", "study_uid", "Any", "sdh", "SAH", "volume_ml", "Mimic"]


def test_command_is_registered_with_the_cli() -> None:
    assert "ichviewer.commands.evaluate" in cli.COMMAND_MODULES


def test_evaluate_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    studies, rows, truth = make_study_set()
    # One labelled study was never predicted, one prediction has no label, one study failed in inference.
    rows.append(["9.9.9.404", "study-404", 1, 1, 0, "", ""])
    studies.append(infer_study("9.9.9.500", dict.fromkeys(LABELS, 0.3)))
    predictions = write_infer(tmp_path / "infer.json", studies, failed=[{"path": "/data/broken", "reason": "no pixel data"}])
    labels = write_csv(tmp_path / "labels.csv", HEADER, rows)
    out, report = tmp_path / "metrics.json", tmp_path / "report.html"

    code = run(["evaluate", "--predictions", str(predictions), "--labels", str(labels), "--json", str(out),
                "--report", str(report), "--bootstrap", "200", "--seed", "1"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "40 studies evaluated" in stdout and "ANY" in stdout

    r = json.loads(out.read_text())
    assert r["schema"] == "ichviewer.evaluate/1"
    assert {"settings", "n_cases", "labels", "map", "map_subtypes", "by_size", "mimics", "triage", "inputs"} <= set(r)
    assert r["n_cases"] == 40 and r["settings"]["n_boot"] == 200 and r["settings"]["seed"] == 1
    assert list(r["labels"]) == ["SDH", "SAH", "ANY"]  # only the labelled columns, in project order
    p_any = np.array([s["case"]["ANY"]["probability"] for s in studies[:40]])
    any_entry = r["labels"]["ANY"]
    assert any_entry["auc"]["value"] == pytest.approx(roc_auc_score(truth["ANY"], p_any))
    assert any_entry["average_precision"]["value"] == pytest.approx(average_precision_score(truth["ANY"], p_any))
    assert any_entry["threshold"] == 0.5
    assert {"tp", "fp", "tn", "fn", "sensitivity", "specificity", "ppv", "npv"} <= set(any_entry["operating_point"])
    assert any_entry["roc"]["thresholds"][0] is None  # +inf is not JSON
    assert [b["name"] for b in r["by_size"]["bins"]] == ["punctate", "small", "larger"]
    assert [k["mimic"] for k in r["mimics"]["kinds"]] == ["calcification", "metal", "beam-hardening", "none"]
    assert r["triage"]["observed"]["counts"]["refer"] + r["triage"]["observed"]["counts"]["confident negative"] > 0
    # Triage also stated at the default clinical prevalence (10 %), in the JSON, on the console and in the report.
    assert r["triage"]["prevalence"] == 0.1 and "miss_rate_at_prevalence" in r["triage"]["observed"]
    assert len(r["triage"]["curve"]["miss_rate_at_prevalence"]) == len(r["triage"]["curve"]["miss_rate"])
    assert "triage as inferred:" in stdout
    inputs = r["inputs"]
    assert inputs["match_key"] == "series_uid"  # preferred when both columns are present
    assert inputs["unmatched_labels"] == ["9.9.9.404"]
    assert inputs["unmatched_predictions"] == ["9.9.9.500"]
    assert inputs["failed"] == [{"path": "/data/broken", "reason": "no pixel data"}]

    html = report.read_text()
    assert html.count("<svg") >= 2 * 3 + 1  # ROC and PR per label, and the triage curve
    # Every plot is well-formed SVG with drawn curves (a malformed one shows as an empty box).
    for svg in re.findall(r"<svg xmlns.*?</svg>", html, re.S):
        root = ET.fromstring(svg)
        if root.get("width") != "170":  # the small CI bars in the tables have no polyline
            assert root.findall("{http://www.w3.org/2000/svg}polyline")
    assert "AUC " + f"{any_entry['auc']['value']:.3f}" in html
    assert "9.9.9.404" in html and "no pixel data" in html
    assert "Miss rate were 10% of studies bleeding" in html and "Were 10% of studies haemorrhages" in html
    punctate = r["by_size"]["bins"][0]["auc_vs_negatives"]["value"]
    assert "AUC against all negatives" in html and f"{punctate:.3f}" in html  # per-size AUCs in the size table
    # Self-contained: no scripts, no external images, stylesheets or fonts.
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    # Same seed, same intervals.
    out2 = tmp_path / "metrics2.json"
    assert run(["evaluate", "--predictions", str(predictions), "--labels", str(labels), "--json", str(out2),
                "--bootstrap", "200", "--seed", "1"]) == 0
    assert json.loads(out2.read_text())["labels"]["ANY"]["auc"]["ci"] == any_entry["auc"]["ci"]


def test_study_uid_matching_and_unassessed_subtypes(tmp_path: Path) -> None:
    studies, rows, _ = make_study_set(n=12)
    predictions = write_infer(tmp_path / "infer.json", studies)
    # Keyed by study; SDH left empty (not assessed) for two studies.
    study_rows = [[r[1], r[2], "" if i < 2 else r[3]] for i, r in enumerate(rows)]
    labels = write_csv(tmp_path / "labels.csv", ["Study_UID", "ANY", "SDH"], study_rows)
    out = tmp_path / "m.json"
    assert run(["evaluate", "--predictions", str(predictions), "--labels", str(labels), "--json", str(out),
                "--bootstrap", "50"]) == 0
    r = json.loads(out.read_text())
    assert r["inputs"]["match_key"] == "study_uid"
    assert r["labels"]["ANY"]["n"] == 12
    assert r["labels"]["SDH"]["n"] == 10 and r["labels"]["SDH"]["n_unlabelled"] == 2
    assert r["by_size"] is None and r["mimics"] is None


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        (["series_uid", "sdh"], ["1.2.826.0.1.0", "0"], "no 'any' column"),
        (["uid", "any"], ["1.2.826.0.1.0", "0"], "no 'series_uid' or 'study_uid' column"),
        (["series_uid", "any"], ["1.2.826.0.1.0", "yes"], "line 2, column any: expected 0 or 1"),
        (["series_uid", "any", "sdh"], ["1.2.826.0.1.0", "0", "1"], "any is 0 but a subtype is 1"),
        (["series_uid", "any", "mimic"], ["1.2.826.0.1.0", "0", "blood"], "unknown mimic"),
        (["series_uid", "any"], ["5.5.5", "1"], "no study in"),
        (["series_uid", "any", "visible_voxels"], ["1.2.826.0.1.0", "1", "2.5"], "column visible_voxels: '2.5' is not a count"),
        (["series_uid", "any", "visible_voxels"], ["1.2.826.0.1.0", "1", "-1"], "column visible_voxels: '-1' is not a count"),
        (["series_uid", "any", "visible_voxels"], ["1.2.826.0.1.0", "1", "many"], "column visible_voxels: not a number"),
    ],
)
def test_bad_labels_give_a_clear_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], header: list[str], row: list[str], message: str
) -> None:
    studies, _, _ = make_study_set(n=4)
    predictions = write_infer(tmp_path / "infer.json", studies)
    labels = write_csv(tmp_path / "labels.csv", header, [row])
    code = run(["evaluate", "--predictions", str(predictions), "--labels", str(labels), "--json",
                str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "labels.csv" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m.json").exists()


def test_bad_predictions_give_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = write_csv(tmp_path / "labels.csv", ["series_uid", "any"], [["1", "0"]])
    bad = tmp_path / "infer.json"
    bad.write_text("{not json")
    assert run(["evaluate", "--predictions", str(bad), "--labels", str(labels), "--json", str(tmp_path / "m.json")]) == 2
    assert "infer.json: not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"schema": "something/else", "studies": []}))
    assert run(["evaluate", "--predictions", str(bad), "--labels", str(labels), "--json", str(tmp_path / "m.json")]) == 2
    assert "not `ichviewer infer` output" in capsys.readouterr().err
    study = infer_study("1", dict.fromkeys(LABELS, 0.2))
    study["case"]["ANY"]["probability"] = 1.7
    write_infer(bad, [study])
    assert run(["evaluate", "--predictions", str(bad), "--labels", str(labels), "--json", str(tmp_path / "m.json")]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err
    missing = tmp_path / "nope.json"
    assert run(["evaluate", "--predictions", str(missing), "--labels", str(labels), "--json", str(tmp_path / "m.json")]) == 2
    assert "nope.json: no such predictions file" in capsys.readouterr().err
    not_gzip = tmp_path / "infer.json.gz"
    not_gzip.write_text("{}")
    assert run(["evaluate", "--predictions", str(not_gzip), "--labels", str(labels), "--json", str(tmp_path / "m.json")]) == 2
    assert "infer.json.gz: cannot read predictions" in capsys.readouterr().err


def test_compare_two_ensembles_with_delong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    studies, rows, truth = make_study_set(n=60)
    # Ensemble B: the same studies with ANY probabilities that ignore the truth (a useless model),
    # and one study fewer.
    rng = np.random.default_rng(0)
    other = [infer_study(s["series_uid"], {lab: float(rng.random()) for lab in LABELS}) for s in studies[1:]]
    a = write_infer(tmp_path / "a.json", studies)
    b = write_infer(tmp_path / "b.json", other)
    labels = write_csv(tmp_path / "labels.csv", HEADER, rows)
    out, report = tmp_path / "m.json", tmp_path / "r.html"
    assert run(["evaluate", "--predictions", str(a), "--labels", str(labels), "--json", str(out), "--report",
                str(report), "--compare", str(b), "--bootstrap", "50"]) == 0
    assert "compared with" in capsys.readouterr().out
    comp = json.loads(out.read_text())["comparison"]
    assert comp["n_cases"] == 59 and comp["only_in_a"] == [studies[0]["series_uid"]]
    test = comp["labels"]["ANY"]
    y = truth["ANY"][1:]
    p_a = np.array([s["case"]["ANY"]["probability"] for s in studies[1:]])
    p_b = np.array([s["case"]["ANY"]["probability"] for s in other])
    assert test["auc_a"] == pytest.approx(roc_auc_score(y, p_a))
    assert test["auc_b"] == pytest.approx(roc_auc_score(y, p_b))
    assert test["difference"] > 0.2 and test["p_value"] < 0.01
    assert "Comparison (DeLong)" in report.read_text()


def test_hidden_positives_are_counted_and_left_out_of_a_second_auc(tmp_path: Path) -> None:
    # visible_voxels = 0 on a positive: labelled blood that cannot be seen (`phantom-set` writes the column).
    studies, rows, truth = make_study_set(n=40)
    visible = [("0" if i in (1, 3) else "17") if truth["ANY"][i] else "0" for i in range(40)]
    visible[5] = ""  # unknown for one positive: neither hidden nor left out
    labels = write_csv(tmp_path / "labels.csv", HEADER + ["visible_voxels"], [r + [v] for r, v in zip(rows, visible)])
    predictions = write_infer(tmp_path / "infer.json", studies)
    out, report = tmp_path / "m.json", tmp_path / "r.html"
    assert run(["evaluate", "--predictions", str(predictions), "--labels", str(labels), "--json", str(out),
                "--report", str(report), "--bootstrap", "100"]) == 0
    vis = json.loads(out.read_text())["by_visibility"]
    p_any = np.array([s["case"]["ANY"]["probability"] for s in studies])
    keep = np.ones(40, dtype=bool)
    keep[[1, 3]] = False
    assert vis["n_positive_hidden"] == 2 and vis["n_positive_unknown"] == 1
    assert vis["auc_visible_only"]["value"] == pytest.approx(roc_auc_score(truth["ANY"][keep], p_any[keep]))
    assert vis["auc_visible_only"]["n_positive"] == 18
    assert vis["hidden_mean_probability"] == pytest.approx(p_any[[1, 3]].mean())
    assert vis["hidden_sensitivity"]["n"] == 2 and vis["hidden_sensitivity"]["k"] == int((p_any[[1, 3]] >= 0.5).sum())
    html = report.read_text()
    assert "cannot be seen" in html and f"{vis['auc_visible_only']['value']:.3f}" in html
    # Without the column there is no such block.
    plain = write_csv(tmp_path / "plain.csv", HEADER, rows)
    assert run(["evaluate", "--predictions", str(predictions), "--labels", str(plain), "--json", str(out), "--bootstrap", "20"]) == 0
    assert json.loads(out.read_text())["by_visibility"] is None
