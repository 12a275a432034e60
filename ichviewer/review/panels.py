"""Expert panels: blinded re-reading of difficult cases and consensus amendment of the ground truth."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ichviewer import LABELS
from ichviewer.review.queues import QueueThresholds, build_queue
from ichviewer.review.schema import VOTE_VALUES
from ichviewer.review.store import LabelVersion, Reader, ReviewError, ReviewStore, utc_now


@dataclass(frozen=True)
class ConsensusRule:
    """When a panel amends a label: at least `required(n)` of its n members vote against it.

    Default: a majority of the panel, floor(n * 0.5) + 1, i.e. 4 of 6 as in Kang et al.
    (Methods 3, "amend the ground truth with a majority (4 or higher) vote").
    `min_disagree` fixes the count instead.
    """

    majority_fraction: float = 0.5
    min_disagree: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.majority_fraction < 1.0:
            raise ReviewError(f"majority_fraction must be strictly between 0 and 1, not {self.majority_fraction!r}")
        if self.min_disagree is not None and self.min_disagree < 1:
            raise ReviewError(f"min_disagree must be at least 1, not {self.min_disagree!r}")

    def required(self, n_members: int) -> int:
        if self.min_disagree is not None:
            return self.min_disagree
        return math.floor(n_members * self.majority_fraction) + 1


@dataclass(frozen=True)
class Panel:
    id: int
    name: str
    source_queue: str
    labels: tuple[str, ...]
    blinded: bool
    rule: ConsensusRule
    status: str
    created_by: str
    created_at: str


@dataclass(frozen=True)
class CaseView:
    """What one panel member may see of one case. Hidden parts are None."""

    panel_id: int
    series_uid: str
    study_uid: str | None
    path: str | None
    labels: tuple[str, ...]
    #: True when the member has voted on every panel label of this case.
    voted: bool
    own_votes: dict[str, str]
    #: Whether model output, others' votes and the reference label are being withheld.
    blinded: bool
    #: {LABEL: probability} of the newest model run, or None while blinded.
    model: dict[str, float] | None
    #: Other members' votes [{reader, label, value, note}], or None while blinded.
    votes: list[dict[str, Any]] | None
    #: Current reference label {LABEL: 0/1}, or None while blinded.
    reference: dict[str, int] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ConsensusOutcome:
    series_uid: str
    label: str
    current_value: int | None
    n_members: int
    n_votes: int
    votes_present: int
    votes_absent: int
    disagree: int
    required: int
    amend: bool
    new_value: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _panel_row(store: ReviewStore, panel_id: int) -> Panel:
    rows = store.query("SELECT * FROM panels WHERE id = ?", (panel_id,))
    if not rows:
        raise ReviewError(f"no panel with id {panel_id}")
    r = rows[0]
    return Panel(
        id=r["id"], name=r["name"], source_queue=r["source_queue"], labels=tuple(r["labels"].split(",")),
        blinded=bool(r["blinded"]), rule=ConsensusRule(r["majority_fraction"], r["min_disagree"]),
        status=r["status"], created_by=r["created_by"], created_at=r["created_at"],
    )


def get_panel(store: ReviewStore, panel_id: int) -> Panel:
    return _panel_row(store, panel_id)


def list_panels(store: ReviewStore) -> list[Panel]:
    return [_panel_row(store, r[0]) for r in store.conn.execute("SELECT id FROM panels ORDER BY id")]


def create_panel(
    store: ReviewStore,
    name: str,
    *,
    queue: str | None = None,
    reader: str | None = None,
    queue_label: str = "ANY",
    thresholds: QueueThresholds = QueueThresholds(),
    series_uids: Iterable[str] = (),
    labels: Iterable[str] = ("ANY",),
    blinded: bool = True,
    rule: ConsensusRule = ConsensusRule(),
) -> Panel:
    """Create a panel holding the cases of a queue (`queue` = ai|human|discordant) and/or given series.

    `labels` are the labels members vote on (Kang et al. voted on presence of ICH: ANY).
    """
    name = (name or "").strip()
    if not name:
        raise ReviewError("a panel needs a name")
    labels = tuple(dict.fromkeys(lab.upper() for lab in labels))
    if not labels or any(lab not in LABELS for lab in labels):
        raise ReviewError(f"panel labels must be among {LABELS}, not {labels}")
    cases: dict[str, str] = {}
    if queue is not None:
        for item in build_queue(store, queue, reader=reader, label=queue_label, thresholds=thresholds):
            cases.setdefault(item.series_uid, f"{queue}: {item.reason}")
    for uid in series_uids:
        cases.setdefault(uid, "added by hand")
    if not cases:
        raise ReviewError("the panel would have no cases: the queue is empty and no series were given")
    now = utc_now()
    with store.write():
        known = {r[0] for r in store.conn.execute("SELECT series_uid FROM studies")}
        unknown = sorted(set(cases) - known)
        if unknown:
            raise ReviewError(f"unknown series: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
        panel_id = store.conn.execute(
            "INSERT INTO panels (name, source_queue, labels, blinded, majority_fraction, min_disagree,"
            " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (name, queue or "", ",".join(labels), int(blinded), rule.majority_fraction, rule.min_disagree,
             store.actor, now),
        ).lastrowid
        store.conn.executemany(
            "INSERT INTO panel_cases (panel_id, series_uid, reason, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
            [(panel_id, uid, reason, store.actor, now) for uid, reason in cases.items()],
        )
    return _panel_row(store, int(panel_id))


def _require_open(panel: Panel) -> None:
    if panel.status != "open":
        raise ReviewError(f"panel {panel.id} ({panel.name}) is closed")


def add_member(store: ReviewStore, panel_id: int, reader: str | Reader, *, role: str = "panel") -> Reader:
    """Add a reader to a panel (creating the reader with `role` if the name is new)."""
    panel = _panel_row(store, panel_id)
    _require_open(panel)
    if isinstance(reader, str):
        reader = store.reader(reader) or store.add_reader(reader, role)
    try:
        with store.write():
            store.conn.execute(
                "INSERT INTO panel_members (panel_id, reader_id, created_by, created_at) VALUES (?, ?, ?, ?)",
                (panel_id, reader.id, store.actor, utc_now()),
            )
    except sqlite3.IntegrityError:
        raise ReviewError(f"{reader.name} is already a member of panel {panel_id}") from None
    return reader


def members(store: ReviewStore, panel_id: int) -> list[Reader]:
    return [Reader(*r) for r in store.conn.execute(
        "SELECT rd.id, rd.name, rd.role FROM panel_members pm JOIN readers rd ON rd.id = pm.reader_id"
        " WHERE pm.panel_id = ? ORDER BY pm.rowid", (panel_id,))]


def panel_cases(store: ReviewStore, panel_id: int, *, reader: str | None = None) -> list[dict[str, Any]]:
    """The panel's cases with vote counts; with `reader`, also whether that reader has voted."""
    panel = _panel_row(store, panel_id)
    rows = store.query(
        "SELECT pc.series_uid, pc.reason, s.study_uid, s.path,"
        " (SELECT count(DISTINCT reader_id) FROM votes v WHERE v.panel_id = pc.panel_id"
        "  AND v.series_uid = pc.series_uid) AS n_voters"
        " FROM panel_cases pc JOIN studies s ON s.series_uid = pc.series_uid WHERE pc.panel_id = ?"
        " ORDER BY pc.rowid", (panel_id,))
    if reader is not None:
        for row in rows:
            row["voted"] = _has_voted(store, panel, reader, row["series_uid"])
    return rows


def _reader_in_panel(store: ReviewStore, panel: Panel, reader: str | Reader) -> Reader:
    found = reader if isinstance(reader, Reader) else store.reader(reader)
    if found is None:
        raise ReviewError(f"unknown reader {reader!r}")
    ok = store.conn.execute("SELECT 1 FROM panel_members WHERE panel_id = ? AND reader_id = ?",
                            (panel.id, found.id)).fetchone()
    if not ok:
        raise ReviewError(f"{found.name} is not a member of panel {panel.id} ({panel.name})")
    return found


def _own_votes(store: ReviewStore, panel_id: int, reader_id: int, series_uid: str) -> dict[str, str]:
    return dict(store.conn.execute(
        "SELECT label, value FROM votes WHERE panel_id = ? AND reader_id = ? AND series_uid = ?",
        (panel_id, reader_id, series_uid)).fetchall())


def _has_voted(store: ReviewStore, panel: Panel, reader: str | Reader, series_uid: str) -> bool:
    found = reader if isinstance(reader, Reader) else store.reader(reader)
    if found is None:
        return False
    return set(_own_votes(store, panel.id, found.id, series_uid)) >= set(panel.labels)


def cases_hidden_from(store: ReviewStore, panel_id: int, reader: str | Reader) -> set[str]:
    """The panel's cases whose AI output `member_view` hides from `reader` (a blinded panel, no vote
    on every label yet), in one query; refuses a reader who is not a member, as `member_view` does."""
    panel = _panel_row(store, panel_id)
    member = _reader_in_panel(store, panel, reader)
    if not panel.blinded:
        return set()
    voted: dict[str, set[str]] = {}
    for uid, label in store.conn.execute(
            "SELECT series_uid, label FROM votes WHERE panel_id = ? AND reader_id = ?", (panel.id, member.id)):
        voted.setdefault(uid, set()).add(label)
    need = set(panel.labels)
    return {uid for (uid,) in store.conn.execute("SELECT series_uid FROM panel_cases WHERE panel_id = ?", (panel.id,))
            if not voted.get(uid, set()) >= need}


def _check_case(store: ReviewStore, panel: Panel, series_uid: str) -> None:
    if not store.conn.execute("SELECT 1 FROM panel_cases WHERE panel_id = ? AND series_uid = ?",
                              (panel.id, series_uid)).fetchone():
        raise ReviewError(f"series {series_uid} is not a case of panel {panel.id} ({panel.name})")


def cast_vote(
    store: ReviewStore,
    panel_id: int,
    reader: str | Reader,
    series_uid: str,
    values: Mapping[str, str] | str,
    *,
    note: str = "",
) -> list[int]:
    """Record a member's vote (present/absent for every panel label) on one case; committed on return.

    A plain string votes on a single-label panel. Votes are final: a member votes once per case.
    """
    panel = _panel_row(store, panel_id)
    _require_open(panel)
    member = _reader_in_panel(store, panel, reader)
    _check_case(store, panel, series_uid)
    if isinstance(values, str):
        if len(panel.labels) != 1:
            raise ReviewError(f"panel {panel_id} votes on {panel.labels}: give a value for each")
        values = {panel.labels[0]: values}
    values = {k.upper(): v for k, v in values.items()}
    if set(values) != set(panel.labels):
        raise ReviewError(f"panel {panel_id} votes on {list(panel.labels)}; got {sorted(values)}")
    for lab, v in values.items():
        if v not in VOTE_VALUES:
            raise ReviewError(f"vote for {lab} must be one of {VOTE_VALUES}, not {v!r}")
    now = utc_now()
    ids = []
    try:
        with store.write():
            for lab in panel.labels:
                ids.append(int(store.conn.execute(
                    "INSERT INTO votes (panel_id, series_uid, reader_id, label, value, note, created_by, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (panel_id, series_uid, member.id, lab, values[lab], note or "", member.name, now),
                ).lastrowid))
    except sqlite3.IntegrityError:
        raise ReviewError(f"{member.name} has already voted on {series_uid} in panel {panel_id}") from None
    return ids


def member_view(store: ReviewStore, panel_id: int, reader: str | Reader, series_uid: str) -> CaseView:
    """What `reader` may see of a case: blinded panels hide the model's output, the other
    members' votes and the reference label until the reader's own vote is in."""
    panel = _panel_row(store, panel_id)
    member = _reader_in_panel(store, panel, reader)
    _check_case(store, panel, series_uid)
    own = _own_votes(store, panel.id, member.id, series_uid)
    voted = set(own) >= set(panel.labels)
    hidden = panel.blinded and not voted
    study = store.study(series_uid) or {}
    model = votes = reference = None
    if not hidden:
        run = store.latest_model_run(series_uid)
        model = dict(run["labels"]) if run else {}
        votes = store.query(
            "SELECT rd.name AS reader, v.label, v.value, v.note FROM votes v JOIN readers rd ON rd.id = v.reader_id"
            " WHERE v.panel_id = ? AND v.series_uid = ? AND v.reader_id != ? ORDER BY v.id",
            (panel.id, series_uid, member.id))
        reference = {}
        for lab in panel.labels:
            cur = store.current_label(series_uid, lab)
            if cur is not None:
                reference[lab] = cur.value
    return CaseView(panel.id, series_uid, study.get("study_uid"), study.get("path"), panel.labels, voted, own,
                    hidden, model, votes, reference)


def evaluate_consensus(store: ReviewStore, panel_id: int) -> list[ConsensusOutcome]:
    """Apply the panel's consensus rule to the votes so far, without writing anything."""
    panel = _panel_row(store, panel_id)
    n_members = len(members(store, panel_id))
    required = panel.rule.required(n_members)
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for series_uid, label, value, n in store.conn.execute(
        "SELECT series_uid, label, value, count(*) FROM votes WHERE panel_id = ? GROUP BY series_uid, label, value",
        (panel_id,),
    ):
        counts.setdefault((series_uid, label), {})[value] = n
    outcomes = []
    for (series_uid,) in store.conn.execute(
            "SELECT series_uid FROM panel_cases WHERE panel_id = ? ORDER BY rowid", (panel_id,)).fetchall():
        for lab in panel.labels:
            c = counts.get((series_uid, lab), {})
            present, absent = c.get("present", 0), c.get("absent", 0)
            cur = store.current_label(series_uid, lab)
            current = None if cur is None else cur.value
            if current is None:
                # No reference yet: the panel sets one if a qualifying majority agrees.
                disagree = 0
                new = 1 if present >= required else 0 if absent >= required else None
                amend = new is not None
            else:
                disagree = absent if current == 1 else present
                amend = disagree >= required
                new = (1 - current) if amend else None
            outcomes.append(ConsensusOutcome(series_uid, lab, current, n_members, present + absent, present, absent,
                                             disagree, required, amend, new))
    return outcomes


def close_panel(store: ReviewStore, panel_id: int, *, reason: str = "") -> list[LabelVersion]:
    """Close the panel and amend every label its consensus rule overturns; return the new label versions.

    Each amendment is a new label version keeping the old value, the vote count and the reason.
    """
    panel = _panel_row(store, panel_id)
    _require_open(panel)
    amendments: list[LabelVersion] = []
    with store.write():
        for out in evaluate_consensus(store, panel_id):
            if not out.amend:
                continue
            what = ("sets" if out.current_value is None else "amends")
            why = (f"panel {panel.id} ({panel.name}) consensus {what} {out.label}: "
                   f"{out.votes_present} present, {out.votes_absent} absent of {out.n_members} members "
                   f"(rule: at least {out.required} against the label)")
            if reason:
                why += f"; {reason}"
            version = store.set_label(
                out.series_uid, out.label, out.new_value, source=f"panel:{panel.id}", reason=why,
                panel_id=panel.id,
                votes_disagree=out.disagree if out.current_value is not None else max(out.votes_present, out.votes_absent),
                votes_total=out.n_votes,
            )
            if version is not None:
                amendments.append(version)
        store.conn.execute(
            "UPDATE panels SET status = 'closed', closed_by = ?, closed_at = ? WHERE id = ?",
            (store.actor, utc_now(), panel_id))
    return amendments


@dataclass
class PanelSummary:
    panel: Panel
    members: list[str] = field(default_factory=list)
    n_cases: int = 0
    n_complete: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["panel"]["labels"] = list(self.panel.labels)
        return d


def summarize_panel(store: ReviewStore, panel_id: int) -> PanelSummary:
    panel = _panel_row(store, panel_id)
    mem = members(store, panel_id)
    cases = panel_cases(store, panel_id)
    complete = sum(1 for c in cases if mem and c["n_voters"] >= len(mem))
    return PanelSummary(panel, [m.name for m in mem], len(cases), complete)
