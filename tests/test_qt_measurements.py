"""Rulers, ROIs and ABC/2 on the axial view of a real series, drawn with the mouse, saved in the review database."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from test_qt_viewer import open_and_wait, send_drag, send_move, two_series_study, viewport_pos

from ichviewer.core import measurements as meas
from ichviewer.core.measurements import Measurement
from ichviewer.qt.app import build_workstation
from ichviewer.qt.display import series_label
from ichviewer.qt.main_window import MainWindow
from ichviewer.qt.measure import VOLUME_EDGE, VOLUME_FILL
from ichviewer.review import ReviewStore

pytestmark = pytest.mark.gui
LEFT = Qt.MouseButton.LeftButton


def _show(qtbot, w: MainWindow) -> MainWindow:
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w)
    return w


@pytest.fixture
def viewer(qtbot, settings_dir) -> MainWindow:
    return _show(qtbot, MainWindow(settings_dir))


def _labels_on_view(w: MainWindow) -> list[str]:
    import pyqtgraph as pg

    return [item.textItem.toPlainText() for item in w.axial.view_box.childGroup.childItems() if isinstance(item, pg.TextItem)]


def test_ruler_drawn_with_the_mouse_measures_millimetres_and_shows_on_its_slice_only(qtbot, viewer, ct_data_dir):
    w = viewer
    v = open_and_wait(qtbot, w, ct_data_dir / "ge-head-tilted")
    z = w.state.slice_index
    QTest.keyClick(w, Qt.Key.Key_L)
    assert w.measurements.tool == meas.LENGTH and w.actions_by_name["tool_length"].isChecked()
    start, end = viewport_pos(w.axial, 100, 120), viewport_pos(w.axial, 100, 320)
    with qtbot.waitSignal(w.measurements.sig_added, timeout=5000) as blocker:
        send_drag(w.axial, LEFT, start, end)
    m, text = blocker.args
    # The drag's ends land within a screen pixel of the voxel centres it started and ended on.
    tolerance = 2 * w.axial.view_box.viewPixelSize()[0]
    assert m.slice_index == z
    assert abs(meas.length_mm(m.start, m.end, (v.spacing[1], v.spacing[2])) - 200 * v.spacing[2]) < tolerance + 1e-6
    assert text.endswith(" mm") and abs(float(text.split()[0]) - 200 * v.spacing[2]) < tolerance + 0.05
    assert w.state.crosshair_mm is None  # measuring did not move the reference point
    assert any(t.startswith(text) for t in _labels_on_view(w))
    assert w.measurements_panel.list.count() == 1 and f"Im {z + 1}" in w.measurements_panel.list.item(0).text()

    QTest.keyClick(w, Qt.Key.Key_Down)
    assert w.state.slice_index != z and _labels_on_view(w) == []
    QTest.keyClick(w, Qt.Key.Key_Up)
    assert any(t.startswith(text) for t in _labels_on_view(w))

    # A click without a drag is not a measurement.
    send_drag(w.axial, LEFT, start, start + QPoint(1, 0), steps=1)
    assert len(w.measurements.measurements()) == 1

    # Esc gives the left button back to the reference point.
    QTest.keyClick(w, Qt.Key.Key_Escape)
    assert w.measurements.tool is None and w.actions_by_name["tool_pointer"].isChecked()
    QTest.mouseClick(w.axial.graphics.viewport(), LEFT, Qt.KeyboardModifier.NoModifier, start)
    qtbot.waitUntil(lambda: w.state.crosshair_mm is not None)
    assert len(w.measurements.measurements()) == 1


def test_roi_reports_the_hu_of_the_voxels_inside_and_delete_removes_the_nearest(qtbot, viewer, ct_data_dir):
    w = viewer
    v = open_and_wait(qtbot, w, ct_data_dir / "ge-head-tilted")
    z = w.state.slice_index
    QTest.keyClick(w, Qt.Key.Key_E)
    with qtbot.waitSignal(w.measurements.sig_added, timeout=5000) as blocker:
        send_drag(w.axial, LEFT, viewport_pos(w.axial, 230, 230), viewport_pos(w.axial, 270, 290))
    roi, text = blocker.args
    assert roi.kind == meas.ELLIPSE
    # The figures are those of the real voxels whose centres fall in the drawn ellipse (brute force here).
    (y0, x0), (y1, x1) = roi.start, roi.end
    cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, abs(y1 - y0) / 2, abs(x1 - x0) / 2
    inside = [float(v.hu[z, y, x]) for y in range(v.shape[1]) for x in range(v.shape[2])
              if ((y + 0.5 - cy) / ry) ** 2 + ((x + 0.5 - cx) / rx) ** 2 <= 1.0]
    assert len(inside) > 100
    assert f"mean {np.mean(inside):.0f} \u00b1 {np.std(inside, ddof=1):.0f} HU" in text
    assert f"min {min(inside):.0f}, max {max(inside):.0f}" in text and f"{len(inside)} px" in text

    QTest.keyClick(w, Qt.Key.Key_L)
    with qtbot.waitSignal(w.measurements.sig_added, timeout=5000):
        send_drag(w.axial, LEFT, viewport_pos(w.axial, 60, 60), viewport_pos(w.axial, 60, 160))
    assert [m.kind for m in w.measurements.measurements(z)] == [meas.ELLIPSE, meas.LENGTH]
    # Copy all: the reader's figures as lines for a report (the ROI's two lines joined on one)
    panel = w.measurements_panel
    assert panel.copy_button.isEnabled()
    panel.copy_button.click()
    copied = QApplication.clipboard().text()
    ruler_text = w.measurements.text_of(w.measurements.measurements(z)[1])
    assert copied.splitlines() == [f"Measurements, {series_label(v)}:",
                                   f"Image {z + 1}: ROI {text.replace(chr(10), '; ')} (not saved)",
                                   f"Image {z + 1}: Length {ruler_text} (not saved)"]  # no database in this viewer
    # Del with the mouse over the ROI removes the ROI, not the ruler drawn after it.
    send_move(w.axial, viewport_pos(w.axial, 250, 260))
    qtbot.waitUntil(lambda: w.axial.hover is not None)
    with qtbot.waitSignal(w.measurements.sig_removed, timeout=5000) as removed:
        QTest.keyClick(w, Qt.Key.Key_Delete)
    assert removed.args[0].kind == meas.ELLIPSE
    assert [m.kind for m in w.measurements.measurements()] == [meas.LENGTH]


def test_abc2_from_two_perpendicular_rulers_and_the_slice_count(qtbot, viewer, ct_data_dir):
    w = viewer
    v = open_and_wait(qtbot, w, ct_data_dir / "ge-head-tilted")
    z = w.state.slice_index
    panel = w.measurements_panel
    sy, sx = float(v.spacing[1]), float(v.spacing[2])
    w.measurements.add(Measurement(meas.LENGTH, z, (200.0, 150.0), (200.0, 250.0)))  # A: 100 columns
    assert "two length measurements" in panel.abc_result.text()
    w.measurements.add(Measurement(meas.LENGTH, z, (170.0, 200.0), (230.0, 200.0)))  # B: 60 rows, perpendicular
    panel.abc_slices.setValue(4.5)
    a_cm, b_cm, c_cm = 100 * sx / 10, 60 * sy / 10, 4.5 * float(v.spacing[0]) / 10
    assert f"= {a_cm * b_cm * c_cm / 2:.1f} mL" in panel.abc_result.text()
    QTest.keyClick(w, Qt.Key.Key_Down)  # ABC/2 is about the slice on screen
    assert "this slice has 0" in panel.abc_result.text()


def test_measurements_are_saved_per_reader_and_come_back_after_a_restart(qtbot, settings_dir, ct_data_dir, tmp_path):
    db = tmp_path / "review.sqlite"
    series = ct_data_dir / "ge-head-tilted"
    w = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ann", "resident")))
    v = open_and_wait(qtbot, w, series)
    QTest.keyClick(w, Qt.Key.Key_L)
    with qtbot.waitSignal(w.measurements.sig_changed, timeout=5000):
        send_drag(w.axial, LEFT, viewport_pos(w.axial, 100, 120), viewport_pos(w.axial, 100, 320))
    qtbot.waitUntil(lambda: w.measurements.unsaved() == [] and len(w.measurements.measurements()) == 1)
    QTest.keyClick(w, Qt.Key.Key_E)
    send_drag(w.axial, LEFT, viewport_pos(w.axial, 230, 230), viewport_pos(w.axial, 270, 290))
    qtbot.waitUntil(lambda: len(w.measurements.measurements()) == 2 and not w.measurements.unsaved())
    ruler, roi = w.measurements.measurements()
    roi_text = w.measurements.text_of(roi)
    w.measurements_panel.list.setCurrentRow([m.kind for m in w.measurements_panel.layer.measurements()].index(meas.LENGTH))
    w.measurements_panel.delete_selected()
    # On disk before the window closes: the ROI, and the ruler as withdrawn.
    with ReviewStore(db) as store:
        assert [(m.kind, text) for m, text in store.measurements(v.series_uid, "ann")] == [(meas.ELLIPSE, roi_text)]
        assert len(store.measurements(v.series_uid, include_withdrawn=True)) == 2
    w.close()

    # Another reader does not see ann's ROI; ann does, after a restart.
    w2 = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ben", "attending")))
    open_and_wait(qtbot, w2, series)
    assert w2.measurements.measurements() == []
    w2.close()
    w3 = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ann", "resident")))
    open_and_wait(qtbot, w3, series)
    [(back)] = w3.measurements.measurements()
    assert back.kind == meas.ELLIPSE and w3.measurements.text_of(back) == roi_text
    assert back.start == pytest.approx(roi.start) and back.end == pytest.approx(roi.end)
    assert w3.measurements.is_saved(back)


def test_a_measurement_that_cannot_be_saved_stays_on_screen_and_is_saved_later(qtbot, settings_dir, ct_data_dir, tmp_path):
    db = tmp_path / "review.sqlite"
    w = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ann", "resident")))
    v = open_and_wait(qtbot, w, ct_data_dir / "ge-head-tilted")
    z = w.state.slice_index
    review = w.review
    # Another process holds the write lock: the save times out instead of waiting forever.
    review.store.conn.execute("PRAGMA busy_timeout = 100")
    blocker_store = ReviewStore(db)
    blocker_store.conn.execute("BEGIN IMMEDIATE")
    errors = []
    w.sig_error.connect(errors.append)
    try:
        w.measurements.add(Measurement(meas.LENGTH, z, (10.0, 10.0), (10.0, 60.0)))
        assert errors and str(db) in errors[-1] and "not saved" in errors[-1]
        [m] = w.measurements.unsaved()
        assert "(not saved)" in w.measurements_panel.list.item(0).text()
    finally:
        blocker_store.conn.execute("ROLLBACK")
        blocker_store.close()
    w.measurements.add(Measurement(meas.LENGTH, z, (20.0, 10.0), (20.0, 60.0)))
    assert w.measurements.unsaved() == []
    with ReviewStore(db) as store:
        assert len(store.measurements(v.series_uid, "ann")) == 2
    assert math.isclose(float(w.measurements.text_of(w.measurements.measurements()[0]).split()[0]), 50 * v.spacing[2], abs_tol=0.05)


def test_a_deleted_measurement_comes_back_with_ctrl_z_and_the_toolbar_chooses_tools(qtbot, settings_dir, ct_data_dir, tmp_path):
    db = tmp_path / "review.sqlite"
    w = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ann", "resident")))
    v = open_and_wait(qtbot, w, ct_data_dir / "ge-head-tilted")
    z = w.state.slice_index
    ruler_button = w.tool_buttons["tool_length"]
    assert ruler_button.text() == "Ruler" and "(L)" in ruler_button.toolTip()
    QTest.mouseClick(ruler_button, LEFT)
    assert w.measurements.tool == meas.LENGTH
    assert not w.actions_by_name["tool_pointer"].isChecked() and not w.actions_by_name["tool_ellipse"].isChecked()
    with qtbot.waitSignal(w.measurements.sig_added, timeout=5000):
        send_drag(w.axial, LEFT, viewport_pos(w.axial, 100, 120), viewport_pos(w.axial, 100, 320))
    [ruler] = w.measurements.measurements()
    text = w.measurements.text_of(ruler)
    QTest.keyClick(w, Qt.Key.Key_Delete)
    assert w.measurements.measurements() == []
    QTest.keyClick(w, Qt.Key.Key_Down)
    QTest.keyClick(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    [back] = w.measurements.measurements()
    assert w.state.slice_index == z  # the view goes to where it was
    assert (back.start, back.end, w.measurements.text_of(back)) == (ruler.start, ruler.end, text)
    with ReviewStore(db) as store:
        assert [(m.start, m.end) for m, _t in store.measurements(v.series_uid, "ann")] == [(ruler.start, ruler.end)]
        assert len(store.measurements(v.series_uid, include_withdrawn=True)) == 2  # the withdrawn row stays
    QTest.keyClick(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # nothing more to bring back
    assert len(w.measurements.measurements()) == 1
    QTest.mouseClick(w.tool_buttons["tool_pointer"], LEFT)
    assert w.measurements.tool is None


def test_a_click_with_the_volume_tool_counts_the_haematoma_and_shows_its_voxels(qtbot, settings_dir, tmp_path):
    from ichviewer.core.phantom import generate_case
    from ichviewer.io.writer import write_ct_series

    case = generate_case(5, subtype="IPH", volume_ml=5.0, matrix=256)
    write_ct_series(case.volume, tmp_path / "iph", series_description="PHANTOM IPH 5 mL")
    db = tmp_path / "review.sqlite"
    truth = case.masks["IPH"]
    z, y, x = (int(round(v)) for v in np.argwhere(truth).mean(axis=0))
    w = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ann", "resident")))
    v = open_and_wait(qtbot, w, tmp_path / "iph")
    w.state.set_slice_index(z)
    QTest.keyClick(w, Qt.Key.Key_V)
    assert w.measurements.tool == meas.VOLUME and w.tool_buttons["tool_volume"].isChecked()
    vp = w.axial.graphics.viewport()
    # A click in normal brain makes no measurement and says why.
    QTest.mouseClick(vp, LEFT, Qt.KeyboardModifier.NoModifier, viewport_pos(w.axial, y, x - 40))
    qtbot.waitUntil(lambda: "No volume:" in w.statusBar().currentMessage())
    assert "outside the blood range 50 to 100 HU" in w.statusBar().currentMessage()
    assert w.measurements.measurements() == []
    with qtbot.waitSignal(w.measurements.sig_added, timeout=5000) as blocker:
        QTest.mouseClick(vp, LEFT, Qt.KeyboardModifier.NoModifier, viewport_pos(w.axial, y, x))
    _drawn, text = blocker.args
    [m] = w.measurements.measurements()  # as stored (with its row id)
    region = w.measurements.region(m)
    assert m.kind == meas.VOLUME and m.hu_range == meas.DEFAULT_BLOOD_HU and m.cut_necks
    assert region.volume_ml == pytest.approx(case.volume_ml["IPH"], rel=0.03) and region.connections == "cut"
    assert text.startswith(f"{meas.format_ml(region.volume_ml)} (") and f"Volume: {text}" in w.measurements_panel.list.item(0).text()
    assert meas.format_ml(region.volume_ml) in _labels_on_view(w)  # the figure on the image, the detail in the list
    # The counted voxels are drawn over every slice they are on, and nowhere else.
    item = w.measurements.region_item
    assert item.isVisible() and int((item.image[..., 3] > 0).sum()) == int(region.slice_mask(z).sum())
    # a faint fill inside (the clot shows through) and an opaque edge to judge the boundary by
    alphas = set(np.unique(item.image[..., 3]).tolist())
    assert alphas == {0, VOLUME_FILL[3], VOLUME_EDGE[3]} and VOLUME_FILL[3] < 100 < VOLUME_EDGE[3]
    outside = next(i for i in range(v.n_slices) if region.slice_mask(i) is None)
    w.state.set_slice_index(outside)
    assert not item.isVisible()
    qtbot.waitUntil(lambda: not w.measurements.unsaved())
    w.close()

    w2 = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ann", "resident")))
    open_and_wait(qtbot, w2, tmp_path / "iph")
    [back] = w2.measurements.measurements()
    assert back.kind == meas.VOLUME and back.hu_range == meas.DEFAULT_BLOOD_HU
    qtbot.waitUntil(lambda: not w2.measurements.growing())  # grown again on the worker thread
    assert w2.measurements.text_of(back) == text and w2.measurements.region(back).n_voxels == region.n_voxels
    w2.state.set_slice_index(z)
    assert w2.measurements.region_item.isVisible()
    # One grown with thin connections followed keeps that method when it is shown again, whatever
    # the panel is set to now.
    w2.measurements_panel.cut_necks_box.setChecked(False)
    with qtbot.waitSignal(w2.measurements.sig_added, timeout=5000):
        QTest.keyClick(w2, Qt.Key.Key_V)
        QTest.mouseClick(w2.axial.graphics.viewport(), LEFT, Qt.KeyboardModifier.NoModifier, viewport_pos(w2.axial, y, x))
    followed = w2.measurements.measurements()[-1]
    assert followed.cut_necks is False and "thin connections followed" in w2.measurements.text_of(followed)
    qtbot.waitUntil(lambda: not w2.measurements.unsaved())
    w2.measurements_panel.cut_necks_box.setChecked(True)
    w2.close()
    w3 = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ann", "resident")))
    open_and_wait(qtbot, w3, tmp_path / "iph")
    assert [m.cut_necks for m in w3.measurements.measurements()] == [True, False]
    qtbot.waitUntil(lambda: not w3.measurements.growing())
    assert w3.measurements.region(w3.measurements.measurements()[-1]).connections == "all"


def _ruler_saved_by_ann(db: Path, v: Any, *, pixel_sha256: str | None = None) -> ReviewStore:
    """A review file where reader 'ann' saved a 19.5 mm ruler on image 4 of `v` (open: add more)."""
    store = ReviewStore(db)
    ann = store.add_reader("ann", "resident")
    if pixel_sha256 is not None:
        store.add_study(v.series_uid, v.study_uid, pixel_sha256=pixel_sha256)
    store.add_measurement(ann, v.series_uid, Measurement(meas.LENGTH, 3, (10.0, 10.0), (10.0, 50.0)), "19.5 mm")
    return store


def _open_as_ann(qtbot, settings_dir: Path, db: Path, series: Path) -> tuple[Any, list[str]]:
    """A workstation reading as 'ann' on `db` with `series` open, and the errors it reported."""
    w = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ann", "resident")))
    errors: list[str] = []
    w.sig_error.connect(errors.append)
    open_and_wait(qtbot, w, series)
    return w, errors


def test_a_saved_measurement_that_no_longer_fits_the_series_is_named_and_the_others_still_show(qtbot, settings_dir, ct_data_dir, tmp_path):
    db = tmp_path / "review.sqlite"
    series = ct_data_dir / "ge-head-tilted"
    from ichviewer.io import load_volume

    v = load_volume(series)
    with _ruler_saved_by_ann(db, v) as store:
        # written by a copy of the series with more slices, or with different pixels under the seed
        store.add_measurement("ann", v.series_uid, Measurement(meas.LENGTH, v.n_slices + 5, (1.0, 1.0), (2.0, 2.0)), "0.7 mm")
        store.add_measurement("ann", v.series_uid, Measurement(meas.VOLUME, 3, (5.0, 5.0), (5.0, 5.0), hu_range=(50.0, 100.0)),
                              "12.0 mL (...)")
    w, errors = _open_as_ann(qtbot, settings_dir, db, series)
    assert [(m.kind, w.measurements.text_of(m)) for m in w.measurements.measurements()] == [(meas.LENGTH, "19.5 mm")]
    assert errors and "2 saved measurement(s)" in errors[-1] and str(db) in errors[-1]
    assert f"length on image {v.n_slices + 6} (0.7 mm)" in errors[-1] and "volume on image 4 (12.0 mL (...))" in errors[-1]


def test_saved_measurements_made_on_other_pixels_of_the_same_series_uid_are_not_placed(qtbot, settings_dir, ct_data_dir, tmp_path):
    # A copy with a slice missing (or a re-export) keeps the series UID: its slice indices and voxels
    # need not match the ones the measurements were made on, which the recorded pixel hash tells.
    from ichviewer.io import load_volume

    db = tmp_path / "review.sqlite"
    series = ct_data_dir / "ge-head-tilted"
    v = load_volume(series)
    _ruler_saved_by_ann(db, v, pixel_sha256="0" * 64).close()  # the hash recorded from other pixels
    w, errors = _open_as_ann(qtbot, settings_dir, db, series)
    assert w.measurements.measurements() == []
    assert errors and "1 saved measurement(s)" in errors[-1] and "different pixel data" in errors[-1]
    with ReviewStore(db) as store:
        assert len(store.measurements(v.series_uid, "ann")) == 1  # still there
    # recorded from these very pixels: shown
    same = tmp_path / "same.sqlite"
    _ruler_saved_by_ann(same, v, pixel_sha256=v.pixel_sha256()).close()
    w2, _errors = _open_as_ann(qtbot, settings_dir, same, series)
    assert [w2.measurements.text_of(m) for m in w2.measurements.measurements()] == ["19.5 mm"]


def test_a_saved_measurement_follows_its_image_into_a_copy_with_a_slice_missing(qtbot, settings_dir, ct_data_dir, tmp_path):
    import shutil

    from ichviewer.io import load_volume

    db = tmp_path / "review.sqlite"
    series = ct_data_dir / "ge-head-tilted"
    v = load_volume(series)
    w, _errors = _open_as_ann(qtbot, settings_dir, db, series)
    after_gap = w.measurements.add(Measurement(meas.LENGTH, 15, (200.0, 200.0), (200.0, 300.0)))
    on_gap = w.measurements.add(Measurement(meas.LENGTH, 10, (150.0, 150.0), (150.0, 250.0)))
    uids = v.metadata["sop_instance_uids"]
    assert (after_gap.sop_instance_uid, on_gap.sop_instance_uid) == (uids[15], uids[10])  # the image each was made on
    qtbot.waitUntil(lambda: not w.measurements.unsaved())
    w.close()
    # The copy lacks image 11 and keeps the series UID; its pixel hash differs from the one recorded.
    copy = tmp_path / "copy"
    copy.mkdir()
    for i, f in enumerate(v.source_files):
        if i != 10:
            shutil.copy(f, copy / Path(f).name)
    w2, errors = _open_as_ann(qtbot, settings_dir, db, copy)
    assert w2.volume.series_uid == v.series_uid and w2.volume.n_slices == v.n_slices - 1
    [shown] = w2.measurements.measurements()
    assert shown.slice_index == 14 and shown.sop_instance_uid == uids[15] and shown.id is not None  # image 16 is the 15th here
    assert w2.measurements.text_of(shown).endswith(" mm") and (shown.start, shown.end) == (after_gap.start, after_gap.end)
    # the one made on the image this copy lacks is named, not placed on its neighbour
    assert errors and "1 saved measurement(s)" in errors[-1] and "made on image 11" in errors[-1]
    assert f"SOP Instance UID {uids[10]}) is not in this copy" in errors[-1]
    assert "different pixel data" not in "".join(errors)


def test_the_volume_hu_range_comes_from_the_panel_and_a_reversed_range_is_not_taken(qtbot, viewer):
    panel = viewer.measurements_panel
    assert viewer.measurements.hu_range == meas.DEFAULT_BLOOD_HU
    panel.hu_low.setValue(40)
    panel.hu_high.setValue(120)
    assert viewer.measurements.hu_range == (40.0, 120.0)
    panel.hu_low.setValue(130)  # above the high end: shown in red, the last valid range kept
    assert viewer.measurements.hu_range == (40.0, 120.0) and "ff6b6b" in panel.hu_low.styleSheet()
    panel.hu_high.setValue(150)
    assert viewer.measurements.hu_range == (130.0, 150.0) and panel.hu_low.styleSheet() == ""
    # the reader's range is kept in the settings folder for the next session
    again = _show(qtbot, MainWindow(viewer.settings_dir))
    assert again.measurements.hu_range == (130.0, 150.0) and again.measurements_panel.hu_low.value() == 130
    # so is whether thin connections are cut (the default) or followed
    assert viewer.measurements.cut_necks and panel.cut_necks_box.isChecked()
    panel.cut_necks_box.setChecked(False)
    assert not viewer.measurements.cut_necks
    third = _show(qtbot, MainWindow(viewer.settings_dir))
    assert not third.measurements.cut_necks and not third.measurements_panel.cut_necks_box.isChecked()
    assert third.measurements.hu_range == (130.0, 150.0)
    (viewer.settings_dir / "measure.json").write_text("{not json", "utf-8")  # damaged: defaults, no crash
    fresh = _show(qtbot, MainWindow(viewer.settings_dir))
    assert fresh.measurements.hu_range == meas.DEFAULT_BLOOD_HU and fresh.measurements.cut_necks
    (viewer.settings_dir / "measure.json").write_text('{"volume_hu_range": [45, 95]}', "utf-8")  # before the option
    older = _show(qtbot, MainWindow(viewer.settings_dir))
    assert older.measurements.hu_range == (45.0, 95.0) and older.measurements.cut_necks


def test_unsaved_measurements_survive_a_change_of_series_and_are_saved_when_a_reader_is_chosen(qtbot, settings_dir, ct_data_dir, tmp_path):
    study = two_series_study(ct_data_dir, tmp_path)
    db = tmp_path / "review.sqlite"
    w = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, ask_reader=False))
    assert w.review.reader is None
    with qtbot.waitSignal(w.sig_study_loaded, timeout=30000):
        w.open_path(study)
    first = w.volume
    z = w.state.slice_index
    w.measurements.add(Measurement(meas.LENGTH, z, (10.0, 10.0), (10.0, 90.0)))
    assert "choose who is reading" in w.statusBar().currentMessage()
    with qtbot.waitSignal(w.sig_volume_opened, timeout=30000):
        QTest.keyClick(w, Qt.Key.Key_PageDown if w.browser.series_uids()[0] == first.series_uid else Qt.Key.Key_PageUp)
    second = w.volume
    assert second is not first and w.measurements.measurements() == []
    assert [p.series_uid for p in w.measurements.pending()] == [first.series_uid]
    w.show_volume(first)  # back: the unsaved ruler is on screen again, still marked
    [ruler] = w.measurements.measurements()
    assert not w.measurements.is_saved(ruler) and w.measurements.pending() == []
    w.show_volume(second)
    w.review.set_reader(w.review.store.add_reader("ann", "resident"))  # saved for its own series
    assert w.measurements.pending() == []
    with ReviewStore(db) as store:
        [(m, text)] = store.measurements(first.series_uid, "ann")
        assert (m.start, m.end) == (ruler.start, ruler.end) and text.endswith(" mm")
        assert store.measurements(second.series_uid) == []
    w.show_volume(first)
    [back] = w.measurements.measurements()
    assert w.measurements.is_saved(back) and back.id == m.id


def test_a_volume_grows_off_the_gui_thread_and_a_click_still_counting_is_never_lost(qtbot, settings_dir, tmp_path, monkeypatch):
    import threading

    from ichviewer.core.phantom import generate_case
    from ichviewer.io.writer import write_ct_series
    from ichviewer.qt import measure as measure_module

    case = generate_case(5, subtype="IPH", volume_ml=5.0, matrix=256)
    write_ct_series(case.volume, tmp_path / "study" / "iph", series_description="PHANTOM IPH 5 mL")
    other = generate_case(6, subtype="SDH", volume_ml=10.0, matrix=256)
    write_ct_series(other.volume, tmp_path / "study" / "sdh", series_description="PHANTOM SDH 10 mL", series_number=2)
    z, y, x = (int(round(v)) for v in np.argwhere(case.masks["IPH"]).mean(axis=0))
    grown_on: list[str] = []
    real_grow = measure_module.grow_measurement_region

    def recording_grow(*args):
        grown_on.append(threading.current_thread().name)
        return real_grow(*args)

    monkeypatch.setattr(measure_module, "grow_measurement_region", recording_grow)
    db = tmp_path / "review.sqlite"
    w = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ann", "resident")))
    with qtbot.waitSignal(w.sig_study_loaded, timeout=30000):
        w.open_path(tmp_path / "study")
    iph = next(v for v in w.volumes.values() if "IPH" in v.series_description)
    sdh = next(v for v in w.volumes.values() if v is not iph)
    w.show_volume(iph)
    w.state.set_slice_index(z)
    layer = w.measurements

    # A click shows at once, "counting...", and is saved only when its region is known.
    with qtbot.waitSignal(layer.sig_added, timeout=10000):
        m = layer.add(Measurement(meas.VOLUME, z, (y + 0.5, x + 0.5), (y + 0.5, x + 0.5)))
        assert layer.growing() == [m] and layer.text_of(m) == measure_module.GROWING_TEXT
        assert measure_module.GROWING_TEXT in _labels_on_view(w) and layer.unsaved() == []
    assert grown_on and threading.main_thread().name not in grown_on
    qtbot.waitUntil(lambda: not layer.unsaved())
    [m] = layer.measurements()  # as stored, with its row id
    assert layer.region(m).volume_ml == pytest.approx(5.0, rel=0.03)
    assert meas.format_ml(layer.region(m).volume_ml) in _labels_on_view(w)

    # A click deleted while it counts is gone: its late region does not bring it back or save it.
    dropped = layer.add(Measurement(meas.VOLUME, z, (y + 1.5, x + 0.5), (y + 1.5, x + 0.5)))
    layer.remove(dropped)
    assert layer.growing() == [] and dropped not in layer.measurements()
    assert layer._pool.waitForDone(10000)  # the worker has finished: its queued result arrives now and is dropped
    QApplication.processEvents()
    assert len(layer.measurements()) == 1 and layer.unsaved() == []
    with ReviewStore(db) as store:
        assert len(store.measurements(iph.series_uid, "ann")) == 1

    # A click still counting when the reader moves to another series is finished first, then saved
    # under its own series (no event loop ran between the click and the change).
    second = layer.add(Measurement(meas.VOLUME, z, (y + 0.5, x + 1.5), (y + 0.5, x + 1.5)))
    assert layer.growing() == [second]
    w.show_volume(sdh)
    assert layer.growing() == [] and layer.measurements() == []
    qtbot.waitUntil(lambda: not layer.pending())
    with ReviewStore(db) as store:
        texts = [text for _m, text in store.measurements(iph.series_uid, "ann")]
    assert len(texts) == 2 and all(measure_module.GROWING_TEXT not in t and " mL" in t for t in texts)

    # The same when the window closes on a click still counting.
    w.show_volume(iph)
    qtbot.waitUntil(lambda: not layer.growing())  # the two saved ones, grown again
    assert len(layer.measurements()) == 2
    third = layer.add(Measurement(meas.VOLUME, z, (y - 0.5, x + 0.5), (y - 0.5, x + 0.5)))
    assert layer.growing() == [third]
    w.close()
    with ReviewStore(db) as store:
        texts = [text for _m, text in store.measurements(iph.series_uid, "ann")]
    assert len(texts) == 3 and all(measure_module.GROWING_TEXT not in t and " mL" in t for t in texts)


def test_a_volume_click_still_counting_when_the_reader_changes_is_the_previous_readers(qtbot, settings_dir, tmp_path):
    from ichviewer.core.phantom import generate_case
    from ichviewer.io.writer import write_ct_series

    case = generate_case(5, subtype="IPH", volume_ml=5.0, matrix=256)
    write_ct_series(case.volume, tmp_path / "iph", series_description="PHANTOM IPH 5 mL")
    z, y, x = (int(round(v)) for v in np.argwhere(case.masks["IPH"]).mean(axis=0))
    db = tmp_path / "review.sqlite"
    w = _show(qtbot, build_workstation(settings_dir, ai=False, db_path=db, reader=("ann", "resident")))
    v = open_and_wait(qtbot, w, tmp_path / "iph")
    m = w.measurements.add(Measurement(meas.VOLUME, z, (y + 0.5, x + 0.5), (y + 0.5, x + 0.5)))
    assert w.measurements.growing() == [m]
    w.review.set_reader(w.review.store.add_reader("bob", "attending"))  # no event loop ran in between
    with ReviewStore(db) as store:
        assert [t.split()[1] for _m, t in store.measurements(v.series_uid, "ann")] == ["mL"]
        assert store.measurements(v.series_uid, "bob") == []
    assert w.measurements.measurements() == [] and w.measurements.growing() == []  # bob sees his own: none
    w.close()


def test_a_saved_volume_on_a_copy_with_other_pixels_lists_what_it_counts_there(qtbot, settings_dir, tmp_path):
    import shutil

    from ichviewer.core.phantom import generate_case
    from ichviewer.io.writer import write_ct_series

    case = generate_case(5, subtype="IPH", volume_ml=20.0, matrix=256)
    files = write_ct_series(case.volume, tmp_path / "iph", series_description="PHANTOM IPH 20 mL")
    per_slice = case.masks["IPH"].sum(axis=(1, 2))
    z = int(np.argmax(per_slice))
    y, x = (int(round(v)) for v in np.argwhere(case.masks["IPH"][z]).mean(axis=0))
    db = tmp_path / "review.sqlite"
    w, _errors = _open_as_ann(qtbot, settings_dir, db, tmp_path / "iph")
    with qtbot.waitSignal(w.measurements.sig_added, timeout=10000) as added:
        w.measurements.add(Measurement(meas.VOLUME, z, (y + 0.5, x + 0.5), (y + 0.5, x + 0.5)))
    saved_text = added.args[1]
    qtbot.waitUntil(lambda: not w.measurements.unsaved())
    w.close()
    # The copy lacks another slice of the clot: the same click counts less there.
    gone = next(k for k in (z + 1, z - 1) if per_slice[k] > 0)
    copy = tmp_path / "copy"
    copy.mkdir()
    for k, f in enumerate(files):
        if k != gone:
            shutil.copy(f, copy / Path(f).name)
    w2, errors = _open_as_ann(qtbot, settings_dir, db, copy)
    qtbot.waitUntil(lambda: not w2.measurements.growing())
    [m] = w2.measurements.measurements()
    region = w2.measurements.region(m)
    shown = w2.measurements.text_of(m)
    # the list and the image say the same figure, this copy's; the database keeps the one saved
    assert shown.startswith(meas.format_ml(region.volume_ml)) and shown != saved_text
    with ReviewStore(db) as store:
        assert [t for _m, t in store.measurements(w2.volume.series_uid, "ann")] == [saved_text]
    w2.close()


def test_the_figures_of_rulers_that_meet_do_not_cover_each_other(qtbot, viewer, ct_data_dir):
    import pyqtgraph as pg

    w = viewer
    open_and_wait(qtbot, w, ct_data_dir / "ge-head-tilted")
    z = w.state.slice_index
    # ABC/2's two rulers, drawn to the same end (seen live: "19.9 mm" covered "24.7 mm"), and a third there too
    for start in ((200.0, 200.0), (260.0, 230.0), (300.0, 300.0)):
        w.measurements.add(Measurement(meas.LENGTH, z, start, (240.0, 300.0)))
    labels = [item for item in w.axial.view_box.childGroup.childItems() if isinstance(item, pg.TextItem)]
    assert len(labels) == 3
    rects = [label.mapRectToScene(label.boundingRect()) for label in labels]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not rects[i].intersects(rects[j]), (labels[i].textItem.toPlainText(), labels[j].textItem.toPlainText())
    # the first keeps its place at its line's end
    assert labels[0].pos() == w.axial.voxel_to_view(240.0, 300.0)
