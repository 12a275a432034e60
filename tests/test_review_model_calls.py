"""The model's own calls in the review database: stored per run, used by discordance and statistics, exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from review_fixtures import infer_entry, series_uid, write_labels_csv

from ichviewer.review import (
    QueueThresholds,
    Read,
    ReviewError,
    ReviewStore,
    compute_statistics,
    difficult_for_ai,
    discordant,
    export_json,
    import_infer_json,
    import_labels_csv,
)


def shipped_like_entry(uid: str, p_any: float, p_sah: float) -> dict:
    """An infer entry as the stop-21 bundled ensemble wrote it (ANY called at 0.684, SAH at 0.12 / specific 0.90); the rule under test does not depend on those values."""
    entry = infer_entry(uid, p_any, subtypes={"SAH": p_sah})
    called = p_any >= 0.684
    entry["case"]["ANY"].update(decision="positive" if called else "negative", threshold=0.684)
    sah_called = called and p_sah >= 0.12
    entry["case"]["SAH"].update(
        decision="positive" if sah_called else "negative", threshold=0.12, specific_threshold=0.9,
        tier="negative" if not sah_called else "positive" if p_sah >= 0.9 else "possible")
    return entry


def write_runs(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"schema": "ichviewer.infer/1", "studies": entries, "failed": []}))
    return path


def test_discordance_and_statistics_use_each_runs_own_call(store: ReviewStore, tmp_path: Path) -> None:
    a, b, c = series_uid(1), series_uid(2), series_uid(3)
    runs = [shipped_like_entry(a, 0.60, 0.30), shipped_like_entry(b, 0.95, 0.40)]
    old = infer_entry(c, 0.70)  # a run stored without calls (an older infer JSON)
    for item in old["case"].values():
        item.pop("decision"), item.pop("threshold")
    import_infer_json(store, write_runs(tmp_path / "infer.json", runs + [old]))
    import_labels_csv(store, write_labels_csv(tmp_path / "labels.csv", {a: 0, b: 1, c: 0}))
    store.add_reader("Res", "resident")
    for uid in (a, b, c):
        store.log_read("Res", Read(uid, {"ANY": "present"}))

    # a: p = 0.60 is below the ensemble's 0.684, so the model called it negative (what the reader saw);
    # c: no stored call, so 0.5 decides (present). b: both present.
    items = {it.series_uid: it for it in discordant(store, "Res")}
    assert set(items) == {a}
    assert "model: absent (p=0.600, its operating point 0.684)" in items[a].reason
    # an explicit threshold still overrides every run's call
    assert {it.series_uid for it in discordant(store, "Res", thresholds=QueueThresholds(decision=0.5))} == set()
    assert {it.series_uid for it in discordant(store, "Res", thresholds=QueueThresholds(decision=0.8))} == {a, c}

    stats = compute_statistics(store)
    assert stats["model_call"] == "each run's own call"
    # truth a 0 / b 1 / c 0; calls a 0 / b 1 / c 1: one false positive
    assert (stats["model"]["after"]["tp"], stats["model"]["after"]["fp"], stats["model"]["after"]["tn"]) == (1, 1, 1)
    at_half = compute_statistics(store, threshold=0.5)
    assert at_half["model"]["after"]["fp"] == 2


def test_the_subtype_tier_is_stored_checked_and_exported(store: ReviewStore, tmp_path: Path) -> None:
    a, b = series_uid(1), series_uid(2)
    import_infer_json(store, write_runs(tmp_path / "infer.json",
                                        [shipped_like_entry(a, 0.95, 0.40), shipped_like_entry(b, 0.95, 0.97)]))
    calls = store.latest_model_calls("SAH")
    assert (calls[a].decision, calls[a].tier, calls[a].specific_threshold) == (1, "possible", 0.9)
    assert calls[b].tier == "positive" and calls[b].threshold == pytest.approx(0.12)
    store.add_reader("Res", "resident")
    store.log_read("Res", Read(a, {"ANY": "present", "SAH": "absent"}))
    from ichviewer.review.queues import discordant as discordant_for

    assert "model: present, possible tier (p=0.400, its operating point 0.12)" in discordant_for(
        store, "Res", label="SAH")[0].reason
    runs = {r["series_uid"]: r for r in export_json(store)["model_runs"]}
    assert runs[a]["calls"]["SAH"] == {"decision": 1, "threshold": 0.12, "tier": "possible", "specific_threshold": 0.9}
    assert runs[a]["probabilities"]["SAH"] == pytest.approx(0.40)

    bad = shipped_like_entry(series_uid(3), 0.95, 0.5)
    bad["case"]["SAH"]["tier"] = "likely"
    path = write_runs(tmp_path / "bad.json", [bad])
    with pytest.raises(ReviewError, match=r"bad\.json: studies\[0\]\.case\.SAH: tier must be one of"):
        import_infer_json(store, path)
    bad["case"]["SAH"]["tier"] = "possible"
    bad["case"]["SAH"]["specific_threshold"] = 1.5
    with pytest.raises(ReviewError, match=r"bad\.json: studies\[0\]\.case\.SAH: specific_threshold must be a number"):
        import_infer_json(store, write_runs(tmp_path / "bad.json", [bad]))
    assert series_uid(3) not in store.latest_model_calls("SAH")  # all or nothing


def test_difficult_for_ai_carries_kangs_band_to_each_runs_operating_point(store: ReviewStore, tmp_path: Path) -> None:
    """Kang et al.'s 0.4-0.6 band sits around their 0.5 decision; around 0.684 it is 0.591-0.765 (same odds)."""
    missed, borderline, normal, false_alarm = (series_uid(i) for i in range(1, 5))
    runs = [shipped_like_entry(missed, 0.65, 0.01), shipped_like_entry(borderline, 0.76, 0.3),
            shipped_like_entry(normal, 0.50, 0.01), shipped_like_entry(false_alarm, 0.70, 0.3)]
    import_infer_json(store, write_runs(tmp_path / "infer.json", runs))
    import_labels_csv(store, write_labels_csv(tmp_path / "labels.csv", {missed: 1, borderline: 1, normal: 0, false_alarm: 0}))
    items = {it.series_uid: it for it in difficult_for_ai(store)}
    # every case the model got wrong at its operating point is listed (the missed bleed at 0.65 too,
    # which a fixed 0.6 bound would leave out), and a normal scan at 0.50 (far below 0.684) is not
    assert set(items) == {missed, borderline, false_alarm}
    assert items[missed].reason == ("labelled positive, ANY probability 0.650 <= 0.765 "
                                    "(Kang et al.'s band around its operating point 0.684)")
    assert items[false_alarm].reason.startswith("labelled negative, ANY probability 0.700 >= 0.591")
    # Kang et al.'s fixed bounds, when given
    fixed = {it.series_uid for it in difficult_for_ai(store, thresholds=QueueThresholds(0.6, 0.4))}
    assert fixed == {normal, false_alarm}
    # a run stored without a threshold gets exactly Kang et al.'s 0.4-0.6
    from ichviewer.review import ModelCall

    assert ModelCall(0.5).difficult_band() == (0.4, 0.6)
    assert ModelCall(0.5, 1, 0.5).difficult_band() == (0.4, 0.6)


def test_a_run_stored_with_a_threshold_but_no_call_is_called_at_that_threshold() -> None:
    from ichviewer.review.store import ModelCall

    # An import from another tool that kept its threshold and not its decision: 0.6 is below its 0.7.
    run = ModelCall(probability=0.6, threshold=0.7)
    assert run.called() == 0 and run.operating_point() == 0.7
    assert run.describe() == "absent (p=0.600, its stored threshold 0.7, no call stored)"
    assert ModelCall(probability=0.6).called() == 1  # neither: Kang et al.'s 0.5
    assert ModelCall(probability=0.6, decision=1, threshold=0.7).called() == 1  # the run's own call wins
    assert run.called(threshold=0.55) == 1
