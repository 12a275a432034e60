"""Study browser panel: open a folder or file, recent studies, and the series found under the opened path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from PySide6.QtCore import QSize, QSignalBlocker, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

_UID_ROLE = Qt.ItemDataRole.UserRole
_PATH_ROLE = Qt.ItemDataRole.UserRole + 1
_TEXT_ROLE = Qt.ItemDataRole.UserRole + 2  # the row's own two lines, before any "read" mark
#: Added to a row's second line once the reader has a saved read of the series (`set_read`).
READ_MARK = " \u00b7 \u2713 read"


@dataclass(frozen=True)
class SeriesRow:
    """One series as the browser lists it; `problem` is set when it cannot be shown."""

    series_uid: str
    description: str
    n_images: int
    modality: str
    study_uid: str = ""
    folder: str = ""
    problem: str = ""
    #: A small uint8 (rows, cols) image of the middle slice, as Weasis and OHIF show series.
    thumbnail: np.ndarray | None = None

    @property
    def loadable(self) -> bool:
        return not self.problem


@dataclass(frozen=True)
class SeriesAI:
    """The AI's verdict on one series as the browser shows it (built by `findings_panel.series_ai`).

    `text` is the cell (two short lines), in `foreground` on `background`; `priority` orders the
    series in "AI priority" order, highest first (the study's ANY probability).
    """

    text: str
    tooltip: str
    background: str
    foreground: str
    priority: float


#: The browser's series orders: as found in the folder, or the AI's priority (highest ANY first).
FOLDER_ORDER, AI_ORDER = "folder", "ai"
SERIES_ORDERS = {FOLDER_ORDER: "Folder order", AI_ORDER: "AI priority"}
_AI_COLUMN = 1
_ORDER_TIP = ("AI priority lists the series the AI has analysed by their probability of haemorrhage (ANY), "
              "highest first; the rest follow in folder order")
_HIDDEN_ORDER_TIP = ("The AI's verdicts and order are hidden, and the folder's order shown, while a case of your "
                     "blinded panel waits for your vote")


def _icon(grey: np.ndarray) -> QIcon:
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    h, w = grey.shape
    image = QImage(grey.data, w, h, grey.strides[0], QImage.Format.Format_Grayscale8).copy()  # own the pixels
    return QIcon(QPixmap.fromImage(image))


class StudyBrowserPanel(QWidget):
    """Lists the series of the opened path and the recent studies; emits what the reader picks."""

    sig_open_folder_requested = Signal()
    sig_open_file_requested = Signal()
    sig_recent_activated = Signal(str)
    sig_series_activated = Signal(str)
    #: The reader chose another series order (FOLDER_ORDER or AI_ORDER).
    sig_order_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.open_folder_button = QPushButton("Open folder\u2026")
        self.open_file_button = QPushButton("Open file\u2026")
        self.open_folder_button.clicked.connect(self.sig_open_folder_requested)
        self.open_file_button.clicked.connect(self.sig_open_file_requested)
        for b in (self.open_folder_button, self.open_file_button):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_folder_button)
        buttons.addWidget(self.open_file_button)

        self.path_label = QLabel("No study open")
        self.path_label.setWordWrap(True)
        self.path_label.setStyleSheet("color: #9a9a9a;")

        self.series_tree = QTreeWidget()
        # Thumbnail + two lines, as the series strips of Weasis and OHIF; a second column shows the
        # AI's verdict once it has analysed the series (`set_series_ai`).
        self.series_tree.setHeaderHidden(True)
        self.series_tree.setColumnCount(2)
        self.series_tree.setColumnHidden(_AI_COLUMN, True)
        header = self.series_tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, header.ResizeMode.Stretch)
        header.setSectionResizeMode(_AI_COLUMN, header.ResizeMode.ResizeToContents)
        self.series_tree.setRootIsDecorated(False)
        self.series_tree.setIconSize(QSize(56, 56))
        self.series_tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.series_tree.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # arrows belong to slice scrolling
        self.series_tree.setTextElideMode(Qt.TextElideMode.ElideRight)
        # itemActivated is the double-click (or Enter, or single click where the platform
        # style says so); itemDoubleClicked as well would open the series twice.
        self.series_tree.itemActivated.connect(self._on_series_item_changed)

        # Read the worklist in the AI's order (the most likely haemorrhage first), or as filed.
        self.order_box = QComboBox()
        for key, text in SERIES_ORDERS.items():
            self.order_box.addItem(text, key)
        self.order_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.order_box.setToolTip(_ORDER_TIP)
        self.order_box.currentIndexChanged.connect(self._on_order_box_changed)
        self.order_box.setVisible(False)
        self._ai: dict[str, SeriesAI] = {}
        self._folder_order: list[str] = []
        self._order = FOLDER_ORDER
        self._ai_hidden = False
        self._ai_offered = False
        self._n_showable = 0
        # How far the AI has got through the listed series ("AI: 7 of 12").
        self.ai_progress = QLabel("")
        self.ai_progress.setStyleSheet("color: #9a9a9a;")
        self.ai_progress.setToolTip("Series the AI has analysed, of those that can be shown; the rest are analysed "
                                    "in the background while AI \u203a Analyse studies when opened is on")

        self.recent_list = QListWidget()
        self.recent_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.recent_list.itemActivated.connect(self._on_recent_item_changed)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(buttons)
        layout.addWidget(self.path_label)
        series_header = QHBoxLayout()
        series_header.addWidget(QLabel("<b>Series</b>"))
        series_header.addStretch(1)
        series_header.addWidget(self.ai_progress)
        series_header.addWidget(self.order_box)
        layout.addLayout(series_header)
        layout.addWidget(self.series_tree, 3)
        layout.addWidget(QLabel("<b>Recent studies</b>"))
        layout.addWidget(self.recent_list, 1)

    # -- content ---------------------------------------------------------------------
    def set_study(self, path: str, rows: list[SeriesRow]) -> None:
        self.path_label.setText(path)
        self.path_label.setToolTip(path)
        with QSignalBlocker(self.series_tree):
            self.series_tree.clear()
            for row in rows:
                details = f"{row.n_images} images \u00b7 {row.modality}" + ("" if row.loadable else " \u00b7 cannot show")
                text = f"{row.description or '(no description)'}\n{details}"
                item = QTreeWidgetItem([text])
                item.setData(0, _UID_ROLE, row.series_uid)
                item.setData(0, _TEXT_ROLE, text)
                if row.thumbnail is not None:
                    item.setIcon(0, _icon(row.thumbnail))
                tip = f"{row.description}\nSeries UID: {row.series_uid}\nStudy UID: {row.study_uid}\nFolder: {row.folder}"
                if row.problem:
                    tip += f"\nCannot show: {row.problem}"
                    item.setForeground(0, QBrush(QColor("#808080")))
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsSelectable)
                item.setToolTip(0, tip)
                self.series_tree.addTopLevelItem(item)
        self._ai = {}
        self._folder_order = self.series_uids()
        self._n_showable = sum(1 for row in rows if row.loadable)
        self._show_ai_column()

    def set_current_series(self, series_uid: str) -> None:
        with QSignalBlocker(self.series_tree):
            for i in range(self.series_tree.topLevelItemCount()):
                item = self.series_tree.topLevelItem(i)
                if item.data(0, _UID_ROLE) == series_uid:
                    self.series_tree.setCurrentItem(item)
                    f = item.font(0)
                    f.setBold(True)
                else:
                    f = item.font(0)
                    f.setBold(False)
                item.setFont(0, f)

    def series_uids(self) -> list[str]:
        """The series in the order listed (PageUp/PageDown follow it)."""
        return [self.series_tree.topLevelItem(i).data(0, _UID_ROLE) for i in range(self.series_tree.topLevelItemCount())]

    def set_read(self, series_uids: set[str]) -> None:
        """Mark the listed series the reader has a saved read of (\u2713 read), and unmark the rest."""
        for i in range(self.series_tree.topLevelItemCount()):
            item = self.series_tree.topLevelItem(i)
            base = item.data(0, _TEXT_ROLE)
            if base is not None:
                item.setText(0, base + (READ_MARK if item.data(0, _UID_ROLE) in series_uids else ""))

    def read_marked(self) -> list[str]:
        """The listed series marked as read, in list order."""
        return [self.series_tree.topLevelItem(i).data(0, _UID_ROLE) for i in range(self.series_tree.topLevelItemCount())
                if self.series_tree.topLevelItem(i).text(0).endswith(READ_MARK)]

    # -- the AI's verdicts and the order they give --------------------------------------------
    def offer_ai(self, order: str = FOLDER_ORDER) -> None:
        """An AI is installed: offer the order box, starting in `order` (the reader's last choice)."""
        self._ai_offered = True
        self.set_order(order)
        self._show_ai_column()

    def set_series_ai(self, series_uid: str, ai: SeriesAI) -> None:
        """Show the AI's verdict on a listed series (a new folder clears them); in AI priority order it
        moves to its place."""
        item = self._item(series_uid)
        if item is None:
            return
        self._ai[series_uid] = ai
        item.setText(_AI_COLUMN, ai.text)
        item.setToolTip(_AI_COLUMN, ai.tooltip)
        item.setTextAlignment(_AI_COLUMN, Qt.AlignmentFlag.AlignCenter)
        item.setBackground(_AI_COLUMN, QBrush(QColor(ai.background)))
        item.setForeground(_AI_COLUMN, QBrush(QColor(ai.foreground)))
        self._show_ai_column()
        if self._order == AI_ORDER:
            self._apply_order()

    def series_ai(self, series_uid: str) -> SeriesAI | None:
        return self._ai.get(series_uid)

    def set_ai_hidden(self, hidden: bool) -> None:
        """Hide the verdicts and the AI order (a blinded panel member: the order itself would tell)."""
        self._ai_hidden = bool(hidden)
        self.order_box.setEnabled(not self._ai_hidden)
        self.order_box.setToolTip(_HIDDEN_ORDER_TIP if self._ai_hidden else _ORDER_TIP)
        self._show_ai_column()
        self._apply_order()

    @property
    def order(self) -> str:
        """The order the reader chose (FOLDER_ORDER or AI_ORDER), whether or not it applies now."""
        return self._order

    def set_order(self, order: str) -> None:
        if order not in SERIES_ORDERS:
            raise ValueError(f"unknown series order {order!r}; choose from {', '.join(SERIES_ORDERS)}")
        self._order = order
        with QSignalBlocker(self.order_box):
            self.order_box.setCurrentIndex(self.order_box.findData(order))
        self._apply_order()

    def _show_ai_column(self) -> None:
        self.order_box.setVisible(self._ai_offered)
        self.series_tree.setColumnHidden(_AI_COLUMN, self._ai_hidden or not self._ai)
        self.ai_progress.setText(f"AI: {len(self._ai)} of {self._n_showable}" if self._n_showable else "")
        self.ai_progress.setVisible(self._ai_offered and self._n_showable > 1)

    def _apply_order(self) -> None:
        """Put the items in the order that applies, keeping the current one current."""
        if self._order == AI_ORDER and not self._ai_hidden:
            # sorted() is stable: equal priorities keep the folder's order
            analysed = sorted((uid for uid in self._folder_order if uid in self._ai), key=lambda uid: -self._ai[uid].priority)
            wanted = analysed + [uid for uid in self._folder_order if uid not in self._ai]
        else:
            wanted = list(self._folder_order)
        if wanted == self.series_uids():
            return
        tree = self.series_tree
        current = tree.currentItem()
        with QSignalBlocker(tree):
            items = {it.data(0, _UID_ROLE): it for it in (tree.takeTopLevelItem(0) for _ in range(tree.topLevelItemCount()))}
            for uid in wanted:
                tree.addTopLevelItem(items[uid])
            if current is not None:
                tree.setCurrentItem(current)
                tree.scrollToItem(current)

    def _item(self, series_uid: str) -> QTreeWidgetItem | None:
        for i in range(self.series_tree.topLevelItemCount()):
            item = self.series_tree.topLevelItem(i)
            if item.data(0, _UID_ROLE) == series_uid:
                return item
        return None

    def set_recent(self, paths: list[str]) -> None:
        with QSignalBlocker(self.recent_list):
            self.recent_list.clear()
            for p in paths:
                name = Path(p).name or p
                item = QListWidgetItem(f"{name}   \u2014 {Path(p).parent}")
                item.setData(_PATH_ROLE, p)
                item.setToolTip(p if os.path.exists(p) else f"{p}\n(no longer exists)")
                self.recent_list.addItem(item)

    # -- slots ---------------------------------------------------------------------
    def _on_order_box_changed(self, _index: int) -> None:
        self.set_order(self.order_box.currentData())
        self.sig_order_changed.emit(self._order)

    def _on_series_item_changed(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        self.sig_series_activated.emit(item.data(0, _UID_ROLE))

    def _on_recent_item_changed(self, item: QListWidgetItem) -> None:
        self.sig_recent_activated.emit(item.data(_PATH_ROLE))
