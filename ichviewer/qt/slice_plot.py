"""Per-slice probability plot (Lee et al. 2019, Fig. 2a) and the strip of positive-slice ticks beside a slice scrollbar."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QVBoxLayout, QWidget

from ichviewer import LABELS
from ichviewer.core import decisions

#: Curve colour per label (ANY in white: it is drawn beside the selected subtype).
LABEL_COLOURS = {
    "IPH": "#ff7043",
    "IVH": "#ab47bc",
    "SDH": "#42a5f5",
    "EDH": "#26a69a",
    "SAH": "#ffca28",
    "ANY": "#eeeeee",
}
_POSITIVE = "#ff3b30"


class SliceProbabilityPlot(QWidget):
    """Probability of the selected label on every slice, with the label's threshold, as in Lee et al. 2019, Fig. 2a.

    x is the image number shown in the viewer's corner ("Im: 7/40" is x = 7), so the
    plot and the view agree; signals carry the 0-based slice index. Points fill in
    as chunks arrive; slices at or above the threshold are marked red. Clicking
    anywhere over the plot emits `sig_slice_clicked(index)` for the nearest slice.
    `sig_data_margins(left, right)` reports where the data area sits inside the
    widget (pixels), so a `PositiveSliceStrip` under it can line up.
    """

    sig_slice_clicked = Signal(int)
    sig_data_margins = Signal(int, int)

    def __init__(self, parent: QWidget | None = None, *, show_any: bool = True) -> None:
        super().__init__(parent)
        self.show_any = show_any
        self.plot_widget = pg.PlotWidget(background="#141414")
        self.plot_widget.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.plot_item = self.plot_widget.getPlotItem()
        self.view_box = self.plot_item.getViewBox()
        self.view_box.setMouseEnabled(x=False, y=False)
        self.view_box.setMenuEnabled(False)
        self.plot_item.hideButtons()
        self.plot_item.setLabel("bottom", "Image")
        self.plot_item.setLabel("left", "Probability")
        self.plot_item.showGrid(x=False, y=True, alpha=0.2)
        self.view_box.setYRange(0.0, 1.0, padding=0.02)
        self.legend = self.plot_item.addLegend(offset=(-10, 5), labelTextSize="8pt")

        self.any_curve = pg.PlotDataItem(pen=pg.mkPen(LABEL_COLOURS["ANY"], width=1, style=Qt.PenStyle.DashLine), name="ANY")
        self.curve = pg.PlotDataItem(
            pen=pg.mkPen(LABEL_COLOURS["ANY"], width=2), symbol="o", symbolSize=5, symbolPen=None, name="label"
        )
        self.positive_points = pg.ScatterPlotItem(size=8, brush=pg.mkBrush(_POSITIVE), pen=pg.mkPen("#ffffff", width=0.5))
        self.threshold_line = pg.InfiniteLine(
            angle=0,
            movable=False,
            pen=pg.mkPen("#ff9800", width=1, style=Qt.PenStyle.DashLine),
            label="threshold {value:.2f}",
            labelOpts={"position": 0.06, "color": "#ff9800", "anchors": [(0, 1), (0, 1)]},
        )
        self.current_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#00c8ff", width=1))
        for item in (self.any_curve, self.curve, self.positive_points):
            self.plot_item.addItem(item)
        self.plot_item.addItem(self.threshold_line, ignoreBounds=True)
        self.plot_item.addItem(self.current_line, ignoreBounds=True)
        self.threshold_line.setVisible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)
        self.setMinimumHeight(110)

        self.label = "ANY"
        self.n_slices = 0
        self.current_slice = 0
        self._probs: np.ndarray | None = None  # (z, 6), NaN where not computed
        self._thresholds: dict[str, float] = {}
        self._study_positive: bool | None = None  # the study's ANY decision, None while unknown
        self.plot_widget.scene().sigMouseClicked.connect(self._on_scene_clicked)
        self.view_box.sigResized.connect(self._on_resized)
        self.set_n_slices(0)

    # -- data ----------------------------------------------------------------------------
    def set_n_slices(self, n: int) -> None:
        """A new study: empty plot over `n` slices."""
        self.n_slices = int(n)
        self._study_positive = None
        self._probs = np.full((self.n_slices, len(LABELS)), np.nan) if n else None
        self.view_box.setXRange(0.5, max(1, self.n_slices) + 0.5, padding=0.0)
        # No study: no image numbers (an empty axis read 0.2-0.8) and no current-image line.
        self.plot_item.getAxis("bottom").setStyle(showValues=self.n_slices > 0)
        self.current_line.setVisible(self.n_slices > 0)
        self._refresh()

    def set_thresholds(self, thresholds: dict[str, float]) -> None:
        self._thresholds = dict(thresholds)
        self._refresh()

    def set_probabilities(self, probs: np.ndarray, thresholds: dict[str, float] | None = None) -> None:
        """All slices' probabilities (z, 6) in LABELS order, NaN for slices not yet computed."""
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(LABELS):
            raise ValueError(f"probabilities must be (z, {len(LABELS)}), got {p.shape}")
        if p.shape[0] != self.n_slices:
            self.set_n_slices(p.shape[0])
        self._probs = p.copy()
        if thresholds is not None:
            self._thresholds = dict(thresholds)
        self._refresh()

    def update_slices(self, first: int, last: int, probs: np.ndarray) -> None:
        """Slices first..last-1 arrived (a chunk)."""
        if self._probs is None or last > self._probs.shape[0]:
            return
        self._probs[first:last] = np.asarray(probs, dtype=np.float64)
        self._refresh()

    def clear(self) -> None:
        self.set_n_slices(0)

    def set_label(self, label: str | None) -> None:
        label = label if label in LABELS else "ANY"
        if label != self.label:
            self.label = label
            self._refresh()

    def set_current_slice(self, index: int) -> None:
        self.current_slice = int(index)
        self.current_line.setPos(self.current_slice + 1)

    def set_study_positive(self, positive: bool | None) -> None:
        """The study's current ANY decision (None: not known yet). A subtype marks no slice in a
        study not called positive for haemorrhage (`ichviewer.core.decisions`)."""
        self._study_positive = positive
        self._refresh()

    def positive_slices(self, label: str | None = None) -> list[int]:
        """0-based slices whose probability for `label` (default: the shown one) reaches its threshold.

        None for a subtype when the study is not positive for haemorrhage (`set_study_positive`).
        """
        label = label or self.label
        if self._probs is None or label not in self._thresholds:
            return []
        own = decisions.own_threshold_reached(self._probs[:, LABELS.index(label)], self._thresholds[label])
        # while the study's decision is unknown (None) the slices are not held back
        return [int(i) for i in np.flatnonzero(decisions.label_called(label, own, self._study_positive is not False))]

    def probabilities(self, label: str | None = None) -> np.ndarray | None:
        """Each slice's probability for `label` (default: the shown one), NaN where not computed; None before a study."""
        label = label or self.label
        return None if self._probs is None else self._probs[:, LABELS.index(label)].copy()

    def threshold(self, label: str | None = None) -> float | None:
        return self._thresholds.get(label or self.label)

    def curve_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(x image numbers, y probabilities) of the plotted curve (tests and exports)."""
        x, y = self.curve.getData()
        return (np.asarray(x if x is not None else []), np.asarray(y if y is not None else []))

    # -- drawing -------------------------------------------------------------------------
    def _series(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        if self._probs is None:
            return np.zeros(0), np.zeros(0)
        y = self._probs[:, LABELS.index(label)]
        done = np.flatnonzero(~np.isnan(y))
        return done + 1.0, y[done]

    def _refresh(self) -> None:
        colour = LABEL_COLOURS[self.label]
        x, y = self._series(self.label)
        self.curve.setData(x, y)
        self.curve.setPen(pg.mkPen(colour, width=2))
        self.curve.setSymbolBrush(pg.mkBrush(colour))
        self.legend.removeItem(self.curve)
        self.legend.removeItem(self.any_curve)
        self.legend.addItem(self.curve, self.label)
        show_any = self.show_any and self.label != "ANY"
        if show_any:
            ax, ay = self._series("ANY")
            self.any_curve.setData(ax, ay)
            self.legend.addItem(self.any_curve, "ANY")
        else:
            self.any_curve.setData([], [])
        self.any_curve.setVisible(show_any)
        threshold = self._thresholds.get(self.label)
        self.threshold_line.setVisible(threshold is not None)
        if threshold is not None:
            self.threshold_line.setPos(threshold)
            pos = self.positive_slices()
            self.positive_points.setData(x=[i + 1.0 for i in pos], y=[float(self._probs[i, LABELS.index(self.label)]) for i in pos])
        else:
            self.positive_points.setData(x=[], y=[])

    # -- interaction ---------------------------------------------------------------------
    def slice_at_scene_x(self, scene_x: float) -> int | None:
        if not self.n_slices:
            return None
        x = self.view_box.mapSceneToView(pg.Point(scene_x, self.view_box.sceneBoundingRect().center().y())).x()
        return int(min(self.n_slices - 1, max(0, round(x) - 1)))

    def scene_x_of_slice(self, index: int) -> float:
        """Scene x coordinate of slice `index` (tests click there)."""
        return float(self.view_box.mapViewToScene(pg.Point(index + 1.0, 0.5)).x())

    def _on_scene_clicked(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton or not self.view_box.sceneBoundingRect().contains(ev.scenePos()):
            return
        index = self.slice_at_scene_x(ev.scenePos().x())
        if index is not None:
            ev.accept()
            self.sig_slice_clicked.emit(index)

    def _on_resized(self, *_args) -> None:
        rect = self.view_box.sceneBoundingRect()
        view = self.plot_widget.mapFromScene(rect.topLeft())
        left = int(round(self.plot_widget.mapTo(self, view).x()))
        right = int(round(self.width() - (left + rect.width())))
        self.sig_data_margins.emit(max(0, left), max(0, right))


class PositiveSliceStrip(QWidget):
    """A thin strip with a tick at each positive slice and a marker at the current one; a click jumps to that slice.

    Horizontal (under the probability plot, slice 1 at the left) or vertical (beside a
    slice scrollbar; `inverted=True` puts slice 1 at the bottom, as a scrollbar whose
    top is the last slice). Set `setContentsMargins` (or connect a plot's
    `sig_data_margins` to `set_margins`) so the ticks line up with what they sit beside.
    """

    sig_slice_clicked = Signal(int)

    def __init__(self, orientation: Qt.Orientation = Qt.Orientation.Horizontal, *, inverted: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.orientation = orientation
        self.inverted = inverted
        self.n_slices = 0
        self.positive: tuple[int, ...] = ()
        self.current = -1
        self.colour = QColor(_POSITIVE)
        if orientation == Qt.Orientation.Horizontal:
            self.setFixedHeight(10)
        else:
            self.setFixedWidth(8)
        self.setToolTip("Slices the AI finds positive for the selected finding (click to go there)")
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def set_n_slices(self, n: int) -> None:
        self.n_slices = int(n)
        self.positive = ()
        self.update()

    def set_positive(self, indices: list[int] | tuple[int, ...]) -> None:
        self.positive = tuple(int(i) for i in indices)
        self.update()

    def set_current(self, index: int) -> None:
        self.current = int(index)
        self.update()

    def set_margins(self, left: int, right: int) -> None:
        if self.orientation == Qt.Orientation.Horizontal:
            self.setContentsMargins(left, 0, right, 0)
            self.update()

    def _span(self) -> tuple[float, float]:
        r = self.contentsRect()
        if self.orientation == Qt.Orientation.Horizontal:
            return float(r.left()), float(r.width())
        return float(r.top()), float(r.height())

    def position_of(self, index: int) -> float:
        """Pixel centre of slice `index` along the strip."""
        start, length = self._span()
        frac = (index + 0.5) / max(1, self.n_slices)
        vertical_up = self.orientation == Qt.Orientation.Vertical and self.inverted
        return start + (1.0 - frac if vertical_up else frac) * length

    def index_at(self, pos: float) -> int | None:
        if not self.n_slices:
            return None
        start, length = self._span()
        if length <= 0:
            return None
        frac = (pos - start) / length
        if self.orientation == Qt.Orientation.Vertical and self.inverted:
            frac = 1.0 - frac
        return int(min(self.n_slices - 1, max(0, np.floor(frac * self.n_slices))))

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        p = QPainter(self)
        try:
            p.fillRect(self.rect(), QColor("#202020"))
            if not self.n_slices:
                return
            start, length = self._span()
            tick = max(2.0, length / self.n_slices)
            r = self.contentsRect()
            horizontal = self.orientation == Qt.Orientation.Horizontal
            for i in self.positive:
                c = self.position_of(i)
                rect = QRectF(c - tick / 2, r.top(), tick, r.height()) if horizontal else QRectF(r.left(), c - tick / 2, r.width(), tick)
                p.fillRect(rect, self.colour)
            if 0 <= self.current < self.n_slices:
                p.setPen(QPen(QColor("#00c8ff"), 2))
                c = self.position_of(self.current)
                if horizontal:
                    p.drawLine(int(c), r.top(), int(c), r.bottom())
                else:
                    p.drawLine(r.left(), int(c), r.right(), int(c))
        finally:
            p.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() != Qt.MouseButton.LeftButton:
            return
        pos = event.position()
        index = self.index_at(pos.x() if self.orientation == Qt.Orientation.Horizontal else pos.y())
        if index is not None:
            self.sig_slice_clicked.emit(index)
