"""`ichviewer infer`: run the model ensemble headless over every CT series under a path."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO


class TextProgress:
    """A plain-text progress bar on a stream: redrawn in place on a terminal, one line per study otherwise."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, number: int, total: int, label: str, done: int, n: int) -> None:
        filled = int(round(self.width * done / max(n, 1)))
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{number}/{total}] {label[:40]:<40} |{bar}| {done}/{n} slices"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= n else ""))
            self.stream.flush()
        elif done >= n:
            self.stream.write(line + "\n")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "infer",
        help="run the model ensemble on every CT series under a path (headless)",
        description=(
            "Run the ICH model ensemble on every CT series under PATH and write findings as JSON "
            "(schema ichviewer.infer/1, see models/README.md) and optionally CSV. Continues past "
            "studies that fail and lists them; exits 1 if any failed."
        ),
    )
    p.add_argument("path", metavar="PATH", help="DICOM file or folder (searched recursively)")
    p.add_argument("--models", metavar="DIR", default=None, help="ensemble directory with manifest.json (default: the bundled models/default)")
    p.add_argument("--json", metavar="OUT", required=True, dest="json_out", help="write the JSON report here")
    p.add_argument("--csv", metavar="OUT", default=None, dest="csv_out", help="also write one CSV row per study here")
    p.add_argument("--provider", default="auto", help="execution provider: auto (GPU if it works, else CPU), cpu or cuda")
    p.add_argument("--keep-results", metavar="DIR", default=None,
                   help="give back results kept in DIR for series already analysed by these models on this "
                   "provider (same voxels), and keep new ones there (the workstation keeps its own in "
                   "<settings folder>/ai-results)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ichviewer.inference import InferenceError, load_ensemble
    from ichviewer.core.applicability import head_check_failure
    from ichviewer.inference.batch import infer_path

    err = sys.stderr
    try:
        ensemble = load_ensemble(args.models, providers=args.provider)
    except InferenceError as exc:
        print(f"ichviewer infer: cannot load the models: {exc}", file=err)
        return 1
    print(
        f"ichviewer infer: ensemble '{ensemble.name}' ({len(ensemble.models)} models) on {ensemble.provider}",
        file=err,
    )
    kept = None
    if args.keep_results:
        from ichviewer.inference.result_cache import ResultCache

        kept = ResultCache(args.keep_results)
    report = infer_path(args.path, ensemble, on_progress=None if args.quiet else TextProgress(err), kept=kept)
    try:
        report.write_json(args.json_out)
        if args.csv_out:
            report.write_csv(args.csv_out)
    except OSError as exc:
        print(f"ichviewer infer: cannot write {exc.filename}: {exc.strerror}", file=err)
        return 1
    for study in report.studies:
        reason = head_check_failure(study.get("head_check"))
        if reason:
            print(f"ichviewer infer: NOT A HEAD CT? {study['path']}: {reason} (triage set to refer)", file=err)
        if study.get("incomplete"):  # the AI did not see the whole series (files unread, slices missing)
            print(f"ichviewer infer: WARNING {study['path']}: {study['incomplete']} (triage set to refer)", file=err)
    for fail in report.failed:
        print(f"ichviewer infer: FAILED {fail['path']}: {fail['reason']}", file=err)
    restored = sum(1 for study in report.studies if study.get("restored"))
    kept_text = f" ({restored} of them kept from an earlier run, not run again)" if restored else ""
    print(f"ichviewer infer: {len(report.studies)} studies done{kept_text}, {len(report.failed)} failed", file=err)
    return 1 if report.failed else 0
