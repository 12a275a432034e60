"""Headless runs over a folder: every CT series under a path, failures recorded, JSON and CSV reports.

The JSON schema ("ichviewer.infer/1") is documented in models/README.md.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ichviewer import LABELS
from ichviewer.core.applicability import head_check_failure
from ichviewer.inference.ensemble import Ensemble
from ichviewer.inference.errors import Cancelled
from ichviewer.inference.result_cache import run_study_kept

INFER_SCHEMA = "ichviewer.infer/1"

#: on_progress(study_number (1-based), n_studies, series_label, done_slices, total_slices)
BatchProgress = Callable[[int, int, str, int, int], None]


def series_path(volume: Any, fallback: str | os.PathLike[str]) -> str:
    """The folder a volume's files came from (their common directory), else `fallback`."""
    files = [f for f in getattr(volume, "source_files", ()) if f]
    if not files:
        return str(fallback)
    try:
        common = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    except ValueError:  # files on different drives
        return str(fallback)
    return common


@dataclass
class BatchReport:
    """Results of `infer_path`: one dict per study (the JSON objects) and the failures."""

    studies: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": INFER_SCHEMA, "studies": self.studies, "failed": self.failed}

    def write_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n", encoding="utf-8")

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """One row per study: probabilities, decisions, subtype tiers and triage; failed studies get status "failed" and the reason.

        `<label>_tier` is "positive", "possible" or "negative" (`ichviewer.core.decisions`); blank in
        predictions written before tiers existed.
        """
        columns = ["path", "status", "reason", "study_uid", "series_uid", "n_slices", "triage", "head_check"]
        for label in LABELS:
            columns += [f"{label}_probability", f"{label}_decision", f"{label}_tier"]
        columns += ["provider", "seconds"]
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for s in self.studies:
                row = {k: s[k] for k in ("path", "study_uid", "series_uid", "n_slices", "triage", "provider", "seconds")}
                row.update(status="ok", reason="")
                row["head_check"] = head_check_failure(s.get("head_check")) or ""
                for label in LABELS:
                    row[f"{label}_probability"] = f"{s['case'][label]['probability']:.6f}"
                    row[f"{label}_decision"] = s["case"][label]["decision"]
                    row[f"{label}_tier"] = s["case"][label].get("tier", "")
                writer.writerow(row)
            for fail in self.failed:
                writer.writerow({"path": fail["path"], "status": "failed", "reason": fail["reason"]})


def infer_path(
    path: str | os.PathLike[str],
    ensemble: Ensemble,
    *,
    on_progress: BatchProgress | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    kept: Any = None,
) -> BatchReport:
    """Run `ensemble` on every CT series under `path`; never raises for bad input, records it in `failed`.

    With `kept` (a `result_cache.ResultCache`), a series whose result by these models is kept there
    is not run again (its entry says "restored": when it was computed), and new results are kept.

    Series are read one at a time (headers first, pixels when the series' turn comes) and
    released after inference, so memory does not grow with the size of the folder.
    Order: by study, then the larger series first (as `load_path`).
    """
    from ichviewer.io import DicomInputError, load_series, scan_path

    report = BatchReport()

    def failed(exc: DicomInputError) -> None:
        report.failed.append({"path": str(getattr(exc, "path", path)), "reason": str(getattr(exc, "reason", exc))})

    try:
        scan = scan_path(path, defer_pixels=True)
    except DicomInputError as exc:
        failed(exc)
        return report
    series_list = sorted(scan.series, key=lambda s: (s.study_uid, -s.n_files))
    total = len(series_list)
    for number, series in enumerate(series_list, start=1):
        try:
            volume = load_series(series)
        except DicomInputError as exc:
            failed(exc)
            continue
        finally:
            series.datasets = []  # the parsed headers hold deferred pixel data; release them
        where = series_path(volume, path)
        label = getattr(volume, "series_description", "") or getattr(volume, "series_uid", "") or where

        def progress(done: int, n: int, _partial: Any, number: int = number, label: str = label) -> None:
            if on_progress is not None:
                on_progress(number, total, label, done, n)

        try:
            result = run_study_kept(volume, ensemble, kept, progress=progress, is_cancelled=is_cancelled)
        except Cancelled:
            raise
        except Exception as exc:  # one bad study must not stop the batch; the reason is recorded
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            report.failed.append({"path": where, "reason": f"inference failed: {reason}"})
            continue
        if not np.isfinite(result.slice_probabilities).all():
            report.failed.append({"path": where, "reason": "inference failed: a model produced non-numeric (NaN) probabilities"})
            continue
        # the series' own warnings (gaps, tilt, a slice left out because it could not be read): a
        # batch reader must see that the AI read less than the folder held
        report.studies.append({"path": where, **result.to_dict(), "warnings": list(getattr(volume, "warnings", ()))})
    return report
