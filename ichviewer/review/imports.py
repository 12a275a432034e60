"""Bringing reference labels (CSV) and model runs (`ichviewer infer` JSON) into the review database."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ichviewer import LABELS
from ichviewer.core.applicability import head_check_failure
from ichviewer.review.schema import MODEL_TIERS, TRIAGES
from ichviewer.review.store import ReviewError, ReviewStore, utc_now

INFER_SCHEMA = "ichviewer.infer/1"


@dataclass
class LabelImport:
    """What `import_labels_csv` did."""

    rows: int = 0
    series: int = 0
    versions_added: int = 0
    unchanged: int = 0
    #: study_uids of rows that matched no series in the database (labels by study need the series first).
    unknown_studies: list[str] = field(default_factory=list)


@dataclass
class RunImport:
    """What `import_infer_json` did."""

    run_ids: list[int] = field(default_factory=list)
    #: Runs already in the database that entries given back from kept results (`"restored"`, from
    #: `ichviewer infer --keep-results`) were the same as: cited, not recorded again.
    cited_ids: list[int] = field(default_factory=list)
    #: The `failed` entries of the infer JSON, passed through for the caller to report.
    failed: list[dict[str, str]] = field(default_factory=list)


def read_labels_csv(path: str | os.PathLike[str]) -> tuple[str, list[tuple[str, dict[str, int]]]]:
    """Parse a labels CSV; return the key column ('study_uid' or 'series_uid') and (uid, {LABEL: 0/1}) rows.

    The format is the evaluation room's LABELS.csv, read by the same parser
    (`ichviewer.evaluation.inputs.read_labels`): `study_uid` or `series_uid`, `any`
    (required) and optional `iph`, `ivh`, `sdh`, `edh`, `sah` (empty = not assessed);
    names are case-insensitive, other columns ignored.
    """
    from ichviewer.evaluation.inputs import EvaluationInputError, read_labels

    try:
        table = read_labels(path)
    except EvaluationInputError as exc:
        raise ReviewError(str(exc)) from None
    rows = []
    for i, uid in enumerate(table.ids):
        rows.append((uid, {lab: int(v[i]) for lab, v in table.labels.items() if not math.isnan(v[i])}))
    return table.key, rows


def import_labels_csv(store: ReviewStore, path: str | os.PathLike[str], *, source: str | None = None) -> LabelImport:
    """Import reference labels; a value that differs from the current one becomes a new version.

    Rows keyed by `study_uid` label every series of that study already in the
    database (reading is per series); studies with no series yet are reported in
    `unknown_studies`. Rows keyed by `series_uid` create the series if needed.
    All rows are written in one transaction: a bad file changes nothing.
    """
    key, rows = read_labels_csv(path)
    source = source or f"import:{Path(path).name}"
    result = LabelImport(rows=len(rows))
    with store.write():
        for uid, values in rows:
            if key == "series_uid":
                series = [uid]
            else:
                series = store.series_of_study(uid)
                if not series:
                    result.unknown_studies.append(uid)
                    continue
            for series_uid in series:
                result.series += 1
                for lab, value in values.items():
                    added = store.set_label(series_uid, lab, value, source=source,
                                            reason=f"imported from {Path(path).name}")
                    if added is None:
                        result.unchanged += 1
                    else:
                        result.versions_added += 1
    return result


def _require(mapping: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ReviewError(f"{where}: missing {key!r}")
    value = mapping[key]
    if isinstance(value, bool) and kind is not bool:
        raise ReviewError(f"{where}: {key!r} has the wrong type (bool)")
    if not isinstance(value, kind):
        raise ReviewError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def import_infer_json(store: ReviewStore, path: str | os.PathLike[str]) -> RunImport:
    """Import the model runs of an `ichviewer infer` JSON file (schema ichviewer.infer/1), all or nothing.

    An entry given back from kept results (it says `"restored"`) is the run recorded when it was computed:
    when the series' newest run in the database is that run (`record_study_result`'s `same_as_newest`),
    it is counted in `cited_ids` and not recorded again; otherwise it is recorded like any other."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReviewError(f"{path}: cannot read infer JSON ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReviewError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != INFER_SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ReviewError(f"{path}: expected schema {INFER_SCHEMA!r}, found {found!r}")
    studies = _require(doc, "studies", list, str(path))
    failed = doc.get("failed", [])
    if not isinstance(failed, list):
        raise ReviewError(f"{path}: 'failed' must be a list")
    parsed = [(_parse_study(entry, f"{path}: studies[{i}]"), bool(entry.get("restored"))) for i, entry in enumerate(studies)]
    result = RunImport(failed=[dict(f) for f in failed if isinstance(f, dict)])
    with store.write():
        for study, restored in parsed:
            same = _same_newest_run(store, study) if restored else None
            if same is not None:
                result.cited_ids.append(same)
            else:
                result.run_ids.append(_write_run(store, study, source=str(path)))
    return result


def record_study_result(store: ReviewStore, entry: dict[str, Any], *, source: str = "workstation",
                        same_as_newest: bool = False) -> int:
    """Store one study's model run, given as one `studies` entry of the infer JSON; return the run id.

    The workstation calls this with `{"path": path, **StudyResult.to_dict()}` when the
    ensemble finishes, so a read can cite the AI results its reader saw (`Read.model_run_id`).
    With `same_as_newest` (findings kept from an earlier run, not computed now), the series'
    newest run is cited instead when it is that run: the same models, slice count, triage and
    probabilities. Otherwise (another database, or the run was never recorded) it is recorded.
    """
    study = _parse_study(entry, "model run")
    with store.write():
        if same_as_newest:
            same = _same_newest_run(store, study)
            if same is not None:
                return same
        return _write_run(store, study, source=source)


def _same_newest_run(store: ReviewStore, study: dict[str, Any]) -> int | None:
    """The id of the series' newest model run when it is `study`'s run (see `record_study_result`)."""
    run = store.latest_model_run(study["series_uid"])
    if run is None or run["n_slices"] != study["n_slices"] or run["triage"] != study["triage"]:
        return None
    if sorted((m["name"], m["version"], m["sha256"]) for m in run["models"]) != sorted(study["models"]):
        return None
    if set(run["labels"]) != set(study["labels"]) or any(
            abs(run["labels"][lab] - item["probability"]) > 1e-9 for lab, item in study["labels"].items()):
        return None
    return int(run["id"])


def _parse_decision(value: Any, where: str) -> int | None:
    """`ichviewer infer` writes "positive"/"negative"; booleans are accepted too."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.lower() in ("positive", "negative"):
        return int(value.lower() == "positive")
    raise ReviewError(f"{where}: decision must be 'positive', 'negative' or a boolean, not {value!r}")


def _optional_unit(item: dict[str, Any], key: str, where: str) -> float | None:
    """item[key] as a float in 0-1, or None when absent."""
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ReviewError(f"{where}: {key} must be a number within 0-1, not {value!r}")
    return float(value)


def _parse_study(entry: Any, where: str) -> dict[str, Any]:
    series_uid = _require(entry, "series_uid", str, where)
    study_uid = _require(entry, "study_uid", (str, type(None)), where) or None
    if not series_uid.strip():
        raise ReviewError(f"{where}: empty series_uid")
    case = _require(entry, "case", dict, where)
    labels: dict[str, dict[str, Any]] = {}
    for lab in LABELS:
        item = _require(case, lab, dict, f"{where}.case")
        p = _require(item, "probability", (int, float), f"{where}.case.{lab}")
        if not 0.0 <= float(p) <= 1.0:
            raise ReviewError(f"{where}.case.{lab}: probability {p} is outside 0-1")
        decision = _parse_decision(item.get("decision"), f"{where}.case.{lab}")
        threshold = _optional_unit(item, "threshold", f"{where}.case.{lab}")
        tier = item.get("tier")
        if tier is not None and tier not in MODEL_TIERS:
            raise ReviewError(f"{where}.case.{lab}: tier must be one of {MODEL_TIERS}, not {tier!r}")
        labels[lab] = {
            "probability": float(p),
            "decision": decision,
            "threshold": threshold,
            "tier": tier,
            "specific_threshold": _optional_unit(item, "specific_threshold", f"{where}.case.{lab}"),
        }
    triage = _require(entry, "triage", str, where)
    if triage not in TRIAGES:
        raise ReviewError(f"{where}: triage must be one of {TRIAGES}, not {triage!r}")
    models = _require(entry, "models", list, where)
    parsed_models = []
    for j, m in enumerate(models):
        w = f"{where}.models[{j}]"
        parsed_models.append((_require(m, "name", str, w), _require(m, "version", str, w), _require(m, "sha256", str, w)))
    provider = _require(entry, "provider", str, where)
    check = entry.get("head_check")
    if check is not None and not isinstance(check, dict):
        raise ReviewError(f"{where}.head_check: expected an object or null, not {check!r}")
    head_check = head_check_failure(check)
    n_slices = entry.get("n_slices")
    seconds = entry.get("seconds")
    return {
        "series_uid": series_uid, "study_uid": study_uid, "path": entry.get("path"),
        "labels": labels, "triage": triage, "models": parsed_models, "provider": provider, "head_check": head_check,
        "n_slices": int(n_slices) if isinstance(n_slices, int) else None,
        "seconds": float(seconds) if isinstance(seconds, (int, float)) else None,
    }


def _write_run(store: ReviewStore, study: dict[str, Any], *, source: str) -> int:
    conn = store.conn
    actor, now = store.actor, utc_now()
    store._ensure_study(study["series_uid"], study["study_uid"], path=study["path"])
    run_id = conn.execute(
        "INSERT INTO model_runs (series_uid, provider, triage, n_slices, seconds, source, head_check, created_by, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (study["series_uid"], study["provider"], study["triage"], study["n_slices"], study["seconds"],
         source, study["head_check"], actor, now),
    ).lastrowid
    for name, version, sha in study["models"]:
        conn.execute(
            "INSERT OR IGNORE INTO models (name, version, sha256, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
            (name, version, sha, actor, now))
        model_id = conn.execute(
            "SELECT id FROM models WHERE name = ? AND version = ? AND sha256 = ?", (name, version, sha)
        ).fetchone()[0]
        conn.execute(
            "INSERT OR IGNORE INTO model_run_models (run_id, model_id, created_by, created_at) VALUES (?, ?, ?, ?)",
            (run_id, model_id, actor, now))
    for lab, item in study["labels"].items():
        conn.execute(
            "INSERT INTO model_run_labels (run_id, label, probability, decision, threshold, tier, specific_threshold,"
            " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, lab, item["probability"], item["decision"], item["threshold"], item["tier"],
             item["specific_threshold"], actor, now))
    return int(run_id)
