"""Ordered, recorded schema migrations of the review database (STRICT tables, append-only audit)."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from ichviewer import LABELS
from ichviewer.core.decisions import NEGATIVE_TIER, POSITIVE_TIER, POSSIBLE_TIER

#: Values a reader may give for one label in a read.
READ_STATUSES: tuple[str, ...] = ("present", "absent", "uncertain")
#: What a reader did with one AI finding, as in the IHE AI Results (AIR) profile:
#: accept it, reject it, or supplement (modify / add to) it.
AI_ACTIONS: tuple[str, ...] = ("accept", "reject", "supplement")
#: Reader roles.
ROLES: tuple[str, ...] = ("resident", "attending", "panel")
#: Triage classes written by `ichviewer infer`.
TRIAGES: tuple[str, ...] = ("confident negative", "confident positive", "refer")
#: Tiers of a model run's call of one label, as `ichviewer infer` writes them.
MODEL_TIERS: tuple[str, ...] = (POSITIVE_TIER, POSSIBLE_TIER, NEGATIVE_TIER)
#: Values a panel member may vote for one label (Kang et al. re-annotated presence vs absence).
VOTE_VALUES: tuple[str, ...] = ("present", "absent")
#: Columns every write-once table carries so each row says who wrote it and when.
WHO_WHEN = "created_by TEXT NOT NULL, created_at TEXT NOT NULL"


class ReviewMigrations(Migrations):
    """sqlite-utils migrations, recorded in a table called `migrations`."""

    migrations_table = "migrations"


migrations = ReviewMigrations("ichviewer.review")


def _in_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _read_label_columns() -> str:
    cols = []
    for label in LABELS:
        p = label.lower()
        null = "NOT NULL" if label == "ANY" else ""
        cols.append(f"{p}_status TEXT {null} CHECK ({p}_status IN {_in_list(READ_STATUSES)})")
        cols.append(f"{p}_confidence INTEGER CHECK ({p}_confidence BETWEEN 1 AND 5)")
        cols.append(f"{p}_ai TEXT CHECK ({p}_ai IN {_in_list(AI_ACTIONS)})")
    return ",\n  ".join(cols)


def _append_only(table: str) -> str:
    # The database itself refuses changes, so no code path (ours or a hand-run
    # sqlite3 shell) can rewrite history.
    return f"""
CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, '{table} is append-only: rows cannot be updated'); END;
CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, '{table} is append-only: rows cannot be deleted'); END;
"""


def _audit_insert(table: str, entity_id: str, detail: str) -> str:
    # Audit rows are written by triggers in the same transaction as the change,
    # so an audited write and its audit row are committed (or lost) together.
    return f"""
CREATE TRIGGER {table}_audit_insert AFTER INSERT ON {table}
BEGIN
  INSERT INTO audit_log (at, actor, action, entity, entity_id, detail)
  VALUES (NEW.created_at, NEW.created_by, 'insert', '{table}', CAST({entity_id} AS TEXT), {detail});
END;
"""


@migrations(name="0001_initial")
def m0001_initial(db: Database) -> None:
    labels = _in_list(LABELS)
    sql = f"""
CREATE TABLE audit_log (
  id INTEGER PRIMARY KEY,
  at TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  entity TEXT NOT NULL,
  entity_id TEXT,
  detail TEXT NOT NULL DEFAULT '{{}}'
) STRICT;
{_append_only("audit_log")}

CREATE TABLE studies (
  series_uid TEXT PRIMARY KEY,
  study_uid TEXT,
  pixel_sha256 TEXT,
  path TEXT,
  {WHO_WHEN},
  updated_by TEXT,
  updated_at TEXT
) STRICT;
CREATE INDEX studies_study_uid ON studies (study_uid);
{_audit_insert("studies", "NEW.series_uid", "json_object('study_uid', NEW.study_uid, 'pixel_sha256', NEW.pixel_sha256, 'path', NEW.path)")}
CREATE TRIGGER studies_audit_update AFTER UPDATE ON studies
BEGIN
  INSERT INTO audit_log (at, actor, action, entity, entity_id, detail)
  VALUES (NEW.updated_at, NEW.updated_by, 'update', 'studies', NEW.series_uid,
          json_object('study_uid', NEW.study_uid, 'pixel_sha256', NEW.pixel_sha256, 'path', NEW.path));
END;

CREATE TABLE readers (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE COLLATE NOCASE CHECK (length(trim(name)) > 0),
  role TEXT NOT NULL CHECK (role IN {_in_list(ROLES)}),
  {WHO_WHEN},
  updated_by TEXT,
  updated_at TEXT
) STRICT;
{_audit_insert("readers", "NEW.id", "json_object('name', NEW.name, 'role', NEW.role)")}
CREATE TRIGGER readers_audit_update AFTER UPDATE ON readers
BEGIN
  INSERT INTO audit_log (at, actor, action, entity, entity_id, detail)
  VALUES (NEW.updated_at, NEW.updated_by, 'update', 'readers', CAST(NEW.id AS TEXT),
          json_object('name', NEW.name, 'role', NEW.role, 'old_role', OLD.role));
END;
CREATE TRIGGER readers_no_delete BEFORE DELETE ON readers
BEGIN SELECT RAISE(ABORT, 'readers cannot be deleted: reads refer to them'); END;

CREATE TABLE models (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  {WHO_WHEN},
  UNIQUE (name, version, sha256)
) STRICT;
{_audit_insert("models", "NEW.id", "json_object('name', NEW.name, 'version', NEW.version, 'sha256', NEW.sha256)")}
{_append_only("models")}

CREATE TABLE model_runs (
  id INTEGER PRIMARY KEY,
  series_uid TEXT NOT NULL REFERENCES studies (series_uid),
  provider TEXT NOT NULL,
  triage TEXT NOT NULL CHECK (triage IN {_in_list(TRIAGES)}),
  n_slices INTEGER CHECK (n_slices >= 0),
  seconds REAL,
  source TEXT NOT NULL DEFAULT '',
  {WHO_WHEN}
) STRICT;
CREATE INDEX model_runs_series ON model_runs (series_uid, id);
{_audit_insert("model_runs", "NEW.id", "json_object('series_uid', NEW.series_uid, 'triage', NEW.triage, 'source', NEW.source)")}
{_append_only("model_runs")}

CREATE TABLE model_run_models (
  run_id INTEGER NOT NULL REFERENCES model_runs (id),
  model_id INTEGER NOT NULL REFERENCES models (id),
  {WHO_WHEN},
  PRIMARY KEY (run_id, model_id)
) STRICT;
{_append_only("model_run_models")}

CREATE TABLE model_run_labels (
  run_id INTEGER NOT NULL REFERENCES model_runs (id),
  label TEXT NOT NULL CHECK (label IN {labels}),
  probability REAL NOT NULL CHECK (probability BETWEEN 0 AND 1),
  decision INTEGER CHECK (decision IN (0, 1)),
  threshold REAL,
  {WHO_WHEN},
  PRIMARY KEY (run_id, label)
) STRICT;
CREATE INDEX model_run_labels_label ON model_run_labels (label, run_id);
{_append_only("model_run_labels")}

CREATE TABLE reads (
  id INTEGER PRIMARY KEY,
  series_uid TEXT NOT NULL REFERENCES studies (series_uid),
  reader_id INTEGER NOT NULL REFERENCES readers (id),
  model_run_id INTEGER REFERENCES model_runs (id),
  {_read_label_columns()},
  note TEXT NOT NULL DEFAULT '',
  seconds_spent REAL CHECK (seconds_spent >= 0),
  {WHO_WHEN}
) STRICT;
CREATE INDEX reads_series_reader ON reads (series_uid, reader_id, id);
CREATE INDEX reads_reader_series ON reads (reader_id, series_uid, id);
{_audit_insert("reads", "NEW.id", "json_object('series_uid', NEW.series_uid, 'reader_id', NEW.reader_id, 'any', NEW.any_status)")}
{_append_only("reads")}

CREATE TABLE panels (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  source_queue TEXT NOT NULL DEFAULT '',
  labels TEXT NOT NULL DEFAULT 'ANY',
  blinded INTEGER NOT NULL DEFAULT 1 CHECK (blinded IN (0, 1)),
  majority_fraction REAL NOT NULL DEFAULT 0.5 CHECK (majority_fraction > 0 AND majority_fraction < 1),
  min_disagree INTEGER CHECK (min_disagree >= 1),
  status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
  {WHO_WHEN},
  closed_by TEXT,
  closed_at TEXT
) STRICT;
{_audit_insert("panels", "NEW.id", "json_object('name', NEW.name, 'source_queue', NEW.source_queue, 'labels', NEW.labels, 'blinded', NEW.blinded)")}
CREATE TRIGGER panels_audit_close AFTER UPDATE OF status ON panels
BEGIN
  INSERT INTO audit_log (at, actor, action, entity, entity_id, detail)
  VALUES (NEW.closed_at, NEW.closed_by, 'close', 'panels', CAST(NEW.id AS TEXT), json_object('status', NEW.status));
END;
CREATE TRIGGER panels_no_delete BEFORE DELETE ON panels
BEGIN SELECT RAISE(ABORT, 'panels cannot be deleted'); END;

CREATE TABLE panel_members (
  panel_id INTEGER NOT NULL REFERENCES panels (id),
  reader_id INTEGER NOT NULL REFERENCES readers (id),
  {WHO_WHEN},
  PRIMARY KEY (panel_id, reader_id)
) STRICT;
{_audit_insert("panel_members", "NEW.panel_id", "json_object('reader_id', NEW.reader_id)")}
{_append_only("panel_members")}

CREATE TABLE panel_cases (
  panel_id INTEGER NOT NULL REFERENCES panels (id),
  series_uid TEXT NOT NULL REFERENCES studies (series_uid),
  reason TEXT NOT NULL DEFAULT '',
  {WHO_WHEN},
  PRIMARY KEY (panel_id, series_uid)
) STRICT;
{_audit_insert("panel_cases", "NEW.panel_id", "json_object('series_uid', NEW.series_uid, 'reason', NEW.reason)")}
{_append_only("panel_cases")}

CREATE TABLE votes (
  id INTEGER PRIMARY KEY,
  panel_id INTEGER NOT NULL,
  series_uid TEXT NOT NULL,
  reader_id INTEGER NOT NULL,
  label TEXT NOT NULL CHECK (label IN {labels}),
  value TEXT NOT NULL CHECK (value IN {_in_list(VOTE_VALUES)}),
  note TEXT NOT NULL DEFAULT '',
  {WHO_WHEN},
  UNIQUE (panel_id, series_uid, reader_id, label),
  FOREIGN KEY (panel_id, series_uid) REFERENCES panel_cases (panel_id, series_uid),
  FOREIGN KEY (panel_id, reader_id) REFERENCES panel_members (panel_id, reader_id)
) STRICT;
{_audit_insert("votes", "NEW.id", "json_object('panel_id', NEW.panel_id, 'series_uid', NEW.series_uid, 'reader_id', NEW.reader_id, 'label', NEW.label, 'value', NEW.value)")}
{_append_only("votes")}

CREATE TABLE label_versions (
  id INTEGER PRIMARY KEY,
  series_uid TEXT NOT NULL REFERENCES studies (series_uid),
  label TEXT NOT NULL CHECK (label IN {labels}),
  version INTEGER NOT NULL CHECK (version >= 1),
  value INTEGER NOT NULL CHECK (value IN (0, 1)),
  previous_value INTEGER CHECK (previous_value IN (0, 1)),
  source TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  panel_id INTEGER REFERENCES panels (id),
  votes_disagree INTEGER CHECK (votes_disagree >= 0),
  votes_total INTEGER CHECK (votes_total >= 0),
  {WHO_WHEN},
  UNIQUE (series_uid, label, version)
) STRICT;
{_audit_insert("label_versions", "NEW.id", "json_object('series_uid', NEW.series_uid, 'label', NEW.label, 'version', NEW.version, 'value', NEW.value, 'previous_value', NEW.previous_value, 'source', NEW.source, 'reason', NEW.reason, 'votes_disagree', NEW.votes_disagree, 'votes_total', NEW.votes_total)")}
{_append_only("label_versions")}
"""
    execute_statements(db, sql)


@migrations(name="0002_model_run_head_check")
def m0002_model_run_head_check(db: Database) -> None:
    # The workstation's head-CT check of the series (`ichviewer.core.applicability`): '' when it
    # fits, the reason when it does not (its triage is then "refer"), NULL when not checked (runs
    # stored before this column, or inference with the check off).
    db.conn.execute("ALTER TABLE model_runs ADD COLUMN head_check TEXT")


@migrations(name="0003_model_run_label_tier")
def m0003_model_run_label_tier(db: Database) -> None:
    # The tier of a called subtype (`ichviewer.core.decisions.subtype_tier`: 'positive' when it
    # reaches its specific threshold, 'possible' below it, 'negative' when not called) and that
    # threshold, as the run's reader saw them. NULL for runs stored before these columns or made by
    # an ensemble whose manifest has no specific thresholds (its calls are then one tier).
    db.conn.execute(
        f"ALTER TABLE model_run_labels ADD COLUMN tier TEXT CHECK (tier IN {_in_list(MODEL_TIERS)})")
    db.conn.execute(
        "ALTER TABLE model_run_labels ADD COLUMN specific_threshold REAL"
        " CHECK (specific_threshold BETWEEN 0 AND 1)")


#: Kinds of measurement a reader draws (`ichviewer.core.measurements.KINDS`).
MEASUREMENT_KINDS: tuple[str, ...] = ("length", "ellipse", "volume")


@migrations(name="0004_measurements")
def m0004_measurements(db: Database) -> None:
    # A reader's rulers, ROIs and grown volumes on a series: the two points in voxel coordinates of
    # the slice (a volume's seed twice, with the HU range it grew over) and the text the reader
    # saw. Deleting one marks it (deleted_by, deleted_at) and nothing else may change, so the
    # audit trail keeps what was measured and when it was withdrawn.
    sql = f"""
CREATE TABLE measurements (
  id INTEGER PRIMARY KEY,
  series_uid TEXT NOT NULL REFERENCES studies (series_uid),
  reader_id INTEGER NOT NULL REFERENCES readers (id),
  slice_index INTEGER NOT NULL CHECK (slice_index >= 0),
  kind TEXT NOT NULL CHECK (kind IN {_in_list(MEASUREMENT_KINDS)}),
  y0 REAL NOT NULL, x0 REAL NOT NULL, y1 REAL NOT NULL, x1 REAL NOT NULL,
  hu_low REAL, hu_high REAL,
  value_text TEXT NOT NULL,
  {WHO_WHEN},
  deleted_by TEXT,
  deleted_at TEXT,
  CHECK ((deleted_by IS NULL) = (deleted_at IS NULL)),
  CHECK ((kind = 'volume') = (hu_low IS NOT NULL AND hu_high IS NOT NULL)),
  CHECK (hu_low IS NULL OR hu_low < hu_high)
) STRICT;
CREATE INDEX measurements_series_reader ON measurements (series_uid, reader_id, id);
{_audit_insert("measurements", "NEW.id", "json_object('series_uid', NEW.series_uid, 'reader_id', NEW.reader_id, "
               "'slice_index', NEW.slice_index, 'kind', NEW.kind, 'value', NEW.value_text)")}
CREATE TRIGGER measurements_only_withdrawn BEFORE UPDATE ON measurements
WHEN OLD.deleted_at IS NOT NULL OR NEW.deleted_at IS NULL
  OR NEW.series_uid IS NOT OLD.series_uid OR NEW.reader_id IS NOT OLD.reader_id
  OR NEW.slice_index IS NOT OLD.slice_index OR NEW.kind IS NOT OLD.kind
  OR NEW.y0 IS NOT OLD.y0 OR NEW.x0 IS NOT OLD.x0 OR NEW.y1 IS NOT OLD.y1 OR NEW.x1 IS NOT OLD.x1
  OR NEW.hu_low IS NOT OLD.hu_low OR NEW.hu_high IS NOT OLD.hu_high
  OR NEW.value_text IS NOT OLD.value_text OR NEW.created_by IS NOT OLD.created_by OR NEW.created_at IS NOT OLD.created_at
BEGIN SELECT RAISE(ABORT, 'measurements can only be withdrawn (deleted_by, deleted_at), once'); END;
CREATE TRIGGER measurements_audit_withdraw AFTER UPDATE OF deleted_at ON measurements
BEGIN
  INSERT INTO audit_log (at, actor, action, entity, entity_id, detail)
  VALUES (NEW.deleted_at, NEW.deleted_by, 'delete', 'measurements', CAST(NEW.id AS TEXT),
          json_object('series_uid', NEW.series_uid, 'reader_id', NEW.reader_id));
END;
CREATE TRIGGER measurements_no_delete BEFORE DELETE ON measurements
BEGIN SELECT RAISE(ABORT, 'measurements cannot be deleted: withdraw them (deleted_at)'); END;
"""
    execute_statements(db, sql)


@migrations(name="0005_measurement_necks")
def m0005_measurement_necks(db: Database) -> None:
    # How a volume was grown: with connections narrower than NECK_MM cut (1, the default from now
    # on) or every connection followed (0: the only method before this migration, so every volume
    # already stored gets 0). The column joins the columns nothing may change once written.
    sql = """
DROP TRIGGER measurements_only_withdrawn;
ALTER TABLE measurements ADD COLUMN cut_necks INTEGER CHECK (cut_necks IS NULL OR cut_necks IN (0, 1));
UPDATE measurements SET cut_necks = 0 WHERE kind = 'volume';
CREATE TRIGGER measurements_only_withdrawn BEFORE UPDATE ON measurements
WHEN OLD.deleted_at IS NOT NULL OR NEW.deleted_at IS NULL
  OR NEW.series_uid IS NOT OLD.series_uid OR NEW.reader_id IS NOT OLD.reader_id
  OR NEW.slice_index IS NOT OLD.slice_index OR NEW.kind IS NOT OLD.kind
  OR NEW.y0 IS NOT OLD.y0 OR NEW.x0 IS NOT OLD.x0 OR NEW.y1 IS NOT OLD.y1 OR NEW.x1 IS NOT OLD.x1
  OR NEW.hu_low IS NOT OLD.hu_low OR NEW.hu_high IS NOT OLD.hu_high OR NEW.cut_necks IS NOT OLD.cut_necks
  OR NEW.value_text IS NOT OLD.value_text OR NEW.created_by IS NOT OLD.created_by OR NEW.created_at IS NOT OLD.created_at
BEGIN SELECT RAISE(ABORT, 'measurements can only be withdrawn (deleted_by, deleted_at), once'); END;
CREATE TRIGGER measurements_volume_method BEFORE INSERT ON measurements
WHEN (NEW.kind = 'volume') IS NOT (NEW.cut_necks IS NOT NULL)
BEGIN SELECT RAISE(ABORT, 'measurements: a volume, and only a volume, records cut_necks'); END;
"""
    execute_statements(db, sql)


@migrations(name="0006_measurement_image")
def m0006_measurement_image(db: Database) -> None:
    # The image a measurement was made on, by its SOP Instance UID (NULL where the series had none,
    # and for every measurement stored before): a copy of the series with other slices puts it back on
    # the same image instead of the same index. It joins the columns nothing may change once written.
    sql = """
DROP TRIGGER measurements_only_withdrawn;
ALTER TABLE measurements ADD COLUMN sop_instance_uid TEXT CHECK (sop_instance_uid IS NULL OR sop_instance_uid <> '');
CREATE TRIGGER measurements_only_withdrawn BEFORE UPDATE ON measurements
WHEN OLD.deleted_at IS NOT NULL OR NEW.deleted_at IS NULL
  OR NEW.series_uid IS NOT OLD.series_uid OR NEW.reader_id IS NOT OLD.reader_id
  OR NEW.slice_index IS NOT OLD.slice_index OR NEW.kind IS NOT OLD.kind
  OR NEW.y0 IS NOT OLD.y0 OR NEW.x0 IS NOT OLD.x0 OR NEW.y1 IS NOT OLD.y1 OR NEW.x1 IS NOT OLD.x1
  OR NEW.hu_low IS NOT OLD.hu_low OR NEW.hu_high IS NOT OLD.hu_high OR NEW.cut_necks IS NOT OLD.cut_necks
  OR NEW.sop_instance_uid IS NOT OLD.sop_instance_uid
  OR NEW.value_text IS NOT OLD.value_text OR NEW.created_by IS NOT OLD.created_by OR NEW.created_at IS NOT OLD.created_at
BEGIN SELECT RAISE(ABORT, 'measurements can only be withdrawn (deleted_by, deleted_at), once'); END;
"""
    execute_statements(db, sql)


def execute_statements(db: Database, sql: str) -> None:
    """Run a migration's script statement by statement (executescript would COMMIT its transaction)."""
    import sqlite3

    for statement in _split_sql(sql):
        if not sqlite3.complete_statement(statement):
            raise RuntimeError(f"incomplete SQL in a migration: {statement[:80]}")
        db.conn.execute(statement)


def _split_sql(sql: str) -> list[str]:
    """Split a script into complete statements (triggers contain inner semicolons)."""
    import sqlite3

    statements, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


def apply_migrations(db: Database) -> list[str]:
    """Apply pending migrations in order inside one write transaction; return the names applied.

    BEGIN IMMEDIATE serialises concurrent first openers (two processes creating the
    same new file), so each migration runs exactly once.
    """
    pending_before = [m.name for m in migrations.pending(db)]
    if not pending_before:
        return []
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        applied_now = [m.name for m in migrations.pending(db)]
        migrations.apply(db)  # nested db.atomic() blocks become savepoints
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")
    return applied_now
