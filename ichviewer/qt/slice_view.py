"""Slice views: the axial view (with corner annotations, warning badge, overlay) and the MPR reformat views."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QTransform
from PySide6.QtWidgets import QGraphicsDropShadowEffect, QLabel, QToolButton, QVBoxLayout, QWidget

from ichviewer.core.slab import slab_image
from ichviewer.core.volume import CTVolume
from ichviewer.core.windowing import Window
from ichviewer.qt.display import Orientation, apply_window_rgb32, grey_of, grid_point, patient_point, series_label
from ichviewer.qt.settings import MouseBindings
from ichviewer.qt.state import ViewState

_BUTTONS = {"left": Qt.MouseButton.LeftButton, "right": Qt.MouseButton.RightButton, "middle": Qt.MouseButton.MiddleButton}
_MODIFIERS = {
    "ctrl": Qt.KeyboardModifier.ControlModifier,
    "shift": Qt.KeyboardModifier.ShiftModifier,
    "alt": Qt.KeyboardModifier.AltModifier,
    "meta": Qt.KeyboardModifier.MetaModifier,
}
#: Annotation text: light grey on the black background, like the reading-room viewers.
_TEXT_STYLE = "color: #e8e8e8; background: transparent; font-size: 12px;"
_ORIENT_STYLE = "color: #f0c000; background: transparent; font-size: 13px; font-weight: bold;"
#: Overlay RGBA source: a (z, y, x, 4) uint8 array in the volume's voxel order, or slice -> (y, x, 4) | None.
OverlaySource = np.ndarray | Callable[[int], "np.ndarray | None"]


@dataclass(frozen=True)
class HoverInfo:
    """What is under the mouse on the axial view: voxel (z, y, x) and its HU, or nothing."""

    z: int
    y: int
    x: int
    hu: float


class Rgb32ImageItem(pg.ImageItem):
    """An ImageItem that shows a (rows, cols) uint32 array of 0xFFRRGGBB pixels as QImage RGB32, without copying.

    RGB32 is the format Qt's raster painter scales fastest; any other array goes
    through pyqtgraph's usual path.
    """

    def render(self) -> None:
        img = self.image
        if img is not None and img.ndim == 2 and img.dtype == np.uint32 and img.flags.c_contiguous:
            self.qimage = pg.functions.ndarray_to_qimage(img, QImage.Format.Format_RGB32)
            self._renderRequired = False
            self._unrenderable = False
            return
        super().render()


class SliceViewBox(pg.ViewBox):
    """A ViewBox whose mouse follows the keymap: slice wheel, W/L drag, pan drag, Ctrl+wheel zoom, click."""

    sig_wheel_steps = Signal(int)  # +1 = next slice
    sig_window_drag = Signal(float, float, bool)  # dx, dy screen pixels, fine
    sig_window_drag_finished = Signal()
    sig_clicked = Signal(float, float)  # view (mm) coordinates of a crosshair click/drag
    sig_user_range_changed = Signal()
    # start, current (view mm), finished: a drag of the crosshair button while a measurement tool is on
    sig_draw = Signal(QPointF, QPointF, bool)

    def __init__(self, mouse: MouseBindings, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mouse = mouse
        #: A measurement kind (`ichviewer.core.measurements.KINDS`) while the reader measures: the
        #: crosshair button then draws it instead of moving the reference point.
        self.drawing_tool: str | None = None
        self.setMenuEnabled(False)
        self.setAspectLocked(True, 1.0)
        self.setBackgroundColor("k")
        self._wheel_accum = 0.0

    def _is(self, button: Qt.MouseButton, role: str) -> bool:
        return button == _BUTTONS[getattr(self.mouse, role)]

    def wheelEvent(self, ev, axis=None) -> None:  # noqa: N802 - Qt override
        delta = ev.delta()
        if ev.modifiers() & _MODIFIERS[self.mouse.zoom_wheel_modifier]:
            factor = self.mouse.zoom_per_wheel_step ** (-delta / 120.0)
            center = self.mapToView(ev.pos())
            self.scaleBy((factor, factor), center=center)
            self.sig_user_range_changed.emit()
            ev.accept()
            return
        # Touchpads send small deltas: accumulate to whole notches of 120.
        self._wheel_accum += delta
        steps = int(self._wheel_accum / 120)
        if steps:
            self._wheel_accum -= steps * 120
            self.sig_wheel_steps.emit(-steps if self.mouse.wheel_down_is_next_slice else steps)
        ev.accept()

    def mouseClickEvent(self, ev) -> None:  # noqa: N802
        if self._is(ev.button(), "crosshair") and self.drawing_tool is None:
            p = self.mapToView(ev.pos())
            self.sig_clicked.emit(p.x(), p.y())
        elif self._is(ev.button(), "crosshair"):
            # a tool that measures from one click (a grown volume); the others ignore a drag of nothing
            p = self.mapToView(ev.pos())
            self.sig_draw.emit(p, p, True)
        ev.accept()

    def mouseDragEvent(self, ev, axis=None) -> None:  # noqa: N802
        button = ev.button()
        fine = bool(ev.modifiers() & _MODIFIERS[self.mouse.fine_modifier])
        if self._is(button, "window_level"):
            ev.accept()
            d = ev.screenPos() - ev.lastScreenPos()
            if d.x() or d.y():
                self.sig_window_drag.emit(d.x(), d.y(), fine)
            if ev.isFinish():
                self.sig_window_drag_finished.emit()
        elif self._is(button, "pan"):
            ev.accept()
            here, last = self.mapToView(ev.pos()), self.mapToView(ev.lastPos())
            self.translateBy(x=last.x() - here.x(), y=last.y() - here.y())
            self.sig_user_range_changed.emit()
        elif self._is(button, "crosshair") and self.drawing_tool is not None:
            ev.accept()
            self.sig_draw.emit(self.mapToView(ev.buttonDownPos()), self.mapToView(ev.pos()), bool(ev.isFinish()))
        elif self._is(button, "crosshair"):
            ev.accept()
            p = self.mapToView(ev.pos())
            self.sig_clicked.emit(p.x(), p.y())
        else:
            ev.ignore()


class _CornerOverlay(QObject):
    """Four annotation labels (and extra widgets) pinned to the corners of a view, passing the mouse through."""

    MARGIN = 6

    def __init__(self, host: QWidget) -> None:
        super().__init__(host)
        self.host = host
        self.labels: dict[str, QLabel] = {}
        self.extra: dict[str, QWidget] = {}
        for corner in ("tl", "tr", "bl", "br"):
            lab = QLabel(host)
            lab.setStyleSheet(_TEXT_STYLE)
            # A hard black shadow keeps the text readable over bone and bright windows.
            shadow = QGraphicsDropShadowEffect(lab)
            shadow.setBlurRadius(0)
            shadow.setOffset(1, 1)
            shadow.setColor(QColor(0, 0, 0))
            lab.setGraphicsEffect(shadow)
            lab.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            lab.setAlignment(Qt.AlignmentFlag.AlignRight if corner[1] == "r" else Qt.AlignmentFlag.AlignLeft)
            self.labels[corner] = lab
        for side in ("left", "right", "top", "bottom"):
            lab = QLabel(host)
            lab.setStyleSheet(_ORIENT_STYLE)
            lab.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            self.labels[side] = lab
        host.installEventFilter(self)

    def set_text(self, where: str, text: str) -> None:
        lab = self.labels[where]
        if lab.text() != text:
            lab.setText(text)
            lab.adjustSize()
            self.relayout()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if obj is self.host and event.type() in (QEvent.Type.Resize, QEvent.Type.Show):
            self.relayout()
        return False

    #: Least horizontal gap (px) between a left and a right corner text before the right one moves.
    GAP = 12

    @staticmethod
    def _shown(corner: QWidget) -> bool:
        """Whether a corner widget is shown: not hidden and, for a text, not empty."""
        return not corner.isHidden() and (not isinstance(corner, QLabel) or bool(corner.text()))

    def _collide(self, left: QLabel, right_x: int) -> bool:
        """Whether the left corner's text reaches within GAP of `right_x`."""
        return self._shown(left) and self.MARGIN + left.width() + self.GAP > right_x

    def relayout(self) -> None:
        """Pin the texts to their corners. In a view too narrow for both texts of an edge side by
        side, the right-hand one (and the warning badge) moves below (top) or above (bottom) the
        left-hand one instead of being drawn over it, as OHIF and Weasis viewports do."""
        w, h, m = self.host.width(), self.host.height(), self.MARGIN
        lab = self.labels
        tl, tr, bl, br = lab["tl"], lab["tr"], lab["bl"], lab["br"]
        tl.move(m, m)
        bl.move(m, h - bl.height() - m)
        below_tl = m + tl.height() + 2
        top_right_y = m
        badge = self.extra.get("badge")
        if badge is not None and badge.isVisible():
            badge.adjustSize()
            badge_x = w - badge.width() - m
            badge_y = below_tl if self._collide(tl, badge_x) else m
            badge.move(badge_x, badge_y)
            top_right_y = badge_y + badge.height() + 2
        tr_x = w - tr.width() - m
        if self._shown(tr) and self._collide(tl, tr_x):
            top_right_y = max(top_right_y, below_tl)
        tr.move(tr_x, top_right_y)
        br_x = w - br.width() - m
        br_y = h - br.height() - m
        if self._shown(br) and self._collide(bl, br_x):
            br_y = h - bl.height() - m - 2 - br.height()
        br.move(br_x, br_y)
        lab["left"].move(m, (h - lab["left"].height()) // 2)
        lab["right"].move(w - lab["right"].width() - m, (h - lab["right"].height()) // 2)
        # The orientation letters at the middle of the top and bottom edges step clear of a corner
        # text that reaches the middle (a long series description in a narrow view).
        top, bottom = lab["top"], lab["bottom"]
        top_x, bottom_x = (w - top.width()) // 2, (w - bottom.width()) // 2
        top_y = m
        for corner in (tl, tr, badge):
            if corner is not None and self._spans(corner, top_x, top.width()):
                top_y = max(top_y, corner.y() + corner.height() + 2)
        top.move(top_x, top_y)
        bottom_y = h - bottom.height() - m
        for corner in (bl, br):
            if self._spans(corner, bottom_x, bottom.width()):
                bottom_y = min(bottom_y, corner.y() - 2 - bottom.height())
        bottom.move(bottom_x, bottom_y)

    def _spans(self, corner: QWidget, x: int, width: int) -> bool:
        """Whether a shown corner widget covers any of the columns [x, x + width)."""
        return self._shown(corner) and corner.x() < x + width and x < corner.x() + corner.width()


class _SliceViewBase(QWidget):
    """A GraphicsView with one SliceViewBox, a greyscale ImageItem in mm coordinates, and corner annotations."""

    def __init__(self, state: ViewState, mouse: MouseBindings, parent: QWidget | None = None, invert_y: bool = True) -> None:
        super().__init__(parent)
        self.state = state
        self.graphics = pg.GraphicsView(self, background="k")
        self.graphics.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys go to the main window's shortcuts
        self.view_box = SliceViewBox(mouse, invertY=invert_y)
        self.graphics.setCentralItem(self.view_box)
        self.image_item = Rgb32ImageItem(axisOrder="row-major")
        self.image_item.setAutoDownsample(False)
        self.view_box.addItem(self.image_item)
        self.corners = _CornerOverlay(self.graphics)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.graphics)
        self.setMinimumSize(120, 120)

    def _set_pixel_size(self, row_mm: float, col_mm: float) -> None:
        """Image pixels -> view mm, so the aspect follows the spacing (set directly: works before any image)."""
        self.image_item.setTransform(QTransform.fromScale(col_mm, row_mm))

    def _set_display(self, rgb32: np.ndarray) -> None:
        # The window was applied by our LUT straight into screen pixels, so pyqtgraph
        # must never rescale: no auto-levels, no levels (no auto-levels while scrolling).
        self.image_item.setImage(rgb32, autoLevels=False, levels=None)

    def displayed_grey(self) -> np.ndarray | None:
        """The 8-bit grey values on screen, (rows, cols) in screen order (tests, screenshots)."""
        img = self.image_item.image
        return None if img is None else grey_of(img)

    def fit(self) -> None:
        rect = self.image_item.mapRectToParent(self.image_item.boundingRect())
        if rect.width() > 0 and rect.height() > 0:
            self.view_box.setRange(rect=rect, padding=0.0)


class AxialView(_SliceViewBase):
    """The main reading view: axial slices in radiological orientation, annotations, warnings and an RGBA overlay.

    Follows `ViewState` (slice, window, zoom/pan, overlay opacity, crosshair) and
    writes back what the reader does with the mouse. `sig_hover` reports the voxel
    and HU under the cursor (or None when the cursor leaves the image).
    """

    sig_hover = Signal(object)  # HoverInfo | None
    sig_warnings_requested = Signal()

    def __init__(self, state: ViewState, mouse: MouseBindings, parent: QWidget | None = None) -> None:
        super().__init__(state, mouse, parent, invert_y=True)
        self.volume: CTVolume | None = None
        self.orientation = Orientation()
        self._plane: np.ndarray | None = None  # (z, rows, cols) view of hu in screen order
        self._pix_mm = (1.0, 1.0)  # (row height, column width) on screen
        self._overlay_source: OverlaySource | None = None
        self._hover: HoverInfo | None = None
        self._last_mouse_view: QPointF | None = None
        self._applying_range = False
        self._crosshair_enabled = True
        self._shown_hu: np.ndarray | None = None  # the HU image on screen (the slab's, when one is on)
        self._slab_images = range(0)  # the slices the image on screen combines

        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(10)
        self.overlay_item.setOpacity(state.overlay_opacity)
        self.overlay_item.setVisible(False)
        self.view_box.addItem(self.overlay_item)
        pen = pg.mkPen(QColor(0, 200, 255, 110), width=1, style=Qt.PenStyle.DashLine)
        self.cross_v = pg.InfiniteLine(angle=90, pen=pen, movable=False)
        self.cross_h = pg.InfiniteLine(angle=0, pen=pen, movable=False)
        for line in (self.cross_v, self.cross_h):
            line.setZValue(20)
            line.setVisible(False)
            self.view_box.addItem(line, ignoreBounds=True)

        self.badge = QToolButton(self.graphics)
        self.badge.setStyleSheet(
            "QToolButton { color: black; background: #f0b400; border-radius: 3px; padding: 2px 6px; font-weight: bold; }"
        )
        self.badge.setCursor(Qt.CursorShape.PointingHandCursor)
        self.badge.setVisible(False)
        self.badge.clicked.connect(self.sig_warnings_requested)
        self.corners.extra["badge"] = self.badge
        for side, letter in (("left", "R"), ("right", "L"), ("top", "A"), ("bottom", "P")):
            self.corners.labels[side].setText(letter)
            self.corners.labels[side].adjustSize()

        state.sig_slice_changed.connect(self._on_slice_changed)
        state.sig_window_changed.connect(self._on_window_changed)
        state.sig_view_range_changed.connect(self._on_view_range_changed)
        state.sig_overlay_opacity_changed.connect(self._on_overlay_opacity_changed)
        state.sig_crosshair_changed.connect(self._on_crosshair_changed)
        state.sig_slab_changed.connect(self._on_slab_changed)
        self.view_box.sig_wheel_steps.connect(self._on_wheel_steps_changed)
        self.view_box.sig_window_drag.connect(self._on_window_drag_changed)
        self.view_box.sig_clicked.connect(self._on_click_changed)
        self.view_box.sig_user_range_changed.connect(self._on_user_range_changed)
        self.view_box.sigRangeChanged.connect(self._on_zoom_changed)
        self.graphics.viewport().installEventFilter(self)
        self._update_annotations()

    # -- public API ------------------------------------------------------------------
    def set_volume(self, volume: CTVolume | None) -> None:
        """Show `volume` (the state must already hold its slice count); None clears the view."""
        self.volume = volume
        self._hover = None
        self.set_overlay(None)
        if volume is None:
            self._plane = None
            self._shown_hu, self._slab_images = None, range(0)
            self.image_item.clear()
            self.badge.setVisible(False)
            self._update_annotations()
            return
        self.orientation = Orientation.for_direction(volume.direction)
        self._plane = self.orientation.plane(volume.hu)
        self._pix_mm = self.orientation.screen_spacing(volume.spacing[1], volume.spacing[2])
        self._set_pixel_size(*self._pix_mm)
        self.overlay_item.setTransform(QTransform.fromScale(self._pix_mm[1], self._pix_mm[0]))
        self._render_slice()
        n = len(volume.warnings)
        self.badge.setVisible(n > 0)
        if n:
            self.badge.setText(f"\u26a0 {n} warning{'s' if n > 1 else ''}")
            self.badge.setToolTip("\n".join(f"\u2022 {w}" for w in volume.warnings))
        self.fit()
        self.corners.relayout()
        self._update_annotations()

    def set_overlay(self, source: OverlaySource | None) -> None:
        """Draw an RGBA overlay over the axial image (findings, CAM heat maps, masks).

        `source` is a (z, y, x, 4) uint8 array in the volume's voxel order, or a callable
        slice_index -> (y, x, 4) uint8 array or None. It is oriented like the image,
        follows the slice and `ViewState.overlay_opacity`. None removes it.
        """
        if isinstance(source, np.ndarray):
            if self.volume is not None and source.shape != (*self.volume.shape, 4):
                raise ValueError(f"overlay must be (z, y, x, 4) = {(*self.volume.shape, 4)}, got {source.shape}")
            if source.dtype != np.uint8:
                raise ValueError(f"overlay must be uint8 RGBA, got {source.dtype}")
        self._overlay_source = source
        self._render_overlay()

    def hover_at_voxel(self, z: int, y: int, x: int) -> HoverInfo | None:
        if self.volume is None:
            return None
        nz, ny, nx = self.volume.shape
        if not (0 <= z < nz and 0 <= y < ny and 0 <= x < nx):
            return None
        return HoverInfo(z, y, x, float(self.volume.hu[z, y, x]))

    def view_pos_of_voxel(self, y: int, x: int) -> QPointF:
        """Centre of voxel (y, x) in view (mm) coordinates (tests and linked panels)."""
        assert self.volume is not None
        ny, nx = self.volume.shape[1:]
        row, col = self.orientation.voxel_to_screen(y + 0.5, x + 0.5, ny, nx)
        return QPointF(col * self._pix_mm[1], row * self._pix_mm[0])

    def voxel_to_view(self, y: float, x: float) -> QPointF:
        """Continuous voxel (y, x) of the current volume -> view (mm) coordinates."""
        assert self.volume is not None
        ny, nx = self.volume.shape[1:]
        row, col = self.orientation.voxel_to_screen(y, x, ny, nx)
        return QPointF(col * self._pix_mm[1], row * self._pix_mm[0])

    def view_to_voxel(self, p: QPointF) -> tuple[float, float]:
        """View (mm) coordinates -> continuous voxel (y, x) of the current volume; inverse of `voxel_to_view`."""
        assert self.volume is not None
        ny, nx = self.volume.shape[1:]
        return self.orientation.screen_to_voxel(p.y() / self._pix_mm[0], p.x() / self._pix_mm[1], ny, nx)

    @property
    def hover(self) -> HoverInfo | None:
        return self._hover

    # -- rendering -------------------------------------------------------------------
    def slab_images(self) -> range:
        """The slices the image on screen combines (only the slice shown unless a thick slab is on)."""
        return self._slab_images

    def _render_slice(self) -> None:
        if self._plane is None:
            return
        self._shown_hu, self._slab_images = slab_image(self._plane, self.state.slice_index, self.volume.spacing[0],
                                                       self.state.slab)
        self._set_display(apply_window_rgb32(self._shown_hu, self.state.window))
        self._render_overlay()

    def _render_overlay(self) -> None:
        src = self._overlay_source
        if src is None or self.volume is None:
            self.overlay_item.setVisible(False)
            return
        z = self.state.slice_index
        rgba = src[z] if isinstance(src, np.ndarray) else src(z)
        if rgba is None:
            self.overlay_item.setVisible(False)
            return
        rgba = np.ascontiguousarray(self.orientation.plane(np.moveaxis(rgba, -1, 0)).transpose(1, 2, 0))
        self.overlay_item.setImage(rgba, autoLevels=False, levels=None)
        self.overlay_item.setVisible(True)

    def _update_annotations(self) -> None:
        v = self.volume
        w = self.state.window
        if v is None:
            for corner in ("tl", "tr", "bl", "br"):
                self.corners.set_text(corner, "")
            return
        i = self.state.slice_index
        loc = float(v.slice_locations_mm[i])
        instances = v.metadata.get("instance_numbers") or ()
        inst = f"   Inst: {instances[i]}" if len(instances) == v.n_slices and instances[i] is not None else ""
        self.corners.set_text(
            "tl",
            f"{series_label(v)}\n"
            f"Im: {i + 1}/{v.n_slices}{inst}\n"
            f"Loc: {loc:.2f} mm\n"
            f"Thk: {v.spacing[0]:.2f} mm" + (f"   Tilt: {v.gantry_tilt_deg:+.1f}\u00b0" if abs(v.gantry_tilt_deg) > 0.01 else "")
            + (f"\n{self.state.slab.describe(self._slab_images)}" if len(self._slab_images) > 1 else ""),
        )
        study = str(v.metadata.get("study_description", "") or "")
        date = str(v.metadata.get("study_date", "") or "")
        head = "  ".join(t for t in (study, f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else date) if t)
        self.corners.set_text("tr", (head + "\n" if head else "") + f"{v.shape[2]} x {v.shape[1]}\n{v.spacing[2]:.3f} x {v.spacing[1]:.3f} mm")
        preset = f"  {w.name}" if w.name else ""
        self.corners.set_text("bl", f"W: {w.width:g} L: {w.level:g}{preset}\nZoom: {self._zoom_percent():.0f}%")
        h = self._hover
        slab = ""
        if h is not None and len(self._slab_images) > 1 and self._shown_hu is not None:
            row, col = self.orientation.voxel_to_screen(h.y + 0.5, h.x + 0.5, *v.shape[1:])
            shown = float(self._shown_hu[int(row), int(col)])
            slab = f" (slab {self.state.slab.short_name} {shown:.0f})"
        self.corners.set_text("br", "" if h is None else f"x: {h.x}  y: {h.y}\nHU: {h.hu:.0f}{slab}")

    def _zoom_percent(self) -> float:
        # 100 % = one image pixel per screen pixel, as OHIF and Weasis report zoom. Measured by
        # mapping one image column to the screen: ViewBox.viewPixelSize() is cached by pyqtgraph and
        # lagged a resize (it read 146 % while the image was drawn at 156 %).
        if self.volume is None:
            return 100.0
        o = self.view_box.mapViewToScene(QPointF(0.0, 0.0))
        p = self.view_box.mapViewToScene(QPointF(self._pix_mm[1], 0.0))
        screen_px = math.hypot(p.x() - o.x(), p.y() - o.y())
        return 100.0 * screen_px if screen_px > 0 else 100.0

    # -- slots: state -> view --------------------------------------------------------
    def _on_slab_changed(self, _slab: object) -> None:
        self._render_slice()
        self._update_annotations()

    def _on_slice_changed(self, _index: int) -> None:
        self._render_slice()
        if self._last_mouse_view is not None:
            self._update_hover(self._last_mouse_view)
        self._update_annotations()

    def _on_window_changed(self, _window: Window) -> None:
        self._render_slice()
        self._update_annotations()

    def _on_overlay_opacity_changed(self, value: float) -> None:
        self.overlay_item.setOpacity(value)

    def _on_view_range_changed(self, rng) -> None:
        self._applying_range = True
        try:
            if rng is None:
                self.fit()
            else:
                x0, x1, y0, y1 = rng
                self.view_box.setRange(xRange=(x0, x1), yRange=(y0, y1), padding=0.0)
        finally:
            self._applying_range = False

    def _on_crosshair_changed(self, xy) -> None:
        if xy is not None:
            self.cross_v.setPos(xy[0])
            self.cross_h.setPos(xy[1])
        self._show_crosshair()

    def set_crosshair_visible(self, visible: bool) -> None:
        """Reference lines where the reformats cut; drawn once the reader has clicked a point."""
        self._crosshair_enabled = visible
        self._show_crosshair()

    def _show_crosshair(self) -> None:
        on = self._crosshair_enabled and self.state.crosshair_mm is not None and self.volume is not None
        self.cross_v.setVisible(on)
        self.cross_h.setVisible(on)

    # -- slots: mouse -> state -------------------------------------------------------
    def _on_wheel_steps_changed(self, steps: int) -> None:
        self.state.step_slice(steps)

    def _on_window_drag_changed(self, dx: float, dy: float, fine: bool) -> None:
        # Cornerstone/OHIF convention: right = wider, down = higher level (darker image).
        w = self.state.window
        step = self.view_box.mouse.hu_per_pixel(w.width, fine)
        self.state.set_width_level(round(w.width + dx * step, 1), round(w.level + dy * step, 1))

    def _on_click_changed(self, x_mm: float, y_mm: float) -> None:
        self.state.set_crosshair_mm((x_mm, y_mm))

    def _on_user_range_changed(self) -> None:
        (x0, x1), (y0, y1) = self.view_box.viewRange()
        self.state.set_view_range((x0, x1, y0, y1))

    def _on_zoom_changed(self, *_args) -> None:
        if self.volume is not None:
            self._update_annotations()

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        if not self.view_box.sceneBoundingRect().contains(scene_pos):
            self._leave()
            return
        self._last_mouse_view = self.view_box.mapSceneToView(scene_pos)
        self._update_hover(self._last_mouse_view)

    def _update_hover(self, p: QPointF) -> None:
        hover = None
        if self.volume is not None:
            ny, nx = self.volume.shape[1:]
            yv, xv = self.orientation.screen_to_voxel(p.y() / self._pix_mm[0], p.x() / self._pix_mm[1], ny, nx)
            hover = self.hover_at_voxel(self.state.slice_index, int(np.floor(yv)), int(np.floor(xv)))
        if hover != self._hover:
            self._hover = hover
            self.sig_hover.emit(hover)
            self._update_annotations()

    def _leave(self) -> None:
        self._last_mouse_view = None
        if self._hover is not None:
            self._hover = None
            self.sig_hover.emit(None)
            self._update_annotations()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        # Read moves here rather than from the scene's sigMouseMoved, which pyqtgraph
        # rate-limits: the HU shown must be the one under the cursor where it stopped.
        kind = event.type()
        if kind == QEvent.Type.MouseMove:
            self._on_mouse_moved(self.graphics.mapToScene(event.position().toPoint()))
        elif kind == QEvent.Type.Leave:
            self._leave()
        return False


class ReformatView(_SliceViewBase):
    """A sagittal or coronal reformat of a regular (resampled) volume, with the current axial level marked."""

    PLANES = ("sagittal", "coronal")

    def __init__(self, plane: str, state: ViewState, mouse: MouseBindings, parent: QWidget | None = None) -> None:
        if plane not in self.PLANES:
            raise ValueError(f"reformat plane must be one of {self.PLANES}, got {plane!r}")
        # Superior at the top: row 0 (the inferior slice) is drawn at the bottom.
        super().__init__(state, mouse, parent, invert_y=False)
        # Thick slices are stretched ~10x vertically here: bilinear display avoids
        # staircase blocks (the axial view keeps true pixels, and its speed).
        self.graphics.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.plane_name = plane
        self.volume: CTVolume | None = None  # the regularized volume
        self.source: CTVolume | None = None  # the acquired volume the axial view shows
        self._vol_screen: np.ndarray | None = None
        self._pix_mm = (1.0, 1.0)
        self._cut = 0
        self.level_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(QColor(0, 200, 255, 150), width=1), movable=False)
        self.level_line.setZValue(20)
        self.view_box.addItem(self.level_line, ignoreBounds=True)
        letters = (("A", "P") if plane == "sagittal" else ("R", "L")) + ("S", "I")
        for side, letter in zip(("left", "right", "top", "bottom"), letters):
            self.corners.labels[side].setText(letter)
            self.corners.labels[side].adjustSize()
        self.corners.set_text("tl", plane.capitalize())
        self._slice_levels = np.zeros(0)
        self.view_box.sig_wheel_steps.connect(self._on_wheel_steps_changed)
        self.view_box.sig_window_drag.connect(self._on_window_drag_changed)
        self.view_box.sig_clicked.connect(self._on_click_changed)
        state.sig_window_changed.connect(self._on_window_changed)
        state.sig_slice_changed.connect(self._on_slice_changed)
        state.sig_crosshair_changed.connect(self._on_crosshair_changed)

    @property
    def cut_index(self) -> int:
        """Which column (sagittal) or row (coronal) of the screen-ordered regular volume is shown."""
        return self._cut

    def set_volume(self, regular: CTVolume | None, source: CTVolume | None = None) -> None:
        """Show `regular` (an `is_regular` volume); `source` is the acquired volume the axial view shows."""
        source = source if source is not None else regular
        self.volume, self.source = regular, source
        if regular is None:
            self._vol_screen = None
            self.image_item.clear()
            self.corners.set_text("bl", "")
            return
        orient = Orientation.for_direction(regular.direction)
        self._vol_screen = orient.plane(regular.hu)  # (z, rows, cols), anterior top / patient right left
        rows_mm, cols_mm = orient.screen_spacing(regular.spacing[1], regular.spacing[2])
        dz = regular.spacing[0]
        nz, rows, cols = self._vol_screen.shape
        across = rows_mm if self.plane_name == "sagittal" else cols_mm
        self._pix_mm = (dz, across)
        self._orient = orient
        self._set_pixel_size(dz, across)
        # Level (mm along the normal in the regular grid) of every acquired axial slice's centre.
        ny, nx = source.shape[1:]
        self._slice_levels = np.array([grid_point(regular, patient_point(source, i, ny / 2, nx / 2))[0] for i in range(source.n_slices)])
        self._cut = (cols if self.plane_name == "sagittal" else rows) // 2
        self._on_crosshair_changed(self.state.crosshair_mm)
        self._on_slice_changed(self.state.slice_index)
        self.fit()
        self.corners.set_text("bl", "resampled" if regular is not source else "")

    def _render(self) -> None:
        if self._vol_screen is None:
            return
        cut = self._vol_screen[:, :, self._cut] if self.plane_name == "sagittal" else self._vol_screen[:, self._cut, :]
        self._set_display(apply_window_rgb32(np.ascontiguousarray(cut), self.state.window))

    def _on_window_changed(self, _w: Window) -> None:
        self._render()

    def _on_window_drag_changed(self, dx: float, dy: float, fine: bool) -> None:
        w = self.state.window
        step = self.view_box.mouse.hu_per_pixel(w.width, fine)
        self.state.set_width_level(round(w.width + dx * step, 1), round(w.level + dy * step, 1))

    # -- geometry between the axial screen and the regular grid ----------------------------
    def _src_screen(self) -> tuple[Orientation, float, float]:
        src = self.source
        orient = Orientation.for_direction(src.direction)
        rows_mm, cols_mm = orient.screen_spacing(src.spacing[1], src.spacing[2])
        return orient, rows_mm, cols_mm

    def _source_point(self, x_mm: float, y_mm: float) -> tuple[float, float, float] | None:
        """(z mm, y, x) in the regular grid of the axial screen point (x_mm, y_mm) on the current slice."""
        src, reg = self.source, self.volume
        if src is None or reg is None:
            return None
        orient, rows_mm, cols_mm = self._src_screen()
        ny, nx = src.shape[1:]
        yv, xv = orient.screen_to_voxel(y_mm / rows_mm, x_mm / cols_mm, ny, nx)
        p = patient_point(src, self.state.slice_index, yv, xv)
        return grid_point(reg, p)

    def _axial_point(self, row: float, col: float) -> tuple[float, float]:
        """Axial screen mm (x, y) on the current slice of regular-grid screen position (row, col); inverse of `_source_point`."""
        src, reg = self.source, self.volume
        y, x = self._orient.screen_to_voxel(row, col, *reg.shape[1:])
        z_mm = self._slice_levels[self.state.slice_index]
        d = reg.direction
        p = reg.slice_origins[0] + (x - 0.5) * reg.spacing[2] * d[:, 0] + (y - 0.5) * reg.spacing[1] * d[:, 1] + z_mm * d[:, 2]
        q = p - src.slice_origins[self.state.slice_index]
        xs = float(q @ src.direction[:, 0]) / src.spacing[2] + 0.5
        ys = float(q @ src.direction[:, 1]) / src.spacing[1] + 0.5
        orient, rows_mm, cols_mm = self._src_screen()
        rs, cs = orient.voxel_to_screen(ys, xs, *src.shape[1:])
        return cs * cols_mm, rs * rows_mm

    def _crosshair_screen(self) -> tuple[float, float]:
        """The current crosshair as (row, col) in the regular grid's screen order (centre when unset)."""
        _, rows, cols = self._vol_screen.shape
        xy = self.state.crosshair_mm
        g = None if xy is None else self._source_point(*xy)
        if g is None:
            return rows / 2, cols / 2
        return self._orient.voxel_to_screen(g[1], g[2], *self.volume.shape[1:])

    # -- slots ---------------------------------------------------------------------------
    def _on_wheel_steps_changed(self, steps: int) -> None:
        """The wheel pages through this plane (as in OHIF and Slicer), moving the shared crosshair."""
        if self._vol_screen is None or self.source is None:
            return
        _, rows, cols = self._vol_screen.shape
        row, col = self._crosshair_screen()
        if self.plane_name == "sagittal":
            col = min(max(self._cut + steps, 0), cols - 1) + 0.5
        else:
            row = min(max(self._cut + steps, 0), rows - 1) + 0.5
        self.state.set_crosshair_mm(self._axial_point(row, col))

    def _on_click_changed(self, across_mm: float, up_mm: float) -> None:
        """A click picks the axial slice at that height and the crosshair along this plane."""
        if self._vol_screen is None or self.source is None:
            return
        z_mm = up_mm - self.volume.spacing[0] / 2
        self.state.set_slice_index(int(np.argmin(np.abs(self._slice_levels - z_mm))))
        row, col = self._crosshair_screen()
        if self.plane_name == "sagittal":
            row = across_mm / self._pix_mm[1]
        else:
            col = across_mm / self._pix_mm[1]
        self.state.set_crosshair_mm(self._axial_point(row, col))

    def _on_crosshair_changed(self, xy) -> None:
        if self._vol_screen is None:
            return
        _, rows, cols = self._vol_screen.shape
        n = cols if self.plane_name == "sagittal" else rows
        if xy is None:
            cut = n // 2
        else:
            row, col = self._crosshair_screen()
            cut = min(max(int(np.floor(col if self.plane_name == "sagittal" else row)), 0), n - 1)
        self._cut = cut
        self.corners.set_text("tr", f"{'Sag' if self.plane_name == 'sagittal' else 'Cor'}: {cut + 1}/{n}")
        self._render()

    def _on_slice_changed(self, _index: int) -> None:
        if self.source is None or self.volume is None:
            return
        # The axial slice's level in the regular grid. The grid's axes are the acquired
        # slices' own (de-sheared for tilt), so each axial slice is one horizontal line.
        self.level_line.setPos(self._slice_levels[self.state.slice_index] + self.volume.spacing[0] / 2)
