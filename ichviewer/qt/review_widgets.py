"""Review widgets: adjudication panel, difficult-case worklist, reader identity, panel voting, dashboard."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QCompleter,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QStyledItemDelegate,
    QTableWidget,
    QTableWidgetItem,
    QTabBar,
    QVBoxLayout,
    QWidget,
)

from ichviewer import LABELS
from ichviewer.core.decisions import probability_and_threshold_text
from ichviewer.qt.findings_panel import CALL_COLOURS
from ichviewer.review import (
    AI_ACTIONS,
    QUEUE_KINDS,
    READ_STATUSES,
    ROLES,
    QueueItem,
    QueueThresholds,
    Read,
    Reader,
    ReviewError,
    ReviewStore,
    build_queues,
)

_NOT_SET = "—"
_ERROR_CSS = "QLabel { color: #ff6b6b; font-weight: bold; }"
_OK_CSS = "QLabel { color: #9ccc9c; }"
QUEUE_TITLES = {"ai": "Difficult for AI", "human": "Difficult for humans", "discordant": "AI vs me"}
#: What fills each queue, said when it is empty (an empty table alone does not say whether anything is wrong).
QUEUE_EMPTY_HINTS = {
    "ai": "A case joins this queue when it has a reference label (ichviewer review import-labels, or a panel's "
          "consensus) and the AI's newest run on it is wrong or unsure at its operating point (Kang et al.).",
    "human": "A case joins this queue when saved reads of it disagree with each other or with its reference label.",
    "discordant": "A case joins this queue when your saved read differs from the AI's call on it.",
}


class AdjudicationPanel(QWidget):
    """The reader's verdict on the open series: per label present/absent/uncertain, confidence
    (1-5), accept/reject/supplement of each AI finding (IHE AI Results), and a note.

    Ctrl+Enter (or the Save button) writes the read to the review database;
    `sig_read_saved(read_id)` is emitted only after the store has committed it.
    If saving fails the error is shown and every entered value stays.
    """

    sig_read_saved = Signal(int)
    sig_save_failed = Signal(str)
    sig_form_changed = Signal()  # any entry edited (the workstation keeps drafts on disk as they are typed)

    def __init__(self, store: ReviewStore | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._reader: Reader | None = None
        self._series_uid: str | None = None
        self._study_uid: str | None = None
        self._model_run_id: int | None = None
        self._started = time.monotonic()
        self._last_saved: tuple[Any, int] | None = None
        #: (reader name, series UID) -> form values entered and not saved, kept when the reader moves to
        #: another series and put back when they return (`drafts()`; the workstation keeps them on disk)
        self._drafts: dict[tuple[str, str], dict[str, Any]] = {}

        self.case_label = QLabel("No study open.")
        self.case_label.setWordWrap(True)
        self.reader_label = QLabel("Reader: not chosen")
        grid = QGridLayout()
        for col, title in enumerate(("", "Finding", "Confidence", "AI", "AI finding")):
            grid.addWidget(QLabel(f"<b>{title}</b>"), 0, col)
        self.status_boxes: dict[str, QComboBox] = {}
        self.confidence_boxes: dict[str, QSpinBox] = {}
        self.ai_boxes: dict[str, QComboBox] = {}
        self.ai_labels: dict[str, QLabel] = {}
        for row, label in enumerate(LABELS, start=1):
            name = QLabel(f"<b>{label}</b>" if label == "ANY" else label)
            status = QComboBox()
            status.addItems([_NOT_SET, *READ_STATUSES])
            status.setAccessibleName(f"{label} finding")
            confidence = QSpinBox()
            confidence.setRange(0, 5)
            confidence.setSpecialValueText(_NOT_SET)  # 0 = not given
            confidence.setToolTip("Confidence, 1 (guess) to 5 (certain)")
            confidence.setAccessibleName(f"{label} confidence")
            ai = QComboBox()
            ai.addItems([_NOT_SET, *AI_ACTIONS])
            ai.setToolTip("The AI finding for this label: accept, reject, or supplement (modify/add to) it")
            ai.setAccessibleName(f"{label} AI finding")
            ai_text = QLabel("")
            grid.addWidget(name, row, 0)
            grid.addWidget(status, row, 1)
            grid.addWidget(confidence, row, 2)
            grid.addWidget(ai, row, 3)
            grid.addWidget(ai_text, row, 4)
            self.status_boxes[label] = status
            self.confidence_boxes[label] = confidence
            self.ai_boxes[label] = ai
            self.ai_labels[label] = ai_text
        self.note_edit = QPlainTextEdit()
        self.note_edit.setPlaceholderText("Note (optional)")
        self.note_edit.setMaximumHeight(80)
        self.save_button = QPushButton("Save read (Ctrl+Enter)")
        self.save_button.clicked.connect(self.submit)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        # Teaching feedback on the read saved last (kept while the next case is read; see ReviewUI)
        self.last_read_feedback = QLabel("")
        self.last_read_feedback.setWordWrap(True)
        self.last_read_feedback.setVisible(False)
        for label in LABELS:
            self.status_boxes[label].currentIndexChanged.connect(lambda _i: self.sig_form_changed.emit())
            self.confidence_boxes[label].valueChanged.connect(lambda _v: self.sig_form_changed.emit())
            self.ai_boxes[label].currentIndexChanged.connect(lambda _i: self.sig_form_changed.emit())
        self.note_edit.textChanged.connect(self.sig_form_changed)

        layout = QVBoxLayout(self)
        layout.addWidget(self.case_label)
        layout.addWidget(self.reader_label)
        layout.addWidget(self.last_read_feedback)  # at the top: the panel scrolls in a short dock
        layout.addLayout(grid)
        layout.addWidget(self.note_edit)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addStretch(1)

        # Both Return and the keypad's Enter, wherever the focus is inside the panel.
        self._shortcuts = []
        for seq in ("Ctrl+Return", "Ctrl+Enter"):
            sc = QShortcut(QKeySequence(seq), self)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(self.submit)
            self._shortcuts.append(sc)
        self._update_enabled()

    # -- inputs from the window ------------------------------------------------------------

    def set_store(self, store: ReviewStore | None) -> None:
        self._store = store
        self._update_enabled()

    def set_reader(self, reader: Reader | None) -> None:
        """Who is reading. An entry made under another reader is kept as that reader's draft, and the
        new reader's own draft of the open series (if any) is shown instead."""
        changed = (reader.name if reader else None) != (self._reader.name if self._reader else None)
        if changed and self._series_uid and self._reader is not None:
            self._stash_draft()
            self.clear_form()
            self._last_saved = None
        self._reader = reader
        self.reader_label.setText(f"Reader: {reader.name} ({reader.role})" if reader else "Reader: not chosen")
        if changed:
            self._restore_draft()
        self._update_enabled()

    def set_case(
        self,
        series_uid: str | None,
        *,
        study_uid: str | None = None,
        ai_findings: Mapping[str, float] | None = None,
        model_run_id: int | None = None,
        description: str = "",
    ) -> None:
        """Show the form for a new series; `ai_findings` ({LABEL: probability}) enables the AI column.

        What was entered on the previous series and not saved is kept as a draft, and a draft this
        reader left on the new series is put back (nothing the reader entered is lost).
        """
        self._stash_draft()
        self._series_uid = series_uid
        self._study_uid = study_uid
        self._model_run_id = model_run_id
        self._started = time.monotonic()
        self._last_saved = None
        self.clear_form()
        findings = dict(ai_findings or {})
        for label in LABELS:
            p = findings.get(label)
            self.ai_boxes[label].setEnabled(p is not None)
            self.ai_labels[label].setText("" if p is None else f"p = {p:.2f}")
            self.ai_labels[label].setStyleSheet("")  # no call known yet (set_ai_findings colours it)
            self.ai_labels[label].setToolTip("")
        self.case_label.setText(description or (f"Series {series_uid}" if series_uid else "No study open."))
        self._set_message("", ok=True)
        self._restore_draft()
        self._update_enabled()

    def set_ai_findings(
        self, ai_findings: Mapping[str, float] | None, model_run_id: int | None = None,
        calls: Mapping[str, str] | None = None, thresholds: Mapping[str, float] | None = None,
    ) -> None:
        """Fill in the AI column when the model's results arrive after the case was opened.

        `calls` ({LABEL: "positive" / "possible" / "negative"}, the findings' tiers of
        `ichviewer.core.decisions`) colour each probability as the findings panel colours the
        decision and name it in the tooltip, so the reader judging the AI sees what it called, not
        only how sure it was, without widening the form. With `thresholds` a probability is shown
        with the decimals that keep it on its side of its threshold (`probability_decimals`).
        """
        self._model_run_id = model_run_id
        findings = dict(ai_findings or {})
        said = dict(calls or {})
        for label in LABELS:
            p = findings.get(label)
            self.ai_boxes[label].setEnabled(p is not None)
            if p is None:
                self.ai_boxes[label].setCurrentIndex(0)
            text = self.ai_labels[label]
            limit = (thresholds or {}).get(label)
            shown, limit_text = probability_and_threshold_text(p, limit) if p is not None else ("", "")
            text.setText("" if p is None else f"p = {shown}")
            call = said.get(label) if p is not None else None
            text.setStyleSheet(f"color: {CALL_COLOURS[call]};" if call in CALL_COLOURS else "")
            text.setToolTip((f"The AI called {label} {call}" + (f" (threshold {limit_text})" if limit_text else "")) if call else "")

    def show_last_read_feedback(self, text: str, agrees: bool | None) -> None:
        """The reference, against the read just saved (teaching); stays while the next case is read."""
        self.last_read_feedback.setText(text)
        self.last_read_feedback.setStyleSheet("" if agrees is None else ("color: #6fd36f;" if agrees else "color: #ff8a65;"))
        self.last_read_feedback.setVisible(bool(text))

    def set_ai_hidden(self, hidden: bool) -> None:
        """Blinded panel reading: hide the AI column (probabilities and the accept/reject choice)."""
        self._ai_hidden = bool(hidden)
        for label in LABELS:
            self.ai_boxes[label].setVisible(not hidden)
            self.ai_labels[label].setVisible(not hidden)

    def clear_form(self) -> None:
        for label in LABELS:
            self.status_boxes[label].setCurrentIndex(0)
            self.confidence_boxes[label].setValue(0)
            self.ai_boxes[label].setCurrentIndex(0)
        self.note_edit.setPlainText("")

    # -- drafts: entered, not saved -------------------------------------------------------------

    def form_values(self) -> dict[str, Any]:
        """The form as plain data (labels left unset are absent), the same shape a draft is kept in."""
        values: dict[str, Any] = {"statuses": {}, "confidence": {}, "ai": {}, "note": self.note_edit.toPlainText()}
        for label in LABELS:
            if self.status_boxes[label].currentText() != _NOT_SET:
                values["statuses"][label] = self.status_boxes[label].currentText()
            if self.confidence_boxes[label].value():
                values["confidence"][label] = self.confidence_boxes[label].value()
            if self.ai_boxes[label].currentText() != _NOT_SET:
                values["ai"][label] = self.ai_boxes[label].currentText()
        return values

    def _apply_values(self, values: Mapping[str, Any]) -> None:
        self.clear_form()
        for label, status in dict(values.get("statuses", {})).items():
            if label in self.status_boxes:
                self.set_status(label, status)
        for label, value in dict(values.get("confidence", {})).items():
            if label in self.confidence_boxes:
                self.confidence_boxes[label].setValue(int(value))
        for label, action in dict(values.get("ai", {})).items():
            if label in self.ai_boxes:
                self.ai_boxes[label].setCurrentIndex(max(0, self.ai_boxes[label].findText(str(action))))
        self.note_edit.setPlainText(str(values.get("note", "")))

    def _draft_key(self) -> tuple[str, str]:
        return (self._reader.name if self._reader else "", self._series_uid or "")

    def has_unsaved_entry(self) -> bool:
        """Something is entered on the open series that is not what was last saved."""
        values = self.form_values()
        if not (values["statuses"] or values["confidence"] or values["ai"] or values["note"].strip()):
            return False
        return self._last_saved is None or self._last_saved[0] != self._saved_key(values)

    def _saved_key(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return (self._reader.name if self._reader else None, self._series_uid, dict(values["statuses"]),
                dict(values["confidence"]), dict(values["ai"]), str(values["note"]).strip())

    def _stash_draft(self) -> None:
        if not self._series_uid:
            return
        if self.has_unsaved_entry():
            self._drafts[self._draft_key()] = self.form_values()
        else:
            self._drafts.pop(self._draft_key(), None)

    def drafts(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every unsaved entry, the open series' included: (reader, series UID) -> form values."""
        self._stash_draft()
        return dict(self._drafts)

    def set_drafts(self, drafts: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        """Drafts kept from an earlier session (the open series' one is put in the form)."""
        self._drafts = {tuple(k): dict(v) for k, v in drafts.items()}
        if not self.has_unsaved_entry():
            self._restore_draft()

    def _restore_draft(self) -> None:
        """Put this reader's draft of the open series in the form, saying it is not saved yet."""
        draft = self._drafts.get(self._draft_key()) if self._series_uid else None
        if draft is not None:
            self._apply_values(draft)
            self._set_message("Your unsaved read of this series is back (not saved yet: Ctrl+Enter saves it).", ok=False)

    # -- what the reader entered -----------------------------------------------------------

    def set_status(self, label: str, status: str | None) -> None:
        box = self.status_boxes[label]
        box.setCurrentIndex(0 if status is None else box.findText(status))

    def entered_read(self) -> Read:
        """The form as a Read (raises ReviewError if it is not a valid read)."""
        if not self._series_uid:
            raise ReviewError("no study is open")
        statuses, confidence, ai = {}, {}, {}
        for label in LABELS:
            s = self.status_boxes[label].currentText()
            if s != _NOT_SET:
                statuses[label] = s
            c = self.confidence_boxes[label].value()
            if c:
                confidence[label] = c
            a = self.ai_boxes[label].currentText()
            if a != _NOT_SET and self.ai_boxes[label].isEnabled():
                ai[label] = a
        return Read(self._series_uid, statuses, confidence, ai, note=self.note_edit.toPlainText().strip(),
                    seconds_spent=round(time.monotonic() - self._started, 3), study_uid=self._study_uid,
                    model_run_id=self._model_run_id)

    # -- saving ----------------------------------------------------------------------------

    def submit(self) -> int | None:
        """Save the read; return its id, or None (with the error shown) if it could not be saved."""
        if self._store is None:
            return self._fail("No review database is open.")
        if self._reader is None:
            return self._fail("Choose who is reading (name and role) before saving.")
        try:
            read = self.entered_read()
            key = self._saved_key(self.form_values())
            if self._last_saved is not None and self._last_saved[0] == key:
                # A second Ctrl+Enter on an unchanged form must not log a duplicate read.
                self._set_message(f"Already saved as read #{self._last_saved[1]}.", ok=True)
                return self._last_saved[1]
            read_id = self._store.log_read(self._reader, read)  # committed to disk when this returns
        except ReviewError as exc:
            return self._fail(f"Not saved: {exc}")
        except Exception as exc:  # disk full, database locked too long, file removed...
            return self._fail(f"Not saved: the review database could not be written ({exc}).")
        self._last_saved = (key, read_id)
        self._drafts.pop(self._draft_key(), None)
        self._set_message(f"Saved read #{read_id} at {time.strftime('%H:%M:%S')}.", ok=True)
        self.sig_read_saved.emit(read_id)
        return read_id

    def _fail(self, message: str) -> None:
        self._set_message(message, ok=False)
        self.sig_save_failed.emit(message)
        return None

    def _set_message(self, text: str, *, ok: bool) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(_OK_CSS if ok else _ERROR_CSS)

    def message_text(self) -> str:
        return self.message.text()

    def _update_enabled(self) -> None:
        self.save_button.setEnabled(bool(self._series_uid))


class MiddleElideDelegate(QStyledItemDelegate):
    """Elides its column's text in the middle ("wl/0007_no\u2026m-hardening"): a case's folder name is told
    apart by its start and its end; the table's other columns elide at the right as usual."""

    def initStyleOption(self, option: Any, index: Any) -> None:  # noqa: N802 (Qt's name)
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideMiddle


def case_name(item: Any) -> str:
    """What a reader recognises a worklist case by: the last two parts of its folder ("PATIENT7/SE0002":
    export folders are often named alike), else the series UID's last digits; the full path and
    UID are in the cell's tooltip. `item` is a QueueItem or a panel case row (a mapping)."""
    def field(name: str) -> Any:
        return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)

    path = str(field("path") or "").replace("\\", "/").rstrip("/")
    if path:
        return "/".join(path.split("/")[-2:]).lstrip("/")
    uid = str(field("series_uid"))
    return uid if len(uid) <= 16 else "\u2026" + uid[-12:]


class WorklistPanel(QWidget):
    """The difficult-case queues as tabs with counts, filters (label, reference, text) and a table.

    Activating a row (double-click or Enter) emits `sig_open_study(series_uid, path)`;
    `open_next()` opens the case after the current one.
    """

    sig_open_study = Signal(str, str)

    COLUMNS = ("Series", "Reference", "P(model)", "Reason")

    def __init__(self, store: ReviewStore | None = None, parent: QWidget | None = None,
                 thresholds: QueueThresholds = QueueThresholds()) -> None:
        super().__init__(parent)
        self._store = store
        self._reader: str | None = None
        self._thresholds = thresholds
        self._items: dict[str, list[QueueItem]] = {k: [] for k in QUEUE_KINDS}
        self._shown: list[QueueItem] = []
        self._current: str | None = None
        self._blinded = False  # a blinded panel member is reading (set_ai_hidden)

        self.tabs = QTabBar()
        for kind in QUEUE_KINDS:
            self.tabs.addTab(QUEUE_TITLES[kind])
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.label_filter = QComboBox()
        self.label_filter.addItems(list(LABELS[::-1]))  # ANY first
        self.label_filter.setToolTip("Label the queues are computed on")
        self.label_filter.currentTextChanged.connect(lambda _t: self.refresh())
        self.reference_filter = QComboBox()
        self.reference_filter.addItems(["All", "Labelled positive", "Labelled negative", "Unlabelled"])
        self.reference_filter.currentIndexChanged.connect(lambda _i: self._fill_table())
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by folder, UID or reason")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self._fill_table())
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        # One line per case ("wl/0007_none_5mm_beam-hardening" wrapped at the slash and lost its end).
        # The name column is as wide as its longest name while that leaves the reference, P(model) and
        # some of the reason in view (`_fit_series_column`; in a narrow dock the longest name pushed them
        # out of sight); a longer name is elided in the middle. The reason takes what is left; name and
        # reason are whole in the tooltips.
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        for col in (1, 2):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.setWordWrap(False)
        self._name_delegate = MiddleElideDelegate(self.table)
        self.table.setItemDelegateForColumn(0, self._name_delegate)
        self.table.cellActivated.connect(self._on_row_activated)
        self.table.cellDoubleClicked.connect(self._on_row_activated)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        filters = QHBoxLayout()
        filters.addWidget(QLabel("Label"))
        filters.addWidget(self.label_filter)
        filters.addWidget(self.reference_filter)
        filters.addWidget(self.search, 1)
        filters.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        self.refresh()

    def set_store(self, store: ReviewStore | None) -> None:
        self._store = store
        self.refresh()

    def set_reader(self, reader: Reader | str | None) -> None:
        self._reader = reader.name if isinstance(reader, Reader) else reader
        self.refresh()

    def current_kind(self) -> str:
        return QUEUE_KINDS[max(self.tabs.currentIndex(), 0)]

    def set_ai_hidden(self, hidden: bool) -> None:
        """Blinded panel reading: hide what the panel withholds until the member's vote is in (`member_view`):
        the model's probability, the reasons (which quote it and the label) and the reference label.
        The reference filter is reset and disabled, and the text filter matches folders and UIDs only,
        so neither can be used to sort cases by what is hidden."""
        self._blinded = bool(hidden)
        for col in (self.COLUMNS.index("Reference"), self.COLUMNS.index("P(model)"), self.COLUMNS.index("Reason")):
            self.table.setColumnHidden(col, self._blinded)
        if self._blinded:
            self.reference_filter.setCurrentIndex(0)
        self.reference_filter.setEnabled(not self._blinded)
        self.search.setPlaceholderText("Filter by folder or UID" if self._blinded else "Filter by folder, UID or reason")
        self._fill_table()

    def queue_size(self, kind: str | None = None) -> int:
        """Cases in a queue (default: the one shown) as last refreshed, before the table's filters."""
        return len(self._items.get(kind or self.current_kind(), []))

    def set_kind(self, kind: str) -> None:
        self.tabs.setCurrentIndex(QUEUE_KINDS.index(kind))

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self._items.items()}

    def shown_items(self) -> list[QueueItem]:
        return list(self._shown)

    def refresh(self) -> None:
        """Recompute every queue from the database (after a read is saved, a panel closes...)."""
        label = self.label_filter.currentText() or "ANY"
        self._items = {k: [] for k in QUEUE_KINDS}
        message = ""
        if self._store is None:
            message = "No review database open."
        else:
            try:
                self._items = build_queues(self._store, reader=self._reader, label=label,
                                           thresholds=self._thresholds)
            except ReviewError as exc:
                message = str(exc)
        for i, kind in enumerate(QUEUE_KINDS):
            self.tabs.setTabText(i, f"{QUEUE_TITLES[kind]} ({len(self._items[kind])})")
        self._fill_table()
        if message:
            self.status.setText(message)

    def _on_tab_changed(self, _index: int) -> None:
        self._fill_table()

    def _passes(self, item: QueueItem) -> bool:
        ref = self.reference_filter.currentIndex()
        if ref == 1 and item.label_value != 1:
            return False
        if ref == 2 and item.label_value != 0:
            return False
        if ref == 3 and item.label_value is not None:
            return False
        text = self.search.text().strip().lower()
        fields = (item.series_uid, item.path or "") + (() if self._blinded else (item.reason,))
        return not text or any(text in field.lower() for field in fields)

    def _fill_table(self) -> None:
        kind = self.current_kind()
        self._shown = [it for it in self._items.get(kind, []) if self._passes(it)]
        self.table.setRowCount(len(self._shown))
        for row, it in enumerate(self._shown):
            ref = "" if it.label_value is None else ("positive" if it.label_value else "negative")
            p = "" if it.probability is None else f"{it.probability:.3f}"
            for col, text in enumerate((case_name(it), ref, p, it.reason)):
                cell = QTableWidgetItem(text)
                where = f"{text}\n{it.path or '(no folder recorded)'}\n{it.series_uid}"
                cell.setToolTip(text if col else where + ("" if self._blinded else f"\n{it.reason}"))
                self.table.setItem(row, col, cell)
        self._fit_series_column()
        total = len(self._items.get(kind, []))
        extra = "" if kind != "discordant" or self._reader else " (choose a reader to see your discordant cases)"
        if not total and not extra:
            self.status.setText(f"No cases. {QUEUE_EMPTY_HINTS[kind]}")
        else:
            self.status.setText(f"{len(self._shown)} of {total} case(s) shown{extra}")

    #: Width the reason keeps beside a long case name, at least (px), and the narrowest a name gets.
    REASON_MIN_WIDTH = 40
    NAME_MIN_WIDTH = 150

    def _fit_series_column(self) -> None:
        """The case names whole when the dock is wide enough; otherwise as wide as leaves the reference,
        P(model) and some of the reason in view (names elided in the middle)."""
        self.table.resizeColumnToContents(0)
        wanted = self.table.columnWidth(0)
        others = sum(self.table.columnWidth(c) for c in (1, 2) if not self.table.isColumnHidden(c))
        reason = 0 if self.table.isColumnHidden(3) else self.REASON_MIN_WIDTH
        room = self.table.viewport().width() - others - reason
        self.table.setColumnWidth(0, max(min(wanted, room), self.NAME_MIN_WIDTH))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._fit_series_column()

    def _on_row_activated(self, row: int, _column: int = 0) -> None:
        if 0 <= row < len(self._shown):
            item = self._shown[row]
            self._current = item.series_uid
            self.sig_open_study.emit(item.series_uid, item.path or "")

    def current_series(self) -> str | None:
        """The series last opened from this list (None: none yet)."""
        return self._current

    def open_next(self) -> bool:
        """Open the case after the current one in the shown list; False at the end."""
        uids = [it.series_uid for it in self._shown]
        start = uids.index(self._current) + 1 if self._current in uids else 0
        # A saved read may have taken the current case off the queue: start from the top then.
        if start >= len(uids):
            return False
        self.table.selectRow(start)
        self._on_row_activated(start)
        return True


class ReaderIdentityDialog(QDialog):
    """Who is reading: a name (existing readers are offered) and a role. No passwords yet."""

    def __init__(self, store: ReviewStore | None = None, parent: QWidget | None = None,
                 name: str = "", role: str = "resident") -> None:
        super().__init__(parent)
        self.setWindowTitle("Who is reading?")
        self._store = store
        self.selected_reader: Reader | None = None
        self.name_edit = QLineEdit(name)
        self.name_edit.setPlaceholderText("e.g. Dr Kim")
        self.role_box = QComboBox()
        self.role_box.addItems(list(ROLES))
        self.role_box.setCurrentText(role)
        self._known: dict[str, str] = {}
        if store is not None:
            self._known = {r.name: r.role for r in store.readers()}
            completer = QCompleter(sorted(self._known))
            completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
            self.name_edit.setCompleter(completer)
        self.name_edit.textChanged.connect(self._on_name_changed)
        self.error = QLabel("")
        self.error.setStyleSheet(_ERROR_CSS)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        where = f" in {store.path}" if store is not None and getattr(store, "path", None) else ""
        # The first thing a new user sees (before the main window): say what the name is for.
        self.explanation = QLabel(
            f"Your reads and measurements are saved under this name{where}. "
            "Cancel to look at images without saving (you can choose later: Review > Change reader).")
        self.explanation.setWordWrap(True)
        self.setMinimumWidth(460)
        form = QFormLayout(self)
        form.addRow(self.explanation)
        form.addRow("Name", self.name_edit)
        form.addRow("Role", self.role_box)
        form.addRow(self.error)
        form.addRow(self.buttons)
        self._on_name_changed(self.name_edit.text())

    def _on_name_changed(self, text: str) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(bool(text.strip()))
        if text.strip() in self._known:
            self.role_box.setCurrentText(self._known[text.strip()])

    def identity(self) -> tuple[str, str]:
        return self.name_edit.text().strip(), self.role_box.currentText()

    def accept(self) -> None:
        name, role = self.identity()
        if not name:
            self.error.setText("Enter your name.")
            return
        if self._store is not None:
            try:
                self.selected_reader = self._store.add_reader(name, role)
            except Exception as exc:
                self.error.setText(f"Could not record the reader: {exc}")
                return
        else:
            self.selected_reader = Reader(0, name, role)
        super().accept()


def choose_reader(store: ReviewStore | None, parent: QWidget | None = None, **kwargs: Any) -> Reader | None:
    """Ask who is reading (modal); the Reader recorded in the store, or None if cancelled."""
    dialog = ReaderIdentityDialog(store, parent, **kwargs)
    return dialog.selected_reader if dialog.exec() == QDialog.DialogCode.Accepted else None


#: The statistics dashboard's model-threshold box at its lowest value: each run's own call.
OWN_CALL_TEXT = "own call"


#: Dashboard rows: under each reader the model scored on that reader's cases; last, on all its cases.
MODEL_SAME_CASES = "Model on {reader}'s cases"
MODEL_ALL_CASES = "Model (all cases)"
MODEL_PANEL_CASES = "Model (this panel's cases)"


class ReviewDashboard(QWidget):
    """Accuracy of each reader and the model before and after amendment, and agreement (kappas).

    Scope "All reads" uses every reader's newest reads; a panel scope uses the
    members' votes on that panel's cases (Kang et al., Results). Bars: accuracy
    before (grey) and after (blue) amendment per rater. Under each reader a row (and bars) give the
    model on that reader's cases, the comparison a reader can make; the last row is the model on
    every labelled case it ran on.
    """

    METRICS = ("n", "sensitivity", "specificity", "accuracy")

    def __init__(self, store: ReviewStore | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self._store = store
        self._stats: dict[str, Any] | None = None
        self.scope = QComboBox()
        self.scope.currentIndexChanged.connect(lambda _i: self._show())
        self.threshold = QSpinBox()
        self.threshold.setRange(0, 99)
        self.threshold.setSuffix(" %")
        # 0 (the default) shows as "own call": each run's call at its ensemble's operating point
        self.threshold.setSpecialValueText(OWN_CALL_TEXT)
        self.threshold.setValue(0)
        self.threshold.setToolTip(
            "How the model's answers are counted: 'own call' (default) takes each model run's call at its "
            "ensemble's operating point, as its reader saw it; a percentage reads the model as positive at that "
            "probability instead")
        self.threshold.valueChanged.connect(lambda _v: self.refresh())
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, 1 + 2 * len(self.METRICS))
        # two-line headers, each column as wide as its header: "sensitivity (before)" was cut to
        # "ensitivity (befor" in a 1000-pixel dashboard
        headers = ["Rater"] + [f"{m}\n({w})" for w in ("before", "after") for m in self.METRICS]
        self.table.setHorizontalHeaderLabels(headers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.plot = pg.PlotWidget(background="#141414")
        self.plot.setLabel("left", "accuracy")
        self.plot.setYRange(0, 1)
        self.plot.setMinimumHeight(160)
        top = QHBoxLayout()
        top.addWidget(QLabel("Scope"))
        top.addWidget(self.scope, 1)
        top.addWidget(QLabel("Model threshold"))
        top.addWidget(self.threshold)
        top.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.table, 1)
        self.refresh()

    def set_store(self, store: ReviewStore | None) -> None:
        self._store = store
        self.refresh()

    def statistics(self) -> dict[str, Any] | None:
        return self._stats

    def model_threshold(self) -> float | None:
        """None: each run's own call (the default); else the chosen probability."""
        value = self.threshold.value()
        return None if value == self.threshold.minimum() else value / 100

    def refresh(self) -> None:
        from ichviewer.review import compute_statistics

        self._stats = None
        if self._store is not None:
            try:
                self._stats = compute_statistics(self._store, threshold=self.model_threshold())
            except ReviewError as exc:
                self.summary.setText(str(exc))
        previous = self.scope.currentIndex()
        self.scope.blockSignals(True)
        self.scope.clear()
        self.scope.addItem("All reads")
        for p in (self._stats or {}).get("panels", []):
            self.scope.addItem(f"Panel {p['panel_id']}: {p['name']} ({p['status']})")
        self.scope.setCurrentIndex(previous if 0 <= previous < self.scope.count() else 0)
        self.scope.blockSignals(False)
        self._show()

    def rows(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(rater, metrics before, metrics after) for the chosen scope, the model last."""
        st = self._stats
        if not st:
            return []
        i = self.scope.currentIndex()
        if i <= 0:
            before = {r["reader"]: r for r in st["readers"]["before"]}
            after = {r["reader"]: r for r in st["readers"]["after"]}
            model = st["model"]
        else:
            p = st["panels"][i - 1]
            if "members_metrics" not in p:
                return []
            before = {r["reader"]: r for r in p["members_metrics"]["before"]}
            after = {r["reader"]: r for r in p["members_metrics"]["after"]}
            model = p["model"]
        out = []
        for name in sorted(set(before) | set(after)):
            b, a = before.get(name, {}), after.get(name, {})
            out.append((name, b, a))
            if b.get("model_same_cases") or a.get("model_same_cases"):
                # the fair comparison: the model on the cases this reader read, not on the model's whole set
                out.append((MODEL_SAME_CASES.format(reader=name), b.get("model_same_cases", {}), a.get("model_same_cases", {})))
        out.append((MODEL_ALL_CASES if i <= 0 else MODEL_PANEL_CASES, model["before"], model["after"]))
        return out

    def _show(self) -> None:
        import pyqtgraph as pg

        rows = self.rows()
        self.table.setRowCount(len(rows))
        for r, (name, before, after) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(name))
            for w, metrics in enumerate((before, after)):
                for m, key in enumerate(self.METRICS):
                    v = metrics.get(key)
                    text = "–" if v is None else (str(v) if key == "n" else f"{v:.3f}")
                    self.table.setItem(r, 1 + w * len(self.METRICS) + m, QTableWidgetItem(text))
        self.plot.clear()
        if rows:
            x = np.arange(len(rows), dtype=float)
            acc_b = [row[1].get("accuracy") or 0.0 for row in rows]
            acc_a = [row[2].get("accuracy") or 0.0 for row in rows]
            self.plot.addItem(pg.BarGraphItem(x=x - 0.2, height=acc_b, width=0.38, brush="#8a8a8a"))
            self.plot.addItem(pg.BarGraphItem(x=x + 0.2, height=acc_a, width=0.38, brush="#4f8fd6"))
            self.plot.getAxis("bottom").setTicks([[(float(i), row[0]) for i, row in enumerate(rows)]])
        st = self._stats
        if not st:
            if self._store is None:
                self.summary.setText("No review database open.")
            return
        i = self.scope.currentIndex()
        if i <= 0:
            text = (f"{st['n_labelled']} labelled series, {st['n_amended']} amended. "
                    f"Grey: before amendment, blue: after.")
            if not st["n_labelled"]:
                # An empty chart says nothing of where the figures would come from.
                text = ("No series has a reference label yet, so there is nothing to score. Reference labels come "
                        "from `ichviewer review import-labels LABELS.csv` (a phantom set writes its labels.csv) or "
                        "from a panel's consensus (Review › Close a panel and apply consensus).")
        else:
            p = st["panels"][i - 1]
            fk = p.get("fleiss_kappa")
            text = (f"{p['n_cases']} case(s), {p.get('n_complete', 0)} voted by every member, "
                    f"{p.get('n_amended', 0)} amended. Fleiss' kappa: {'–' if fk is None else f'{fk:.3f}'}.")
        self.summary.setText(text)


class PanelVotePanel(QWidget):
    """A panel member's work: the panel's cases, a present/absent vote per panel label, a note.

    Blinded panels show the model's output and the other votes only after the
    member's own vote is in. Ctrl+Enter submits; `sig_vote_saved(series_uid)` after
    the commit; `sig_open_study(series_uid, path)` when a case is chosen in the list. The vote is
    always on the series the workstation shows: it calls `open_case` when a panel case is on
    screen and `clear_case` when another series is.
    """

    sig_vote_saved = Signal(str)
    sig_open_study = Signal(str, str)
    sig_form_changed = Signal()  # a vote or the note edited

    def __init__(self, store: ReviewStore, panel_id: int, reader: Reader | str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from ichviewer.review import get_panel

        self._store = store
        self._panel = get_panel(store, panel_id)
        self._reader = reader.name if isinstance(reader, Reader) else reader
        self._series: str | None = None
        #: series UID -> votes and note chosen and not cast, kept while the member looks at other cases
        self._drafts: dict[str, dict[str, Any]] = {}
        self.title = QLabel(f"<b>Panel {self._panel.id}: {self._panel.name}</b>"
                            f"{' (blinded)' if self._panel.blinded else ''}")
        self.cases = QTableWidget(0, 2)
        self.cases.setHorizontalHeaderLabels(["Series", "My vote"])
        self.cases.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.cases.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.cases.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.cases.verticalHeader().setVisible(False)
        self.cases.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.cases.setWordWrap(False)
        self.cases.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.cases.cellActivated.connect(self._on_case_activated)
        self.cases.cellDoubleClicked.connect(self._on_case_activated)
        self.vote_boxes: dict[str, QComboBox] = {}
        form = QFormLayout()
        for label in self._panel.labels:
            box = QComboBox()
            box.addItems([_NOT_SET, "present", "absent"])
            box.setAccessibleName(f"{label} vote")
            self.vote_boxes[label] = box
            form.addRow(label, box)
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("Note (optional)")
        form.addRow("Note", self.note_edit)
        for box in self.vote_boxes.values():
            box.currentIndexChanged.connect(lambda _i: self.sig_form_changed.emit())
        self.note_edit.textChanged.connect(lambda _t: self.sig_form_changed.emit())
        self.revealed = QLabel("")
        self.revealed.setWordWrap(True)
        self.save_button = QPushButton("Cast vote (Ctrl+Enter)")
        self.save_button.clicked.connect(self.submit)
        # After a vote the member stays on the case (a blinded panel now shows what it withheld);
        # this moves on when they are ready.
        self.next_button = QPushButton("Next case not voted")
        self.next_button.clicked.connect(self.open_next_unvoted)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.cases, 1)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button, 1)
        buttons.addWidget(self.next_button)
        layout.addLayout(buttons)
        layout.addWidget(self.revealed)
        layout.addWidget(self.message)
        for seq in ("Ctrl+Return", "Ctrl+Enter"):
            sc = QShortcut(QKeySequence(seq), self)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(self.submit)
        self.refresh()

    def refresh(self) -> None:
        from ichviewer.review import panel_cases

        rows = panel_cases(self._store, self._panel.id, reader=self._reader)
        self._rows = rows
        self.cases.setRowCount(len(rows))
        for r, row in enumerate(rows):
            name = QTableWidgetItem(case_name(row))
            name.setToolTip(f"{row.get('path') or '(no folder recorded)'}\n{row['series_uid']}")
            self.cases.setItem(r, 0, name)
            self.cases.setItem(r, 1, QTableWidgetItem("voted" if row.get("voted") else ""))
        if self._series:
            self._show_case(self._series)

    def current_series(self) -> str | None:
        return self._series

    @property
    def panel_id(self) -> int:
        return self._panel.id

    def case_uids(self) -> set[str]:
        return {row["series_uid"] for row in self._rows}

    def _on_case_activated(self, row: int, _column: int = 0) -> None:
        # Only asks for the case's series: the vote follows it once it is on screen (`open_case`), so a
        # folder that fails to open or is still loading never takes a vote meant for another image.
        if 0 <= row < len(self._rows):
            self.sig_open_study.emit(self._rows[row]["series_uid"], self._rows[row].get("path") or "")

    def open_case(self, series_uid: str) -> None:
        self._show_case(series_uid)

    def open_next_unvoted(self) -> str | None:
        """Ask for the next case (after the one shown, round again) the member has not voted on; its
        series UID, or None with a message when every case has their vote."""
        uids = [row["series_uid"] for row in self._rows]
        start = uids.index(self._series) + 1 if self._series in uids else 0
        for k in range(len(self._rows)):
            row = self._rows[(start + k) % len(self._rows)]
            if not row.get("voted") and row["series_uid"] != self._series:
                self.sig_open_study.emit(row["series_uid"], row.get("path") or "")
                return row["series_uid"]
        self.message.setText("You have voted on every case of this panel." if all(r.get("voted") for r in self._rows)
                             else "No other case is left to vote on.")
        self.message.setStyleSheet("")
        return None

    def clear_case(self) -> None:
        """The series on screen is not one of the panel's cases: nothing can be voted until one is
        chosen (a vote must be on the case the member is looking at). Votes chosen wait as a draft."""
        self._stash_draft()
        self._series = None
        self.cases.clearSelection()
        for box in self.vote_boxes.values():
            box.setCurrentIndex(0)
            box.setEnabled(False)
        self.note_edit.setText("")
        self.note_edit.setEnabled(False)
        self.save_button.setEnabled(False)
        self.revealed.setText("")
        self.message.setText("The series on screen is not a case of this panel: choose one in the list to vote.")
        self.message.setStyleSheet("")

    def _show_case(self, series_uid: str) -> None:
        from ichviewer.review import member_view

        view = member_view(self._store, self._panel.id, self._reader, series_uid)
        if self._series and self._series != series_uid:
            self._stash_draft()
        self._series = series_uid
        rows = [r for r, row in enumerate(self._rows) if row["series_uid"] == series_uid]
        if rows:  # the case voted on is the one highlighted in the list
            self.cases.selectRow(rows[0])
        self.message.setText("")
        for label, box in self.vote_boxes.items():
            own = view.own_votes.get(label)
            box.setCurrentIndex(0 if own is None else box.findText(own))
            box.setEnabled(not view.voted)
        # a note belongs to its case: never carried to the next one (it was, and went out with its vote)
        draft = None if view.voted else self._drafts.get(series_uid)
        self.note_edit.setText(draft["note"] if draft else "")
        if draft:
            for label, value in draft["votes"].items():
                if label in self.vote_boxes:
                    self.vote_boxes[label].setCurrentIndex(max(0, self.vote_boxes[label].findText(value)))
            self.message.setText("Your vote on this case is back, not cast yet (Ctrl+Enter casts it).")
            self.message.setStyleSheet(_ERROR_CSS)
        self.note_edit.setEnabled(not view.voted)
        self.save_button.setEnabled(not view.voted and self._panel.status == "open")
        self.revealed.setText(self.revealed_text(view))

    @staticmethod
    def revealed_text(view: Any) -> str:
        if view.blinded:
            return "Blinded: the model's output and the other votes appear after your vote."
        parts = []
        if view.model:
            parts.append("Model: " + ", ".join(f"{k} {v:.2f}" for k, v in view.model.items() if k in view.labels))
        if view.reference:
            parts.append("Reference: " + ", ".join(f"{k} {'positive' if v else 'negative'}"
                                                   for k, v in view.reference.items()))
        if view.votes is not None:
            parts.append(f"Other votes: {len(view.votes)}" + (": " + "; ".join(
                f"{v['reader']} {v['label']} {v['value']}" for v in view.votes) if view.votes else ""))
        return "\n".join(parts)

    def message_text(self) -> str:
        return self.message.text()

    def _stash_draft(self) -> None:
        if not self._series or not any(box.isEnabled() for box in self.vote_boxes.values()):
            return  # nothing open, or already voted
        votes = {label: box.currentText() for label, box in self.vote_boxes.items() if box.currentText() != _NOT_SET}
        note = self.note_edit.text()
        if votes or note.strip():
            self._drafts[self._series] = {"votes": votes, "note": note}
        else:
            self._drafts.pop(self._series, None)

    def drafts(self) -> dict[str, dict[str, Any]]:
        """Votes chosen and not cast, by series UID (the open case's included)."""
        self._stash_draft()
        return dict(self._drafts)

    def set_drafts(self, drafts: Mapping[str, Mapping[str, Any]]) -> None:
        """Votes left uncast in an earlier session ({series UID: {"votes": {...}, "note": ...}})."""
        self._drafts = {str(uid): {"votes": dict(d.get("votes", {})), "note": str(d.get("note", ""))}
                        for uid, d in drafts.items()}
        if self._series:
            self._show_case(self._series)

    @property
    def reader_name(self) -> str:
        return self._reader

    def submit(self) -> bool:
        from ichviewer.review import cast_vote

        if not self._series:
            self.message.setText("Choose a case first.")
            self.message.setStyleSheet(_ERROR_CSS)
            return False
        values = {label: box.currentText() for label, box in self.vote_boxes.items()}
        missing = [label for label, v in values.items() if v == _NOT_SET]
        if missing:
            self.message.setText(f"Not saved: vote on {', '.join(missing)}.")
            self.message.setStyleSheet(_ERROR_CSS)
            return False
        try:
            cast_vote(self._store, self._panel.id, self._reader, self._series, values, note=self.note_edit.text())
        except Exception as exc:  # ReviewError, or the database could not be written
            self.message.setText(f"Not saved: {exc}")
            self.message.setStyleSheet(_ERROR_CSS)
            return False
        self._drafts.pop(self._series, None)
        uid = self._series
        self.refresh()
        self.message.setText("Vote saved.")
        self.message.setStyleSheet(_OK_CSS)
        self.sig_vote_saved.emit(uid)
        return True
