"""Exporting the review database: reads as CSV, or everything (without patient identifiers) as JSON."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, TextIO

from ichviewer import LABELS
from ichviewer.review.store import ReviewStore, utc_now

EXPORT_SCHEMA = "ichviewer.review/1"

#: Columns of the reads CSV, in order.
READ_CSV_COLUMNS: tuple[str, ...] = (
    "read_id", "series_uid", "study_uid", "reader", "role", "created_at", "seconds_spent", "model_run_id",
    *[f"{lab.lower()}_{part}" for lab in LABELS for part in ("status", "confidence", "ai")],
    *[f"label_{lab.lower()}" for lab in LABELS],
    "note",
)


def _reads_with_labels(store: ReviewStore) -> list[dict[str, Any]]:
    rows = store.query(
        "SELECT reads.*, readers.name AS reader, readers.role AS role, studies.study_uid AS study_uid"
        " FROM reads JOIN readers ON readers.id = reads.reader_id"
        " JOIN studies ON studies.series_uid = reads.series_uid ORDER BY reads.id")
    current = {lab: store.labels_at(lab) for lab in LABELS}
    for row in rows:
        row["read_id"] = row.pop("id")
        for lab in LABELS:
            row[f"label_{lab.lower()}"] = current[lab].get(row["series_uid"])
    return rows


def write_reads_csv(store: ReviewStore, out: TextIO) -> int:
    """One row per read with the current reference label of each label; returns the row count."""
    writer = csv.DictWriter(out, fieldnames=list(READ_CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    rows = _reads_with_labels(store)
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in READ_CSV_COLUMNS})
    return len(rows)


def reads_csv(store: ReviewStore) -> str:
    buf = io.StringIO()
    write_reads_csv(store, buf)
    return buf.getvalue()


def export_json(store: ReviewStore, *, include_paths: bool = False) -> dict[str, Any]:
    """Everything in the database as one JSON-serialisable document (schema ichviewer.review/1).

    File paths are left out unless `include_paths`: folder names on a workstation
    often carry patient names, and the database promises none leave with an export.
    """
    runs = store.query("SELECT * FROM model_runs ORDER BY id")
    probs: dict[int, dict[str, float]] = {}
    calls: dict[int, dict[str, dict[str, Any]]] = {}
    for r in store.query("SELECT run_id, label, probability, decision, threshold, tier, specific_threshold"
                         " FROM model_run_labels"):
        run_id, label = r.pop("run_id"), r.pop("label")
        probs.setdefault(run_id, {})[label] = r.pop("probability")
        calls.setdefault(run_id, {})[label] = r
    models: dict[int, list[dict[str, str]]] = {}
    for r in store.query("SELECT rm.run_id, m.name, m.version, m.sha256 FROM model_run_models rm"
                         " JOIN models m ON m.id = rm.model_id ORDER BY m.id"):
        models.setdefault(r.pop("run_id"), []).append(r)
    for run in runs:
        run["probabilities"] = probs.get(run["id"], {})
        # per label: the run's call at its operating point (decision 1/0), and a subtype's tier
        run["calls"] = calls.get(run["id"], {})
        run["models"] = models.get(run["id"], [])
    studies = store.query("SELECT * FROM studies ORDER BY series_uid")
    audit = store.audit_log()
    if not include_paths:
        for study in studies:
            study.pop("path", None)
        for run in runs:
            run.pop("source", None)
        for row in audit:
            if row["entity"] in ("studies", "model_runs"):
                row["detail"] = _drop_paths(row["detail"])
    return {
        "schema": EXPORT_SCHEMA,
        "exported_at": utc_now(),
        "studies": studies,
        "readers": store.query("SELECT * FROM readers ORDER BY id"),
        "model_runs": runs,
        "reads": _reads_with_labels(store),
        "label_versions": store.query("SELECT * FROM label_versions ORDER BY series_uid, label, version"),
        "panels": store.query("SELECT * FROM panels ORDER BY id"),
        "panel_members": store.query("SELECT * FROM panel_members ORDER BY panel_id, rowid"),
        "panel_cases": store.query("SELECT * FROM panel_cases ORDER BY panel_id, rowid"),
        "votes": store.query("SELECT * FROM votes ORDER BY id"),
        # rulers and ROIs as drawn (voxel coordinates of the slice, the text the reader saw);
        # withdrawn ones too, with who withdrew them and when
        "measurements": store.query("SELECT measurements.*, readers.name AS reader FROM measurements"
                                    " JOIN readers ON readers.id = measurements.reader_id ORDER BY measurements.id"),
        "audit_log": audit,
    }


def _drop_paths(detail: str) -> str:
    try:
        data = json.loads(detail)
    except ValueError:
        return detail
    if isinstance(data, dict):
        data.pop("path", None)
        data.pop("source", None)
    return json.dumps(data, separators=(",", ":"))
