"""Helpers for the review tests: real infer JSON and labels CSV files, and small seeded databases."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

from ichviewer import LABELS
from ichviewer.review import ReviewStore

STUDY = "1.2.826.0.1.3680043.8.498.1"


def series_uid(i: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.1.{i}"


def infer_entry(uid: str, p_any: float, *, study_uid: str = STUDY, subtypes: Mapping[str, float] | None = None) -> dict:
    """One study of an `ichviewer infer` JSON (schema ichviewer.infer/1)."""
    probs = {lab: 0.01 for lab in LABELS}
    probs.update(subtypes or {})
    probs["ANY"] = p_any
    case = {lab: {"probability": p, "decision": "positive" if p >= 0.5 else "negative", "threshold": 0.5}
            for lab, p in probs.items()}
    triage = "confident positive" if p_any >= 0.9 else "confident negative" if p_any <= 0.1 else "refer"
    return {
        "path": f"/data/ct/{uid}", "study_uid": study_uid, "series_uid": uid, "n_slices": 2,
        "case": case, "triage": triage,
        "slices": [{"index": i, **{lab: p for lab, p in probs.items()}} for i in range(2)],
        "models": [{"name": "densenet-ich", "version": "1.0", "sha256": "ab" * 32},
                   {"name": "sdh-specialist", "version": "1.0", "sha256": "cd" * 32}],
        "provider": "CPUExecutionProvider", "seconds": 1.5,
    }


def write_infer_json(path: Path, probabilities: Mapping[str, float], *, failed: list | None = None) -> Path:
    doc = {"schema": "ichviewer.infer/1",
           "studies": [infer_entry(uid, p) for uid, p in probabilities.items()],
           "failed": failed or []}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def write_labels_csv(path: Path, labels: Mapping[str, int], *, key: str = "series_uid",
                     subtypes: Mapping[str, Mapping[str, int]] | None = None) -> Path:
    subtypes = subtypes or {}
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([key.upper() if key == "series_uid" else key, "Any", "sdh"])  # case-insensitive names
        for uid, value in labels.items():
            sdh = subtypes.get(uid, {}).get("SDH", "")
            w.writerow([uid, value, sdh])
    return path


def seed(store: ReviewStore, tmp_path: Path, labels: Mapping[str, int], probabilities: Mapping[str, float]) -> None:
    """Import model runs and labels through the real file importers."""
    from ichviewer.review import import_infer_json, import_labels_csv

    import_infer_json(store, write_infer_json(tmp_path / "infer.json", probabilities))
    import_labels_csv(store, write_labels_csv(tmp_path / "labels.csv", labels))
