"""`ichviewer info`: what the loader finds under a path, as text or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="list the DICOM series under a path and how they load",
        description="Scan PATH (folder tree, file or DICOMDIR) and describe every series found. "
        "Slices are counted in ascending order along the slice normal.",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run_info)


def describe_path(path: str) -> dict[str, Any]:
    """The `info` report for a path: {"series": [...], "skipped": [...]} (see README)."""
    from ichviewer.io import load_path

    result = load_path(path)
    series: list[dict[str, Any]] = []
    for v in result.volumes:
        lo, hi = v.hu_range()
        series.append(
            {
                "study_uid": v.study_uid,
                "series_uid": v.series_uid,
                "modality": v.modality,
                "series_description": v.series_description,
                "path": _common_folder(v.source_files),
                "loaded": True,
                "n_slices": v.n_slices,
                "shape": list(v.shape),
                "spacing_mm": [round(s, 4) for s in v.spacing],
                "gantry_tilt_deg": round(v.gantry_tilt_deg, 2),
                "uniform_spacing": v.uniform_spacing,
                "slice_locations_mm": [round(float(x), 3) for x in v.slice_locations_mm],
                "hu_min": lo,
                "hu_max": hi,
                "warnings": list(v.warnings),
            }
        )
    for err in result.failed:
        s = err.series
        series.append(
            {
                "study_uid": s.study_uid if s else "",
                "series_uid": s.series_uid if s else "",
                "modality": s.modality if s else "",
                "series_description": s.series_description if s else "",
                "path": err.path,
                "loaded": False,
                "error": err.reason,
                "n_slices": s.n_files if s else 0,
                "shape": None,
                "spacing_mm": None,
                "gantry_tilt_deg": None,
                "uniform_spacing": None,
                "hu_min": None,
                "hu_max": None,
                "warnings": [],
            }
        )
    return {"series": series, "skipped": [s.to_dict() for s in result.skipped]}


def _common_folder(files: tuple[str, ...]) -> str:
    import os

    return os.path.dirname(os.path.commonpath(files)) if len(files) == 1 else os.path.commonpath(files) if files else ""


def run_info(args: argparse.Namespace) -> int:
    from ichviewer.io import DicomInputError

    try:
        report = describe_path(args.path)
    except DicomInputError as exc:
        print(f"ichviewer info: {exc}", file=sys.stderr)
        return 1
    loaded = [s for s in report["series"] if s["loaded"]]
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for s in report["series"]:
            if s["loaded"]:
                print(
                    f"{s['series_description'] or '(no description)'}: {s['n_slices']} slices, shape {tuple(s['shape'])}, "
                    f"spacing {tuple(s['spacing_mm'])} mm, tilt {s['gantry_tilt_deg']} deg, HU {s['hu_min']:g}..{s['hu_max']:g}"
                )
                if s.get("path"):
                    print(f"    folder: {s['path']}")  # what `ichviewer open` takes
                for w in s["warnings"]:
                    print(f"    warning: {w}")
            else:
                print(f"{s['series_description'] or s['series_uid']}: not loaded: {s['error']}")
                if s.get("path"):
                    print(f"    folder: {s['path']}")
        for k in report["skipped"]:
            print(f"skipped {k['path']}: {k['reason']}")
    if not loaded:
        reasons = "; ".join(s["error"] for s in report["series"] if not s["loaded"]) or "no CT image series found"
        print(f"ichviewer info: {args.path}: no CT series could be loaded ({reasons})", file=sys.stderr)
        return 1
    return 0
