"""Reading `ichviewer infer` predictions and a LABELS.csv, and matching them study by study.

LABELS.csv: one row per study, a ``series_uid`` or ``study_uid`` column (``series_uid`` is
used when both are present), one 0/1 column per label (``any`` required; ``iph``, ``ivh``,
``sdh``, ``edh``, ``sah`` optional; names case-insensitive), and optionally ``volume_ml``
(total haemorrhage volume, empty if unknown) and ``mimic`` (empty, ``calcification``,
``metal`` or ``beam-hardening``) and ``visible_voxels`` (blood voxels a reader could tell apart
from the bone's partial-volume edge, as `ichviewer phantom-set` writes it; empty if unknown).
Other columns are ignored. An empty subtype cell means the
subtype was not assessed: that study is left out of that subtype's figures only. This is the
format the review room imports (`ichviewer.review.imports.read_labels_csv` reads it with this module's parser).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ichviewer import LABELS
from ichviewer.evaluation.summary import normalise_mimic
from ichviewer.evaluation.triage import TRIAGE_CATEGORIES

INFER_SCHEMA = "ichviewer.infer/1"
KEY_COLUMNS: tuple[str, ...] = ("series_uid", "study_uid")  # order of preference


class EvaluationInputError(ValueError):
    """A predictions or labels file cannot be evaluated; the message names the file and the problem."""


@dataclass(frozen=True)
class StudyPrediction:
    """Case-level output of the ensemble for one study, as written by `ichviewer infer`."""

    path: str
    study_uid: str
    series_uid: str
    probability: dict[str, float]
    threshold: dict[str, float]
    triage: str | None
    #: sha256 of each ensemble member that produced it (`models[].sha256` of the infer JSON); () if not given
    model_sha256: tuple[str, ...] = ()
    #: subtype -> its specific threshold ("positive" rather than "possible"), where the manifest gave one
    specific_threshold: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Predictions:
    studies: list[StudyPrediction]
    failed: list[dict[str, str]]


@dataclass(frozen=True)
class LabelTable:
    """Reference labels per study from a LABELS.csv."""

    path: str
    key: str  # "series_uid" or "study_uid"
    ids: list[str]
    labels: dict[str, NDArray[np.float64]]  # upper-case label -> 0/1 per row, NaN = not labelled
    volume_ml: NDArray[np.float64] | None
    mimic: list[str | None] | None
    visible_voxels: NDArray[np.float64] | None = None  # NaN = unknown


@dataclass
class MatchedCases:
    """Predictions and labels for the studies found in both files, in label-file order."""

    key: str
    ids: list[str]
    y_true: dict[str, NDArray[np.float64]]  # NaN where a subtype was not labelled
    y_prob: dict[str, NDArray[np.float64]]
    thresholds: dict[str, NDArray[np.float64]]
    triage: list[str] | None
    volume_ml: NDArray[np.float64] | None
    mimic: list[str | None] | None
    visible_voxels: NDArray[np.float64] | None = None
    #: subtype -> per-study specific thresholds, for the subtypes every matched prediction gives one for
    specific_thresholds: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    unmatched_labels: list[str] = field(default_factory=list)  # in LABELS.csv, no prediction
    unmatched_predictions: list[str] = field(default_factory=list)  # predicted, not in LABELS.csv
    merged: dict[str, int] = field(default_factory=dict)  # key -> number of series merged (max)
    failed: list[dict[str, str]] = field(default_factory=list)  # studies `infer` could not read

    def inputs_summary(self) -> dict:
        return {
            "match_key": self.key,
            "n_matched": len(self.ids),
            "unmatched_labels": self.unmatched_labels,
            "unmatched_predictions": self.unmatched_predictions,
            "merged_series": self.merged,
            "failed": self.failed,
        }


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvaluationInputError(f"{where}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise EvaluationInputError(f"{where}: expected a finite number, got {value!r}")
    return v


def read_predictions(path: str | Path) -> Predictions:
    """Read the JSON written by `ichviewer infer` (gzip-compressed when the name ends `.gz`, as the
    bundled ensemble's held-out predictions are kept), checking every field evaluation relies on."""
    import gzip

    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
        if path.suffix.lower() == ".gz":
            raw_bytes = gzip.decompress(raw_bytes)
        doc = json.loads(raw_bytes.decode("utf-8"))
    except FileNotFoundError:
        raise EvaluationInputError(f"{path}: no such predictions file") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise EvaluationInputError(f"{path}: cannot read predictions ({exc})") from None
    except json.JSONDecodeError as exc:
        raise EvaluationInputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != INFER_SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise EvaluationInputError(f"{path}: not `ichviewer infer` output (schema {got!r}, expected {INFER_SCHEMA!r})")
    raw = doc.get("studies")
    if not isinstance(raw, list):
        raise EvaluationInputError(f"{path}: 'studies' must be a list")
    studies = []
    for i, st in enumerate(raw):
        where = f"{path}: studies[{i}]"
        if not isinstance(st, dict):
            raise EvaluationInputError(f"{where}: expected an object")
        case = st.get("case")
        if not isinstance(case, dict):
            raise EvaluationInputError(f"{where}: missing 'case'")
        prob, thr, spec = {}, {}, {}
        for lab, entry in case.items():
            if not isinstance(entry, dict) or "probability" not in entry:
                raise EvaluationInputError(f"{where}.case.{lab}: missing 'probability'")
            p = _number(entry["probability"], f"{where}.case.{lab}.probability")
            if not 0.0 <= p <= 1.0:
                raise EvaluationInputError(f"{where}.case.{lab}.probability: {p} is outside [0, 1]")
            prob[str(lab).upper()] = p
            thr[str(lab).upper()] = _number(entry.get("threshold", 0.5), f"{where}.case.{lab}.threshold")
            if entry.get("specific_threshold") is not None:
                spec[str(lab).upper()] = _number(entry["specific_threshold"], f"{where}.case.{lab}.specific_threshold")
        if "ANY" not in prob:
            raise EvaluationInputError(f"{where}: case has no ANY probability")
        triage = st.get("triage")
        if triage is not None and triage not in TRIAGE_CATEGORIES:
            raise EvaluationInputError(f"{where}.triage: {triage!r} is not one of {list(TRIAGE_CATEGORIES)}")
        studies.append(
            StudyPrediction(
                path=str(st.get("path", "")),
                study_uid=str(st.get("study_uid") or ""),
                series_uid=str(st.get("series_uid") or ""),
                probability=prob,
                threshold=thr,
                triage=triage,
                model_sha256=tuple(
                    str(m["sha256"]) for m in st.get("models") or [] if isinstance(m, dict) and m.get("sha256")
                ),
                specific_threshold=spec,
            )
        )
    failed = [
        {"path": str(f.get("path", "")), "reason": str(f.get("reason", ""))}
        for f in doc.get("failed", []) or []
        if isinstance(f, dict)
    ]
    return Predictions(studies=studies, failed=failed)


def _parse_01(value: str, where: str) -> int:
    s = value.strip().lower()
    if s in ("0", "1"):
        return int(s)
    try:
        f = float(s)
    except ValueError:
        f = math.nan
    if f in (0.0, 1.0):
        return int(f)
    raise EvaluationInputError(f"{where}: expected 0 or 1, got {value!r}")


def read_labels(path: str | Path) -> LabelTable:
    """Read a LABELS.csv (see the module docstring), raising EvaluationInputError on bad content."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise EvaluationInputError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationInputError(f"{path}: cannot read labels ({exc})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise EvaluationInputError(f"{path}: the labels file is empty")
    header = [h.strip().lower() for h in rows[0]]
    dupes = sorted({h for h in header if h and header.count(h) > 1})
    if dupes:
        raise EvaluationInputError(f"{path}: duplicate columns {dupes} (names are case-insensitive)")
    col = {h: i for i, h in enumerate(header)}
    key = next((k for k in KEY_COLUMNS if k in col), None)
    if key is None:
        raise EvaluationInputError(f"{path}: no 'series_uid' or 'study_uid' column (columns: {', '.join(header)})")
    if "any" not in col:
        raise EvaluationInputError(f"{path}: no 'any' column; it is required (columns: {', '.join(header)})")
    body = rows[1:]
    if not body:
        raise EvaluationInputError(f"{path}: no studies below the header")
    label_cols = [lab for lab in LABELS if lab.lower() in col]
    ids: list[str] = []
    seen: dict[str, int] = {}
    values: dict[str, list[float]] = {lab: [] for lab in label_cols}
    volumes: list[float] = []
    mimics: list[str | None] = []
    visible: list[float] = []
    for r_i, row in enumerate(body, start=2):
        row = row + [""] * (len(header) - len(row))

        def cell(name: str, row: list[str] = row) -> str:
            return row[col[name]].strip()

        uid = cell(key)
        if not uid:
            raise EvaluationInputError(f"{path}, line {r_i}: empty {key}")
        if uid in seen:
            raise EvaluationInputError(f"{path}, line {r_i}: {key} {uid} appears more than once (already on line {seen[uid]})")
        seen[uid] = r_i
        ids.append(uid)
        for lab in label_cols:
            raw = cell(lab.lower())
            where = f"{path}, line {r_i}, column {lab.lower()}"
            if not raw and lab != "ANY":
                values[lab].append(math.nan)  # subtype not assessed for this study
            elif not raw:
                raise EvaluationInputError(f"{where}: empty; 'any' is required for every study")
            else:
                values[lab].append(float(_parse_01(raw, where)))
        if values["ANY"][-1] == 0 and any(values[lab][-1] == 1 for lab in label_cols if lab != "ANY"):
            raise EvaluationInputError(f"{path}, line {r_i}: any is 0 but a subtype is 1")
        if "volume_ml" in col:
            raw = cell("volume_ml")
            try:
                v = float(raw) if raw else math.nan
            except ValueError:
                raise EvaluationInputError(f"{path}, line {r_i}, column volume_ml: not a number: {raw!r}") from None
            if v < 0 or math.isinf(v):
                raise EvaluationInputError(f"{path}, line {r_i}, column volume_ml: {raw!r} is not a volume in mL")
            volumes.append(v)
        if "visible_voxels" in col:
            raw = cell("visible_voxels")
            where = f"{path}, line {r_i}, column visible_voxels"
            try:
                n_vis = float(raw) if raw else math.nan
            except ValueError:
                raise EvaluationInputError(f"{where}: not a number: {raw!r}") from None
            if not math.isnan(n_vis) and (math.isinf(n_vis) or n_vis < 0 or n_vis != int(n_vis)):
                raise EvaluationInputError(f"{where}: {raw!r} is not a count of voxels")
            visible.append(n_vis)
        if "mimic" in col:
            try:
                mimics.append(normalise_mimic(cell("mimic")))
            except ValueError as exc:
                raise EvaluationInputError(f"{path}, line {r_i}, column mimic: {exc}") from None
    return LabelTable(
        path=str(path),
        key=key,
        ids=ids,
        labels={lab: np.asarray(v, dtype=np.float64) for lab, v in values.items()},
        volume_ml=np.asarray(volumes, dtype=np.float64) if "volume_ml" in col else None,
        mimic=mimics if "mimic" in col else None,
        visible_voxels=np.asarray(visible, dtype=np.float64) if "visible_voxels" in col else None,
    )


def match_cases(predictions: Predictions, labels: LabelTable, predictions_path: str = "predictions") -> MatchedCases:
    """Pair each labelled study with its prediction on the label file's key column.

    Several predicted series of one study (matching on study_uid) are merged by taking the
    highest probability per label, as a reader would act on the most suspicious series.
    """
    key = labels.key
    by_key: dict[str, list[StudyPrediction]] = {}
    no_key: list[str] = []
    for st in predictions.studies:
        k = st.series_uid if key == "series_uid" else st.study_uid
        if k:
            by_key.setdefault(k, []).append(st)
        else:
            no_key.append(f"{st.path or '(no path)'} (no {key})")
    eval_labels = [lab for lab in labels.labels]
    rows, ids, unmatched = [], [], []
    for i, uid in enumerate(labels.ids):
        if uid in by_key:
            rows.append(i)
            ids.append(uid)
        else:
            unmatched.append(uid)
    if not rows:
        raise EvaluationInputError(
            f"no study in {labels.path} matches a prediction in {predictions_path} on {key} "
            f"({len(labels.ids)} labelled, {len(predictions.studies)} predicted)"
        )
    label_set = set(labels.ids)
    unmatched_pred = sorted(k for k in by_key if k not in label_set) + no_key
    y_prob: dict[str, list[float]] = {lab: [] for lab in eval_labels}
    thr: dict[str, list[float]] = {lab: [] for lab in eval_labels}
    spec: dict[str, list[float]] = {lab: [] for lab in eval_labels}
    triage: list[str | None] = []
    merged: dict[str, int] = {}
    order = {"confident negative": 0, "refer": 1, "confident positive": 2}
    for uid in ids:
        group = by_key[uid]
        if len(group) > 1:
            merged[uid] = len(group)
        for lab in eval_labels:
            if any(lab not in g.probability for g in group):
                raise EvaluationInputError(
                    f"{predictions_path}: study {uid} has no {lab} probability, but {labels.path} labels {lab}"
                )
            best = max(group, key=lambda g, lab=lab: g.probability[lab])
            y_prob[lab].append(best.probability[lab])
            thr[lab].append(best.threshold[lab])
            spec[lab].append(best.specific_threshold.get(lab, math.nan))
        tri = [g.triage for g in group if g.triage is not None]
        triage.append(max(tri, key=order.__getitem__) if len(tri) == len(group) else None)
    rows_a = np.asarray(rows)
    return MatchedCases(
        key=key,
        ids=ids,
        y_true={lab: labels.labels[lab][rows_a] for lab in eval_labels},
        y_prob={lab: np.asarray(v, dtype=np.float64) for lab, v in y_prob.items()},
        thresholds={lab: np.asarray(v, dtype=np.float64) for lab, v in thr.items()},
        specific_thresholds={
            lab: np.asarray(v, dtype=np.float64) for lab, v in spec.items() if v and not np.isnan(v).any()
        },
        triage=[t for t in triage] if all(t is not None for t in triage) else None,  # type: ignore[misc]
        volume_ml=labels.volume_ml[rows_a] if labels.volume_ml is not None else None,
        mimic=[labels.mimic[i] for i in rows] if labels.mimic is not None else None,
        visible_voxels=labels.visible_voxels[rows_a] if labels.visible_voxels is not None else None,
        unmatched_labels=unmatched,
        unmatched_predictions=unmatched_pred,
        merged=merged,
        failed=list(predictions.failed),
    )


def compare_cases(a: MatchedCases, b: MatchedCases) -> dict:
    """DeLong's test per label between two sets of predictions on the studies both cover.

    Returns {``n_cases``, ``only_in_a``, ``only_in_b``, ``labels``: {label: `DeLongTest.to_dict`
    or null when the label has a single class}}; AUC difference is a minus b.
    """
    from ichviewer.evaluation.delong import delong_test

    if a.key != b.key:
        raise EvaluationInputError(f"cannot compare predictions matched on {a.key} with ones matched on {b.key}")
    pos_b = {uid: i for i, uid in enumerate(b.ids)}
    common = [uid for uid in a.ids if uid in pos_b]
    if not common:
        raise EvaluationInputError("the two prediction files have no labelled study in common")
    ia = np.array([i for i, uid in enumerate(a.ids) if uid in pos_b])
    ib = np.array([pos_b[uid] for uid in common])
    labels = {}
    for lab in a.y_true:
        if lab not in b.y_prob:
            continue
        y = a.y_true[lab][ia]
        known = np.isfinite(y)
        yk = y[known].astype(np.int8)
        if yk.size == 0 or yk.min() == yk.max():
            labels[lab] = None
            continue
        labels[lab] = delong_test(yk, a.y_prob[lab][ia][known], b.y_prob[lab][ib][known]).to_dict()
    common_set = set(common)
    return {
        "n_cases": len(common),
        "only_in_a": [uid for uid in a.ids if uid not in common_set],
        "only_in_b": [uid for uid in b.ids if uid not in common_set],
        "labels": labels,
    }


def evaluate_files(
    predictions_path: str | Path,
    labels_path: str | Path,
    n_boot: int = 2000,
    seed: int = 0,
    compare_path: str | Path | None = None,
    triage_prevalence: float | None = None,
) -> dict:
    """Read, match and evaluate: the metrics dict of `evaluate_cases` plus ``inputs`` and ``cases``.

    ``inputs``: {``predictions``, ``labels`` (paths), ``match_key``, ``n_matched``,
    ``unmatched_labels``, ``unmatched_predictions``, ``merged_series``, ``failed``}.
    With `compare_path` (a second `ichviewer infer` JSON on the same studies, e.g. another
    ensemble), ``comparison`` holds {``predictions_b``, and `compare_cases`'s keys}: DeLong's
    test of the AUCs, these predictions minus the others.
    """
    from ichviewer.evaluation.summary import evaluate_cases

    preds = read_predictions(predictions_path)
    table = read_labels(labels_path)
    cases = match_cases(preds, table, str(predictions_path))
    other = None
    if compare_path is not None:
        other = match_cases(read_predictions(compare_path), table, str(compare_path))
    result = evaluate_cases(
        cases.y_true,
        cases.y_prob,
        cases.thresholds,
        volume_ml=cases.volume_ml,
        mimic=cases.mimic,
        visible_voxels=cases.visible_voxels,
        n_boot=n_boot,
        seed=seed,
        triage=cases.triage,
        triage_prevalence=triage_prevalence,
        specific_thresholds=cases.specific_thresholds or None,
    )
    result["inputs"] = {"predictions": str(predictions_path), "labels": str(labels_path), **cases.inputs_summary()}
    result["cases"] = cases.ids
    if other is not None:
        result["comparison"] = {"predictions_b": str(compare_path), **compare_cases(cases, other)}
    return result
