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
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: One line for JSON settings and reports.
DECISION_RULE = (
    "ANY positive when its probability >= its threshold; a subtype positive when its probability "
    ">= its own threshold and ANY is positive"
)


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
