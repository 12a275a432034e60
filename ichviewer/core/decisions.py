"""The workstation's case decision rule: which labels a study is called positive for.

Each label has its own operating point (a manifest threshold chosen on validation data for
sensitivity, `ichviewer.evaluation.operating_point`). Read one label at a time, those
thresholds contradict each other: the stop-19 ensemble's SAH threshold was 0.17 and its ANY
threshold 0.82, so a study with SAH 0.76 was "positive for SAH" and "negative for
haemorrhage" at once (the real GE head series did exactly that, stop 20; 39 of the 200
held-out studies did). A reader cannot act on that.

The rule (stop 21): **ANY decides whether the study is positive for haemorrhage; a subtype is
named only in a study that is.** ANY is positive when its probability reaches its threshold;
a subtype is positive when its probability reaches its own threshold *and* ANY is positive.
The opposite repair, calling ANY positive whenever any subtype is, was measured on the same
held-out studies and rejected: sensitivity 0.97 -> 0.99 but specificity 0.57 -> 0.20
(`models/EXPERIMENTS.md`, stop 21). Without an ANY column (an evaluation of subtypes only)
each label is decided alone.

`ichviewer evaluate` scores exactly this rule, so the model card's per-subtype sensitivity and
specificity are those of the decisions the reader sees.

**Two tiers for a subtype (stop 26).** The per-label thresholds are chosen for sensitivity, so a
subtype named at them is often wrong: on the held-out set the shipped ensemble's SAH calls had a
PPV of 0.21 and an IPH-only study read "positive for IPH, IVH, SAH". A manifest may therefore also
give each subtype a *specific* threshold (chosen on validation for specificity,
`ichviewer.evaluation.choose_specificity_threshold`, never below the sensitive one). A subtype
called by the rule above is then **positive** when its probability also reaches the specific
threshold and **possible** when it does not; the reader sees "Positive for haemorrhage: IPH;
possible IVH, SAH". The study-level decision and every "decision" field are unchanged (possible
and positive are both calls at the sensitive threshold); the tier is extra information.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: One line for JSON settings and reports.
DECISION_RULE = (
    "ANY positive when its probability >= its threshold; a subtype positive when its probability "
    ">= its own threshold and ANY is positive"
)


#: The tiers of a subtype call (`subtype_tier`), and the line for JSON settings and reports.
POSITIVE_TIER, POSSIBLE_TIER, NEGATIVE_TIER = "positive", "possible", "negative"
TIER_RULE = (
    "a called subtype is 'positive' when its probability also reaches its specific threshold, "
    "'possible' when it does not; without a specific threshold every call is 'positive'"
)


def probability_decimals(probability: float, *thresholds: float | None, least: int = 2, most: int = 4) -> int:
    """The decimals to show a probability and its thresholds with: the fewest from `least` at which
    the rounded figures compare as the exact ones do against every threshold given, so a reader never
    sees a call contradicted by its own numbers (EDH 0.9755 under a threshold of 0.9767 reads 0.976
    against 0.977, not 0.98 "negative" against 0.98; a subtype's specific threshold, which makes a
    call "positive" rather than "possible", counts the same). `most` when even that does not
    separate them; None thresholds are ignored."""
    if not math.isfinite(probability):
        return least
    limits = [t for t in thresholds if t is not None and math.isfinite(t)]
    for d in range(least, most + 1):
        if all((round(probability, d) >= round(t, d)) == (probability >= t) for t in limits):
            return d
    return most


def probability_and_threshold_text(probability: float, threshold: float | None) -> tuple[str, str]:
    """A probability and its threshold as text, with `probability_decimals` decimals each."""
    d = probability_decimals(probability, threshold)
    return f"{probability:.{d}f}", "" if threshold is None else f"{threshold:.{d}f}"


def own_threshold_reached(probability: ArrayLike, threshold: ArrayLike) -> NDArray[np.bool_]:
    """probability >= threshold, elementwise; NaN (not computed) is never reached."""
    p = np.asarray(probability, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(p, nan=-np.inf) >= np.asarray(threshold, dtype=np.float64)


def label_called(label: str, own_reached: ArrayLike, study_positive: ArrayLike) -> NDArray[np.bool_]:
    """The rule itself: ANY is its own threshold; a subtype needs its own threshold and ANY."""
    own = np.asarray(own_reached, dtype=bool)
    return own if label == "ANY" else own & np.asarray(study_positive, dtype=bool)


def case_calls(
    probabilities: Mapping[str, ArrayLike], thresholds: Mapping[str, ArrayLike]
) -> dict[str, NDArray[np.bool_]]:
    """The decision for every label of `probabilities` (scalars or arrays over studies).

    `thresholds` must hold every label of `probabilities`. Returns label -> bool array of the
    probabilities' shape.
    """
    missing = [lab for lab in probabilities if lab not in thresholds]
    if missing:
        raise ValueError(f"no threshold for {missing}")
    own = {lab: own_threshold_reached(p, thresholds[lab]) for lab, p in probabilities.items()}
    if "ANY" not in own:
        return own
    return {lab: label_called(lab, v, own["ANY"]) for lab, v in own.items()}


def subtype_tier(
    called: ArrayLike, probability: ArrayLike, specific_threshold: ArrayLike | None
) -> NDArray[np.str_]:
    """"positive" / "possible" / "negative" per element: `called` is the rule above (`label_called`).

    A call reaching `specific_threshold` (None: no specific threshold, every call is positive) is
    "positive", a call below it "possible", no call "negative".
    """
    call = np.asarray(called, dtype=bool)
    if specific_threshold is None:
        sure = call
    else:
        sure = call & own_threshold_reached(probability, specific_threshold)
    return np.where(sure, POSITIVE_TIER, np.where(call, POSSIBLE_TIER, NEGATIVE_TIER))
