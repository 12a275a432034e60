"""`ichviewer review ...` round trip: import labels and runs, queue, panel, export, stats."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import pytest
from review_fixtures import series_uid, write_infer_json, write_labels_csv

from ichviewer.commands import review as review_command


def run(*argv: str) -> int:
    """Parse and run like `ichviewer review ...` (only this command module, so others' state doesn't matter)."""
    parser = argparse.ArgumentParser(prog="ichviewer")
    review_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["review", *argv])
    return args.func(args)


def test_round_trip_import_queue_panel_export_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "review.sqlite")
    uids = [series_uid(i) for i in range(6)]
    probs = dict(zip(uids, [0.6, 0.61, 0.95, 0.4, 0.39, 0.05]))
    labels = dict(zip(uids, [1, 1, 1, 0, 0, 0]))
    assert run("import-runs", str(write_infer_json(tmp_path / "infer.json", probs)), "--db", db) == 0
    assert run("import-labels", str(write_labels_csv(tmp_path / "labels.csv", labels)), "--db", db) == 0
    assert "6 label version(s) added" in capsys.readouterr().out

    assert run("queue", "--kind", "ai", "--json", "--db", db) == 0
    queue = json.loads(capsys.readouterr().out)
    assert queue["count"] == 2 and {it["series_uid"] for it in queue["items"]} == {uids[0], uids[3]}
    assert run("queue", "--kind", "ai", "--db", db) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["series_uid", "label", "probability", "folder", "reason"] and len(table) == 3
    # each case names the folder it is opened by, as the infer run recorded it
    paths = {it["series_uid"]: it["path"] for it in queue["items"]}
    assert all(paths[row.split()[0]] and row.split()[3] == paths[row.split()[0]] for row in table[1:])

    assert run("log-read", "--reader", "Dr Res", "--role", "resident", "--series", uids[0],
               "--status", "any=absent", "--confidence", "ANY=2", "--ai", "ANY=reject", "--seconds", "30",
               "--db", db) == 0
    read_id = int(capsys.readouterr().out)
    assert run("queue", "--kind", "discordant", "--reader", "Dr Res", "--json", "--db", db) == 0
    assert [it["series_uid"] for it in json.loads(capsys.readouterr().out)["items"]] == [uids[0]]

    # A panel of six on the AI queue; 4 of 6 overturn the label of uids[3].
    assert run("panel", "create", "--name", "Kang review", "--from-queue", "ai", "--db", db) == 0
    panel_id = capsys.readouterr().out.strip()
    for i in range(6):
        assert run("panel", "add-member", panel_id, "--reader", f"E{i}", "--db", db) == 0
    capsys.readouterr()
    assert run("panel", "show", panel_id, "--reader", "E0", "--series", uids[3], "--db", db) == 0
    assert json.loads(capsys.readouterr().out)["model"] is None  # blinded before voting
    for i in range(6):
        assert run("panel", "vote", panel_id, "--reader", f"E{i}", "--series", uids[3],
                   "--value", "present" if i < 4 else "absent", "--db", db) == 0
        assert run("panel", "vote", panel_id, "--reader", f"E{i}", "--series", uids[0],
                   "--vote", "ANY=present", "--db", db) == 0
    capsys.readouterr()
    assert run("panel", "close", panel_id, "--db", db) == 0
    assert capsys.readouterr().out.strip() == f"{uids[3]} ANY: 0 -> 1 (4/6)"

    out_csv = tmp_path / "reads.csv"
    assert run("export", "--format", "csv", "--out", str(out_csv), "--db", db) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["read_id"], r["reader"], r["any_status"], r["any_ai"], r["label_any"]) for r in rows] == [
        (str(read_id), "Dr Res", "absent", "reject", "1")]
    assert run("export", "--format", "json", "--db", db) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "ichviewer.review/1" and len(doc["votes"]) == 12
    assert [v["value"] for v in doc["label_versions"] if v["series_uid"] == uids[3]] == [0, 1]
    assert "patient" not in json.dumps(doc).lower()
    # Paths (folder names can carry patient names) stay in the database unless asked for.
    assert "/data/ct/" not in json.dumps(doc) and "infer.json" not in json.dumps(doc)
    assert run("export", "--format", "json", "--include-paths", "--db", db) == 0
    assert "/data/ct/" in capsys.readouterr().out

    stats_path = tmp_path / "stats.json"
    assert run("stats", "--json", str(stats_path), "--db", db) == 0
    stats = json.loads(stats_path.read_text())
    assert stats["n_amended"] == 1
    assert stats["model"]["before"]["n"] == 6
    # Model at 0.5 is positive on uids[0..2]: right on all 6 original labels; the panel made
    # uids[3] (p = 0.4) positive, so after amendment the model misses it.
    assert stats["model"]["before"]["accuracy"] == pytest.approx(1.0)
    assert stats["model"]["after"]["accuracy"] == pytest.approx(5 / 6)
    assert stats["model"]["after"]["sensitivity"] == pytest.approx(3 / 4)
    assert stats["panels"][0]["fleiss_kappa"] is not None
    assert "label ANY" in capsys.readouterr().out


def test_bad_input_gives_one_clear_line_and_nonzero_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "review.sqlite")
    bad = tmp_path / "labels.csv"
    bad.write_text("series_uid,any\n1.2,yes\n")
    assert run("import-labels", str(bad), "--db", db) == 2
    err = capsys.readouterr().err
    assert "labels.csv, line 2, column any" in err and "0 or 1" in err and "Traceback" not in err
    assert run("import-runs", str(tmp_path / "missing.json"), "--db", db) == 2
    assert "missing.json" in capsys.readouterr().err
    assert run("stats", "--json", "-", "--db", str(tmp_path / "nope.sqlite")) == 2
    assert "no such review database" in capsys.readouterr().err
    assert not (tmp_path / "nope.sqlite").exists()
    assert run("queue", "--kind", "discordant", "--db", db) == 2
    assert "reader" in capsys.readouterr().err


def test_export_csv_to_stdout_has_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "review.sqlite")
    assert run("add-reader", "Dr A", "--role", "attending", "--db", db) == 0
    capsys.readouterr()
    assert run("export", "--format", "csv", "--db", db) == 0
    header = next(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert header[:5] == ["read_id", "series_uid", "study_uid", "reader", "role"]


def test_real_infer_output_imports_with_decisions_and_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The contract with `ichviewer infer`: its real JSON (tiny ONNX models, real DICOM) imports as model runs."""
    import numpy as np
    from inference_fixtures import add_member, make_volume, write_dicom_series, write_manifest

    from ichviewer.commands import infer as infer_command
    from ichviewer.review import ReviewStore

    models = tmp_path / "models"
    write_manifest(models, [add_member(models, "alpha", seed=1, version="2.1")[0]])
    rng = np.random.default_rng(3)
    write_dicom_series(make_volume(rng.integers(-40, 90, (3, 24, 20)).astype(np.int16)), tmp_path / "data" / "s1")
    parser = argparse.ArgumentParser(prog="ichviewer")
    infer_command.register(parser.add_subparsers())
    infer_json = tmp_path / "infer.json"
    args = parser.parse_args(["infer", str(tmp_path / "data"), "--models", str(models), "--json", str(infer_json),
                              "--quiet"])
    assert args.func(args) == 0
    report = json.loads(infer_json.read_text())
    db = tmp_path / "review.sqlite"
    assert run("import-runs", str(infer_json), "--db", str(db)) == 0
    (study,) = report["studies"]
    with ReviewStore(db) as store:
        run_row = store.latest_model_run(study["series_uid"])
        assert run_row["labels"]["ANY"] == pytest.approx(study["case"]["ANY"]["probability"])
        assert [m["name"] for m in run_row["models"]] == ["alpha"]
        decisions = dict(store.conn.execute("SELECT label, decision FROM model_run_labels WHERE run_id = ?",
                                            (run_row["id"],)).fetchall())
        assert decisions == {lab: int(f["decision"] == "positive") for lab, f in study["case"].items()}
        assert store.study(study["series_uid"])["study_uid"] == study["study_uid"]

    # The same folder again with kept results: the first pass keeps, the second gives back. Importing the
    # second JSON cites the run already recorded instead of recording the same run twice.
    kept_dir = tmp_path / "kept"
    for name in ("first.json", "again.json"):
        args = parser.parse_args(["infer", str(tmp_path / "data"), "--models", str(models), "--json",
                                  str(tmp_path / name), "--keep-results", str(kept_dir), "--quiet"])
        assert args.func(args) == 0
    assert "restored" in json.loads((tmp_path / "again.json").read_text())["studies"][0]
    assert run("import-runs", str(tmp_path / "first.json"), "--db", str(db)) == 0
    capsys.readouterr()
    assert run("import-runs", str(tmp_path / "again.json"), "--db", str(db)) == 0
    out = capsys.readouterr().out
    assert "0 model run(s) imported; 1 kept result(s) were runs already recorded" in out
    with ReviewStore(db) as store:
        n_runs = store.query("SELECT count(*) AS n FROM model_runs WHERE series_uid = ?", (study["series_uid"],))[0]["n"]
    assert n_runs == 2  # the first import's and first.json's (a fresh run: its own row), not again.json's
