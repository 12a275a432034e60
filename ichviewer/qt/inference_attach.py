"""attach_inference: installs the AI findings panel, slice plot, positive-slice strip and attention overlay in a MainWindow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMessageBox, QVBoxLayout, QWidget

from ichviewer import LABELS
from ichviewer.inference.result_cache import RESULT_CACHE_DIR, ResultCache
from ichviewer.qt.attention_overlay import AttentionControlsPanel, AttentionOverlay
from ichviewer.qt.findings_panel import FindingsPanel, run_text, series_ai
from ichviewer.qt.inference_controller import InferenceController
from ichviewer.qt.inference_settings import InferenceSettings
from ichviewer.qt.slice_plot import PositiveSliceStrip, SliceProbabilityPlot

log = logging.getLogger(__name__)

#: Keymap action that shows/hides the attention overlay, and its key when the keymap has no entry.
TOGGLE_ATTENTION = "toggle_attention"
DEFAULT_TOGGLE_KEYS = ("A",)
#: Keymap names (and default keys) of "go to the next / previous slice the AI flags".
NEXT_FLAGGED = "ai_next_flagged"
PREVIOUS_FLAGGED = "ai_previous_flagged"
DEFAULT_FLAGGED_KEYS = {NEXT_FLAGGED: ("N",), PREVIOUS_FLAGGED: ("Shift+N",)}


class InferenceUI(QObject):
    """Everything the AI adds to one main window, wired together and to the window's ViewState.

    Attributes: `controller`, `panel` (FindingsPanel), `plot` (SliceProbabilityPlot),
    `strip` (PositiveSliceStrip), `overlay` (AttentionOverlay), `attention_panel`
    (AttentionControlsPanel), `toggle_attention_action` (key A), `settings`.
    """

    #: The AI's outputs were hidden (True) or shown again (False) for a blinded panel member; other AI
    #: panels (the prediction basis) follow it.
    sig_blinded_changed = Signal(bool)

    def __init__(self, main_window: Any, ensemble_dir: str | Path | None = None, *, settings: InferenceSettings | None = None, chunk: int = 8) -> None:
        super().__init__(main_window)
        self.main_window = main_window
        self.state = main_window.state
        self.settings_folder = Path(getattr(main_window, "settings_dir", "."))
        self.settings = settings if settings is not None else InferenceSettings.load(self.settings_folder)
        if ensemble_dir is None and self.settings.ensemble_dir:
            ensemble_dir = self.settings.ensemble_dir
        providers = None if self.settings.providers == "auto" else self.settings.providers
        kept = ResultCache(self.settings_folder / RESULT_CACHE_DIR) if self.settings.keep_results else None
        self.controller = InferenceController(ensemble_dir, providers=providers, chunk=chunk, kept_results=kept, parent=self)
        self._closed = False
        self.blinded = False
        self._overlay_before_blinding = False

        # -- widgets -----------------------------------------------------------------------
        self.panel = FindingsPanel()
        self.panel.set_auto_infer(self.settings.auto_infer)
        self.plot = SliceProbabilityPlot()
        self.strip = PositiveSliceStrip(Qt.Orientation.Horizontal)
        # The same markers beside the viewer's slice scrollbar (top = superior).
        self.side_strip = PositiveSliceStrip(Qt.Orientation.Vertical, inverted=True)
        self.strips = (self.strip, self.side_strip)
        self.overlay = AttentionOverlay(self.controller, main_window.axial, self.state, parent=self, colormap=self.settings.colormap)
        self.overlay.ensemble_probability = self.plotted_probability
        keys = tuple(main_window.keymap.keys_for(TOGGLE_ATTENTION)) if hasattr(main_window, "keymap") else ()
        keys = keys or DEFAULT_TOGGLE_KEYS
        self.attention_panel = AttentionControlsPanel(self.overlay, self.state, shortcut_text=", ".join(keys))
        self.bottom = QWidget()
        bottom_layout = QVBoxLayout(self.bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.setSpacing(1)
        bottom_layout.addWidget(self.plot, 1)
        bottom_layout.addWidget(self.strip)

        self.findings_dock = main_window.add_panel(self.panel, "AI findings")
        self.attention_dock = main_window.add_panel(self.attention_panel, "Attention map")
        main_window.add_axial_bottom_widget(self.bottom)

        # -- key A and the AI menu -------------------------------------------------------
        self.toggle_attention_action = QAction("Show attention map", main_window)
        self.toggle_attention_action.setCheckable(True)
        self.toggle_attention_action.setShortcuts([QKeySequence(k) for k in keys])
        self.toggle_attention_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.toggle_attention_action.toggled.connect(self.overlay.set_enabled)
        self.overlay.sig_enabled_changed.connect(self._on_overlay_enabled_changed)
        main_window.addAction(self.toggle_attention_action)
        if isinstance(getattr(main_window, "actions_by_name", None), dict):
            main_window.actions_by_name.setdefault(TOGGLE_ATTENTION, self.toggle_attention_action)
        self.run_action = QAction("Analyse this study", main_window)
        self.run_action.triggered.connect(self.analyse)
        self.folder_action = QAction("Analyse every series in the folder", main_window)
        self.folder_action.setToolTip("The series on screen first, then the folder's others in the background; "
                                      "the Series list shows each verdict")
        self.folder_action.triggered.connect(self.analyse_folder)
        self.forget_action = QAction("Forget kept AI results\u2026", main_window)
        self.forget_action.setToolTip("Remove the results kept from earlier sessions (the settings folder's "
                                      "ai-results); series are analysed again when next opened")
        self.forget_action.triggered.connect(lambda _checked=False: self.forget_kept_results())
        self.auto_action = QAction("Analyse studies when opened", main_window)
        self.auto_action.setCheckable(True)
        self.auto_action.setChecked(self.settings.auto_infer)
        self.auto_action.toggled.connect(self.set_auto_infer)
        self.flagged_actions: dict[str, QAction] = {}
        for name, text, step in ((NEXT_FLAGGED, "Next flagged slice", 1), (PREVIOUS_FLAGGED, "Previous flagged slice", -1)):
            act = QAction(text, main_window)
            keymap = getattr(main_window, "keymap", None)
            flagged_keys = keymap.keys[name] if keymap is not None and name in keymap.keys else DEFAULT_FLAGGED_KEYS[name]
            act.setShortcuts([QKeySequence(k) for k in flagged_keys])
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            act.setToolTip(f"{text}: the next slice whose probability for the finding shown reaches its threshold "
                           "(the highest slice when none does)")
            act.triggered.connect(lambda _checked=False, st=step: self.go_to_flagged(st))
            main_window.addAction(act)
            if isinstance(getattr(main_window, "actions_by_name", None), dict):
                main_window.actions_by_name.setdefault(name, act)
            self.flagged_actions[name] = act
        menu = main_window.menuBar().addMenu("&AI")
        for act in (self.run_action, self.folder_action, self.auto_action, self.toggle_attention_action,
                    *self.flagged_actions.values()):
            menu.addAction(act)
        menu.addSeparator()
        menu.addAction(self.forget_action)
        menu.addSeparator()
        menu.addAction(self.findings_dock.toggleViewAction())
        menu.addAction(self.attention_dock.toggleViewAction())

        # -- wiring ------------------------------------------------------------------------
        c = self.controller
        main_window.sig_volume_opened.connect(self._on_volume_opened)
        c.sig_started.connect(self._on_started)
        c.sig_ensemble_loaded.connect(self._on_ensemble_loaded)
        c.sig_slices_updated.connect(self._on_slices_updated)
        c.sig_partial.connect(self._on_partial)
        c.sig_finished.connect(self._on_finished)
        c.sig_failed.connect(self._on_failed)
        c.sig_cancelled.connect(self._on_cancelled)
        c.sig_error.connect(self._notify)
        # The folder's other series are analysed in the background; the browser shows each verdict.
        c.sig_background_finished.connect(self._show_in_browser)
        self.browser = getattr(main_window, "browser", None)
        if self.browser is not None and c.available:
            self.browser.offer_ai(self.settings.series_order)
            self.browser.sig_order_changed.connect(self._on_series_order_changed)
        if hasattr(main_window, "sig_study_loaded"):
            main_window.sig_study_loaded.connect(self._on_study_loaded)
        self.panel.sig_label_selected.connect(self._on_label_selected)
        self.panel.sig_label_activated.connect(self.go_to_peak)
        self.panel.sig_run_requested.connect(self.analyse)
        self.panel.sig_auto_infer_changed.connect(self.set_auto_infer)
        self.plot.sig_slice_clicked.connect(self.state.set_slice_index)
        self.plot.sig_data_margins.connect(self.strip.set_margins)
        for strip in self.strips:
            strip.sig_slice_clicked.connect(self.state.set_slice_index)
        add_side = getattr(main_window, "add_axial_side_widget", None)
        if callable(add_side):
            add_side(self.side_strip)
        self.state.sig_slice_changed.connect(self._on_slice_changed)
        self.state.sig_selected_label_changed.connect(self._on_state_label_changed)
        main_window.add_shutdown_hook(self.shutdown)

        label = self.state.selected_label if self.state.selected_label in LABELS else "ANY"
        self._apply_label(str(label))
        if not c.available:
            self.panel.show_unavailable(c.unavailable_reason)
            self.run_action.setEnabled(False)
            self.folder_action.setEnabled(False)
            self.attention_panel.status.setText(c.unavailable_reason + ".")
        if getattr(main_window, "volume", None) is not None:
            self._on_volume_opened(main_window.volume)

    # -- public ----------------------------------------------------------------------------
    def analyse(self) -> int:
        """Run the models on the study on screen now (the menu item and the panel's button)."""
        volume = getattr(self.main_window, "volume", None)
        if volume is None or not self.controller.available:
            return 0
        return self.controller.start(volume)

    def set_auto_infer(self, on: bool) -> None:
        """Analyse each study when it is opened, and the opened folder's other series in the background."""
        on = bool(on)
        self.panel.set_auto_infer(on)
        self.auto_action.blockSignals(True)
        self.auto_action.setChecked(on)
        self.auto_action.blockSignals(False)
        if on != self.settings.auto_infer:
            self._save_settings(auto_infer=on)
            self.queue_folder()

    def analyse_folder(self) -> int:
        """AI > Analyse every series in the folder: the one on screen (unless it has its findings), then
        the others in the background, also when studies are not analysed as they are opened. Like the
        folder's others, the one on screen gets its result kept from an earlier session, if any."""
        volume = getattr(self.main_window, "volume", None)
        if volume is None or not self.controller.available:
            return 0
        request_id = 0
        if self.controller.result_for(volume) is None and not self.controller.is_running:
            request_id = self.controller.start(volume, fresh=False)
        self.queue_folder(force=True)
        return request_id

    def forget_kept_results(self, *, confirm: bool = True) -> int:
        """AI > Forget kept AI results: remove what earlier sessions kept, after the reader confirms.

        Findings already shown in this session stay until their series is closed; nothing in the review
        database changes. Returns the number of results removed."""
        kept = self.controller.kept_results
        if kept is None:
            self.main_window.statusBar().showMessage(
                'AI results are not kept ("keep_results": false in inference.json): nothing to forget', 8000)
            return 0
        count, size = kept.usage()
        if count == 0:
            self.main_window.statusBar().showMessage(f"No AI results are kept in {kept.root}", 8000)
            return 0
        if confirm:
            answer = QMessageBox.question(
                self.main_window, "Forget kept AI results",
                f"{count} kept AI result(s), {size / 1e6:.1f} MB in {kept.root}.\n\n"
                "Series are analysed again when next opened. Findings shown in this session and the "
                "review database (reads, model runs) are not changed. Forget them?")
            if answer != QMessageBox.StandardButton.Yes:
                return 0
        removed = kept.clear()
        self.main_window.statusBar().showMessage(f"Forgot {removed} kept AI result(s)", 8000)
        return removed

    def queue_folder(self, *, force: bool = False) -> None:
        """Analyse the opened folder's series in the browser's order, behind the one on screen (when
        studies are analysed as they are opened, or `force`; an empty queue otherwise)."""
        volumes = getattr(self.main_window, "volumes", None) or {}
        if not (self.settings.auto_infer or force) or not self.controller.available or self.browser is None:
            self.controller.queue_background([])
            return
        self.controller.queue_background([volumes[uid] for uid in self.browser.series_uids() if uid in volumes])

    def _save_settings(self, **changes: Any) -> None:
        self.settings = self.settings.with_changes(**changes)
        try:
            self.settings.save(self.settings_folder)
        except OSError as exc:
            log.warning("could not save the AI settings: %s", exc)

    def _on_series_order_changed(self, order: str) -> None:
        if order != self.settings.series_order:
            self._save_settings(series_order=order)

    def _show_in_browser(self, volume: Any, result: Any) -> None:
        if self.browser is not None and getattr(volume, "series_uid", None):
            self.browser.set_series_ai(volume.series_uid, series_ai(result))

    def set_blinded(self, on: bool) -> None:
        """Hide every AI output (findings, plot, attention map) while a blinded panel member reads.

        The models still run, so results are ready the moment the member's vote is in.
        """
        on = bool(on)
        if on and not self.blinded:
            self._overlay_before_blinding = self.overlay.enabled
        was_blinded, self.blinded = self.blinded, on
        for dock in (self.findings_dock, self.attention_dock):
            dock.setVisible(not on)
            dock.toggleViewAction().setEnabled(not on)
        self.bottom.setVisible(not on)
        self.side_strip.setVisible(not on)
        self.toggle_attention_action.setEnabled(not on)
        for act in self.flagged_actions.values():
            act.setEnabled(not on)
        if on:
            self.overlay.set_enabled(False)
        elif was_blinded:
            self.overlay.set_enabled(self._overlay_before_blinding)
        if on != was_blinded:
            self.sig_blinded_changed.emit(on)

    # -- going to the slices the AI flags ------------------------------------------------------
    def go_to_flagged(self, step: int = 1) -> int | None:
        """Go to the next (`step` 1) or previous (-1) slice whose probability for the finding shown
        reaches its threshold, wrapping round at the ends; to the highest slice when none does.

        Says where it went in the status bar and returns the slice (None: no results, or blinded).
        """
        if self.blinded:
            return None
        label = self.plot.label
        probs = self.plot.probabilities(label)
        if probs is None or np.all(np.isnan(probs)):
            self._status("No AI results for this study yet")
            return None
        flagged = self.plot.positive_slices(label)
        current = self.state.slice_index
        if flagged:
            ahead = [i for i in flagged if (i - current) * step > 0]
            wrapped = not ahead
            target = (min(ahead) if step > 0 else max(ahead)) if ahead else (flagged[0] if step > 0 else flagged[-1])
            text = (f"{label}: image {target + 1}, flagged slice {flagged.index(target) + 1} of {len(flagged)}"
                    + (" (from the other end)" if wrapped and len(flagged) > 1 else ""))
        else:
            target = int(np.nanargmax(probs))
            threshold = self.plot.threshold(label)
            if threshold is None:
                reason = f"No {label} threshold"
            elif probs[target] >= threshold:  # reached, but a subtype is held back in a negative study
                reason = f"{label} is named only in a study positive for haemorrhage"
            else:
                reason = f"No slice reaches the {label} threshold ({threshold:.2f})"
            text = f"{reason}: image {target + 1} is the highest ({probs[target]:.2f})"
        self.state.set_slice_index(target)
        self._status(text)
        return target

    def go_to_peak(self, label: str) -> int | None:
        """Show `label` and go to the slice where it is most likely (a double-click on its row)."""
        if self.blinded or label not in LABELS:
            return None
        self._on_label_selected(label)
        probs = self.plot.probabilities(label)
        if probs is None or np.all(np.isnan(probs)):
            return None
        target = int(np.nanargmax(probs))
        self.state.set_slice_index(target)
        self._status(f"{label}: image {target + 1} is the highest ({probs[target]:.2f})")
        return target

    def plotted_probability(self, slice_index: int, label: str) -> float | None:
        """The ensemble's probability for `label` on a slice, as the plot shows it (None if not computed)."""
        probs = self.plot.probabilities(label)
        if probs is None or not 0 <= slice_index < len(probs) or np.isnan(probs[slice_index]):
            return None
        return float(probs[slice_index])

    def _status(self, text: str) -> None:
        bar = getattr(self.main_window, "statusBar", None)
        if callable(bar):
            bar().showMessage(text, 6000)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Bounded: cancel the analysis, wait for running jobs, disconnect."""
        if self._closed:
            return True
        self._closed = True
        return self.controller.shutdown(timeout_ms)

    # -- slots -----------------------------------------------------------------------------
    def _notify(self, message: str) -> None:
        notify = getattr(self.main_window, "notify_error", None)
        if callable(notify):
            notify(message)
        else:
            log.error("%s", message)
            self.main_window.statusBar().showMessage(message)

    def _on_volume_opened(self, volume: Any) -> None:
        n = int(volume.n_slices)
        self.plot.set_n_slices(n)
        self.plot.set_current_slice(self.state.slice_index)
        for strip in self.strips:
            strip.set_n_slices(n)
        for strip in self.strips:
            strip.set_current(self.state.slice_index)
        if not self.controller.available:
            return
        request_id = self.controller.open_volume(volume, run=self.settings.auto_infer)
        if request_id and not self.settings.auto_infer and self.controller.result_for(volume) is None:
            self.panel.show_idle(True)

    def _on_study_loaded(self, _path: str, _result: Any) -> None:
        self.queue_folder()  # the browser now lists the folder's series

    def _on_started(self, request_id: int, n_slices: int) -> None:
        self.panel.begin(n_slices)
        self.plot.set_n_slices(n_slices)
        self.plot.set_current_slice(self.state.slice_index)
        for strip in self.strips:
            strip.set_n_slices(n_slices)
        ensemble = self.controller.cache.peek(self.controller.ensemble_dir) if self.controller.ensemble_dir else None
        if ensemble is not None:
            self._on_ensemble_loaded(request_id, ensemble)

    def _on_ensemble_loaded(self, _request_id: int, ensemble: Any) -> None:
        self.panel.set_ensemble(ensemble)
        self.plot.set_thresholds(ensemble.manifest.operating_points.thresholds)

    def _on_slices_updated(self, _request_id: int, first: int, last: int, probs: Any) -> None:
        self.plot.update_slices(first, last, probs)
        if first <= self.state.slice_index < last:  # `last` is the chunk's end, exclusive
            self.overlay.announce_shown()  # the map's line names the ensemble's value once it is known
        for strip in self.strips:
            strip.set_positive(self.plot.positive_slices())

    def _on_partial(self, _request_id: int, result: Any) -> None:
        self.panel.update_result(result)
        self.plot.set_study_positive(result.study_positive)
        for strip in self.strips:
            strip.set_positive(self.plot.positive_slices())

    def _on_finished(self, _request_id: int, result: Any) -> None:
        volume = self.controller.current_request.volume if self.controller.current_request is not None else None
        if volume is not None:
            self._show_in_browser(volume, result)
        self.panel.finish(result)
        self._fit_findings_dock()
        self.plot.set_probabilities(result.slice_probabilities, result.operating_points.thresholds)
        self.overlay.announce_shown()
        self.plot.set_study_positive(result.study_positive)
        for strip in self.strips:
            strip.set_positive(self.plot.positive_slices())
        if self.blinded:  # the status line must not say what the hidden findings are
            self.main_window.statusBar().showMessage("AI results are in; hidden until your vote is cast", 8000)
            return
        self.main_window.statusBar().showMessage(
            f"AI: {result.triage}; {run_text(result, provider=True)}", 8000
        )

    def _fit_findings_dock(self) -> None:
        """Grow the findings dock to show the whole panel once its results are in (Qt sized the dock
        for the empty panel), with the height its roomiest neighbour in the column does not use: no
        other panel is made to scroll for it (the adjudication's Save button must stay in view)."""
        dock = self.findings_dock
        if not dock.isVisible() or dock.isFloating():
            return
        short = _dock_content_height(dock) - dock.widget().viewport().height()
        if short <= 0:
            return
        mw = self.main_window
        area = mw.dockWidgetArea(dock)
        column = [d for d in mw.findChildren(QDockWidget)
                  if d is not dock and mw.dockWidgetArea(d) == area and d.isVisible() and not d.isFloating()
                  and not d.visibleRegion().isEmpty() and abs(d.x() - dock.x()) < 4]
        if not column:  # alone in its column: the window's height is all it has
            return
        # The neighbour with the most unused height gives it; Qt moves the one separator between
        # the two (listing the whole column made it share the change out, squeezing a third panel).
        giver = max(column, key=_dock_slack)
        take = min(_dock_slack(giver), short)
        if take > 0:
            mw.resizeDocks([dock, giver], [dock.height() + take, giver.height() - take], Qt.Orientation.Vertical)

    def _on_failed(self, _request_id: int, message: str) -> None:
        self.panel.show_error(message)

    def _on_cancelled(self, _request_id: int) -> None:
        self.panel.show_cancelled()

    def _on_label_selected(self, label: str) -> None:
        self.state.set_selected_label(label)
        self._apply_label(label)

    def _on_state_label_changed(self, label: object) -> None:
        if label in LABELS:
            self._apply_label(str(label))

    def _apply_label(self, label: str) -> None:
        self.panel.set_selected_label(label)
        self.plot.set_label(label)
        self.overlay.set_label(label)
        for strip in self.strips:
            strip.set_positive(self.plot.positive_slices())

    def _on_slice_changed(self, index: int) -> None:
        self.plot.set_current_slice(index)
        for strip in self.strips:
            strip.set_current(index)

    def _on_overlay_enabled_changed(self, on: bool) -> None:
        self.toggle_attention_action.blockSignals(True)
        self.toggle_attention_action.setChecked(on)
        self.toggle_attention_action.blockSignals(False)


def attach_inference(
    main_window: Any,
    ensemble_dir: str | Path | None = None,
    *,
    settings: InferenceSettings | None = None,
    chunk: int = 8,
) -> InferenceUI:
    """Install the AI in `main_window` (docks on the right, plot under the axial view, overlay, key A, AI menu).

    `ensemble_dir` None means the settings' model directory, else the bundled
    models/default; when there is none the findings panel says so and the viewer
    works as before. The returned InferenceUI exposes the controller and widgets
    and is kept alive as a child of the window; it stops its workers when the
    window closes (or call `shutdown()`).
    """
    ui = InferenceUI(main_window, ensemble_dir, settings=settings, chunk=chunk)
    main_window.inference = ui  # one obvious place to find it (tests, later panels)
    return ui


def _dock_content_height(dock: QDockWidget) -> int:
    """Height a docked panel (in its PanelScrollArea) needs at the width it has, plus a few pixels."""
    scroll = dock.widget()
    panel = scroll.widget() if hasattr(scroll, "widget") and callable(scroll.widget) else None
    if panel is None or panel.layout() is None:
        return scroll.viewport().height()
    layout = panel.layout()
    width = scroll.viewport().width()
    # Word-wrapped labels need the height at this width, which sizeHint may not give; the larger of
    # the two, so a neighbour's slack is never overstated.
    content = panel.sizeHint().height()
    if layout.hasHeightForWidth():
        content = max(content, layout.totalHeightForWidth(width))
    return max(content, panel.minimumSizeHint().height()) + 4


def _dock_slack(dock: QDockWidget) -> int:
    """Pixels of a dock's viewport its panel does not need (0 when it already scrolls)."""
    if not hasattr(dock.widget(), "viewport"):
        return 0
    return max(0, dock.widget().viewport().height() - _dock_content_height(dock))
