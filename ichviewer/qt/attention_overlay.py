"""Attention-map overlay on the axial view: CAM colour map with transparent low values, legend, opacity and label controls."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QLinearGradient, QPainter, QPaintEvent
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from ichviewer import LABELS
from ichviewer.core.volume import HEAD_TISSUE_HU
from ichviewer.qt.inference_controller import AttentionRequest, InferenceController
from ichviewer.qt.state import ViewState

log = logging.getLogger(__name__)

#: Default colour map: 'turbo' runs blue (cold) to red (hot), as the maps in Lee et al. 2019, Fig. 2b.
DEFAULT_COLORMAP = "turbo"
#: Normalised attention below this is fully transparent: the CT stays readable outside the hot spots.
ALPHA_FLOOR = 0.2
#: Attention maps kept in memory (per study, slice and label).
CACHE_SIZE = 96


def colormap_lut(name: str = DEFAULT_COLORMAP, n: int = 256) -> np.ndarray:
    """(n, 4) uint8 RGBA of a pyqtgraph colour map with an alpha ramp: 0 up to ALPHA_FLOOR, then rising to 255."""
    lut = np.asarray(pg.colormap.get(name).getLookupTable(0.0, 1.0, n, alpha=False), dtype=np.uint8)
    x = np.linspace(0.0, 1.0, n)
    alpha = np.clip((x - ALPHA_FLOOR) / (1.0 - ALPHA_FLOOR), 0.0, 1.0) ** 0.7
    return np.concatenate([lut[:, :3], np.round(alpha * 255).astype(np.uint8)[:, None]], axis=1)


#: Pixels below this HU are air outside the head: CAM, upsampled from a coarse feature
#: grid, bleeds past the skull there, and heat over air only distracts the reader.
HEAD_MIN_HU = HEAD_TISSUE_HU


def attention_rgba(normalized: np.ndarray, lut: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """A map in [0, 1] (y, x) -> (y, x, 4) uint8 RGBA through `lut` (values outside [0, 1] are clipped).

    `inside` (bool, y x), when given, makes every pixel outside it transparent.
    """
    m = np.nan_to_num(np.asarray(normalized, dtype=np.float32), nan=0.0)
    idx = np.clip(np.round(m * (len(lut) - 1)), 0, len(lut) - 1).astype(np.intp)
    rgba = np.ascontiguousarray(lut[idx])
    if inside is not None:
        rgba[..., 3][~inside] = 0
    return rgba


def explained_where(slice_index: int, probability: float, model: str, ensemble_probability: float | None = None) -> str:
    """'image 18: p = 0.07 (model resnet; ensemble 0.46)': what the attention map and the prediction
    basis explain. They are one member's reading of the slice alone, so the ensemble's value (the
    plot's) is named beside it when the two differ at two decimals."""
    beside = ""
    if ensemble_probability is not None and abs(ensemble_probability - probability) >= 0.005:
        beside = f"; ensemble {ensemble_probability:.2f}"
    return f"image {slice_index + 1}: p = {probability:.2f} (model {model}{beside})"


class AttentionOverlay(QObject):
    """Shows the CAM of the selected label on the current axial slice, computed off the GUI thread and cached.

    `view` is anything with `set_overlay(callable | None)` (the viewer's AxialView): the
    callable returns the RGBA map of a slice on the slice's own voxel grid, which the
    view orients like the image and draws at `ViewState.overlay_opacity`. Maps are
    asked of the controller only for the slice on screen; while one is computing, the
    newest wish replaces any waiting one.
    """

    sig_enabled_changed = Signal(bool)
    sig_label_changed = Signal(str)
    sig_status_changed = Signal(str)
    sig_map_shown = Signal(int, str)  # slice index, label

    def __init__(self, controller: InferenceController, view: Any, state: ViewState, parent: QObject | None = None, colormap: str = DEFAULT_COLORMAP) -> None:
        super().__init__(parent)
        self.controller = controller
        self.view = view
        self.state = state
        self.lut = colormap_lut(colormap)
        self.colormap = colormap
        self.enabled = False
        self.label = "ANY"
        self.status = ""
        self._maps: OrderedDict[tuple[int, int, str], np.ndarray] = OrderedDict()
        self._info: dict[tuple[int, int, str], Any] = {}
        self._failed_request: int = 0
        #: (slice index, label) -> the ensemble's probability there as the plot shows it, or None; set
        #: by the workstation so the status can put the explaining member's p beside the ensemble's
        self.ensemble_probability: Callable[[int, str], float | None] | None = None
        state.sig_slice_changed.connect(self._on_slice_changed)
        controller.sig_opened.connect(self._on_study_opened)
        controller.sig_cancelled.connect(self._on_study_cancelled)
        controller.sig_attention_ready.connect(self._on_attention_ready)
        controller.sig_attention_failed.connect(self._on_attention_failed)

    # -- public --------------------------------------------------------------------------
    def set_enabled(self, on: bool) -> None:
        on = bool(on)
        if on == self.enabled:
            return
        self.enabled = on
        self.sig_enabled_changed.emit(on)
        self.refresh()

    def toggle(self) -> None:
        self.set_enabled(not self.enabled)

    def set_label(self, label: str | None) -> None:
        label = label if label in LABELS else "ANY"
        if label == self.label:
            return
        self.label = label
        self.sig_label_changed.emit(label)
        self.refresh()

    def current_key(self) -> tuple[int, int, str]:
        return (self.controller.current_request_id, self.state.slice_index, self.label)

    def map_for(self, slice_index: int, label: str | None = None) -> np.ndarray | None:
        """The cached RGBA map of a slice of the current study (None if not computed yet)."""
        return self._maps.get((self.controller.current_request_id, int(slice_index), label or self.label))

    def info_for(self, slice_index: int, label: str | None = None) -> Any:
        """The AttentionMap behind a cached map (probability, model), or None."""
        return self._info.get((self.controller.current_request_id, int(slice_index), label or self.label))

    def announce_shown(self) -> None:
        """Say again what the map on screen explains (the ensemble's value on the slice may have arrived since)."""
        key = self.current_key()
        if self.enabled and key in self._info:
            self._announce(key)

    def refresh(self) -> None:
        """Draw what is cached for the slice on screen and ask for it if it is missing."""
        if not self.enabled or self.controller.current_request_id == 0:
            self.view.set_overlay(None)
            if not self.enabled:
                self._set_status("")
            return
        self.view.set_overlay(self._source)
        key = self.current_key()
        if key in self._maps:
            self._announce(key)
            return
        if self._failed_request == key[0]:
            return  # this study's models give no attention maps; the message is already shown
        self._set_status(f"Computing the attention map for {self.label}\u2026")
        self.controller.request_attention(key[1], key[2])

    # -- internals -----------------------------------------------------------------------
    def _source(self, z: int) -> np.ndarray | None:
        return self._maps.get((self.controller.current_request_id, int(z), self.label))

    def _set_status(self, text: str) -> None:
        if text != self.status:
            self.status = text
            self.sig_status_changed.emit(text)

    def _announce(self, key: tuple[int, int, str]) -> None:
        amap = self._info.get(key)
        if amap is not None:
            ens = self.ensemble_probability(key[1], key[2]) if self.ensemble_probability else None
            where = explained_where(key[1], amap.probability, amap.model, ens)
            if not float(amap.map.max()) > 0:
                self._set_status(f"No {key[2]} attention on {where}.")
            else:
                self._set_status(f"{key[2]} on {where}")  # the panel is the attention map's: one line
        self.sig_map_shown.emit(key[1], key[2])

    def _on_slice_changed(self, _index: int) -> None:
        if self.enabled:
            self.refresh()

    def _on_study_opened(self, _request_id: int, _volume: Any) -> None:
        self._maps.clear()
        self._info.clear()
        self._failed_request = 0
        self.refresh()

    def _on_study_cancelled(self, _request_id: int) -> None:
        self.view.set_overlay(None)

    def _on_attention_ready(self, request: AttentionRequest, amap: Any) -> None:
        key = request.key
        hu = getattr(request.volume, "hu", None)
        inside = hu[request.slice_index] > HEAD_MIN_HU if hu is not None else None
        self._maps[key] = attention_rgba(amap.normalized(), self.lut, inside)
        self._info[key] = amap
        while len(self._maps) > CACHE_SIZE:
            old, _ = self._maps.popitem(last=False)
            self._info.pop(old, None)
        if self.enabled and key == self.current_key():
            self.view.set_overlay(self._source)  # re-render: the map for the slice on screen arrived
            self._announce(key)

    def _on_attention_failed(self, request: AttentionRequest, message: str) -> None:
        self._failed_request = request.request_id
        self._set_status(message)


class ColourBarLegend(QWidget):
    """A horizontal colour bar of the overlay's LUT (transparency shown over a dark checkerboard), 'low' to 'high'."""

    def __init__(self, lut: np.ndarray, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lut = lut
        self.setFixedHeight(14)
        self.setMinimumWidth(80)
        self.setToolTip("Attention (Lee et al. 2019, Eq. 5), scaled to the slice's maximum; below 20 % transparent")

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        try:
            r = QRectF(self.rect())
            p.fillRect(r, QColor("#505050"))
            grad = QLinearGradient(r.left(), 0, r.right(), 0)
            n = len(self.lut)
            for i in range(0, n, max(1, n // 32)):
                c = self.lut[i]
                grad.setColorAt(i / (n - 1), QColor(int(c[0]), int(c[1]), int(c[2]), int(c[3])))
            c = self.lut[-1]
            grad.setColorAt(1.0, QColor(int(c[0]), int(c[1]), int(c[2]), int(c[3])))
            p.fillRect(r, grad)
        finally:
            p.end()


class AttentionControlsPanel(QWidget):
    """Controls of the attention overlay: show (key A), label, opacity, colour-bar legend and status."""

    def __init__(self, overlay: AttentionOverlay, state: ViewState, shortcut_text: str = "A", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.overlay = overlay
        self.state = state
        self.show_check = QCheckBox(f"Show attention map ({shortcut_text})" if shortcut_text else "Show attention map")
        self.label_combo = QComboBox()
        self.label_combo.addItems(list(LABELS))
        self.label_combo.setCurrentText(overlay.label)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(round(state.overlay_opacity * 100))
        self.opacity_value = QLabel(f"{round(state.overlay_opacity * 100)} %")
        self.legend = ColourBarLegend(overlay.lut)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow(self.show_check)
        form.addRow("Finding:", self.label_combo)
        row = QHBoxLayout()
        row.addWidget(self.opacity_slider, 1)
        row.addWidget(self.opacity_value)
        form.addRow("Opacity:", row)
        legend = QHBoxLayout()
        legend.addWidget(QLabel("low"))
        legend.addWidget(self.legend, 1)
        legend.addWidget(QLabel("high"))
        form.addRow("Attention:", legend)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.show_check.toggled.connect(self._on_show_changed)
        self.label_combo.currentTextChanged.connect(self._on_label_changed)
        self.opacity_slider.valueChanged.connect(self._on_opacity_changed)
        overlay.sig_enabled_changed.connect(self._on_overlay_enabled_changed)
        overlay.sig_label_changed.connect(self._on_overlay_label_changed)
        overlay.sig_status_changed.connect(self.status.setText)
        state.sig_overlay_opacity_changed.connect(self._on_state_opacity_changed)

    # widget -> model
    def _on_show_changed(self, on: bool) -> None:
        self.overlay.set_enabled(on)

    def _on_label_changed(self, label: str) -> None:
        self.state.set_selected_label(label)
        self.overlay.set_label(label)

    def _on_opacity_changed(self, value: int) -> None:
        self.opacity_value.setText(f"{value} %")
        self.state.set_overlay_opacity(value / 100.0)

    # model -> widget (signals blocked so nothing loops)
    def _on_overlay_enabled_changed(self, on: bool) -> None:
        self.show_check.blockSignals(True)
        self.show_check.setChecked(on)
        self.show_check.blockSignals(False)

    def _on_overlay_label_changed(self, label: str) -> None:
        self.label_combo.blockSignals(True)
        self.label_combo.setCurrentText(label)
        self.label_combo.blockSignals(False)

    def _on_state_opacity_changed(self, value: float) -> None:
        self.opacity_slider.blockSignals(True)
        self.opacity_slider.setValue(round(value * 100))
        self.opacity_slider.blockSignals(False)
        self.opacity_value.setText(f"{round(value * 100)} %")
