"""Resident self-test on the atlas: name the subtype of an atlas example, get feedback and a score; answers kept in the review database.

The answers table lives in the review database (`ichviewer.review.ReviewStore`) but
is created by this module's own recorded migration set ("ichviewer.atlas", in the
same `migrations` table), so the review schema itself is unchanged and the table
appears only in databases where the self-test was used. Like the reads, answers are
append-only (enforced by triggers) and every insert is audited.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from ichviewer import SUBTYPES
from ichviewer.atlas.store import Atlas, AtlasEntry
from ichviewer.review.schema import ReviewMigrations, _append_only, _audit_insert, _in_list, execute_statements
from ichviewer.review.store import Reader, ReviewError, ReviewStore, utc_now

quiz_migrations = ReviewMigrations("ichviewer.atlas")


@quiz_migrations(name="0001_atlas_quiz_answers")
def m0001_atlas_quiz_answers(db: Database) -> None:
    sql = f"""
CREATE TABLE atlas_quiz_answers (
  id INTEGER PRIMARY KEY,
  reader_id INTEGER NOT NULL REFERENCES readers(id),
  atlas TEXT NOT NULL,
  model_sha256 TEXT NOT NULL,
  entry_id INTEGER NOT NULL,
  truth TEXT NOT NULL,
  answer TEXT NOT NULL CHECK (answer IN {_in_list(SUBTYPES)}),
  correct INTEGER NOT NULL CHECK (correct IN (0, 1)),
  created_by TEXT NOT NULL,
  created_at TEXT NOT NULL
) STRICT;
CREATE INDEX atlas_quiz_answers_reader ON atlas_quiz_answers (reader_id, id);
{_append_only("atlas_quiz_answers")}
{_audit_insert("atlas_quiz_answers", "NEW.id", "json_object('reader_id', NEW.reader_id, 'entry_id', NEW.entry_id, 'answer', NEW.answer, 'correct', NEW.correct)")}
"""
    execute_statements(db, sql)


def ensure_quiz_table(store: ReviewStore) -> list[str]:
    """Apply this module's pending migrations to the review database (inside one write transaction); return their names."""
    if not quiz_migrations.pending(store.db):
        return []
    with store.write():
        applied = [m.name for m in quiz_migrations.pending(store.db)]
        quiz_migrations.apply(store.db)
    return applied


#: A self-test example must show at least this share of brain-density pixels (0-100 HU) to be
#: answerable. An atlas patch sits where its feature fired most, and for a few extra-axial examples
#: that is the skull and the air outside it (4 of the shipped atlas's 134: 9-15 % brain, more than
#: 70 % air): no reader can name a subtype there. They stay in the browser, where the label is shown.
MIN_BRAIN_FRACTION = 0.2


def answerable(entry: AtlasEntry) -> bool:
    """True when the entry's patch shows enough brain for a subtype to be named (`MIN_BRAIN_FRACTION`)."""
    patch = np.asarray(entry.patch, dtype=np.float32)
    return bool(patch.size) and float(((patch >= 0) & (patch <= 100)).mean()) >= MIN_BRAIN_FRACTION


@dataclass(frozen=True)
class QuizQuestion:
    """One example to name: the atlas entry (its `labels` are the answer)."""

    entry: AtlasEntry

    @property
    def truth(self) -> tuple[str, ...]:
        return self.entry.labels


#: What each subtype looks like on non-contrast CT (REFERENCE.md, "Haemorrhage by subtype"): the teaching
#: point shown after an answer, for the subtype named and the one it is.
SUBTYPE_APPEARANCE = {
    "IPH": "in the brain itself, round to irregular (basal ganglia, thalamus, lobar, cerebellum); an oedema rim after hours",
    "IVH": "in the ventricles, layering in the occipital horns or casting a ventricle",
    "SDH": "a crescent along the convexity, falx or tentorium; crosses sutures, not the midline",
    "EDH": "biconvex (lentiform) against the inner table, often under a fracture; does not cross sutures",
    "SAH": "thin, following the sulci, the Sylvian and interhemispheric fissures and the basal cisterns",
}


@dataclass(frozen=True)
class QuizAnswer:
    """What the resident said and whether it was right (any of the slice's subtypes counts)."""

    answer_id: int
    answer: str
    truth: tuple[str, ...]
    correct: bool

    @property
    def feedback(self) -> str:
        names = " + ".join(self.truth)
        return f"Correct: {names}." if self.correct else f"Not quite: you said {self.answer}, this example is {names}."

    @property
    def teaching(self) -> str:
        """What tells the subtypes apart: the answer's subtype(s) and, when wrong, the one named, one per line."""
        shown = list(self.truth) + ([] if self.correct or self.answer in self.truth else [self.answer])
        return "\n".join(f"{s}: {SUBTYPE_APPEARANCE[s]}." for s in shown if s in SUBTYPE_APPEARANCE)


@dataclass(frozen=True)
class Score:
    correct: int
    answered: int

    @property
    def percent(self) -> float:
        return 100.0 * self.correct / self.answered if self.answered else 0.0

    def __str__(self) -> str:
        return f"{self.correct} / {self.answered}" + (f" ({self.percent:.0f} %)" if self.answered else "")


class AtlasQuiz:
    """Draws atlas examples (optionally of some subtypes), records answers in the review database, keeps the score."""

    def __init__(self, atlas: Atlas, store: ReviewStore, reader: Reader, *, subtypes: Sequence[str] | None = None, seed: int | None = None) -> None:
        if reader is None:
            raise ReviewError("the self-test needs a reader (who is answering)")
        self.atlas = atlas
        self.store = store
        self.reader = reader
        self.subtypes = tuple(subtypes) if subtypes else SUBTYPES
        self._rng = random.Random(seed)
        ensure_quiz_table(store)
        pool = sorted({int(e) for s in self.subtypes for e in atlas.entries_for_label(s)})
        if not pool:
            raise ReviewError(f"the atlas {atlas.path.name} has no examples of {', '.join(self.subtypes)}")
        self._pool = pool
        #: Examples drawn and left out of this self-test: too little brain in the patch (`answerable`).
        self.left_out = 0
        self._session_start = self._last_id()

    def _last_id(self) -> int:
        row = self.store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM atlas_quiz_answers").fetchone()
        return int(row[0])

    def next_question(self) -> QuizQuestion:
        """A random answerable example; one that shows too little brain is left out for the rest of the session."""
        while self._pool:
            entry_id = self._rng.choice(self._pool)
            entry = self.atlas.entry(entry_id)
            if answerable(entry):
                return QuizQuestion(entry)
            self._pool.remove(entry_id)
            self.left_out += 1
        raise ReviewError(
            f"no example of {', '.join(self.subtypes)} in the atlas {self.atlas.path.name} shows enough brain to be named "
            f"({self.left_out} left out: less than {MIN_BRAIN_FRACTION:.0%} of the patch is 0-100 HU)"
        )

    def answer(self, question: QuizQuestion, answer: str) -> QuizAnswer:
        """Record the answer (on disk before this returns) and say whether it was right."""
        if answer not in SUBTYPES:
            raise ReviewError(f"answer must be one of {SUBTYPES}, not {answer!r}")
        truth = question.truth
        correct = answer in truth
        with self.store.write():
            cur = self.store.conn.execute(
                "INSERT INTO atlas_quiz_answers (reader_id, atlas, model_sha256, entry_id, truth, answer, correct, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.reader.id, self.atlas.path.name, self.atlas.header.model_sha256, question.entry.entry_id,
                 ",".join(truth), answer, int(correct), self.store.actor, utc_now()),
            )
        return QuizAnswer(int(cur.lastrowid), answer, truth, correct)

    def score(self, *, session_only: bool = True) -> Score:
        """Correct / answered for this reader (this session by default, else all time)."""
        since = self._session_start if session_only else 0
        row = self.store.conn.execute(
            "SELECT COALESCE(SUM(correct), 0), COUNT(*) FROM atlas_quiz_answers WHERE reader_id = ? AND id > ?",
            (self.reader.id, since),
        ).fetchone()
        return Score(int(row[0]), int(row[1]))
