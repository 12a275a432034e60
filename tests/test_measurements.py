"""Ruler, ROI statistics and ABC/2 (ichviewer.core.measurements), and their rows in the review database."""

from __future__ import annotations

import math
import sqlite3

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


def test_a_volume_records_how_it_was_grown_and_an_older_file_is_upgraded(tmp_path) -> None:
    from sqlite_utils import Database

    from ichviewer.review.schema import migrations

    path = tmp_path / "old.sqlite"
    db = Database(path)
    migrations.apply(db, stop_before="0005_measurement_necks")  # a file written before the column
    db.conn.execute("INSERT INTO readers (name, role, created_by, created_at) VALUES ('ann', 'resident', 'x', 'now')")
    db.conn.execute("INSERT INTO studies (series_uid, created_by, created_at) VALUES ('1.2.3', 'x', 'now')")
    for kind, lo, hi in (("volume", 50.0, 100.0), ("length", None, None)):
        db.conn.execute("INSERT INTO measurements (series_uid, reader_id, slice_index, kind, y0, x0, y1, x1, hu_low,"
                        " hu_high, value_text, created_by, created_at) VALUES ('1.2.3', 1, 2, ?, 5, 5, 5, 5, ?, ?, 't',"
                        " 'ann', 'now')", (kind, lo, hi))
    db.conn.commit()
    db.close()
    with ReviewStore(path, actor="tester") as store:
        assert store.applied_migrations == ["0005_measurement_necks", "0006_measurement_image"]
        # the volumes stored before were grown following every connection: they are shown that way
        assert [m.cut_necks for m, _t in store.measurements("1.2.3")] == [False, None]
        new = store.add_measurement("ann", "1.2.3", Measurement(meas.VOLUME, 2, (6.0, 6.0), (6.0, 6.0)), "2.0 mL")
        assert store.measurements("1.2.3")[-1][0].cut_necks is True
        for sql in ("UPDATE measurements SET cut_necks = 1 - cut_necks WHERE kind = 'volume'",
                    "INSERT INTO measurements (series_uid, reader_id, slice_index, kind, y0, x0, y1, x1, cut_necks,"
                    " value_text, created_by, created_at) VALUES ('1.2.3', 1, 2, 'length', 1, 1, 2, 2, 1, 't', 'ann', 'now')",
                    "INSERT INTO measurements (series_uid, reader_id, slice_index, kind, y0, x0, y1, x1, hu_low, hu_high,"
                    " value_text, created_by, created_at) VALUES ('1.2.3', 1, 2, 'volume', 1, 1, 1, 1, 50, 90, 't', 'ann', 'now')"):
            with pytest.raises(sqlite3.DatabaseError, match="measurements"):
                store.conn.execute(sql)
        store.withdraw_measurement(new, "ann")  # withdrawing still works
        assert export_json(store)["measurements"][-1]["cut_necks"] == 1


def test_a_measurement_records_its_image_by_sop_instance_uid_once(store: ReviewStore) -> None:
    ann = store.add_reader("ann", "resident")
    with_image = store.add_measurement(ann, "1.2.3", Measurement(meas.LENGTH, 4, (1.0, 1.0), (1.0, 9.0),
                                                                 sop_instance_uid="1.2.3.4.5"), "4.0 mm")
    store.add_measurement(ann, "1.2.3", Measurement(meas.LENGTH, 5, (1.0, 1.0), (1.0, 9.0)), "4.0 mm")  # no UID in the series
    [(a, _), (b, _)] = store.measurements("1.2.3", ann)
    assert (a.id, a.sop_instance_uid, a.slice_index) == (with_image, "1.2.3.4.5", 4) and b.sop_instance_uid is None
    assert a.with_id(99).sop_instance_uid == "1.2.3.4.5"
    for sql in ("UPDATE measurements SET sop_instance_uid = '9.9' WHERE id = ?",
                "UPDATE measurements SET sop_instance_uid = NULL WHERE id = ?"):
        with pytest.raises(sqlite3.DatabaseError, match="can only be withdrawn"):
            store.conn.execute(sql, (with_image,))
    assert export_json(store)["measurements"][0]["sop_instance_uid"] == "1.2.3.4.5"


def test_the_json_export_carries_every_measurement_with_its_reader(store: ReviewStore) -> None:
    ann = store.add_reader("ann", "resident")
    kept = store.add_measurement(ann, "1.2.3", Measurement(meas.ELLIPSE, 2, (5.0, 5.0), (9.0, 13.0)), "mean 62 HU")
    gone = store.add_measurement(ann, "1.2.3", Measurement(meas.LENGTH, 2, (1.0, 1.0), (1.0, 9.0)), "4.0 mm")
    store.withdraw_measurement(gone, ann)
    rows = {r["id"]: r for r in export_json(store)["measurements"]}
    assert rows[kept]["reader"] == "ann" and rows[kept]["value_text"] == "mean 62 HU" and rows[kept]["deleted_at"] is None
    assert (rows[kept]["y0"], rows[kept]["x0"], rows[kept]["y1"], rows[kept]["x1"]) == (5.0, 5.0, 9.0, 13.0)
    assert rows[gone]["deleted_by"] == "ann" and rows[gone]["deleted_at"]


def test_a_grown_volume_counts_the_phantom_haematoma_it_was_clicked_in() -> None:
    from ichviewer.core.phantom import generate_case

    case = generate_case(5, subtype="IPH", volume_ml=5.0, matrix=256)
    truth = case.masks["IPH"]
    seed = tuple(int(round(v)) for v in np.argwhere(truth).mean(axis=0))
    region = meas.grow_region(case.volume.hu, case.volume.spacing, seed)
    assert region.volume_ml == pytest.approx(case.volume_ml["IPH"], rel=0.03)
    grown = np.zeros(truth.shape, bool)
    grown[region.z0 : region.z0 + len(region.mask)] = region.mask
    assert (grown & truth).sum() / (grown | truth).sum() > 0.9  # the same voxels, not just as many
    assert region.slices == int(truth.any(axis=(1, 2)).sum()) and not region.touches_limit
    assert 50 <= region.mean_hu <= 90
    text = meas.describe_volume(region, meas.DEFAULT_BLOOD_HU)
    assert text.startswith(f"{meas.format_ml(region.volume_ml)} (") and "50 to 100 HU" in text and "leaked" not in text
    brain = (seed[0], seed[1], seed[2] - 40)  # normal brain beside it, 20-45 HU
    with pytest.raises(MeasurementError, match="outside the blood range 50 to 100 HU"):
        meas.grow_region(case.volume.hu, case.volume.spacing, brain)


def test_a_grown_volume_keeps_off_bone_and_says_when_it_ran_to_its_limit(monkeypatch) -> None:
    hu = np.full((12, 100, 100), 35.0)
    hu[:, :, 90:] = 1200.0  # a skull to the right, with a 70 HU partial-volume band against it
    hu[:, :, 89] = 70.0
    hu[4:7, 40:50, 78:89] = 70.0  # a 330-voxel clot against the band (an extra-axial collection)
    spacing = (5.0, 0.5, 0.5)
    region = meas.grow_region(hu, spacing, (5, 45, 83))
    # The band is left out, so the region does not run round the skull; the in-plane median moves
    # the clot's outline by a voxel here and there (its corners), not its size.
    assert not region.mask[..., 89].any() and region.slices == 3
    rows = np.flatnonzero(region.mask.any(axis=(0, 2)))
    assert rows.min() >= 39 and rows.max() <= 50
    assert abs(region.n_voxels - 330) <= 10 and region.volume_ml == pytest.approx(region.n_voxels * 1.25 / 1000)
    monkeypatch.setattr(meas, "BONE_MARGIN_PIXELS", 0)
    # without the margin and following every connection: the whole band
    assert meas.grow_region(hu, spacing, (5, 45, 83), cut_necks=False).slices == 12
    # the band is 0.5 mm wide: with necks cut the clot keeps at most NECK_RESTORE_MM of it on its slices
    cut = meas.grow_region(hu, spacing, (5, 45, 83))
    assert cut.slices == 3 and cut.connections == "cut"
    assert np.ptp(np.flatnonzero(cut.mask[..., 89].any(axis=0))) <= 10 + 2 * meas.NECK_RESTORE_MM / 0.5
    monkeypatch.undo()
    long_bar = np.full((3, 40, 600), 35.0)
    long_bar[1, 19:22, :] = 70.0  # 300 mm of a 1.5 mm blood-density band: it reaches the 80 mm limit
    leak = meas.grow_region(long_bar, (5.0, 0.5, 0.5), (1, 20, 10))
    assert leak.connections == "all-thin"  # too thin to cut anywhere near the click: followed, and said
    text = meas.describe_volume(leak, meas.DEFAULT_BLOOD_HU)
    assert leak.touches_limit and "may have leaked" in text and "thinner than 2 mm where clicked" in text
    with pytest.raises(MeasurementError, match="edge of bone"):
        meas.grow_region(hu, spacing, (5, 10, 89))
    with pytest.raises(MeasurementError, match="around the clicked voxel the slice is 35 HU"):
        one_voxel = hu.copy()
        one_voxel[8, 10, 10] = 70.0  # a single bright voxel is noise, not a haematoma
        meas.grow_region(one_voxel, spacing, (8, 10, 10))
    with pytest.raises(MeasurementError, match="outside the series"):
        meas.grow_region(hu, spacing, (12, 0, 0))
    with pytest.raises(MeasurementError, match="low below high"):
        Measurement(meas.VOLUME, 0, (1.0, 1.0), (1.0, 1.0), hu_range=(90.0, 50.0))
    with pytest.raises(MeasurementError, match="only a volume has an HU range and a growing method"):
        Measurement(meas.LENGTH, 0, (1.0, 1.0), (2.0, 2.0), cut_necks=True)
    assert Measurement(meas.VOLUME, 0, (1.0, 1.0), (1.0, 1.0)).cut_necks is True  # the default


def test_volumes_below_a_millilitre_keep_two_decimals() -> None:
    assert [meas.format_ml(v) for v in (0.0312, 0.994, 0.996, 12.34)] == ["0.03 mL", "0.99 mL", "1.0 mL", "12.3 mL"]
    one_slice = meas.GrownRegion(np.ones((1, 2, 2), bool), 3, 0.004, 4, 70.0, False)
    assert meas.describe_volume(one_slice, (50.0, 100.0)).startswith("0.00 mL (4 voxels, 1 slice, mean 70 HU")


def test_a_clot_joined_to_a_thin_ribbon_is_measured_without_the_ribbon_when_necks_are_cut() -> None:
    # A 2.3 mL clot (30 x 30 pixels at 0.5 mm, 5 slices of 5 mm ... on 3 of them) touching a 1 mm
    # ribbon of the blood range that runs 120 mm round the "head", as beam-hardened cortex does.
    hu = np.full((7, 120, 400), 30.0)
    hu[2:5, 40:70, 40:70] = 70.0
    hu[1:6, 55:57, 70:] = 58.0  # the ribbon starts at the clot's edge and runs out of it on 5 slices
    spacing = (5.0, 0.5, 0.5)
    clot_ml = 3 * 30 * 30 * 5.0 * 0.25 / 1000.0
    followed = meas.grow_region(hu, spacing, (3, 55, 55), cut_necks=False)
    assert followed.touches_limit and followed.volume_ml > clot_ml + 0.4 and followed.connections == "all"
    assert "thin connections followed" in meas.describe_volume(followed, meas.DEFAULT_BLOOD_HU)
    cut = meas.grow_region(hu, spacing, (3, 55, 55))
    assert not cut.touches_limit and cut.connections == "cut" and cut.slices == 3
    ribbon_kept = 3 * 2 * (meas.NECK_RESTORE_MM + meas.NECK_MM / 2) / 0.5  # at most this far along it, 3 slices
    assert clot_ml - 0.02 <= cut.volume_ml <= clot_ml + ribbon_kept * 1.25 / 1000.0
    assert "\n" not in meas.describe_volume(cut, meas.DEFAULT_BLOOD_HU)  # the default method: nothing to add
    # A click on the clot's edge (where a 2 mm disc does not fit) is the clot's, not the ribbon's.
    assert meas.grow_region(hu, spacing, (3, 40, 45)).n_voxels == cut.n_voxels
    # A click on the ribbon far from the clot measures what was clicked (followed, and said), never
    # the clot alone without the voxel clicked.
    far = meas.grow_region(hu, spacing, (3, 55, 300))
    assert far.connections == "all-thin" and far.slice_mask(3)[55, 300] and far.touches_limit


def test_necks_cut_keep_phantom_clots_and_stop_a_click_in_the_real_cortex_running_round_the_head(ct_data_dir) -> None:
    from scipy import ndimage

    from ichviewer.core.phantom import generate_case
    from ichviewer.io.dicom import load_volume

    for subtype, volume_ml, seed in (("IPH", 5.0, 5), ("SDH", 20.0, 11)):
        case = generate_case(seed, subtype=subtype, volume_ml=volume_ml, matrix=256)
        depth = ndimage.distance_transform_edt(case.masks[subtype], sampling=case.volume.spacing)
        click = tuple(int(v) for v in np.unravel_index(np.argmax(depth), depth.shape))  # its thickest part
        followed = meas.grow_region(case.volume.hu, case.volume.spacing, click, cut_necks=False)
        cut = meas.grow_region(case.volume.hu, case.volume.spacing, click)
        assert cut.connections == "cut" and cut.volume_ml == pytest.approx(followed.volume_ml, rel=0.04)
    # The real GE head: cortex against the inner table that beam hardening lifts above 50 HU (three of
    # 40 clicks sampled in the intracranial blood range: followed, 31 of the 40 grew past 4 mL; with
    # necks cut, 4 of the 34 on parts at least 2 mm wide, three of them along the sagittal sinus). Followed,
    # each of these runs round the skull to the limit.
    v = load_volume(ct_data_dir / "ge-head-tilted")
    for click in ((11, 377, 171), (14, 315, 114), (20, 428, 221)):
        followed = meas.grow_region(v.hu, v.spacing, click, cut_necks=False)
        cut = meas.grow_region(v.hu, v.spacing, click)
        assert followed.volume_ml > 20.0 and followed.touches_limit
        assert cut.volume_ml < 1.0 and not cut.touches_limit
