"""Shared data for the evaluation tests: a published rating example and `ichviewer infer` files."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ichviewer import LABELS

# Hanley & McNeil, Radiology 1982;143:29-36, Table 1: 109 CT images rated on a five-point scale
# (1 = definitely normal ... 5 = definitely abnormal). Counts per rating category.
HM_NORMAL = (33, 6, 6, 11, 2)
HM_ABNORMAL = (3, 2, 2, 11, 33)


def hanley_mcneil_data() -> tuple[np.ndarray, np.ndarray]:
    """(truth, rating) per image of the Hanley & McNeil 1982 example."""
    ratings = np.arange(1, 6)
    y = np.r_[np.zeros(sum(HM_NORMAL)), np.ones(sum(HM_ABNORMAL))].astype(int)
    s = np.r_[np.repeat(ratings, HM_NORMAL), np.repeat(ratings, HM_ABNORMAL)].astype(float)
    return y, s


def infer_study(uid: str, probs: Mapping[str, float], threshold: float = 0.5, triage: str | None = None,
                study_uid: str | None = None) -> dict:
    """One study entry of an `ichviewer infer` JSON (schema ichviewer.infer/1)."""
    p_any = probs["ANY"]
    if triage is None:
        triage = "confident negative" if p_any <= 0.05 else "confident positive" if p_any >= 0.95 else "refer"
    return {
        "path": f"/data/{uid}",
        "study_uid": study_uid or f"study-{uid}",
        "series_uid": uid,
        "n_slices": 32,
        "case": {lab: {"probability": float(probs[lab]), "decision": bool(probs[lab] >= threshold),
                       "threshold": threshold} for lab in LABELS},
        "triage": triage,
        "slices": [],
        "models": ["m1", "m2"],
        "provider": "CPUExecutionProvider",
        "seconds": 0.5,
    }


def write_infer(path: Path, studies: Sequence[dict], failed: Sequence[dict] = ()) -> Path:
    path.write_text(json.dumps({"schema": "ichviewer.infer/1", "studies": list(studies), "failed": list(failed)}),
                    encoding="utf-8")
    return path


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path
