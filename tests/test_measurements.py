"""Ruler, ROI statistics and ABC/2 (ichviewer.core.measurements), and their rows in the review database."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ichviewer.core import measurements as meas
from ichviewer.core.measurements import Measurement, MeasurementError
from ichviewer.review import ReviewError, ReviewStore, export_json


def test_length_uses_the_row_and_column_spacing() -> None:
    # 3 rows of 2 mm and 4 columns of 0.75 mm: a 6 mm by 3 mm triangle leg pair.
    assert meas.length_mm((1.0, 1.0), (4.0, 5.0), (2.0, 0.75)) == pytest.approx(math.hypot(6.0, 3.0))
    assert meas.length_mm((2.0, 2.0), (2.0, 2.0), (0.5, 0.5)) == 0.0


def test_ellipse_mask_counts_the_voxels_whose_centres_are_inside() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        start = tuple(rng.uniform(-3, 40, 2))
        end = tuple(rng.uniform(-3, 40, 2))
        mask = meas.ellipse_mask((32, 36), start, end)
        cy, cx = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ry, rx = abs(end[0] - start[0]) / 2, abs(end[1] - start[1]) / 2
        brute = np.array([[((y + 0.5 - cy) / ry) ** 2 + ((x + 0.5 - cx) / rx) ** 2 <= 1 for x in range(36)]
                          for y in range(32)])
        assert np.array_equal(mask, brute)


def test_roi_statistics_of_a_blood_spot_in_brain() -> None:
    # Brain at 35 HU with a 60 HU clot covering the ROI's left half, as a reader would measure a haematoma.
    hu = np.full((64, 64), 35, dtype=np.int16)
    hu[:, :32] = 60
    stats = meas.ellipse_stats(hu, (22.0, 22.0), (42.0, 42.0), (0.5, 0.5))
    inside = hu[meas.ellipse_mask(hu.shape, (22.0, 22.0), (42.0, 42.0))].astype(float)
    assert stats.n_voxels == inside.size and inside.size > 250
    assert stats.mean_hu == pytest.approx(47.5)  # the ellipse is symmetric about column 32
    assert stats.sd_hu == pytest.approx(np.std(inside, ddof=1))
    assert (stats.min_hu, stats.max_hu) == (35.0, 60.0)
    assert stats.area_mm2 == pytest.approx(math.pi * 5.0 * 5.0)  # 20 px x 0.5 mm across: radius 5 mm
    text = meas.describe(Measurement(meas.ELLIPSE, 0, (22.0, 22.0), (42.0, 42.0)), hu, (0.5, 0.5))
    assert text.startswith("mean 48 \u00b1 13 HU  (min 35, max 60)") and "78.5 mm\u00b2" in text
    assert meas.ellipse_stats(hu, (5.1, 5.1), (5.3, 5.3), (1.0, 1.0)) is None  # no voxel centre inside
    assert "too small" in meas.describe(Measurement(meas.ELLIPSE, 0, (5.1, 5.1), (5.3, 5.3)), hu, (1.0, 1.0))


def test_abc2_worked_example_and_what_it_refuses() -> None:
    # Kothari et al.'s bedside formula: A 4 cm, B 3 cm, 5 slices of 5 mm -> 4 x 3 x 2.5 / 2 = 15 mL.
    spacing = (0.5, 0.5)
    a = Measurement(meas.LENGTH, 7, (100.0, 60.0), (100.0, 140.0))  # 80 px = 40 mm along a row
    b = Measurement(meas.LENGTH, 7, (70.0, 100.0), (130.0, 100.0))  # 60 px = 30 mm down a column
    est = meas.abc2_volume([b, a], 5, 5.0, spacing)
    assert (est.a_cm, est.b_cm, est.c_cm, est.volume_ml) == pytest.approx((4.0, 3.0, 2.5, 15.0))
    assert est.angle_deg == pytest.approx(90.0)
    assert est.describe() == "ABC/2 = 4.0 x 3.0 x 2.5 / 2 = 15.0 mL  (C = 5 slices)"
    assert meas.abc2_volume([a, b], 4.5, 5.0, spacing).volume_ml == pytest.approx(13.5)  # half slices count
    with pytest.raises(MeasurementError, match="two length measurements"):
        meas.abc2_volume([a], 5, 5.0, spacing)
    with pytest.raises(MeasurementError, match="same slice"):
        meas.abc2_volume([a, Measurement(meas.LENGTH, 8, b.start, b.end)], 5, 5.0, spacing)
    oblique = Measurement(meas.LENGTH, 7, (100.0, 100.0), (130.0, 130.0))  # 45 degrees to A
    with pytest.raises(MeasurementError, match="meets it at 45 degrees"):
        meas.abc2_volume([a, oblique], 5, 5.0, spacing)
    # B is the longest line across A, not merely the second longest (a ruler drawn twice, a stray line).
    again = Measurement(meas.LENGTH, 7, (101.0, 62.0), (101.0, 138.0))
    assert meas.abc2_volume([a, again, oblique, b], 5, 5.0, spacing).b_cm == pytest.approx(3.0)
    with pytest.raises(MeasurementError, match="more than 0"):
        meas.abc2_volume([a, b], 0, 5.0, spacing)


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "angle"}, "kind must be one of"),
    ({"slice_index": -1}, "non-negative integer"),
    ({"start": (float("nan"), 1.0)}, "two finite numbers"),
])
def test_bad_measurements_are_refused_with_a_clear_message(kwargs, message) -> None:
    fields = {"kind": meas.LENGTH, "slice_index": 0, "start": (0.0, 0.0), "end": (1.0, 1.0), **kwargs}
    with pytest.raises(MeasurementError, match=message):
        Measurement(**fields)


@pytest.fixture
def store(tmp_path: Path):
    with ReviewStore(tmp_path / "review.sqlite", actor="tester") as s:
        yield s


def test_a_withdrawn_measurement_stays_in_the_file_and_only_its_reader_can_withdraw_it(store: ReviewStore) -> None:
    ann, ben = store.add_reader("ann", "resident"), store.add_reader("ben", "attending")
    ruler = Measurement(meas.LENGTH, 4, (10.0, 12.5), (40.0, 12.5))
    row = store.add_measurement(ann, "1.2.3", ruler, "15.0 mm", study_uid="9.9")
    assert store.measurements("1.2.3", "ann") == [(ruler.with_id(row), "15.0 mm")]
    assert store.measurements("1.2.3", "ben") == []
    assert store.study("1.2.3")["study_uid"] == "9.9"
    with pytest.raises(ReviewError, match="belongs to another reader"):
        store.withdraw_measurement(row, ben)
    store.withdraw_measurement(row, ann)
    store.withdraw_measurement(row, ann)  # twice is once
    assert store.measurements("1.2.3", "ann") == []
    assert [m.id for m, _t in store.measurements("1.2.3", include_withdrawn=True)] == [row]
    assert [(a["action"], a["actor"]) for a in store.audit_log(entity="measurements")] == [("insert", "ann"), ("delete", "ann")]
    # Not even a hand-run statement rewrites or removes one.
    for sql in ("UPDATE measurements SET value_text = '99 mm'", "UPDATE measurements SET deleted_at = NULL",
                "DELETE FROM measurements"):
        with pytest.raises(sqlite3.DatabaseError, match="measurements"):
            store.conn.execute(sql)
    with pytest.raises(ReviewError, match="no measurement 77"):
        store.withdraw_measurement(77, ann)


def test_the_json_export_carries_every_measurement_with_its_reader(store: ReviewStore) -> None:
    ann = store.add_reader("ann", "resident")
    kept = store.add_measurement(ann, "1.2.3", Measurement(meas.ELLIPSE, 2, (5.0, 5.0), (9.0, 13.0)), "mean 62 HU")
    gone = store.add_measurement(ann, "1.2.3", Measurement(meas.LENGTH, 2, (1.0, 1.0), (1.0, 9.0)), "4.0 mm")
    store.withdraw_measurement(gone, ann)
    rows = {r["id"]: r for r in export_json(store)["measurements"]}
    assert rows[kept]["reader"] == "ann" and rows[kept]["value_text"] == "mean 62 HU" and rows[kept]["deleted_at"] is None
    assert (rows[kept]["y0"], rows[kept]["x0"], rows[kept]["y1"], rows[kept]["x1"]) == (5.0, 5.0, 9.0, 13.0)
    assert rows[gone]["deleted_by"] == "ann" and rows[gone]["deleted_at"]
