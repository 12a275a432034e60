"""The review database file: schema, reads, label history, append-only audit, imports."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from review_fixtures import series_uid, write_infer_json, write_labels_csv

from ichviewer.review import (
    Read,
    ReviewError,
    ReviewStore,
    import_infer_json,
    import_labels_csv,
)


def test_new_file_is_wal_strict_with_foreign_keys_and_recorded_migrations(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite"
    ReviewStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY id")] == [
        "0001_initial", "0002_model_run_head_check", "0003_model_run_label_tier", "0004_measurements", "0005_measurement_necks", "0006_measurement_image"]
    tables = {r[0]: r[1] for r in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")}
    for name in ("studies", "readers", "models", "model_runs", "reads", "label_versions", "panels",
                 "panel_members", "panel_cases", "votes", "audit_log"):
        assert tables[name].rstrip().endswith("STRICT"), name
    conn.close()
    # Reopening applies nothing twice, and the store's own connection enforces foreign keys.
    with ReviewStore(path) as s:
        assert s.applied_migrations == []
        assert s.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        with pytest.raises(sqlite3.IntegrityError):
            s.conn.execute("INSERT INTO reads (series_uid, reader_id, any_status, created_by, created_at)"
                           " VALUES ('nope', 999, 'present', 'x', 'now')")


def test_logged_read_is_visible_to_another_connection_when_log_read_returns(store: ReviewStore) -> None:
    reader = store.add_reader("Dr Park", "resident")
    read_id = store.log_read(reader, Read(
        "1.2.3.4", {"ANY": "present", "SDH": "present", "SAH": "uncertain"},
        confidence={"ANY": 4, "SDH": 3}, ai={"ANY": "accept", "SDH": "supplement"},
        note="thin left convexity SDH", seconds_spent=42.5, study_uid="1.2.3"))
    other = sqlite3.connect(store.path)
    row = other.execute("SELECT series_uid, any_status, sdh_status, sah_status, any_confidence, sdh_ai, note,"
                        " seconds_spent, created_by FROM reads WHERE id = ?", (read_id,)).fetchone()
    other.close()
    assert row == ("1.2.3.4", "present", "present", "uncertain", 4, "supplement", "thin left convexity SDH",
                   42.5, "Dr Park")
    assert store.study("1.2.3.4")["study_uid"] == "1.2.3"
    audit = store.audit_log(entity="reads")
    assert audit[-1]["actor"] == "Dr Park" and audit[-1]["entity_id"] == str(read_id)


@pytest.mark.parametrize("bad, message", [
    ({"statuses": {"SDH": "present"}}, "ANY"),
    ({"statuses": {"ANY": "maybe"}}, "present"),
    ({"statuses": {"ANY": "absent", "SDH": "present"}}, "subtype"),
    ({"statuses": {"ANY": "present"}, "confidence": {"ANY": 7}}, "1-5"),
    ({"statuses": {"ANY": "present"}, "ai": {"ANY": "agree"}}, "accept"),
    ({"statuses": {"XYZ": "present", "ANY": "present"}}, "unknown label"),
])
def test_invalid_reads_are_refused_with_a_clear_message(bad: dict, message: str) -> None:
    with pytest.raises(ReviewError, match=message):
        Read("1.2.3", **bad)


def test_unknown_reader_and_bad_role_are_refused(store: ReviewStore) -> None:
    with pytest.raises(ReviewError, match="unknown reader"):
        store.log_read("nobody", Read("1.2.3", {"ANY": "absent"}))
    with pytest.raises(ReviewError, match="role"):
        store.add_reader("Dr X", "student")
    assert store.read_count() == 0


def test_audit_log_rows_cannot_be_updated_or_deleted_even_with_raw_sql(store: ReviewStore) -> None:
    store.add_reader("Dr Park", "resident")
    assert store.audit_log()
    n_audit = len(store.audit_log())
    conn = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'mallory'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    conn.rollback()
    assert conn.execute("SELECT actor FROM audit_log").fetchall() == [("tester",)] * n_audit
    # Reads are history too: a correction is a new read, not an edit.
    store.log_read("Dr Park", Read("1.2.3", {"ANY": "absent"}))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE reads SET any_status = 'present'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM reads")
    conn.close()


def test_label_versions_keep_history_on_reimport(store: ReviewStore, tmp_path: Path) -> None:
    a, b = series_uid(1), series_uid(2)
    res = import_labels_csv(store, write_labels_csv(tmp_path / "l1.csv", {a: 1, b: 0}, subtypes={a: {"SDH": 1}}))
    assert (res.rows, res.versions_added) == (2, 3)  # a: ANY+SDH, b: ANY (empty SDH cell is "not labelled")
    res = import_labels_csv(store, write_labels_csv(tmp_path / "l2.csv", {a: 1, b: 1}))
    assert (res.versions_added, res.unchanged) == (1, 1)
    history = store.label_history(b)
    assert [(v.version, v.value, v.previous_value) for v in history] == [(1, 0, None), (2, 1, 0)]
    assert history[1].source == "import:l2.csv" and history[1].created_by == "tester"
    assert store.labels_at("ANY", which="original")[b] == 0 and store.labels_at("ANY")[b] == 1


def test_labels_csv_by_study_uid_labels_each_known_series(store: ReviewStore, tmp_path: Path) -> None:
    import_infer_json(store, write_infer_json(tmp_path / "infer.json", {series_uid(1): 0.2, series_uid(2): 0.3}))
    path = tmp_path / "by_study.csv"
    path.write_text("Study_UID,ANY\n1.2.826.0.1.3680043.8.498.1,1\n9.9.9,0\n", encoding="utf-8")
    res = import_labels_csv(store, path)
    assert res.series == 2 and res.unknown_studies == ["9.9.9"]
    assert store.labels_at("ANY") == {series_uid(1): 1, series_uid(2): 1}


@pytest.mark.parametrize("text, message", [
    ("series_uid,iph\n1.2,1\n", "'any' column"),
    ("uid,any\n1.2,1\n", "study_uid"),
    ("series_uid,any\n1.2,2\n", "0 or 1"),
    ("series_uid,any\n1.2,1\n1.2,0\n", "more than once"),
    ("series_uid,any,sdh\n1.2,0,1\n", "subtype"),
])
def test_bad_labels_csv_names_the_file_and_changes_nothing(store: ReviewStore, tmp_path: Path, text: str,
                                                           message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ReviewError, match=message) as info:
        import_labels_csv(store, path)
    assert "labels.csv" in str(info.value)
    assert store.labels_at("ANY") == {}


def test_infer_json_import_records_models_probabilities_and_triage(store: ReviewStore, tmp_path: Path) -> None:
    path = write_infer_json(tmp_path / "infer.json", {series_uid(1): 0.95, series_uid(2): 0.05},
                            failed=[{"path": "/data/bad", "reason": "no pixel data"}])
    res = import_infer_json(store, path)
    assert len(res.run_ids) == 2 and res.failed == [{"path": "/data/bad", "reason": "no pixel data"}]
    run = store.latest_model_run(series_uid(1))
    assert run["labels"]["ANY"] == pytest.approx(0.95) and run["triage"] == "confident positive"
    assert [m["name"] for m in run["models"]] == ["densenet-ich", "sdh-specialist"]
    assert run["provider"] == "CPUExecutionProvider"
    assert store.study(series_uid(1))["study_uid"] == "1.2.826.0.1.3680043.8.498.1"
    # Models are stored once, however many runs use them.
    assert store.conn.execute("SELECT count(*) FROM models").fetchone()[0] == 2


def test_head_check_is_stored_with_the_model_run_and_an_old_file_is_upgraded(tmp_path: Path) -> None:
    from sqlite_utils import Database

    from ichviewer.review.schema import migrations

    path = tmp_path / "old.sqlite"
    db = Database(path)
    migrations.apply(db, stop_before="0002_model_run_head_check")  # a file written before the column
    db.conn.execute("INSERT INTO studies (series_uid, created_by, created_at) VALUES ('1.2.3', 'x', 'now')")
    db.conn.execute("INSERT INTO model_runs (series_uid, provider, triage, created_by, created_at)"
                    " VALUES ('1.2.3', 'CPUExecutionProvider', 'refer', 'x', 'now')")
    db.conn.commit()
    db.close()
    with ReviewStore(path, actor="tester") as s:
        assert s.applied_migrations == ["0002_model_run_head_check", "0003_model_run_label_tier", "0004_measurements", "0005_measurement_necks", "0006_measurement_image"]
        assert s.latest_model_run("1.2.3")["head_check"] is None  # not known for the old run
        doc = json.loads(write_infer_json(tmp_path / "infer.json", {series_uid(1): 0.99, series_uid(2): 0.2}).read_text())
        doc["studies"][0]["triage"] = "refer"
        doc["studies"][0]["head_check"] = {"applicable": False, "reason": "the skull encloses -961 HU"}
        doc["studies"][1]["head_check"] = {"applicable": True, "reason": ""}
        (tmp_path / "infer.json").write_text(json.dumps(doc))
        import_infer_json(s, tmp_path / "infer.json")
        assert s.latest_model_run(series_uid(1))["head_check"] == "the skull encloses -961 HU"
        assert s.latest_model_run(series_uid(2))["head_check"] == ""


def test_infer_json_with_wrong_schema_or_missing_field_is_refused_whole(store: ReviewStore, tmp_path: Path) -> None:
    path = write_infer_json(tmp_path / "infer.json", {series_uid(1): 0.5, series_uid(2): 0.5})
    doc = json.loads(path.read_text())
    del doc["studies"][1]["case"]["SAH"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ReviewError, match=r"studies\[1\].case.*SAH"):
        import_infer_json(store, path)
    assert store.conn.execute("SELECT count(*) FROM model_runs").fetchone()[0] == 0
    doc["schema"] = "something/2"
    path.write_text(json.dumps(doc))
    with pytest.raises(ReviewError, match="schema"):
        import_infer_json(store, path)


def test_file_that_is_not_a_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not sqlite " * 100)
    with pytest.raises(ReviewError, match="notes.txt"):
        ReviewStore(path)


def test_reader_names_are_case_insensitive_and_role_changes_are_audited(store: ReviewStore) -> None:
    first = store.add_reader("Dr Kim", "resident")
    again = store.add_reader("dr kim", "attending")
    assert again.id == first.id and again.name == "Dr Kim" and again.role == "attending"
    assert [r.name for r in store.readers()] == ["Dr Kim"]
    update = store.audit_log(entity="readers")[-1]
    assert update["action"] == "update" and '"old_role":"resident"' in update["detail"]


def test_read_must_cite_a_model_run_of_its_own_series(store: ReviewStore, tmp_path: Path) -> None:
    res = import_infer_json(store, write_infer_json(tmp_path / "infer.json", {series_uid(1): 0.7, series_uid(2): 0.2}))
    store.add_reader("Dr Park", "resident")
    read_id = store.log_read("Dr Park", Read(series_uid(1), {"ANY": "present"}, ai={"ANY": "accept"},
                                            model_run_id=res.run_ids[0]))
    assert store.reads()[0]["model_run_id"] == res.run_ids[0] and store.reads()[0]["id"] == read_id
    with pytest.raises(ReviewError, match="not a run of series"):
        store.log_read("Dr Park", Read(series_uid(1), {"ANY": "present"}, model_run_id=res.run_ids[1]))
    assert store.read_count() == 1


def test_workstation_records_a_live_model_run_and_the_read_cites_it(store: ReviewStore) -> None:
    from review_fixtures import infer_entry

    from ichviewer.review import record_study_result

    run_id = record_study_result(store, infer_entry(series_uid(5), 0.66))
    assert store.latest_model_run(series_uid(5))["id"] == run_id
    assert store.latest_model_run(series_uid(5))["source"] == "workstation"
    store.add_reader("Dr Park", "resident")
    store.log_read("Dr Park", Read(series_uid(5), {"ANY": "present"}, ai={"ANY": "accept"}, model_run_id=run_id))
    assert store.reads()[0]["model_run_id"] == run_id


def test_findings_kept_from_an_earlier_run_cite_that_run_and_anything_else_is_recorded(store: ReviewStore) -> None:
    from review_fixtures import infer_entry

    from ichviewer.review import record_study_result

    uid = series_uid(6)
    first = record_study_result(store, infer_entry(uid, 0.66))
    assert record_study_result(store, infer_entry(uid, 0.66), same_as_newest=True) == first
    other_models = infer_entry(uid, 0.66)
    other_models["models"] = other_models["models"][:1]
    for changed in (infer_entry(uid, 0.67), other_models, {**infer_entry(uid, 0.66), "n_slices": 3},
                    {**infer_entry(uid, 0.66), "triage": "confident negative"}):
        newest = record_study_result(store, infer_entry(uid, 0.66))  # a fresh run: always a new row
        assert newest != first
        assert record_study_result(store, changed, same_as_newest=True) > newest
    assert record_study_result(store, infer_entry(series_uid(7), 0.66), same_as_newest=True) != first  # never recorded


def test_a_read_is_compared_with_the_reference_for_teaching(tmp_path) -> None:
    from ichviewer.review import Read, ReviewError, compare_read_with_reference, describe_comparison

    with ReviewStore(tmp_path / "r.sqlite") as store:
        store.add_study("1.2.3")
        store.add_study("1.2.4")
        store.set_label("1.2.3", "ANY", 1, source="import")
        store.set_label("1.2.3", "IPH", 1, source="import")
        store.set_label("1.2.3", "SDH", 0, source="import")
        me = store.add_reader("res", "resident")
        wrong = store.log_read(me, Read("1.2.3", {"ANY": "present", "IPH": "absent", "SDH": "uncertain", "IVH": "absent"}))
        c = compare_read_with_reference(store, wrong)
        # IVH has no reference: left out; uncertain agrees with neither
        assert c["labels"] == {"ANY": {"read": "present", "reference": 1, "agrees": True},
                               "IPH": {"read": "absent", "reference": 1, "agrees": False},
                               "SDH": {"read": "uncertain", "reference": 0, "agrees": None}}
        assert c["agrees"] is False  # one label differs
        assert describe_comparison(c) == ("Reference: ANY positive, IPH positive, SDH negative. "
                                          "Your read differs on IPH (you: absent). Uncertain on SDH.")
        right = store.log_read(me, Read("1.2.3", {"ANY": "present"}))
        assert describe_comparison(compare_read_with_reference(store, right)) == "Reference: ANY positive. Your read agrees."
        assert compare_read_with_reference(store, right)["agrees"] is True
        unlabelled = store.log_read(me, Read("1.2.4", {"ANY": "absent"}))
        assert describe_comparison(compare_read_with_reference(store, unlabelled)) == ""
        assert compare_read_with_reference(store, unlabelled)["agrees"] is None
        with pytest.raises(ReviewError, match="no read 99"):
            compare_read_with_reference(store, 99)
