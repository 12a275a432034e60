"""GUI tests of the reading workstation: open real head CT, scroll, presets, W/L, HU under the cursor, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QImage, QMouseEvent, QWheelEvent  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from ichviewer.core.windowing import WindowLUT, load_presets  # noqa: E402
from ichviewer.qt.display import series_label  # noqa: E402
from ichviewer.qt.main_window import MainWindow  # noqa: E402
from ichviewer.qt.slice_view import AxialView  # noqa: E402

pytestmark = pytest.mark.gui
LOAD_TIMEOUT_MS = 30000


# -- helpers ---------------------------------------------------------------------------
@pytest.fixture
def window(qtbot, settings_dir: Path) -> MainWindow:
    w = MainWindow(settings_dir)
    qtbot.addWidget(w)  # closed at teardown: closeEvent stops the loader's threads
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w)
    return w


def open_and_wait(qtbot, w: MainWindow, path: Path | str):
    """Open `path` and wait until the axial image and the reformats are on screen."""
    with qtbot.waitSignals([w.sig_volume_opened, w.sig_reformats_ready], timeout=LOAD_TIMEOUT_MS, order="strict"):
        w.open_path(path)
    return w.volume


def viewport_pos(view: AxialView, y: int, x: int) -> QPoint:
    """Where voxel (y, x) of the shown slice is on the axial view's viewport, in viewport pixels."""
    scene = view.view_box.mapViewToScene(view.view_pos_of_voxel(y, x))
    return view.graphics.mapFromScene(scene)


def send_wheel(view: AxialView, notches: int, modifiers=Qt.KeyboardModifier.NoModifier, at: QPoint | None = None) -> None:
    vp = view.graphics.viewport()
    pos = QPointF(at if at is not None else vp.rect().center())
    ev = QWheelEvent(
        pos, QPointF(vp.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, 120 * notches),
        Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase, False,
    )
    QApplication.sendEvent(vp, ev)


def send_drag(view, button, start: QPoint, end: QPoint, modifiers=Qt.KeyboardModifier.NoModifier, steps: int = 5) -> None:
    vp = view.graphics.viewport()

    def mouse(kind, pos, btn, btns):
        p = QPointF(pos)
        QApplication.sendEvent(vp, QMouseEvent(kind, p, QPointF(vp.mapToGlobal(pos)), btn, btns, modifiers))

    mouse(QEvent.Type.MouseButtonPress, start, button, button)
    for i in range(1, steps + 1):
        # pyqtgraph drops moves closer than 1/mouseRateLimit s apart (100/s); a hand is slower.
        QTest.qWait(12)
        p = start + (end - start) * (i / steps)
        mouse(QEvent.Type.MouseMove, p, Qt.MouseButton.NoButton, button)
    mouse(QEvent.Type.MouseButtonRelease, end, button, Qt.MouseButton.NoButton)


def send_move(view, pos: QPoint) -> None:
    vp = view.graphics.viewport()
    ev = QMouseEvent(QEvent.Type.MouseMove, QPointF(pos), QPointF(vp.mapToGlobal(pos)), Qt.MouseButton.NoButton,
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(vp, ev)


def shown_pixels(w: MainWindow) -> np.ndarray:
    return w.axial.displayed_grey()


def expected_pixels(w: MainWindow, index: int | None = None) -> np.ndarray:
    v = w.volume
    i = w.state.slice_index if index is None else index
    return WindowLUT(w.state.window).apply(w.axial.orientation.plane(v.hu[i]))


def overlay(w: MainWindow, corner: str) -> str:
    return w.axial.corners.labels[corner].text()


# -- opening ---------------------------------------------------------------------------
def test_open_real_series_shows_middle_slice_with_brain_window(qtbot, window, ct_data_dir):
    v = open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-5mm")
    assert v.n_slices == 28
    assert window.state.slice_index == 14
    assert "Im: 15/28" in overlay(window, "tl")
    assert f"Loc: {v.slice_locations_mm[14]:.2f} mm" in overlay(window, "tl")
    assert "STD BRAIN 5MM" in overlay(window, "tl")
    assert "W: 80 L: 40  Brain" in overlay(window, "bl")
    np.testing.assert_array_equal(shown_pixels(window), expected_pixels(window))
    # Radiological convention: DICOM column 0 (patient right, row direction +X) is drawn at screen left.
    assert window.axial.orientation.flip_x is False and window.axial.orientation.transpose is False
    assert not window.axial.badge.isVisible()
    # The series list shows the description and the slice count.
    item = window.browser.series_tree.topLevelItem(0)
    assert item.text(0) == "STD BRAIN 5MM\n28 images \u00b7 CT" and not item.icon(0).isNull()


def test_aspect_follows_pixel_and_slice_spacing(qtbot, window, ct_data_dir):
    v = open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-5mm")
    ax = window.axial.image_item.mapRectToParent(window.axial.image_item.boundingRect())
    assert ax.width() == pytest.approx(512 * v.spacing[2]) and ax.height() == pytest.approx(512 * v.spacing[1])
    sag = window.sagittal.image_item.mapRectToParent(window.sagittal.image_item.boundingRect())
    # 28 slices of 5 mm are 140 mm tall; 512 rows of 0.45 mm are 231 mm wide.
    assert sag.height() == pytest.approx(28 * 5.0) and sag.width() == pytest.approx(512 * v.spacing[1])
    assert window.sagittal.image_item.image.shape == (28, 512)


def test_tilted_series_shows_warning_badge_and_regularized_reformats(qtbot, window, ct_data_dir):
    v = open_and_wait(qtbot, window, ct_data_dir / "ge-head-tilted")
    reg = window.regular_volume
    assert reg is not None and reg is not v and reg.is_regular
    assert window.axial.badge.isVisible()
    tip = window.axial.badge.toolTip()
    assert "tilt" in tip and "resampled" in tip and "uneven" in tip
    assert "Tilt: +18.5" in overlay(window, "tl")
    nz, ny, nx = reg.shape
    assert window.sagittal.image_item.image.shape == (nz, ny)
    assert window.coronal.image_item.image.shape == (nz, nx)
    assert ny > v.shape[1]  # de-shearing widened the grid to keep every acquired voxel
    # The axial stays as acquired: 28 slices of 512 x 512.
    assert shown_pixels(window).shape == (512, 512) and window.state.n_slices == 28
    # Clicking the badge lists every warning without blocking the window.
    QTest.mouseClick(window.axial.badge, Qt.MouseButton.LeftButton)
    box = window._warnings_box
    assert box is not None and box.isVisible() and not box.isModal()
    assert all(wn in box.text() for wn in v.warnings)


def test_bad_folder_reports_error_and_window_stays_usable(qtbot, window, ct_data_dir, tmp_path):
    bad = tmp_path / "not-ct"
    bad.mkdir()
    (bad / "notes.txt").write_text("this is not DICOM")
    with qtbot.waitSignal(window.sig_error, timeout=LOAD_TIMEOUT_MS) as blocker:
        window.open_path(bad)
    message = blocker.args[0]
    assert str(bad) in message and "no CT image series" in message
    assert message in window.statusBar().currentMessage()
    assert window._error_box.isVisible() and not window._error_box.isModal()

    missing = tmp_path / "missing"
    with qtbot.waitSignal(window.sig_error, timeout=LOAD_TIMEOUT_MS) as blocker:
        window.open_path(missing)
    assert str(missing) in blocker.args[0] and "no such file or folder" in blocker.args[0]

    v = open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-5mm")
    assert v.n_slices == 28 and window.volume is v


def test_recent_studies_are_remembered_in_the_settings_dir(qtbot, window, ct_data_dir, settings_dir):
    open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-5mm")
    data = json.loads((settings_dir / "recent.json").read_text())
    assert data["recent"][0] == str((ct_data_dir / "philips-phantom-5mm").resolve())
    again = MainWindow(settings_dir)
    qtbot.addWidget(again)
    assert again.browser.recent_list.count() == 1
    assert "philips-phantom-5mm" in again.browser.recent_list.item(0).text()


def test_a_study_opens_when_its_recent_list_cannot_be_saved(qtbot, window, ct_data_dir, settings_dir, caplog):
    (settings_dir / "recent.tmp").mkdir()  # the temporary file cannot be written (a full or read-only folder)
    v = open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-5mm")
    assert window.volume is v and window.browser.recent_list.count() == 1  # this session still lists it
    assert any("could not save the recent studies" in r.getMessage() for r in caplog.records)


# -- scrolling -----------------------------------------------------------------------
def test_wheel_arrows_home_end_change_slice_and_image(qtbot, window, ct_data_dir):
    v = open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-5mm")
    first = shown_pixels(window).copy()
    send_wheel(window.axial, -1)  # wheel down: next slice
    assert window.state.slice_index == 15 and "Im: 16/28" in overlay(window, "tl")
    assert not np.array_equal(first, shown_pixels(window))
    send_wheel(window.axial, 3)
    assert window.state.slice_index == 12
    qtbot.keyClick(window, Qt.Key.Key_Down)
    assert window.state.slice_index == 13
    qtbot.keyClick(window, Qt.Key.Key_Up)
    qtbot.keyClick(window, Qt.Key.Key_Up)
    assert window.state.slice_index == 11
    qtbot.keyClick(window, Qt.Key.Key_End)
    assert window.state.slice_index == 27 and "Im: 28/28" in overlay(window, "tl")
    qtbot.keyClick(window, Qt.Key.Key_Down)  # clamps at the last slice
    assert window.state.slice_index == 27
    qtbot.keyClick(window, Qt.Key.Key_Home)
    assert window.state.slice_index == 0 and "Im: 1/28" in overlay(window, "tl")
    assert f"Loc: {v.slice_locations_mm[0]:.2f} mm" in overlay(window, "tl")
    np.testing.assert_array_equal(shown_pixels(window), expected_pixels(window, 0))


def test_no_auto_levels_while_scrolling(qtbot, window, ct_data_dir):
    open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-1mm")
    qtbot.keyClick(window, Qt.Key.Key_Home)
    for _ in range(40):
        send_wheel(window.axial, -1)
        assert window.axial.image_item.getLevels() is None  # pyqtgraph never rescales
        np.testing.assert_array_equal(shown_pixels(window), expected_pixels(window))
    assert window.state.slice_index == 40
    window.axial.graphics.viewport().repaint()
    assert window.axial.image_item.qimage.format() == QImage.Format.Format_RGB32
    # The sagittal reformat marks the axial level it is on.
    assert window.sagittal.level_line.value() == pytest.approx(40.5 * window.volume.spacing[0])


def test_keys_1_to_9_choose_presets_and_pixels_follow_the_lut(qtbot, window, ct_data_dir):
    open_and_wait(qtbot, window, ct_data_dir / "ge-head-tilted")
    presets = load_presets()
    keys = [Qt.Key.Key_1, Qt.Key.Key_2, Qt.Key.Key_3, Qt.Key.Key_4, Qt.Key.Key_5, Qt.Key.Key_6, Qt.Key.Key_7, Qt.Key.Key_8]
    for key, preset in zip(keys, presets):
        qtbot.keyClick(window, key)
        assert window.state.window == preset
        assert f"W: {preset.width:g} L: {preset.level:g}  {preset.name}" in overlay(window, "bl")
        np.testing.assert_array_equal(shown_pixels(window), expected_pixels(window))
    qtbot.keyClick(window, Qt.Key.Key_4)  # bone: the skull is no longer saturated white
    bone = shown_pixels(window)
    qtbot.keyClick(window, Qt.Key.Key_1)
    brain = shown_pixels(window)
    assert (brain == 255).sum() > (bone == 255).sum()
    qtbot.keyClick(window, Qt.Key.Key_9)  # no ninth preset: the window is unchanged
    assert window.state.window == presets[0]


def test_user_keymap_in_settings_dir_overrides_bindings(qtbot, settings_dir, ct_data_dir):
    (settings_dir / "keymap.json").write_text(json.dumps({"keys": {"slice_next": ["N"]}, "mouse": {"window_level": "left"}}))
    w = MainWindow(settings_dir)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w)
    assert w.keymap.keys_for("ai_next_flagged") == ()  # the built-in N gave way to the user's
    open_and_wait(qtbot, w, ct_data_dir / "philips-phantom-5mm")
    qtbot.keyClick(w, Qt.Key.Key_N)
    assert w.state.slice_index == 15
    qtbot.keyClick(w, Qt.Key.Key_Down)  # no longer bound
    assert w.state.slice_index == 15
    c = w.axial.graphics.viewport().rect().center()
    send_drag(w.axial, Qt.MouseButton.LeftButton, c, c + QPoint(40, 0))
    assert w.state.window.width > 80


# -- mouse ---------------------------------------------------------------------------
def test_hu_under_cursor_is_the_voxel_value(qtbot, window, ct_data_dir):
    v = open_and_wait(qtbot, window, ct_data_dir / "ge-head-tilted")
    z = window.state.slice_index
    for y, x in [(256, 256), (200, 300), (140, 250), (20, 20)]:
        send_move(window.axial, viewport_pos(window.axial, y, x))
        hover = window.axial.hover
        assert hover is not None and (hover.z, hover.y, hover.x) == (z, y, x)
        assert hover.hu == float(v.hu[z, y, x])
        assert f"x: {x}  y: {y}" in overlay(window, "br") and f"HU: {v.hu[z, y, x]:.0f}" in overlay(window, "br")
    # Scrolling under a still cursor updates the HU to the new slice's voxel.
    send_wheel(window.axial, -1, at=viewport_pos(window.axial, 20, 20))
    assert window.axial.hover.hu == float(v.hu[z + 1, 20, 20])


def test_right_drag_changes_window_and_level_fine_with_shift(qtbot, window, ct_data_dir):
    open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-5mm")
    c = window.axial.graphics.viewport().rect().center()
    send_drag(window.axial, Qt.MouseButton.RightButton, c, c + QPoint(50, 0))
    w1 = window.state.window
    assert w1.width > 80 and w1.level == 40 and w1.name == ""
    assert f"W: {w1.width:g} L: 40" in overlay(window, "bl") and "Brain" not in overlay(window, "bl")
    np.testing.assert_array_equal(shown_pixels(window), expected_pixels(window))
    send_drag(window.axial, Qt.MouseButton.RightButton, c, c + QPoint(0, 50))
    w2 = window.state.window
    assert w2.level > 40 and w2.width == w1.width
    coarse = w2.level - 40
    send_drag(window.axial, Qt.MouseButton.RightButton, c, c + QPoint(0, 50), Qt.KeyboardModifier.ShiftModifier)
    fine = window.state.window.level - w2.level
    assert 0 < fine < coarse / 5


def test_ctrl_wheel_zoom_middle_drag_pan_and_space_reset(qtbot, window, ct_data_dir):
    open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-5mm")
    vb = window.axial.view_box
    fit = vb.viewRange()
    send_wheel(window.axial, 2, Qt.KeyboardModifier.ControlModifier)
    zoomed = vb.viewRange()
    assert zoomed[0][1] - zoomed[0][0] < 0.9 * (fit[0][1] - fit[0][0])
    assert window.state.slice_index == 14  # Ctrl+wheel zooms, it does not scroll
    assert window.state.view_range is not None
    c = window.axial.graphics.viewport().rect().center()
    send_drag(window.axial, Qt.MouseButton.MiddleButton, c, c + QPoint(60, 0))
    panned = vb.viewRange()
    assert panned[0][0] < zoomed[0][0]  # dragging right moves the image right
    assert window.state.window.width == 80  # panning leaves the window alone
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert window.state.view_range is None
    np.testing.assert_allclose(vb.viewRange(), fit, atol=1e-6)


def test_the_zoom_shown_is_the_size_the_image_is_drawn_at(qtbot, window, ct_data_dir):
    """100 % is one image pixel per screen pixel; after a resize and a zoom the corner says what is drawn."""
    v = open_and_wait(qtbot, window, ct_data_dir / "ge-head-tilted")
    window.resize(1500, 950)
    qtbot.wait(100)
    for step in (0, 2):
        if step:
            send_wheel(window.axial, step, Qt.KeyboardModifier.ControlModifier)
        drawn = window.axial.image_item.sceneBoundingRect().width() / v.shape[2] * 100
        shown = float(overlay(window, "bl").split("Zoom: ")[1].rstrip("%"))
        assert abs(shown - drawn) <= 1.0, (shown, drawn)


def two_series_study(ct_data_dir: Path, tmp_path: Path) -> Path:
    """A study folder holding two of the real series (links to their files)."""
    study = tmp_path / "two-series"
    for name in ("philips-phantom-5mm", "ge-head-tilted"):
        (study / name).mkdir(parents=True)
        for f in (ct_data_dir / name).iterdir():
            if f.name != "DIRFILE":
                (study / name / f.name).symlink_to(f)
    return study


def test_a_folder_of_several_studies_opens_on_the_one_listed_first(qtbot, window, tmp_path):
    """A worklist folder of patients opens on the top row of the browser, whatever its study UID."""
    out = tmp_path / "worklist"
    done = subprocess.run([sys.executable, "-m", "ichviewer", "phantom-set", str(out), "--n", "4", "--matrix", "64"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with qtbot.waitSignal(window.sig_study_loaded, timeout=LOAD_TIMEOUT_MS):
        window.open_path(out)
    listed = window.browser.series_uids()
    studies = [window.volumes[u].study_uid for u in listed]
    assert len(set(studies)) == 4 and studies[0] != min(studies)  # the UID order would open another patient
    assert window.volume.series_uid == listed[0]
    assert window.browser.series_tree.currentItem() is window.browser.series_tree.topLevelItem(0)


def test_cine_plays_the_series_round_and_round_and_stops_on_the_key_or_another_series(qtbot, window, ct_data_dir, tmp_path, settings_dir):
    """P plays the series at the chosen speed from the slice shown, round again after the last (as
    OHIF's and Weasis' cine); P again, or opening another series, stops it; the speed is remembered."""
    study = two_series_study(ct_data_dir, tmp_path)
    with qtbot.waitSignal(window.sig_study_loaded, timeout=LOAD_TIMEOUT_MS):
        window.open_path(study)
    n = window.state.n_slices
    window.state.set_slice_index(n - 3)
    window.set_cine_fps(30)
    assert window.cine_speed_actions[30].isChecked() and not window.cine_speed_actions[10].isChecked()
    seen: list[int] = []
    window.state.sig_slice_changed.connect(lambda i: seen.append(int(i)))
    qtbot.keyClick(window, Qt.Key.Key_P)
    assert window.cine_running and window.actions_by_name["cine_play"].isChecked()
    assert "30 images per second" in window.statusBar().currentMessage()
    assert window.status_cine.isVisible() and window.status_cine.text() == "\u25b6 Cine 30/s"
    qtbot.waitUntil(lambda: len(seen) >= 5, timeout=5000)
    assert seen[:5] == [n - 2, n - 1, 0, 1, 2]  # round again after the last
    np.testing.assert_array_equal(shown_pixels(window), expected_pixels(window, window.state.slice_index))
    qtbot.keyClick(window, Qt.Key.Key_P)
    assert not window.cine_running and not window.actions_by_name["cine_play"].isChecked()
    assert not window.status_cine.isVisible()
    stopped_at = window.state.slice_index
    qtbot.wait(150)
    assert window.state.slice_index == stopped_at
    # Playing, then another series: it stops there, on that series' own slice.
    qtbot.keyClick(window, Qt.Key.Key_P)
    assert window.cine_running
    with qtbot.waitSignal(window.sig_volume_opened, timeout=LOAD_TIMEOUT_MS):
        qtbot.keyClick(window, Qt.Key.Key_PageDown)
    assert not window.cine_running and not window.actions_by_name["cine_play"].isChecked()
    # A click on the status bar's mark stops it too (a text field with the keys takes P).
    window.start_cine()
    qtbot.mouseClick(window.status_cine, Qt.MouseButton.LeftButton)
    assert not window.cine_running and not window.status_cine.isVisible()
    window.close()
    again = MainWindow(settings_dir)
    qtbot.addWidget(again)
    assert again.cine_fps == 30 and again.cine_speed_actions[30].isChecked()
    assert not again.start_cine()  # nothing open: nothing to play, said so
    assert "open a series" in again.statusBar().currentMessage() and not again.actions_by_name["cine_play"].isChecked()


def test_pageup_pagedown_and_double_click_move_between_series(qtbot, window, ct_data_dir, tmp_path):
    study = two_series_study(ct_data_dir, tmp_path)
    with qtbot.waitSignal(window.sig_study_loaded, timeout=LOAD_TIMEOUT_MS):
        window.open_path(study)
    tree = window.browser.series_tree
    assert tree.topLevelItemCount() == 2
    order = window.browser.series_uids()
    first = window.volume
    i = order.index(first.series_uid)
    step = 1 if i == 0 else -1
    with qtbot.waitSignal(window.sig_volume_opened, timeout=LOAD_TIMEOUT_MS):
        qtbot.keyClick(window, Qt.Key.Key_PageDown if step == 1 else Qt.Key.Key_PageUp)
    second = window.volume
    assert second.series_uid == order[i + step] and second is not first
    assert window.state.n_slices == second.n_slices
    assert series_label(second) in overlay(window, "tl") and series_label(second) in window.windowTitle()
    with qtbot.waitSignal(window.sig_volume_opened, timeout=LOAD_TIMEOUT_MS):
        qtbot.keyClick(window, Qt.Key.Key_PageUp if step == 1 else Qt.Key.Key_PageDown)
    assert window.volume is first
    # Double-clicking the other series in the browser shows it.
    item = tree.topLevelItem(order.index(second.series_uid))
    rect = tree.visualItemRect(item)
    with qtbot.waitSignal(window.sig_volume_opened, timeout=LOAD_TIMEOUT_MS):
        # Qt 6's QTest needs the first click of a double-click sent on its own.
        QTest.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
        QTest.mouseDClick(tree.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
    assert window.volume is second


def test_overlay_follows_slice_and_opacity(qtbot, window, ct_data_dir):
    v = open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-5mm")
    rgba = np.zeros((*v.shape, 4), np.uint8)
    rgba[14, 100:120, 200:260] = (255, 0, 0, 255)
    window.axial.set_overlay(rgba)
    assert window.axial.overlay_item.isVisible()
    np.testing.assert_array_equal(window.axial.overlay_item.image[100:120, 200:260, 0], 255)
    window.state.set_overlay_opacity(0.25)
    assert window.axial.overlay_item.opacity() == pytest.approx(0.25)
    qtbot.keyClick(window, Qt.Key.Key_Down)
    assert window.axial.overlay_item.image.max() == 0


# -- command line ----------------------------------------------------------------------
def test_open_command_shows_study_and_exits_cleanly(ct_data_dir, tmp_path):
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run(
        [sys.executable, "-m", "ichviewer", "open", str(ct_data_dir / "philips-phantom-5mm"),
         "--settings-dir", str(tmp_path / "s"), "--screenshot", str(shot)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Fatal Python error" not in proc.stderr and "Traceback" not in proc.stderr
    assert shot.stat().st_size > 10000
    assert json.loads((tmp_path / "s" / "recent.json").read_text())["recent"]


def test_open_command_rejects_missing_path_without_traceback(tmp_path, capsys):
    from ichviewer.cli import main

    assert main(["open", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and "no such file or folder" in err


def test_a_superseded_load_never_replaces_the_study_opened_after_it(qtbot, window, ct_data_dir):
    slow = window.open_path(ct_data_dir / "philips-phantom-1mm")
    with qtbot.waitSignal(window.sig_study_loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        fast = window.open_path(ct_data_dir / "philips-phantom-5mm")
    assert slow.request_id < fast.request_id
    assert blocker.args[0] == str(ct_data_dir / "philips-phantom-5mm")
    assert window.loader.wait(LOAD_TIMEOUT_MS)  # the 140-slice job has finished by now
    qtbot.waitUntil(lambda: window.regular_volume is not None)
    QApplication.processEvents()
    assert window.volume.n_slices == 28 and window.state.n_slices == 28
    assert window.browser.path_label.text() == str(ct_data_dir / "philips-phantom-5mm")


def test_demo_command_writes_a_haemorrhage_case_once_and_opens_it(tmp_path):
    from ichviewer.commands.gui import demo_cache_dir, ensure_demo_case

    shot = tmp_path / "demo.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "ichviewer", "demo", "--settings-dir", str(tmp_path / "s"), "--screenshot", str(shot)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Fatal Python error" not in proc.stderr and "Traceback" not in proc.stderr
    folder = tmp_path / "cache" / "ichviewer" / "demo"
    labels = json.loads((folder / "labels.json").read_text())
    assert labels["volume_ml"]["IPH"] > 1.0 and any(s["IPH"] for s in labels["slices"])
    files = sorted((folder / "series").iterdir())
    assert len(files) == labels["n_slices"] and shot.stat().st_size > 10000
    # A second start reuses the cached case instead of writing it again.
    stamps = [f.stat().st_mtime_ns for f in files]
    assert demo_cache_dir() == folder  # conftest points XDG_CACHE_HOME at tmp_path / "cache"
    assert ensure_demo_case(folder) == folder / "series"
    assert [f.stat().st_mtime_ns for f in sorted((folder / "series").iterdir())] == stamps


def test_keymap_is_data_and_a_broken_override_names_the_file(settings_dir):
    from ichviewer.qt.settings import load_keymap

    km = load_keymap(settings_dir)
    assert km.presets[:3] == ("1", "2", "3") and "PgDown" in km.keys_for("series_next")
    assert km.mouse.window_level == "right" and km.mouse.pan == "middle"
    (settings_dir / "keymap.json").write_text("{not json")
    with pytest.raises(ValueError, match="keymap.json: not valid JSON"):
        load_keymap(settings_dir)
    (settings_dir / "keymap.json").write_text(json.dumps({"mouse": {"pan": "thumb"}}))
    with pytest.raises(ValueError, match="mouse.pan"):
        load_keymap(settings_dir)


def test_reformats_page_with_the_wheel_and_a_click_picks_the_axial_slice(qtbot, window, ct_data_dir):
    v = open_and_wait(qtbot, window, ct_data_dir / "ge-head-tilted")
    sag, cor = window.sagittal, window.coronal
    n_sag = window.regular_volume.shape[2]
    assert sag.cut_index == n_sag // 2 and "Sag: 257/512" in sag.corners.labels["tr"].text()
    before = sag.image_item.image.copy()
    send_wheel(sag, -3)  # three notches down: three sagittal planes to the patient's left
    assert sag.cut_index == n_sag // 2 + 3 and window.state.slice_index == 14
    assert not np.array_equal(before, sag.image_item.image)
    assert cor.cut_index == window.regular_volume.shape[1] // 2  # the coronal plane stays put
    assert window.axial.cross_v.isVisible()
    # The axial reference line sits on the sagittal plane: 3 columns right of the centre.
    assert window.axial.cross_v.value() == pytest.approx((n_sag // 2 + 3.5) * v.spacing[2], abs=1e-3)
    # A click on the sagittal at the height of axial slice 5 shows slice 5.
    target = sag.view_box.mapViewToScene(QPointF(100.0, sag._slice_levels[5] + window.regular_volume.spacing[0] / 2))
    QTest.mouseClick(sag.graphics.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, sag.graphics.mapFromScene(target))
    assert window.state.slice_index == 5


def test_window_layout_is_restored_from_the_settings_dir(qtbot, window, settings_dir):
    window.splitter.setSizes([700, 500])
    sizes = window.splitter.sizes()
    window.close()
    assert (settings_dir / "window.json").is_file()
    again = MainWindow(settings_dir)
    qtbot.addWidget(again)
    again.show()
    qtbot.waitExposed(again)
    # Qt fits the restored geometry to the (offscreen) screen; the split keeps its proportion.
    restored = again.splitter.sizes()
    assert restored[0] / sum(restored) == pytest.approx(sizes[0] / sum(sizes), abs=0.02)
    assert restored[0] / sum(restored) != pytest.approx(900 / 1230, abs=0.02)  # not the default split


def _corner_rects(overlay) -> dict:
    return {k: overlay.labels[k].geometry() for k in ("tl", "tr", "bl", "br") if overlay.labels[k].text()}


def test_corner_texts_never_overlap_in_a_narrow_view(qtbot):
    from PySide6.QtWidgets import QLabel, QWidget

    from ichviewer.qt.slice_view import _CornerOverlay

    host = QWidget()
    qtbot.addWidget(host)
    corners = _CornerOverlay(host)
    badge = QLabel("\u26a0 3 warnings", host)
    corners.extra["badge"] = badge
    corners.set_text("tl", "STD BRAIN 5MM (series 3)\nIm: 15/28   Inst: 15\nLoc: 42.50 mm\nThk: 5.00 mm   Tilt: +18.5\u00b0")
    corners.set_text("tr", "HEAD ROUTINE  2019-04-02\n512 x 512\n0.449 x 0.449 mm")
    corners.set_text("bl", "W: 80 L: 40  Brain\nZoom: 87%")
    corners.set_text("br", "x: 255  y: 301\nHU: 37")
    for side, letter in (("top", "A"), ("bottom", "P"), ("left", "R"), ("right", "L")):
        corners.labels[side].setText(letter)
        corners.labels[side].adjustSize()
    host.resize(1000, 800)
    host.show()
    qtbot.waitExposed(host)
    wide = _corner_rects(corners)
    assert wide["tr"].top() == badge.geometry().bottom() + 3  # side by side: right-hand texts stay in their corner
    assert corners.labels["top"].y() == corners.MARGIN  # the orientation letter at the edge when nothing is in its way
    assert wide["br"].bottom() == wide["bl"].bottom()
    for width in (700, 420, 300, 210):
        host.resize(width, 600)
        QApplication.processEvents()
        rects = {**_corner_rects(corners), "badge": badge.geometry(), "top": corners.labels["top"].geometry(),
                 "bottom": corners.labels["bottom"].geometry()}
        names = sorted(rects)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                assert not rects[a].intersects(rects[b]), (width, a, b)
        assert rects["tr"].right() == width - 1 - corners.MARGIN  # still right-aligned, now stacked
    assert rects["tr"].top() > rects["tl"].bottom() and rects["br"].bottom() < rects["bl"].top()


def test_a_thick_slab_averages_a_thin_series_and_the_key_steps_through_thicknesses(qtbot, window, ct_data_dir):
    from ichviewer.core.slab import MIP, Slab
    from ichviewer.core.windowing import window_to_uint8

    v = open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-1mm")
    i = window.state.slice_index
    plain = shown_pixels(window).copy()
    QTest.keyClick(window, Qt.Key.Key_T)  # 3 mm
    QTest.keyClick(window, Qt.Key.Key_T)  # 5 mm
    assert window.state.slab == Slab(5.0) and window.slab_actions[5.0].isChecked()
    n = round(5.0 / v.spacing[0])
    images = window.axial.slab_images()
    assert len(images) == n and i in images
    mean = v.hu[images.start:images.stop].astype(np.float32).mean(axis=0)
    expected = window_to_uint8(window.axial.orientation.plane(mean), window.state.window)
    assert np.array_equal(shown_pixels(window), expected) and not np.array_equal(shown_pixels(window), plain)
    assert f"Slab: 5 mm avg (images {images.start + 1}-{images.stop})" in overlay(window, "tl")
    assert "Measurements and the AI read the acquired slice" in window.statusBar().currentMessage()
    # the cursor's HU is the acquired voxel's, with the slab's value beside it
    y, x = 256, 256
    send_move(window.axial, viewport_pos(window.axial, y, x))
    qtbot.waitUntil(lambda: "slab avg" in overlay(window, "br"))
    assert f"HU: {v.hu[i, y, x]:.0f} (slab avg {mean[y, x]:.0f})" in overlay(window, "br")
    # the slab follows the slice
    window.state.step_slice(1)
    assert list(window.axial.slab_images()) == [k + 1 for k in images]
    QTest.keyClick(window, Qt.Key.Key_T, Qt.KeyboardModifier.ShiftModifier)  # MIP
    assert window.state.slab.mode == MIP and window.actions_by_name["slab_mip"].isChecked()
    block = v.hu[images.start + 1:images.stop + 1].max(axis=0)
    assert np.array_equal(shown_pixels(window), WindowLUT(window.state.window).apply(window.axial.orientation.plane(block)))
    QTest.keyClick(window, Qt.Key.Key_T)  # 10 mm
    QTest.keyClick(window, Qt.Key.Key_T)  # off again
    assert not window.state.slab.active and window.slab_actions[0.0].isChecked()
    assert np.array_equal(shown_pixels(window), expected_pixels(window)) and "Slab" not in overlay(window, "tl")


def test_a_slab_no_thicker_than_the_slices_shows_them_as_acquired(qtbot, window, ct_data_dir):
    from ichviewer.core.slab import Slab

    open_and_wait(qtbot, window, ct_data_dir / "philips-phantom-5mm")
    window.set_slab_thickness(5.0)
    assert window.state.slab == Slab(5.0) and len(window.axial.slab_images()) == 1
    assert np.array_equal(shown_pixels(window), expected_pixels(window)) and "Slab" not in overlay(window, "tl")
    assert "already 5.00 mm" in window.statusBar().currentMessage()


def test_ctrl_s_saves_the_view_as_shown_and_a_bad_folder_is_named(qtbot, window, ct_data_dir, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    window.save_view_image(tmp_path / "nothing.png")  # nothing open: nothing written, and it says why
    assert not (tmp_path / "nothing.png").exists() and "Open a series first" in window.statusBar().currentMessage()
    open_and_wait(qtbot, window, ct_data_dir / "ge-head-tilted")
    window.state.set_slice_index(14)
    qtbot.keyClick(window, Qt.Key.Key_4)  # bone window: the saved image is the view as shown
    asked: list[str] = []

    def answer(_parent, _title, suggested, _filters):
        asked.append(suggested)
        return str(tmp_path / "teaching" / "case1"), "PNG image (*.png)"  # no suffix typed

    (tmp_path / "teaching").mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(answer))
    qtbot.keyClick(window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert asked and Path(asked[0]).name.endswith("_image15.png") and Path(asked[0]).parent == Path.home()
    saved = tmp_path / "teaching" / "case1.png"
    img = QImage(str(saved))
    assert not img.isNull() and (img.width(), img.height()) == (window.axial.width(), window.axial.height())
    assert str(saved) in window.statusBar().currentMessage()
    grabbed = window.axial.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    assert img.convertToFormat(QImage.Format.Format_RGB32) == grabbed  # what the reader sees, corner text and all
    # the next save offers the folder used last
    qtbot.keyClick(window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert Path(asked[1]).parent == tmp_path / "teaching"
    # a folder that does not exist: the error names the file, and the viewer keeps working
    with qtbot.waitSignal(window.sig_error, timeout=5000) as err:
        assert window.save_view_image(tmp_path / "missing" / "x.png") is None
    assert str(tmp_path / "missing" / "x.png") in err.args[0] and "folder does not exist" in err.args[0]
    window.state.set_slice_index(3)
    assert window.state.slice_index == 3


def test_ctrl_shift_s_saves_the_view_without_its_corner_text_for_a_teaching_file(qtbot, window, ct_data_dir, tmp_path, monkeypatch):
    """The corners name the study, the scanner and the date (and the tilted GE head shows a warning
    badge): a teaching-file image leaves them out and keeps the pixels and the orientation letters."""
    from PySide6.QtWidgets import QFileDialog

    open_and_wait(qtbot, window, ct_data_dir / "ge-head-tilted")
    window.state.set_slice_index(14)
    corners = [window.axial.corners.labels[c] for c in ("tl", "tr", "bl", "br") if window.axial.corners.labels[c].text()]
    assert len(corners) >= 3 and all(lab.isVisible() for lab in corners) and window.axial.badge.isVisible()
    with_text = window.axial.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    titles: list[str] = []

    def answer(_parent, title, _suggested, _filters):
        titles.append(title)
        return str(tmp_path / "plain.png"), "PNG image (*.png)"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(answer))
    qtbot.keyClick(window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert titles == ["Save view as image without corner text"]
    plain = QImage(str(tmp_path / "plain.png")).convertToFormat(QImage.Format.Format_RGB32)
    assert (plain.width(), plain.height()) == (with_text.width(), with_text.height()) and plain != with_text
    for lab in corners:  # where each corner's text was, the saved image has none of its bright pixels
        r = lab.geometry()
        text_px = np.array([with_text.pixelColor(x, y).lightness() for x in range(r.left(), r.right(), 2)
                            for y in range(r.top(), r.bottom(), 2)])
        plain_px = np.array([plain.pixelColor(x, y).lightness() for x in range(r.left(), r.right(), 2)
                             for y in range(r.top(), r.bottom(), 2)])
        assert (text_px > 200).sum() > (plain_px > 200).sum()
    # the orientation letters stay, and the view on screen keeps its corner text and badge
    side = window.axial.corners.labels["top"].geometry().center()
    assert plain.pixelColor(side) == with_text.pixelColor(side)
    assert all(lab.isVisible() for lab in corners) and window.axial.badge.isVisible()
    assert "without corner text" in window.statusBar().currentMessage()


def test_an_unticked_checkbox_is_visible_on_the_dark_theme(qtbot, window):
    """On the #1e1e1e background the platform's unticked box was a near-black square nobody could see
    (the self-test's hint box, "Analyse studies when opened"): the theme draws it with a light border,
    and a ticked one filled in blue."""
    from PySide6.QtWidgets import QCheckBox, QVBoxLayout, QWidget

    host = QWidget()
    QVBoxLayout(host)
    box = QCheckBox("Heat map before answering (a hint)")
    host.layout().addWidget(box)
    window.add_panel(host, "Theme check")
    qtbot.waitUntil(box.isVisible)

    def colours() -> np.ndarray:
        img = box.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
        w, h = img.width(), img.height()
        arr = np.frombuffer(img.constBits(), np.uint8, img.bytesPerLine() * h).reshape(h, img.bytesPerLine())
        from PySide6.QtWidgets import QStyle, QStyleOptionButton

        opt = QStyleOptionButton()
        box.initStyleOption(opt)
        r = box.style().subElementRect(QStyle.SubElement.SE_CheckBoxIndicator, opt, box)
        return arr[:, : 3 * w].reshape(h, w, 3)[r.top() : r.bottom() + 1, r.left() : r.right() + 1].astype(int)

    unticked = colours()
    assert unticked.max(axis=2).max() >= 140  # a light border, not near-black on near-black
    box.setChecked(True)
    ticked = colours()
    blue = (ticked[..., 2] >= 180) & (ticked[..., 0] <= 110)
    assert blue.sum() >= 20


def test_about_box_of_the_viewer_alone(window, settings_dir):
    text = window.about_text()
    assert "not for clinical use" in text and f"Settings folder: {settings_dir}" in text
    assert "AI models:" not in text and "Review database" not in text  # neither is attached
