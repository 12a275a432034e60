"""ViewState: the single source of truth for what one viewer shows (slice, window, zoom/pan, overlay)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from ichviewer.core.slab import Slab
from ichviewer.core.windowing import Window, load_presets


class ViewState(QObject):
    """What the viewer shows, with one signal per field.

    Widgets write here and listen here (napari's layer model, Slicer's parameter
    node): a setter emits only when the value really changes, so a widget that
    applies a change while blocking its own signals cannot start a loop.

    Fields:
      n_slices         slices in the shown volume (0 when nothing is shown)
      slice_index      axial slice, ascending along the slice normal (0 = inferior)
      window           the display Window (name = preset name, or "" after a manual change)
      view_range       axial (x0, x1, y0, y1) in mm, or None for "fit to the view"
      overlay_opacity  0..1, for RGBA overlays on the axial view
      selected_label   a finding / label the panels agree is selected, or None
      crosshair_mm     (x, y) in mm in the axial image plane where the reformats cut, or None (centre)
      slab             the axial view's thick slab (`ichviewer.core.slab.Slab`; thickness 0 = off),
                       kept across series as a reading preference
    """

    sig_slice_changed = Signal(int)
    sig_n_slices_changed = Signal(int)
    sig_window_changed = Signal(object)
    sig_view_range_changed = Signal(object)
    sig_view_reset = Signal()
    sig_overlay_opacity_changed = Signal(float)
    sig_selected_label_changed = Signal(object)
    sig_crosshair_changed = Signal(object)
    sig_slab_changed = Signal(object)

    def __init__(self, parent: QObject | None = None, presets: tuple[Window, ...] | None = None) -> None:
        super().__init__(parent)
        self.presets: tuple[Window, ...] = tuple(presets) if presets is not None else load_presets()
        self._n_slices = 0
        self._slice_index = 0
        self._window = self.presets[0] if self.presets else Window(80, 40, "Brain")
        self._view_range: tuple[float, float, float, float] | None = None
        self._overlay_opacity = 0.5
        self._selected_label: object | None = None
        self._crosshair_mm: tuple[float, float] | None = None
        self._slab = Slab()

    # -- slices ------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        return self._n_slices

    def set_n_slices(self, n: int, slice_index: int | None = None) -> None:
        """A new volume: its slice count, and the slice to show (default: the middle one)."""
        if n < 0:
            raise ValueError(f"slice count must be >= 0, got {n}")
        self._n_slices = int(n)
        self.sig_n_slices_changed.emit(self._n_slices)
        target = (n // 2) if slice_index is None else slice_index
        self._slice_index = -1  # force the signal: a new volume always repaints
        self.set_slice_index(target)

    @property
    def slice_index(self) -> int:
        return self._slice_index

    def set_slice_index(self, index: int) -> None:
        if self._n_slices == 0:
            clamped = 0
        else:
            clamped = max(0, min(int(index), self._n_slices - 1))
        if clamped != self._slice_index:
            self._slice_index = clamped
            self.sig_slice_changed.emit(clamped)

    def step_slice(self, steps: int) -> None:
        self.set_slice_index(self._slice_index + int(steps))

    # -- window ------------------------------------------------------------------
    @property
    def window(self) -> Window:
        return self._window

    def set_window(self, window: Window) -> None:
        if window != self._window:
            self._window = window
            self.sig_window_changed.emit(window)

    def set_width_level(self, width: float, level: float) -> None:
        """A manual window: keeps the preset name only if the values still equal the preset's."""
        width = max(1.0, float(width))
        name = self._window.name if (width, level) == (self._window.width, self._window.level) else ""
        self.set_window(Window(width, float(level), name))

    def choose_preset(self, number: int) -> Window | None:
        """Preset `number` (1-based, as the keys 1-9); None if there is no such preset."""
        if not 1 <= number <= len(self.presets):
            return None
        self.set_window(self.presets[number - 1])
        return self.presets[number - 1]

    # -- zoom and pan --------------------------------------------------------------
    @property
    def view_range(self) -> tuple[float, float, float, float] | None:
        return self._view_range

    def set_view_range(self, rng: tuple[float, float, float, float] | None) -> None:
        rng = None if rng is None else tuple(float(v) for v in rng)  # type: ignore[assignment]
        if rng != self._view_range:
            self._view_range = rng
            self.sig_view_range_changed.emit(rng)

    def reset_view(self) -> None:
        """Space: fit the image again and forget pan/zoom (the window is kept, as in OHIF)."""
        self._view_range = None
        self.sig_view_reset.emit()
        self.sig_view_range_changed.emit(None)

    # -- overlays and selection ----------------------------------------------------
    @property
    def overlay_opacity(self) -> float:
        return self._overlay_opacity

    def set_overlay_opacity(self, value: float) -> None:
        value = min(1.0, max(0.0, float(value)))
        if value != self._overlay_opacity:
            self._overlay_opacity = value
            self.sig_overlay_opacity_changed.emit(value)

    @property
    def selected_label(self) -> object | None:
        return self._selected_label

    def set_selected_label(self, label: object | None) -> None:
        if label != self._selected_label:
            self._selected_label = label
            self.sig_selected_label_changed.emit(label)

    @property
    def crosshair_mm(self) -> tuple[float, float] | None:
        return self._crosshair_mm

    def set_crosshair_mm(self, xy: tuple[float, float] | None) -> None:
        xy = None if xy is None else (float(xy[0]), float(xy[1]))
        if xy != self._crosshair_mm:
            self._crosshair_mm = xy
            self.sig_crosshair_changed.emit(xy)

    # -- thick slab ------------------------------------------------------------------
    @property
    def slab(self) -> Slab:
        return self._slab

    def set_slab(self, slab: Slab) -> None:
        if slab != self._slab:
            self._slab = slab
            self.sig_slab_changed.emit(slab)
