"""MainWindow: the reading workstation (study browser, axial view, reformats, status bar, panel docks)."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QScrollBar,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ichviewer.core import measurements as meas
from ichviewer.core.slab import AVERAGE, MIP, SLAB_STEPS_MM, Slab
from ichviewer.core.volume import CTVolume
from ichviewer.io import LoadResult
from ichviewer.qt.browser import SeriesRow, StudyBrowserPanel
from ichviewer.qt.display import Orientation, apply_window, series_label
from ichviewer.qt.measure import MeasurementLayer, MeasurementsPanel
from ichviewer.qt.settings import Keymap, RecentStudies, load_keymap, settings_dir, write_json_atomic
from ichviewer.qt.slice_view import AxialView, HoverInfo, ReformatView
from ichviewer.qt.state import ViewState
from ichviewer.qt.workers import LoadRequest, ReformatRequest, StudyLoader

log = logging.getLogger(__name__)


def first_volume_to_show(rows: list[SeriesRow], volumes: dict[str, CTVolume]) -> CTVolume:
    """The series a newly opened folder shows: the study whose series the browser lists first, at
    its series with the most images (a head CT's thin or main axial series rather than a scout).

    The reader looks at the top of the list to see what is on screen, so a worklist folder of
    several patients opens on the first of them, not on whichever study UID sorts first.
    """
    listed = [r for r in rows if r.series_uid in volumes]
    study = listed[0].study_uid
    same_study = [volumes[r.series_uid] for r in listed if r.study_uid == study]
    return max(same_study, key=lambda v: v.n_slices)  # max keeps the first listed on a tie


class PanelScrollArea(QScrollArea):
    """Vertical-only scroll area for a docked panel: as wide as the panel needs plus its
    scroll bar, so a panel that scrolls is never clipped on the right."""

    def __init__(self, widget: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(widget)

    def _width_for(self, hint: QSize) -> int:
        return hint.width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:
        inner = self.widget().minimumSizeHint() if self.widget() is not None else QSize(0, 0)
        return QSize(self._width_for(inner), super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:
        inner = self.widget().sizeHint() if self.widget() is not None else QSize(0, 0)
        return QSize(self._width_for(inner), inner.height() + 2 * self.frameWidth())
#: Window size, position and splitter sizes, kept in the settings folder.
LAYOUT_FILE = "window.json"
#: Cine speeds offered (images per second) and the first one; the reader's choice is kept in LAYOUT_FILE.
CINE_SPEEDS_FPS: tuple[int, ...] = (5, 10, 15, 20, 30)
CINE_DEFAULT_FPS = 10

_DARK_STYLE = """
QMainWindow, QDockWidget, QWidget { background: #1e1e1e; color: #dcdcdc; }
QTreeWidget, QListWidget { background: #141414; border: 1px solid #333; }
QTreeWidget::item:selected, QListWidget::item:selected { background: #2d4f73; }
QHeaderView::section { background: #262626; color: #bbb; border: 0; padding: 2px 4px; }
QPushButton { background: #2b2b2b; border: 1px solid #444; padding: 4px 8px; }
QPushButton:hover { background: #383838; }
QStatusBar { background: #161616; color: #cfcfcf; }
QMenuBar, QMenu { background: #202020; color: #dcdcdc; }
QMenu::item:selected, QMenuBar::item:selected { background: #2d4f73; }
QSplitter::handle { background: #333; }
QDockWidget::title { background: #262626; padding: 3px; }
QCheckBox::indicator, QRadioButton::indicator { width: 12px; height: 12px; border: 1px solid #9a9a9a; background: #141414; }
QRadioButton::indicator { border-radius: 7px; }
QCheckBox::indicator:checked, QRadioButton::indicator:checked { background: #4a90d9; border: 1px solid #8fc0f0; }
QCheckBox::indicator:disabled, QRadioButton::indicator:disabled { border: 1px solid #505050; }
QCheckBox::indicator:checked:disabled, QRadioButton::indicator:checked:disabled { background: #34506b; }
"""


class MainWindow(QMainWindow):
    """The workstation window.

    Integration points for later panels:
      * `state` (ViewState): slice, window, zoom/pan, overlay opacity, selected label, crosshair.
      * `sig_volume_opened(CTVolume)`: a volume is on screen (before its reformats).
      * `sig_reformats_ready(CTVolume)`: the regular (MPR) volume the reformats show.
      * `sig_study_loaded(str, object)`: path and LoadResult of an opened study.
      * `sig_error(str)`: every message the notifier showed.
      * `add_panel(widget, title)`: a dock on the right (findings, adjudication).
      * `add_axial_bottom_widget(widget)`: under the axial view (per-slice probability plot).
      * `axial.set_overlay(rgba_or_callable)`: an RGBA overlay on the axial view.
      * `open_path(path)`, `show_volume(volume)`: for code and the CLI.
    """

    sig_volume_opened = Signal(object)  # CTVolume
    sig_reformats_ready = Signal(object)  # regular CTVolume
    sig_study_loaded = Signal(str, object)  # path, LoadResult
    sig_error = Signal(str)

    def __init__(self, settings_path: str | os.PathLike[str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings_dir = settings_dir(settings_path)
        self.recent = RecentStudies(self.settings_dir)
        self.keymap: Keymap = load_keymap(self.settings_dir)
        self.state = ViewState(self)
        self.loader = StudyLoader(self)
        self.volume: CTVolume | None = None
        self.regular_volume: CTVolume | None = None
        self.volumes: dict[str, CTVolume] = {}
        #: Called with a timeout (ms) by `shutdown`, so attached panels stop their workers.
        self._shutdown_hooks: list = []
        #: Resampled MPR volumes of this study by series UID, so PageUp/PageDown back is instant.
        self._regular_cache: dict[str, CTVolume] = {}
        self.study_path: str | None = None
        self._series_problems: dict[str, str] = {}
        self._error_box: QMessageBox | None = None
        self._image_dir: str | None = None  # where "Save view as image" last wrote (this session)
        self._warnings_box: QMessageBox | None = None
        self._load_request: LoadRequest | None = None

        self.setWindowTitle("ICH Viewer")
        self.setStyleSheet(_DARK_STYLE)
        self.resize(1500, 950)

        # -- views -----------------------------------------------------------------
        self.axial = AxialView(self.state, self.keymap.mouse)
        self.sagittal = ReformatView("sagittal", self.state, self.keymap.mouse)
        self.coronal = ReformatView("coronal", self.state, self.keymap.mouse)
        self.axial_bottom = QWidget()
        self.axial_bottom_layout = QVBoxLayout(self.axial_bottom)
        self.axial_bottom_layout.setContentsMargins(0, 0, 0, 0)
        self.axial_bottom.setVisible(False)
        # The slice scrollbar beside the axial view, superior at the top as the anatomy is;
        # panels may put markers beside it (add_axial_side_widget).
        self.slice_bar = QScrollBar(Qt.Orientation.Vertical)
        self.slice_bar.setInvertedAppearance(True)
        self.slice_bar.setPageStep(5)
        self.slice_bar.setToolTip("Slice (top: superior)")
        self.slice_bar.setRange(0, 0)
        axial_row = QWidget()
        self.axial_side_layout = QHBoxLayout(axial_row)
        self.axial_side_layout.setContentsMargins(0, 0, 0, 0)
        self.axial_side_layout.setSpacing(1)
        self.axial_side_layout.addWidget(self.axial, 1)
        self.axial_side_layout.addWidget(self.slice_bar)
        self.axial_column = QSplitter(Qt.Orientation.Vertical)
        self.axial_column.addWidget(axial_row)
        self.axial_column.addWidget(self.axial_bottom)
        self.axial_column.setStretchFactor(0, 5)
        self.axial_column.setStretchFactor(1, 1)
        self.reformat_column = QSplitter(Qt.Orientation.Vertical)
        self.reformat_column.addWidget(self.sagittal)
        self.reformat_column.addWidget(self.coronal)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.axial_column)
        self.splitter.addWidget(self.reformat_column)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([900, 330])
        self.setCentralWidget(self.splitter)

        # -- study browser ---------------------------------------------------------
        self.browser = StudyBrowserPanel()
        self.browser_dock = QDockWidget("Studies", self)
        self.browser_dock.setObjectName("studies_dock")
        self.browser_dock.setWidget(self.browser)
        self.browser_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.browser_dock)
        self.resizeDocks([self.browser_dock], [260], Qt.Orientation.Horizontal)
        self.browser.set_recent(self.recent.paths())

        # -- measurements (ruler, ROI HU, grown volume, ABC/2), a tab beside the study browser --
        self.measurements = MeasurementLayer(self.axial, self)
        self.measurements_panel = MeasurementsPanel(self.measurements, settings_folder=self.settings_dir)
        self.measurements_dock = self.add_panel(self.measurements_panel, "Measurements", Qt.DockWidgetArea.LeftDockWidgetArea)
        self.measurements.sig_refused.connect(lambda why: self.statusBar().showMessage(f"No volume: {why}", 8000))
        self.tabifyDockWidget(self.browser_dock, self.measurements_dock)
        self.browser_dock.raise_()

        # -- status bar ------------------------------------------------------------
        self.status_series = QLabel("")
        self.status_window = QLabel("")
        self.statusBar().addPermanentWidget(self.status_series)
        self.statusBar().addPermanentWidget(self.status_window)
        # While a cine plays, a mark that stays (the message area is taken over by the cursor's HU).
        # A click on it stops the cine from anywhere, also while a text field has the keys.
        self.status_cine = QToolButton()
        self.status_cine.setAutoRaise(True)
        self.status_cine.setVisible(False)
        self.status_cine.clicked.connect(self.stop_cine)
        self.statusBar().addPermanentWidget(self.status_cine)
        self.statusBar().showMessage("Open a folder or file (Ctrl+O) to start reading.")

        # -- wiring ------------------------------------------------------------------
        self.browser.sig_open_folder_requested.connect(self.choose_folder)
        self.browser.sig_open_file_requested.connect(self.choose_file)
        self.browser.sig_recent_activated.connect(self._on_recent_changed)
        self.browser.sig_series_activated.connect(self._on_series_changed)
        self.loader.sig_loaded.connect(self._on_study_loaded)
        self.loader.sig_load_failed.connect(self._on_load_failed)
        self.loader.sig_reformatted.connect(self._on_reformat_ready)
        self.loader.sig_reformat_failed.connect(self._on_reformat_failed)
        self.state.sig_window_changed.connect(self._on_window_changed)
        self.state.sig_n_slices_changed.connect(self._on_n_slices_changed)
        self.state.sig_slice_changed.connect(self._on_slice_changed)
        self.slice_bar.valueChanged.connect(self.state.set_slice_index)
        self.state.sig_view_reset.connect(self._on_view_reset)
        self.axial.sig_warnings_requested.connect(self.show_warnings)
        self.axial.sig_hover.connect(self._on_hover_changed)
        self.cine_fps = CINE_DEFAULT_FPS
        self._build_actions()
        self._on_window_changed(self.state.window)
        self._restore_layout()

    # -- actions from the keymap -------------------------------------------------------
    def _build_actions(self) -> None:
        km = self.keymap
        handlers = {
            "slice_next": ("Next slice", lambda: self.state.step_slice(1)),
            "slice_previous": ("Previous slice", lambda: self.state.step_slice(-1)),
            "slice_first": ("First slice", lambda: self.state.set_slice_index(0)),
            "slice_last": ("Last slice", lambda: self.state.set_slice_index(self.state.n_slices - 1)),
            "series_next": ("Next series in the Series list", lambda: self.step_series(1)),
            "series_previous": ("Previous series in the Series list", lambda: self.step_series(-1)),
            "reset_view": ("Reset view", self.state.reset_view),
            "open_folder": ("Open folder\u2026", self.choose_folder),
            "open_file": ("Open file\u2026", self.choose_file),
            "save_view_image": ("Save view as image\u2026", lambda: self.save_view_image()),
            "save_view_image_plain": ("Save view as image without corner text\u2026",
                                      lambda: self.save_view_image(corner_text=False)),
            "show_warnings": ("Series warnings\u2026", self.show_warnings),
            "toggle_crosshair": ("Show reference lines", self._toggle_crosshair),
            "slab_thicker": ("Thick slab: next thickness (off, 3, 5, 10 mm)", self.step_slab),
            "slab_mip": ("Thick slab: maximum (MIP) instead of average", self._toggle_slab_mip),
            "cine_play": ("Cine: play / stop", self._toggle_cine),
            "tool_length": ("Ruler (length)", lambda: self.set_measure_tool(meas.LENGTH)),
            "tool_ellipse": ("ROI (mean HU)", lambda: self.set_measure_tool(meas.ELLIPSE)),
            "tool_volume": ("Volume (click a haematoma)", lambda: self.set_measure_tool(meas.VOLUME)),
            "tool_pointer": ("Pointer (stop measuring)", lambda: self.set_measure_tool(None)),
            "delete_measurement": ("Delete nearest measurement", self._delete_measurement),
            "undo_delete_measurement": ("Undo delete measurement", self._undo_delete_measurement),
            "quit": ("Quit", self.close),
        }
        self.actions_by_name: dict[str, QAction] = {}
        for name, (text, fn) in handlers.items():
            act = QAction(text, self)
            act.setShortcuts([QKeySequence(k) for k in km.keys_for(name)])
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            act.triggered.connect(fn)
            self.addAction(act)
            self.actions_by_name[name] = act
        self.actions_by_name["toggle_crosshair"].setCheckable(True)
        self.actions_by_name["toggle_crosshair"].setChecked(True)
        self.actions_by_name["slab_mip"].setCheckable(True)
        self.actions_by_name["cine_play"].setCheckable(True)
        self._cine_timer = QTimer(self)
        self._cine_timer.setInterval(round(1000 / self.cine_fps))  # set_cine_fps keeps it in step
        self._cine_timer.timeout.connect(self._cine_step)
        self.preset_actions: list[QAction] = []
        for number, preset in enumerate(self.state.presets, start=1):
            act = QAction(f"{preset.name}  (W {preset.width:g} / L {preset.level:g})", self)
            if number <= len(km.presets):
                act.setShortcut(QKeySequence(km.presets[number - 1]))
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            act.triggered.connect(lambda _checked=False, n=number: self.state.choose_preset(n))
            self.addAction(act)
            self.preset_actions.append(act)

        a = self.actions_by_name
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(a["open_folder"])
        file_menu.addAction(a["open_file"])
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addAction(a["save_view_image"])
        file_menu.addAction(a["save_view_image_plain"])
        file_menu.addSeparator()
        file_menu.addAction(a["quit"])
        view_menu = self.menuBar().addMenu("&View")
        presets_menu = view_menu.addMenu("Window &presets")
        for act in self.preset_actions:
            presets_menu.addAction(act)
        for name in ("reset_view", "toggle_crosshair", "show_warnings"):
            view_menu.addAction(a[name])
        slab_menu = view_menu.addMenu("Thick &slab")
        self.slab_actions: dict[float, QAction] = {}
        slab_group = QActionGroup(self)
        slab_group.setExclusive(True)
        for mm in SLAB_STEPS_MM:
            act = QAction("Off (acquired slices)" if mm == 0 else f"{mm:g} mm", self)
            act.setCheckable(True)
            act.setChecked(mm == self.state.slab.thickness_mm)
            act.triggered.connect(lambda _checked=False, t=mm: self.set_slab_thickness(t))
            slab_group.addAction(act)
            slab_menu.addAction(act)
            self.slab_actions[mm] = act
        slab_menu.addSeparator()
        slab_menu.addAction(a["slab_thicker"])
        slab_menu.addAction(a["slab_mip"])
        self.state.sig_slab_changed.connect(self._on_slab_changed)
        view_menu.addSeparator()
        for name in ("slice_next", "slice_previous", "slice_first", "slice_last", "series_next", "series_previous"):
            view_menu.addAction(a[name])
        cine_menu = view_menu.addMenu("&Cine")
        cine_menu.addAction(a["cine_play"])
        cine_menu.addSeparator()
        self.cine_speed_actions: dict[int, QAction] = {}
        speed_group = QActionGroup(self)
        speed_group.setExclusive(True)
        for fps in CINE_SPEEDS_FPS:
            act = QAction(f"{fps} images per second", self)
            act.setCheckable(True)
            act.setChecked(fps == self.cine_fps)
            act.triggered.connect(lambda _checked=False, f=fps: self.set_cine_fps(f))
            speed_group.addAction(act)
            cine_menu.addAction(act)
            self.cine_speed_actions[fps] = act
        view_menu.addSeparator()
        view_menu.addAction(self.browser_dock.toggleViewAction())
        view_menu.addAction(self.measurements_dock.toggleViewAction())
        measure_menu = self.menuBar().addMenu("&Measure")
        self.measure_tool_group = QActionGroup(self)
        self.measure_tool_group.setExclusive(True)
        for name in ("tool_length", "tool_ellipse", "tool_volume", "tool_pointer"):
            a[name].setCheckable(True)
            self.measure_tool_group.addAction(a[name])
            measure_menu.addAction(a[name])
        a["tool_pointer"].setChecked(True)
        measure_menu.addSeparator()
        measure_menu.addAction(a["delete_measurement"])
        measure_menu.addAction(a["undo_delete_measurement"])
        # The tools as buttons in the menu bar's corner, as the reading-room viewers show them,
        # without taking a row of height from the image.
        self.tools_bar = QWidget()
        self.tools_bar.setObjectName("tools_bar")
        bar = QHBoxLayout(self.tools_bar)
        bar.setContentsMargins(0, 0, 6, 0)
        bar.setSpacing(2)
        self.tool_buttons: dict[str, QToolButton] = {}
        for name, label in (("tool_pointer", "Pointer"), ("tool_length", "Ruler"), ("tool_ellipse", "ROI"),
                            ("tool_volume", "Volume")):
            a[name].setIconText(label)  # what a text-only button shows; the menu keeps the long text
            keys = ", ".join(km.keys_for(name))
            a[name].setToolTip(a[name].text() + (f" ({keys})" if keys else ""))
            button = QToolButton()
            button.setDefaultAction(a[name])
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setAutoRaise(True)
            button.setStyleSheet("QToolButton { padding: 1px 8px; } QToolButton:checked { background: #2d4f73; }")
            bar.addWidget(button)
            self.tool_buttons[name] = button
        self.menuBar().setCornerWidget(self.tools_bar, Qt.Corner.TopRightCorner)
        help_menu = self.menuBar().addMenu("&Help")
        keys_action = QAction("Keys and mouse\u2026", self)
        keys_action.triggered.connect(self.show_bindings)
        help_menu.addAction(keys_action)
        self.about_action = QAction("About ICH Viewer\u2026", self)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for p in self.recent.paths():
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _c=False, path=p: self.open_path(path))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(none)").setEnabled(False)

    # -- public API ----------------------------------------------------------------------
    def open_path(self, path: str | os.PathLike[str]) -> LoadRequest:
        """Load every CT series under `path` off the GUI thread; when it arrives, the study listed
        first in the browser is shown, at its series with the most images (`first_volume_to_show`)."""
        path = os.fspath(path)
        self._load_request = self.loader.open(path)
        self.statusBar().showMessage(f"Loading {path}\u2026")
        return self._load_request

    def show_volume(self, volume: CTVolume) -> None:
        """Put `volume` on screen now (axial first; reformats follow from a worker when resampling is needed)."""
        self.stop_cine()  # a series is played on purpose, not the next one opened
        self.volume = volume
        if volume.series_uid:
            self.volumes.setdefault(volume.series_uid, volume)
        # Detach the old volume first: the new slice count re-emits the slice index, and
        # a view still holding a shorter volume must not try to draw that index.
        for view in (self.axial, self.sagittal, self.coronal):
            view.set_volume(None)
        self.state.set_crosshair_mm(None)
        self.state.set_view_range(None)
        self.state.set_n_slices(volume.n_slices)
        self.axial.set_volume(volume)
        self.measurements.set_volume(volume)
        self.browser.set_current_series(volume.series_uid)
        self.setWindowTitle(f"ICH Viewer \u2014 {series_label(volume)}")
        self.status_series.setText(
            f"{series_label(volume)}: {volume.n_slices} images, "
            f"{volume.spacing[0]:.2f} mm" + ("  \u26a0" if volume.warnings else "")
        )
        self.sig_volume_opened.emit(volume)
        self.regular_volume = None
        if volume.is_regular:
            self._apply_reformats(volume)
        elif volume.series_uid and volume.series_uid in self._regular_cache:
            self._apply_reformats(self._regular_cache[volume.series_uid])
        else:
            self.sagittal.set_volume(None)
            self.coronal.set_volume(None)
            self.sagittal.corners.set_text("bl", "resampling for MPR\u2026")
            request_id = self._load_request.request_id if self._load_request else self.loader.current_request_id
            self.loader.reformat(request_id, volume)

    def set_measure_tool(self, kind: str | None) -> None:
        """L / E / V / Esc: rulers or ROIs drawn, or volumes clicked, with the crosshair button; or the pointer."""
        self.measurements.set_tool(kind)
        names = {meas.LENGTH: "tool_length", meas.ELLIPSE: "tool_ellipse", meas.VOLUME: "tool_volume", None: "tool_pointer"}
        self.actions_by_name[names[kind]].setChecked(True)
        if kind is not None:
            self.measurements_dock.raise_()
            how = "click inside the haematoma" if kind == meas.VOLUME else "drag"
            self.statusBar().showMessage(
                f"{self.actions_by_name[names[kind]].text()}: {how} with the {self.keymap.mouse.crosshair} button; "
                "Esc to stop", 5000)

    def _delete_measurement(self) -> None:
        removed = self.measurements.remove_nearest()
        if removed is None:
            self.statusBar().showMessage("No measurement on this slice.", 3000)
        else:
            keys = ", ".join(self.keymap.keys_for("undo_delete_measurement"))
            self.statusBar().showMessage(f"Measurement deleted ({keys} brings it back).", 5000)

    def _undo_delete_measurement(self) -> None:
        restored = self.measurements.restore_last_removed()
        if restored is None:
            self.statusBar().showMessage("No deleted measurement to bring back.", 3000)
        elif restored.slice_index != self.state.slice_index:
            self.state.set_slice_index(restored.slice_index)

    def step_series(self, steps: int) -> None:
        """PageUp/PageDown: the previous/next showable series in the browser's order."""
        uids = [u for u in self.browser.series_uids() if u in self.volumes]
        if not uids or self.volume is None:
            return
        i = uids.index(self.volume.series_uid) if self.volume.series_uid in uids else 0
        j = max(0, min(len(uids) - 1, i + steps))
        if j != i:
            self.show_volume(self.volumes[uids[j]])

    def add_panel(self, widget: QWidget, title: str, area: Qt.DockWidgetArea = Qt.DockWidgetArea.RightDockWidgetArea) -> QDockWidget:
        """Dock a panel (findings, adjudication) on the right; returns the dock.

        The panel sits in a scroll area: when the docks stacked on one side need more height
        than the window has, a panel scrolls instead of being squeezed below its minimum
        height (which overlapped its rows: the findings table's ANY row was hidden under the
        model list in a 1000-pixel-high window).
        """
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower().replace(' ', '_')}")
        scroll = PanelScrollArea(widget, dock)
        scroll.setObjectName(f"{dock.objectName()}_scroll")
        dock.setWidget(scroll)
        self.addDockWidget(area, dock)
        return dock

    def add_axial_bottom_widget(self, widget: QWidget) -> None:
        """Put a widget (e.g. the per-slice probability plot) under the axial view."""
        self.axial_bottom_layout.addWidget(widget)
        self.axial_bottom.setVisible(True)
        self.axial_column.setSizes([800, 160])

    def add_axial_side_widget(self, widget: QWidget) -> None:
        """Put a narrow widget (e.g. positive-slice markers) beside the slice scrollbar."""
        self.axial_side_layout.addWidget(widget)

    def _on_n_slices_changed(self, n: int) -> None:
        self.slice_bar.blockSignals(True)
        self.slice_bar.setRange(0, max(0, n - 1))
        self.slice_bar.blockSignals(False)

    def _on_slice_changed(self, index: int) -> None:
        self.slice_bar.blockSignals(True)
        self.slice_bar.setValue(index)
        self.slice_bar.blockSignals(False)

    def add_shutdown_hook(self, hook) -> None:
        """`hook(timeout_ms)` runs in `shutdown`, after the loader stops: attached panels stop their workers there."""
        self._shutdown_hooks.append(hook)

    def notify_error(self, message: str) -> None:
        """The one error path: status bar, log and a non-modal message box; the window stays usable."""
        log.error("%s", message)
        self.statusBar().showMessage(message)
        if self._error_box is None:
            self._error_box = QMessageBox(QMessageBox.Icon.Warning, "ICH Viewer", "", QMessageBox.StandardButton.Ok, self)
            self._error_box.setWindowModality(Qt.WindowModality.NonModal)
        self._error_box.setText(message)
        self._error_box.show()
        self.sig_error.emit(message)

    def show_warnings(self) -> None:
        if self.volume is None:
            return
        warnings = list(self.volume.warnings)
        if self.regular_volume is not None and self.regular_volume is not self.volume:
            warnings += [w for w in self.regular_volume.warnings if w not in warnings]
        if not warnings:
            self.statusBar().showMessage("No warnings for this series.", 4000)
            return
        if self._warnings_box is None:
            self._warnings_box = QMessageBox(QMessageBox.Icon.Information, "Series warnings", "", QMessageBox.StandardButton.Ok, self)
            self._warnings_box.setWindowModality(Qt.WindowModality.NonModal)
        self._warnings_box.setText("\n\n".join(f"\u2022 {w}" for w in warnings))
        self._warnings_box.show()

    def about_text(self) -> str:
        """What the About box says: version and intended use, and where the reader's data and the models are."""
        import html
        import platform

        import numpy
        import pydicom
        import pyqtgraph
        import PySide6

        from ichviewer import __version__

        lines = [
            f"<b>ICH Viewer {__version__}</b>",
            "Reads non-contrast head CT for intracranial haemorrhage. For research, teaching and workflow "
            "demonstration; <b>not for clinical use</b>: the bundled AI models were trained on synthetic phantoms "
            "only (models/MODEL_CARD.md).",
        ]
        where = [f"Settings folder: {self.settings_dir}"]
        review = getattr(self, "review", None)
        if review is not None:
            where.insert(0, f"Review database (reads, measurements, labels, panels): {review.db_path}")
        ai = getattr(self, "inference", None)
        versions = (f"Python {platform.python_version()}, PySide6 {PySide6.__version__}, pyqtgraph "
                    f"{pyqtgraph.__version__}, pydicom {pydicom.__version__}, NumPy {numpy.__version__}")
        if ai is not None:
            import onnxruntime

            models = ai.controller.ensemble_dir
            where.append(f"AI models: {models if models else 'none found (reading continues without AI)'}")
            # onnxruntime-gpu lists the GPU providers it was built with even on a machine without a GPU:
            # say so, and say what the last analysis really ran on.
            ran = ai.panel.provider
            versions += (f", ONNX Runtime {onnxruntime.__version__} (built with "
                         f"{', '.join(onnxruntime.get_available_providers())}; "
                         + (f"the last analysis ran on {ran})" if ran else "no analysis has run yet this session)"))
        lines += [html.escape(w) for w in where] + [html.escape(versions),
                                                    "Licence: BSD-3-Clause (LICENSE); third-party licences in README.md."]
        return "<br>".join(lines)

    def show_about(self) -> QMessageBox:
        box = QMessageBox(QMessageBox.Icon.NoIcon, "About ICH Viewer", "", QMessageBox.StandardButton.Ok, self)
        box.setText(self.about_text())
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)  # paths can be copied
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        return box

    def show_bindings(self) -> None:
        km = self.keymap
        rows = [f"<tr><td>{act.text()}</td><td>{', '.join(km.keys_for(name))}</td></tr>" for name, act in self.actions_by_name.items()]
        rows += [f"<tr><td>{p.name}</td><td>{km.presets[i] if i < len(km.presets) else ''}</td></tr>" for i, p in enumerate(self.state.presets)]
        m = km.mouse
        rows += [
            f"<tr><td>Window / level</td><td>{m.window_level} drag (fine with {m.fine_modifier})</td></tr>",
            f"<tr><td>Pan</td><td>{m.pan} drag</td></tr>",
            f"<tr><td>Zoom</td><td>{m.zoom_wheel_modifier} + wheel</td></tr>",
            "<tr><td>Slice</td><td>wheel</td></tr>",
            f"<tr><td>Reference point</td><td>{m.crosshair} click</td></tr>",
            f"<tr><td>Ruler / ROI (after {' / '.join(km.keys_for('tool_length')[:1] + km.keys_for('tool_ellipse')[:1])})"
            f"</td><td>{m.crosshair} drag</td></tr>",
            f"<tr><td>Volume (after {', '.join(km.keys_for('tool_volume'))})</td><td>{m.crosshair} click inside the haematoma</td></tr>",
        ]
        if "ai_next_flagged" in self.actions_by_name:  # the AI is attached
            rows.append("<tr><td>A finding's most likely slice</td><td>double-click its row in AI findings</td></tr>")
        box = QMessageBox(QMessageBox.Icon.NoIcon, "Keys and mouse", "", QMessageBox.StandardButton.Ok, self)
        box.setText(f"<table>{''.join(rows)}</table><p>Bindings: {km.source}; override in {self.settings_dir / 'keymap.json'}</p>")
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()

    def choose_folder(self) -> None:
        start = self.study_path or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open DICOM folder", start)
        if folder:
            self.open_path(folder)

    def choose_file(self) -> None:
        start = self.study_path or str(Path.home())
        file, _ = QFileDialog.getOpenFileName(self, "Open DICOM file or DICOMDIR", start, "All files (*)")
        if file:
            self.open_path(file)

    def save_view_image(self, path: str | os.PathLike[str] | None = None, *, corner_text: bool = True) -> Path | None:
        """The axial view as it is on screen (window, slab, overlays, measurements, corner text) to an image file.

        For teaching files and reports. Without `path` a dialog asks, offering the series' name and
        image number in the folder used last (else the home folder). `corner_text=False` leaves out
        the four corners' text and the warning badge (series and study names, date, scanner, image
        number, window), keeping the orientation letters: an image for a teaching file that carries
        nothing from the study but its pixels. Returns the file written, or None (nothing open,
        cancelled, or the file could not be written: then the error names it).
        """
        if self.volume is None:
            self.statusBar().showMessage("Open a series first: there is no view to save.", 5000)
            return None
        if path is None:
            name = "_".join("".join(ch if ch.isalnum() or ch == "-" else " " for ch in series_label(self.volume)).split())
            suggested = Path(self._image_dir or Path.home()) / f"{name or 'series'}_image{self.state.slice_index + 1}.png"
            title = "Save view as image" + ("" if corner_text else " without corner text")
            chosen, _ = QFileDialog.getSaveFileName(
                self, title, str(suggested), "PNG image (*.png);;JPEG image (*.jpg *.jpeg)"
            )
            if not chosen:
                return None
            path = chosen
        target = Path(path)
        if target.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            target = target.with_name(target.name + ".png")
        hidden = []
        if not corner_text:
            hidden = [w for w in (*(self.axial.corners.labels[c] for c in ("tl", "tr", "bl", "br")),
                                  *self.axial.corners.extra.values()) if w.isVisible()]
            for w in hidden:
                w.setVisible(False)
        try:
            saved = self.axial.grab().save(str(target))
        finally:
            for w in hidden:
                w.setVisible(True)
        if not saved:
            reason = "its folder does not exist" if not target.parent.is_dir() else "it could not be written (permissions or a full disk?)"
            self.notify_error(f"{target}: the view was not saved: {reason}.")
            return None
        self._image_dir = str(target.parent)
        how = "as shown" if corner_text else "without corner text"
        self.statusBar().showMessage(f"Saved image {self.state.slice_index + 1} {how} to {target}", 8000)
        return target

    def shutdown(self, timeout_ms: int = 10000) -> None:
        """Bounded: drop queued work, wait for the running job, close message boxes."""
        self.stop_cine()
        self.loader.shutdown(timeout_ms)
        self.measurements.shutdown(timeout_ms)  # before the review hook saves what is unsaved
        for hook in self._shutdown_hooks:
            hook(timeout_ms)
        for box in (self._error_box, self._warnings_box):
            if box is not None:
                box.close()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.shutdown()
        self._save_layout()
        super().closeEvent(event)

    # -- window layout in the settings folder ---------------------------------------------
    def _save_layout(self) -> None:
        data = {
            "geometry": bytes(self.saveGeometry().toBase64()).decode("ascii"),
            "splitter": self.splitter.sizes(),
            "reformat_column": self.reformat_column.sizes(),
            "cine_fps": self.cine_fps,
        }
        try:
            write_json_atomic(self.settings_dir / LAYOUT_FILE, data)
        except OSError as exc:  # a read-only settings folder must not block closing
            log.warning("could not save the window layout: %s", exc)

    def _restore_layout(self) -> None:
        try:
            data = json.loads((self.settings_dir / LAYOUT_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(data.get("geometry"), str):
            self.restoreGeometry(QByteArray.fromBase64(data["geometry"].encode("ascii")))
        for name in ("splitter", "reformat_column"):
            sizes = data.get(name)
            if isinstance(sizes, list) and len(sizes) == 2 and all(isinstance(v, int) and v >= 0 for v in sizes):
                getattr(self, name).setSizes(sizes)
        if data.get("cine_fps") in CINE_SPEEDS_FPS:
            self.set_cine_fps(int(data["cine_fps"]))

    # -- slots -----------------------------------------------------------------------------
    def _on_study_loaded(self, request: LoadRequest, result: LoadResult) -> None:
        if not result.volumes:
            reasons = [str(e) for e in result.failed]
            if not reasons:
                counts = Counter(s.reason for s in result.skipped)
                summary = "; ".join(f"{n} file(s): {r}" for r, n in counts.most_common(3))
                reasons = [f"{request.path}: no CT image series found" + (f" ({summary})" if summary else "")]
            self.notify_error("\n".join(reasons))
            return
        self.study_path = request.path
        self.volumes = {v.series_uid: v for v in result.volumes}
        self._regular_cache = {}
        rows = []
        for s in result.series:
            v = self.volumes.get(s.series_uid)
            problem = ""
            if v is None:
                where = set(s.paths) | {s.folder}
                problem = next(
                    (
                        str(e)
                        for e in result.failed
                        if getattr(getattr(e, "series", None), "series_uid", None) == s.series_uid or getattr(e, "path", None) in where
                    ),
                    "could not be loaded",
                )
            rows.append(
                SeriesRow(
                    series_uid=s.series_uid,
                    description=series_label(v) if v is not None else s.series_description,
                    n_images=v.n_slices if v is not None else len(s.paths),
                    modality=s.modality,
                    study_uid=s.study_uid,
                    folder=s.folder,
                    problem=problem,
                    thumbnail=None if v is None else self._thumbnail(v),
                )
            )
        self._series_problems = {r.series_uid: r.problem for r in rows if r.problem}
        self.browser.set_study(request.path, rows)
        self.browser.set_recent(self.recent.add(request.path))
        self.show_volume(first_volume_to_show(rows, self.volumes))
        notes = []
        if result.failed:
            notes.append(f"{len(result.failed)} series could not be shown")
        if result.skipped:
            notes.append(f"{len(result.skipped)} file(s) skipped")
        self.statusBar().showMessage(
            f"Opened {request.path}: {len(result.volumes)} CT series" + (f" ({'; '.join(notes)})" if notes else ""), 8000
        )
        self.sig_study_loaded.emit(request.path, result)

    def _thumbnail(self, volume: CTVolume, size: int = 64) -> np.ndarray:
        """The middle slice in the current window, in screen orientation, about `size` pixels across."""
        plane = Orientation.for_direction(volume.direction).plane(volume.hu[volume.n_slices // 2])
        step = max(1, max(plane.shape) // size)
        return apply_window(np.ascontiguousarray(plane[::step, ::step]), self.state.window)

    def _on_load_failed(self, _request: LoadRequest, message: str) -> None:
        self.notify_error(message)

    def _on_reformat_ready(self, request: ReformatRequest, regular: CTVolume) -> None:
        if request.series_uid in self.volumes and self.volumes[request.series_uid] is request.volume:
            self._regular_cache[request.series_uid] = regular
        if self.volume is None or request.volume is not self.volume:
            return  # the reader moved on to another series
        self._apply_reformats(regular)

    def _on_reformat_failed(self, _request: ReformatRequest, message: str) -> None:
        self.notify_error(f"Reformats unavailable: {message}")

    def _apply_reformats(self, regular: CTVolume) -> None:
        self.regular_volume = regular
        self.sagittal.set_volume(regular, self.volume)
        self.coronal.set_volume(regular, self.volume)
        if regular is not self.volume:
            tip = "\n".join(regular.warnings)
            self.sagittal.setToolTip(tip)
            self.coronal.setToolTip(tip)
            # The badge lists what the reader must know, including the resampling.
            n = len(set(self.volume.warnings) | set(regular.warnings))
            self.axial.badge.setText(f"\u26a0 {n} warning{'s' if n > 1 else ''}")
            self.axial.badge.setToolTip("\n".join(f"\u2022 {w}" for w in dict.fromkeys(self.volume.warnings + regular.warnings)))
            self.axial.badge.setVisible(True)
            self.axial.corners.relayout()
        self.sig_reformats_ready.emit(regular)

    def _on_recent_changed(self, path: str) -> None:
        self.open_path(path)

    def _on_series_changed(self, series_uid: str) -> None:
        volume = self.volumes.get(series_uid)
        if volume is not None:
            self.show_volume(volume)
        elif series_uid in self._series_problems:
            self.notify_error(self._series_problems[series_uid])

    def _on_window_changed(self, window) -> None:
        name = f" {window.name}" if window.name else ""
        self.status_window.setText(f"W {window.width:g} / L {window.level:g}{name}")

    def _on_view_reset(self) -> None:
        for view in (self.sagittal, self.coronal):
            view.fit()

    def _on_hover_changed(self, hover: HoverInfo | None) -> None:
        if hover is not None and self.volume is not None:
            loc = self.volume.slice_locations_mm[hover.z]
            self.statusBar().showMessage(f"x {hover.x}, y {hover.y}, slice {hover.z + 1} ({loc:.1f} mm): {hover.hu:.0f} HU")

    # -- thick slab (display only) ---------------------------------------------------------
    def set_slab_thickness(self, thickness_mm: float) -> None:
        self.state.set_slab(Slab(thickness_mm, self.state.slab.mode))

    def step_slab(self) -> None:
        """The slab key: the next thickness in SLAB_STEPS_MM, round again to off."""
        steps = list(SLAB_STEPS_MM)
        now = self.state.slab.thickness_mm
        later = [t for t in steps if t > now]
        self.set_slab_thickness(later[0] if later else steps[0])

    def _toggle_slab_mip(self) -> None:
        self.state.set_slab(Slab(self.state.slab.thickness_mm, MIP if self.actions_by_name["slab_mip"].isChecked() else AVERAGE))

    def _on_slab_changed(self, slab: Slab) -> None:
        for mm, act in self.slab_actions.items():
            act.setChecked(mm == slab.thickness_mm)
        self.actions_by_name["slab_mip"].setChecked(slab.mode == MIP)
        if not slab.active:
            self.statusBar().showMessage("Thick slab off: the acquired slices.", 4000)
            return
        images = self.axial.slab_images()
        spacing = self.volume.spacing[0] if self.volume is not None else 0.0
        if len(images) <= 1 and self.volume is not None:
            message = (f"Thick slab {slab.thickness_mm:g} mm: this series' slices are already {spacing:.2f} mm, "
                       "so each image is shown as acquired.")
        else:
            message = (f"Thick slab {slab.thickness_mm:g} mm {'MIP' if slab.mode == MIP else 'average'}: "
                       f"{len(images)} slices per image. Measurements and the AI read the acquired slice.")
        self.statusBar().showMessage(message, 8000)

    # -- cine (display only) ----------------------------------------------------------------
    def set_cine_fps(self, fps: int) -> None:
        """Cine speed in images per second (one of CINE_SPEEDS_FPS); a running cine changes pace at once."""
        self.cine_fps = int(fps)
        for value, act in self.cine_speed_actions.items():
            act.setChecked(value == self.cine_fps)
        self._cine_timer.setInterval(round(1000 / self.cine_fps))
        if self.cine_running:
            self._say_cine()

    @property
    def cine_running(self) -> bool:
        return self._cine_timer.isActive()

    def start_cine(self) -> bool:
        """Step through the series from the slice shown, round again from the first after the last
        (as OHIF's and Weasis' cine loop). Scrolling, window/level and measuring keep working; opening
        another series or the cine key stops it. False when there is nothing to play."""
        if self.state.n_slices < 2:
            self.actions_by_name["cine_play"].setChecked(False)
            self.statusBar().showMessage("Cine: open a series of more than one image first.", 4000)
            return False
        self._cine_timer.start()
        self.actions_by_name["cine_play"].setChecked(True)
        self._say_cine()
        return True

    def stop_cine(self) -> None:
        was = self._cine_timer.isActive()
        self._cine_timer.stop()
        self.actions_by_name["cine_play"].setChecked(False)
        self.status_cine.setVisible(False)
        if was:
            self.statusBar().showMessage("Cine stopped.", 3000)

    def _toggle_cine(self) -> None:
        if self.actions_by_name["cine_play"].isChecked():
            self.start_cine()
        else:
            self.stop_cine()

    def _say_cine(self) -> None:
        keys = ", ".join(self.keymap.keys_for("cine_play")) or "View > Cine"
        self.status_cine.setText(f"\u25b6 Cine {self.cine_fps}/s")
        self.status_cine.setToolTip(f"The series plays round and round; click here or press {keys} to stop it")
        self.status_cine.setVisible(True)
        self.statusBar().showMessage(f"Cine: {self.cine_fps} images per second, round again after the last; "
                                     f"{keys} stops it.")

    def _cine_step(self) -> None:
        n = self.state.n_slices
        if n < 2:
            self.stop_cine()
            return
        self.state.set_slice_index((self.state.slice_index + 1) % n)

    def _toggle_crosshair(self) -> None:
        self.axial.set_crosshair_visible(self.actions_by_name["toggle_crosshair"].isChecked())
