"""`ichviewer phantom-set`: a held-out set of synthetic studies whose labels.csv matches what the loader reads."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from ichviewer.io import load_path


def test_phantom_set_writes_studies_and_a_labels_csv_that_match(tmp_path: Path) -> None:
    out = tmp_path / "set"
    done = subprocess.run([sys.executable, "-m", "ichviewer", "phantom-set", str(out), "--n", "4", "--matrix", "64"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(out / "labels.csv", encoding="utf-8")))
    assert len(rows) == 4 and {r["kind"] for r in rows} == {"IPH 5mm", "none 5mm", "SDH 5mm", "none 5mm calcification"}
    loaded = {v.series_uid: v for v in load_path(out).volumes}
    assert set(loaded) == {r["series_uid"] for r in rows}
    for r in rows:
        folder = next(p for p in out.iterdir() if p.is_dir() and json.loads((p / "labels.json").read_text())["series_uid"] == r["series_uid"])
        per_slice = json.loads((folder / "labels.json").read_text())["slices"]
        assert int(r["any"]) == int(any(s["ANY"] for s in per_slice))
        assert int(r["sdh"]) == int(any(s["SDH"] for s in per_slice))
        assert (float(r["volume_ml"]) > 0) == bool(int(r["any"]))
        assert int(r["visible_voxels"]) >= 0 and (int(r["any"]) or int(r["visible_voxels"]) == 0)
    assert rows[3]["mimic"] == "calcification" and rows[3]["any"] == "0"
    assert [r["folder"] for r in rows] == ["0000_IPH_5mm", "0001_none_5mm", "0002_SDH_5mm", "0003_none_5mm_calcification"]
    assert int(rows[0]["visible_voxels"]) > 0  # the IPH lies in the parenchyma, clear of the skull
    # Refuses to write over an existing set.
    again = subprocess.run([sys.executable, "-m", "ichviewer", "phantom-set", str(out), "--n", "2"], capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_phantom_set_can_integrate_thick_slices(tmp_path: Path) -> None:
    plain, thick = tmp_path / "plain", tmp_path / "thick"
    for out, extra in ((plain, []), (thick, ["--thickness-planes", "5"])):
        done = subprocess.run([sys.executable, "-m", "ichviewer", "phantom-set", str(out), "--n", "2", "--matrix", "64", *extra],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    a = list(csv.DictReader(open(plain / "labels.csv", encoding="utf-8")))
    b = list(csv.DictReader(open(thick / "labels.csv", encoding="utf-8")))
    assert [r["kind"] for r in a] == [r["kind"] for r in b]
    assert not {r["series_uid"] for r in a} & {r["series_uid"] for r in b}  # other images, other series
    assert [r["any"] for r in a] == [r["any"] for r in b]
    bad = subprocess.run([sys.executable, "-m", "ichviewer", "phantom-set", str(tmp_path / "bad"), "--thickness-planes", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--thickness-planes" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "ichviewer", "phantom-set", str(tmp_path / "bad"), "--thickness-planes", "1,x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "integers separated by commas, got '1,x'" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_a_blind_phantom_set_keeps_the_answers_away_from_the_studies(tmp_path: Path) -> None:
    """For reader studies: no subtype, volume or per-slice label in the studies folder, and not in plan order."""
    import pydicom

    open_set, blind = tmp_path / "open", tmp_path / "blind"
    for out, extra in ((open_set, []), (blind, ["--blind"])):
        done = subprocess.run([sys.executable, "-m", "ichviewer", "phantom-set", str(out), "--n", "8", "--matrix", "64", *extra],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert "give readers" in done.stdout and "IPH" not in done.stderr
    a = {r["series_uid"]: r for r in csv.DictReader(open(open_set / "labels.csv", encoding="utf-8"))}
    b = list(csv.DictReader(open(blind / "labels.csv", encoding="utf-8")))
    # the same studies (same plans, same images), in another order
    assert {r["series_uid"] for r in b} == set(a) and [r["series_uid"] for r in b] != list(a)
    assert all(r[k] == a[r["series_uid"]][k] for r in b for k in ("any", "iph", "sdh", "volume_ml", "kind"))
    assert sorted(p.name for p in blind.iterdir()) == ["answer_key", "labels.csv", "studies"]
    assert [r["folder"] for r in b] == [f"studies/{i:04d}" for i in range(8)]
    for i, r in enumerate(b):
        folder = blind / r["folder"]
        assert not (folder / "labels.json").exists()
        files = sorted(folder.iterdir())
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        assert ds.SeriesDescription == f"STUDY {i:04d}" and ds.SeriesInstanceUID == r["series_uid"]
        answers = json.loads((blind / "answer_key" / f"{i:04d}.labels.json").read_text())
        assert answers["series_uid"] == r["series_uid"] and int(r["any"]) == int(any(s["ANY"] for s in answers["slices"]))
    loaded = {v.series_uid for v in load_path(blind / "studies").volumes}
    assert loaded == set(a)
