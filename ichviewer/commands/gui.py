"""`ichviewer open` and `ichviewer demo`: start the workstation on a path or on a synthetic haemorrhage case."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

#: Bump when the demo case recipe changes, so a cached case is rewritten.
DEMO_VERSION = 1
DEMO_SEED = 2
DEMO_SUBTYPE = "IPH"
#: Large enough to see at once on the middle slices (a hypertensive basal-ganglia bleed size).
DEMO_VOLUME_ML = 20.0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "open",
        help="open the workstation on a DICOM folder, file or DICOMDIR",
        description="Open the reading workstation on PATH; every CT series found is listed, the largest is shown.",
    )
    p.add_argument("path", metavar="PATH", nargs="?", help="folder, file or DICOMDIR (omit to start empty)")
    _common(p)
    p.set_defaults(func=run_open)

    d = subparsers.add_parser(
        "demo",
        help="open the workstation on a synthetic head CT with a haemorrhage",
        description="Write (or reuse) a synthetic head CT with an intraparenchymal haemorrhage as DICOM in the "
        "per-user cache folder ($XDG_CACHE_HOME/ichviewer/demo or ~/.cache/ichviewer/demo) and open it.",
    )
    d.add_argument("--cache-dir", metavar="DIR", help="where to write the demo case (default: the per-user cache)")
    d.add_argument("--rebuild", action="store_true", help="write the case again even if a cached copy exists")
    _common(d)
    d.set_defaults(func=run_demo)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings-dir", metavar="DIR", help="settings folder (recent studies, keymap.json override); "
                   "default $ICHVIEWER_SETTINGS_DIR or ~/.config/ichviewer")
    p.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window once the study is shown, then quit")
    p.add_argument("--models", metavar="DIR", help="AI ensemble directory (default: the bundled models/default)")
    p.add_argument("--no-ai", action="store_true", help="do not run the AI models")
    p.add_argument("--db", metavar="DB", help="review database file (default: review.sqlite in the settings folder)")
    p.add_argument("--reader", metavar="NAME", help="who is reading (skips the identity dialog)")
    p.add_argument("--role", choices=("resident", "attending", "panel"), default="resident",
                   help="the reader's role with --reader (default: resident)")


def _workstation_options(args: argparse.Namespace) -> dict:
    return {
        "models_dir": args.models,
        "ai": not args.no_ai,
        "db_path": args.db,
        "reader": (args.reader, args.role) if args.reader else None,
        # A scripted screenshot must never wait on a dialog.
        "ask_reader": args.screenshot is None,
    }


def run_open(args: argparse.Namespace) -> int:
    if args.path is not None and not os.path.exists(args.path):
        print(f"ichviewer open: {args.path}: no such file or folder", file=sys.stderr)
        return 2
    if not _display_usable():
        return 1
    return _start(args.path, args.settings_dir, args.screenshot, _workstation_options(args))


def demo_cache_dir(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ichviewer" / "demo"


def ensure_demo_case(folder: Path, rebuild: bool = False) -> Path:
    """The demo series folder: reused when a complete case of this DEMO_VERSION exists, else written."""
    marker = folder / "demo.json"
    series_dir = folder / "series"
    if not rebuild and marker.is_file():
        try:
            info = json.loads(marker.read_text("utf-8"))
        except ValueError:
            info = {}
        if info.get("version") == DEMO_VERSION and series_dir.is_dir() and any(series_dir.iterdir()):
            return series_dir
    from ichviewer.core.phantom import generate_case
    from ichviewer.io.writer import write_ct_series

    case = generate_case(DEMO_SEED, subtype=DEMO_SUBTYPE, volume_ml=DEMO_VOLUME_ML)
    folder.mkdir(parents=True, exist_ok=True)
    if series_dir.exists():
        for f in series_dir.iterdir():
            if f.is_file():
                f.unlink()
    write_ct_series(case.volume, series_dir, series_description=f"DEMO synthetic head CT, {DEMO_SUBTYPE} {DEMO_VOLUME_ML:g} mL")
    # Ground truth beside (not inside) the series folder, so the scanner never meets it.
    (folder / "labels.json").write_text(json.dumps(case.labels_json(), indent=1), "utf-8")
    marker.write_text(json.dumps({"version": DEMO_VERSION, "seed": DEMO_SEED, "subtype": DEMO_SUBTYPE}), "utf-8")
    return series_dir


def run_demo(args: argparse.Namespace) -> int:
    if not _display_usable():  # before the case is written: nothing to show it on
        return 1
    folder = demo_cache_dir(args.cache_dir)
    try:
        series_dir = ensure_demo_case(folder, rebuild=args.rebuild)
    except ImportError as exc:
        print(f"ichviewer demo: the synthetic case generator is not available ({exc})", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ichviewer demo: {exc.filename or folder}: cannot write the demo case ({exc.strerror or exc})", file=sys.stderr)
        return 1
    print(f"demo case: {series_dir}")
    return _start(str(series_dir), args.settings_dir, args.screenshot, _workstation_options(args))


def _display_usable() -> bool:
    """False (with the reason on stderr) when Qt could not open a window here."""
    from ichviewer.qt.platform_check import display_problem

    problem = display_problem()
    if problem is not None:  # Qt would abort the process with a generic line instead
        print(f"ichviewer: {problem}", file=sys.stderr)
        return False
    return True


def _start(path: str | None, settings: str | None, screenshot: str | None, options: dict) -> int:
    """Run the workstation; callers have checked `_display_usable()` first."""
    from ichviewer.qt.app import run_viewer, run_viewer_for_screenshot

    if screenshot is None:
        return run_viewer(path, settings, **options)
    return run_viewer_for_screenshot(path, settings, screenshot, **options)
