"""Does the series look like a head CT? (`ichviewer.core.applicability`): real DICOM, the phantom generator, the engine."""

from __future__ import annotations

import numpy as np
import pytest

from ichviewer.core.applicability import BRAIN_MEDIAN_HU, check_head_ct
from ichviewer.core.phantom import generate_case
from ichviewer.inference import load_ensemble, run_study
from ichviewer.inference.findings import REFER
from ichviewer.io.dicom import load_volume
from inference_fixtures import add_member, make_volume, write_manifest


def test_real_head_fits_and_the_air_filled_skull_phantom_does_not(ct_data_dir):
    head = check_head_ct(load_volume(ct_data_dir / "ge-head-tilted"))
    assert head.applicable and head.reason == ""
    assert 20 <= head.intracranial_median_hu <= 40 and head.slices_assessed >= 10  # brain, on most slices
    for name in ("philips-phantom-5mm", "philips-phantom-1mm"):
        check = check_head_ct(load_volume(ct_data_dir / name))
        assert not check.applicable
        assert check.intracranial_median_hu < -500  # the skull holds air and test inserts
        assert "not brain" in check.reason and "phantom" in check.reason
        assert check.to_dict()["applicable"] is False


def test_a_head_whose_skull_the_field_of_view_cuts_on_one_side_still_fits(ct_data_dir):
    # A tight or off-centre field of view: the real head with its skull cut 0.4 cm (110 px) and
    # 1.4 cm (130 px) into the right side of every slice. Slices where the cut leaves no closed
    # ring are not assessed; the vertex and skull-base slices, narrower, still close.
    from types import SimpleNamespace

    v = load_volume(ct_data_dir / "ge-head-tilted")
    assert (v.hu[15, 256, :110] >= 300).any()  # the cut goes through the skull on the middle slice
    for cut in (110, 130):
        cropped = SimpleNamespace(hu=v.hu[:, :, cut:], spacing=v.spacing, metadata={})
        check = check_head_ct(cropped)
        assert check.applicable and check.slices_assessed >= 3, (cut, check)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seed=3, subtype="none"),
        dict(seed=4, subtype="none", age="child"),
        dict(seed=5, subtype="none", slice_mm=1.0),
        dict(seed=6, subtype="IPH", volume_ml=80.0),  # a large haematoma raises the median, not out of range
        dict(seed=7, subtype="SDH", volume_ml=60.0, age="child"),
        dict(seed=8, subtype="none", mimic="metal"),
        dict(seed=9, subtype="none", mimic="beam-hardening"),
    ],
)
def test_synthetic_heads_of_every_kind_fit(kwargs):
    check = check_head_ct(generate_case(matrix=256, **kwargs).volume)
    assert check.applicable, check.reason
    assert BRAIN_MEDIAN_HU[0] <= check.intracranial_median_hu <= BRAIN_MEDIAN_HU[1]


def _ring_volume(inside_hu: int, skull: bool = True):
    """Six slices of a 16 cm disc of `inside_hu`, in a 8 mm skull of 1,200 HU (or none), in air."""
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 64, xx - 64)
    img = np.full((128, 128), -1000, np.int16)
    img[r < 55] = inside_hu
    if skull:
        img[(r >= 50) & (r < 55)] = 1200
    return make_volume(np.repeat(img[None], 6, axis=0), spacing=(5.0, 1.6, 1.6))


def test_what_the_skull_encloses_decides():
    assert check_head_ct(_ring_volume(30)).applicable
    air = check_head_ct(_ring_volume(-1000))
    assert not air.applicable and air.intracranial_median_hu == pytest.approx(-1000) and air.slices_assessed == 6
    fat = check_head_ct(_ring_volume(-100))  # just outside the limits: not brain either
    assert not fat.applicable and "not brain" in fat.reason
    no_skull = check_head_ct(_ring_volume(30, skull=False))  # a water cylinder: soft tissue, but no head
    assert not no_skull.applicable and no_skull.intracranial_median_hu is None
    assert "no slice shows a closed skull" in no_skull.reason


def test_engine_never_triages_a_series_that_is_not_a_head_as_confident(tmp_path):
    # Triage thresholds that call every study "confident negative": only the check can make it "refer".
    entry = add_member(tmp_path, "alpha", seed=1)[0]
    write_manifest(tmp_path, [entry], negative_below=1.0, positive_above=1.0)
    ensemble = load_ensemble(tmp_path)
    head = run_study(_ring_volume(30), ensemble)
    assert head.head_check.applicable and head.triage == "confident negative"
    phantom = run_study(_ring_volume(-1000), ensemble)
    assert not phantom.applicable and phantom.triage == REFER
    np.testing.assert_array_equal(np.isnan(phantom.slice_probabilities), False)  # read all the same
    assert phantom.to_dict()["head_check"]["applicable"] is False and phantom.to_dict()["triage"] == REFER


def test_a_series_with_slices_missing_is_never_triaged_as_confident(tmp_path, ct_data_dir):
    """A confident negative on a series the loader could not read whole would be a guess about the
    slices the AI never saw: the result says the series is incomplete and the triage is "refer"."""
    import dataclasses

    entry = add_member(tmp_path, "alpha", seed=1)[0]
    write_manifest(tmp_path, [entry], negative_below=1.0, positive_above=1.0)  # every whole head: confident negative
    ensemble = load_ensemble(tmp_path)
    whole = _ring_volume(30)
    assert run_study(whole, ensemble).triage == "confident negative"
    for warning in ("unreadable slices left out: 2 file(s) (IM0003.dcm: pixel data truncated)",
                    "missing slices: 1 gap(s) larger than 1.5x the median spacing, after image 3 (10.0 mm)"):
        holed = dataclasses.replace(whole, warnings=("uneven slice spacing: ...", warning))
        result = run_study(holed, ensemble)
        assert result.applicable and result.incomplete == warning and result.triage == REFER
        assert result.to_dict()["incomplete"] == warning and result.to_dict()["triage"] == REFER
    # The loader's own warnings, on the real GE head with a file truncated, lead there too.
    import shutil

    folder = tmp_path / "ge"
    shutil.copytree(ct_data_dir / "ge-head-tilted", folder)
    victim = sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_size > 100_000)[5]
    victim.write_bytes(victim.read_bytes()[:-5000])
    volume = load_volume(folder)
    result = run_study(volume, ensemble)
    assert result.incomplete.startswith("unreadable slices left out: 1 file(s)") and result.triage == REFER


@pytest.mark.gui
def test_findings_panel_says_why_before_the_verdict(qtbot, tmp_path):
    from ichviewer.qt.findings_panel import FindingsPanel

    entry = add_member(tmp_path, "alpha", seed=1)[0]
    write_manifest(tmp_path, [entry])
    ensemble = load_ensemble(tmp_path)
    panel = FindingsPanel()
    qtbot.addWidget(panel)
    panel.finish(run_study(_ring_volume(-1000), ensemble))
    text = panel.status.text()
    assert text.startswith("\u26a0 Does not look like a head CT: the skull encloses -1000 HU")
    assert "Triage withheld (refer)" in text and panel.triage_badge.text().lower() == "refer"
    assert "color" in panel.status.styleSheet()
    panel.finish(run_study(_ring_volume(30), ensemble))  # the next study is a head: no warning left behind
    assert not panel.status.text().startswith("\u26a0") and panel.status.styleSheet() == ""
    # A head with slices missing: said first, in amber, and the Series list's verdict is on the refer colour.
    import dataclasses

    from ichviewer.qt.findings_panel import TRIAGE_STYLE, series_ai

    holed = run_study(dataclasses.replace(_ring_volume(30), warnings=("missing slices: 1 gap(s) ...",)), ensemble)
    panel.finish(holed)
    assert panel.status.text().startswith("\u26a0 Series incomplete (missing slices: 1 gap(s) ...): the AI has not seen")
    assert panel.triage_badge.text().lower() == "refer" and "color" in panel.status.styleSheet()
    verdict = series_ai(holed)
    assert verdict.background == TRIAGE_STYLE["refer"][0] and "Series incomplete" in verdict.tooltip
    assert "Series incomplete" in panel.summary


@pytest.mark.parametrize(("agent", "flagged"), [("OMNIPAQUE 350", True), ("NONE", False), ("", False)])
def test_a_contrast_agent_in_the_dicom_header_is_flagged(ct_data_dir, tmp_path, agent, flagged):
    import pydicom

    # The real head series, re-written with Contrast/Bolus Agent (0018,0010) set as a scanner would.
    for src in sorted((ct_data_dir / "ge-head-tilted").iterdir()):
        ds = pydicom.dcmread(src)
        ds.ContrastBolusAgent = agent
        ds.save_as(tmp_path / src.name)
    volume = load_volume(tmp_path)
    check = check_head_ct(volume)
    assert check.applicable is (not flagged)
    if flagged:
        assert volume.metadata["contrast_agent"] == "OMNIPAQUE 350"
        assert "contrast agent ('OMNIPAQUE 350')" in check.reason and "non-contrast" in check.reason
