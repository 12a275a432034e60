"""The whole workstation as `ichviewer open` builds it: viewer + AI + review database working together."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from ichviewer.qt.app import build_workstation
from ichviewer.qt.inference_settings import InferenceSettings
from ichviewer.review import ReviewStore, add_member, create_panel
from inference_fixtures import add_member as add_model, make_volume, write_manifest, write_dicom_series

pytestmark = pytest.mark.gui
WAIT_MS = 20000


def _ensemble(directory: Path) -> Path:
    e1, _ = add_model(directory, "alpha", seed=1, degree=3)
    e2, _ = add_model(directory, "beta", seed=2, degree=1)
    # ANY at threshold 0: every slice is a positive finding, so the markers are predictable.
    write_manifest(directory, [e1, e2], thresholds={"IPH": 0.5, "IVH": 0.5, "SDH": 0.5, "EDH": 0.5, "SAH": 0.5, "ANY": 0.0})
    return directory


def _series(tmp_path: Path, seed: int, n: int = 6, *, skull: bool = False) -> tuple[Path, str]:
    """A small random series written as DICOM; with `skull`, a bone rim makes it pass the head-CT check."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-40, 90, size=(n, 24, 32)).astype(np.int16)
    if skull:
        hu[:, [0, -1], :] = hu[:, :, [0, -1]] = 1200
    uid = f"1.2.826.0.1.3680043.10.99.{seed}"
    vol = make_volume(hu, series_uid=uid, study_uid=f"1.2.826.0.1.3680043.10.98.{seed}", series_description=f"CASE {seed}",
                      **({"spacing": (5.0, 3.0, 3.0)} if skull else {}))
    folder = tmp_path / f"case{seed}"
    write_dicom_series(vol, folder, description=f"CASE {seed}")
    return folder, uid


def _panel_case_open(qtbot, tmp_path: Path, settings_dir: Path, seed: int):
    """A blinded one-case panel with Dr Kim as member, and a workstation reading as Dr Kim with that case
    open: (window, panel, db, (folder, uid))."""
    folder, uid = _series(tmp_path, seed)
    db = tmp_path / "review.sqlite"
    with ReviewStore(db) as store:
        store.add_study(uid, path=str(folder))
        panel = create_panel(store, "second look", series_uids=[uid], blinded=True)
        add_member(store, panel.id, "Dr Kim")
    w = build_workstation(settings_dir, ai=False, db_path=db, reader=("Dr Kim", "attending"))
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.sig_volume_opened, timeout=WAIT_MS):
        w.open_path(folder)
    return w, panel, db, (folder, uid)


def _shown_workstation(qtbot, tmp_path: Path, settings_dir: Path, *, auto_infer: bool = True, keep_results: bool = True):
    """The workstation with the tiny ensemble and a review database, reading as Dr Kim, on screen."""
    InferenceSettings(auto_infer=auto_infer, keep_results=keep_results).save(settings_dir)
    window = build_workstation(settings_dir, models_dir=_ensemble(tmp_path / "ens"), db_path=tmp_path / "review.sqlite",
                               reader=("Dr Kim", "attending"))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


@pytest.fixture
def workstation(qtbot, tmp_path, settings_dir):
    window = _shown_workstation(qtbot, tmp_path, settings_dir)
    yield window
    window.close()


def test_a_read_entered_by_keyboard_is_on_disk_with_the_ai_run_it_saw(qtbot, workstation, tmp_path):
    folder, uid = _series(tmp_path, 1)
    ai = workstation.inference
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS):
        workstation.open_path(folder)
    review = workstation.review
    qtbot.waitUntil(lambda: review.adjudication.ai_labels["ANY"].text().startswith("p = "), timeout=WAIT_MS)
    # the AI column says what the AI called, beside how sure it was (ichviewer.core.decisions' tiers)
    case = ai.controller.last_result.case
    from ichviewer.core.decisions import probability_and_threshold_text

    for label in ("IPH", "ANY"):
        shown = review.adjudication.ai_labels[label]
        p, t = probability_and_threshold_text(case[label].probability, case[label].threshold)
        assert shown.text() == f"p = {p}"
        assert shown.toolTip() == f"The AI called {label} {case[label].tier} (threshold {t})" and "color: #" in shown.styleSheet()

    panel = review.adjudication
    panel.set_status("ANY", "present")
    panel.set_status("IPH", "present")
    panel.ai_boxes["ANY"].setCurrentText("accept")
    panel.note_edit.setFocus()
    qtbot.waitUntil(panel.note_edit.hasFocus)
    QTest.keyClicks(panel.note_edit, "left basal ganglia")
    with qtbot.waitSignal(panel.sig_read_saved, timeout=WAIT_MS) as saved:
        QTest.keyClick(panel.note_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)

    # A separate connection to the file, as another program would read it.
    con = sqlite3.connect(tmp_path / "review.sqlite")
    row = con.execute("SELECT series_uid, note, model_run_id, reader_id FROM reads WHERE id = ?", (saved.args[0],)).fetchone()
    assert row[0] == uid and row[1] == "left basal ganglia" and row[2] is not None
    assert con.execute("SELECT name, role FROM readers WHERE id = ?", (row[3],)).fetchone() == ("Dr Kim", "attending")
    run = con.execute("SELECT provider FROM model_runs WHERE id = ?", (row[2],)).fetchone()
    assert run == ("CPUExecutionProvider",)
    con.close()


def test_blinded_panel_member_sees_no_ai_until_the_vote_is_in(qtbot, workstation, tmp_path):
    folder, uid = _series(tmp_path, 2)
    ai = workstation.inference
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS):
        workstation.open_path(folder)
    review = workstation.review
    qtbot.waitUntil(lambda: review.store.latest_model_run(uid) is not None, timeout=WAIT_MS)
    with ReviewStore(tmp_path / "review.sqlite") as store:
        panel = create_panel(store, "difficult ICH", series_uids=[uid], blinded=True)
        add_member(store, panel.id, "Dr Kim")

    atlas = workstation.atlas
    atlas.dock.show()  # the prediction basis was on screen (its tab raised)
    vote = review.open_panel(panel.id)
    assert vote.isVisible()
    assert ai.blinded and ai.findings_dock.isHidden() and ai.bottom.isHidden() and ai.side_strip.isHidden()
    assert not ai.overlay.enabled and review.adjudication.ai_boxes["ANY"].isHidden()
    # the prediction basis (the model's p on this slice and its basis) is hidden too
    assert atlas.dock.isHidden() and not atlas.dock.toggleViewAction().isEnabled()
    # the worklist's model column and reasons quote the AI, and its reference column gives the label
    # the panel is relabelling (the panel itself withholds it until the vote is in); its reference
    # filter could sort the cases by it
    worklist = review.worklist
    table = worklist.table
    assert all(table.isColumnHidden(c) for c in (1, 2, 3)) and not table.isColumnHidden(0)
    assert not worklist.reference_filter.isEnabled() and worklist.reference_filter.currentIndex() == 0
    # results arriving while blinded do not say in the status line what they are
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS) as finished:
        ai.analyse()
    message = workstation.statusBar().currentMessage()
    assert "hidden until your vote" in message and finished.args[1].triage not in message
    vote.open_case(uid)
    vote.vote_boxes["ANY"].setCurrentText("present")
    vote.note_edit.setFocus()
    qtbot.waitUntil(vote.note_edit.hasFocus)
    with qtbot.waitSignal(vote.sig_vote_saved, timeout=WAIT_MS):
        QTest.keyClick(vote.note_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert not ai.blinded and not ai.findings_dock.isHidden()
    assert not review.adjudication.ai_boxes["ANY"].isHidden()
    assert not atlas.dock.isHidden() and atlas.dock.toggleViewAction().isEnabled()
    assert not any(table.isColumnHidden(c) for c in (1, 2, 3)) and worklist.reference_filter.isEnabled()


def test_an_adjudication_not_saved_survives_a_change_of_series_and_a_restart(qtbot, tmp_path, settings_dir):
    from ichviewer.qt.review_attach import DRAFTS_FILE

    (a, uid_a), (b, _uid_b) = _series(tmp_path, 11), _series(tmp_path, 12)
    db = tmp_path / "review.sqlite"
    w = build_workstation(settings_dir, ai=False, db_path=db, reader=("Dr Kim", "attending"))
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.sig_volume_opened, timeout=WAIT_MS):
        w.open_path(a)
    w.review.adjudication.set_status("ANY", "present")
    w.review.adjudication.note_edit.setPlainText("falx, 3 mm")
    with qtbot.waitSignal(w.sig_volume_opened, timeout=WAIT_MS):
        w.open_path(b)  # moved on without saving
    kept = json.loads((settings_dir / DRAFTS_FILE).read_text())["drafts"]
    assert [(d["reader"], d["series_uid"], d["values"]["statuses"]) for d in kept] == [("Dr Kim", uid_a, {"ANY": "present"})]
    w.close()
    again = build_workstation(settings_dir, ai=False, db_path=db, reader=("Dr Kim", "attending"))
    qtbot.addWidget(again)
    with qtbot.waitSignal(again.sig_volume_opened, timeout=WAIT_MS):
        again.open_path(a)
    panel = again.review.adjudication
    assert panel.form_values()["statuses"] == {"ANY": "present"} and panel.form_values()["note"] == "falx, 3 mm"
    assert panel.submit() is not None
    assert not (settings_dir / DRAFTS_FILE).exists()  # saved: nothing left waiting
    again.close()


def test_an_entry_being_typed_is_on_disk_within_a_second_so_a_crash_does_not_lose_it(qtbot, tmp_path, settings_dir):
    from ichviewer.qt.review_attach import DRAFT_SAVE_DELAY_MS, DRAFTS_FILE, VOTE_DRAFTS_FILE

    w, panel, db, (a, _uid_a) = _panel_case_open(qtbot, tmp_path, settings_dir, 17)
    drafts, votes = settings_dir / DRAFTS_FILE, settings_dir / VOTE_DRAFTS_FILE
    w.review.adjudication.set_status("IPH", "present")
    QTest.keyClicks(w.review.adjudication.note_edit, "left frontal")
    vote = w.review.open_panel(panel.id)
    vote.vote_boxes["ANY"].setCurrentText("present")
    # no change of series, no closing: the process could die now
    qtbot.waitUntil(lambda: drafts.exists() and votes.exists(), timeout=DRAFT_SAVE_DELAY_MS + 3000)
    [kept] = json.loads(drafts.read_text())["drafts"]
    assert kept["values"]["statuses"] == {"IPH": "present"} and kept["values"]["note"] == "left frontal"
    assert json.loads(votes.read_text())["drafts"][0]["votes"] == {"ANY": "present"}
    # "after the crash": a new workstation on the same settings folder puts both back
    again = build_workstation(settings_dir, ai=False, db_path=db, reader=("Dr Kim", "attending"))
    qtbot.addWidget(again)
    with qtbot.waitSignal(again.sig_volume_opened, timeout=WAIT_MS):
        again.open_path(a)
    assert again.review.adjudication.form_values()["note"] == "left frontal"
    assert again.review.open_panel(panel.id).vote_boxes["ANY"].currentText() == "present"
    again.close()
    w.close()


def test_a_panel_vote_not_cast_survives_a_restart(qtbot, tmp_path, settings_dir):
    from ichviewer.qt.review_attach import VOTE_DRAFTS_FILE

    (a, uid_a), (b, uid_b) = _series(tmp_path, 13), _series(tmp_path, 14)
    db = tmp_path / "review.sqlite"
    with ReviewStore(db) as store:
        for uid in (uid_a, uid_b):
            store.add_study(uid)
        panel = create_panel(store, "second look", series_uids=[uid_a, uid_b], blinded=True)
        add_member(store, panel.id, "Dr Kim")
    w = build_workstation(settings_dir, ai=False, db_path=db, reader=("Dr Kim", "attending"))
    qtbot.addWidget(w)
    vote = w.review.open_panel(panel.id)
    vote.open_case(uid_a)
    vote.vote_boxes["ANY"].setCurrentText("absent")
    vote.note_edit.setText("calcified falx")
    with qtbot.waitSignal(w.sig_volume_opened, timeout=WAIT_MS):
        w.open_path(b)  # the next case, through the viewer
    assert vote.current_series() == uid_b and vote.note_edit.text() == ""
    kept = json.loads((settings_dir / VOTE_DRAFTS_FILE).read_text())["drafts"]
    assert [(d["reader"], d["panel_id"], d["series_uid"], d["votes"]) for d in kept] == [
        ("Dr Kim", panel.id, uid_a, {"ANY": "absent"})]
    w.close()
    again = build_workstation(settings_dir, ai=False, db_path=db, reader=("Dr Kim", "attending"))
    qtbot.addWidget(again)
    vote = again.review.open_panel(panel.id)
    vote.open_case(uid_a)
    assert vote.vote_boxes["ANY"].currentText() == "absent" and vote.note_edit.text() == "calcified falx"
    assert vote.submit()
    assert not (settings_dir / VOTE_DRAFTS_FILE).exists()  # cast: nothing left waiting
    again.close()


def test_a_panel_vote_is_always_on_the_series_on_screen(qtbot, tmp_path, settings_dir):
    w, panel, db, (_a, uid_a) = _panel_case_open(qtbot, tmp_path, settings_dir, 15)
    b, _uid_b = _series(tmp_path, 16)
    # Seen live: a panel opened on one of its cases showed no case, and Ctrl+Enter said "Choose a case first".
    vote = w.review.open_panel(panel.id)
    assert vote.current_series() == uid_a and vote.save_button.isEnabled()
    # a tab beside the adjudication, not a fourth dock squeezing the column
    assert w.review.vote_dock in w.tabifiedDockWidgets(w.review.adjudication_dock)
    assert [i.row() for i in vote.cases.selectionModel().selectedRows()] == [0]
    vote.vote_boxes["ANY"].setCurrentText("absent")
    # Another series on screen (not a panel case): the vote no longer pointed at a case the member could
    # see; it was cast on the last panel case shown.
    with qtbot.waitSignal(w.sig_volume_opened, timeout=WAIT_MS):
        w.open_path(b)
    assert vote.current_series() is None and not vote.save_button.isEnabled()
    assert not vote.vote_boxes["ANY"].isEnabled() and "not a case of this panel" in vote.message_text()
    assert not vote.submit()
    with ReviewStore(db) as store:
        assert store.conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 0
    # Choosing the case in the list opens its series, and the vote chosen before is back.
    with qtbot.waitSignal(w.sig_volume_opened, timeout=WAIT_MS):
        vote.cases.setCurrentCell(0, 0)
        vote.cases.cellActivated.emit(0, 0)
    assert w.volume.series_uid == uid_a and vote.current_series() == uid_a
    assert vote.vote_boxes["ANY"].currentText() == "absent" and vote.save_button.isEnabled()
    w.close()


def test_the_teaching_switch_shows_the_reference_after_a_saved_read_and_is_remembered(qtbot, tmp_path, settings_dir):
    from ichviewer.qt.review_attach import REVIEW_SETTINGS_FILE

    (a, uid_a), = (_series(tmp_path, 18),)
    db = tmp_path / "review.sqlite"
    with ReviewStore(db) as store:
        store.add_study(uid_a, path=str(a))
        store.set_label(uid_a, "ANY", 1, source="teaching set")
    w = build_workstation(settings_dir, ai=False, db_path=db, reader=("Dr Res", "resident"))
    qtbot.addWidget(w)
    review = w.review
    assert not review.teaching_action.isChecked()  # off by default: no feedback during a reader study
    with qtbot.waitSignal(w.sig_volume_opened, timeout=WAIT_MS):
        w.open_path(a)
    panel = review.adjudication
    panel.set_status("ANY", "absent")
    with qtbot.waitSignal(panel.sig_read_saved, timeout=WAIT_MS):
        panel.submit()
    assert not panel.last_read_feedback.isVisible() and panel.last_read_feedback.text() == ""
    review.teaching_action.setChecked(True)
    panel.set_status("ANY", "absent")
    panel.confidence_boxes["ANY"].setValue(4)  # a new read (the same one again is not saved twice)
    with qtbot.waitSignal(panel.sig_read_saved, timeout=WAIT_MS):
        panel.submit()
    assert panel.last_read_feedback.text() == "Last read (CASE 18): Reference: ANY positive. Your read differs on ANY (you: absent)."
    assert "#ff8a65" in panel.last_read_feedback.styleSheet() and not panel.last_read_feedback.isHidden()
    assert json.loads((settings_dir / REVIEW_SETTINGS_FILE).read_text()) == {"show_reference_after_read": True}
    w.close()
    again = build_workstation(settings_dir, ai=False, db_path=db, reader=("Dr Res", "resident"))
    qtbot.addWidget(again)
    assert again.review.teaching_action.isChecked()
    again.close()


def test_help_keys_lists_the_ai_navigation(qtbot, workstation):
    from PySide6.QtWidgets import QMessageBox

    workstation.show_bindings()
    [box] = [b for b in workstation.findChildren(QMessageBox) if b.windowTitle() == "Keys and mouse"]
    text = box.text()
    assert "Next flagged slice</td><td>N<" in text and "Previous flagged slice</td><td>Shift+N<" in text
    assert "double-click its row in AI findings" in text
    box.close()


def test_voting_with_no_panel_says_where_to_make_one(qtbot, workstation):
    errors = []
    workstation.sig_error.connect(errors.append)
    workstation.review.choose_panel()
    assert errors and "Review > Create a panel from the worklist queue" in errors[-1]
    assert workstation.review.create_panel_action.text().startswith("Create a panel from the worklist queue")


def test_about_box_says_what_it_is_for_and_where_the_reader_s_data_is(qtbot, workstation, tmp_path):
    from ichviewer import __version__

    box = workstation.show_about()
    text = box.text()
    assert box.isVisible() and f"ICH Viewer {__version__}" in text and "not for clinical use" in text
    assert str(workstation.review.db_path) in text and str(workstation.settings_dir) in text
    assert f"AI models: {workstation.inference.controller.ensemble_dir}" in text
    assert "ONNX Runtime" in text and "built with" in text and "CPUExecutionProvider" in text
    assert "no analysis has run yet" in text  # a GPU provider it was built with is not one that ran
    assert workstation.about_action.text().startswith("About ICH Viewer")
    box.close()


def test_statistics_dashboard_opens_visible(qtbot, workstation):
    axial_size = workstation.axial.size()
    dashboard = workstation.review.show_dashboard()
    assert dashboard.isVisible() and dashboard.statistics() is not None
    # nothing labelled yet: it says where reference labels come from instead of an empty chart alone
    assert "review import-labels" in dashboard.summary.text() and "consensus" in dashboard.summary.text()
    # over the window, not docked into it: the image keeps its size
    dock = workstation.review.dashboard_dock
    assert dock.isFloating() and workstation.geometry().contains(dock.geometry().center())
    QApplication.processEvents()  # the dock's layout pass, had it been docked
    assert workstation.axial.size() == axial_size


def test_reference_labels_imported_from_the_review_menu_fill_the_worklist(qtbot, workstation, tmp_path, monkeypatch):
    """Review › Import reference labels…: the CSV `review import-labels` reads; the queues update at once, and a
    bad file is named with its problem and changes nothing."""
    from PySide6.QtWidgets import QFileDialog

    folder, uid = _series(tmp_path, 31)
    ai, review = workstation.inference, workstation.review
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS):
        workstation.open_path(folder)
    qtbot.waitUntil(lambda: review.adjudication.ai_labels["ANY"].text().startswith("p = "), timeout=WAIT_MS)
    called = ai.controller.last_result.case["ANY"].positive
    good = tmp_path / "labels.csv"
    good.write_text(f"series_uid,any\n{uid},{0 if called else 1}\n")  # the opposite of the AI's call
    bad = tmp_path / "bad.csv"
    bad.write_text(f"series_uid,iph\n{uid},1\n")  # no `any` column
    errors: list[str] = []
    workstation.sig_error.connect(errors.append)
    assert review.import_labels_action in workstation.menuBar().actions()[-1].menu().actions()
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(bad), ""))
    review.import_labels_action.trigger()
    assert errors and str(bad) in errors[-1] and "any" in errors[-1].lower()
    assert review.worklist.counts()["ai"] == 0
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(good), ""))
    review.import_labels_action.trigger()
    assert workstation.statusBar().currentMessage().startswith("labels.csv: 1 series labelled, 1 label version(s) added")
    assert review.worklist.counts()["ai"] == 1  # wrong at its operating point: difficult for the AI


def _difficult_for_ai_cases(qtbot, workstation, tmp_path: Path, folders: list[tuple[Path, str]]) -> None:
    """Open each case (the AI run is recorded), then label it against its model output so it is
    difficult for the AI (Kang et al.: labelled positive with p <= 0.6, or negative with p >= 0.4)."""
    ai, review = workstation.inference, workstation.review
    for folder, _uid in folders:
        with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS):
            workstation.open_path(folder)
        qtbot.waitUntil(lambda: review.adjudication.ai_labels["ANY"].text().startswith("p = "), timeout=WAIT_MS)
    with ReviewStore(tmp_path / "review.sqlite") as store:
        for _folder, uid in folders:
            p_any = store.latest_model_run(uid)["labels"]["ANY"]
            store.set_label(uid, "ANY", int(p_any <= 0.6), source="test")


def test_saving_a_read_opens_the_next_case_in_the_worklist(qtbot, workstation, tmp_path):
    folders = [_series(tmp_path, s) for s in (3, 4)]
    review = workstation.review
    _difficult_for_ai_cases(qtbot, workstation, tmp_path, folders)
    review.worklist.set_kind("ai")
    review.worklist.refresh()
    shown = [item.series_uid for item in review.worklist.shown_items()]
    assert sorted(shown) == sorted(uid for _f, uid in folders)
    with qtbot.waitSignal(workstation.sig_volume_opened, timeout=WAIT_MS) as opened:
        review.worklist.table.selectRow(0)
        review.worklist._on_row_activated(0)
    first = opened.args[0].series_uid
    review.adjudication.set_status("ANY", "absent")
    review.adjudication.note_edit.setFocus()
    qtbot.waitUntil(review.adjudication.note_edit.hasFocus)
    with qtbot.waitSignal(workstation.sig_volume_opened, timeout=WAIT_MS) as nxt:
        QTest.keyClick(review.adjudication.note_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert nxt.args[0].series_uid != first and nxt.args[0].series_uid in shown


def test_a_panel_is_created_from_the_worklist_queue(qtbot, workstation, tmp_path):
    from ichviewer.review import members, panel_cases

    folders = [_series(tmp_path, s) for s in (5, 6)]
    review = workstation.review
    _difficult_for_ai_cases(qtbot, workstation, tmp_path, folders)
    review.worklist.set_kind("ai")
    review.worklist.refresh()  # as the create-panel dialog does before it states the count
    assert review.worklist.queue_size() == len(folders)
    panel = review.create_panel_from_queue("difficult for AI", ["Dr A", "Dr B", "Dr C"])
    assert panel.blinded and panel.source_queue == "ai"
    assert sorted(c["series_uid"] for c in panel_cases(review.store, panel.id)) == sorted(u for _f, u in folders)
    assert sorted(m.name for m in members(review.store, panel.id)) == ["Dr A", "Dr B", "Dr C"]


def test_slice_scrollbar_and_positive_markers_beside_it(qtbot, workstation, tmp_path):
    folder, _uid = _series(tmp_path, 7, n=9)
    ai = workstation.inference
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS):
        workstation.open_path(folder)
    bar = workstation.slice_bar
    assert (bar.minimum(), bar.maximum()) == (0, 8) and bar.value() == workstation.state.slice_index
    bar.setValue(2)
    assert workstation.state.slice_index == 2
    workstation.state.set_slice_index(6)
    assert bar.value() == 6
    # The markers beside the scrollbar are the plot's positive slices; clicking one goes there.
    assert ai.side_strip.positive == tuple(range(9)) and ai.side_strip.n_slices == 9
    y = int(ai.side_strip.position_of(4))
    qtbot.mouseClick(ai.side_strip, Qt.MouseButton.LeftButton, pos=QPoint(3, y))
    assert workstation.state.slice_index == 4 and bar.value() == 4
    # Top of the strip is the superior (last) slice, like the scrollbar.
    assert ai.side_strip.position_of(8) < ai.side_strip.position_of(0)


def test_in_a_short_window_no_panel_is_squeezed_and_the_any_row_shows(qtbot, workstation, tmp_path):
    """Stacked right-hand panels taller than the window scroll instead of overlapping their rows
    (the findings table's ANY row was hidden under the model list in a 1000-pixel window)."""
    folder, _ = _series(tmp_path, 3)
    ai = workstation.inference
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS):
        workstation.open_path(folder)
    workstation.resize(1500, 900)
    qtbot.wait(100)
    assert workstation.height() <= 900, "the docked panels' minimum heights keep the window taller than 900 px"
    panel = ai.panel
    for widget in (panel, workstation.review.adjudication):
        assert widget.height() >= widget.minimumSizeHint().height(), type(widget).__name__
        assert widget.width() >= widget.minimumSizeHint().width(), type(widget).__name__
    table = panel.table
    last = table.visualItemRect(table.item(table.rowCount() - 1, 0))
    assert table.viewport().rect().contains(last)
    # nothing drawn over the ANY row: the widget below the table starts under it
    below = panel.models_label.geometry().top()
    assert table.geometry().bottom() < below


def test_the_findings_dock_grows_into_the_height_other_panels_do_not_use(qtbot, workstation, tmp_path):
    """At 1600 x 1000 the results pushed the findings panel's last row (Analyse this study) below
    the dock Qt had sized for the empty panel. The dock now takes the height its roomiest neighbour
    does not need, and no other panel is made to scroll for it."""
    from ichviewer.qt.inference_attach import _dock_content_height, _dock_slack

    workstation.resize(1600, 1000)
    qtbot.wait(50)
    folder, _ = _series(tmp_path, 2)
    ai = workstation.inference
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS):
        workstation.open_path(folder)
    findings, others = ai.findings_dock, [ai.attention_dock, workstation.review.adjudication_dock]
    workstation.resizeDocks([findings, *others], [200, 300, 420], Qt.Orientation.Vertical)  # the findings squeezed
    qtbot.wait(50)
    before = findings.widget().viewport().height()
    short = _dock_content_height(findings) - before
    slack = max(_dock_slack(d) for d in others)  # the neighbour with the most to spare gives it
    scrolls = [d.widget().verticalScrollBar().maximum() for d in others]
    assert short > 0 and slack > 0
    ai._fit_findings_dock()
    qtbot.wait(50)

    grown = findings.widget().viewport().height() - before
    assert abs(grown - min(short, slack)) <= 2
    assert [d.widget().verticalScrollBar().maximum() for d in others] == scrolls  # nobody else scrolls more
    save = workstation.review.adjudication.save_button
    viewport = workstation.review.adjudication_dock.widget().viewport()
    assert viewport.rect().contains(save.mapTo(viewport, save.rect().bottomRight()))
    assert ai.panel.about_label.text().startswith("Not for clinical use.") or not ai.panel.about_label.text()


def test_a_findings_dock_alone_in_its_column_is_left_as_it_is(qtbot, workstation, tmp_path):
    folder, _ = _series(tmp_path, 4)
    ai = workstation.inference
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS):
        workstation.open_path(folder)
    for dock in (ai.attention_dock, workstation.review.adjudication_dock, workstation.atlas.dock):
        dock.hide()
    workstation.resize(1400, 420)  # too short for the whole panel
    qtbot.wait(100)
    from ichviewer.qt.inference_attach import _dock_content_height

    assert _dock_content_height(ai.findings_dock) > ai.findings_dock.widget().viewport().height()
    height = ai.findings_dock.height()
    ai._fit_findings_dock()  # nothing to take height from: no error, no change (the panel scrolls)
    assert ai.findings_dock.height() == height


@pytest.mark.parametrize("keep_results", [True, False])
def test_a_worklist_folder_is_triaged_in_the_background_and_read_in_the_ais_order(qtbot, tmp_path, settings_dir,
                                                                                  monkeypatch, keep_results):
    """DeepRadiologyNet's use of the AI: every study of the opened folder gets its verdict in the series
    browser, and the reader can read the most likely haemorrhage first (PageDown follows that order)."""
    import threading

    workstation = _shown_workstation(qtbot, tmp_path, settings_dir, keep_results=keep_results)

    from ichviewer.core.volume import CTVolume

    hashed_on: dict[str, bool] = {}  # series UID -> hashed on the GUI thread
    original_hash = CTVolume.pixel_sha256

    def spy_hash(volume):
        hashed_on.setdefault(volume.series_uid, threading.current_thread() is threading.main_thread())
        return original_hash(volume)

    monkeypatch.setattr(CTVolume, "pixel_sha256", spy_hash)
    worklist = tmp_path / "worklist"
    uids = [_series(worklist, seed, skull=True)[1] for seed in (31, 32, 33, 34)]
    ai, browser = workstation.inference, workstation.browser
    with qtbot.waitSignal(workstation.sig_study_loaded, timeout=WAIT_MS):
        workstation.open_path(worklist)
    qtbot.waitUntil(lambda: all(browser.series_ai(u) is not None for u in uids), timeout=WAIT_MS)
    volumes = workstation.volumes
    results = {u: ai.controller.result_for(volumes[u]) for u in uids}
    for u in uids:
        p = results[u].case["ANY"].probability
        shown = browser.series_ai(u)
        assert shown.text == f"ICH\n{p:.2f}" and shown.priority == p  # ANY threshold 0 here: all positive
        assert f"Triage: {results[u].triage}." in shown.tooltip
    assert browser.series_uids() == uids  # folder order until the reader asks for another
    # Every series' run is in the review database (the difficult-case queues see the whole folder). The
    # background series' pixels were hashed off the GUI thread (0.1 s for a 1 mm series: a stall); with
    # results kept, every series' were, once: by the AI job for its key, and the database reuses the hash.
    store = workstation.review.store

    def runs() -> dict[str, int]:
        return {r["series_uid"]: r["n"] for r in store.query("SELECT series_uid, COUNT(*) AS n FROM model_runs GROUP BY series_uid")}

    qtbot.waitUntil(lambda: len(runs()) == len(uids), timeout=WAIT_MS)
    assert runs() == {u: 1 for u in uids}
    assert hashed_on == {u: not keep_results and u == workstation.volume.series_uid for u in uids}
    browser.order_box.setCurrentIndex(browser.order_box.findData("ai"))
    expected = sorted(uids, key=lambda u: -results[u].case["ANY"].probability)
    assert browser.series_uids() == expected and expected != uids
    assert InferenceSettings.load(settings_dir).series_order == "ai"

    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS):
        workstation.show_volume(volumes[expected[0]])
    for step, key in ((1, Qt.Key.Key_PageDown), (0, Qt.Key.Key_PageUp), (1, Qt.Key.Key_PageDown)):
        with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS) as shown:
            qtbot.keyClick(workstation, key)
        assert workstation.volume.series_uid == expected[step]
        assert shown.args[1] is results[expected[step]] and not ai.controller.is_running  # no new run
        assert ai.panel.triage_text == results[expected[step]].triage
        p = results[expected[step]].case["ANY"].probability  # the adjudication quotes them as well
        assert workstation.review.adjudication.ai_labels["ANY"].text() == f"p = {p:.2f}"
    # A series shown again is the same model run in the review database, not a new one each time.
    with ReviewStore(tmp_path / "review.sqlite") as store:
        runs = store.conn.execute("SELECT COUNT(*) FROM model_runs WHERE series_uid = ?", (expected[1],)).fetchone()[0]
    assert runs == 1
    workstation.close()


def test_a_blinded_member_sees_no_verdicts_in_the_browser_while_a_panel_case_waits(qtbot, workstation, tmp_path):
    worklist = tmp_path / "worklist"
    (_a, uid_a), (_b, uid_b) = _series(worklist, 41), _series(worklist, 42)
    ai, browser, review = workstation.inference, workstation.browser, workstation.review
    with qtbot.waitSignal(workstation.sig_study_loaded, timeout=WAIT_MS):
        workstation.open_path(worklist)
    qtbot.waitUntil(lambda: browser.series_ai(uid_a) is not None and browser.series_ai(uid_b) is not None, timeout=WAIT_MS)
    browser.set_order("ai")
    with ReviewStore(tmp_path / "review.sqlite") as store:
        for uid in (uid_a, uid_b):
            store.add_study(uid)
        panel = create_panel(store, "second look", series_uids=[uid_a, uid_b], blinded=True)
        add_member(store, panel.id, "Dr Kim")
    vote = review.open_panel(panel.id)
    with qtbot.waitSignal(workstation.sig_volume_opened, timeout=WAIT_MS):
        workstation.show_volume(workstation.volumes[uid_a])
    tree = browser.series_tree
    assert ai.blinded and tree.isColumnHidden(1) and not browser.order_box.isEnabled()
    assert browser.series_uids() == [uid_a, uid_b]  # the folder's order: the AI's would tell
    vote.open_case(uid_a)
    vote.vote_boxes["ANY"].setCurrentText("present")
    with qtbot.waitSignal(vote.sig_vote_saved, timeout=WAIT_MS):
        vote.submit()
    # Case A is voted, so its own findings show; case B still waits, so the lists that quote it stay hidden.
    assert not ai.blinded and tree.isColumnHidden(1) and not browser.order_box.isEnabled()
    assert review.worklist.table.isColumnHidden(1)
    with qtbot.waitSignal(workstation.sig_volume_opened, timeout=WAIT_MS):
        workstation.show_volume(workstation.volumes[uid_b])
    vote.open_case(uid_b)
    vote.vote_boxes["ANY"].setCurrentText("absent")
    with qtbot.waitSignal(vote.sig_vote_saved, timeout=WAIT_MS):
        vote.submit()
    assert not tree.isColumnHidden(1) and browser.order_box.isEnabled() and not review.worklist.table.isColumnHidden(1)


def test_saving_a_read_in_a_folder_opens_the_next_series_without_the_readers_read(qtbot, workstation, tmp_path):
    """Reading down the series list (a worklist folder): a saved read opens the next series in the list
    that this reader has not read, round again from the top; when every one has a read the reader stays."""
    worklist = tmp_path / "worklist"
    for seed in (51, 52, 53):
        _series(worklist, seed, skull=True)
    with qtbot.waitSignal(workstation.sig_study_loaded, timeout=WAIT_MS):
        workstation.open_path(worklist)
    order = workstation.browser.series_uids()
    panel = workstation.review.adjudication

    def save_read() -> None:
        panel.set_status("ANY", "absent")
        with qtbot.waitSignal(panel.sig_read_saved, timeout=WAIT_MS):
            panel.submit()

    assert workstation.volume.series_uid == order[0]
    browser = workstation.browser
    assert browser.read_marked() == []
    with qtbot.waitSignal(workstation.sig_volume_opened, timeout=WAIT_MS):
        qtbot.keyClick(workstation, Qt.Key.Key_PageDown)  # the reader starts on the second
    save_read()
    assert workstation.volume.series_uid == order[2]
    assert browser.read_marked() == [order[1]]  # the list ticks what this reader has read
    assert browser.series_tree.topLevelItem(1).text(0).endswith("\u2713 read")
    save_read()
    assert workstation.volume.series_uid == order[0]  # round again: the first has no read yet
    assert "next series without your read (1 left in the list)" in workstation.statusBar().currentMessage()
    save_read()
    assert workstation.volume.series_uid == order[0]  # every series has a read: the reader stays
    assert "every series in the list has your read" in workstation.statusBar().currentMessage()
    with qtbot.waitSignal(workstation.sig_volume_opened, timeout=WAIT_MS):
        qtbot.keyClick(workstation, Qt.Key.Key_PageDown)
    panel.confidence_boxes["ANY"].setValue(3)  # a second look (the same read is not saved twice)
    save_read()
    assert workstation.volume.series_uid == order[1]
    assert browser.read_marked() == order
    workstation.review.set_reader(workstation.review.store.add_reader("Dr Lee", "resident"))
    assert browser.read_marked() == []  # another reader: their own reads are ticked


def test_the_adjudication_names_a_series_without_a_description_as_the_viewer_does(qtbot, tmp_path, settings_dir, ct_data_dir):
    """The real GE head has no series description: the form said "(no description)" while the corner,
    the title and the Series list named it by its study description and scanner."""
    from ichviewer.qt.display import series_label

    w = build_workstation(settings_dir, ai=False, db_path=tmp_path / "review.sqlite", reader=("Dr Kim", "attending"))
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.sig_volume_opened, timeout=WAIT_MS):
        w.open_path(ct_data_dir / "ge-head-tilted")
    assert not w.volume.series_description
    name = series_label(w.volume)
    assert name.startswith("HEAD") and "GE MEDICAL SYSTEMS" in name
    assert w.review.adjudication.case_label.text() == f"{name} \u2014 {w.volume.n_slices} images"
    w.close()


def test_with_analysis_on_opening_off_the_folder_is_triaged_on_request(qtbot, tmp_path, settings_dir):
    w = _shown_workstation(qtbot, tmp_path, settings_dir, auto_infer=False)
    worklist = tmp_path / "worklist"
    uids = [_series(worklist, seed, skull=True)[1] for seed in (61, 62, 63)]
    ai, browser = w.inference, w.browser
    with qtbot.waitSignal(w.sig_study_loaded, timeout=WAIT_MS):
        w.open_path(worklist)
    qtbot.wait(50)
    assert ai.controller.background_pending == 0 and browser.series_ai(uids[1]) is None  # nothing runs unasked
    assert not ai.controller.is_running and ai.controller.result_for(w.volume) is None
    ai.folder_action.trigger()  # AI > Analyse every series in the folder
    qtbot.waitUntil(lambda: all(browser.series_ai(u) is not None for u in uids), timeout=WAIT_MS)
    # A series analysed on request shows its findings when opened, though nothing is analysed on opening.
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS) as shown:
        qtbot.keyClick(w, Qt.Key.Key_PageDown)
    assert shown.args[1] is ai.controller.result_for(w.volume) and w.volume.series_uid == uids[1]
    assert ai.panel.triage_text == shown.args[1].triage and not ai.controller.is_running
    w.close()


def test_analyse_every_series_gives_the_series_on_screen_its_kept_result_too(qtbot, tmp_path, settings_dir):
    """AI > Analyse every series in the folder, in a later session with analysis on opening off: the
    series on screen gets its kept findings like the folder's others (no model run); the reader's
    "Analyse this study" still runs the models afresh."""
    worklist = tmp_path / "worklist"
    uids = [_series(worklist, seed, skull=True)[1] for seed in (71, 72)]
    first = _shown_workstation(qtbot, tmp_path, settings_dir)
    with qtbot.waitSignal(first.sig_study_loaded, timeout=WAIT_MS):
        first.open_path(worklist)
    qtbot.waitUntil(lambda: all(first.browser.series_ai(u) is not None for u in uids), timeout=WAIT_MS)
    first.close()

    later = _shown_workstation(qtbot, tmp_path, settings_dir, auto_infer=False)
    ai = later.inference
    with qtbot.waitSignal(later.sig_study_loaded, timeout=WAIT_MS):
        later.open_path(worklist)
    qtbot.wait(50)
    assert ai.controller.result_for(later.volume) is None
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS) as shown:
        ai.folder_action.trigger()
    assert shown.args[1].restored and ai.panel.elapsed_label.text().startswith("Kept from ")
    qtbot.waitUntil(lambda: all(later.browser.series_ai(u) is not None for u in uids), timeout=WAIT_MS)
    with qtbot.waitSignal(ai.controller.sig_finished, timeout=WAIT_MS) as fresh:
        ai.controller.start()  # what "Analyse this study" calls
    assert not fresh.args[1].restored and ai.panel.elapsed_label.text().startswith("Elapsed: ")
    later.close()


def test_forget_kept_ai_results_asks_first_then_the_next_session_runs_the_models(qtbot, tmp_path, settings_dir, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    folder, _uid = _series(tmp_path, 3, skull=True)
    first = _shown_workstation(qtbot, tmp_path, settings_dir)
    with qtbot.waitSignal(first.inference.controller.sig_finished, timeout=WAIT_MS):
        first.open_path(folder)
    kept = first.inference.controller.kept_results
    assert len(kept) == 1
    asked: list[str] = []

    def answer(button):
        def question(_parent, _title, text, *args, **kwargs):
            asked.append(text)
            return button
        return question

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    first.inference.forget_action.trigger()
    assert "1 kept AI result(s)" in asked[0] and str(kept.root) in asked[0] and len(kept) == 1  # No: nothing goes
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    first.inference.forget_action.trigger()
    assert len(kept) == 0 and first.statusBar().currentMessage() == "Forgot 1 kept AI result(s)"
    assert first.inference.panel.triage_text  # the findings on screen stay
    first.inference.forget_action.trigger()  # nothing left: says so, asks nothing
    assert len(asked) == 2 and "No AI results are kept" in first.statusBar().currentMessage()
    first.close()

    later = _shown_workstation(qtbot, tmp_path, settings_dir)
    with qtbot.waitSignal(later.inference.controller.sig_finished, timeout=WAIT_MS) as again:
        later.open_path(folder)
    assert not again.args[1].restored  # the models ran
    later.close()


def test_a_series_opened_again_in_a_later_session_shows_its_kept_findings_and_cites_the_same_run(qtbot, tmp_path, settings_dir):
    """Findings kept from an earlier session (same voxels, same models) come back without running the
    models, the panel says when they were computed, and the read cites the run recorded then."""
    folder, uid = _series(tmp_path, 1, skull=True)
    first = _shown_workstation(qtbot, tmp_path, settings_dir)
    with qtbot.waitSignal(first.inference.controller.sig_finished, timeout=WAIT_MS) as computed:
        first.open_path(folder)
    qtbot.waitUntil(lambda: first.review.adjudication._model_run_id is not None, timeout=WAIT_MS)
    run_id = first.review.adjudication._model_run_id
    assert first.inference.panel.elapsed_label.text().startswith("Elapsed: ")
    first.close()

    later = _shown_workstation(qtbot, tmp_path, settings_dir)
    with qtbot.waitSignal(later.inference.controller.sig_finished, timeout=WAIT_MS) as kept:
        later.open_path(folder)
    result = kept.args[1]
    assert result.restored and np.array_equal(result.slice_probabilities, computed.args[1].slice_probabilities)
    panel = later.inference.panel
    assert panel.elapsed_label.text() == f"Kept from {result.restored}"
    assert f"analysed {result.restored} in " in panel.status.text() and "(kept, not run again)" in panel.status.text()
    assert "(kept, not run again)" in panel.summary
    qtbot.waitUntil(lambda: later.review.adjudication._model_run_id is not None, timeout=WAIT_MS)
    assert later.review.adjudication._model_run_id == run_id
    assert later.review.store.query("SELECT count(*) AS n FROM model_runs WHERE series_uid = ?", (uid,))[0]["n"] == 1
    later.close()
