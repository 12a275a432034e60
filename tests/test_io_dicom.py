"""The DICOM loader on the three real series, on damaged copies of them, and on compressed transfer syntaxes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from ichviewer.core.volume import CTVolume
from ichviewer.io import DicomInputError, load_path, load_volume, scan_path


def copy_series(src: Path, dst: Path, n: int | None = None) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src.iterdir() if p.name != "DIRFILE")[: n or None]
    out = []
    for f in files:
        shutil.copy(f, dst / f.name)
        out.append(dst / f.name)
    return out


# -- the real series ------------------------------------------------------------------

def test_tilted_human_head_loads_with_tilt_and_uneven_spacing(ct_data_dir: Path) -> None:
    v = load_volume(ct_data_dir / "ge-head-tilted")
    assert v.shape == (28, 512, 512)
    assert v.spacing[1:] == pytest.approx((0.48828, 0.48828), abs=1e-4)
    assert v.gantry_tilt_deg == pytest.approx(18.5, abs=0.1)
    assert not v.uniform_spacing
    assert any("gantry tilt +18.5" in w for w in v.warnings)
    assert any("uneven slice spacing" in w for w in v.warnings)
    # 4 mm through the posterior fossa then 7 mm above: uneven, but no missing slice.
    assert not any("missing slices" in w for w in v.warnings)
    assert np.all(np.diff(v.slice_locations_mm) > 0)
    # Air near -1000 and brain parenchyma 20-45 HU in the middle of the head.
    assert np.percentile(v.hu, 1) == pytest.approx(-1000, abs=40)
    mid = v.hu[16, 180:330, 180:330]
    brain = mid[(mid > 0) & (mid < 80)]
    assert 20 <= float(np.median(brain)) <= 45


def test_a_folder_of_links_to_studies_is_read_like_copies_and_a_link_loop_ends(ct_data_dir: Path, tmp_path: Path) -> None:
    # A dataset put together from symbolic links to study folders (as a site assembles one for
    # training), with a link back up the tree that must not make the scan go round for ever.
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "head").symlink_to(ct_data_dir / "ge-head-tilted", target_is_directory=True)
    (root / "phantom").symlink_to(ct_data_dir / "philips-phantom-5mm", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    result = load_path(root)
    assert sorted(v.n_slices for v in result.volumes) == [28, 28]
    assert not result.failed


def test_philips_phantom_series_load_with_even_spacing(ct_data_dir: Path) -> None:
    for name, n, dz in (("philips-phantom-5mm", 28, 5.0), ("philips-phantom-1mm", 140, 1.0)):
        result = load_path(ct_data_dir / name)
        assert len(result.volumes) == 1 and not result.failed
        v = result.volumes[0]
        assert v.shape == (n, 512, 512)
        assert v.spacing == pytest.approx((dz, 0.451171875, 0.451171875))
        assert v.uniform_spacing and v.gantry_tilt_deg == 0.0 and v.is_regular
        assert v.warnings == ()
        lo, hi = v.hu_range()
        assert lo == -1024 and 700 < hi < 1200
        assert [s.reason for s in result.skipped] == ["DICOMDIR (a directory of the media), not an image"]
        assert Path(result.skipped[0].path).name == "DIRFILE"


def test_dicomdir_path_opens_the_series_it_lists(ct_data_dir: Path) -> None:
    v = load_volume(ct_data_dir / "philips-phantom-5mm" / "DIRFILE")
    assert v.n_slices == 28


def test_slices_sorted_by_position_not_instance_number(ct_data_dir: Path, tmp_path: Path) -> None:
    files = copy_series(ct_data_dir / "philips-phantom-5mm", tmp_path / "s")
    rng = np.random.default_rng(0)
    numbers = rng.permutation(len(files)) + 1
    for f, num in zip(files, numbers):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(num)
        ds.save_as(f)
    shuffled = load_volume(tmp_path / "s")
    original = load_volume(ct_data_dir / "philips-phantom-5mm")
    np.testing.assert_array_equal(shuffled.hu, original.hu)
    assert shuffled.metadata["instance_numbers"] != sorted(shuffled.metadata["instance_numbers"])


def test_single_file_path_is_one_slice_and_rejected(ct_data_dir: Path) -> None:
    with pytest.raises(DicomInputError, match="only 1 usable slice"):
        load_volume(ct_data_dir / "philips-phantom-5mm" / "I10")


# -- bad input -------------------------------------------------------------------------

def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomInputError, match="empty folder") as e:
        load_path(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DicomInputError, match="no such file or folder"):
        load_path(tmp_path / "nope")


def test_non_ct_modality_rejected_with_message(ct_data_dir: Path, tmp_path: Path) -> None:
    for f in copy_series(ct_data_dir / "philips-phantom-5mm", tmp_path / "mr", n=4):
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    result = load_path(tmp_path / "mr")
    assert result.volumes == []
    assert "modality MR is not CT" in str(result.failed[0])
    with pytest.raises(DicomInputError, match="modality MR is not CT"):
        load_volume(tmp_path / "mr")


def test_junk_files_are_skipped_with_reasons_and_never_crash(ct_data_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "mixed"
    files = copy_series(ct_data_dir / "philips-phantom-5mm", d, n=5)
    (d / "notes.txt").write_text("not dicom")
    (d / "truncated.dcm").write_bytes(files[0].read_bytes()[:2000])
    nopix = pydicom.dcmread(files[1])
    del nopix.PixelData
    nopix.SeriesInstanceUID = pydicom.uid.generate_uid()
    nopix.save_as(d / "nopixels.dcm")
    scout = pydicom.dcmread(files[2])
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.SOPInstanceUID = pydicom.uid.generate_uid()
    scout.save_as(d / "scout.dcm")
    result = load_path(d)
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert reasons["notes.txt"].startswith("not a DICOM file")
    assert reasons["nopixels.dcm"] == "no pixel data (not an image)"
    assert reasons["scout.dcm"] == "localizer (scout) image"
    assert "truncated.dcm" in reasons or any("truncated" in str(f) for f in result.failed)
    assert len(result.volumes) == 1 and result.volumes[0].n_slices == 5


def test_a_slice_whose_pixels_cannot_be_read_is_left_out_and_named(ct_data_dir: Path, tmp_path: Path) -> None:
    files = copy_series(ct_data_dir / "philips-phantom-5mm", tmp_path / "t")
    by_pos = sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    whole = load_volume(tmp_path / "t")
    damaged = by_pos[12]
    damaged.write_bytes(damaged.read_bytes()[:-5000])  # a copy cut short: the header reads, the pixels do not
    v = load_volume(tmp_path / "t")  # the other 27 slices are shown, not the whole series refused
    assert v.n_slices == whole.n_slices - 1
    np.testing.assert_array_equal(v.hu[12], whole.hu[13])
    [unreadable] = [w for w in v.warnings if w.startswith("unreadable slices left out: 1 file(s)")]
    assert damaged.name in unreadable and "pixel data truncated" in unreadable
    assert any("missing slices: 1 gap" in w and "after image 12" in w for w in v.warnings)
    # With too few readable slices left, the series is refused, naming the damaged file.
    pair = copy_series(ct_data_dir / "philips-phantom-5mm", tmp_path / "two", n=2)
    pair[1].write_bytes(pair[1].read_bytes()[:-5000])
    result = load_path(tmp_path / "two")
    assert not result.volumes and pair[1].name in str(result.failed[0]) and "truncated" in str(result.failed[0])


def test_unsupported_transfer_syntax_message(ct_data_dir: Path, tmp_path: Path) -> None:
    for f in copy_series(ct_data_dir / "philips-phantom-5mm", tmp_path / "ts", n=3):
        ds = pydicom.dcmread(f)
        ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder exists
        ds.save_as(f, enforce_file_format=False)
    result = load_path(tmp_path / "ts")
    assert not result.volumes
    msg = str(result.failed[0]) if result.failed else "; ".join(s.reason for s in result.skipped)
    assert "unsupported transfer syntax" in msg and "MPEG2" in msg


def test_duplicates_and_gaps_are_warned(ct_data_dir: Path, tmp_path: Path) -> None:
    files = copy_series(ct_data_dir / "philips-phantom-5mm", tmp_path / "g")
    by_pos = sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    by_pos[10].unlink()  # a missing slice in the middle
    dup = pydicom.dcmread(by_pos[3])
    dup.SOPInstanceUID = pydicom.uid.generate_uid()
    dup.save_as(tmp_path / "g" / "dup.dcm")
    v = load_volume(tmp_path / "g")
    assert v.n_slices == 27
    assert any(w.startswith("duplicate slices: 1") for w in v.warnings)
    assert any(w.startswith("missing slices: 1 gap") and "after image 10 (10.0 mm)" in w for w in v.warnings)  # Im: 10 is the last before the gap
    assert not v.uniform_spacing


def test_mixed_geometry_keeps_the_majority(ct_data_dir: Path, tmp_path: Path) -> None:
    files = copy_series(ct_data_dir / "philips-phantom-5mm", tmp_path / "m", n=6)
    ds = pydicom.dcmread(files[0])
    ds.PixelSpacing = [0.6, 0.6]
    ds.save_as(files[0])
    v = load_volume(tmp_path / "m")
    assert v.n_slices == 5
    assert any(w.startswith("mixed geometry: 1 slice") for w in v.warnings)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless, "gdcm-jpeg-lossless"])
def test_compressed_series_decode_to_the_same_hu(ct_data_dir: Path, tmp_path: Path, syntax) -> None:
    files = copy_series(ct_data_dir / "philips-phantom-5mm", tmp_path / "c", n=3)
    copy_series(ct_data_dir / "philips-phantom-5mm", tmp_path / "plain", n=3)
    for f in files:
        if syntax == "gdcm-jpeg-lossless":
            import gdcm

            reader = gdcm.ImageReader()
            reader.SetFileName(str(f))
            assert reader.Read()
            change = gdcm.ImageChangeTransferSyntax()
            change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
            change.SetInput(reader.GetImage())
            assert change.Change()
            writer = gdcm.ImageWriter()
            writer.SetFileName(str(f))
            writer.SetFile(reader.GetFile())
            writer.SetImage(change.GetOutput())
            assert writer.Write()
        else:
            ds = pydicom.dcmread(f)
            ds.compress(syntax)
            ds.save_as(f)
    expected_ts = "1.2.840.10008.1.2.4.70" if syntax == "gdcm-jpeg-lossless" else str(syntax)
    assert str(pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID) == expected_ts
    compressed = load_volume(tmp_path / "c")
    plain = load_volume(tmp_path / "plain")
    assert compressed.n_slices == 3
    np.testing.assert_array_equal(compressed.hu, plain.hu)
    assert compressed.metadata["transfer_syntax"] == expected_ts


# -- geometry --------------------------------------------------------------------------

def _sheared_volume(tilt_deg: float, gaps_mm: list[float]) -> tuple[CTVolume, np.ndarray]:
    """A tilted, unevenly spaced synthetic series with a bright 6 mm ball at a known patient position."""
    t = np.radians(tilt_deg)
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(t), -np.sin(t)])
    normal = np.cross(row, col)
    direction = np.stack([row, col, normal], axis=1)
    ps = 1.0
    z_table = np.concatenate([[0.0], np.cumsum(gaps_mm)]) / np.cos(t)  # table moves along z
    origins = np.array([[-32.0, -32.0, 0.0] + np.array([0, 0, z]) for z in z_table])
    ball = np.array([0.0, 4.0, 30.0])
    hu = np.full((len(origins), 64, 64), -1000, dtype=np.int16)
    yy, xx = np.mgrid[0:64, 0:64]
    for i, o in enumerate(origins):
        world = o[None, None, :] + xx[..., None] * ps * row + yy[..., None] * ps * col
        hu[i][np.linalg.norm(world - ball, axis=-1) < 6.0] = 1000
    vol = CTVolume(hu=hu, spacing=(float(np.median(gaps_mm)), ps, ps), direction=direction, slice_origins=origins,
                   gantry_tilt_deg=tilt_deg)
    return vol, ball


def test_regularized_tilted_volume_keeps_structures_in_place() -> None:
    vol, ball = _sheared_volume(18.5, [2.0] * 14 + [3.0] * 10)
    assert not vol.is_regular and not vol.uniform_spacing
    reg = vol.regularized()
    assert reg.is_regular and reg.uniform_spacing
    assert reg.spacing[0] == pytest.approx(2.0)
    assert any("de-sheared for 18.5 deg gantry tilt" in w for w in reg.warnings)
    zz, yy, xx = np.nonzero(reg.hu > 0)
    centre = np.mean([reg.voxel_to_patient(z, y, x) for z, y, x in zip(zz, yy, xx)], axis=0)
    np.testing.assert_allclose(centre, ball, atol=1.0)
    # The original sheared stack also places it correctly: the geometry is exact, only the grid changes.
    zz, yy, xx = np.nonzero(vol.hu > 0)
    centre0 = np.mean([vol.voxel_to_patient(z, y, x) for z, y, x in zip(zz, yy, xx)], axis=0)
    np.testing.assert_allclose(centre0, ball, atol=1.5)


def test_real_tilted_series_regularizes_for_mpr(ct_data_dir: Path) -> None:
    v = load_volume(ct_data_dir / "ge-head-tilted")
    reg = v.regularized()
    assert reg.is_regular and reg.shape[0] > v.n_slices and reg.shape[1] > v.shape[1]
    assert reg.metadata["acquired_gantry_tilt_deg"] == pytest.approx(18.5, abs=0.1)
    assert "resampled to a regular grid for MPR" in reg.warnings[-1]


def test_ctvolume_constructor_refuses_invalid_volumes() -> None:
    eye = np.eye(3)
    with pytest.raises(ValueError, match="at least 2 slices"):
        CTVolume(hu=np.zeros((1, 4, 4), np.int16), spacing=(1, 1, 1), direction=eye, slice_origins=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="ascending"):
        CTVolume(hu=np.zeros((2, 4, 4), np.int16), spacing=(1, 1, 1), direction=eye,
                 slice_origins=np.array([[0, 0, 1.0], [0, 0, 0.0]]))
    with pytest.raises(ValueError, match="int16 or float32"):
        CTVolume(hu=np.zeros((2, 4, 4), np.float64), spacing=(1, 1, 1), direction=eye,
                 slice_origins=np.array([[0, 0, 0.0], [0, 0, 1.0]]))


# -- the info command ------------------------------------------------------------------

def test_info_json_describes_every_series(ct_data_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ichviewer", "info", str(ct_data_dir), "--json"],
        capture_output=True, text=True, check=True,
    )
    report = json.loads(out.stdout)
    assert sorted(s["n_slices"] for s in report["series"]) == [28, 28, 140]
    by_n = {s["n_slices"]: s for s in report["series"]}
    tilted = next(s for s in report["series"] if s["gantry_tilt_deg"])
    for key in ("study_uid", "series_uid", "modality", "n_slices", "shape", "spacing_mm", "gantry_tilt_deg",
                "uniform_spacing", "hu_min", "hu_max", "warnings"):
        assert key in tilted
    assert tilted["gantry_tilt_deg"] == pytest.approx(18.5, abs=0.1) and tilted["uniform_spacing"] is False
    assert tilted["shape"] == [28, 512, 512] and tilted["modality"] == "CT"
    assert by_n[140]["spacing_mm"] == pytest.approx([1.0, 0.4512, 0.4512], abs=1e-3)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons["DIRFILE"].startswith("DICOMDIR") and reasons["LICENSE"].startswith("not a DICOM file")


def test_info_text_names_each_series_folder(ct_data_dir: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "ichviewer", "info", str(ct_data_dir)],
                         capture_output=True, text=True, check=True).stdout
    # what `ichviewer open` takes, under each series
    for name in ("ge-head-tilted", "philips-phantom-1mm", "philips-phantom-5mm"):
        assert f"    folder: {ct_data_dir / name}\n" in out


def test_info_exits_non_zero_with_a_message_when_nothing_loads(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("hello")
    out = subprocess.run([sys.executable, "-m", "ichviewer", "info", str(tmp_path / "junk"), "--json"],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "no CT series could be loaded" in out.stderr and "junk" in out.stderr
    assert json.loads(out.stdout)["skipped"][0]["reason"].startswith("not a DICOM file")
