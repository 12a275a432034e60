"""Thick-slab display of thin series: the slices a slab takes, its image, and the viewer's key and menu."""

from __future__ import annotations

import numpy as np
import pytest

from ichviewer.core.slab import AVERAGE, MIP, Slab, slab_image


def test_a_slab_takes_the_slices_within_its_thickness_centred_and_clipped() -> None:
    five = Slab(5.0)
    assert list(five.slice_range(10, 40, 1.0)) == [8, 9, 10, 11, 12]
    assert list(five.slice_range(0, 40, 1.0)) == [0, 1, 2]  # clipped at the ends of the series
    assert list(five.slice_range(39, 40, 1.0)) == [37, 38, 39]
    assert list(five.slice_range(10, 40, 0.625)) == list(range(7, 15))  # 8 slices of 0.625 mm
    assert list(Slab(3.0).slice_range(10, 40, 1.5)) == [10, 11]  # two slices: one more above
    assert list(five.slice_range(10, 40, 5.0)) == [10]  # a 5 mm series is already as thick
    assert list(Slab().slice_range(10, 40, 1.0)) == [10]  # off
    assert five.describe(five.slice_range(10, 40, 1.0)) == "Slab: 5 mm avg (images 9-13)"
    for bad in (dict(thickness_mm=-1.0), dict(thickness_mm=float("nan")), dict(thickness_mm=80.0), dict(mode="minip")):
        with pytest.raises(ValueError, match="slab"):
            Slab(**bad)


def test_the_slab_image_is_the_mean_or_the_maximum_of_its_slices() -> None:
    rng = np.random.default_rng(0)
    planes = rng.integers(-20, 90, size=(12, 6, 7)).astype(np.int16)
    planes[6, 2, 3] = 400  # a dense dot on one thin slice
    avg, images = slab_image(planes, 5, 1.0, Slab(5.0, AVERAGE))
    assert list(images) == [3, 4, 5, 6, 7] and avg.dtype == np.float32
    np.testing.assert_allclose(avg, planes[3:8].astype(np.float64).mean(axis=0), rtol=1e-6)
    mip, _ = slab_image(planes, 5, 1.0, Slab(5.0, MIP))
    assert mip.dtype == np.int16 and mip[2, 3] == 400 and np.array_equal(mip, planes[3:8].max(axis=0))
    same, images = slab_image(planes, 5, 5.0, Slab(5.0))
    assert np.shares_memory(same, planes) and list(images) == [5]
