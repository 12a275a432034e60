"""Tests of the AI widgets and worker bridge on their own: messages, settings, strip, colour map, controller lifecycle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inference_fixtures import add_member, make_volume, write_manifest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from ichviewer.inference import EnsembleNotFoundError, ModelContractError
from ichviewer.qt.attention_overlay import ALPHA_FLOOR, attention_rgba, colormap_lut
from ichviewer.qt.findings_panel import FindingsPanel
from ichviewer.qt.inference_controller import InferenceController, describe_inference_error, provider_display_name
from ichviewer.qt.inference_settings import INFERENCE_SETTINGS_FILE, InferenceSettings
from ichviewer.qt.slice_plot import PositiveSliceStrip, SliceProbabilityPlot

pytestmark = pytest.mark.gui
WAIT_MS = 20000


def test_error_messages_are_in_words_a_radiologist_can_act_on():
    damaged = ModelContractError("alpha", "/m/alpha.onnx", "SHA-256 mismatch: manifest says aa, file has bb")
    assert describe_inference_error(damaged) == (
        "The AI models could not be loaded: model 'alpha' file is damaged (checksum mismatch). Reading continues without AI."
    )
    missing = ModelContractError("beta", "/m/beta.onnx", "model file is missing")
    assert "model 'beta' file is missing" in describe_inference_error(missing)
    assert describe_inference_error(EnsembleNotFoundError(None, "no models")).startswith(
        "No AI models installed (models/default missing)."
    )
    oom = describe_inference_error(MemoryError())
    assert "ran out of memory" in oom and oom.endswith("Reading continues without AI.")
    failure = describe_inference_error(RuntimeError("CUDA failure 2: out of device memory\ntrace"), provider="CUDAExecutionProvider")
    assert failure == "The AI analysis failed on GPU (CUDA): CUDA failure 2: out of device memory. Reading continues without AI."


def test_provider_names_never_claim_a_gpu_for_the_cpu():
    assert provider_display_name("CPUExecutionProvider") == "CPU"
    assert provider_display_name("CUDAExecutionProvider, CPUExecutionProvider") == "GPU (CUDA), CPU"
    assert provider_display_name("") == "unknown"


def test_settings_round_trip_and_a_damaged_file_falls_back_to_defaults(tmp_path):
    s = InferenceSettings(auto_infer=False, providers="cpu")
    s.save(tmp_path)
    assert InferenceSettings.load(tmp_path) == s
    (tmp_path / INFERENCE_SETTINGS_FILE).write_text("{not json", "utf-8")
    assert InferenceSettings.load(tmp_path) == InferenceSettings()
    (tmp_path / INFERENCE_SETTINGS_FILE).write_text(json.dumps({"providers": "quantum"}), "utf-8")
    assert InferenceSettings.load(tmp_path).providers == "auto"
    with pytest.raises(ValueError, match="providers must be one of"):
        InferenceSettings(providers="quantum")


def test_overlay_colours_are_transparent_below_the_floor_and_opaque_at_the_peak():
    lut = colormap_lut("turbo")
    assert lut.shape == (256, 4) and lut.dtype == np.uint8
    m = np.array([[0.0, ALPHA_FLOOR * 0.9], [0.6, 1.0]])
    rgba = attention_rgba(m, lut)
    assert rgba.shape == (2, 2, 4)
    assert rgba[0, 0, 3] == 0 and rgba[0, 1, 3] == 0
    assert 0 < rgba[1, 0, 3] < 255 and rgba[1, 1, 3] == 255
    assert rgba[1, 1, 0] > rgba[1, 1, 2]  # hot is red, not blue (Lee et al. Fig. 2b)
    # Heat over air outside the head is not drawn.
    outside = attention_rgba(m, lut, inside=np.array([[True, True], [True, False]]))
    assert outside[1, 1, 3] == 0 and outside[1, 0, 3] == rgba[1, 0, 3]


def test_strip_maps_slices_to_ticks_both_ways(qtbot):
    strip = PositiveSliceStrip(Qt.Orientation.Vertical, inverted=True)
    qtbot.addWidget(strip)
    strip.resize(8, 200)
    strip.set_n_slices(10)
    strip.set_positive([0, 7])
    # Slice 1 at the bottom (inverted), the last at the top.
    assert strip.position_of(0) > strip.position_of(9)
    for i in range(10):
        assert strip.index_at(strip.position_of(i)) == i
    with qtbot.waitSignal(strip.sig_slice_clicked) as blocker:
        QTest.mouseClick(strip, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(4, int(strip.position_of(7))))
    assert blocker.args == [7]
    strip.grab()  # paints without error


def test_panel_shows_unavailable_models_and_selection_does_not_loop(qtbot):
    panel = FindingsPanel()
    qtbot.addWidget(panel)
    panel.show_unavailable("No AI models installed (models/default missing)")
    assert panel.status.text().startswith("No AI models installed (models/default missing)")
    assert not panel.run_button.isEnabled()
    emitted: list[str] = []
    panel.sig_label_selected.connect(emitted.append)
    panel.set_selected_label("SAH")  # from elsewhere: shown, not echoed
    assert emitted == [] and panel.selected_label == "SAH"
    panel.select_label("EDH")  # by the reader
    assert emitted == ["EDH"]


def _tiny_ensemble(directory):
    e, _ = add_member(directory, "solo", seed=3)
    write_manifest(directory, [e])
    return directory


def test_controller_caches_the_ensemble_and_shuts_down_within_its_bound(qtbot, tmp_path):
    ens = _tiny_ensemble(tmp_path / "ens")
    controller = InferenceController(ens, chunk=1)
    rng = np.random.default_rng(0)
    vol = make_volume(rng.integers(-50, 80, size=(6, 16, 16)).astype(np.int16))
    with qtbot.waitSignal(controller.sig_finished, timeout=WAIT_MS):
        controller.open_volume(vol)
    loaded = controller.cache.peek(ens)
    assert loaded is not None and controller.ensemble is loaded
    with qtbot.waitSignal(controller.sig_finished, timeout=WAIT_MS) as blocker:
        controller.start()  # the same study again: no reload
    assert controller.cache.peek(ens) is loaded
    assert blocker.args[1].n_slices == 6 and np.isfinite(blocker.args[1].slice_probabilities).all()

    big = make_volume(rng.integers(-50, 80, size=(300, 16, 16)).astype(np.int16))
    late: list[int] = []
    controller.sig_finished.connect(lambda rid, _r: late.append(rid))
    controller.sig_slices_updated.connect(lambda rid, *_: late.append(rid))
    controller.open_volume(big)
    assert controller.shutdown(5000)
    qtbot.wait(20)
    assert late == []  # nothing of the cancelled study reaches the GUI after shutdown
    assert controller.open_volume(vol) == 0  # closed controllers start nothing


def test_attention_failure_is_reported_once_per_study(qtbot, tmp_path):
    d = tmp_path / "nocam"
    e, _ = add_member(d, "plain", cam=False)
    write_manifest(d, [e])
    controller = InferenceController(d)
    errors: list[str] = []
    controller.sig_error.connect(errors.append)
    vol = make_volume(np.zeros((4, 16, 16), dtype=np.int16))
    controller.open_volume(vol, run=False)
    for z in (0, 1):
        with qtbot.waitSignal(controller.sig_attention_failed, timeout=WAIT_MS) as blocker:
            controller.request_attention(z, "ANY")
        assert "no member has a CAM head" in blocker.args[1]
    assert errors == [
        "Attention maps are not available: no member has a CAM head, so there are no attention maps. "
        "The findings are not affected."
    ]
    assert controller.shutdown(5000)


def test_the_folders_other_series_are_analysed_behind_the_readers_own(qtbot, tmp_path):
    """Background analysis runs one series at a time, never beside the reader's study: a series it was
    analysing when the reader opened another goes back to the front and is finished later."""
    ens = _tiny_ensemble(tmp_path / "ens")
    controller = InferenceController(ens, chunk=1)
    rng = np.random.default_rng(4)
    waiting, other, readers = (make_volume(rng.integers(-50, 80, size=(n, 16, 16)).astype(np.int16)) for n in (60, 5, 7))
    finished_in_background: list[tuple[object, bool]] = []
    controller.sig_background_finished.connect(lambda v, _r: finished_in_background.append((v, controller.is_running)))
    stopped: list[str] = []
    controller._sig_bg_fail.connect(lambda _req, exc: stopped.append(type(exc).__name__))
    controller.queue_background([waiting, other])
    assert controller.background_pending == 2
    with qtbot.waitSignal(controller.sig_finished, timeout=WAIT_MS) as own:
        controller.open_volume(readers)  # the background job on `waiting` stops at its next slice
    qtbot.waitUntil(lambda: controller.background_pending == 0 and len(finished_in_background) == 2, timeout=WAIT_MS)
    assert stopped == ["Cancelled"]
    assert [v for v, _ in finished_in_background] == [waiting, other]  # the stopped one first again
    assert not any(running for _, running in finished_in_background)
    assert controller.result_for(waiting).n_slices == 60 and controller.result_for(readers) is own.args[1]
    # Opening a series analysed in the background shows its findings at once, with no new run.
    with qtbot.waitSignal(controller.sig_finished, timeout=1) as shown:
        controller.open_volume(other)
    assert shown.args[1] is controller.result_for(other) and not controller.is_running

    # An empty queue (a folder closed, or analysis switched off) stops the job in flight, which is not kept.
    late = make_volume(rng.integers(-50, 80, size=(200, 16, 16)).astype(np.int16))
    controller.queue_background([late])
    controller.queue_background([])
    assert controller.wait(WAIT_MS)
    qtbot.wait(20)
    assert controller.result_for(late) is None and controller.background_pending == 0
    assert len(finished_in_background) == 2
    assert controller.shutdown(5000)


def test_the_series_browser_shows_ai_verdicts_and_orders_by_them(qtbot):
    from ichviewer.qt.browser import AI_ORDER, FOLDER_ORDER, SeriesAI, SeriesRow, StudyBrowserPanel

    browser = StudyBrowserPanel()
    qtbot.addWidget(browser)
    rows = [SeriesRow(series_uid=f"1.{i}", description=f"S{i}", n_images=10, modality="CT", study_uid=f"9.{i}") for i in range(4)]
    browser.set_study("/x", rows)
    tree = browser.series_tree
    assert tree.isColumnHidden(1) and browser.order_box.isHidden()  # no AI offered, nothing to show
    browser.offer_ai(FOLDER_ORDER)
    browser.set_current_series("1.2")

    def verdict(p: float) -> SeriesAI:
        return SeriesAI(text=f"x\n{p:.2f}", tooltip=f"ANY {p:.2f}", background="#c62828", foreground="#ffffff", priority=p)

    assert browser.ai_progress.text() == "AI: 0 of 4" and not browser.ai_progress.isHidden()
    browser.set_series_ai("1.1", verdict(0.3))
    browser.set_series_ai("1.3", verdict(0.9))
    assert not tree.isColumnHidden(1) and not browser.order_box.isHidden()
    assert browser.ai_progress.text() == "AI: 2 of 4"
    assert browser.series_uids() == ["1.0", "1.1", "1.2", "1.3"]  # folder order keeps its place
    assert tree.topLevelItem(3).text(1) == "x\n0.90" and tree.topLevelItem(3).toolTip(1) == "ANY 0.90"
    orders: list[str] = []
    browser.sig_order_changed.connect(orders.append)
    browser.order_box.setCurrentIndex(browser.order_box.findData(AI_ORDER))  # as the reader picks it
    assert orders == [AI_ORDER] and browser.order == AI_ORDER
    # Analysed first, highest probability first; the rest in folder order. The current row stays current.
    assert browser.series_uids() == ["1.3", "1.1", "1.0", "1.2"]
    assert tree.currentItem().data(0, Qt.ItemDataRole.UserRole) == "1.2"
    browser.set_series_ai("1.0", verdict(0.95))  # a verdict arriving moves its row to its place
    assert browser.series_uids() == ["1.0", "1.3", "1.1", "1.2"]
    # Hidden (a blinded panel member): no verdicts, and the folder's order, which does not tell them.
    browser.set_ai_hidden(True)
    assert tree.isColumnHidden(1) and not browser.order_box.isEnabled()
    assert browser.series_uids() == ["1.0", "1.1", "1.2", "1.3"]
    browser.set_ai_hidden(False)
    assert browser.series_uids() == ["1.0", "1.3", "1.1", "1.2"] and not tree.isColumnHidden(1)
    browser.set_order(FOLDER_ORDER)
    assert browser.series_uids() == ["1.0", "1.1", "1.2", "1.3"]
    # A new folder starts with no verdicts.
    browser.set_study("/y", rows[:2])
    assert browser.series_ai("1.0") is None and tree.isColumnHidden(1)
    with pytest.raises(ValueError, match="unknown series order"):
        browser.set_order("alphabetical")


def test_background_analysis_with_damaged_models_stops_after_one_quiet_failure(qtbot, tmp_path):
    """Models that cannot load fail the first background series; the reader is told once, the rest
    are not tried, and the reader's own study says it in the panel without raising the alarm again."""
    ens = _tiny_ensemble(tmp_path / "ens")
    model = ens / "solo.onnx"
    model.write_bytes(model.read_bytes()[:-7] + b"garbage")
    controller = InferenceController(ens, chunk=2)
    rng = np.random.default_rng(5)
    volumes = [make_volume(rng.integers(-50, 80, size=(4, 16, 16)).astype(np.int16)) for _ in range(3)]
    errors: list[str] = []
    controller.sig_error.connect(errors.append)
    with qtbot.waitSignal(controller.sig_background_failed, timeout=WAIT_MS) as failed:
        controller.queue_background(volumes)
    assert failed.args[0] is volumes[0] and "checksum mismatch" in failed.args[1]
    qtbot.wait(100)
    assert controller.background_pending == 0 and errors == [failed.args[1]]
    assert all(controller.result_for(v) is None for v in volumes)
    with qtbot.waitSignal(controller.sig_failed, timeout=WAIT_MS) as told:
        controller.open_volume(volumes[1])
    assert "checksum mismatch" in told.args[1] and len(errors) == 1
    assert controller.shutdown(5000)


def test_a_series_analysed_in_an_earlier_session_shows_its_kept_findings_without_running(qtbot, tmp_path):
    """The controller gives back a kept result of the same voxels by the same models at once (a new
    session: a new controller, new volume objects); the reader's Analyse runs the models again."""
    from dataclasses import replace

    from ichviewer.inference.result_cache import ResultCache

    ens = _tiny_ensemble(tmp_path / "ens")
    rng = np.random.default_rng(9)
    volume = make_volume(rng.integers(-50, 80, size=(5, 16, 16)).astype(np.int16), series_uid="1.9")
    first = InferenceController(ens, chunk=1, kept_results=ResultCache(tmp_path / "kept"))
    with qtbot.waitSignal(first.sig_finished, timeout=WAIT_MS) as computed:
        first.open_volume(volume)
    assert not computed.args[1].restored
    assert first.shutdown(5000)

    later = InferenceController(ens, chunk=1, kept_results=ResultCache(tmp_path / "kept"))
    chunks: list[int] = []
    later.sig_slices_updated.connect(lambda _rid, a, _b, _p: chunks.append(a))
    background = make_volume(rng.integers(-50, 80, size=(4, 16, 16)).astype(np.int16), series_uid="1.10")
    with qtbot.waitSignal(later.sig_finished, timeout=WAIT_MS) as kept:
        later.open_volume(replace(volume))
    assert kept.args[1].restored and chunks == []  # no slice was run
    np.testing.assert_array_equal(kept.args[1].slice_probabilities, computed.args[1].slice_probabilities)
    # Background analysis keeps its results too: the next session has them at once.
    with qtbot.waitSignal(later.sig_background_finished, timeout=WAIT_MS):
        later.queue_background([background])
    with qtbot.waitSignal(later.sig_finished, timeout=WAIT_MS) as again:
        later.start()  # Analyse: the models run again, whatever is kept
    assert not again.args[1].restored and chunks[:1] == [0]
    assert later.shutdown(5000)
    assert len(ResultCache(tmp_path / "kept")) == 2


def test_the_probability_plot_numbers_its_axis_only_when_a_study_is_open(qtbot):
    """With nothing open the empty axis read 0.2-0.8 "Image"; it now shows no numbers and no current-image line."""
    plot = SliceProbabilityPlot()
    qtbot.addWidget(plot)
    axis = plot.plot_item.getAxis("bottom")
    assert not axis.style["showValues"] and not plot.current_line.isVisible()
    plot.set_n_slices(28)
    assert axis.style["showValues"] and plot.current_line.isVisible()
    assert plot.view_box.viewRange()[0] == pytest.approx([0.5, 28.5])
    plot.clear()
    assert not axis.style["showValues"] and not plot.current_line.isVisible()
