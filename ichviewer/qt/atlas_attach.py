"""attach_atlas: installs the "Prediction basis" panel, the enlarged atlas example and the atlas browser in a MainWindow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu

from ichviewer import LABELS
from ichviewer.qt.atlas_browser import AtlasBrowserWindow
from ichviewer.qt.atlas_controller import AtlasController
from ichviewer.qt.atlas_widgets import AtlasExampleView, PredictionBasisPanel

log = logging.getLogger(__name__)

#: Examples retrieved per ranking (the panel shows 4-8).
DEFAULT_K = 6


class AtlasUI(QObject):
    """The prediction basis in one main window, wired to its ViewState.

    Attributes: `controller` (AtlasController), `panel` (PredictionBasisPanel) in the
    "Prediction basis" dock, `example_view` (AtlasExampleView) in the "Atlas example"
    dock beside the slice, `browser_action`, `browser` (the open AtlasBrowserWindow).
    """

    def __init__(self, main_window: Any, ensemble_dir: str | Path | None = None, atlas_path: str | Path | None = None, *,
                 review_store: Any = None, reader: Any = None, k: int = DEFAULT_K) -> None:
        super().__init__(main_window)
        self.main_window = main_window
        self.state = main_window.state
        self.k = int(k)
        self._review_store = review_store
        self._reader = reader
        self._closed = False
        self._gui_atlas: Any = None
        self.browser: AtlasBrowserWindow | None = None
        inference = getattr(main_window, "inference", None)
        self._visible_before_blinding = False
        cache = None
        if inference is not None:
            # the ensemble's values can arrive after the examples: the title names them once they do
            inference.controller.sig_slices_updated.connect(self._on_ensemble_slices)
            inference.controller.sig_finished.connect(self._on_ensemble_finished)  # also a series' kept findings
            cache = inference.controller.cache  # share loaded models with the findings (loading is slow)
            if ensemble_dir is None:
                ensemble_dir = inference.controller.ensemble_dir
        self.controller = AtlasController(ensemble_dir, atlas_path, cache=cache, parent=self)

        self.panel = PredictionBasisPanel()
        self.example_view = AtlasExampleView()
        self.dock = main_window.add_panel(self.panel, "Prediction basis")
        self.example_dock = main_window.add_panel(self.example_view, "Atlas example", Qt.DockWidgetArea.LeftDockWidgetArea)
        self.example_dock.hide()

        self.browser_action = QAction("Atlas browser and self-test…", main_window)
        self.browser_action.triggered.connect(self.open_browser)
        menu = self._ai_menu()
        menu.addSeparator()
        menu.addAction(self.browser_action)
        menu.addAction(self.dock.toggleViewAction())

        self.controller.sig_started.connect(self._on_started)
        self.controller.sig_ready.connect(self._on_ready)
        self.controller.sig_failed.connect(self._on_failed)
        self.panel.sig_example_clicked.connect(self.enlarge)
        main_window.sig_volume_opened.connect(self._on_volume_opened)
        self.state.sig_slice_changed.connect(self._on_slice_changed)
        self.state.sig_selected_label_changed.connect(self._on_selected_label_changed)
        self.dock.visibilityChanged.connect(self._on_dock_visibility_changed)
        if inference is not None and hasattr(inference, "sig_blinded_changed"):
            inference.sig_blinded_changed.connect(self.set_blinded)
        if hasattr(main_window, "add_shutdown_hook"):
            main_window.add_shutdown_hook(self.shutdown)
        main_window.installEventFilter(self)

        if not self.controller.available:
            self.panel.show_unavailable(self.controller.unavailable_reason + ".")
            self.browser_action.setEnabled(False)
        elif getattr(main_window, "volume", None) is not None:
            self.refresh()

    def _ai_menu(self) -> QMenu:
        for action in self.main_window.menuBar().actions():
            if action.menu() is not None and action.text().replace("&", "") == "AI":
                return action.menu()
        return self.main_window.menuBar().addMenu("&AI")

    # -- public ----------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The finding explained: the selected label, ANY when none is selected."""
        selected = self.state.selected_label
        return str(selected) if selected in LABELS else "ANY"

    def set_blinded(self, on: bool) -> None:
        """A blinded panel member is reading: the prediction basis (the model's probability and what
        it rests on for this slice) is hidden with the other AI outputs, and comes back after the vote."""
        if on:
            self._visible_before_blinding = not self.dock.isHidden()
            self.dock.hide()
            self.example_dock.hide()
        self.dock.toggleViewAction().setEnabled(not on)
        if not on and self._visible_before_blinding:
            self.dock.show()
            self._visible_before_blinding = False

    def refresh(self) -> int:
        """Ask for the basis of the selected finding on the slice on screen (off the GUI thread); returns the request id."""
        volume = getattr(self.main_window, "volume", None)
        if self._closed or volume is None or not self.controller.available or self.dock.isHidden():
            return 0
        return self.controller.request(volume, self.state.slice_index, self.label, self.k)

    def enlarge(self, example: Any) -> None:
        """Show an example large, with its source slice in context, in the dock beside the current slice."""
        try:
            context = self._atlas_for_gui().context(example.entry.image_id)
        except Exception as exc:  # a damaged atlas: show the patch anyway
            log.warning("atlas context slice unavailable: %s", exc)
            context = None
        self.example_view.show_entry(example.entry, context, distance=example.distance, window=self.state.window)
        self.example_dock.show()
        self.example_dock.raise_()

    def open_browser(self) -> AtlasBrowserWindow | None:
        """The atlas browser and self-test (one window; raised if already open)."""
        if not self.controller.available:
            return None
        if self.browser is not None:
            self.browser.show()
            self.browser.raise_()
            return self.browser
        review = getattr(self.main_window, "review", None)
        store = self._review_store if self._review_store is not None else getattr(review, "store", None)
        reader = self._reader if self._reader is not None else getattr(review, "reader", None)
        self.browser = AtlasBrowserWindow(self.controller.atlas_path, review_store=store, reader=reader, parent=self.main_window)
        self.browser.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.browser.destroyed.connect(self._on_browser_destroyed)
        self.browser.show()
        return self.browser

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        if self._closed:
            return True
        self._closed = True
        ok = self.controller.shutdown(timeout_ms)
        if self._gui_atlas is not None:
            self._gui_atlas.close()
            self._gui_atlas = None
        if self.browser is not None:
            self.browser.close()
        return ok

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if obj is self.main_window and event.type() == QEvent.Type.Close:
            self.shutdown()
        return False

    # -- internals -------------------------------------------------------------------------
    def _atlas_for_gui(self) -> Any:
        if self._gui_atlas is None:
            from ichviewer.atlas import open_atlas

            self._gui_atlas = open_atlas(self.controller.atlas_path, index=False)  # entries on demand only: opens instantly
        return self._gui_atlas

    def _on_browser_destroyed(self, *_args: Any) -> None:
        self.browser = None

    def _on_volume_opened(self, _volume: Any) -> None:
        self.controller.cancel()
        self.panel.clear()  # never another series' examples, also while the dock is out of sight
        self.refresh()

    def _on_slice_changed(self, _index: int) -> None:
        self.refresh()

    def _on_selected_label_changed(self, _label: object) -> None:
        self.refresh()

    def _on_dock_visibility_changed(self, visible: bool) -> None:
        shown = self.panel.retrieval
        if visible and (shown is None or (shown.slice_index, shown.label) != (self.state.slice_index, self.label)):
            self.refresh()  # the slice or the finding changed while the dock was out of sight

    def _on_started(self, _request_id: int, slice_index: int, label: str) -> None:
        self.panel.show_busy(slice_index, label)

    def _plotted(self, retrieval: Any) -> float | None:
        """The ensemble's probability of the retrieval's label on its slice, as the plot shows it (None if not yet)."""
        plotted = getattr(getattr(self.main_window, "inference", None), "plotted_probability", None)
        return plotted(retrieval.slice_index, retrieval.label) if callable(plotted) else None

    def _on_ready(self, _request_id: int, retrieval: Any) -> None:
        self.panel.show_retrieval(retrieval, self.state.window, self._plotted(retrieval))

    def _on_ensemble_slices(self, _request_id: int, first: int, stop: int, _probs: Any) -> None:
        shown = self.panel.retrieval
        if shown is not None and first <= shown.slice_index < stop:
            self.panel.set_ensemble_probability(self._plotted(shown))

    def _on_ensemble_finished(self, _request_id: int, _result: Any) -> None:
        if self.panel.retrieval is not None:
            self.panel.set_ensemble_probability(self._plotted(self.panel.retrieval))

    def _on_failed(self, _request_id: int, message: str) -> None:
        self.panel.show_error(message)
        notify = getattr(self.main_window, "notify_error", None)
        if callable(notify):
            notify(message)


def attach_atlas(main_window: Any, ensemble_dir: str | Path | None = None, atlas_path: str | Path | None = None, *,
                 review_store: Any = None, reader: Any = None, k: int = DEFAULT_K) -> AtlasUI:
    """Install the prediction basis in `main_window`.

    Call after `attach_inference` (shares its model cache and model directory) and
    after `attach_review` (the self-test keeps answers in its database as its
    reader). `ensemble_dir` None: the AI's directory, else the bundled models;
    `atlas_path` None: `<ensemble_dir>/<explaining member>.atlas.sqlite`. Without an
    atlas the panel says how to build one and the viewer works as before.
    """
    ui = AtlasUI(main_window, ensemble_dir, atlas_path, review_store=review_store, reader=reader, k=k)
    main_window.atlas = ui
    return ui
