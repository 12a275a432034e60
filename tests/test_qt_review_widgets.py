"""GUI tests of the review widgets: a read saved by keyboard lands in the SQLite file; worklist; reader dialog."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialogButtonBox  # noqa: E402
from review_fixtures import seed, series_uid  # noqa: E402

from ichviewer.qt.review_widgets import AdjudicationPanel, ReaderIdentityDialog, WorklistPanel  # noqa: E402
from ichviewer.review import Read, ReviewStore  # noqa: E402

pytestmark = pytest.mark.gui
CTRL = Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def store(tmp_path: Path):
    with ReviewStore(tmp_path / "review.sqlite", actor="tester", busy_timeout_ms=200) as s:
        yield s


def _show(qtbot, widget) -> None:
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitExposed(widget)
    widget.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is widget)


@pytest.fixture
def panel(qtbot, store: ReviewStore) -> AdjudicationPanel:
    p = AdjudicationPanel(store)
    p.set_reader(store.add_reader("Dr Keyboard", "attending"))
    p.set_case(series_uid(1), study_uid="1.2.3", ai_findings={"ANY": 0.82, "SDH": 0.77}, description="Head CT")
    _show(qtbot, p)
    return p


def test_read_entered_and_submitted_by_keyboard_is_in_the_file(qtbot, panel: AdjudicationPanel,
                                                               store: ReviewStore) -> None:
    panel.status_boxes["ANY"].setFocus()
    qtbot.keyClick(panel.status_boxes["ANY"], Qt.Key.Key_P)           # present
    qtbot.keyClick(panel.status_boxes["SDH"], Qt.Key.Key_U)           # uncertain
    for _ in range(4):
        qtbot.keyClick(panel.confidence_boxes["ANY"], Qt.Key.Key_Up)  # confidence 4
    qtbot.keyClick(panel.ai_boxes["ANY"], Qt.Key.Key_A)               # accept the AI's ANY
    qtbot.keyClick(panel.ai_boxes["SDH"], Qt.Key.Key_S)               # supplement the SDH finding
    panel.note_edit.setFocus()
    qtbot.keyClicks(panel.note_edit, "thin left SDH")
    # Ctrl+Enter from inside the note box submits (the text box does not swallow it).
    with qtbot.waitSignal(panel.sig_read_saved, timeout=5000) as saved:
        qtbot.keyClick(panel.note_edit, Qt.Key.Key_Return, CTRL)
    read_id = saved.args[0]
    conn = sqlite3.connect(store.path)  # another connection: the read is committed
    row = conn.execute("SELECT series_uid, any_status, sdh_status, any_confidence, any_ai, sdh_ai, note,"
                       " created_by FROM reads WHERE id = ?", (read_id,)).fetchone()
    conn.close()
    assert row == (series_uid(1), "present", "uncertain", 4, "accept", "supplement", "thin left SDH",
                   "Dr Keyboard")
    assert f"#{read_id}" in panel.message_text()
    # Pressing Ctrl+Enter again on the unchanged form does not log a duplicate.
    with qtbot.assertNotEmitted(panel.sig_read_saved):
        qtbot.keyClick(panel.note_edit, Qt.Key.Key_Return, CTRL)
    assert store.read_count() == 1 and "Already saved" in panel.message_text()
    # A changed verdict is a new read (reads are append-only; the newest counts).
    qtbot.keyClick(panel.status_boxes["SDH"], Qt.Key.Key_Up)  # uncertain -> absent
    assert panel.status_boxes["SDH"].currentText() == "absent"
    with qtbot.waitSignal(panel.sig_read_saved, timeout=5000):
        qtbot.keyClick(panel.status_boxes["SDH"], Qt.Key.Key_Return, CTRL)
    assert store.read_count() == 2 and store.reads()[-1]["sdh_status"] == "absent"


def test_failed_save_shows_error_and_keeps_values_then_saves(qtbot, panel: AdjudicationPanel,
                                                             store: ReviewStore) -> None:
    panel.set_status("ANY", "absent")
    panel.note_edit.setPlainText("no bleed")
    # Another process holds the write lock longer than this store's busy timeout.
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with qtbot.waitSignal(panel.sig_save_failed, timeout=5000):
        qtbot.keyClick(panel.status_boxes["ANY"], Qt.Key.Key_Return, CTRL)
    assert "Not saved" in panel.message_text() and "locked" in panel.message_text()
    assert panel.status_boxes["ANY"].currentText() == "absent"
    assert panel.note_edit.toPlainText() == "no bleed"
    blocker.execute("ROLLBACK")
    blocker.close()
    with qtbot.waitSignal(panel.sig_read_saved, timeout=5000) as saved:
        qtbot.keyClick(panel.status_boxes["ANY"], Qt.Key.Key_Enter, CTRL)  # keypad Enter works too
    assert store.reads()[0]["id"] == saved.args[0] and store.reads()[0]["note"] == "no bleed"


def test_an_entry_not_saved_waits_as_a_draft_for_its_reader_and_series(qtbot, panel: AdjudicationPanel,
                                                                       store: ReviewStore) -> None:
    panel.set_status("ANY", "present")
    panel.set_status("SDH", "present")
    panel.confidence_boxes["SDH"].setValue(4)
    panel.ai_boxes["SDH"].setCurrentText("accept")
    panel.note_edit.setPlainText("thin left convexity SDH")
    entered = panel.form_values()
    panel.set_case(series_uid(2), description="the next case")  # moved on without saving
    assert panel.form_values() == {"statuses": {}, "confidence": {}, "ai": {}, "note": ""}
    panel.set_case(series_uid(1), ai_findings={"ANY": 0.82, "SDH": 0.77}, description="Head CT")  # back
    assert panel.form_values() == entered and "unsaved read of this series is back" in panel.message_text()
    assert store.read_count() == 0  # a draft is not a read
    # Another reader does not see it, and gets it back when they are the reader again.
    panel.set_reader(store.add_reader("Dr Other", "resident"))
    assert panel.form_values()["statuses"] == {}
    panel.set_reader(store.reader("Dr Keyboard"))
    assert panel.form_values() == entered
    # Saved: no longer a draft; moving on and back shows an empty form.
    assert panel.submit() is not None and store.read_count() == 1
    assert panel.drafts() == {}
    panel.set_case(series_uid(2))
    panel.set_case(series_uid(1))
    assert panel.form_values()["statuses"] == {}


def test_read_without_any_is_refused_and_nothing_is_written(qtbot, panel: AdjudicationPanel,
                                                            store: ReviewStore) -> None:
    panel.set_status("SDH", "present")
    with qtbot.waitSignal(panel.sig_save_failed, timeout=5000):
        qtbot.keyClick(panel.status_boxes["SDH"], Qt.Key.Key_Return, CTRL)
    assert "ANY" in panel.message_text()
    assert panel.status_boxes["SDH"].currentText() == "present"
    assert store.read_count() == 0


def test_worklist_counts_filters_and_opens_a_study_by_keyboard(qtbot, store: ReviewStore, tmp_path: Path) -> None:
    uids = [series_uid(i) for i in range(4)]
    seed(store, tmp_path, dict(zip(uids, [1, 1, 0, 0])), dict(zip(uids, [0.3, 0.9, 0.5, 0.1])))
    me = store.add_reader("Dr Me", "resident")
    store.log_read(me, Read(uids[1], {"ANY": "absent"}))
    w = WorklistPanel(store)
    w.set_reader(me)
    _show(qtbot, w)
    assert w.counts() == {"ai": 2, "human": 1, "discordant": 1}
    assert w.tabs.tabText(0) == "Difficult for AI (2)"
    assert {it.series_uid for it in w.shown_items()} == {uids[0], uids[2]}
    # a case is named by its folder (the last two parts), the UID in the tooltip; the filter finds either
    first_cell = w.table.item(0, 0)
    assert first_cell.text() == f"ct/{w.shown_items()[0].series_uid}" and w.shown_items()[0].series_uid in first_cell.toolTip()
    assert w.table.horizontalHeaderItem(0).text() == "Series"
    # each case's name is shown whole, on one line (it wrapped at the slash and lost its end)
    metrics = w.table.fontMetrics()
    assert not w.table.wordWrap()
    assert w.table.horizontalHeader().sectionSize(0) >= max(
        metrics.horizontalAdvance(w.table.item(r, 0).text()) for r in range(w.table.rowCount()))
    from types import SimpleNamespace

    from ichviewer.qt.review_widgets import case_name
    assert case_name(SimpleNamespace(path="C:\\exports\\PATIENT7\\SE0002\\", series_uid="1.2")) == "PATIENT7/SE0002"
    assert case_name(SimpleNamespace(path=None, series_uid="1.2.826.0.1.3680043.99.123456789012")) == "\u2026123456789012"
    w.search.setText(uids[2][-6:])
    assert [it.series_uid for it in w.shown_items()] == [uids[2]]
    w.search.setText("")
    w.reference_filter.setCurrentText("Labelled negative")
    assert [it.series_uid for it in w.shown_items()] == [uids[2]]
    w.reference_filter.setCurrentText("All")
    # A blinded panel member: the text filter no longer matches the hidden reasons ("labelled
    # positive, ANY probability ..."), so it cannot sort the cases by them.
    w.search.setText("labelled positive")
    assert [it.series_uid for it in w.shown_items()] == [uids[0]]
    w.set_ai_hidden(True)
    assert w.shown_items() == []
    w.search.setText(uids[2][-6:])
    assert [it.series_uid for it in w.shown_items()] == [uids[2]]
    w.set_ai_hidden(False)
    w.search.setText("")
    w.set_kind("discordant")
    assert [it.series_uid for it in w.shown_items()] == [uids[1]]
    w.set_kind("ai")
    w.table.setFocus()
    w.table.setCurrentCell(0, 0)
    with qtbot.waitSignal(w.sig_open_study, timeout=5000) as opened:
        qtbot.keyClick(w.table, Qt.Key.Key_Return)
    first = w.shown_items()[0]
    assert opened.args == [first.series_uid, f"/data/ct/{first.series_uid}"]
    with qtbot.waitSignal(w.sig_open_study, timeout=5000) as opened:
        assert w.open_next()
    assert opened.args[0] == w.shown_items()[1].series_uid
    assert not w.open_next()


def test_an_empty_worklist_says_what_would_fill_it(qtbot, store: ReviewStore) -> None:
    w = WorklistPanel(store)
    _show(qtbot, w)
    assert w.counts() == {"ai": 0, "human": 0, "discordant": 0}
    assert w.status.text().startswith("No cases. A case joins this queue when it has a reference label")
    w.set_kind("human")
    assert "saved reads of it disagree" in w.status.text()
    w.set_kind("discordant")  # without a reader it asks for one first
    assert "choose a reader" in w.status.text()
    w.set_reader(store.add_reader("Dr Me", "resident"))
    assert "your saved read differs" in w.status.text()


def test_a_narrow_worklist_keeps_p_model_and_the_reason_in_view(qtbot, store: ReviewStore, tmp_path: Path) -> None:
    """Seen live: in the dock's default width the longest case name pushed P(model) and the reason out
    of sight. The name column now gives way (elided in the middle, whole in its tooltip with the reason)."""
    uids = [series_uid(i) + ".4444444444444444444444444444" for i in range(3)]
    seed(store, tmp_path, dict(zip(uids, [1, 0, 0])), dict(zip(uids, [0.3, 0.5, 0.9])))
    w = WorklistPanel(store)
    _show(qtbot, w)
    narrow = w.minimumSizeHint().width()  # about a dock's default width
    w.resize(narrow, 400)
    qtbot.waitUntil(lambda: w.width() == narrow)
    assert w.shown_items()
    t, header = w.table, w.table.horizontalHeader()
    name_width = max(t.fontMetrics().horizontalAdvance(t.item(r, 0).text()) for r in range(t.rowCount()))
    assert header.sectionSize(0) < name_width  # the names give way ...
    p_col = w.COLUMNS.index("P(model)")
    assert header.sectionViewportPosition(p_col) + header.sectionSize(p_col) <= t.viewport().width()  # ... P(model) in view
    reason = w.COLUMNS.index("Reason")
    assert t.viewport().width() - header.sectionViewportPosition(reason) >= w.REASON_MIN_WIDTH - 1
    from PySide6.QtWidgets import QStyleOptionViewItem

    option = QStyleOptionViewItem()
    t.itemDelegateForColumn(0).initStyleOption(option, t.model().index(0, 0))
    assert option.textElideMode == Qt.TextElideMode.ElideMiddle and t.itemDelegateForColumn(3) is None
    tip = t.item(0, 0).toolTip()
    assert t.item(0, 0).text() in tip and w.shown_items()[0].reason in tip
    # wide again: the names whole
    w.resize(1200, 400)
    qtbot.waitUntil(lambda: w.width() == 1200)
    assert header.sectionSize(0) >= name_width
    # blinded: the tooltip does not quote the reason (it names the label and the probability)
    w.set_ai_hidden(True)
    w.search.setText(uids[0][-8:])
    assert all(it.reason not in t.item(r, 0).toolTip() for r, it in enumerate(w.shown_items()))


def test_reader_dialog_records_name_and_role(qtbot, store: ReviewStore) -> None:
    d = ReaderIdentityDialog(store)
    qtbot.addWidget(d)
    # what the name is for, and where it is kept: the first thing a new user is asked
    assert f"saved under this name in {store.path}" in d.explanation.text() and "Cancel" in d.explanation.text()
    ok = d.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()
    qtbot.keyClicks(d.name_edit, "Dr New")
    d.role_box.setCurrentText("panel")
    assert ok.isEnabled()
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    assert d.result() == d.DialogCode.Accepted
    assert d.selected_reader.name == "Dr New" and store.reader("Dr New").role == "panel"


def test_panel_member_votes_blinded_by_keyboard_then_sees_the_rest(qtbot, store: ReviewStore, tmp_path: Path) -> None:
    from ichviewer.qt.review_widgets import PanelVotePanel
    from ichviewer.review import add_member, cast_vote, create_panel

    uids = [series_uid(i) for i in range(2)]
    seed(store, tmp_path, dict(zip(uids, [1, 0])), dict(zip(uids, [0.3, 0.8])))
    panel = create_panel(store, "AI review", queue="ai")
    for name in ("E1", "E2"):
        add_member(store, panel.id, name)
    cast_vote(store, panel.id, "E1", uids[0], "absent", note="calcification")
    w = PanelVotePanel(store, panel.id, "E2")
    # as the workstation does: a case chosen in the list is voted on once its series is on screen
    w.sig_open_study.connect(lambda uid, _path: w.open_case(uid))
    _show(qtbot, w)
    w.cases.setFocus()
    row = next(r for r in range(w.cases.rowCount()) if uids[0] in w.cases.item(r, 0).toolTip())
    assert w.cases.item(row, 0).text() == f"ct/{uids[0]}"  # named by its folder, as on the worklist
    # A vote chosen on the other case and not cast waits there; its note does not follow to this one.
    w.open_case(uids[1])
    w.vote_boxes["ANY"].setCurrentText("absent")
    w.note_edit.setText("dense falx only")
    w.cases.setFocus()
    w.cases.setCurrentCell(row, 0)
    with qtbot.waitSignal(w.sig_open_study, timeout=5000) as opened:
        qtbot.keyClick(w.cases, Qt.Key.Key_Return)
    assert opened.args[0] == w.current_series() == uids[0]
    assert [i.row() for i in w.cases.selectionModel().selectedRows()] == [row]  # the case voted on is highlighted
    assert w.note_edit.text() == "" and w.vote_boxes["ANY"].currentText() == "\u2014"
    assert w.drafts() == {uids[1]: {"votes": {"ANY": "absent"}, "note": "dense falx only"}}
    assert "Blinded" in w.revealed.text() and "0.3" not in w.revealed.text()
    qtbot.keyClick(w.vote_boxes["ANY"], Qt.Key.Key_P)
    with qtbot.waitSignal(w.sig_vote_saved, timeout=5000):
        qtbot.keyClick(w.vote_boxes["ANY"], Qt.Key.Key_Return, CTRL)
    votes = store.conn.execute("SELECT rd.name, v.value FROM votes v JOIN readers rd ON rd.id = v.reader_id"
                               " WHERE v.series_uid = ? ORDER BY v.id", (w.current_series(),)).fetchall()
    assert votes[-1] == ("E2", "present")
    assert "E1 ANY absent" in w.revealed.text() and "Model: ANY 0.30" in w.revealed.text()
    assert not w.save_button.isEnabled()  # votes are final
    # "Next case not voted" goes to the one case left; with none left it says so
    with qtbot.waitSignal(w.sig_open_study, timeout=5000) as opened:
        w.next_button.click()
    assert opened.args[0] == w.current_series() == uids[1]
    assert w.vote_boxes["ANY"].currentText() == "absent" and w.note_edit.text() == "dense falx only"
    assert "not cast yet" in w.message_text()  # the vote left waiting is back, not cast
    assert w.submit()
    with qtbot.assertNotEmitted(w.sig_open_study):
        assert w.open_next_unvoted() is None
    assert w.message_text() == "You have voted on every case of this panel."


def test_dashboard_compares_a_reader_with_the_model_on_the_same_cases(qtbot, store: ReviewStore, tmp_path: Path) -> None:
    from ichviewer.qt.review_widgets import MODEL_ALL_CASES, MODEL_SAME_CASES, ReviewDashboard

    uids = [series_uid(i) for i in range(4)]
    # the model is right on three of four; the one case the resident read is the one it gets wrong
    seed(store, tmp_path, dict(zip(uids, [1, 1, 0, 0])), dict(zip(uids, [0.9, 0.95, 0.8, 0.1])))
    me = store.add_reader("Dr Me", "resident")
    store.log_read(me, Read(uids[2], {"ANY": "absent"}))
    d = ReviewDashboard(store)
    _show(qtbot, d)
    # Seen live: one read (accuracy 1.0) was set beside the model on all twelve cases (0.75).
    rows = {r[0]: r for r in d.rows()}
    assert list(rows) == ["Dr Me", MODEL_SAME_CASES.format(reader="Dr Me"), MODEL_ALL_CASES]
    assert rows["Dr Me"][1]["n"] == 1 and rows["Dr Me"][1]["accuracy"] == 1.0
    same = rows[MODEL_SAME_CASES.format(reader="Dr Me")][1]
    assert same["n"] == 1 and same["accuracy"] == 0.0 and same["specificity"] == 0.0
    assert rows[MODEL_ALL_CASES][1]["n"] == 4 and rows[MODEL_ALL_CASES][1]["accuracy"] == 0.75
    assert d.table.item(1, 0).text() == MODEL_SAME_CASES.format(reader="Dr Me") and d.table.item(1, 4).text() == "0.000"


def test_dashboard_shows_accuracy_before_and_after_amendment(qtbot, store: ReviewStore, tmp_path: Path) -> None:
    from ichviewer.qt.review_widgets import MODEL_ALL_CASES, MODEL_PANEL_CASES, ReviewDashboard
    from ichviewer.review import add_member, cast_vote, close_panel, create_panel

    uid = series_uid(0)
    seed(store, tmp_path, {uid: 0}, {uid: 0.8})
    panel = create_panel(store, "AI review", queue="ai")
    for i in range(3):
        add_member(store, panel.id, f"E{i}")
        cast_vote(store, panel.id, f"E{i}", uid, "present")
    close_panel(store, panel.id)
    d = ReviewDashboard(store)
    _show(qtbot, d)
    model = d.rows()[-1]
    assert model[0] == MODEL_ALL_CASES and model[1]["accuracy"] == 0.0 and model[2]["accuracy"] == 1.0
    d.scope.setCurrentIndex(1)
    assert "Fleiss" in d.summary.text() and "1 amended" in d.summary.text()
    assert [r[0] for r in d.rows()] == ["E0", "E1", "E2", MODEL_PANEL_CASES]
    assert d.table.item(3, 4).text() == "0.000" and d.table.item(3, 8).text() == "1.000"
    # every column header is shown whole (they were cut to "ensitivity (befor")
    header, metrics = d.table.horizontalHeader(), d.table.horizontalHeader().fontMetrics()
    for col in range(d.table.columnCount()):
        text = d.table.horizontalHeaderItem(col).text()
        assert header.sectionSize(col) >= max(metrics.horizontalAdvance(line) for line in text.splitlines())


def test_dashboard_counts_the_model_by_its_own_call_unless_a_threshold_is_chosen(qtbot, store: ReviewStore,
                                                                                 tmp_path: Path) -> None:
    """A run whose ensemble called ANY at 0.684 is negative at p = 0.65, although 0.65 >= 0.5."""
    import json

    from review_fixtures import infer_entry, write_labels_csv

    from ichviewer.qt.review_widgets import OWN_CALL_TEXT, ReviewDashboard
    from ichviewer.review import import_infer_json, import_labels_csv

    uid = series_uid(0)
    entry = infer_entry(uid, 0.65)
    entry["case"]["ANY"].update(decision="negative", threshold=0.684)
    (tmp_path / "infer.json").write_text(json.dumps({"schema": "ichviewer.infer/1", "studies": [entry], "failed": []}))
    import_infer_json(store, tmp_path / "infer.json")
    import_labels_csv(store, write_labels_csv(tmp_path / "labels.csv", {uid: 0}))
    d = ReviewDashboard(store)
    _show(qtbot, d)
    assert d.threshold.text() == OWN_CALL_TEXT and d.model_threshold() is None
    assert d.rows()[-1][2]["accuracy"] == 1.0  # its own call: negative, right
    d.threshold.setValue(50)
    assert d.model_threshold() == 0.5 and d.rows()[-1][2]["accuracy"] == 0.0  # read at 0.5: positive, wrong
