"""Atlas browser for residents: examples by subtype with heat maps and the source slice in context, and a self-test with a score."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ichviewer import SUBTYPES
from ichviewer.qt.atlas_widgets import AtlasExampleView, overlay_rgb, to_pixmap
from ichviewer.qt.workers import WorkerJob

log = logging.getLogger(__name__)

#: Examples listed per subtype in the browser (the strongest features first).
BROWSE_LIMIT = 200
ICON_PX = 72


class AtlasBrowsePage(QWidget):
    """Pick a subtype; its atlas examples are listed with heat maps; the selected one is shown with its source slice."""

    sig_entry_shown = Signal(int)

    def __init__(self, atlas: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.atlas = atlas
        self.subtype = QComboBox()
        for s in SUBTYPES:
            n = int(atlas.entries_for_label(s).size)
            self.subtype.addItem(f"{s} ({n} examples)", s)
        self.list = QListWidget()
        self.list.setViewMode(QListWidget.ViewMode.IconMode)
        self.list.setIconSize(QSize(ICON_PX, ICON_PX))
        self.list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.list.setMinimumWidth(4 * (ICON_PX + 12))
        self.view = AtlasExampleView()
        top = QHBoxLayout()
        top.addWidget(QLabel("Subtype:"))
        top.addWidget(self.subtype, 1)
        left = QVBoxLayout()
        left.addLayout(top)
        left.addWidget(self.list, 1)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 1)
        layout.addWidget(self.view, 1)
        self.subtype.currentIndexChanged.connect(self._on_subtype_changed)
        self.list.currentItemChanged.connect(self._on_item_changed)
        self._on_subtype_changed(self.subtype.currentIndex())

    def set_subtype(self, subtype: str) -> None:
        self.subtype.setCurrentIndex(SUBTYPES.index(subtype))

    def _on_subtype_changed(self, index: int) -> None:
        label = SUBTYPES[max(0, index)]
        self.list.clear()
        for entry_id in self.atlas.entries_for_label(label)[:BROWSE_LIMIT]:
            entry = self.atlas.entry(int(entry_id))
            item = QListWidgetItem(QIcon(to_pixmap(overlay_rgb(entry.patch, entry.heat), ICON_PX)), " + ".join(entry.labels))
            item.setData(Qt.ItemDataRole.UserRole, int(entry_id))
            item.setToolTip(f"{entry.provenance.source}, slice {entry.provenance.slice_index}")
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def _on_item_changed(self, item: QListWidgetItem | None, _previous: Any = None) -> None:
        if item is None:
            return
        entry = self.atlas.entry(int(item.data(Qt.ItemDataRole.UserRole)))
        self.view.show_entry(entry, self.atlas.context(entry.image_id))
        self.sig_entry_shown.emit(entry.entry_id)


class AtlasSelfTestPage(QWidget):
    """Self-test: an atlas example without its label; the resident names the subtype, sees feedback and the running score."""

    sig_answered = Signal(object)  # QuizAnswer

    def __init__(self, quiz_factory: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._quiz_factory = quiz_factory
        self.quiz: Any = None
        self.question: Any = None
        self._answered = False
        self.subtype = QComboBox()
        self.subtype.addItem("All subtypes", None)
        for s in SUBTYPES:
            self.subtype.addItem(s, s)
        # The self-test is a blind read: the attention heat points at the finding, so it comes with the
        # answer unless the resident asks for it as a hint.
        self.show_heat = QCheckBox("Heat map before answering (a hint)")
        self.show_heat.setChecked(False)
        self.show_heat.setToolTip("The model's attention heat map is always shown once you have answered.")
        self.view = AtlasExampleView()
        self.buttons = QButtonGroup(self)
        row = QHBoxLayout()
        self.answer_buttons: dict[str, QPushButton] = {}
        for s in SUBTYPES:
            b = QPushButton(s)
            self.answer_buttons[s] = b
            self.buttons.addButton(b)
            row.addWidget(b)
            b.clicked.connect(lambda _checked=False, s=s: self.answer(s))
        self.feedback = QLabel("")
        self.feedback.setWordWrap(True)
        # what tells the subtypes apart, after each answer (the teaching point, not only the verdict)
        self.teaching = QLabel("")
        self.teaching.setWordWrap(True)
        self.score = QLabel("Score: –")
        self.next_button = QPushButton("Next example")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(QLabel("Examples of:"))
        top.addWidget(self.subtype, 1)
        top.addWidget(self.show_heat)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        layout.addLayout(row)
        layout.addWidget(self.feedback)
        layout.addWidget(self.teaching)
        bottom = QHBoxLayout()
        bottom.addWidget(self.score, 1)
        bottom.addWidget(self.next_button)
        layout.addLayout(bottom)
        layout.addWidget(self.status)
        self.next_button.clicked.connect(self.next_question)
        self.subtype.currentIndexChanged.connect(self._on_subtype_changed)
        self.show_heat.toggled.connect(self._on_show_heat_changed)
        self._on_subtype_changed(0)

    def _on_subtype_changed(self, _index: int) -> None:
        subtype = self.subtype.currentData()
        try:
            self.quiz = self._quiz_factory((subtype,) if subtype else None)
        except Exception as exc:  # ReviewError: no reader, no examples of the subtype, database trouble
            self.quiz = None
            self._no_self_test(exc)
            return
        self.next_question()

    def _no_self_test(self, exc: Exception) -> None:
        """Nothing to ask: say why, where the example and the status would be, and disable the answers."""
        self.question = None
        self.status.setText(str(exc))
        self.view.patch.clear()
        self.view.context.clear()
        self.view.info.setText("No self-test: " + str(exc))
        self._set_answerable(False)

    def _on_show_heat_changed(self, _on: bool) -> None:
        if self.question is not None:
            self._show(reveal=self._answered)

    def _set_answerable(self, on: bool) -> None:
        for b in self.answer_buttons.values():
            b.setEnabled(on)

    def _show(self, reveal: bool) -> None:
        entry = self.question.entry
        heat = reveal or self.show_heat.isChecked()
        self.view.show_entry(entry, self.quiz.atlas.context(entry.image_id), heat=heat, reveal=reveal)

    def next_question(self) -> None:
        if self.quiz is None:
            return
        try:
            self.question = self.quiz.next_question()
        except Exception as exc:  # ReviewError: every example left shows too little brain to be named
            self._no_self_test(exc)
            return
        status = f"Answers are kept in the review database as {self.quiz.reader.name}."
        if self.quiz.left_out:
            status += (f" {self.quiz.left_out} example(s) left out: their patch shows too little brain to name a "
                       "subtype (they are in Browse).")
        self.status.setText(status)
        self._answered = False
        self.feedback.setText("")
        self.teaching.setText("")
        self._show(reveal=False)
        self._set_answerable(True)

    def answer(self, subtype: str) -> Any:
        """The resident's answer: recorded, then feedback, the label revealed and the score updated."""
        if self.quiz is None or self.question is None:
            return None
        result = self.quiz.answer(self.question, subtype)
        self._answered = True
        self._set_answerable(False)
        self.feedback.setText(result.feedback)
        self.feedback.setStyleSheet("color: #6fd36f;" if result.correct else "color: #ff8a65;")
        self.teaching.setText(result.teaching)
        self._show(reveal=True)
        self.score.setText(f"Score: {self.quiz.score()}")
        self.sig_answered.emit(result)
        return result


class AtlasBrowserWindow(QWidget):
    """A top-level window: "Browse" (examples by subtype) and "Self-test" tabs over one atlas.

    The atlas index (about 1 s at 100,000 entries) is read on a worker thread: the window
    shows "Opening ..." at once and fills in when `sig_ready` fires, or shows why the
    atlas cannot be opened (`sig_failed`), so the viewer never freezes.
    """

    sig_ready = Signal()
    sig_failed = Signal(str)
    _sig_opened = Signal(object)  # worker -> GUI thread
    _sig_open_failed = Signal(str)

    def __init__(self, atlas_path: str | Path, *, review_store: Any = None, reader: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.atlas_path = Path(atlas_path)
        self.setWindowTitle(f"ICH atlas – {self.atlas_path.name}")
        self.atlas: Any = None
        self.browse: AtlasBrowsePage | None = None
        self.self_test: AtlasSelfTestPage | None = None
        self.review_store = review_store
        self.reader = reader
        self._closing = False
        self._opened: Any = None  # set by the worker, so a close racing the open still closes it
        self.status = QLabel(f"Opening the atlas {self.atlas_path.name} …")
        self.status.setWordWrap(True)
        self.status.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.tabs = QTabWidget()
        self.tabs.hide()
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(self.tabs)
        self.resize(900, 650)
        self._sig_opened.connect(self._on_opened)
        self._sig_open_failed.connect(self._on_open_failed)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._pool.start(WorkerJob(self._open, self._sig_opened.emit, lambda exc: self._sig_open_failed.emit(self._describe(exc))))

    def _open(self) -> Any:  # worker thread: no widgets here
        from ichviewer.atlas import open_atlas

        self._opened = open_atlas(self.atlas_path)  # read-only connection, usable from the GUI thread afterwards
        return self._opened

    def _describe(self, exc: BaseException) -> str:
        from ichviewer.atlas import AtlasError

        if isinstance(exc, AtlasError):
            return str(exc)
        return f"{self.atlas_path}: cannot open the atlas ({type(exc).__name__}: {exc})"

    def _on_opened(self, atlas: Any) -> None:
        if self._closing:
            return  # closeEvent closed it
        self.atlas = atlas
        self.browse = AtlasBrowsePage(atlas)
        self.self_test = AtlasSelfTestPage(self._make_quiz)
        self.tabs.addTab(self.browse, "Browse")
        self.tabs.addTab(self.self_test, "Self-test")
        self.status.hide()
        self.tabs.show()
        self.sig_ready.emit()

    def _on_open_failed(self, message: str) -> None:
        log.warning("atlas browser: %s", message)
        self.status.setText(f"The atlas cannot be shown.\n{message}")
        self.sig_failed.emit(message)

    def _make_quiz(self, subtypes: tuple[str, ...] | None) -> Any:
        from ichviewer.atlas.quiz import AtlasQuiz
        from ichviewer.review import ReviewError

        if self.review_store is None:
            raise ReviewError("The self-test needs the review database; it could not be opened, so answers cannot be kept.")
        if self.reader is None:
            raise ReviewError("Choose who is reading (Review › Change reader) to take the self-test; answers are kept per reader.")
        return AtlasQuiz(self.atlas, self.review_store, self.reader, subtypes=subtypes)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self._closing = True
        self._pool.waitForDone(10000)  # an open still reading the index finishes, then is closed
        opened, self._opened = self._opened, None
        if opened is not None:  # shown or not yet delivered: close it either way
            opened.close()
        self.atlas = None
        super().closeEvent(event)
