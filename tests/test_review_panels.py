"""Expert panels: blinding, the 4-of-6 consensus rule of Kang et al., label history, statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from review_fixtures import seed, series_uid
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from ichviewer.review import (
    ConsensusRule,
    Read,
    ReviewError,
    ReviewStore,
    add_member,
    cases_hidden_from,
    cast_vote,
    close_panel,
    compute_statistics,
    create_panel,
    evaluate_consensus,
    member_view,
)

EXPERTS = [f"Expert {i}" for i in range(1, 7)]


@pytest.fixture
def store(tmp_path: Path):
    with ReviewStore(tmp_path / "review.sqlite", actor="coordinator") as s:
        yield s


def _panel_of_six(store: ReviewStore, **kwargs):
    panel = create_panel(store, "difficult for AI", queue="ai", **kwargs)
    for name in EXPERTS:
        add_member(store, panel.id, name)
    return panel


def _vote(store: ReviewStore, panel_id: int, uid: str, n_present: int) -> None:
    for i, name in enumerate(EXPERTS):
        cast_vote(store, panel_id, name, uid, "present" if i < n_present else "absent")


def test_four_of_six_disagreeing_amends_the_label_three_does_not(store: ReviewStore, tmp_path: Path) -> None:
    four, three = series_uid(1), series_uid(2)
    # Both labelled negative, but the model says >= 0.4: difficult for AI.
    seed(store, tmp_path, {four: 0, three: 0}, {four: 0.7, three: 0.45})
    panel = _panel_of_six(store)
    _vote(store, panel.id, four, n_present=4)
    _vote(store, panel.id, three, n_present=3)
    preview = {o.series_uid: o for o in evaluate_consensus(store, panel.id)}
    assert (preview[four].disagree, preview[four].required, preview[four].amend) == (4, 4, True)
    assert (preview[three].disagree, preview[three].amend) == (3, False)

    amended = close_panel(store, panel.id, reason="consensus meeting 2026-11-27")
    assert [(v.series_uid, v.previous_value, v.value) for v in amended] == [(four, 0, 1)]
    history = store.label_history(four)
    assert [(v.version, v.value) for v in history] == [(1, 0), (2, 1)]
    new = history[-1]
    assert new.panel_id == panel.id and new.votes_disagree == 4 and new.votes_total == 6
    assert "4 present, 2 absent of 6 members" in new.reason and "consensus meeting" in new.reason
    assert new.created_by == "coordinator"
    assert [v.value for v in store.label_history(three)] == [0]
    # The votes themselves are kept, and the closed panel takes no more.
    assert store.conn.execute("SELECT count(*) FROM votes WHERE panel_id = ?", (panel.id,)).fetchone()[0] == 12
    with pytest.raises(ReviewError, match="closed"):
        cast_vote(store, panel.id, EXPERTS[0], three, "present")


def test_consensus_rule_is_configurable(store: ReviewStore, tmp_path: Path) -> None:
    uid = series_uid(1)
    seed(store, tmp_path, {uid: 0}, {uid: 0.7})
    panel = _panel_of_six(store, rule=ConsensusRule(min_disagree=5))
    _vote(store, panel.id, uid, n_present=4)
    assert close_panel(store, panel.id) == []
    assert ConsensusRule().required(6) == 4 and ConsensusRule().required(5) == 3
    assert ConsensusRule(majority_fraction=2 / 3).required(6) == 5


def test_blinded_member_sees_no_model_or_votes_until_their_own_vote(store: ReviewStore, tmp_path: Path) -> None:
    uid = series_uid(1)
    seed(store, tmp_path, {uid: 1}, {uid: 0.3})
    panel = _panel_of_six(store)
    cast_vote(store, panel.id, EXPERTS[0], uid, "absent", note="calcification, not blood")
    view = member_view(store, panel.id, EXPERTS[1], uid)
    assert view.blinded and view.model is None and view.votes is None and view.reference is None
    assert not view.voted
    cast_vote(store, panel.id, EXPERTS[1], uid, "present")
    view = member_view(store, panel.id, EXPERTS[1], uid)
    assert not view.blinded and view.voted and view.own_votes == {"ANY": "present"}
    assert view.model["ANY"] == pytest.approx(0.3)
    assert view.votes == [{"reader": EXPERTS[0], "label": "ANY", "value": "absent",
                           "note": "calcification, not blood"}]
    assert view.reference == {"ANY": 1}
    with pytest.raises(ReviewError, match="already voted"):
        cast_vote(store, panel.id, EXPERTS[1], uid, "absent")
    with pytest.raises(ReviewError, match="not a member"):
        store.add_reader("Outsider", "attending")
        cast_vote(store, panel.id, "Outsider", uid, "absent")


def test_the_cases_hidden_from_a_member_are_those_member_view_blinds(store: ReviewStore, tmp_path: Path) -> None:
    uids = [series_uid(i) for i in (1, 2, 3)]
    seed(store, tmp_path, dict.fromkeys(uids, 0), dict.fromkeys(uids, 0.6))
    blinded = create_panel(store, "blinded", series_uids=uids, labels=("ANY", "SDH"))
    open_panel = create_panel(store, "open", series_uids=uids, blinded=False)
    for panel in (blinded, open_panel):
        for name in EXPERTS[:2]:
            add_member(store, panel.id, name)
    cast_vote(store, blinded.id, EXPERTS[0], uids[1], {"ANY": "present", "SDH": "absent"})
    for name in EXPERTS[:2]:
        hidden = cases_hidden_from(store, blinded.id, name)
        assert hidden == {uid for uid in uids if member_view(store, blinded.id, name, uid).blinded}
        assert cases_hidden_from(store, open_panel.id, name) == set()
    assert cases_hidden_from(store, blinded.id, EXPERTS[0]) == {uids[0], uids[2]}
    store.add_reader("Outsider", "attending")
    with pytest.raises(ReviewError, match="not a member"):
        cases_hidden_from(store, blinded.id, "Outsider")


def test_unblinded_panel_shows_everything_before_voting(store: ReviewStore, tmp_path: Path) -> None:
    uid = series_uid(1)
    seed(store, tmp_path, {uid: 1}, {uid: 0.3})
    panel = _panel_of_six(store, blinded=False)
    view = member_view(store, panel.id, EXPERTS[0], uid)
    assert not view.blinded and view.model["ANY"] == pytest.approx(0.3) and view.votes == []


def test_statistics_before_and_after_amendment_and_kappas_match_references(store: ReviewStore,
                                                                           tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 30
    uids = [series_uid(i) for i in range(n)]
    labels = {u: int(i % 2) for i, u in enumerate(uids)}
    # All difficult for AI: positives at <= 0.6, negatives at >= 0.4.
    probs = {u: ([0.55, 0.6] if labels[u] else [0.45, 0.5])[i % 3 == 0] for i, u in enumerate(uids)}
    seed(store, tmp_path, labels, probs)
    panel = _panel_of_six(store)
    votes = np.where(rng.random((n, 6)) < 0.75, np.array([labels[u] for u in uids])[:, None], 1 -
                     np.array([labels[u] for u in uids])[:, None])
    for j, u in enumerate(uids):
        for i, name in enumerate(EXPERTS):
            cast_vote(store, panel.id, name, u, "present" if votes[j, i] else "absent")
    # Two readers' own reads, for reader accuracy and pairwise agreement.
    for name in ("Res A", "Res B"):
        store.add_reader(name, "resident")
    res_a = rng.integers(0, 3, size=n)
    res_b = np.where(rng.random(n) < 0.5, res_a, rng.integers(0, 3, size=n))
    statuses = np.array(["present", "absent", "uncertain"])
    for j, u in enumerate(uids):
        store.log_read("Res A", Read(u, {"ANY": str(statuses[res_a[j]])}))
        store.log_read("Res B", Read(u, {"ANY": str(statuses[res_b[j]])}))

    amended = close_panel(store, panel.id)
    disagree = np.array([(votes[j] != labels[u]).sum() for j, u in enumerate(uids)])
    assert len(amended) == int((disagree >= 4).sum())

    stats = compute_statistics(store, uncertain_as="exclude")
    assert stats["n_amended"] == len(amended)
    p_stats = stats["panels"][0]
    counts, _ = aggregate_raters(votes, n_cat=2)
    assert p_stats["fleiss_kappa"] == pytest.approx(sm_fleiss_kappa(counts), abs=1e-12)
    pair = next(p for p in p_stats["cohen_kappa"] if (p["reader_a"], p["reader_b"]) == (EXPERTS[0], EXPERTS[1]))
    assert pair["kappa"] == pytest.approx(cohen_kappa_score(votes[:, 0], votes[:, 1]), abs=1e-12)
    rpair = stats["reader_agreement"]["cohen_kappa"][0]
    assert rpair["kappa"] == pytest.approx(cohen_kappa_score(res_a, res_b), abs=1e-12)

    # Each expert's accuracy against the original and the amended reference.
    after = np.array([store.current_label(u).value for u in uids])
    before = np.array([labels[u] for u in uids])
    for i, name in enumerate(EXPERTS):
        row_b = next(r for r in p_stats["members_metrics"]["before"] if r["reader"] == name)
        row_a = next(r for r in p_stats["members_metrics"]["after"] if r["reader"] == name)
        assert row_b["accuracy"] == pytest.approx(np.mean(votes[:, i] == before))
        assert row_a["accuracy"] == pytest.approx(np.mean(votes[:, i] == after))
    model_pred = np.array([probs[u] >= 0.5 for u in uids]).astype(int)
    assert stats["model"]["before"]["accuracy"] == pytest.approx(np.mean(model_pred == before))
    assert stats["model"]["after"]["accuracy"] == pytest.approx(np.mean(model_pred == after))
    assert stats["model"]["after"]["sensitivity"] == pytest.approx(
        np.sum((model_pred == 1) & (after == 1)) / np.sum(after == 1))
    # Reader A, uncertain excluded.
    ra = next(r for r in stats["readers"]["after"] if r["reader"] == "Res A")
    definite = res_a != 2
    assert ra["n"] == int(definite.sum()) and ra["n_uncertain"] == int((~definite).sum())
    assert ra["accuracy"] == pytest.approx(np.mean((res_a[definite] == 0).astype(int) == after[definite]))
