"""Scan paths for DICOM CT series and build validated CTVolumes from them (never imports Qt)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ichviewer.core.volume import AIR_HU, SLICES_LEFT_OUT, SLICES_MISSING, CTVolume, direction_from_orientation

#: SOP Class UID of a DICOMDIR (Media Storage Directory Storage).
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Uncompressed transfer syntaxes whose pixel data we read directly with numpy.
_NATIVE_LITTLE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
#: Tolerances when checking geometry.
_ORIENTATION_TOL = 1e-3
_GAP_FACTOR = 1.5
#: |normal . z| below this means the series is not axial (more than ~45 degrees off).
_AXIAL_MIN_COS = 0.7
#: Above this many files a scan leaves pixel data on disk until a series is loaded;
#: below it each file is read once, whole, which is the fastest way to open a series.
DEFER_PIXELS_ABOVE_FILES = 1000
_DEFER_SIZE = 4096


class DicomInputError(ValueError):
    """A file, folder or series that cannot be shown; `str()` names the path and the problem."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        #: The series the error belongs to, when it came from `load_series`.
        self.series: SeriesFiles | None = None
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class SkippedFile:
    """A file the scanner did not use, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class SeriesFiles:
    """The files of one series found by `scan_path`, with their parsed headers."""

    study_uid: str
    series_uid: str
    modality: str
    series_description: str
    datasets: list[Dataset] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        return len(self.paths)

    @property
    def folder(self) -> str:
        return os.path.commonpath(self.paths) if self.paths else ""


@dataclass
class ScanResult:
    series: list[SeriesFiles]
    skipped: list[SkippedFile]


@dataclass
class LoadResult:
    """Every CT volume that loaded from a path, plus what was skipped or failed and why."""

    volumes: list[CTVolume]
    skipped: list[SkippedFile]
    failed: list[DicomInputError]
    series: list[SeriesFiles] = field(default_factory=list)


# -- scanning ---------------------------------------------------------------------------

def _iter_files(root: Path) -> Iterator[Path]:
    """Every file under `root`, in name order, following symbolic links to folders (a dataset put
    together from links to studies is read like copies), each real folder once, so a link back up
    the tree does not loop."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _dicomdir_files(ds: Dataset, dicomdir_path: Path) -> list[Path]:
    base = dicomdir_path.parent
    files = []
    for record in ds.get("DirectoryRecordSequence", []):
        ref = record.get("ReferencedFileID")
        if ref is None:
            continue
        parts = [ref] if isinstance(ref, str) else list(ref)
        target = base.joinpath(*parts)
        if not target.exists() and (base / parts[-1]).exists():
            # Media copied flat (as often happens with exported CDs): same file name,
            # no sub-folders. Use it rather than report the whole study missing.
            target = base / parts[-1]
        files.append(target)
    return files


def _read_dataset(path: Path, defer_pixels: bool = False) -> Dataset:
    # force=False rejects non-DICOM files. With defer_pixels, large values (the pixel
    # data) stay on disk until used, so scanning a big tree holds headers only.
    return pydicom.dcmread(path, defer_size=_DEFER_SIZE if defer_pixels else None)


def _is_localizer(ds: Dataset) -> bool:
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return "LOCALIZER" in image_type or "SCOUT" in image_type


def scan_path(path: str | os.PathLike[str], *, defer_pixels: bool | None = None) -> ScanResult:
    """Group the DICOM image files under `path` (folder tree, file or DICOMDIR) by series.

    Non-DICOM files, DICOMDIRs met in a folder, files without pixel data and
    localizers are skipped with a reason; nothing raises for a bad file. Raises
    DicomInputError only if `path` does not exist or holds no files at all.
    `defer_pixels` (default: only for trees of more than DEFER_PIXELS_ABOVE_FILES
    files) leaves pixel data on disk until `load_series` needs it.
    """
    root = Path(path)
    if not root.exists():
        raise DicomInputError(root, "no such file or folder")
    if root.is_dir():
        candidates = list(_iter_files(root))
        if not candidates:
            raise DicomInputError(root, "empty folder: no files to read")
    else:
        candidates = [root]
        try:
            head = _read_dataset(root, defer_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError):
            head = None
        if head is not None and _sop_class(head) == MEDIA_STORAGE_DIRECTORY:
            candidates = _dicomdir_files(head, root)
            if not candidates:
                raise DicomInputError(root, "DICOMDIR lists no image files")

    if defer_pixels is None:
        defer_pixels = len(candidates) > DEFER_PIXELS_ABOVE_FILES
    by_series: dict[str, SeriesFiles] = {}
    skipped: list[SkippedFile] = []
    for file in candidates:
        reason, ds = _classify(file, defer_pixels)
        if reason:
            skipped.append(SkippedFile(str(file), reason))
            continue
        assert ds is not None
        uid = str(ds.get("SeriesInstanceUID", "")) or f"(no SeriesInstanceUID) {file.parent}"
        series = by_series.get(uid)
        if series is None:
            series = by_series[uid] = SeriesFiles(
                study_uid=str(ds.get("StudyInstanceUID", "")),
                series_uid=uid,
                modality=str(ds.get("Modality", "")),
                series_description=str(ds.get("SeriesDescription", "") or ""),
            )
        series.datasets.append(ds)
        series.paths.append(str(file))
    return ScanResult(series=list(by_series.values()), skipped=skipped)


def _sop_class(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    sop = (meta.get("MediaStorageSOPClassUID") if meta is not None else None) or ds.get("SOPClassUID")
    return str(sop or "")


def _classify(file: Path, defer_pixels: bool) -> tuple[str | None, Dataset | None]:
    """(reason to skip, None) or (None, header dataset)."""
    if not file.exists():
        return "listed in the DICOMDIR but missing on disk", None
    try:
        ds = _read_dataset(file, defer_pixels)
    except InvalidDicomError:
        return "not a DICOM file (no DICM preamble)", None
    except (OSError, ValueError, EOFError, AttributeError, KeyError, TypeError, IndexError) as exc:
        return f"unreadable DICOM ({type(exc).__name__}: {exc})", None
    sop = _sop_class(ds)
    if sop == MEDIA_STORAGE_DIRECTORY:
        return "DICOMDIR (a directory of the media), not an image", None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return "no pixel data (not an image)", None
    if _is_localizer(ds):
        return "localizer (scout) image", None
    return None, ds


# -- building volumes -------------------------------------------------------------------

def _float_list(value: Iterable[object] | None, n: int, what: str, path: str) -> np.ndarray:
    if value is None:
        raise DicomInputError(path, f"missing {what}")
    arr = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[arg-type]
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise DicomInputError(path, f"malformed {what}: {list(value)}")
    return arr


def _geometry_key(ds: Dataset, path: str) -> tuple:
    iop = _float_list(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path)
    ps = _float_list(ds.get("PixelSpacing"), 2, "PixelSpacing", path)
    return (tuple(np.round(iop, 3)), tuple(np.round(ps, 4)), int(ds.Rows), int(ds.Columns))


def _check_decodable(ds: Dataset, path: str) -> None:
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
    if ts in _NATIVE_LITTLE or ts == "1.2.840.10008.1.2.2" or ts == "1.2.840.10008.1.2.1.99":
        return
    from pydicom.pixels import get_decoder

    name = ts.name if ts.is_valid and ts.name != ts else str(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise DicomInputError(path, f"unsupported transfer syntax {name} ({ts}): no decoder exists for it") from None
    if not decoder.is_available:
        raise DicomInputError(
            path, f"unsupported transfer syntax {name} ({ts}): no installed decoder plugin can read it"
        )


def _stored_pixels(ds: Dataset, path: str) -> np.ndarray:
    """The stored values of one single-frame greyscale slice, as an integer or float array."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DicomInputError(path, "colour image, not a greyscale CT slice")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DicomInputError(path, "multi-frame image; only single-frame CT slices are supported")
    ts = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    rows, cols = int(ds.Rows), int(ds.Columns)
    bits_alloc = int(ds.BitsAllocated)
    bits_stored = int(ds.get("BitsStored", bits_alloc))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if ts in _NATIVE_LITTLE and bits_alloc == 16 and (bits_stored == 16 or not signed):
        # Fast path for the common uncompressed case: no copy until the HU conversion.
        raw = ds.PixelData
        expected = rows * cols * 2
        if len(raw) < expected:
            raise DicomInputError(path, f"pixel data truncated: {len(raw)} bytes, expected {expected}")
        arr = np.frombuffer(raw, dtype="<i2" if signed else "<u2", count=rows * cols).reshape(rows, cols)
        if not signed and bits_stored < 16 and int(arr.max()) >> bits_stored:
            # Bits above BitsStored may carry overlays in old data; they are not pixel values.
            arr = arr & np.uint16((1 << bits_stored) - 1)
        return arr
    try:
        return ds.pixel_array
    except Exception as exc:  # decoders raise many types; the message names the file
        raise DicomInputError(path, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from None


def _hu_stack(stored: list[np.ndarray], datasets: list[Dataset]) -> np.ndarray:
    """HU = stored * RescaleSlope + RescaleIntercept, per slice; int16 when exact, else float32."""
    slopes = [float(ds.get("RescaleSlope", 1) or 1) for ds in datasets]
    intercepts = [float(ds.get("RescaleIntercept", 0) or 0) for ds in datasets]
    shape = (len(stored),) + stored[0].shape
    integral = all(s.is_integer() and i.is_integer() for s, i in zip(slopes, intercepts)) and all(
        np.issubdtype(a.dtype, np.integer) for a in stored
    )
    hu: np.ndarray | None = None
    if integral:
        # Exact integer arithmetic straight into int16 when every slice fits, which
        # is the usual CT case and avoids a full-size temporary.
        hu = np.empty(shape, dtype=np.int16)
        for i, (a, s, b) in enumerate(zip(stored, slopes, intercepts)):
            lo, hi = int(a.min()), int(a.max())
            s_i, b_i = int(s), int(b)
            ends = (lo * s_i + b_i, hi * s_i + b_i)
            if max(abs(lo), abs(hi)) > 32767 or min(ends) < -32768 or max(ends) > 32767:
                hu = None
                break
            out = hu[i]
            out[...] = a
            if s_i != 1:
                out *= np.int16(s_i)
            if b_i:
                out += np.int16(b_i)
    if hu is None:
        hu = np.empty(shape, dtype=np.float32)
        for i, (a, s, b) in enumerate(zip(stored, slopes, intercepts)):
            hu[i] = a.astype(np.float32) * np.float32(s) + np.float32(b)
    for i, ds in enumerate(datasets):
        pad = ds.get("PixelPaddingValue")
        if pad is not None:
            # Padding marks pixels outside the scanned field: show them as air.
            hu[i][stored[i] == int(pad)] = AIR_HU
    # Values below air come from outside the reconstruction circle (often -2000 or
    # -3024); they are not tissue, so they are clipped to air for display and models.
    np.maximum(hu, hu.dtype.type(AIR_HU), out=hu)
    return hu


def _missing_slice_gaps(gaps: np.ndarray) -> np.ndarray:
    """Gaps much wider than their neighbours: the signature of missing slices.

    Compared with the local spacing (the two gaps either side) rather than the
    series median, so a protocol that changes spacing part-way (4 mm through the
    posterior fossa, 7 mm above, as on older scanners) is uneven, not gapped.
    """
    big = np.zeros(gaps.size, dtype=bool)
    for i in range(gaps.size):
        neighbours = np.concatenate([gaps[max(0, i - 2) : i], gaps[i + 1 : i + 3]])
        reference = float(np.median(neighbours)) if neighbours.size else float(gaps[i])
        big[i] = gaps[i] > _GAP_FACTOR * reference
    return big


def load_series(series: SeriesFiles, *, min_slices: int = 2) -> CTVolume:
    """Build one validated CTVolume from the files of one series.

    Slices are sorted by the projection of ImagePositionPatient on the slice
    normal (not InstanceNumber). Raises DicomInputError for a non-CT series, a
    non-axial one, a transfer syntax we cannot decode, or fewer than `min_slices`
    readable slices; problems that still allow display (tilt, uneven spacing, gaps,
    duplicates, mixed geometry, a file whose pixel data cannot be read, left out)
    become warnings on the volume.
    """
    where = series.folder or series.series_uid
    if series.modality.upper() != "CT":
        raise DicomInputError(where, f"modality {series.modality or 'unknown'} is not CT; ICH Viewer reads CT only")
    warnings: list[str] = []
    items = list(zip(series.datasets, series.paths))
    for ds, path in items:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise DicomInputError(path, "no ImagePositionPatient/ImageOrientationPatient: cannot place the slice")
    keys = [_geometry_key(ds, path) for ds, path in items]
    counts = Counter(keys)
    main_key, _ = counts.most_common(1)[0]
    if len(counts) > 1:
        n_other = sum(c for k, c in counts.items() if k != main_key)
        warnings.append(
            f"mixed geometry: {n_other} slice(s) with a different orientation, pixel spacing or matrix were left out"
        )
        items = [it for it, k in zip(items, keys) if k == main_key]
    iop = np.asarray(main_key[0], dtype=np.float64)
    direction = direction_from_orientation(
        _float_list(items[0][0].ImageOrientationPatient, 6, "ImageOrientationPatient", items[0][1])
    )
    normal = direction[:, 2]
    if abs(normal[2]) < _AXIAL_MIN_COS:
        plane = "sagittal" if abs(normal[0]) > abs(normal[1]) else "coronal"
        raise DicomInputError(where, f"the series is {plane}, not axial (slice normal {np.round(normal, 2).tolist()})")
    del iop

    origins = np.array(
        [_float_list(ds.ImagePositionPatient, 3, "ImagePositionPatient", p) for ds, p in items]
    )
    positions = origins @ normal
    order = np.argsort(positions, kind="stable")
    items = [items[i] for i in order]
    origins, positions = origins[order], positions[order]

    # Duplicates: two slices at the same place along the normal; keep the first.
    keep = np.ones(len(items), dtype=bool)
    keep[1:] = np.diff(positions) > 1e-3
    if not keep.all():
        warnings.append(f"duplicate slices: {int((~keep).sum())} slice(s) at an already-present position were left out")
        items = [it for it, k in zip(items, keep) if k]
        origins, positions = origins[keep], positions[keep]
    if len(items) < min_slices:
        raise DicomInputError(
            where,
            f"only {len(items)} usable slice(s); a volume needs at least {min_slices}",
        )
    # Pixels before the spacing checks: a file whose pixel data cannot be read (truncated, missing)
    # is left out with a warning naming it, and the gap it leaves is reported like any missing slice,
    # so one damaged file does not keep the reader from the rest of the series. A transfer syntax
    # we cannot decode stops the whole series (every slice would fail the same way).
    _check_decodable(items[0][0], items[0][1])
    stored, readable, unreadable = [], [], []
    for ds, p in items:
        try:
            if "PixelData" not in ds:
                raise DicomInputError(p, "no pixel data")
            stored.append(_stored_pixels(ds, p))
            readable.append(True)
        except DicomInputError as exc:
            unreadable.append(exc)
            readable.append(False)
    if unreadable:
        if sum(readable) < min_slices:
            raise unreadable[0]
        keep = np.asarray(readable)
        items = [it for it, k in zip(items, keep) if k]
        origins, positions = origins[keep], positions[keep]
        named = "; ".join(str(e) for e in unreadable[:3]) + ("; ..." if len(unreadable) > 3 else "")
        warnings.append(f"{SLICES_LEFT_OUT}: {len(unreadable)} file(s) ({named})")

    gaps = np.diff(positions)
    median_gap = float(np.median(gaps))
    uniform = float(np.ptp(gaps)) <= 0.05
    if not uniform:
        warnings.append(
            f"uneven slice spacing: {gaps.min():.2f} to {gaps.max():.2f} mm between slices (median {median_gap:.2f} mm); "
            "reformats are resampled to an even grid"
        )
    big = _missing_slice_gaps(gaps)
    if big.any():
        where_gaps = ", ".join(f"after image {int(i) + 1} ({gaps[i]:.1f} mm)" for i in np.flatnonzero(big)[:5])  # as the viewer numbers them
        warnings.append(f"{SLICES_MISSING}: {int(big.sum())} gap(s) larger than {_GAP_FACTOR}x the median spacing, {where_gaps}")

    stack_dir = origins[-1] - origins[0]
    tilt = float(np.degrees(np.arccos(np.clip(abs(stack_dir @ normal) / np.linalg.norm(stack_dir), -1.0, 1.0))))
    header_tilt = items[0][0].get("GantryDetectorTilt")
    if tilt > 0.5:
        sign = np.sign(float(header_tilt)) if header_tilt not in (None, "") and float(header_tilt) != 0 else 1.0
        tilt = float(sign * tilt)
        warnings.append(
            f"gantry tilt {tilt:+.1f} deg: slices are sheared; axial slices show as acquired, "
            "reformats are de-sheared onto a regular grid"
        )
    else:
        tilt = 0.0

    datasets = [ds for ds, _ in items]
    paths = [p for _, p in items]
    hu = _hu_stack(stored, datasets)

    first = datasets[0]
    ps = [float(v) for v in first.PixelSpacing]
    metadata = {
        "manufacturer": str(first.get("Manufacturer", "") or ""),
        "model": str(first.get("ManufacturerModelName", "") or ""),
        "slice_thickness_mm": float(first.get("SliceThickness") or 0) or None,
        "kvp": float(first.get("KVP") or 0) or None,
        "patient_age": str(first.get("PatientAge", "") or ""),
        "patient_position": str(first.get("PatientPosition", "") or ""),
        "study_date": str(first.get("StudyDate", "") or ""),
        "study_description": str(first.get("StudyDescription", "") or ""),
        "contrast_agent": str(first.get("ContrastBolusAgent", "") or "").strip(),
        "header_gantry_tilt_deg": float(header_tilt) if header_tilt not in (None, "") else None,
        "instance_numbers": [int(ds.get("InstanceNumber") or 0) for ds in datasets],
        # per slice, in slice order: what a saved measurement names its image by
        "sop_instance_uids": [str(ds.get("SOPInstanceUID", "") or "") for ds in datasets],
        "transfer_syntax": str(first.file_meta.get("TransferSyntaxUID", "")),
    }
    return CTVolume(
        hu=hu,
        spacing=(median_gap, ps[0], ps[1]),
        direction=direction,
        slice_origins=origins,
        study_uid=series.study_uid,
        series_uid=series.series_uid,
        modality="CT",
        series_description=series.series_description,
        gantry_tilt_deg=tilt,
        warnings=tuple(warnings),
        source_files=tuple(paths),
        metadata=metadata,
    )


def load_path(path: str | os.PathLike[str]) -> LoadResult:
    """Every CT volume under `path`, with skipped files and failed series reported, never raised.

    Raises DicomInputError only when `path` is missing or empty. Volumes are
    ordered by study, then by number of slices (largest first).
    """
    scan = scan_path(path)
    volumes: list[CTVolume] = []
    failed: list[DicomInputError] = []
    for series in scan.series:
        try:
            volumes.append(load_series(series))
        except DicomInputError as exc:
            exc.series = series
            failed.append(exc)
        finally:
            # The parsed headers hold deferred pixel data; release them.
            series.datasets = []
    volumes.sort(key=lambda v: (v.study_uid, -v.n_slices))
    return LoadResult(volumes=volumes, skipped=scan.skipped, failed=failed, series=scan.series)


def load_volume(path: str | os.PathLike[str]) -> CTVolume:
    """The one CT volume to show for `path`: the series with most slices; raises DicomInputError if none loads."""
    result = load_path(path)
    if result.volumes:
        return result.volumes[0]
    if result.failed:
        raise DicomInputError(path, "; ".join(str(e) for e in result.failed))
    reasons = Counter(s.reason for s in result.skipped)
    summary = "; ".join(f"{n} file(s): {r}" for r, n in reasons.most_common(3))
    raise DicomInputError(path, f"no CT image series found ({summary})" if summary else "no CT image series found")
