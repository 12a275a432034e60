"""Reader and model accuracy, and inter-rater agreement, computed from the review database."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ichviewer import LABELS
from ichviewer.review.agreement import cohen_kappa, diagnostic_metrics, fleiss_kappa
from ichviewer.review.panels import list_panels, members
from ichviewer.review.schema import READ_STATUSES, VOTE_VALUES
from ichviewer.review.store import ReviewError, ReviewStore, utc_now

STATS_SCHEMA = "ichviewer.review-stats/1"
UNCERTAIN_POLICIES: tuple[str, ...] = ("positive", "negative", "exclude")


def _clean(value: Any) -> Any:
    """nan -> None so the result is valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    return diagnostic_metrics(truth, pred).to_dict()


def _per_rater_metrics(
    names: list[str], roles: list[str], rater: np.ndarray, truth: np.ndarray, pred: np.ndarray, uncertain: np.ndarray
) -> list[dict[str, Any]]:
    """Sensitivity, specificity, accuracy per rater with bincount (fast for 10^5 reads)."""
    k = len(names)
    keep = pred >= 0

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(rater[mask & keep], minlength=k)

    tp, fn = count((truth == 1) & (pred == 1)), count((truth == 1) & (pred == 0))
    tn, fp = count((truth == 0) & (pred == 0)), count((truth == 0) & (pred == 1))
    n_unc = np.bincount(rater[uncertain], minlength=k)
    out = []
    for i, name in enumerate(names):
        n = int(tp[i] + fn[i] + tn[i] + fp[i])
        out.append({
            "reader": name, "role": roles[i], "n": n,
            "tp": int(tp[i]), "fp": int(fp[i]), "tn": int(tn[i]), "fn": int(fn[i]),
            "n_uncertain": int(n_unc[i]),
            "sensitivity": tp[i] / (tp[i] + fn[i]) if tp[i] + fn[i] else None,
            "specificity": tn[i] / (tn[i] + fp[i]) if tn[i] + fp[i] else None,
            "accuracy": (tp[i] + tn[i]) / n if n else None,
        })
    for row in out:
        for key in ("sensitivity", "specificity", "accuracy"):
            if row[key] is not None:
                row[key] = float(row[key])
    return out


def _pairwise_cohen(names: list[str], matrix: np.ndarray, categories: list[str]) -> list[dict[str, Any]]:
    """Cohen's kappa for every pair of raters over the subjects both rated (-1 = not rated)."""
    pairs = []
    for a, b in itertools.combinations(range(len(names)), 2):
        both = (matrix[a] >= 0) & (matrix[b] >= 0)
        n = int(both.sum())
        kappa = cohen_kappa(matrix[a][both], matrix[b][both]) if n else None
        pairs.append({"reader_a": names[a], "reader_b": names[b], "n": n, "kappa": kappa})
    return pairs


def compute_statistics(
    store: ReviewStore,
    *,
    label: str = "ANY",
    threshold: float | None = None,
    uncertain_as: str = "positive",
) -> dict[str, Any]:
    """Accuracy of each reader and of the model against the original and the current label, and agreement.

    - readers: each reader's newest read of each labelled series; "uncertain"
      counts as `uncertain_as` (positive, negative or exclude).
    - model: newest run of each labelled series, positive by its own call (the operating point
      of the ensemble that ran; 0.5 for a run stored without one), or when probability >=
      `threshold` if that is given.
    - before = the original (first) label version, after = the current one
      (Kang et al., Results: accuracy before and after the consensus meeting).
    - each reader's row carries `model_same_cases`: the model on the labelled series that reader's
      metrics count (and the model ran on), so a reader is compared with the model on the same cases,
      not on the model's whole set.
    - reader_agreement: Cohen's kappa per reader pair on present/absent/uncertain.
    - panels: per panel, members' votes and the model on the panel's cases before
      and after that panel's amendments, Fleiss' kappa across the members (cases
      every member voted on) and Cohen's kappa per member pair.
    """
    label = label.upper()
    if label not in LABELS:
        raise ReviewError(f"unknown label {label!r}; expected one of {LABELS}")
    if uncertain_as not in UNCERTAIN_POLICIES:
        raise ReviewError(f"uncertain_as must be one of {UNCERTAIN_POLICIES}, not {uncertain_as!r}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ReviewError(f"threshold must be within 0-1, not {threshold!r}")
    before = store.labels_at(label, which="original")
    after = store.labels_at(label, which="current")
    calls = {s: c.called(threshold) for s, c in store.latest_model_calls(label).items()}

    # Readers: newest read per (reader, series).
    rows = [(rid, s, status) for (rid, s), status in store.latest_statuses(label).items()]
    readers = {rid: (name, role) for rid, name, role in store.conn.execute("SELECT id, name, role FROM readers")}
    reader_ids = sorted({r[0] for r in rows}, key=lambda rid: readers[rid][0])
    index = {rid: i for i, rid in enumerate(reader_ids)}
    names = [readers[rid][0] for rid in reader_ids]
    roles = [readers[rid][1] for rid in reader_ids]
    status_code = {s: i for i, s in enumerate(READ_STATUSES)}  # present 0, absent 1, uncertain 2
    n = len(rows)
    rater = np.fromiter((index[r[0]] for r in rows), dtype=np.int64, count=n)
    series = [r[1] for r in rows]
    status = np.fromiter((status_code[r[2]] for r in rows), dtype=np.int64, count=n)
    unc_value = {"positive": 1, "negative": 0, "exclude": -1}[uncertain_as]
    pred = np.where(status == 0, 1, np.where(status == 1, 0, unc_value))

    result: dict[str, Any] = {
        "schema": STATS_SCHEMA, "generated_at": utc_now(), "label": label, "threshold": threshold,
        "model_call": "each run's own call" if threshold is None else f"probability >= {threshold:g}",
        "uncertain_as": uncertain_as, "n_labelled": len(after),
        "n_amended": sum(1 for s, v in after.items() if before.get(s) != v),
        "readers": {}, "model": {},
    }
    for name_, ref in (("before", before), ("after", after)):
        truth = np.fromiter((ref.get(s, -1) for s in series), dtype=np.int64, count=n)
        labelled = truth >= 0
        result["readers"][name_] = _per_rater_metrics(
            names, roles, rater[labelled], truth[labelled], pred[labelled], (status[labelled] == 2))
        counted = labelled & (pred >= 0)
        for i, row in enumerate(result["readers"][name_]):
            same = [series[j] for j in np.flatnonzero(counted & (rater == i)) if series[j] in calls]
            row["model_same_cases"] = _metrics(np.array([ref[s] for s in same], dtype=np.int64),
                                               np.array([calls[s] for s in same], dtype=np.int64))
        common = [s for s in ref if s in calls]
        t = np.array([ref[s] for s in common], dtype=np.int64)
        p = np.array([calls[s] for s in common], dtype=np.int64)
        result["model"][name_] = _metrics(t, p)

    # Pairwise agreement between readers on the raw statuses.
    series_index = {s: i for i, s in enumerate(dict.fromkeys(series))}
    matrix = np.full((len(names), len(series_index)), -1, dtype=np.int64)
    if n:
        matrix[rater, np.fromiter((series_index[s] for s in series), dtype=np.int64, count=n)] = status
    result["reader_agreement"] = {
        "categories": list(READ_STATUSES),
        "cohen_kappa": _pairwise_cohen(names, matrix, list(READ_STATUSES)),
    }
    result["panels"] = [_panel_statistics(store, panel, label, calls) for panel in list_panels(store)]
    return _clean(result)


def _panel_statistics(store: ReviewStore, panel: Any, label: str, calls: dict[str, int]) -> dict[str, Any]:
    mem = members(store, panel.id)
    cases = [r[0] for r in store.conn.execute(
        "SELECT series_uid FROM panel_cases WHERE panel_id = ? ORDER BY rowid", (panel.id,))]
    out: dict[str, Any] = {
        "panel_id": panel.id, "name": panel.name, "status": panel.status, "source_queue": panel.source_queue,
        "members": [m.name for m in mem], "n_cases": len(cases), "label": label,
    }
    if label not in panel.labels:
        out["note"] = f"panel votes on {list(panel.labels)}, not {label}"
        return out
    member_index = {m.id: i for i, m in enumerate(mem)}
    case_index = {s: i for i, s in enumerate(cases)}
    vote_code = {v: i for i, v in enumerate(VOTE_VALUES)}  # present 0, absent 1
    matrix = np.full((len(mem), len(cases)), -1, dtype=np.int64)
    for series_uid, reader_id, value in store.conn.execute(
            "SELECT series_uid, reader_id, value FROM votes WHERE panel_id = ? AND label = ?", (panel.id, label)):
        matrix[member_index[reader_id], case_index[series_uid]] = vote_code[value]
    complete = (matrix >= 0).all(axis=0) if len(mem) else np.zeros(len(cases), dtype=bool)
    out["n_complete"] = int(complete.sum())
    if len(mem) >= 2 and complete.any():
        counts = np.stack([(matrix[:, complete] == c).sum(axis=0) for c in range(len(VOTE_VALUES))], axis=1)
        out["fleiss_kappa"] = fleiss_kappa(counts)
    else:
        out["fleiss_kappa"] = None
    out["cohen_kappa"] = _pairwise_cohen([m.name for m in mem], matrix, list(VOTE_VALUES))

    # Reference before and after this panel: an amendment by this panel keeps the old value.
    ref_before: dict[str, int] = {}
    ref_after: dict[str, int] = {}
    amended = 0
    for s in cases:
        history = store.label_history(s, label)
        if not history:
            continue
        mine = [v for v in history if v.panel_id == panel.id]
        if mine:
            amended += 1
            ref_after[s] = mine[-1].value
            if mine[0].previous_value is not None:
                ref_before[s] = mine[0].previous_value
        else:
            ref_before[s] = ref_after[s] = history[-1].value
    out["n_amended"] = amended
    out["members_metrics"] = {}
    out["model"] = {}
    for which, ref in (("before", ref_before), ("after", ref_after)):
        rows = []
        for i, m in enumerate(mem):
            voted = [(ref[s], 1 if matrix[i, j] == 0 else 0) for j, s in enumerate(cases)
                     if matrix[i, j] >= 0 and s in ref]
            t = np.array([v[0] for v in voted], dtype=np.int64)
            p = np.array([v[1] for v in voted], dtype=np.int64)
            rows.append({"reader": m.name, "role": m.role, **_metrics(t, p)})
        out["members_metrics"][which] = rows
        common = [s for s in cases if s in ref and s in calls]
        t = np.array([ref[s] for s in common], dtype=np.int64)
        p = np.array([calls[s] for s in common], dtype=np.int64)
        out["model"][which] = _metrics(t, p)
    return out


def compare_read_with_reference(store: ReviewStore, read_id: int) -> dict[str, Any]:
    """One saved read against the series' current reference labels (teaching feedback).

    Returns {"series_uid", "labels": {LABEL: {"read": status, "reference": 0/1, "agrees": bool | None}},
    "agrees"} for every label the read assessed that has a reference; "uncertain" agrees with neither
    (None). The overall "agrees" is False when any label differs, else None when any is uncertain or
    there is no reference, else True. Empty "labels" when the series has no reference for what the
    read assessed.
    """
    rows = store.query("SELECT * FROM reads WHERE id = ?", (int(read_id),))
    if not rows:
        raise ReviewError(f"no read {read_id} in {store.path}")
    read = rows[0]
    out: dict[str, Any] = {"series_uid": read["series_uid"], "labels": {}}
    for label in ("ANY", *(lab for lab in LABELS if lab != "ANY")):  # ANY first, as a reader reports
        status = read.get(f"{label.lower()}_status")
        ref = store.current_label(read["series_uid"], label) if status is not None else None
        if ref is None:
            continue
        agrees = None if status == "uncertain" else (status == "present") == bool(ref.value)
        out["labels"][label] = {"read": status, "reference": int(ref.value), "agrees": agrees}
    verdicts = [c["agrees"] for c in out["labels"].values()]
    out["agrees"] = False if False in verdicts else (None if None in verdicts or not verdicts else True)
    return out


def describe_comparison(comparison: dict[str, Any]) -> str:
    """'Reference: ANY positive, IPH positive. Your read agrees.' or names where it differs; '' with no reference."""
    labels = comparison.get("labels") or {}
    if not labels:
        return ""
    ref = ", ".join(f"{label} {'positive' if c['reference'] else 'negative'}" for label, c in labels.items())
    differs = [f"{label} (you: {c['read']})" for label, c in labels.items() if c["agrees"] is False]
    unsure = [label for label, c in labels.items() if c["agrees"] is None]
    verdict = f"Your read differs on {', '.join(differs)}." if differs else "Your read agrees."
    if unsure:
        verdict += f" Uncertain on {', '.join(unsure)}."
    return f"Reference: {ref}. {verdict}"
