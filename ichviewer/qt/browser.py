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
        # One column, thumbnail + two lines, as the series strips of Weasis and OHIF.
        self.series_tree.setHeaderHidden(True)
        self.series_tree.setColumnCount(1)
        self.series_tree.setRootIsDecorated(False)
        self.series_tree.setIconSize(QSize(56, 56))
        self.series_tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.series_tree.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # arrows belong to slice scrolling
        self.series_tree.setTextElideMode(Qt.TextElideMode.ElideRight)
        # itemActivated is the double-click (or Enter, or single click where the platform
        # style says so); itemDoubleClicked as well would open the series twice.
        self.series_tree.itemActivated.connect(self._on_series_item_changed)

        self.recent_list = QListWidget()
        self.recent_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.recent_list.itemActivated.connect(self._on_recent_item_changed)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(buttons)
        layout.addWidget(self.path_label)
        layout.addWidget(QLabel("<b>Series</b>"))
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
                item = QTreeWidgetItem([f"{row.description or '(no description)'}\n{details}"])
                item.setData(0, _UID_ROLE, row.series_uid)
                if row.thumbnail is not None:
                    item.setIcon(0, _icon(row.thumbnail))
                tip = f"{row.description}\nSeries UID: {row.series_uid}\nStudy UID: {row.study_uid}\nFolder: {row.folder}"
                if row.problem:
                    tip += f"\nCannot show: {row.problem}"
                    item.setForeground(0, QBrush(QColor("#808080")))
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsSelectable)
                item.setToolTip(0, tip)
                self.series_tree.addTopLevelItem(item)

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
        return [self.series_tree.topLevelItem(i).data(0, _UID_ROLE) for i in range(self.series_tree.topLevelItemCount())]

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
    def _on_series_item_changed(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        self.sig_series_activated.emit(item.data(0, _UID_ROLE))

    def _on_recent_item_changed(self, item: QListWidgetItem) -> None:
        self.sig_recent_activated.emit(item.data(_PATH_ROLE))
