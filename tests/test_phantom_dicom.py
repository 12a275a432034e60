"""Phantoms as DICOM: the writer's series read back by pydicom and our loader, and the `ichviewer phantom` command."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from ichviewer import LABELS
from ichviewer.cli import main
from ichviewer.core.phantom import generate_case
from ichviewer.io import writer


@pytest.fixture(scope="module")
def small_case():
    return generate_case(9, subtype="mixed", volume_ml=8.0, mimic="metal", matrix=96)


def _read(folder):
    paths = sorted(folder.glob("IM*.dcm"))
    return paths, [pydicom.dcmread(p) for p in paths]


def test_written_series_has_ct_geometry_uids_and_hu(tmp_path, small_case):
    v = small_case.volume
    paths = writer.write_ct_series(v, tmp_path, series_description="test", patient_name="PHANTOM^SEED9", patient_age="045Y")
    assert [p.name for p in paths] == [f"IM{i + 1:04d}.dcm" for i in range(v.n_slices)]
    _, dss = _read(tmp_path)
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
    assert np.array_equal(hu, v.hu)
    d0 = dss[0]
    assert d0.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert d0.SOPClassUID == pydicom.uid.CTImageStorage and d0.Modality == "CT"
    assert list(d0.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert [float(x) for x in d0.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(x) for x in d0.PixelSpacing] == pytest.approx(v.spacing[1:])
    assert float(d0.SliceThickness) == float(d0.SpacingBetweenSlices) == v.spacing[0]
    assert str(d0.PatientName) == "PHANTOM^SEED9" and d0.PatientAge == "045Y"
    assert (float(d0.WindowCenter), float(d0.WindowWidth)) == (40.0, 80.0)
    assert {d.SeriesInstanceUID for d in dss} == {v.series_uid}
    assert {d.StudyInstanceUID for d in dss} == {v.study_uid}
    assert len({d.SOPInstanceUID for d in dss}) == v.n_slices
    z = [float(d.ImagePositionPatient[2]) for d in dss]
    assert np.allclose(z, v.slice_locations_mm, atol=1e-3) and np.all(np.diff(z) > 0)
    assert [d.InstanceNumber for d in dss] == list(range(1, v.n_slices + 1))
    assert np.allclose([float(d.SliceLocation) for d in dss], z, atol=1e-3)


def test_our_loader_reads_the_phantom_back(tmp_path, small_case):
    from ichviewer.io import load_path

    writer.write_ct_series(small_case.volume, tmp_path, series_description="loader")
    result = load_path(str(tmp_path))
    assert len(result.volumes) == 1
    got = result.volumes[0]
    assert got.shape == small_case.volume.shape
    assert np.allclose(got.spacing, small_case.volume.spacing, atol=1e-4)
    assert np.array_equal(np.asarray(got.hu, dtype=np.float32), small_case.volume.hu.astype(np.float32))
    assert got.series_uid == small_case.volume.series_uid


@pytest.mark.parametrize(
    "ts, rep",
    [
        (writer.RLE_LOSSLESS, "auto"),
        (writer.RLE_LOSSLESS, "unsigned"),
        (writer.JPEG_LS_LOSSLESS, "auto"),
        (writer.JPEG_2000_LOSSLESS, "auto"),
    ],
)
def test_compressed_series_round_trip_losslessly(tmp_path, small_case, ts, rep):
    v = small_case.volume
    writer.write_ct_series(v, tmp_path, series_description="compressed", transfer_syntax=ts, pixel_representation=rep)
    _, dss = _read(tmp_path)
    assert {d.file_meta.TransferSyntaxUID for d in dss} == {ts}
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
    assert np.array_equal(hu, v.hu)  # includes metal at 3071 and air at -1024


def test_writer_rejects_unsupported_transfer_syntax(tmp_path, small_case):
    with pytest.raises(ValueError, match="not supported"):
        writer.write_ct_series(small_case.volume, tmp_path, series_description="x", transfer_syntax="1.2.840.10008.1.2.4.50")


def test_cli_writes_series_and_labels_that_match_the_case(tmp_path, capsys):
    out = tmp_path / "case"
    args = ["phantom", str(out), "--seed", "3", "--subtype", "EDH", "--volume-ml", "12", "--matrix", "96", "--age", "child"]
    assert main(args) == 0
    assert "EDH" in capsys.readouterr().out
    case = generate_case(3, subtype="EDH", volume_ml=12.0, age="child", matrix=96)
    paths, dss = _read(out)
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
    assert np.array_equal(hu, case.volume.hu)
    assert str(dss[0].PatientName) == "PHANTOM^SEED3" and dss[0].PatientAge.endswith("Y")
    labels = json.loads((out / "labels.json").read_text())
    assert labels["series_uid"] == dss[0].SeriesInstanceUID == case.volume.series_uid
    assert labels["study_uid"] == dss[0].StudyInstanceUID
    assert (labels["seed"], labels["subtype"], labels["age"], labels["mimic"], labels["slice_mm"]) == (3, "EDH", "child", None, 5.0)
    assert labels["slices"] == case.slice_labels and len(labels["slices"]) == len(paths)
    assert all(list(s) == list(LABELS) for s in labels["slices"])
    assert labels["volume_ml"]["EDH"] == pytest.approx(12.0, rel=0.1)
    assert labels["volume_ml"]["total"] == pytest.approx(labels["volume_ml"]["EDH"])
    assert set(labels["volume_ml"]) == {"IPH", "IVH", "SDH", "EDH", "SAH", "total"}
    # Positive slices in labels.json are the slices where the lesion is.
    pos = [i for i, s in enumerate(labels["slices"]) if s["EDH"]]
    assert pos and all(case.masks["EDH"][i].any() for i in pos)

    # Same seed again: byte-identical files.
    again = tmp_path / "again"
    assert main([*args[:1], str(again), *args[2:]]) == 0
    for p in paths:
        assert (again / p.name).read_bytes() == p.read_bytes()
    assert (again / "labels.json").read_bytes() == (out / "labels.json").read_bytes()


def test_cli_rle_option_and_overwrite(tmp_path, capsys):
    out = tmp_path / "rle"
    assert main(["phantom", str(out), "--seed", "4", "--subtype", "none", "--matrix", "64", "--transfer-syntax", "rle"]) == 0
    _, dss = _read(out)
    assert dss[0].file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    assert main(["phantom", str(out), "--seed", "4", "--matrix", "64"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["phantom", str(out), "--seed", "5", "--subtype", "SAH", "--matrix", "64", "--overwrite"]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert labels["seed"] == 5 and len(list(out.glob("IM*.dcm"))) == len(labels["slices"])


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--volume-ml", "-2"], "volume_ml"),
        (["--subtype", "none", "--volume-ml", "2"], "none"),
        (["--slice-mm", "0.1"], "slice_mm"),
        (["--matrix", "10"], "matrix"),
    ],
)
def test_cli_bad_input_gives_message_and_nonzero_exit(tmp_path, capsys, extra, words):
    rc = main(["phantom", str(tmp_path / "bad"), "--seed", "1", *extra])
    err = capsys.readouterr().err
    assert rc != 0 and words in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "labels.json").exists()


def test_cli_refuses_a_folder_with_other_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["phantom", str(tmp_path), "--seed", "1", "--matrix", "64"]) == 2
    assert "other files" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
