"""Prediction-basis widgets: example tiles with heat-map overlays, the "Prediction basis" panel and the enlarged example view."""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QTabWidget, QVBoxLayout, QWidget

from ichviewer.core.windowing import Window, window_to_uint8
from ichviewer.qt.attention_overlay import DEFAULT_COLORMAP, colormap_lut, explained_where

#: Window the atlas patches are shown in unless the viewer's window is passed (a subdural/blood-friendly brain window).
PATCH_WINDOW = Window(80, 40, "Brain")
#: Heat-map opacity over the patch.
HEAT_ALPHA = 0.45
TILE_PX = 96
ENLARGED_PX = 280
#: Where the examples come from, as tab titles.
RANKINGS = (("attention", "Attention features (Eq. 7)"), ("pooled", "Pooled features"))


def overlay_rgb(hu: np.ndarray, heat: np.ndarray | None, window: Window = PATCH_WINDOW, lut: np.ndarray | None = None, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """Windowed grey patch (y, x) with the heat map (0..1) blended on top through the colour map -> (y, x, 3) uint8."""
    grey = window_to_uint8(np.asarray(hu), window).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if heat is not None:
        lut = colormap_lut(DEFAULT_COLORMAP) if lut is None else lut
        h = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
        colours = lut[np.round(h * (len(lut) - 1)).astype(np.intp), :3].astype(np.float32)
        a = (alpha * h)[..., None]
        rgb = rgb * (1 - a) + colours * a
    return np.ascontiguousarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))


def to_pixmap(rgb: np.ndarray, size: int) -> QPixmap:
    h, w = rgb.shape[:2]
    image = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(image).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)


def feature_name(entry: Any) -> str:
    """'last block, filter 12' / 'block3, filter 7' (the block named "features" is the CAM block)."""
    block = "last block" if entry.block == "features" else entry.block
    return f"{block}, filter {entry.channel}"


def example_caption(example: Any) -> str:
    entry = example.entry
    return f"{' + '.join(entry.labels) or 'no label'}  ·  d = {example.distance:.2f}"


class ExampleTile(QFrame):
    """One retrieved example: patch with heat overlay, its labels and distance; a click asks to enlarge it."""

    sig_clicked = Signal(object)  # RetrievedExample

    def __init__(self, example: Any, window: Window = PATCH_WINDOW, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.example = example
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        entry = example.entry
        self.image = QLabel()
        self.image.setPixmap(to_pixmap(overlay_rgb(entry.patch, entry.heat, window), TILE_PX))
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption = QLabel(example_caption(example))
        self.caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(1)
        layout.addWidget(self.image)
        layout.addWidget(self.caption)
        prov = entry.provenance
        self.setToolTip(
            f"Training slice {prov.slice_index} of {prov.source}\nFeature: {feature_name(entry)} "
            f"(selected for {entry.feature_label}, relevance {entry.relevance})\nClick to enlarge beside the slice"
        )

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton:
            self.sig_clicked.emit(self.example)
        super().mouseReleaseEvent(event)


class ExampleGrid(QWidget):
    """Up to eight tiles in two columns."""

    sig_example_clicked = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(3)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.tiles: list[ExampleTile] = []

    def set_examples(self, examples: Any, window: Window = PATCH_WINDOW, limit: int = 8) -> None:
        for tile in self.tiles:
            self.grid.removeWidget(tile)
            tile.deleteLater()
        self.tiles = []
        for i, ex in enumerate(list(examples)[:limit]):
            tile = ExampleTile(ex, window)
            tile.sig_clicked.connect(self.sig_example_clicked)
            self.grid.addWidget(tile, i // 2, i % 2)
            self.tiles.append(tile)


class PredictionBasisPanel(QWidget):
    """The "Prediction basis" panel: for the selected finding and slice, retrieved atlas examples by Eq. 7, and by pooled features beside them."""

    sig_example_clicked = Signal(object)  # RetrievedExample

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("Prediction basis")
        self.title.setWordWrap(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.tabs = QTabWidget()
        self.grids: dict[str, ExampleGrid] = {}
        for key, title in RANKINGS:
            grid = ExampleGrid()
            grid.sig_example_clicked.connect(self.sig_example_clicked)
            self.grids[key] = grid
            self.tabs.addTab(grid, title)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.status)
        self.retrieval: Any = None

    @property
    def tiles(self) -> list[ExampleTile]:
        """The tiles of the Eq. 7 ranking (what the reader sees first)."""
        return self.grids["attention"].tiles

    def show_busy(self, slice_index: int, label: str) -> None:
        self.status.setText(f"Finding atlas examples for {label} on image {slice_index + 1}…")

    def clear(self) -> None:
        """Nothing shown: another series is open and its basis is not known yet."""
        self.retrieval = None
        self.title.setText("")
        self.status.setText("")
        for grid in self.grids.values():
            grid.set_examples([])

    def show_unavailable(self, reason: str) -> None:
        self.status.setText(reason)
        for grid in self.grids.values():
            grid.set_examples([])

    def show_error(self, message: str) -> None:
        self.status.setText(message)

    def set_ensemble_probability(self, ensemble_probability: float | None) -> None:
        """Name the ensemble's probability on the shown slice beside the member's (it can arrive after the examples)."""
        r = self.retrieval
        if r is not None:
            self.title.setText(f"{r.label} on " + explained_where(r.slice_index, r.probability, r.model, ensemble_probability))

    def show_retrieval(self, retrieval: Any, window: Window = PATCH_WINDOW, ensemble_probability: float | None = None) -> None:
        """Show the examples; `ensemble_probability` (the plot's value on the slice) is named beside the
        explaining member's own when they differ, as the attention panel does."""
        self.retrieval = retrieval
        self.set_ensemble_probability(ensemble_probability)
        self.grids["attention"].set_examples(retrieval.examples, window)
        self.grids["pooled"].set_examples(retrieval.pooled_examples, window)
        self.tabs.setTabText(0, f"{RANKINGS[0][1]} ({len(retrieval.examples)})")
        self.tabs.setTabText(1, f"{RANKINGS[1][1]} ({len(retrieval.pooled_examples)})")
        self.status.setText(retrieval.reason or f"{retrieval.n_features_ranked} atlas features ranked; click an example to enlarge it.")


class ContextView(QLabel):
    """The whole source slice (downsampled) with the patch's box drawn on it."""

    def show_context(self, hu: np.ndarray, box: tuple[float, float, float, float], window: Window = PATCH_WINDOW, size: int = ENLARGED_PX) -> None:
        pix = to_pixmap(overlay_rgb(hu, None, window), size)
        painter = QPainter(pix)
        try:
            painter.setPen(QPen(QColor("#ffd400"), 2))
            y0, x0, y1, x1 = box
            w, h = pix.width(), pix.height()
            painter.drawRect(QRectF(x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h))
        finally:
            painter.end()
        self.setPixmap(pix)


class AtlasExampleView(QWidget):
    """An atlas example enlarged: patch with heat map, the source slice in context, labels, distance, feature and provenance."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.patch = QLabel()
        self.patch.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.context = ContextView()
        self.context.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.info = QLabel("Click an example in the prediction basis to see it here.")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(self.patch)
        layout.addWidget(self.context)
        layout.addWidget(self.info)
        layout.addStretch(1)
        self.entry: Any = None
        self.heat_shown = False  # whether the patch on show carries its heat map

    def show_entry(self, entry: Any, context: np.ndarray | None, *, distance: float | None = None, heat: bool = True, window: Window = PATCH_WINDOW, reveal: bool = True) -> None:
        """Show `entry`; `reveal=False` hides its labels and feature (self-test)."""
        self.entry = entry
        self.heat_shown = bool(heat and entry.heat is not None)
        self.patch.setPixmap(to_pixmap(overlay_rgb(entry.patch, entry.heat if heat else None, window), ENLARGED_PX))
        if context is not None:
            self.context.show_context(context, entry.box, window)
        else:
            self.context.clear()
        prov = entry.provenance
        lines = []
        if reveal:
            lines.append(f"<b>{' + '.join(entry.labels) or 'no haemorrhage label'}</b>" + (f" · distance {distance:.3f}" if distance is not None else ""))
            lines.append(f"Feature: {feature_name(entry)}, selected for {entry.feature_label} (relevance count {entry.relevance})")
            lines.append(f"Training slice {prov.slice_index} of {prov.source}")
            lines.append(f"Study {prov.study_uid}<br>Series {prov.series_uid}")
            lines.append(f"Model {prov.model_name} (SHA-256 {prov.model_sha256[:12]}…)")
        else:
            lines.append("Which subtype is this? (the box on the slice shows where the patch was taken)")
        self.info.setText("<br>".join(lines))
