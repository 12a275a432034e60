"""DICOM in (and later out): scanning paths into series and building CTVolumes. Never imports Qt."""

from ichviewer.io.dicom import (
    DicomInputError,
    LoadResult,
    ScanResult,
    SeriesFiles,
    SkippedFile,
    load_path,
    load_series,
    load_volume,
    scan_path,
)

__all__ = [
    "DicomInputError",
    "LoadResult",
    "ScanResult",
    "SeriesFiles",
    "SkippedFile",
    "load_path",
    "load_series",
    "load_volume",
    "scan_path",
]
