"""GUI tests of the AI in the workstation: findings per chunk, cancellation on open, overlay, plot clicks, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from ichviewer import LABELS
from ichviewer.inference import TRIAGE_CLASSES, attention_map, load_ensemble
from ichviewer.qt.attention_overlay import HEAD_MIN_HU, attention_rgba
from ichviewer.qt.findings_panel import TRIAGE_STYLE
from ichviewer.qt.inference_attach import InferenceUI, attach_inference
from ichviewer.qt.inference_settings import InferenceSettings
from ichviewer.qt.main_window import MainWindow
from inference_fixtures import add_member, make_volume, write_manifest

pytestmark = pytest.mark.gui
WAIT_MS = 20000


def _ensemble(directory: Path, **manifest_kwargs) -> Path:
    """Two tiny CNN members with CAM heads (16 x 16 input) and a manifest."""
    e1, _ = add_member(directory, "alpha", seed=1, degree=3)
    e2, _ = add_member(directory, "beta", seed=2, degree=1, version="2.1")
    write_manifest(directory, [e1, e2], **manifest_kwargs)
    return directory


def _volume(n: int, seed: int = 0, shape: tuple[int, int] = (24, 32), uid: str = "") -> object:
    rng = np.random.default_rng(seed)
    hu = rng.integers(-40, 90, size=(n, *shape)).astype(np.int16)
    hu[:, 6:14, 8:18] += 60  # a bright blob, so the attention map is not uniform
    hu[:, [0, -1], :] = hu[:, :, [0, -1]] = 1200  # a "skull" around brain-like HU at 3 mm pixels: passes the head-CT check
    return make_volume(
        hu, spacing=(5.0, 3.0, 3.0), series_uid=uid or f"1.2.3.{seed}", study_uid="1.2.3", series_description=f"TEST {seed}"
    )


@pytest.fixture
def window(shown_main_window):
    return shown_main_window  # conftest: closed after the test, workers checked stopped


def _attach(window: MainWindow, ensemble_dir: Path | None, chunk: int = 8, auto: bool = True) -> InferenceUI:
    return attach_inference(window, ensemble_dir, settings=InferenceSettings(auto_infer=auto), chunk=chunk)


def test_findings_fill_in_per_chunk_then_finish_with_triage_and_provider(qtbot, window, tmp_path):
    ens = _ensemble(tmp_path / "ens", negative_below=0.0, positive_above=0.0,  # ANY > 0 => confident positive
                    description="Trained on phantoms only. Not for clinical use.")
    ui = _attach(window, ens, chunk=4)
    seen: list[tuple[int, str, int]] = []
    # Connected after the panel: each record is what the reader sees after that chunk.
    ui.controller.sig_partial.connect(
        lambda _rid, r: seen.append((r.slices_done, ui.panel.probability_text("ANY"), ui.panel.progress.value()))
    )
    volume = _volume(13)
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS) as blocker:
        window.show_volume(volume)
        assert not ui.panel.progress.isHidden()
    result = blocker.args[1]

    # Chunks of 1 (first slice fast), then 4: 1, 5, 9, 13 slices done.
    assert [s[0] for s in seen] == [1, 5, 9, 13]
    assert seen[0][1] != "\u2013" and seen[0][2] == 1  # a probability after the very first slice
    assert result.complete and result.n_slices == 13
    assert result.provider == "CPUExecutionProvider"
    assert ui.panel.provider_label.text() == "Ran on: CPU"
    assert "alpha 1.0" in ui.panel.models_label.text() and "beta 2.1" in ui.panel.models_label.text()
    # the manifest's description is on show beside the findings
    # the safety statement first: the line is cut to the panel's width, the tooltip has it all
    assert ui.panel.about_label.text() == "Not for clinical use. test-ensemble: Trained on phantoms only."
    assert ui.panel.about_label.toolTip() == ui.panel.about_label.text()
    assert not ui.panel.about_label.isHidden()
    time_label = ui.panel.elapsed_label
    assert time_label.text().startswith("Elapsed:")  # shown, whatever its value
    assert ui.panel.progress.isHidden()
    assert result.triage == "confident positive" and ui.panel.triage_text == "confident positive"
    assert TRIAGE_STYLE["confident positive"][0] in ui.panel.triage_badge.styleSheet()
    for label in LABELS:
        finding = result.case[label]
        assert ui.panel.probability_text(label) == f"{finding.probability:.2f}"
        assert ui.panel.decision_text(label) == finding.decision
    # The plot holds every slice's probability of the selected label (ANY by default).
    x, y = ui.plot.curve_points()
    np.testing.assert_array_equal(x, np.arange(1, 14))
    np.testing.assert_allclose(y, result.slice_probabilities[:, LABELS.index("ANY")])
    assert ui.strip.positive == tuple(result.positive_slices("ANY"))
    # Copy summary: the findings as text for a report, on the clipboard
    from PySide6.QtWidgets import QApplication

    from ichviewer.qt.findings_panel import verdict_text

    assert ui.panel.copy_button.isEnabled()
    ui.panel.copy_button.click()
    text = QApplication.clipboard().text()
    assert text == ui.panel.summary and text.startswith(f"AI findings (ICH Viewer): {verdict_text(result.case)}.")
    assert "Triage: confident positive." in text and "Ran on" not in text and " on CPU in " in text
    for label in LABELS:
        finding = result.case[label]
        assert f"{label} {finding.probability:.2f} {finding.tier}" in text
    assert "alpha 1.0" in text and text.endswith("Not for clinical use. test-ensemble: Trained on phantoms only.")
    # another series: nothing to copy until its findings are in
    with qtbot.waitSignal(ui.controller.sig_started, timeout=WAIT_MS):
        window.show_volume(_volume(6, seed=4))
    assert not ui.panel.copy_button.isEnabled() and ui.panel.summary == ""


def test_opening_another_study_cancels_and_drops_late_results(qtbot, window, tmp_path):
    ens = _ensemble(tmp_path / "ens")
    ui = _attach(window, ens, chunk=1)
    first, second = _volume(40, seed=1), _volume(7, seed=2)
    chunk_ids: list[int] = []
    finished: list[int] = []
    cancelled: list[int] = []
    ui.controller.sig_slices_updated.connect(lambda rid, *_: chunk_ids.append(rid))
    ui.controller.sig_finished.connect(lambda rid, _r: finished.append(rid))
    ui.controller.sig_cancelled.connect(cancelled.append)

    opened_second: list[int] = []

    def open_second_on_first_chunk(rid: int, *_args) -> None:
        # Inside the delivery of the first study's first chunk: its finish cannot have arrived yet.
        if not opened_second:
            opened_second.append(rid)
            window.show_volume(second)

    ui.controller.sig_slices_updated.connect(open_second_on_first_chunk)
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS) as blocker:
        window.show_volume(first)
    first_id = opened_second[0]
    second_id, result = blocker.args
    ui.controller.wait(WAIT_MS)
    qtbot.wait(50)  # let any late queued signal of the first study arrive (it must be dropped)

    assert cancelled == [first_id]
    assert first_id not in finished and finished == [second_id]
    after = chunk_ids[chunk_ids.index(second_id):]
    assert set(after) == {second_id}
    assert result.n_slices == 7
    assert ui.plot.n_slices == 7 and ui.strip.n_slices == 7
    assert ui.panel.progress.maximum() == 7
    assert ui.panel.probability_text("ANY") == f"{result.case['ANY'].probability:.2f}"

    # Another series, then back to the second (PgUp/PgDown): its complete findings come at once, no new run.
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS) as other:
        window.show_volume(_volume(7, seed=3))
    assert other.args[1] is not result
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=1) as cached:
        window.show_volume(second)
    assert cached.args[1] is result and not ui.controller.is_running
    assert ui.plot.n_slices == 7 and ui.panel.triage_text == result.triage


def test_attention_overlay_key_a_label_and_opacity(qtbot, window, tmp_path):
    ens = _ensemble(tmp_path / "ens")
    ui = _attach(window, ens)
    volume = _volume(9, seed=3, shape=(24, 32))
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS):
        window.show_volume(volume)
    window.state.set_slice_index(4)
    assert not window.axial.overlay_item.isVisible()

    window.activateWindow()
    with qtbot.waitSignal(ui.overlay.sig_map_shown, timeout=WAIT_MS) as blocker:
        QTest.keyClick(window, Qt.Key.Key_A)
    assert ui.overlay.enabled and ui.attention_panel.show_check.isChecked()
    assert blocker.args == [4, "ANY"]
    assert window.axial.overlay_item.isVisible()
    # The map lies on the slice's own pixels: the engine's CAM of that slice, through the LUT.
    # Outside the head (air) the overlay is transparent.
    amap = attention_map(volume, 4, "ANY", load_ensemble(ens))
    expected = attention_rgba(amap.normalized(), ui.overlay.lut, volume.hu[4] > HEAD_MIN_HU)
    # the panel names the image as the viewer numbers it, the slice's probability and the model
    ens = float(ui.plot.probabilities("ANY")[4])  # the ensemble's, as plotted: named beside the member's
    assert abs(ens - amap.probability) >= 0.005  # two members, two interpolation degrees: they differ here
    assert ui.attention_panel.status.text() == (
        f"ANY on image 5: p = {amap.probability:.2f} (model {amap.model}; ensemble {ens:.2f})")
    shown = ui.overlay.map_for(4, "ANY")
    assert shown.shape == (24, 32, 4)
    np.testing.assert_array_equal(shown, expected)
    assert window.axial.overlay_item.image.shape[:2] == window.axial.image_item.image.shape[:2]
    assert shown[..., 3].max() > 0 and shown[..., 3].min() == 0  # hot spots drawn, low values transparent

    # Choosing another label (combo) selects it everywhere and shows its map.
    with qtbot.waitSignal(ui.overlay.sig_map_shown, timeout=WAIT_MS) as blocker:
        ui.attention_panel.label_combo.setCurrentText("SDH")
    assert blocker.args == [4, "SDH"]
    assert window.state.selected_label == "SDH"
    assert ui.panel.selected_label == "SDH" and ui.plot.label == "SDH"

    ui.attention_panel.opacity_slider.setValue(25)
    assert window.state.overlay_opacity == pytest.approx(0.25)
    assert window.axial.overlay_item.opacity() == pytest.approx(0.25)

    QTest.keyClick(window, Qt.Key.Key_A)
    assert not ui.overlay.enabled
    assert not window.axial.overlay_item.isVisible()


def test_selecting_a_finding_row_selects_the_label_for_plot_and_overlay(qtbot, window, tmp_path):
    ens = _ensemble(tmp_path / "ens")
    ui = _attach(window, ens)
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS) as blocker:
        window.show_volume(_volume(6, seed=4))
    result = blocker.args[1]
    with qtbot.waitSignal(ui.panel.sig_label_selected) as sel:
        ui.panel.select_label("IVH")
    assert sel.args == ["IVH"]
    assert window.state.selected_label == "IVH"
    assert ui.plot.label == "IVH" and ui.overlay.label == "IVH"
    assert ui.attention_panel.label_combo.currentText() == "IVH"
    np.testing.assert_allclose(ui.plot.curve_points()[1], result.slice_probabilities[:, LABELS.index("IVH")])


def test_clicking_the_plot_and_the_strip_changes_the_slice(qtbot, window, tmp_path):
    ens = _ensemble(tmp_path / "ens")
    ui = _attach(window, ens)
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS):
        window.show_volume(_volume(12, seed=5))
    window.state.set_slice_index(0)
    qtbot.waitUntil(lambda: ui.plot.view_box.sceneBoundingRect().width() > 50)

    view = ui.plot.plot_widget
    y = ui.plot.view_box.sceneBoundingRect().center().y()
    target = view.mapFromScene(ui.plot.scene_x_of_slice(8), y)
    with qtbot.waitSignal(ui.plot.sig_slice_clicked) as blocker:
        QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(target.x(), target.y()))
    assert blocker.args == [8]
    assert window.state.slice_index == 8
    assert ui.plot.current_line.value() == 9  # image number 9 = slice index 8

    strip = ui.strip
    QTest.mouseClick(strip, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(int(strip.position_of(3)), strip.height() // 2))
    assert window.state.slice_index == 3
    assert strip.current == 3


def test_n_and_shift_n_go_to_the_flagged_slices_and_a_double_click_to_a_findings_peak(qtbot, window, tmp_path):
    ens = _ensemble(tmp_path / "ens")
    ui = _attach(window, ens)
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS):
        window.show_volume(_volume(6, seed=6))
    # Known probabilities in place of the tiny models' (the plot is what the reader sees).
    probs = np.full((6, len(LABELS)), 0.05)
    probs[:, LABELS.index("ANY")] = [0.1, 0.9, 0.2, 0.8, 0.1, 0.95]
    probs[:, LABELS.index("IVH")] = [0.1, 0.2, 0.3, 0.2, 0.4, 0.1]
    ui.plot.set_probabilities(probs, {label: 0.5 for label in LABELS})
    ui.panel.select_label("ANY")
    window.state.set_slice_index(0)
    visited = []
    for _ in range(4):
        QTest.keyClick(window, Qt.Key.Key_N)
        visited.append(window.state.slice_index)
    assert visited == [1, 3, 5, 1]  # flagged slices 1, 3, 5, then round again
    assert "ANY: image 2, flagged slice 1 of 3 (from the other end)" in window.statusBar().currentMessage()
    QTest.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)
    assert window.state.slice_index == 5
    # Nothing flagged for IVH: N goes to its highest slice and says why.
    ui.panel.select_label("IVH")
    QTest.keyClick(window, Qt.Key.Key_N)
    assert window.state.slice_index == 4
    assert "No slice reaches the IVH threshold (0.50): image 5 is the highest (0.40)" in window.statusBar().currentMessage()
    # A subtype over its threshold in a study not positive for haemorrhage is not flagged, and N says why.
    ui.plot.set_study_positive(False)
    ui.panel.select_label("ANY")
    ui.panel.select_label("SDH")
    probs[:, LABELS.index("SDH")] = [0.1, 0.2, 0.7, 0.2, 0.1, 0.1]
    ui.plot.set_probabilities(probs, {label: 0.5 for label in LABELS})
    QTest.keyClick(window, Qt.Key.Key_N)
    assert window.state.slice_index == 2
    assert "SDH is named only in a study positive for haemorrhage: image 3 is the highest (0.70)" in window.statusBar().currentMessage()
    ui.plot.set_study_positive(True)
    # A double-click on a finding's row shows it and goes to its most likely slice (press, release, double).
    row = LABELS.index("ANY")
    rect = ui.panel.table.visualItemRect(ui.panel.table.item(row, 0))
    QTest.mouseClick(ui.panel.table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
    QTest.mouseDClick(ui.panel.table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
    assert window.state.slice_index == 5 and ui.plot.label == "ANY"
    # A blinded panel member gets nothing from the keys.
    ui.set_blinded(True)
    window.state.set_slice_index(0)
    QTest.keyClick(window, Qt.Key.Key_N)
    assert window.state.slice_index == 0 and ui.go_to_flagged(1) is None
    assert "Next flagged slice" in [a.text() for a in window.actions_by_name.values()]


def test_a_damaged_model_file_is_reported_and_the_viewer_keeps_working(qtbot, window, tmp_path):
    ens = _ensemble(tmp_path / "ens")
    model = ens / "beta.onnx"
    model.write_bytes(model.read_bytes()[:-7] + b"garbage")
    ui = _attach(window, ens)
    with qtbot.waitSignal(window.sig_error, timeout=WAIT_MS) as blocker:
        window.show_volume(_volume(5, seed=6))
    message = blocker.args[0]
    assert message == (
        "The AI models could not be loaded: model 'beta' file is damaged (checksum mismatch). "
        "Reading continues without AI."
    )
    assert ui.panel.status.text() == message
    assert window.statusBar().currentMessage() == message
    assert ui.panel.progress.isHidden()
    # Reading goes on: slices scroll and the image is on screen.
    window.state.step_slice(1)
    assert window.state.slice_index == 3
    assert window.axial.image_item.image is not None
    assert not ui.controller.is_running

    # The next study says it in the panel without raising the alarm again...
    errors: list[str] = []
    window.sig_error.connect(errors.append)
    window.show_volume(_volume(4, seed=9))
    assert ui.panel.status.text() == message and errors == []
    # ...and an explicit "Analyse this study" tries the models again (the file may have been replaced).
    with qtbot.waitSignal(window.sig_error, timeout=WAIT_MS):
        ui.panel.run_button.click()
    assert errors == [message]


def test_without_installed_models_the_panel_says_so_and_nothing_runs(qtbot, window, tmp_path, monkeypatch):
    import ichviewer.inference.manifest as manifest

    monkeypatch.setattr(manifest, "default_models_candidates", lambda: [tmp_path / "no-models-here"])
    errors: list[str] = []
    window.sig_error.connect(errors.append)
    ui = attach_inference(window)
    window.show_volume(_volume(4, seed=7))
    assert "No AI models installed (models/default missing)" in ui.panel.status.text()
    assert not ui.controller.available and ui.controller.current_request_id == 0
    assert not ui.run_action.isEnabled()
    assert errors == []  # no alarm on every open: the panel says it once
    window.state.step_slice(1)
    assert window.state.slice_index == 3


def test_auto_infer_off_waits_for_the_reader_and_is_remembered(qtbot, window, tmp_path):
    ens = _ensemble(tmp_path / "ens")
    ui = _attach(window, ens, auto=False)
    window.show_volume(_volume(5, seed=8))
    assert not ui.controller.is_running
    assert ui.panel.run_button.isEnabled()
    assert "Not analysed" in ui.panel.status.text()
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS):
        ui.panel.run_button.click()
    assert ui.panel.triage_text in TRIAGE_CLASSES
    ui.panel.auto_infer_check.setChecked(True)
    assert InferenceSettings.load(window.settings_dir).auto_infer is True
    assert ui.auto_action.isChecked()


def test_the_attention_line_names_the_ensembles_value_once_the_findings_arrive(qtbot, window, tmp_path):
    # The map can be shown before the findings (auto-analysis off, or a long series): its line then
    # names the member's p alone, and the ensemble's value is added when the slice's findings come in.
    from ichviewer.qt.attention_overlay import explained_where

    ens = _ensemble(tmp_path / "ens")
    ui = _attach(window, ens, auto=False)
    window.show_volume(_volume(9, seed=3, shape=(24, 32)))
    window.state.set_slice_index(4)
    with qtbot.waitSignal(ui.overlay.sig_map_shown, timeout=WAIT_MS):
        ui.overlay.set_enabled(True)
    amap = ui.overlay.info_for(4, "ANY")
    assert ui.attention_panel.status.text() == f"ANY on {explained_where(4, amap.probability, amap.model)}"
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS):
        ui.panel.run_button.click()
    ensemble = ui.plotted_probability(4, "ANY")
    assert ui.attention_panel.status.text() == f"ANY on {explained_where(4, amap.probability, amap.model, ensemble)}"
    assert "; ensemble" in ui.attention_panel.status.text()


def test_a_phantom_dicom_study_opened_from_disk_gets_findings_and_an_overlay(qtbot, window, tmp_path):
    from ichviewer.core.phantom import generate_case
    from ichviewer.io.writer import write_ct_series

    case = generate_case(3, subtype="SDH", slice_mm=5.0, matrix=128)
    write_ct_series(case.volume, tmp_path / "study", series_description="PHANTOM SDH")
    ens = _ensemble(tmp_path / "ens")
    ui = _attach(window, ens)
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS) as blocker:
        window.open_path(tmp_path / "study")
    result = blocker.args[1]
    assert result.n_slices == case.volume.n_slices == window.volume.n_slices
    assert result.series_uid == case.volume.series_uid
    assert ui.panel.triage_text == result.triage
    assert ui.plot.n_slices == case.volume.n_slices

    middle = window.state.slice_index
    with qtbot.waitSignal(ui.overlay.sig_map_shown, timeout=WAIT_MS):
        ui.toggle_attention_action.trigger()
    assert ui.overlay.map_for(middle).shape == (*case.volume.shape[1:], 4)
    assert window.axial.overlay_item.isVisible()


@pytest.mark.parametrize("any_threshold", [1.0, 0.0])
def test_subtypes_are_named_only_when_the_study_is_positive_for_haemorrhage(qtbot, window, tmp_path, any_threshold):
    """ichviewer.core.decisions: every subtype reaches its own threshold (0); ANY's threshold
    decides whether the table, the verdict, the plot's marks and the strip name them."""
    thresholds = {**dict.fromkeys(LABELS, 0.0), "ANY": any_threshold}
    ens = _ensemble(tmp_path / "ens", thresholds=thresholds)
    ui = _attach(window, ens)
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS) as blocker:
        window.show_volume(_volume(6, seed=7))
    result = blocker.args[1]
    subtypes = [label for label in LABELS if label != "ANY"]
    status = ui.panel.status.text()
    if any_threshold == 1.0:  # ANY can never reach 1.0: the study is negative
        assert not result.study_positive
        assert all(ui.panel.decision_text(label) == "negative" for label in LABELS)
        assert all(result.case[label].held_back for label in subtypes)
        assert status.startswith(
            "No haemorrhage found by the AI (IPH, IVH, SDH, EDH, SAH reach their own thresholds, ANY does not)"
        )
        assert "ANY" in ui.panel.table.item(LABELS.index("SDH"), 2).toolTip()
        # the call reads "negative" in the negative colour; the number that reached its threshold is marked
        sdh_row = LABELS.index("SDH")
        assert ui.panel.table.item(sdh_row, 2).foreground().color() == ui.panel.table.item(LABELS.index("ANY"), 2).foreground().color()
        assert ui.panel.table.item(sdh_row, 1).text().endswith("\u25b4")
        assert "not named" in ui.panel.table.item(sdh_row, 1).toolTip()
        assert not ui.panel.table.item(LABELS.index("ANY"), 1).text().endswith("\u25b4")
        # the report text says so too, instead of a bare "negative"
        sdh = result.case["SDH"]
        assert (f"SDH {sdh.probability:.2f} negative (reaches its own threshold; not named, ANY is below its threshold)"
                in ui.panel.summary)
    else:
        assert result.study_positive
        assert all(ui.panel.decision_text(label) == "positive" for label in LABELS)
        assert status.startswith("Positive for haemorrhage: IPH, IVH, SDH, EDH, SAH.")
    ui.panel.select_label("SDH")
    expected = list(range(6)) if any_threshold == 0.0 else []
    assert ui.plot.positive_slices() == expected == result.positive_slices("SDH")
    assert ui.strip.positive == tuple(expected)
    assert len(ui.plot.positive_points.data) == len(expected)


def test_a_subtype_below_its_specific_threshold_reads_possible(qtbot, window, tmp_path):
    """ichviewer.core.decisions' two tiers: IVH is called (threshold 0) but cannot reach its specific
    threshold of 1.0, so the table and the verdict say "possible"; the others stay "positive"."""
    thresholds = dict.fromkeys(LABELS, 0.0)
    ens = _ensemble(tmp_path / "ens", thresholds=thresholds, specific_thresholds={"IVH": 1.0, "SDH": 0.0})
    ui = _attach(window, ens)
    with qtbot.waitSignal(ui.controller.sig_finished, timeout=WAIT_MS) as blocker:
        window.show_volume(_volume(6, seed=7))
    result = blocker.args[1]
    assert result.case["IVH"].decision == "positive" and result.case["IVH"].tier == "possible"
    assert ui.panel.decision_text("IVH") == "possible"
    assert [ui.panel.decision_text(label) for label in ("IPH", "SDH", "EDH", "SAH", "ANY")] == ["positive"] * 5
    assert ui.panel.status.text().startswith("Positive for haemorrhage: IPH, SDH, EDH, SAH; possible IVH.")
    row = LABELS.index("IVH")
    assert "\"positive\" from 1.00" in ui.panel.table.item(row, 2).toolTip() and "called when" in ui.panel.table.item(row, 2).toolTip()
    assert ui.panel.table.item(row, 2).foreground().color() != ui.panel.table.item(LABELS.index("SDH"), 2).foreground().color()
    # the slice marks are the calls, possible or positive
    ui.panel.select_label("IVH")
    assert ui.plot.positive_slices() == list(range(6)) == result.positive_slices("IVH")


def test_triage_tooltip_states_the_loaded_thresholds_and_prevalence():
    from ichviewer.inference.manifest import OperatingPoints
    from ichviewer.qt.findings_panel import triage_tooltip

    tip = triage_tooltip(OperatingPoints(negative_below=0.684, positive_above=0.97, triage_prevalence=0.1))
    assert "ANY below 0.68" in tip and "ANY above 0.97" in tip and "10% of studies" in tip
    off = triage_tooltip(OperatingPoints(negative_below=0.0, positive_above=1.0))
    assert off.count("switched off") == 2 and "prevalence" not in off
    assert "refer" in triage_tooltip(None)
