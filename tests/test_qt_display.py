"""Display geometry and windowing of the slice views (radiological orientation, RGB32 LUT, series names)."""

from __future__ import annotations

import numpy as np
import pytest

from ichviewer.core.volume import CTVolume
from ichviewer.core.windowing import Window, WindowLUT, load_presets, window_to_uint8
from ichviewer.qt.display import Orientation, apply_window, apply_window_rgb32, grey_of, grid_point, patient_point, series_label


@pytest.mark.parametrize("window", load_presets())
def test_rgb32_window_matches_the_reference_lut_for_every_preset(window):
    rng = np.random.default_rng(0)
    hu = rng.integers(-32768, 32767, size=(64, 64), dtype=np.int16)
    hu[0, :8] = [-1024, -1000, 0, 40, 80, 600, 2000, 3071]
    expected = WindowLUT(window).apply(hu)
    rgb = apply_window_rgb32(hu, window)
    assert rgb.dtype == np.uint32 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(grey_of(rgb), expected)
    np.testing.assert_array_equal(rgb >> 24, 255)  # opaque
    np.testing.assert_array_equal(apply_window(hu, window), expected)
    f = hu.astype(np.float32)
    np.testing.assert_array_equal(grey_of(apply_window_rgb32(f, window)), window_to_uint8(f, window))


def test_brain_window_maps_blood_brighter_than_brain_and_saturates_bone():
    brain = Window(80, 40, "Brain")
    grey = grey_of(apply_window_rgb32(np.array([[0, 30, 70, 1000]], np.int16), brain))[0]
    assert grey[0] < grey[1] < grey[2] < grey[3] == 255


def test_standard_axial_orientation_is_radiological_without_flips():
    o = Orientation.for_direction(np.eye(3))
    assert o == Orientation(False, False, False)
    a = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(o.plane(a), a)


@pytest.mark.parametrize(
    "direction, first_screen_pixel",
    [
        # Rows run toward the patient's right: the last column is the patient's right, shown at screen left.
        (np.array([[-1, 0, 0], [0, 1, 0], [0, 0, -1]], float), (0, 3)),
        # Columns run anterior: the last row is the most anterior, shown at the top.
        (np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1]], float), (2, 0)),
    ],
)
def test_flipped_directions_are_mirrored_back_to_radiological(direction, first_screen_pixel):
    o = Orientation.for_direction(direction)
    a = np.arange(12).reshape(3, 4)
    assert o.plane(a)[0, 0] == a[first_screen_pixel]
    for y, x in [(0.5, 0.5), (2.5, 1.5), (1.2, 3.9)]:
        r, c = o.voxel_to_screen(y, x, 3, 4)
        assert o.screen_to_voxel(r, c, 3, 4) == pytest.approx((y, x))


def test_transposed_rows_are_turned_so_anterior_is_up():
    # DICOM rows run posterior (+Y), columns run to the patient's left (+X): transpose.
    d = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]], float)
    o = Orientation.for_direction(d)
    assert o.transpose
    a = np.arange(12).reshape(3, 4)
    assert o.plane(a).shape == (4, 3)
    r, c = o.voxel_to_screen(0.5, 3.5, 3, 4)
    assert o.screen_to_voxel(r, c, 3, 4) == pytest.approx((0.5, 3.5))


def _volume(description="", metadata=None) -> CTVolume:
    hu = np.zeros((3, 4, 5), np.int16)
    origins = np.array([[0, 0, 0], [0, 0, 5], [0, 0, 10]], float)
    return CTVolume(hu=hu, spacing=(5.0, 0.5, 0.5), direction=np.eye(3), slice_origins=origins,
                    series_description=description, metadata=metadata or {})


def test_patient_point_and_grid_point_are_inverse_on_a_regular_grid():
    v = _volume()
    p = patient_point(v, 2, 1.5, 3.5)  # centre of voxel (2, 1, 3)
    np.testing.assert_allclose(p, v.voxel_to_patient(2, 1, 3))
    assert grid_point(v, p) == pytest.approx((10.0, 1.5, 3.5))


def test_series_label_falls_back_to_study_and_scanner():
    assert series_label(_volume("STD BRAIN 5MM")) == "STD BRAIN 5MM"
    label = series_label(_volume("", {"study_description": "HEAD", "manufacturer": "GE", "model": "HiSpeed"}))
    assert label == "HEAD \u2014 GE HiSpeed"
    assert series_label(_volume()) == "Unnamed series"
