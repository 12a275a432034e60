"""Findings: per-slice probabilities -> case probabilities, decisions at the operating points, triage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ichviewer import LABELS, SUBTYPES
from ichviewer.core import decisions
from ichviewer.core.applicability import HeadCTCheck
from ichviewer.inference.manifest import Aggregation, OperatingPoints
from ichviewer.inference.model import ModelInfo

CONFIDENT_NEGATIVE = "confident negative"
CONFIDENT_POSITIVE = "confident positive"
REFER = "refer"
TRIAGE_CLASSES = (CONFIDENT_NEGATIVE, CONFIDENT_POSITIVE, REFER)
POSITIVE, NEGATIVE = "positive", "negative"


#: Columns of the five subtypes and of ANY in a (..., len(LABELS)) probability array.
SUBTYPE_COLUMNS = [LABELS.index(s) for s in SUBTYPES]
ANY_COLUMN = LABELS.index("ANY")


def apply_any_rule(slice_probabilities: np.ndarray, rule: str = "model") -> np.ndarray:
    """(..., 6) probabilities with ANY per the manifest's `aggregation.any` rule (a new array).

    "model": unchanged (the networks' own ANY output). "noisy-or": ANY = 1 - prod(1 - p_s)
    over the five subtypes, the probability of at least one subtype if they were independent.
    Chosen for the bundled ensemble on the development set, where the subtype heads (trained
    with the larger Eq. 3 weights of rare labels) find small bleeds that the ANY head misses
    (models/EXPERIMENTS.md, stop 19). NaN rows stay NaN.
    """
    p = np.array(slice_probabilities, dtype=np.float64)
    if rule == "model":
        return p
    if rule != "noisy-or":
        raise ValueError(f"unknown ANY rule {rule!r}")
    p[..., ANY_COLUMN] = 1.0 - np.prod(1.0 - p[..., SUBTYPE_COLUMNS], axis=-1)
    return p


def aggregate(slice_probabilities: np.ndarray, aggregation: Aggregation = Aggregation()) -> np.ndarray:
    """(z, 6) slice probabilities -> (6,) case probabilities, ignoring slices not yet computed (NaN).

    All-NaN (nothing computed yet) gives NaN.
    """
    p = np.asarray(slice_probabilities, dtype=np.float64)
    done = ~np.isnan(p).any(axis=1)
    p = p[done]
    if p.shape[0] == 0:
        return np.full(len(LABELS), np.nan)
    if aggregation.method == "max":
        return p.max(axis=0)
    if aggregation.method == "mean":
        return p.mean(axis=0)
    k = min(aggregation.k, p.shape[0])
    return np.sort(p, axis=0)[-k:].mean(axis=0)  # top_k_mean


def triage(case_probabilities: np.ndarray, op: OperatingPoints) -> str:
    """DeepRadiologyNet-style triage on the case probability of `op.triage_label`."""
    p = float(np.asarray(case_probabilities)[LABELS.index(op.triage_label)])
    if np.isnan(p):
        return REFER
    if p < op.negative_below:
        return CONFIDENT_NEGATIVE
    if p > op.positive_above:
        return CONFIDENT_POSITIVE
    return REFER


@dataclass(frozen=True)
class LabelFinding:
    """Case-level result for one label: probability, decision ("positive"/"negative") and its threshold.

    `study_positive` is the study's ANY decision (`ichviewer.core.decisions`): a subtype is
    positive only when its own threshold is reached and the study is positive for
    haemorrhage. For ANY itself it is its own decision.
    """

    label: str
    probability: float
    threshold: float
    study_positive: bool = True
    #: The subtype's specific threshold (`OperatingPoints.specific_thresholds`): a call reaching it
    #: is "positive", one below it "possible". None: one tier (ANY, or a manifest without them).
    specific_threshold: float | None = None

    @property
    def own_threshold_reached(self) -> bool:
        return bool(decisions.own_threshold_reached(self.probability, self.threshold))

    @property
    def positive(self) -> bool:
        return bool(decisions.label_called(self.label, self.own_threshold_reached, self.study_positive))

    @property
    def held_back(self) -> bool:
        """A subtype that reaches its own threshold in a study not called positive for haemorrhage."""
        return self.own_threshold_reached and not self.positive

    @property
    def decision(self) -> str:
        return POSITIVE if self.positive else NEGATIVE

    @property
    def tier(self) -> str:
        """"positive", "possible" (called, below the specific threshold) or "negative" (`decisions.subtype_tier`)."""
        return str(decisions.subtype_tier(self.positive, self.probability, self.specific_threshold))

    @property
    def possible(self) -> bool:
        return self.tier == decisions.POSSIBLE_TIER

    def to_dict(self) -> dict[str, Any]:
        """The `ichviewer.infer/1` case entry; "tier" (and "specific_threshold" when the manifest gives one) refine "decision"."""
        out = {
            "probability": float(self.probability),
            "decision": self.decision,
            "threshold": float(self.threshold),
            "own_threshold_reached": self.own_threshold_reached,
            "tier": self.tier,
        }
        if self.specific_threshold is not None:
            out["specific_threshold"] = float(self.specific_threshold)
        return out


@dataclass(frozen=True, eq=False)
class StudyResult:
    """The ensemble's findings for one series: an immutable snapshot (partial while running).

    `slice_probabilities` (z, 6) in LABELS order and ascending slice order; rows of
    slices not yet computed are NaN. `member_probabilities` (n_models, z, 6) holds
    each model's interpolation-combined probabilities. `case`, `triage` and the
    decisions are computed from the slices done so far.

    `head_check` is `ichviewer.core.applicability.check_head_ct` of the series (None: not
    checked). A series that does not look like a head CT keeps its probabilities and
    decisions, but its triage is "refer": the ensemble is never "confident" about an input
    unlike anything it was made for. `incomplete` is the loader's warning when part of the series
    is missing (files it could not read, gaps: `ichviewer.core.volume.incomplete_series`); the
    triage is "refer" then too, since the AI has not seen the whole head (a confident negative on
    a series with slices missing would be a guess about the slices it never saw).

    `restored` is set (to when the findings were computed, "YYYY-MM-DD HH:MM") when the result
    was not computed now but kept from an earlier run on the same voxels by the same models
    (`ichviewer.inference.result_cache`); `provider` and `seconds` are that run's.
    """

    study_uid: str
    series_uid: str
    slice_probabilities: np.ndarray
    member_probabilities: np.ndarray
    operating_points: OperatingPoints
    aggregation: Aggregation
    models: tuple[ModelInfo, ...]
    provider: str
    seconds: float
    request_id: Any = None
    complete: bool = False
    head_check: HeadCTCheck | None = None
    incomplete: str = ""
    restored: str = ""
    case_probabilities: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        p = np.array(self.slice_probabilities, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(LABELS):
            raise ValueError(f"slice probabilities must be (z, {len(LABELS)}), got {p.shape}")
        p.setflags(write=False)
        m = np.array(self.member_probabilities, dtype=np.float64)
        m.setflags(write=False)
        object.__setattr__(self, "slice_probabilities", p)
        object.__setattr__(self, "member_probabilities", m)
        case = aggregate(p, self.aggregation)
        case.setflags(write=False)
        object.__setattr__(self, "case_probabilities", case)

    @property
    def n_slices(self) -> int:
        return int(self.slice_probabilities.shape[0])

    @property
    def slices_done(self) -> int:
        return int((~np.isnan(self.slice_probabilities).any(axis=1)).sum())

    @property
    def study_positive(self) -> bool:
        """The study is called positive for haemorrhage (ANY at or above its threshold)."""
        return bool(decisions.own_threshold_reached(self.case_probabilities[ANY_COLUMN], self.operating_points.thresholds["ANY"]))

    @property
    def case(self) -> dict[str, LabelFinding]:
        ops = self.operating_points
        study = self.study_positive
        return {
            label: LabelFinding(label, float(self.case_probabilities[i]), ops.thresholds[label], study,
                                ops.specific_threshold(label))
            for i, label in enumerate(LABELS)
        }

    @property
    def applicable(self) -> bool:
        """False when the series does not look like a head CT (see `head_check`)."""
        return self.head_check is None or self.head_check.applicable

    @property
    def triage(self) -> str:
        if not self.applicable or self.incomplete:
            return REFER
        return triage(self.case_probabilities, self.operating_points)

    def slice_decisions(self, label: str) -> np.ndarray:
        """(z,) bool: slices whose probability for `label` reaches its threshold (False where not computed).

        For a subtype, none in a study not called positive for haemorrhage (the case rule of
        `ichviewer.core.decisions`, so the slice marks never contradict the case decision).
        """
        col = self.slice_probabilities[:, LABELS.index(label)]
        own = decisions.own_threshold_reached(col, self.operating_points.thresholds[label])
        return decisions.label_called(label, own, self.study_positive)

    def positive_slices(self, label: str = "ANY") -> list[int]:
        return [int(i) for i in np.flatnonzero(self.slice_decisions(label))]

    def to_dict(self) -> dict[str, Any]:
        """The per-study object of the `ichviewer.infer/1` JSON schema (without "path")."""
        if not self.complete:
            raise ValueError("only a complete result can be written (this one is partial or cancelled)")
        return {
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "n_slices": self.n_slices,
            "case": {label: f.to_dict() for label, f in self.case.items()},
            "triage": self.triage,
            "head_check": None if self.head_check is None else self.head_check.to_dict(),
            "incomplete": self.incomplete,
            "slices": [
                {"index": i, **{label: float(self.slice_probabilities[i, j]) for j, label in enumerate(LABELS)}}
                for i in range(self.n_slices)
            ],
            "models": [m.to_dict() for m in self.models],
            "provider": self.provider,
            "seconds": round(float(self.seconds), 3),
            **({"restored": self.restored} if self.restored else {}),
        }
