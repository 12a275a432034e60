"""Ensemble weights (unweighted mean, or Kang et al. weighted) and operating points, both fitted on validation."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ichviewer import LABELS, SUBTYPES
from ichviewer.evaluation.operating_point import DEFAULT_MIN_SPECIFICITY
from ichviewer.training.data import SliceCache
from ichviewer.training.trainer import case_probabilities, validation_map

ENSEMBLE_METHODS = ("mean", "weighted")
#: Simplex grid step for weighted ensembles; every member keeps at least one step of weight.
WEIGHT_STEP = 0.1
#: Target miss rate among studies triaged "confident negative" (DeepRadiologyNet-style referral).
DEFAULT_TARGET_MISS_RATE = 0.01


def combine_members(member_probs: Sequence[np.ndarray], weights: Sequence[float], any_rule: str = "model") -> np.ndarray:
    """Weighted mean of per-slice member probabilities, then ANY by `any_rule`, as the inference engine combines members."""
    from ichviewer.inference.findings import apply_any_rule

    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return apply_any_rule(np.tensordot(w, np.stack(member_probs), axes=(0, 0)), any_rule)


def _simplex(m: int, step: float) -> list[tuple[float, ...]]:
    k = int(round(1.0 / step))
    out = []
    for combo in itertools.product(range(1, k + 1), repeat=m - 1):
        last = k - sum(combo)
        if last >= 1:
            out.append(tuple(c / k for c in combo) + (last / k,))
    return out


def fit_ensemble_weights(
    member_probs: Sequence[np.ndarray], validation: SliceCache, method: str = "mean", step: float = WEIGHT_STEP,
    any_rule: str = "model",
) -> tuple[np.ndarray, dict]:
    """Member weights and what they score on validation.

    "mean": equal weights, Lee et al. 2019's unweighted average (the default). "weighted":
    Kang et al.'s idea of weighting members (they fitted a small weight network on
    segmentations; we have slice labels only): exhaustive search over the simplex grid
    with `step` (each member >= step, so every member stays in the ensemble), maximising
    the validation mAP of the combined probabilities (ANY by `any_rule`, as the manifest will
    say); ties keep the most even weights.
    """
    if method not in ENSEMBLE_METHODS:
        raise ValueError(f"ensemble method must be one of {ENSEMBLE_METHODS}, got {method!r}")
    m = len(member_probs)
    if m == 0:
        raise ValueError("no members")
    equal = np.full(m, 1.0 / m)
    mean_map, _ = validation_map(validation, combine_members(member_probs, equal, any_rule))
    info: dict = {"method": method, "validation_map_mean": mean_map}
    if method == "mean" or m == 1:
        info["validation_map"] = mean_map
        return equal, info
    grid = _simplex(m, step)
    if not grid:
        raise ValueError(f"weight step {step} leaves no grid for {m} members (need step <= 1/{m})")
    best_w, best = equal, mean_map
    for w in grid:
        score, _ = validation_map(validation, combine_members(member_probs, w, any_rule))
        if score > best + 1e-12:
            best_w, best = np.asarray(w), score
    info.update({"validation_map": best, "grid_step": step, "grid_points": len(grid)})
    return np.asarray(best_w, dtype=np.float64), info


def choose_operating_points(
    validation: SliceCache,
    slice_probs: np.ndarray,
    min_sensitivity: float = 0.95,
    target_miss_rate: float = DEFAULT_TARGET_MISS_RATE,
    triage_prevalence: float | None = None,
    min_specificity: float | None = DEFAULT_MIN_SPECIFICITY,
) -> tuple[object, dict]:
    """Per-label high-sensitivity thresholds and triage thresholds from validation case probabilities.

    Case probabilities are the max over slices of the ensemble's slice probabilities (the
    engine's default aggregation). Per label: the highest threshold with validation
    sensitivity >= `min_sensitivity` (`ichviewer.evaluation.choose_operating_points`); a
    label without validation positives keeps 0.5. Triage on ANY: "confident negative"
    below the threshold that auto-reports the most studies with a miss rate <=
    `target_miss_rate`, "confident positive" symmetrically for the false-positive share
    (`ichviewer.evaluation.choose_triage_thresholds`), both at `triage_prevalence` when given
    (the rates the thresholds would have on studies with that share of haemorrhage; the
    validation set is balanced); when a side cannot meet its target, nothing is triaged on
    that side (0 or 1).
    Per subtype with validation positives and negatives, also the specific threshold (validation
    specificity >= `min_specificity`, never below the sensitive one;
    `ichviewer.evaluation.choose_specificity_threshold`): the "positive" rather than "possible" tier
    of a call (`ichviewer.core.decisions`). `min_specificity=None` leaves them out (one tier).
    Returns (OperatingPoints for the manifest, a JSON-ready report).
    """
    from ichviewer.evaluation import choose_operating_points as choose_points
    from ichviewer.evaluation import choose_specificity_threshold
    from ichviewer.evaluation import choose_triage_thresholds
    from ichviewer.inference.manifest import OperatingPoints

    cases = case_probabilities(validation, slice_probs)
    y = validation.case_labels()
    known = np.stack([validation.known[c.start] for c in validation.cases]) > 0
    y_true = {lab: y[known[:, j], j] for j, lab in enumerate(LABELS)}
    y_prob = {lab: cases[known[:, j], j] for j, lab in enumerate(LABELS)}
    points = choose_points(y_true, y_prob, min_sensitivity)
    thresholds = {lab: (p.threshold if p.threshold is not None else 0.5) for lab, p in points.items()}
    specific, specific_report = {}, {}
    if min_specificity is not None:
        for lab in SUBTYPES:
            if points[lab].threshold is None:
                continue  # no validation positive: one tier, at the default threshold
            sp = choose_specificity_threshold(y_true[lab], y_prob[lab], min_specificity, lab, floor=thresholds[lab])
            if sp.threshold is not None:
                specific[lab] = float(sp.threshold)
                specific_report[lab] = sp.to_dict()
    any_j = LABELS.index("ANY")
    # A confident negative is never an ANY-positive call, nor a confident positive an ANY-negative one.
    tri = choose_triage_thresholds(
        y[:, any_j], cases[:, any_j], target_miss_rate, prevalence=triage_prevalence, decision_threshold=thresholds["ANY"]
    )
    # Same convention as the manifest: p < negative_below is "confident negative", p >
    # positive_above "confident positive"; a side whose target cannot be met is off (0 / 1).
    neg, pos = float(tri.negative_below), float(tri.positive_above)
    ops = OperatingPoints(
        thresholds=thresholds, triage_label="ANY", negative_below=neg, positive_above=pos,
        triage_prevalence=tri.prevalence, specific_thresholds=specific or None,
    )
    report = {
        "min_sensitivity": min_sensitivity,
        "labels": {lab: p.to_dict() for lab, p in points.items()},
        "triage": tri.to_dict(),
        "n_validation_cases": len(validation.cases),
    }
    if min_specificity is not None:
        report["min_specificity"] = min_specificity
        report["specific"] = specific_report
    return ops, report
