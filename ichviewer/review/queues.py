"""Worklists of difficult cases: difficult for AI, difficult for humans, AI-reader discordance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ichviewer import LABELS
from ichviewer.review.store import ModelCall, ReviewError, ReviewStore

#: Queue kinds, as used by the CLI (`--kind`) and the worklist.
QUEUE_KINDS: tuple[str, ...] = ("ai", "human", "discordant")


@dataclass(frozen=True)
class QueueThresholds:
    """Bounds of the difficult-for-AI queue (Kang et al., Methods 3: <= 0.6 and >= 0.4, inclusive) and discordance.

    `positive_max` / `negative_min` None (default): Kang et al.'s band carried to each run's own
    operating point (`ModelCall.difficult_band`; 0.4-0.6 for a run calling at 0.5). Given, they are
    fixed probabilities for every run, as in Kang et al. (0.6 and 0.4).
    """

    positive_max: float | None = None
    negative_min: float | None = None
    #: Model decision threshold for AI-reader discordance (probability >= threshold is positive).
    #: None: each model run's own call, made at the operating point of the ensemble that ran
    #: (what its reader saw); a run stored without a call is read at 0.5.
    decision: float | None = None

    def __post_init__(self) -> None:
        for name in ("positive_max", "negative_min", "decision"):
            v = getattr(self, name)
            if v is None:
                continue
            if not 0.0 <= v <= 1.0:
                raise ReviewError(f"{name} must be within 0-1, not {v!r}")


@dataclass(frozen=True)
class QueueItem:
    """One case on a worklist, with why it is there."""

    kind: str
    series_uid: str
    study_uid: str | None
    path: str | None
    label: str
    label_value: int | None
    probability: float | None
    reason: str
    #: reader name -> that reader's latest status for `label`
    reads: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_label(label: str) -> str:
    label = label.upper()
    if label not in LABELS:
        raise ReviewError(f"unknown label {label!r}; expected one of {LABELS}")
    return label


@dataclass(frozen=True)
class QueueData:
    """What the queues are computed from, read once per refresh."""

    label: str
    labels: dict[str, int]
    #: series_uid -> the newest model run's probability and call of `label`
    calls: dict[str, ModelCall]
    studies: dict[str, tuple[str | None, str | None]]
    #: series_uid -> {reader name: status in that reader's newest read}
    statuses: dict[str, dict[str, str]]
    #: series_uid -> why its newest model run's series failed the head-CT check (failures only)
    not_head_ct: dict[str, str] = field(default_factory=dict)

    def probability(self, series_uid: str) -> float | None:
        """The newest model run's probability of `label` for a series (None: no run)."""
        call = self.calls.get(series_uid)
        return None if call is None else call.probability

    def ai_caveat(self, series_uid: str) -> str:
        """'' or a note that the model's probability is outside what it was made for."""
        why = self.not_head_ct.get(series_uid)
        return f"; AI output not applicable, not a head CT as trained on ({why})" if why else ""


def load_queue_data(store: ReviewStore, label: str = "ANY") -> QueueData:
    label = _check_label(label)
    names = {rid: name for rid, name in store.conn.execute("SELECT id, name FROM readers")}
    statuses: dict[str, dict[str, str]] = {}
    for (reader_id, series_uid), status in store.latest_statuses(label).items():
        statuses.setdefault(series_uid, {})[names[reader_id]] = status
    studies = {s: (st, p) for s, st, p in store.conn.execute("SELECT series_uid, study_uid, path FROM studies")}
    return QueueData(label, store.labels_at(label), store.latest_model_calls(label), studies, statuses,
                     store.latest_head_check_failures())


def latest_statuses(store: ReviewStore, label: str = "ANY") -> dict[str, dict[str, str]]:
    """series_uid -> {reader name: status of `label` in that reader's newest read of the series}."""
    return load_queue_data(store, label).statuses


def difficult_for_ai(
    store: ReviewStore, *, label: str = "ANY", thresholds: QueueThresholds = QueueThresholds(),
    data: QueueData | None = None,
) -> list[QueueItem]:
    """Labelled positive with probability <= positive_max, or negative with probability >= negative_min.

    Kang et al., Methods 3 ("difficult-for-AI"); both bounds inclusive. Unless the bounds are
    given, each run's are Kang et al.'s band around its own operating point
    (`ModelCall.difficult_band`), so every case the model got wrong at that point is listed.
    Uses the current label version and the newest model run of each series. Most discordant first.
    """
    d = data or load_queue_data(store, label)
    items = []
    for series_uid, value in d.labels.items():
        call = d.calls.get(series_uid)
        if call is None:
            continue
        p = call.probability
        auto_min, auto_max = call.difficult_band()
        lo = auto_min if thresholds.negative_min is None else thresholds.negative_min
        hi = auto_max if thresholds.positive_max is None else thresholds.positive_max
        band = f" (Kang et al.'s band around its operating point {call.operating_point():.3g})"
        if value == 1 and p <= hi:
            reason = (f"labelled positive, {d.label} probability {p:.3f} <= {hi:.3g}"
                      + (band if thresholds.positive_max is None else ""))
        elif value == 0 and p >= lo:
            reason = (f"labelled negative, {d.label} probability {p:.3f} >= {lo:.3g}"
                      + (band if thresholds.negative_min is None else ""))
        else:
            continue
        study_uid, path = d.studies.get(series_uid, (None, None))
        items.append(QueueItem("ai", series_uid, study_uid, path, d.label, value, p, reason + d.ai_caveat(series_uid),
                               d.statuses.get(series_uid, {})))
    items.sort(key=lambda it: (-abs(it.probability - it.label_value), it.series_uid))
    return items


def difficult_for_humans(store: ReviewStore, *, label: str = "ANY", data: QueueData | None = None) -> list[QueueItem]:
    """Series whose readers disagree with each other or with the current label.

    Kang et al., Methods 3 ("difficult-for-humans": annotators not unanimous with the
    ground truth). Each reader counts once, with their newest read; "uncertain"
    disagrees with both present and absent.
    """
    d = data or load_queue_data(store, label)
    items = []
    for series_uid in sorted(d.statuses):
        statuses = d.statuses[series_uid]
        reasons = []
        if len(set(statuses.values())) > 1:
            reasons.append("readers disagree (" + ", ".join(f"{n}: {s}" for n, s in sorted(statuses.items())) + ")")
        value = d.labels.get(series_uid)
        if value is not None:
            expected = "present" if value == 1 else "absent"
            against = [n for n, s in statuses.items() if s != expected]
            if against:
                reasons.append(f"{len(against)} of {len(statuses)} reader(s) disagree with the label ({expected})")
        if not reasons:
            continue
        study_uid, path = d.studies.get(series_uid, (None, None))
        items.append(QueueItem("human", series_uid, study_uid, path, d.label, value,
                               d.probability(series_uid), "; ".join(reasons), statuses))
    return items


def discordant(
    store: ReviewStore,
    reader: str,
    *,
    label: str = "ANY",
    thresholds: QueueThresholds = QueueThresholds(),
    include_uncertain: bool = True,
    data: QueueData | None = None,
) -> list[QueueItem]:
    """The reader's own cases where their newest read differs from the model's decision.

    The model's decision is each run's own call (its ensemble's operating point, what the
    reader was shown), or probability >= `thresholds.decision` when that is given. An
    "uncertain" read counts as discordant unless `include_uncertain` is False.
    """
    found = store.reader(reader)
    if found is None:
        raise ReviewError(f"unknown reader {reader!r}")
    d = data or load_queue_data(store, label)
    items = []
    for series_uid in sorted(d.statuses):
        statuses = d.statuses[series_uid]
        status = statuses.get(found.name)
        call = d.calls.get(series_uid)
        if status is None or call is None:
            continue
        model = "present" if call.called(thresholds.decision) else "absent"
        if status == model or (status == "uncertain" and not include_uncertain):
            continue
        p = call.probability
        reason = f"{found.name}: {status}; model: {call.describe(thresholds.decision)}" + d.ai_caveat(series_uid)
        study_uid, path = d.studies.get(series_uid, (None, None))
        items.append(QueueItem("discordant", series_uid, study_uid, path, d.label, d.labels.get(series_uid), p,
                               reason, statuses))
    return items


def build_queue(
    store: ReviewStore,
    kind: str,
    *,
    reader: str | None = None,
    label: str = "ANY",
    thresholds: QueueThresholds = QueueThresholds(),
    data: QueueData | None = None,
) -> list[QueueItem]:
    """The queue of `kind` (one of QUEUE_KINDS); `discordant` needs `reader`."""
    if kind == "ai":
        return difficult_for_ai(store, label=label, thresholds=thresholds, data=data)
    if kind == "human":
        return difficult_for_humans(store, label=label, data=data)
    if kind == "discordant":
        if not reader:
            raise ReviewError("the discordant queue is per reader: give the reader's name")
        return discordant(store, reader, label=label, thresholds=thresholds, data=data)
    raise ReviewError(f"unknown queue kind {kind!r}; expected one of {QUEUE_KINDS}")


def build_queues(
    store: ReviewStore, *, reader: str | None = None, label: str = "ANY",
    thresholds: QueueThresholds = QueueThresholds(),
) -> dict[str, list[QueueItem]]:
    """Every queue at once from one read of the database (discordant is empty without a known reader)."""
    data = load_queue_data(store, label)
    queues = {
        "ai": difficult_for_ai(store, thresholds=thresholds, data=data),
        "human": difficult_for_humans(store, data=data),
        "discordant": [],
    }
    if reader and store.reader(reader) is not None:
        queues["discordant"] = discordant(store, reader, thresholds=thresholds, data=data)
    return queues


def queue_counts(
    store: ReviewStore, *, reader: str | None = None, label: str = "ANY",
    thresholds: QueueThresholds = QueueThresholds(),
) -> dict[str, int]:
    """Number of cases on each queue (discordant is 0 without a known reader)."""
    return {k: len(v) for k, v in build_queues(store, reader=reader, label=label, thresholds=thresholds).items()}
