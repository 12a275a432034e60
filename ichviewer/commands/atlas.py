"""`ichviewer atlas build|query|info|evaluate|bundle`: the prediction-basis atlas from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

PROG = "ichviewer atlas"


class StageProgress:
    """Text progress for the build's stages: redrawn in place on a terminal, one line per finished stage otherwise."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, stage: str, done: int, total: int) -> None:
        filled = int(round(self.width * done / max(total, 1)))
        line = f"{stage:<12} |{'#' * filled}{'-' * (self.width - filled)}| {done}/{total}"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
            self.stream.flush()
        elif done >= total:
            self.stream.write(line + "\n")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("atlas", help="build and query the prediction-basis atlas (Lee et al. 2019)", description=__doc__)
    sub = p.add_subparsers(dest="atlas_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    b = sub.add_parser(
        "build",
        help="build the atlas of the explaining model from labelled training data",
        description=(
            "Run the training slices through the explaining member, count filter relevance per subtype "
            "(Lee et al. 2019), keep the top fraction of filters per label and store their strongest "
            "patches with heat maps and provenance in one SQLite file next to the model."
        ),
    )
    b.add_argument("--models", metavar="DIR", default=None, help="ensemble directory (default: the bundled models/default)")
    b.add_argument("--member", default=None, help="explaining member (default: the manifest's explaining_model, else its attention model)")
    b.add_argument("--data", required=True, help="a folder of DICOM studies with a labels CSV, or phantom:SEEDS[:SUBTYPES] (e.g. phantom:0-199 or phantom:0-99:SDH,IPH,none)")
    b.add_argument("--labels", default=None, metavar="CSV", help="slice labels CSV (columns series, slice, IPH, IVH, SDH, EDH, SAH; default DATA/labels.csv)")
    b.add_argument("--out", default=None, metavar="ATLAS", help="atlas file (default: DIR/<member>.atlas.sqlite next to the model)")
    b.add_argument("--fraction", type=float, default=0.05, help="share of all filters kept per label (default 0.05, as in the paper)")
    b.add_argument("--patches", type=int, default=4, help="strongest training slices stored per selected filter (default 4)")
    b.add_argument("--blocks", default=None, help="comma-separated blocks (default: every block the retrieval can explain)")
    b.add_argument("--matrix", type=int, default=128, help="phantom matrix size (phantom data only; default 128)")
    b.add_argument("--volume-ml", type=float, default=None, help="phantom lesion volume in mL (phantom data only; default: drawn per case)")
    b.add_argument("--quiet", action="store_true", help="no progress")
    b.set_defaults(func=run_build)

    q = sub.add_parser("query", help="prediction basis of one slice and label, as JSON")
    q.add_argument("atlas", metavar="ATLAS", help="atlas file")
    q.add_argument("--study", required=True, metavar="PATH", help="DICOM file or folder of the study")
    q.add_argument("--slice", required=True, type=int, dest="slice_index", help="slice index (0 = most inferior, as the viewer counts)")
    q.add_argument("--label", required=True, help="finding to explain: IPH, IVH, SDH, EDH, SAH or ANY")
    q.add_argument("--json", required=True, metavar="OUT", dest="json_out", help="write the result here ('-' for stdout)")
    q.add_argument("--models", metavar="DIR", default=None, help="ensemble directory (default: the atlas's folder, else models/default)")
    q.add_argument("-k", type=int, default=6, help="examples per ranking (default 6)")
    q.add_argument("--arrays", action="store_true", help="include patch HU and heat values in the JSON")
    q.set_defaults(func=run_query)

    i = sub.add_parser("info", help="what an atlas holds: model, blocks, features per subtype, size")
    i.add_argument("atlas", metavar="ATLAS")
    i.set_defaults(func=run_info)

    e = sub.add_parser("evaluate", help="top-example subtype agreement on held-out labelled data (Eq. 7 vs pooled features vs chance)")
    e.add_argument("atlas", metavar="ATLAS")
    e.add_argument("--data", required=True, help="held-out data: phantom:SEEDS[:SUBTYPES] or a DICOM folder with labels CSV")
    e.add_argument("--labels", default=None, metavar="CSV")
    e.add_argument("--models", metavar="DIR", default=None)
    e.add_argument("--matrix", type=int, default=128)
    e.add_argument("--every", type=int, default=1, help="use every n-th positive slice (default 1)")
    e.add_argument("--json", default=None, metavar="OUT", dest="json_out")
    e.set_defaults(func=run_evaluate)

    u = sub.add_parser(
        "bundle",
        help="build the redistributable atlas of the bundled ensemble from synthetic phantoms and check it on held-out phantoms",
    )
    u.add_argument("--models", metavar="DIR", default=None, help="ensemble directory (default: the bundled models/default)")
    u.add_argument("--out", default=None, metavar="ATLAS")
    u.add_argument("--train-seeds", default=None,
                   help="phantom seeds to build from (default: the first 200 cases of the training recipe's training split)")
    u.add_argument("--heldout-seeds", default=None,
                   help="phantom seeds for the held-out check (default: 60 cases of the recipe's test split)")
    u.add_argument("--run-seed", type=int, default=0, help="the training run's --seed whose splits to use (default 0)")
    u.add_argument("--matrix", type=int, default=None, help="phantom matrix (default 256 for the recipe's cases, else 128)")
    u.add_argument("--quiet", action="store_true")
    u.set_defaults(func=run_bundle)


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def _write_text(path: str, text: str) -> str | None:
    """Write `text` and a newline to `path`; the problem, naming the file, if it cannot be written."""
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    return None


def _load_models(models: str | None, near: Path | None = None):
    from ichviewer.inference import load_ensemble
    from ichviewer.inference.manifest import MANIFEST_NAME

    if models is None and near is not None and (near.parent / MANIFEST_NAME).is_file():
        models = str(near.parent)
    return load_ensemble(models)


def run_build(args: argparse.Namespace) -> int:
    from ichviewer.atlas import AtlasDataError, atlas_path_for, build_atlas, explaining_member, source_from_spec
    from ichviewer.inference import InferenceError

    try:
        ensemble = _load_models(args.models)
        model = explaining_member(ensemble, args.member)
        source = source_from_spec(args.data, args.labels, matrix=args.matrix, volume_ml=args.volume_ml)
    except (InferenceError, AtlasDataError, KeyError) as exc:
        return _fail(str(exc).strip("'\""))
    out = Path(args.out) if args.out else atlas_path_for(ensemble.directory, model.name)
    blocks = [b.strip() for b in args.blocks.split(",")] if args.blocks else None
    print(f"{PROG}: explaining member '{model.name}' ({model.spec.sha256[:12]}…), data: {source.description}", file=sys.stderr)
    try:
        summary = build_atlas(
            ensemble, source, out, model_name=model.name, blocks=blocks, fraction=args.fraction,
            patches_per_feature=args.patches, progress=None if args.quiet else StageProgress(sys.stderr),
        )
    except (InferenceError, AtlasDataError, ValueError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    per = ", ".join(f"{k} {v}" for k, v in summary.per_label.items())
    print(
        f"{PROG}: wrote {summary.path} ({summary.size_bytes / 1e6:.2f} MB): {summary.n_features} features of "
        f"{summary.n_filters} filters ({per}), {summary.n_entries} examples from {summary.n_images} of "
        f"{summary.n_training_images} training slices, {summary.seconds:.1f} s",
        file=sys.stderr,
    )
    if summary.n_features == 0:
        print(
            f"{PROG}: warning: no filter's strongest slices carry a subtype label, so the atlas is empty; "
            "the model may not have learned the subtypes, or the data has too few positive slices",
            file=sys.stderr,
        )
    return 0


def run_query(args: argparse.Namespace) -> int:
    from ichviewer import LABELS
    from ichviewer.atlas import AtlasError, open_atlas, retrieve
    from ichviewer.inference import InferenceError
    from ichviewer.io import DicomInputError, load_volume

    if args.label not in LABELS:
        return _fail(f"--label must be one of {', '.join(LABELS)}, got {args.label!r}")
    try:
        atlas = open_atlas(args.atlas)
    except AtlasError as exc:
        return _fail(str(exc))
    with atlas:
        try:
            ensemble = _load_models(args.models, Path(args.atlas))
            volume = load_volume(args.study)
            result = retrieve(volume, args.slice_index, args.label, atlas, ensemble, k=args.k)
        except (InferenceError, AtlasError, DicomInputError) as exc:
            return _fail(str(exc))
        except IndexError as exc:
            return _fail(f"{args.study}: {exc}")
        data = result.to_dict(arrays=args.arrays)
        data["study"] = str(args.study)
        text = json.dumps(data, indent=2)
        if args.json_out == "-":
            print(text)
        elif (problem := _write_text(args.json_out, text)) is not None:
            return _fail(problem)
        print(
            f"{PROG}: {args.label} on slice {args.slice_index}: {len(result.examples)} examples by Eq. 7, "
            f"{len(result.pooled_examples)} by pooled features" + (f" ({result.reason})" if result.reason else ""),
            file=sys.stderr,
        )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ichviewer import SUBTYPES
    from ichviewer.atlas import AtlasError, open_atlas

    try:
        atlas = open_atlas(args.atlas)
    except AtlasError as exc:
        return _fail(str(exc))
    with atlas:
        h = atlas.header.values
        per = {s: int((atlas.feature_label == s).sum()) for s in SUBTYPES}
        info = {
            "file": str(atlas.path),
            "size_bytes": atlas.path.stat().st_size,
            "format_version": h["format_version"],
            "model": h["model_name"],
            "model_sha256": h["model_sha256"],
            "blocks": h["blocks"],
            "features": atlas.n_features,
            "features_per_label": per,
            "entries": atlas.n_entries,
            "images": atlas.n_images,
            "training_images": h.get("n_training_images"),
            "data": h.get("data"),
            "created_at": h.get("created_at"),
        }
        print(json.dumps(info, indent=2))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ichviewer.atlas import AtlasDataError, AtlasError, open_atlas, source_from_spec
    from ichviewer.atlas.evaluation import evaluate_retrieval
    from ichviewer.inference import InferenceError

    try:
        atlas = open_atlas(args.atlas)
    except AtlasError as exc:
        return _fail(str(exc))
    with atlas:
        try:
            ensemble = _load_models(args.models, Path(args.atlas))
            source = source_from_spec(args.data, args.labels, matrix=args.matrix)
            report = evaluate_retrieval(atlas, ensemble, source, every=args.every)
        except (InferenceError, AtlasError, AtlasDataError) as exc:
            return _fail(str(exc))
    data = report.to_dict()
    print(json.dumps(data, indent=2))
    if args.json_out and (problem := _write_text(args.json_out, json.dumps(data, indent=2))) is not None:
        return _fail(problem)
    return 0


def run_bundle(args: argparse.Namespace) -> int:
    from ichviewer.atlas import AtlasDataError
    from ichviewer.atlas.evaluation import build_bundled_atlas
    from ichviewer.atlas.sources import parse_seeds
    from ichviewer.inference import InferenceError

    try:
        ensemble = _load_models(args.models)
        summary, report = build_bundled_atlas(
            ensemble, out=args.out,
            train_seeds=parse_seeds(args.train_seeds) if args.train_seeds else None,
            heldout_seeds=parse_seeds(args.heldout_seeds) if args.heldout_seeds else None,
            matrix=args.matrix, run_seed=args.run_seed, progress=None if args.quiet else StageProgress(sys.stderr),
        )
    except (InferenceError, AtlasDataError) as exc:
        return _fail(str(exc))
    print(json.dumps({"atlas": str(summary.path), "size_bytes": summary.size_bytes, "features": summary.n_features,
                      "entries": summary.n_entries, "heldout": report.to_dict()}, indent=2))
    return 0
