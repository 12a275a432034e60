"""Resident self-test on the atlas: answers kept in the review database through their own recorded migration, append-only."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from ichviewer import SUBTYPES
from ichviewer.atlas import open_atlas
from ichviewer.atlas.quiz import AtlasQuiz, ensure_quiz_table
from ichviewer.atlas.store import write_atlas
from ichviewer.review import ReviewError, ReviewStore


def _atlas(path):
    images = [dict(study_uid=f"1.{i}", series_uid=f"1.{i}.1", source=f"case {i}", slice_index=i, labels=labels, rows=4, cols=4,
                   pixel_dy=1.0, pixel_dx=1.0, context=np.zeros((4, 4), np.int16), pooled=np.ones(2, np.float32))
              for i, labels in enumerate((("SDH",), ("EDH", "SAH")))]
    features = [dict(block="features", channel=0, label="SDH", relevance=3, label_rank=0),
                dict(block="features", channel=1, label="EDH", relevance=2, label_rank=0)]
    entries = [dict(feature=i, image=i, rank=0, max_activation=1.0, box=(0, 0, 1, 1), patch=np.zeros((4, 4), np.int16),
                    heat=np.zeros((4, 4), np.uint8)) for i in range(2)]
    header = dict(model_name="m", model_sha256="a" * 64, labels=list(SUBTYPES), blocks={"features": [2, 1, 1]})
    return open_atlas(write_atlas(path, header, images, features, entries))


def test_answers_are_scored_recorded_and_survive_a_restart(tmp_path):
    db = tmp_path / "review.sqlite"
    with _atlas(tmp_path / "m.atlas.sqlite") as atlas:
        store = ReviewStore(db)
        resident = store.add_reader("Dr Res", "resident")
        quiz = AtlasQuiz(atlas, store, resident, subtypes=("EDH",), seed=1)
        q = quiz.next_question()
        assert q.truth == ("EDH", "SAH")
        ok = quiz.answer(q, "SAH")  # any of the slice's subtypes counts
        bad = quiz.answer(q, "SDH")
        assert ok.correct and ok.feedback == "Correct: EDH + SAH."
        assert not bad.correct and bad.feedback == "Not quite: you said SDH, this example is EDH + SAH."
        # the teaching point: what the answer looks like, and what the subtype named looks like
        assert bad.teaching.splitlines() == [
            "EDH: biconvex (lentiform) against the inner table, often under a fracture; does not cross sutures.",
            "SAH: thin, following the sulci, the Sylvian and interhemispheric fissures and the basal cisterns.",
            "SDH: a crescent along the convexity, falx or tentorium; crosses sutures, not the midline."]
        assert [line.split(":")[0] for line in ok.teaching.splitlines()] == ["EDH", "SAH"]
        assert str(quiz.score()) == "1 / 2 (50 %)"
        with pytest.raises(ReviewError, match="answer must be one of"):
            quiz.answer(q, "ANY")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            with store.write():
                store.conn.execute("UPDATE atlas_quiz_answers SET correct = 1")
        store.close()

        store = ReviewStore(db)  # a restart: the answers and the migration record are still there
        migrations = store.query("SELECT migration_set, name FROM migrations ORDER BY id")
        assert migrations == [{"migration_set": "ichviewer.review", "name": "0001_initial"},
                              {"migration_set": "ichviewer.review", "name": "0002_model_run_head_check"},
                              {"migration_set": "ichviewer.review", "name": "0003_model_run_label_tier"},
                              {"migration_set": "ichviewer.review", "name": "0004_measurements"},
                              {"migration_set": "ichviewer.review", "name": "0005_measurement_necks"},
                              {"migration_set": "ichviewer.review", "name": "0006_measurement_image"},
                              {"migration_set": "ichviewer.atlas", "name": "0001_atlas_quiz_answers"}]
        assert ensure_quiz_table(store) == []
        again = AtlasQuiz(atlas, store, store.reader("Dr Res"))
        assert str(again.score()) == "0 / 0" and str(again.score(session_only=False)) == "1 / 2 (50 %)"
        assert [r["detail"] for r in store.audit_log(entity="atlas_quiz_answers")][0].startswith("{")
        store.close()


def test_a_subtype_without_examples_is_refused_with_a_clear_message(tmp_path):
    with _atlas(tmp_path / "m.atlas.sqlite") as atlas, ReviewStore(tmp_path / "r.sqlite") as store:
        reader = store.add_reader("Dr Res", "resident")
        with pytest.raises(ReviewError, match="no examples of IVH"):
            AtlasQuiz(atlas, store, reader, subtypes=("IVH",))


def test_an_example_that_shows_too_little_brain_is_left_out_of_the_self_test(tmp_path):
    """An atlas patch of skull and air (where an extra-axial feature fired) cannot be named: the self-test
    skips it for the session and says how many it left out; with nothing answerable left it says why."""
    from ichviewer.atlas.quiz import MIN_BRAIN_FRACTION, answerable

    images = [dict(study_uid=f"1.{i}", series_uid=f"1.{i}.1", source=f"case {i}", slice_index=i, labels=("SDH",), rows=10,
                   cols=10, pixel_dy=1.0, pixel_dx=1.0, context=np.zeros((10, 10), np.int16), pooled=np.ones(2, np.float32))
              for i in range(2)]
    air = np.full((10, 10), -1000, np.int16)
    air[:, :1] = 40  # a sliver of brain: 10 %
    air[:, 1:4] = 1200  # and the skull
    brain = np.full((10, 10), 35, np.int16)
    brain[:, :3] = 1200
    features = [dict(block="features", channel=0, label="SDH", relevance=3, label_rank=0)]
    entries = [dict(feature=0, image=i, rank=i, max_activation=1.0, box=(0, 0, 1, 1), patch=p, heat=np.zeros((10, 10), np.uint8))
               for i, p in enumerate((air, brain))]
    header = dict(model_name="m", model_sha256="a" * 64, labels=list(SUBTYPES), blocks={"features": [1, 1, 1]})
    store = ReviewStore(tmp_path / "review.sqlite")
    resident = store.add_reader("Dr Res", "resident")
    try:
        with open_atlas(write_atlas(tmp_path / "m.atlas.sqlite", header, images, features, entries)) as atlas:
            by_rank = {atlas.entry(i).rank: atlas.entry(i) for i in (0, 1)}
            assert not answerable(by_rank[0]) and answerable(by_rank[1]) and MIN_BRAIN_FRACTION == 0.2
            quiz = AtlasQuiz(atlas, store, resident, seed=3)
            drawn = {quiz.next_question().entry.entry_id for _ in range(20)}
            assert drawn == {by_rank[1].entry_id} and quiz.left_out == 1
        with open_atlas(write_atlas(tmp_path / "air.atlas.sqlite", header, images[:1], features, entries[:1])) as atlas:
            quiz = AtlasQuiz(atlas, store, resident, seed=3)
            with pytest.raises(ReviewError, match="shows enough brain to be named \\(1 left out"):
                quiz.next_question()
    finally:
        store.close()
