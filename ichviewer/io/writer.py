"""Write a CTVolume as a DICOM CT Image Storage series (one file per slice), optionally compressed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ichviewer.core.volume import CTVolume

#: Transfer syntaxes `write_ct_series` can produce (all lossless).
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
SUPPORTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    RLE_LOSSLESS,
    JPEG_LS_LOSSLESS,
    JPEG_2000_LOSSLESS,
)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Stored values are HU + this offset in the unsigned representation (a common scanner choice).
UNSIGNED_OFFSET = 1024
#: A fixed date keeps phantoms byte-identical from run to run.
DEFAULT_DATE = "20260101"


def _ds(v: float) -> str:
    """A Decimal String of at most 16 characters that round-trips the value as closely as fits."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(v))


def write_ct_series(
    volume: CTVolume,
    out_dir: str | os.PathLike[str],
    *,
    series_description: str,
    patient_id: str = "PHANTOM",
    patient_name: str | None = None,
    patient_age: str | None = None,
    patient_sex: str = "O",
    study_description: str = "SYNTHETIC HEAD CT",
    study_date: str = DEFAULT_DATE,
    series_number: int = 1,
    window: tuple[float, float] = (40.0, 80.0),
    transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
    pixel_representation: str = "auto",
    file_prefix: str = "IM",
) -> list[Path]:
    """Write one DICOM file per slice of `volume` into `out_dir` and return their paths in slice order.

    The series is CT Image Storage, axial ORIGINAL\\PRIMARY, with the volume's geometry
    (ImagePositionPatient per slice, ImageOrientationPatient from its direction,
    PixelSpacing, SliceThickness, SpacingBetweenSlices, SliceLocation) and UIDs: the
    study and series UIDs are the volume's, the SOP instance and frame-of-reference
    UIDs derive deterministically from the series UID, so the same volume always gives
    the same bytes. `window` is the brain (level, width) stored as WindowCenter/Width.

    `pixel_representation`: "signed" stores int16 HU (intercept 0), "unsigned" stores
    12-bit HU + 1024 (intercept -1024); "auto" uses signed for uncompressed and RLE and
    unsigned for JPEG-LS and JPEG 2000, whose encoders handle unsigned data best.
    `transfer_syntax` is one of `SUPPORTED_TRANSFER_SYNTAXES` (all lossless).
    Raises ValueError on a volume or argument that cannot be written.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(
            f"transfer syntax {transfer_syntax} is not supported for writing; use one of {', '.join(SUPPORTED_TRANSFER_SYNTAXES)}"
        )
    if pixel_representation not in ("auto", "signed", "unsigned"):
        raise ValueError(f"pixel_representation must be auto, signed or unsigned, got {pixel_representation!r}")
    if not volume.series_uid or not volume.study_uid:
        raise ValueError("the volume needs a study_uid and a series_uid to be written as DICOM")
    signed = pixel_representation == "signed" or (
        pixel_representation == "auto" and transfer_syntax in (EXPLICIT_VR_LITTLE_ENDIAN, RLE_LOSSLESS)
    )
    hu = np.asarray(volume.hu)
    if hu.dtype != np.int16:
        hu = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    lo, hi = int(hu.min()), int(hu.max())
    if not signed and (lo < -UNSIGNED_OFFSET or hi > 4095 - UNSIGNED_OFFSET):
        raise ValueError(f"HU range {lo}..{hi} does not fit 12-bit unsigned storage (-1024..3071); use signed")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    direction = volume.direction
    iop = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    locations = volume.slice_locations_mm
    dz, dy, dx = volume.spacing
    frame_uid = generate_uid(entropy_srcs=[volume.series_uid, "frame-of-reference"])
    patient_name = patient_name or f"{patient_id}^ANONYMOUS"
    paths: list[Path] = []
    for i in range(volume.n_slices):
        sop_uid = generate_uid(entropy_srcs=[volume.series_uid, "instance", str(i)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
        meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = UID(CT_IMAGE_STORAGE)
        ds.SOPInstanceUID = UID(sop_uid)
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "ICH Viewer synthetic phantom"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = study_description
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = patient_sex
        if patient_age:
            ds.PatientAge = patient_age
        ds.BodyPartExamined = "HEAD"
        ds.KVP = "120"
        ds.StudyInstanceUID = UID(volume.study_uid)
        ds.SeriesInstanceUID = UID(volume.series_uid)
        ds.StudyID = "1"
        ds.SeriesNumber = int(series_number)
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = i + 1
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = UID(frame_uid)
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [_ds(v) for v in volume.slice_origins[i]]
        ds.ImageOrientationPatient = iop
        ds.SliceThickness = _ds(dz)
        ds.SpacingBetweenSlices = _ds(dz)
        ds.SliceLocation = _ds(locations[i])
        ds.PixelSpacing = [_ds(dy), _ds(dx)]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[2])
        ds.BitsAllocated = 16
        if signed:
            ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
            ds.RescaleIntercept = "0"
            pixels = np.ascontiguousarray(hu[i])
        else:
            ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
            ds.RescaleIntercept = str(-UNSIGNED_OFFSET)
            pixels = (hu[i].astype(np.int32) + UNSIGNED_OFFSET).astype(np.uint16)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = _ds(window[0])
        ds.WindowWidth = _ds(window[1])
        ds.WindowCenterWidthExplanation = "BRAIN"
        ds.PixelData = pixels.tobytes()
        if transfer_syntax != EXPLICIT_VR_LITTLE_ENDIAN:
            # Keep the SOP Instance UID: the same volume must give the same files.
            ds.compress(transfer_syntax, pixels, generate_instance_uid=False)
        path = out / f"{file_prefix}{i + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_series_hu(paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """HU (z, y, x) of files written by `write_ct_series`, in the given order (a small helper for tests and tools)."""
    import pydicom

    slices = []
    for p in paths:
        ds = pydicom.dcmread(p)
        arr = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices.append(arr)
    return np.stack(slices)
