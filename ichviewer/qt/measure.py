"""Measurement tools on the axial view: a ruler (length in mm), an elliptical ROI (HU statistics),
a haematoma volume grown from one click, and the ABC/2 volume from two rulers, with the panel that
lists them.

`MeasurementLayer` draws the measurements of the current slice over an `AxialView` and turns
the reader's drags into `ichviewer.core.measurements.Measurement`s. It knows nothing about
storage: it emits `sig_added` / `sig_removed`, and the review database (`review_attach`) saves
them and loads a reader's earlier ones back with `add(..., emit=False)`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QPen, QTransform
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QDoubleSpinBox,
    QGraphicsEllipseItem,
    QGraphicsLineItem,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from scipy import ndimage

from ichviewer.core import measurements as meas
from ichviewer.core.measurements import Measurement, MeasurementError
from ichviewer.qt.display import series_label
from ichviewer.qt.settings import write_json_atomic
from ichviewer.qt.workers import WorkerJob

#: Line colours: yellow rulers and cyan ROIs, as in the reading-room viewers, magenta grown volumes;
#: the one being drawn is white.
KIND_COLOURS = {meas.LENGTH: "#ffd400", meas.ELLIPSE: "#33e0ff", meas.VOLUME: "#ff4dff"}
#: RGBA of a grown volume's voxels over the image: a faint fill, so the clot's own texture shows
#: through, and an opaque edge (its outermost voxels on the slice), so the reader can judge where
#: the boundary was drawn against the image.
VOLUME_FILL = (255, 77, 255, 55)
VOLUME_EDGE = (255, 77, 255, 235)
KIND_NAMES = {meas.LENGTH: "Length", meas.ELLIPSE: "ROI", meas.VOLUME: "Volume"}
_DRAWING_COLOUR = "#ffffff"
_UNSAVED_SUFFIX = "  (not saved)"
#: A drag shorter than this many screen pixels is a click, not a measurement.
MIN_DRAG_PIXELS = 3.0
#: What a volume says on the image and in the list while its region grows on the worker thread.
GROWING_TEXT = "counting\u2026"
#: File in the settings folder that keeps the reader's volume HU range (an anaemic patient's blood
#: is lower; the reader sets it once).
MEASURE_SETTINGS_FILE = "measure.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeSettings:
    """How the Volume tool grows: the HU range and whether connections narrower than NECK_MM are cut."""

    hu_range: tuple[float, float] = meas.DEFAULT_BLOOD_HU
    cut_necks: bool = True


def load_volume_settings(folder: str | Path | None) -> VolumeSettings:
    """The Volume tool's settings saved in `<folder>/measure.json`, else the defaults (a damaged file is logged)."""
    if folder is None or not (Path(folder) / MEASURE_SETTINGS_FILE).is_file():
        return VolumeSettings()
    path = Path(folder) / MEASURE_SETTINGS_FILE
    try:
        saved = json.loads(path.read_text("utf-8"))
        lo, hi = (float(v) for v in saved["volume_hu_range"])
        if not lo < hi:
            raise ValueError(f"low {lo:g} is not below high {hi:g}")
        cut = saved.get("volume_cut_necks", True)  # absent in files written before it existed
        if not isinstance(cut, bool):
            raise ValueError(f"volume_cut_necks must be true or false, not {cut!r}")
        return VolumeSettings((lo, hi), cut)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("%s: ignored (%s); using the defaults (%s HU, thin connections cut)", path, exc,
                    meas.DEFAULT_BLOOD_HU)
        return VolumeSettings()


def save_volume_settings(folder: str | Path, settings: VolumeSettings) -> None:
    path = Path(folder) / MEASURE_SETTINGS_FILE
    try:
        write_json_atomic(path, {"volume_hu_range": list(settings.hu_range), "volume_cut_necks": settings.cut_necks})
    except OSError as exc:  # a read-only settings folder costs the reader only this preference
        log.warning("could not save the Volume tool's settings to %s: %s", path, exc)


@dataclass(frozen=True)
class PendingMeasurement:
    """A measurement the store has not confirmed, on a series no longer on screen: kept until it is."""

    series_uid: str
    study_uid: str
    measurement: Measurement
    text: str


@dataclass(eq=False)
class RegionGrowth:
    """One volume measurement's region, grown on the layer's worker thread.

    `generation` ties it to the series it was asked for (a change of series makes it stale);
    `new` is a click of the reader's (saved once grown) rather than one loaded from the store;
    `describe` says the list text is written from the region once known (a new click, or a saved
    volume shown without its saved text). The worker fills `region` or `error`; the GUI thread
    applies it once (`applied`).
    """

    generation: int
    measurement: Measurement
    new: bool
    describe: bool
    region: meas.GrownRegion | None = None
    error: BaseException | None = None
    finished: bool = False
    applied: bool = False


def volume_seed(m: Measurement) -> tuple[int, int, int]:
    """The voxel (z, y, x) a volume measurement's click grows from."""
    return (m.slice_index, int(math.floor(m.start[0])), int(math.floor(m.start[1])))


def grow_measurement_region(hu: np.ndarray, spacing: tuple[float, float, float], m: Measurement) -> meas.GrownRegion:
    """The work of one growth (plain function, no Qt): the region `m`'s click counts, by its own method."""
    return meas.grow_region(hu, spacing, volume_seed(m), m.hu_range, cut_necks=bool(m.cut_necks))


def _cosmetic_pen(colour: str, width: float = 1.5) -> QPen:
    pen = QPen(QColor(colour))
    pen.setWidthF(width)
    pen.setCosmetic(True)  # the same thickness at every zoom
    return pen


class MeasurementLayer(QObject):
    """The measurements of the series on an `AxialView`, drawn on their own slice only.

    `set_tool(meas.LENGTH | meas.ELLIPSE | meas.VOLUME | None)`: None gives the crosshair button
    back to picking the reference point. Each finished drag (a click for VOLUME) adds a measurement
    and emits `sig_added(Measurement, text)`; `remove` emits `sig_removed(Measurement)`.
    `sig_changed` fires on any change of the list (the panel refreshes from it). Measurements the
    store has not confirmed are never dropped: on a change of series they wait in `pending()` and
    come back on screen with their series.

    A volume's region grows on a worker thread: the click shows at once, reading "counting...", and
    `sig_added` fires (the store saves it) when the region is known; a volume loaded from the store
    shows its stored text and draws its voxels when they are grown again. A click still growing
    when the series changes or the window closes is finished first (`settle_growths`), never lost.
    """

    sig_added = Signal(object, str)
    sig_removed = Signal(object)
    sig_changed = Signal()
    sig_tool_changed = Signal(object)  # kind | None
    sig_refused = Signal(str)  # a click that made no measurement, and why (status bar)
    _sig_grown = Signal(object)  # RegionGrowth, from the worker thread (queued)

    def __init__(self, axial: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.axial = axial
        self.state = axial.state
        self.tool: str | None = None
        self._items: list[Measurement] = []
        self._texts: dict[int, str] = {}  # id(Measurement) -> label text
        self._unsaved: set[int] = set()  # id(Measurement) of those the store has not confirmed
        self._graphics: list[Any] = []
        self._drawing: tuple[Any, ...] | None = None
        self._removed: list[Measurement] = []  # deleted by the reader on this series, newest last (undo)
        self._regions: dict[int, meas.GrownRegion] = {}  # id(Measurement) -> the voxels a volume counted
        self._pending: list[PendingMeasurement] = []
        # Volume regions grow on one worker thread (0.1-2 s each; GUIDE: long work off the GUI thread).
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._generation = 0  # bumped on each change of series: older growths are stale
        self._growing: dict[int, RegionGrowth] = {}  # id(Measurement) -> its growth not yet applied
        self._closed = False
        self._sig_grown.connect(self._apply_growth)
        self._series: tuple[str, str] = ("", "")  # (series UID, study UID) of the measurements on screen
        #: The HU range new volumes grow over (the panel sets it).
        self.hu_range: tuple[float, float] = meas.DEFAULT_BLOOD_HU
        self.cut_necks = True  # the Volume tool cuts connections narrower than meas.NECK_MM
        self.region_item = pg.ImageItem(axisOrder="row-major")
        self.region_item.setZValue(25)
        self.region_item.setVisible(False)
        axial.view_box.addItem(self.region_item, ignoreBounds=True)
        axial.view_box.sig_draw.connect(self._on_draw)
        self.state.sig_slice_changed.connect(lambda _i: self.redraw())

    # -- public API ------------------------------------------------------------------------
    @property
    def volume(self):
        return self.axial.volume

    def set_tool(self, kind: str | None) -> None:
        if kind is not None and kind not in meas.KINDS:
            raise MeasurementError(f"unknown measurement tool {kind!r}; expected one of {meas.KINDS}")
        self.tool = kind
        self.axial.view_box.drawing_tool = kind
        self.axial.graphics.viewport().setCursor(Qt.CursorShape.CrossCursor if kind else Qt.CursorShape.ArrowCursor)
        self.sig_tool_changed.emit(kind)

    def set_volume(self, volume: Any) -> None:
        """A new series is on screen: its measurements start empty (the store loads saved ones), except
        unsaved ones made on it before, which come back; the old series' unsaved ones wait in `pending()`."""
        self._cancel_drawing()
        self.settle_growths()  # a click still counting joins the unsaved ones below
        self._generation += 1
        self._growing = {}
        self._pool.clear()  # loaded volumes of the old series not started yet
        old_series, old_study = self._series
        self._pending += [PendingMeasurement(old_series, old_study, m, self._texts.get(id(m), "")) for m in self.unsaved()]
        self._series = (str(getattr(volume, "series_uid", "") or ""), str(getattr(volume, "study_uid", "") or ""))
        self._items = []
        self._texts = {}
        self._unsaved = set()
        self._removed = []
        self._regions = {}
        back = [p for p in self._pending if p.series_uid == self._series[0]]
        self._pending = [p for p in self._pending if p.series_uid != self._series[0]]
        for p in back:
            try:
                shown = self.add(p.measurement, emit=False, text=p.text)
                self._unsaved.add(id(shown))
            except MeasurementError:  # cannot happen for the series it was made on; keep it waiting
                self._pending.append(p)
        self.redraw()
        self.sig_changed.emit()

    def pending(self) -> list[PendingMeasurement]:
        """Unsaved measurements of series not on screen (the store saves them by series UID)."""
        return list(self._pending)

    def drop_pending(self, p: PendingMeasurement) -> None:
        """The store wrote `p`: it no longer waits."""
        self._pending = [q for q in self._pending if q is not p]

    def measurements(self, slice_index: int | None = None) -> list[Measurement]:
        return [m for m in self._items if slice_index is None or m.slice_index == slice_index]

    def text_of(self, m: Measurement) -> str:
        return self._texts.get(id(m), "")

    def is_saved(self, m: Measurement) -> bool:
        return id(m) not in self._unsaved

    def spacing_yx(self) -> tuple[float, float]:
        v = self.volume
        return (float(v.spacing[1]), float(v.spacing[2])) if v is not None else (1.0, 1.0)

    def describe(self, m: Measurement) -> str:
        v = self.volume
        if v is None:
            return ""
        if m.kind == meas.VOLUME:
            region = self._regions.get(id(m))
            return meas.describe_volume(region, m.hu_range) if region is not None else GROWING_TEXT
        return meas.describe(m, v.hu[m.slice_index], self.spacing_yx())

    def region(self, m: Measurement) -> meas.GrownRegion | None:
        """The voxels a volume measurement counted (None for rulers and ROIs, and while it grows)."""
        return self._regions.get(id(m))

    def growing(self) -> list[Measurement]:
        """Volumes whose region is still being grown (a new click is saved once it is known)."""
        return [g.measurement for g in self._growing.values()]

    # -- growing volume regions on the worker thread ----------------------------------------
    def _start_growth(self, m: Measurement, *, new: bool, describe: bool) -> None:
        v = self.volume
        growth = RegionGrowth(self._generation, m, new, describe)
        self._growing[id(m)] = growth
        hu, spacing = v.hu, tuple(float(s) for s in v.spacing)

        def work() -> meas.GrownRegion:
            return grow_measurement_region(hu, spacing, m)

        def done(region: meas.GrownRegion) -> None:  # worker thread: fill in, then queue to the GUI
            growth.region, growth.finished = region, True
            self._sig_grown.emit(growth)

        def fail(exc: BaseException) -> None:
            growth.error, growth.finished = exc, True
            self._sig_grown.emit(growth)

        self._pool.start(WorkerJob(work, done, fail))

    def _apply_growth(self, growth: RegionGrowth, *, emit: bool = True) -> None:
        """GUI thread: show a finished region, once; stale ones (another series, a deleted click) are dropped."""
        m = growth.measurement
        if growth.applied or self._closed or self._growing.get(id(m)) is not growth:
            return
        growth.applied = True
        del self._growing[id(m)]
        if growth.error is not None:
            why = growth.error if isinstance(growth.error, MeasurementError) else \
                f"the volume on image {m.slice_index + 1} could not be counted ({type(growth.error).__name__}: {growth.error})"
            log.warning("volume region failed: %s", why)
            if growth.new:  # the click made no measurement
                self.remove(m, emit=False)
            self.sig_refused.emit(str(why))
            return
        self._regions[id(m)] = growth.region
        if growth.describe:
            self._texts[id(m)] = self.describe(m)
        if growth.new:
            self._unsaved.add(id(m))
        self.redraw()
        self.sig_changed.emit()
        if growth.new and emit:
            self.sig_added.emit(m, self._texts[id(m)])

    def settle_growths(self, timeout_ms: int = 30000) -> None:
        """Finish the reader's clicks still growing, now (a change of series, closing): they become
        unsaved measurements of this series instead of being lost. Loaded volumes are not waited for."""
        new = [g for g in self._growing.values() if g.new]
        if not new:
            return
        self._pool.waitForDone(timeout_ms)
        for g in new:
            if g.finished:
                self._apply_growth(g, emit=False)
            else:  # still running after the timeout: the click is kept (and saved) without its figure
                log.warning("a volume click on image %d was still counting after %d ms", g.measurement.slice_index + 1, timeout_ms)
                self._growing.pop(id(g.measurement), None)
                self._texts[id(g.measurement)] = "volume not counted in time (counted again when its series is shown)"
                self._unsaved.add(id(g.measurement))

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Bounded: finish the reader's clicks still counting (so the store can save them), drop the rest."""
        self.settle_growths(timeout_ms)
        self._closed = True
        self._pool.clear()
        ok = bool(self._pool.waitForDone(timeout_ms))
        if not ok:
            log.warning("a volume region was still growing after %d ms at shutdown", timeout_ms)
        return ok

    def add(self, m: Measurement, *, emit: bool = True, text: str | None = None) -> Measurement:
        """Show `m` (on its slice); `emit=False` for measurements loaded from the store.

        Returns the measurement as shown: a new one (`emit`) is given its image's SOP Instance UID."""
        v = self.volume
        if v is None:
            raise MeasurementError("no series is open to measure on")
        if m.slice_index >= v.n_slices:
            raise MeasurementError(f"measurement on slice {m.slice_index + 1}, but the series has {v.n_slices} slices")
        if emit and m.sop_instance_uid is None:
            uids = v.metadata.get("sop_instance_uids") or ()
            if len(uids) == v.n_slices and uids[m.slice_index]:
                m = dataclasses.replace(m, sop_instance_uid=str(uids[m.slice_index]))
        growing = m.kind == meas.VOLUME  # its region is grown on the worker for every volume shown
        if growing:  # the only reasons a growth fails, checked before anything is shown
            meas.check_seed(v.hu, volume_seed(m), m.hu_range)
        self._items.append(m)
        self._texts[id(m)] = text if text is not None else self.describe(m)
        if growing:
            # A new click is unsaved and announced (`sig_added`) once its region is known.
            self._start_growth(m, new=emit, describe=text is None)
        elif emit:
            self._unsaved.add(id(m))
        self.redraw()
        self.sig_changed.emit()
        if emit and not growing:
            self.sig_added.emit(m, self._texts[id(m)])
        return m

    def mark_saved(self, m: Measurement, row_id: int) -> Measurement:
        """The store wrote `m` as row `row_id`: keep the id (deleting it later needs it)."""
        stored = m.with_id(row_id)
        for i, old in enumerate(self._items):
            if old is m:
                self._items[i] = stored
                self._texts[id(stored)] = self._texts.pop(id(m), "")
                if id(m) in self._regions:
                    self._regions[id(stored)] = self._regions.pop(id(m))
                if id(m) in self._growing:
                    self._growing[id(stored)] = self._growing.pop(id(m))
                    self._growing[id(stored)].measurement = stored
                self._unsaved.discard(id(m))
                break
        self.redraw()
        self.sig_changed.emit()
        return stored

    def unsaved(self) -> list[Measurement]:
        return [m for m in self._items if id(m) in self._unsaved]

    def remove(self, m: Measurement, *, emit: bool = True) -> None:
        """Take `m` off the screen; `emit=False` when the store is not to withdraw it (a reader change)."""
        for i, old in enumerate(self._items):
            if old is m:
                del self._items[i]
                self._texts.pop(id(m), None)
                self._unsaved.discard(id(m))
                self._regions.pop(id(m), None)
                self._growing.pop(id(m), None)  # its late region is dropped
                self.redraw()
                self.sig_changed.emit()
                if emit:
                    self._removed.append(m)
                    self.sig_removed.emit(m)
                return

    def restore_last_removed(self) -> Measurement | None:
        """Undo the reader's last delete on this series: the measurement comes back as a new one
        (stored again; the withdrawn row keeps its history)."""
        if not self._removed:
            return None
        old = self._removed.pop()
        return self.add(Measurement(old.kind, old.slice_index, old.start, old.end, hu_range=old.hu_range,
                                    cut_necks=old.cut_necks))

    def remove_nearest(self) -> Measurement | None:
        """Delete key: the measurement on this slice nearest the mouse, else the last drawn on it."""
        here = self.measurements(self.state.slice_index)
        if not here:
            return None
        target = here[-1]
        hover = self.axial.hover
        if hover is not None:
            y, x = hover.y + 0.5, hover.x + 0.5
            target = min(here, key=lambda m: _distance_to(m, y, x, self.spacing_yx()))
        self.remove(target)
        return target

    # -- drawing -----------------------------------------------------------------------------
    def redraw(self) -> None:
        vb = self.axial.view_box
        for item in self._graphics:
            vb.removeItem(item)
        self._graphics = []
        if self.volume is None:
            return
        for m in self.measurements(self.state.slice_index):
            text = self.text_of(m)
            region = self.region(m)
            if region is not None:  # a volume: the figure on the image, the detail in the list
                text = meas.format_ml(region.volume_ml) + ("  \u26a0 may have leaked" if region.touches_limit else "")
            elif m.kind == meas.VOLUME:  # its region is still growing on the worker thread
                text = GROWING_TEXT
            text += "" if self.is_saved(m) else _UNSAVED_SUFFIX
            self._graphics += self._make_items(m, KIND_COLOURS[m.kind], text)
        self._separate_labels([item for item in self._graphics if isinstance(item, pg.TextItem)])
        for item in self._graphics:
            vb.addItem(item, ignoreBounds=True)
        self._draw_regions()

    def _separate_labels(self, labels: list[Any]) -> None:
        """Move a label that would cover an earlier one: to its line's other end, else upwards, a label's
        height at a time. The two rulers of ABC/2 meet near the clot, and their figures covered each other."""
        vb = self.axial.view_box
        taken: list[QRectF] = []

        def screen_rect(label: Any, at: QPointF) -> QRectF:
            size = label.textItem.boundingRect().size()
            corner = vb.mapViewToScene(at)  # anchor (0, 1): the text's bottom-left corner is at the point
            return QRectF(corner.x(), corner.y() - size.height(), size.width(), size.height())

        for label in labels:
            def free(at: QPointF, label: Any = label) -> bool:
                return not any(screen_rect(label, at).intersects(r) for r in taken)

            places = [label.pos(), *getattr(label, "other_places", ())]
            chosen = next((p for p in places if free(p)), None)
            if chosen is None:
                step = vb.mapSceneToView(QPointF(0.0, 0.0)) - vb.mapSceneToView(QPointF(0.0, label.textItem.boundingRect().height()))
                chosen = places[0]
                for _ in range(8):
                    if free(chosen):
                        break
                    chosen = chosen + step
            label.setPos(chosen)
            taken.append(screen_rect(label, chosen))

    def _draw_regions(self) -> None:
        """Every grown volume's voxels on the slice shown, filled, oriented like the image."""
        v = self.volume
        z = self.state.slice_index
        masks = [r.slice_mask(z) for m in self._items if (r := self._regions.get(id(m))) is not None]
        masks = [mk for mk in masks if mk is not None]
        if v is None or not masks:
            self.region_item.setVisible(False)
            return
        union = np.logical_or.reduce(masks)
        rgba = np.zeros((*union.shape, 4), dtype=np.uint8)
        rgba[union] = VOLUME_FILL
        rgba[union & ~ndimage.binary_erosion(union)] = VOLUME_EDGE  # 4-connected edge
        rgba = np.ascontiguousarray(self.axial.orientation.plane(np.moveaxis(rgba, -1, 0)).transpose(1, 2, 0))
        row_mm, col_mm = self.axial.orientation.screen_spacing(float(v.spacing[1]), float(v.spacing[2]))
        self.region_item.setTransform(QTransform.fromScale(col_mm, row_mm))
        self.region_item.setImage(rgba, autoLevels=False, levels=None)
        self.region_item.setVisible(True)

    def _make_items(self, m: Measurement, colour: str, text: str | None) -> list[Any]:
        p0 = self.axial.voxel_to_view(*m.start)
        p1 = self.axial.voxel_to_view(*m.end)
        items: list[Any] = []
        if m.kind == meas.VOLUME:
            # the seed: a small cross; the voxels themselves are the region overlay
            r = 1.5 * self.axial.view_box.viewPixelSize()[0] * 4
            for dx, dy in ((r, 0.0), (0.0, r)):
                tick = QGraphicsLineItem(p0.x() - dx, p0.y() - dy, p0.x() + dx, p0.y() + dy)
                tick.setPen(_cosmetic_pen(colour))
                items.append(tick)
            anchor_at = p0
        elif m.kind == meas.LENGTH:
            line = QGraphicsLineItem(p0.x(), p0.y(), p1.x(), p1.y())
            line.setPen(_cosmetic_pen(colour))
            items.append(line)
            anchor_at = p1
        else:
            ellipse = QGraphicsEllipseItem(QRectF(p0, p1).normalized())
            ellipse.setPen(_cosmetic_pen(colour))
            items.append(ellipse)
            rect = QRectF(p0, p1).normalized()
            anchor_at = QPointF(rect.right(), rect.top())
        for item in items:
            item.setZValue(30)
        if text:
            label = pg.TextItem(text, color=colour, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 150))
            label.setPos(anchor_at)
            label.setZValue(31)
            label.other_places = (p0,) if m.kind == meas.LENGTH else ()  # where it may go if `anchor_at` is taken
            items.append(label)
        return items

    def _on_draw(self, start: QPointF, end: QPointF, finished: bool) -> None:
        v = self.volume
        if v is None or self.tool is None:
            return
        if self.tool == meas.VOLUME:
            if finished:  # a click (or the end of a drag) seeds the region
                seed = self.axial.view_to_voxel(end)
                try:
                    self.add(Measurement(meas.VOLUME, self.state.slice_index, seed, seed, hu_range=self.hu_range,
                                         cut_necks=self.cut_necks))
                except MeasurementError as exc:
                    self.sig_refused.emit(str(exc))
            return
        m = Measurement(self.tool, self.state.slice_index, self.axial.view_to_voxel(start), self.axial.view_to_voxel(end))
        self._cancel_drawing()
        if not finished:
            self._drawing = tuple(self._make_items(m, _DRAWING_COLOUR, self.describe(m)))
            for item in self._drawing:
                self.axial.view_box.addItem(item, ignoreBounds=True)
            return
        px = self.axial.view_box.viewPixelSize()
        drag_px = math.hypot((end.x() - start.x()) / max(px[0], 1e-9), (end.y() - start.y()) / max(px[1], 1e-9))
        if drag_px < MIN_DRAG_PIXELS:
            return
        self.add(m)

    def _cancel_drawing(self) -> None:
        if self._drawing:
            for item in self._drawing:
                self.axial.view_box.removeItem(item)
        self._drawing = None


def _distance_to(m: Measurement, y: float, x: float, spacing_yx: tuple[float, float]) -> float:
    """mm from (y, x) to a ruler's segment, an ROI's centre or a volume's seed."""
    sy, sx = spacing_yx
    if m.kind in (meas.ELLIPSE, meas.VOLUME):
        cy, cx = (m.start[0] + m.end[0]) / 2, (m.start[1] + m.end[1]) / 2
        return math.hypot((y - cy) * sy, (x - cx) * sx)
    a = np.array([m.start[0] * sy, m.start[1] * sx])
    b = np.array([m.end[0] * sy, m.end[1] * sx])
    p = np.array([y * sy, x * sx])
    ab = b - a
    t = 0.0 if not ab.any() else float(np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


class MeasurementsPanel(QWidget):
    """The series' measurements as a list (double-click goes to the slice), Delete, and ABC/2.

    ABC/2 (REFERENCE "Volume"; Kothari et al.'s bedside estimate): draw A, the bleed's largest
    diameter, and B perpendicular to it on the slice where it is largest, set C to the number of
    slices it spans; the panel multiplies by the slice thickness and halves.
    """

    def __init__(self, layer: MeasurementLayer, parent: QWidget | None = None, *,
                 settings_folder: str | Path | None = None) -> None:
        super().__init__(parent)
        self.layer = layer
        self.settings_folder = settings_folder
        saved = load_volume_settings(settings_folder)
        layer.hu_range, layer.cut_necks = saved.hu_range, saved.cut_necks
        self.tools_label = QLabel()
        self.tools_label.setWordWrap(True)
        self.list = QListWidget()
        self.list.setMinimumHeight(90)
        self.list.setWordWrap(True)
        self.list.setSpacing(2)  # an ROI's figures take two lines; never a sideways scroll
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the selected measurement")
        self.copy_button = QPushButton("Copy all")
        self.copy_button.setToolTip("Copy the measurements on this series as text, one per line, for a report")
        self.abc_slices = QDoubleSpinBox()
        self.abc_slices.setRange(0.5, 999.0)
        self.abc_slices.setSingleStep(0.5)
        self.abc_slices.setDecimals(1)
        self.abc_slices.setValue(1.0)
        self.abc_slices.setPrefix("C = ")
        self.abc_slices.setSuffix(" slices")
        self.abc_slices.setToolTip(
            "How many slices the bleed spans: 1 for each where it is at least 75 % of its largest area, 0.5 where it\n"
            "is 25-75 % (Kothari et al.); C is this times the slice thickness")
        self.abc_result = QLabel()
        self.abc_result.setWordWrap(True)
        self.abc_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        buttons = QHBoxLayout()
        buttons.addWidget(self.delete_button)
        buttons.addWidget(self.copy_button)
        buttons.addStretch(1)
        self.hu_low = QSpinBox()
        self.hu_high = QSpinBox()
        for box, value in ((self.hu_low, layer.hu_range[0]), (self.hu_high, layer.hu_range[1])):
            box.setRange(-1000, 3000)
            box.setValue(int(round(value)))
            box.setSuffix(" HU")
            box.valueChanged.connect(self._set_hu_range)
        self.hu_low.setToolTip("Volume: the lowest HU counted as blood (acute blood 50-90 HU; grey matter 35-45)")
        self.hu_high.setToolTip("Volume: the highest HU counted as blood (calcification starts near 100 HU)")
        hu_row = QHBoxLayout()
        hu_row.addWidget(QLabel("Volume grows over"))
        hu_row.addWidget(self.hu_low)
        hu_row.addWidget(QLabel("to"))
        hu_row.addWidget(self.hu_high)
        hu_row.addStretch(1)
        self.cut_necks_box = QCheckBox(f"Cut connections under {meas.NECK_MM:g} mm")
        self.cut_necks_box.setChecked(layer.cut_necks)
        self.cut_necks_box.setToolTip(
            f"Volume: spread only through blood-range parts at least {meas.NECK_MM:g} mm wide, then take back the edge,\n"
            "so a clot is not joined to the beam-hardened cortex along the skull or a venous sinus by a thin ribbon.\n"
            "Untick for thin collections (a thin subdural, subarachnoid blood); each volume keeps the method it was grown with.")
        self.cut_necks_box.toggled.connect(self._set_cut_necks)
        abc_row = QHBoxLayout()
        abc_row.addWidget(QLabel("ABC/2:"))
        abc_row.addWidget(self.abc_slices)
        abc_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tools_label)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        layout.addLayout(hu_row)
        layout.addWidget(self.cut_necks_box)
        layout.addLayout(abc_row)
        layout.addWidget(self.abc_result)

        self.delete_button.clicked.connect(self.delete_selected)
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        self.list.itemDoubleClicked.connect(self._go_to)
        self.abc_slices.valueChanged.connect(lambda _v: self.update_abc2())
        layer.sig_changed.connect(self.refresh)
        layer.sig_tool_changed.connect(lambda _k: self._show_tool())
        layer.state.sig_slice_changed.connect(lambda _i: self.update_abc2())
        self._show_tool()
        self.refresh()

    def _set_hu_range(self, _value: int = 0) -> None:
        lo, hi = self.hu_low.value(), self.hu_high.value()
        if lo < hi:
            self.layer.hu_range = (float(lo), float(hi))
            self.hu_low.setStyleSheet("")
            self.hu_high.setStyleSheet("")
            self._save_volume_settings()
        else:  # keep the last valid range; show the reader which box is wrong
            self.hu_low.setStyleSheet("color: #ff6b6b;")
            self.hu_high.setStyleSheet("color: #ff6b6b;")

    def _set_cut_necks(self, on: bool) -> None:
        self.layer.cut_necks = bool(on)
        self._save_volume_settings()

    def _save_volume_settings(self) -> None:
        if self.settings_folder is not None:
            save_volume_settings(self.settings_folder, VolumeSettings(self.layer.hu_range, self.layer.cut_necks))

    def _show_tool(self) -> None:
        names = {meas.LENGTH: "ruler", meas.ELLIPSE: "ROI (HU)", meas.VOLUME: "volume (click inside the haematoma)"}
        tool = self.layer.tool
        self.tools_label.setText(
            f"Drawing: <b>{names[tool]}</b> (Esc: back to the pointer)" if tool else
            "L: ruler, E: ROI (HU), then drag on the image; V: volume, then click a haematoma. "
            "Del: delete the nearest.")

    def refresh(self) -> None:
        self.list.clear()
        for m in sorted(self.layer.measurements(), key=lambda m: m.slice_index):
            text = self.layer.text_of(m).replace("\n", "\n        ")
            saved = "" if self.layer.is_saved(m) else _UNSAVED_SUFFIX
            kind = KIND_NAMES[m.kind]
            item = QListWidgetItem(f"Im {m.slice_index + 1}  {kind}: {text}{saved}")
            item.setData(Qt.ItemDataRole.UserRole, m)
            self.list.addItem(item)
        self.delete_button.setEnabled(self.list.count() > 0)
        self.copy_button.setEnabled(self.list.count() > 0)
        self.update_abc2()

    def report_text(self) -> str:
        """The series' measurements as plain text, by image, one per line (what Copy all puts on the
        clipboard): the reader's own figures for a report, not the AI's."""
        v = self.layer.volume
        if v is None or not self.layer.measurements():
            return ""
        lines = [f"Measurements, {series_label(v)}:"]
        for m in sorted(self.layer.measurements(), key=lambda m: m.slice_index):
            text = self.layer.text_of(m).replace("\n", "; ")
            lines.append(f"Image {m.slice_index + 1}: {KIND_NAMES[m.kind]} {text}"
                         + ("" if self.layer.is_saved(m) else " (not saved)"))
        return "\n".join(lines) + "\n"

    def copy_to_clipboard(self) -> str:
        text = self.report_text()
        if text:
            QApplication.clipboard().setText(text)
        return text

    def selected(self) -> Measurement | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def delete_selected(self) -> None:
        m = self.selected()
        if m is not None:
            self.layer.remove(m)

    def _go_to(self, item: QListWidgetItem) -> None:
        m = item.data(Qt.ItemDataRole.UserRole)
        if m is not None:
            self.layer.state.set_slice_index(m.slice_index)

    def update_abc2(self) -> None:
        v = self.layer.volume
        if v is None:
            self.abc_result.setText("")
            return
        lines = [m for m in self.layer.measurements(self.layer.state.slice_index) if m.kind == meas.LENGTH]
        try:
            estimate = meas.abc2_volume(lines, self.abc_slices.value(), float(v.spacing[0]), self.layer.spacing_yx())
        except MeasurementError as exc:
            self.abc_result.setText(f"<span style='color:#999'>{exc}</span>")
            return
        self.abc_result.setText(f"<b>{estimate.describe()}</b>")
