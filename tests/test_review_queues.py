"""Difficult-case queues: the 0.6 / 0.4 boundaries of Kang et al., reader disagreement, discordance."""

from __future__ import annotations

from pathlib import Path

import pytest
from review_fixtures import seed, series_uid

from ichviewer.review import (
    QueueThresholds,
    Read,
    ReviewError,
    ReviewStore,
    build_queue,
    difficult_for_ai,
    difficult_for_humans,
    discordant,
    queue_counts,
)


def test_difficult_for_ai_boundaries_are_inclusive_as_in_kang(store: ReviewStore, tmp_path: Path) -> None:
    s = {name: series_uid(i) for i, name in enumerate(
        ["pos_060", "pos_061", "pos_010", "neg_040", "neg_039", "neg_095", "pos_unlabelled"])}
    labels = {s["pos_060"]: 1, s["pos_061"]: 1, s["pos_010"]: 1, s["neg_040"]: 0, s["neg_039"]: 0, s["neg_095"]: 0}
    probs = {s["pos_060"]: 0.6, s["pos_061"]: 0.61, s["pos_010"]: 0.10, s["neg_040"]: 0.4, s["neg_039"]: 0.39,
             s["neg_095"]: 0.95, s["pos_unlabelled"]: 0.5}
    seed(store, tmp_path, labels, probs)
    queued = {it.series_uid for it in difficult_for_ai(store)}
    assert queued == {s["pos_060"], s["pos_010"], s["neg_040"], s["neg_095"]}
    # Most wrong first: the negative at 0.95 and the positive at 0.10.
    order = [it.series_uid for it in difficult_for_ai(store)]
    assert order[:2] == [s["neg_095"], s["pos_010"]]
    # Thresholds are configurable.
    strict = {it.series_uid for it in difficult_for_ai(store, thresholds=QueueThresholds(0.2, 0.9))}
    assert strict == {s["pos_010"], s["neg_095"]}


def test_difficult_for_ai_follows_amended_label(store: ReviewStore, tmp_path: Path) -> None:
    uid = series_uid(1)
    seed(store, tmp_path, {uid: 0}, {uid: 0.9})
    assert [it.series_uid for it in difficult_for_ai(store)] == [uid]
    store.set_label(uid, "ANY", 1, source="panel:1", reason="consensus")
    assert difficult_for_ai(store) == []


def test_a_case_whose_series_failed_the_head_ct_check_says_so_on_the_ai_queues(store: ReviewStore, tmp_path: Path) -> None:
    import json

    from ichviewer.review import import_infer_json
    from review_fixtures import write_infer_json

    phantom, head = series_uid(1), series_uid(2)
    seed(store, tmp_path, {phantom: 0, head: 0}, {phantom: 0.99, head: 0.97})
    path = write_infer_json(tmp_path / "again.json", {phantom: 0.99, head: 0.97})
    doc = json.loads(path.read_text())
    doc["studies"][0]["head_check"] = {"applicable": False, "reason": "the skull encloses -961 HU"}
    doc["studies"][1]["head_check"] = {"applicable": True, "reason": ""}
    path.write_text(json.dumps(doc))
    import_infer_json(store, path)  # the newest run of each series carries the check
    reasons = {it.series_uid: it.reason for it in difficult_for_ai(store)}
    assert "not a head CT" in reasons[phantom] and "-961 HU" in reasons[phantom]
    assert "not a head CT" not in reasons[head]
    store.add_reader("A", "attending")
    store.log_read("A", Read(phantom, {"ANY": "absent"}))
    assert "not a head CT" in discordant(store, "A")[0].reason


def test_difficult_for_humans_when_readers_disagree_with_each_other_or_the_label(store: ReviewStore,
                                                                                  tmp_path: Path) -> None:
    agree, split, against_label, unlabelled_split = (series_uid(i) for i in range(4))
    seed(store, tmp_path, {agree: 1, split: 1, against_label: 0}, {})
    for name in ("A", "B", "C"):
        store.add_reader(name, "attending")
    for name in ("A", "B", "C"):
        store.log_read(name, Read(agree, {"ANY": "present"}))
        store.log_read(name, Read(against_label, {"ANY": "present"}))
    store.log_read("A", Read(split, {"ANY": "present"}))
    store.log_read("B", Read(split, {"ANY": "absent"}))
    store.log_read("A", Read(unlabelled_split, {"ANY": "present"}))
    store.log_read("B", Read(unlabelled_split, {"ANY": "uncertain"}))
    items = {it.series_uid: it for it in difficult_for_humans(store)}
    assert set(items) == {split, against_label, unlabelled_split}
    assert "3 of 3" in items[against_label].reason
    assert items[split].reads == {"A": "present", "B": "absent"}
    # A reader's newer read replaces their older one.
    store.log_read("B", Read(split, {"ANY": "present"}))
    assert split not in {it.series_uid for it in difficult_for_humans(store)}


def test_discordant_lists_only_the_readers_own_cases(store: ReviewStore, tmp_path: Path) -> None:
    a, b, c = series_uid(1), series_uid(2), series_uid(3)
    seed(store, tmp_path, {a: 1, b: 0, c: 0}, {a: 0.9, b: 0.2, c: 0.7})
    store.add_reader("Res", "resident")
    store.add_reader("Other", "resident")
    store.log_read("Res", Read(a, {"ANY": "absent"}))     # model positive -> discordant
    store.log_read("Res", Read(b, {"ANY": "absent"}))     # concordant
    store.log_read("Other", Read(c, {"ANY": "absent"}))   # discordant, but not Res's case
    assert [it.series_uid for it in discordant(store, "Res")] == [a]
    assert [it.series_uid for it in build_queue(store, "discordant", reader="Other")] == [c]
    # At a 0.95 decision threshold the model is negative on `a` as well.
    assert discordant(store, "Res", thresholds=QueueThresholds(decision=0.95)) == []
    assert queue_counts(store, reader="Res") == {"ai": 1, "human": 1, "discordant": 1}
    with pytest.raises(ReviewError, match="reader"):
        build_queue(store, "discordant")
    with pytest.raises(ReviewError, match="queue kind"):
        build_queue(store, "easy")
