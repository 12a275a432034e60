"""The review database: one SQLite file holding studies, model runs, readers, reads and labels."""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from ichviewer import LABELS
from ichviewer.core.decisions import POSSIBLE_TIER
from ichviewer.core.measurements import Measurement, MeasurementError
from ichviewer.review.schema import AI_ACTIONS, READ_STATUSES, ROLES, apply_migrations


class ReviewError(ValueError):
    """Bad input for the review database (unknown reader, invalid read, malformed file...)."""


#: Where a model run stored no call of its own (runs imported without "decision"), it is
#: read as positive at this probability.
FALLBACK_MODEL_THRESHOLD = 0.5
#: Kang et al.'s difficult-for-AI band, 0.4 to 0.6 around their 0.5 decision, as an odds ratio
#: either side of the decision (odds 0.6 / 0.4 = 1.5), so that it can be carried to another
#: operating point.
KANG_BAND_ODDS_RATIO = 1.5


@dataclass(frozen=True)
class ModelCall:
    """What one model run said about one label: its probability and, when stored, its call.

    `decision` (1 positive, 0 negative) is the call of the ensemble's own operating point, the
    one its reader saw; `tier` refines a subtype's call ("positive" / "possible" / "negative";
    None when the ensemble had no specific threshold or the run predates the column).
    """

    probability: float
    decision: int | None = None
    threshold: float | None = None
    tier: str | None = None
    specific_threshold: float | None = None

    def called(self, threshold: float | None = None) -> int:
        """1 when positive: at `threshold` when given, else the run's own call; a run that stored a
        threshold but no call is called at that threshold (its `operating_point`), one with neither at 0.5."""
        if threshold is not None:
            return int(self.probability >= threshold)
        if self.decision is not None:
            return int(self.decision)
        return int(self.probability >= self.operating_point())

    def operating_point(self) -> float:
        """The threshold the run's call was made at (0.5 for a run stored without one)."""
        return FALLBACK_MODEL_THRESHOLD if self.threshold is None else float(self.threshold)

    def difficult_band(self) -> tuple[float, float]:
        """(negative_min, positive_max): Kang et al.'s 0.4-0.6 band carried to this run's operating point.

        Kang et al. call a case difficult for the AI when a haemorrhage scores <= 0.6 or a normal
        scan >= 0.4, a band around their 0.5 decision. An ensemble calling at another threshold
        (the bundled one's ANY is 0.684, its SAH 0.12) gets the same band in odds around its own
        threshold, so every case it got wrong at that threshold is inside it, as in Kang et al.
        At a threshold of 0.5 it is exactly 0.4-0.6.
        """
        t = min(max(self.operating_point(), 1e-6), 1 - 1e-6)
        odds = t / (1 - t)
        r = KANG_BAND_ODDS_RATIO
        return odds / (r + odds), r * odds / (1 + r * odds)

    def describe(self, threshold: float | None = None) -> str:
        """'present (p=0.712, its operating point 0.684)': the call and the rule that made it."""
        call = "present" if self.called(threshold) else "absent"
        if threshold is not None:
            rule = f"threshold {threshold:g}"
        elif self.decision is not None:
            rule = "its operating point" if self.threshold is None else f"its operating point {self.threshold:.3g}"
            if self.tier == POSSIBLE_TIER:
                call += ", possible tier"
        elif self.threshold is not None:
            rule = f"its stored threshold {self.threshold:.3g}, no call stored"
        else:
            rule = f"threshold {FALLBACK_MODEL_THRESHOLD:g}, no call stored"
        return f"{call} (p={self.probability:.3f}, {rule})"


def utc_now() -> str:
    """ISO 8601 UTC timestamp with microseconds, the format of every `created_at`."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def default_actor() -> str:
    """Who the operating system says is running this process (for imports and admin actions)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name (e.g. some containers)
        return f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"


@dataclass(frozen=True)
class Reader:
    """A person who reads studies or sits on a panel."""

    id: int
    name: str
    role: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ReviewError(f"reader role must be one of {ROLES}, not {self.role!r}")


@dataclass(frozen=True)
class Read:
    """One reader's verdict on one series.

    `statuses` maps labels (ichviewer.LABELS) to present/absent/uncertain; ANY is
    required, subtypes are optional (not assessed). `confidence` maps labels to a
    1-5 Likert score. `ai` maps labels to what the reader did with the AI finding
    for that label: accept, reject or supplement (IHE AI Results profile).
    """

    series_uid: str
    statuses: Mapping[str, str]
    confidence: Mapping[str, int] = field(default_factory=dict)
    ai: Mapping[str, str] = field(default_factory=dict)
    note: str = ""
    seconds_spent: float | None = None
    study_uid: str | None = None
    model_run_id: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.series_uid, str) or not self.series_uid.strip():
            raise ReviewError("a read needs a non-empty series_uid")
        statuses = {str(k).upper(): v for k, v in dict(self.statuses).items()}
        confidence = {str(k).upper(): v for k, v in dict(self.confidence).items()}
        ai = {str(k).upper(): v for k, v in dict(self.ai).items()}
        for name, mapping in (("statuses", statuses), ("confidence", confidence), ("ai", ai)):
            unknown = set(mapping) - set(LABELS)
            if unknown:
                raise ReviewError(f"read {name}: unknown label(s) {sorted(unknown)}; expected {LABELS}")
        if "ANY" not in statuses:
            raise ReviewError("a read must give a status for ANY (present, absent or uncertain)")
        for label, status in statuses.items():
            if status not in READ_STATUSES:
                raise ReviewError(f"read status for {label} must be one of {READ_STATUSES}, not {status!r}")
        for label, value in confidence.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
                raise ReviewError(f"confidence for {label} must be an integer 1-5, not {value!r}")
        for label, action in ai.items():
            if action not in AI_ACTIONS:
                raise ReviewError(f"AI finding action for {label} must be one of {AI_ACTIONS}, not {action!r}")
        if statuses["ANY"] == "absent":
            present = [lab for lab, s in statuses.items() if lab != "ANY" and s == "present"]
            if present:
                raise ReviewError(f"ANY is absent but subtype(s) {present} are present")
        if self.seconds_spent is not None and not self.seconds_spent >= 0:
            raise ReviewError(f"seconds_spent must be >= 0, not {self.seconds_spent!r}")
        object.__setattr__(self, "statuses", statuses)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "ai", ai)


@dataclass(frozen=True)
class LabelVersion:
    """One version of the ground-truth value of one label of one series."""

    id: int
    series_uid: str
    label: str
    version: int
    value: int
    previous_value: int | None
    source: str
    reason: str
    panel_id: int | None
    votes_disagree: int | None
    votes_total: int | None
    created_by: str
    created_at: str


_READ_COLUMNS = ["series_uid", "reader_id", "model_run_id"]
for _lab in LABELS:
    _READ_COLUMNS += [f"{_lab.lower()}_status", f"{_lab.lower()}_confidence", f"{_lab.lower()}_ai"]
_READ_COLUMNS += ["note", "seconds_spent", "created_by", "created_at"]
_INSERT_READ_SQL = (
    f"INSERT INTO reads ({', '.join(_READ_COLUMNS)}) VALUES ({', '.join('?' * len(_READ_COLUMNS))})"
)


def _enable_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch the file to WAL mode (persistent), waiting while another process holds a lock.

    SQLite can answer the journal-mode change with "database is locked" at once, without
    its busy handler, when another connection is opening or migrating the same new file at
    that moment (two readers starting together). WAL is a property of the file, so once
    either connection has switched it the other only has to see it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=wal")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class ReviewStore:
    """Connection to one review database file.

    Opening applies pending migrations, turns on WAL and foreign keys, and sets a
    busy timeout so several processes can write to the same file. Every write
    method commits before it returns. Use one store per thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        actor: str | None = None,
        busy_timeout_ms: int = 30_000,
        synchronous: str = "FULL",
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ReviewError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        if self.path.is_dir():
            raise ReviewError(f"{self.path}: is a directory, not a review database file")
        if not self.path.parent.exists():
            raise ReviewError(f"{self.path}: folder {self.path.parent} does not exist")
        self.actor = actor or default_actor()
        try:
            conn = sqlite3.connect(str(self.path), timeout=busy_timeout_ms / 1000)
            self.conn = conn
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self.db = Database(conn, strict=True)
            _enable_wal(conn, busy_timeout_ms / 1000)
            # FULL: in WAL mode each commit is fsynced, so a saved read survives a
            # power cut, not only a crash of the app.
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys = ON")
            self.applied_migrations = apply_migrations(self.db)
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self.conn.close()
            raise ReviewError(f"{self.path}: not a usable review database ({exc})") from exc

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[Database]:
        """A write transaction: BEGIN IMMEDIATE ... COMMIT, or a savepoint when nested.

        IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so
        two processes never deadlock upgrading a read lock; when the block exits the
        changes are committed to disk.
        """
        if self.conn.in_transaction:
            with self.db.atomic():
                yield self.db
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            with self.db.atomic():  # savepoint: sqlite-utils helpers nest correctly
                yield self.db
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            # Never leave a failed commit's transaction open to swallow later writes.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts."""
        return list(self.db.query(sql, params))

    # -- studies ---------------------------------------------------------------------------

    def add_study(
        self,
        series_uid: str,
        study_uid: str | None = None,
        *,
        pixel_sha256: str | None = None,
        path: str | None = None,
    ) -> None:
        """Record a series (no patient identifiers), filling in fields not known before."""
        with self.write():
            self._ensure_study(series_uid, study_uid, pixel_sha256=pixel_sha256, path=path)

    def _ensure_study(
        self,
        series_uid: str,
        study_uid: str | None,
        *,
        pixel_sha256: str | None = None,
        path: str | None = None,
        actor: str | None = None,
    ) -> None:
        if not series_uid or not str(series_uid).strip():
            raise ReviewError("series_uid must not be empty")
        actor = actor or self.actor
        row = self.conn.execute(
            "SELECT study_uid, pixel_sha256, path FROM studies WHERE series_uid = ?", (series_uid,)
        ).fetchone()
        now = utc_now()
        if row is None:
            self.conn.execute(
                "INSERT INTO studies (series_uid, study_uid, pixel_sha256, path, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (series_uid, study_uid, pixel_sha256, path, actor, now),
            )
            return
        old_study, old_sha, old_path = row
        if study_uid and old_study and study_uid != old_study:
            raise ReviewError(
                f"series {series_uid} belongs to study {old_study} in the database, not {study_uid}"
            )
        if pixel_sha256 and old_sha and pixel_sha256 != old_sha:
            raise ReviewError(f"series {series_uid}: pixel data hash differs from the one recorded")
        new = (study_uid or old_study, pixel_sha256 or old_sha, path or old_path)
        if new != (old_study, old_sha, old_path):
            self.conn.execute(
                "UPDATE studies SET study_uid = ?, pixel_sha256 = ?, path = ?, updated_by = ?, updated_at = ?"
                " WHERE series_uid = ?",
                (*new, actor, now, series_uid),
            )

    def study(self, series_uid: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM studies WHERE series_uid = ?", (series_uid,))
        return rows[0] if rows else None

    def series_of_study(self, study_uid: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT series_uid FROM studies WHERE study_uid = ? ORDER BY series_uid", (study_uid,))]

    # -- readers ---------------------------------------------------------------------------

    def add_reader(self, name: str, role: str) -> Reader:
        """Return the reader called `name`, creating it (or updating its role) as needed."""
        name = (name or "").strip()
        if not name:
            raise ReviewError("reader name must not be empty")
        if role not in ROLES:
            raise ReviewError(f"reader role must be one of {ROLES}, not {role!r}")
        with self.write():
            # Names compare case-insensitively (COLLATE NOCASE): "dr kim" is Dr Kim.
            row = self.conn.execute("SELECT id, role, name FROM readers WHERE name = ?", (name,)).fetchone()
            if row is None:
                cur = self.conn.execute(
                    "INSERT INTO readers (name, role, created_by, created_at) VALUES (?, ?, ?, ?)",
                    (name, role, self.actor, utc_now()),
                )
                return Reader(cur.lastrowid, name, role)
            if row[1] != role:
                self.conn.execute(
                    "UPDATE readers SET role = ?, updated_by = ?, updated_at = ? WHERE id = ?",
                    (role, self.actor, utc_now(), row[0]),
                )
            return Reader(row[0], row[2], role)

    def reader(self, name: str) -> Reader | None:
        row = self.conn.execute("SELECT id, name, role FROM readers WHERE name = ?", (name,)).fetchone()
        return Reader(*row) if row else None

    def readers(self) -> list[Reader]:
        return [Reader(*r) for r in self.conn.execute("SELECT id, name, role FROM readers ORDER BY name")]

    def _resolve_reader(self, reader: Reader | str) -> Reader:
        if isinstance(reader, Reader):
            return reader
        found = self.reader(reader)
        if found is None:
            raise ReviewError(f"unknown reader {reader!r}; add them first (name and role)")
        return found

    # -- reads -----------------------------------------------------------------------------

    def log_read(self, reader: Reader | str, read: Read) -> int:
        """Write one read and commit it; return its id. The read is on disk when this returns."""
        reader = self._resolve_reader(reader)
        now = utc_now()
        values: list[Any] = [read.series_uid, reader.id, read.model_run_id]
        for label in LABELS:
            values += [read.statuses.get(label), read.confidence.get(label), read.ai.get(label)]
        values += [read.note or "", read.seconds_spent, reader.name, now]
        try:
            with self.write():
                self._ensure_study(read.series_uid, read.study_uid, actor=reader.name)
                if read.model_run_id is not None:
                    run = self.conn.execute("SELECT series_uid FROM model_runs WHERE id = ?",
                                            (read.model_run_id,)).fetchone()
                    if run is None or run[0] != read.series_uid:
                        raise ReviewError(f"model run {read.model_run_id} is not a run of series {read.series_uid}")
                cur = self.conn.execute(_INSERT_READ_SQL, values)
                return int(cur.lastrowid)
        except sqlite3.IntegrityError as exc:
            raise ReviewError(f"read not saved: {exc}") from exc

    # -- measurements ----------------------------------------------------------------------

    def add_measurement(self, reader: Reader | str, series_uid: str, measurement: Measurement, text: str,
                        *, study_uid: str | None = None) -> int:
        """Write one ruler, ROI or grown volume a reader made on `series_uid` and commit it; return its id."""
        reader = self._resolve_reader(reader)
        m = measurement
        try:
            with self.write():
                self._ensure_study(series_uid, study_uid, actor=reader.name)
                hu_low, hu_high = m.hu_range if m.hu_range is not None else (None, None)
                cut_necks = None if m.cut_necks is None else int(m.cut_necks)
                cur = self.conn.execute(
                    "INSERT INTO measurements (series_uid, reader_id, slice_index, kind, y0, x0, y1, x1, hu_low, hu_high,"
                    " cut_necks, sop_instance_uid, value_text, created_by, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (series_uid, reader.id, m.slice_index, m.kind, *m.start, *m.end, hu_low, hu_high, cut_necks,
                     m.sop_instance_uid or None, str(text), reader.name, utc_now()),
                )
                return int(cur.lastrowid)
        except sqlite3.IntegrityError as exc:
            raise ReviewError(f"measurement not saved: {exc}") from exc

    def measurements(self, series_uid: str, reader: Reader | str | None = None, *,
                     include_withdrawn: bool = False) -> list[tuple[Measurement, str]]:
        """(Measurement with its row id, the text the reader saw) on a series, oldest first.

        One reader's when `reader` is given (the workstation shows a reader their own, so a
        panel member is not shown a colleague's), withdrawn ones only with `include_withdrawn`.
        """
        sql = ("SELECT id, kind, slice_index, y0, x0, y1, x1, hu_low, hu_high, cut_necks, sop_instance_uid, value_text"
               " FROM measurements WHERE series_uid = ?")
        params: list[Any] = [series_uid]
        if reader is not None:
            sql += " AND reader_id = ?"
            params.append(self._resolve_reader(reader).id)
        if not include_withdrawn:
            sql += " AND deleted_at IS NULL"
        out = []
        for row_id, kind, z, y0, x0, y1, x1, lo, hi, cut_necks, sop, text in self.conn.execute(sql + " ORDER BY id", params):
            try:
                hu_range = None if lo is None else (lo, hi)
                cut = None if cut_necks is None else bool(cut_necks)
                out.append((Measurement(kind, z, (y0, x0), (y1, x1), row_id, hu_range, cut, sop), text))
            except MeasurementError as exc:  # the CHECKs make this unreachable for our own rows
                raise ReviewError(f"{self.path}: measurement {row_id} is not readable ({exc})") from exc
        return out

    def withdraw_measurement(self, measurement_id: int, reader: Reader | str) -> None:
        """Mark a measurement deleted by `reader` (it stays in the file and the audit log)."""
        reader = self._resolve_reader(reader)
        with self.write():
            row = self.conn.execute("SELECT reader_id, deleted_at FROM measurements WHERE id = ?",
                                    (int(measurement_id),)).fetchone()
            if row is None:
                raise ReviewError(f"no measurement {measurement_id} in {self.path}")
            if row[0] != reader.id:
                raise ReviewError(f"measurement {measurement_id} belongs to another reader; {reader.name} cannot delete it")
            if row[1] is not None:
                return
            self.conn.execute("UPDATE measurements SET deleted_by = ?, deleted_at = ? WHERE id = ?",
                              (reader.name, utc_now(), int(measurement_id)))

    def reads(self, *, series_uid: str | None = None, reader: str | None = None) -> list[dict[str, Any]]:
        """All reads (oldest first) with the reader's name and role, optionally filtered."""
        sql = ("SELECT reads.*, readers.name AS reader, readers.role AS role FROM reads"
               " JOIN readers ON readers.id = reads.reader_id")
        where, params = [], []
        if series_uid is not None:
            where.append("reads.series_uid = ?")
            params.append(series_uid)
        if reader is not None:
            where.append("readers.name = ?")
            params.append(reader)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self.query(sql + " ORDER BY reads.id", params)

    def series_read_by(self, reader: str) -> set[str]:
        """The series `reader` (a name) has at least one saved read of."""
        return {row["series_uid"] for row in self.query(
            "SELECT DISTINCT reads.series_uid FROM reads JOIN readers ON readers.id = reads.reader_id WHERE readers.name = ?",
            (reader,))}

    def latest_statuses(self, label: str = "ANY") -> dict[tuple[int, str], str]:
        """(reader_id, series_uid) -> status of `label` in that reader's newest read of the series.

        One scan in id order, keeping the last status per pair: with 10^5 reads this
        is faster than a GROUP BY max(id) joined back to the table.
        """
        label = label.upper()
        if label not in LABELS:
            raise ReviewError(f"unknown label {label!r}; expected one of {LABELS}")
        column = f"{label.lower()}_status"
        latest: dict[tuple[int, str], str] = {}
        for reader_id, series_uid, status in self.conn.execute(
            f"SELECT reader_id, series_uid, {column} FROM reads ORDER BY id"
        ):
            if status is None:
                # A newer read that did not assess this label does not erase an older verdict.
                continue
            latest[(reader_id, series_uid)] = status
        return latest

    def read_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM reads").fetchone()[0])

    # -- ground truth ----------------------------------------------------------------------

    def set_label(
        self,
        series_uid: str,
        label: str,
        value: int,
        *,
        source: str,
        reason: str = "",
        panel_id: int | None = None,
        votes_disagree: int | None = None,
        votes_total: int | None = None,
        study_uid: str | None = None,
    ) -> LabelVersion | None:
        """Add a label version if `value` differs from the current one; None when unchanged.

        Versions are never overwritten: the old value stays as an earlier version.
        """
        label = label.upper()
        if label not in LABELS:
            raise ReviewError(f"unknown label {label!r}; expected one of {LABELS}")
        if value not in (0, 1) or isinstance(value, bool):
            raise ReviewError(f"label value must be 0 or 1, not {value!r}")
        with self.write():
            self._ensure_study(series_uid, study_uid)
            current = self.current_label(series_uid, label)
            if current is not None and current.value == value:
                return None
            version = 1 if current is None else current.version + 1
            cur = self.conn.execute(
                "INSERT INTO label_versions (series_uid, label, version, value, previous_value, source, reason,"
                " panel_id, votes_disagree, votes_total, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (series_uid, label, version, value, None if current is None else current.value, source,
                 reason, panel_id, votes_disagree, votes_total, self.actor, utc_now()),
            )
            return self._label_version(cur.lastrowid)

    def _label_version(self, row_id: int) -> LabelVersion:
        row = self.query(
            "SELECT id, series_uid, label, version, value, previous_value, source, reason, panel_id,"
            " votes_disagree, votes_total, created_by, created_at FROM label_versions WHERE id = ?", (row_id,))
        return LabelVersion(**row[0])

    def current_label(self, series_uid: str, label: str = "ANY") -> LabelVersion | None:
        row = self.conn.execute(
            "SELECT id FROM label_versions WHERE series_uid = ? AND label = ? ORDER BY version DESC LIMIT 1",
            (series_uid, label.upper()),
        ).fetchone()
        return self._label_version(row[0]) if row else None

    def label_history(self, series_uid: str, label: str = "ANY") -> list[LabelVersion]:
        rows = self.conn.execute(
            "SELECT id FROM label_versions WHERE series_uid = ? AND label = ? ORDER BY version",
            (series_uid, label.upper()),
        ).fetchall()
        return [self._label_version(r[0]) for r in rows]

    def labels_at(self, label: str = "ANY", *, which: str = "current") -> dict[str, int]:
        """series_uid -> label value, at the `current` or `original` (first) version."""
        if which not in ("current", "original"):
            raise ReviewError(f"which must be 'current' or 'original', not {which!r}")
        agg = "max" if which == "current" else "min"
        rows = self.conn.execute(
            f"SELECT lv.series_uid, lv.value FROM label_versions lv JOIN ("
            f" SELECT series_uid, {agg}(version) AS v FROM label_versions WHERE label = ? GROUP BY series_uid"
            f") pick ON pick.series_uid = lv.series_uid AND pick.v = lv.version WHERE lv.label = ?",
            (label.upper(), label.upper()),
        )
        return dict(rows.fetchall())

    # -- model runs ------------------------------------------------------------------------

    def latest_model_run(self, series_uid: str) -> dict[str, Any] | None:
        """The newest model run of a series with `labels` {LABEL: probability} and `models`."""
        rows = self.query("SELECT * FROM model_runs WHERE series_uid = ? ORDER BY id DESC LIMIT 1", (series_uid,))
        if not rows:
            return None
        run = rows[0]
        run["labels"] = {
            r["label"]: r["probability"]
            for r in self.query("SELECT label, probability FROM model_run_labels WHERE run_id = ?", (run["id"],))
        }
        run["models"] = self.query(
            "SELECT m.name, m.version, m.sha256 FROM model_run_models rm JOIN models m ON m.id = rm.model_id"
            " WHERE rm.run_id = ? ORDER BY m.id", (run["id"],))
        return run

    def latest_model_calls(self, label: str = "ANY") -> dict[str, ModelCall]:
        """series_uid -> the newest model run's probability and call of `label` for each series."""
        rows = self.conn.execute(
            "SELECT r.series_uid, l.probability, l.decision, l.threshold, l.tier, l.specific_threshold"
            " FROM model_run_labels l JOIN model_runs r ON r.id = l.run_id"
            " JOIN (SELECT series_uid, max(id) AS id FROM model_runs GROUP BY series_uid) newest"
            " ON newest.id = r.id WHERE l.label = ?",
            (label.upper(),),
        )
        return {row[0]: ModelCall(*row[1:]) for row in rows}

    def latest_head_check_failures(self) -> dict[str, str]:
        """series_uid -> why the newest model run's series did not look like a head CT (failures only)."""
        rows = self.conn.execute(
            "SELECT r.series_uid, r.head_check FROM model_runs r"
            " JOIN (SELECT series_uid, max(id) AS id FROM model_runs GROUP BY series_uid) newest ON newest.id = r.id"
            " WHERE r.head_check IS NOT NULL AND r.head_check != ''"
        )
        return dict(rows.fetchall())

    # -- audit -----------------------------------------------------------------------------

    def audit_log(self, *, entity: str | None = None) -> list[dict[str, Any]]:
        if entity is None:
            return self.query("SELECT * FROM audit_log ORDER BY id")
        return self.query("SELECT * FROM audit_log WHERE entity = ? ORDER BY id", (entity,))

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])


def open_store(path: str | os.PathLike[str], **kwargs: Any) -> ReviewStore:
    """Open (creating and migrating if needed) the review database at `path`."""
    return ReviewStore(path, **kwargs)
