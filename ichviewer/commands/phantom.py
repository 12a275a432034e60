"""`ichviewer phantom`: write a synthetic head CT with labelled haemorrhage as a DICOM series plus labels.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Files a previous `ichviewer phantom` run leaves in its folder (the only ones --overwrite removes).
_OWN_PATTERNS = ("IM*.dcm", "labels.json")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write a synthetic head CT (DICOM series + labels.json)",
        description="Generate a seeded synthetic non-contrast head CT with an optional haemorrhage "
        "or high-density mimic and write it as a DICOM CT series into OUT_DIR, with "
        "OUT_DIR/labels.json holding the per-slice labels (ascending, inferior to superior) "
        "and the lesion volume in mL. The same arguments always give the same files.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--seed", type=int, required=True, help="case seed (non-negative integer)")
    p.add_argument(
        "--subtype",
        choices=("IPH", "IVH", "SDH", "EDH", "SAH", "mixed", "none"),
        default=None,
        help="haemorrhage subtype; default: drawn from the seed",
    )
    p.add_argument("--volume-ml", type=float, default=None, help="target lesion volume in mL (total for mixed)")
    p.add_argument("--mimic", choices=("calcification", "metal", "beam-hardening"), default=None)
    p.add_argument("--slice-mm", type=float, default=5.0, help="slice thickness and spacing in mm (5 routine, 1 thin)")
    p.add_argument("--age", choices=("adult", "child"), default="adult")
    p.add_argument("--matrix", type=int, default=512, help="in-plane matrix (field of view stays 220-250 mm)")
    p.add_argument(
        "--transfer-syntax",
        choices=("explicit", "rle", "jpeg-ls", "jpeg2000"),
        default="explicit",
        help="pixel encoding of the files (all lossless)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a phantom already written in OUT_DIR")
    p.set_defaults(func=run_phantom)

    s = subparsers.add_parser(
        "phantom-set",
        help="write a balanced set of synthetic studies plus labels.csv (held-out test sets)",
        description="Write N synthetic studies (the training recipe's balanced mix: every subtype, mixed "
        "bleeds, small bleeds, mimic-only negatives, children, 5 mm and 1 mm slices) as DICOM series in "
        "OUT_DIR/<index>_<kind>/, and OUT_DIR/labels.csv with series_uid, study_uid, any, iph, ivh, sdh, "
        "edh, sah, volume_ml, visible_voxels (blood voxels clear of the bone's partial-volume edge; 0 means "
        "labelled blood that cannot be seen), mimic, age, slice_mm and kind: the labels format of `ichviewer evaluate` and "
        "`ichviewer review import-labels`. The test split's seeds never overlap training or validation. "
        "With --blind (for reader studies) the studies go to OUT_DIR/studies/<number>/ in a seeded random order, "
        "their series descriptions say only \"STUDY <number>\", and the per-slice labels go to "
        "OUT_DIR/answer_key/<number>.labels.json: hand readers the studies folder and keep the rest.",
    )
    s.add_argument("out_dir", metavar="OUT_DIR")
    s.add_argument("--n", type=int, default=200, help="number of studies (default 200)")
    s.add_argument("--split", choices=("train", "validation", "test"), default="test")
    s.add_argument("--seed", type=int, default=0, help="run seed of the recipe whose split to draw (default 0)")
    s.add_argument("--matrix", type=int, default=256, help="in-plane matrix (default 256)")
    s.add_argument(
        "--thickness-planes",
        type=thickness_planes_arg,
        default=1,
        help="build each 5 mm slice from this many planes across its thickness and average them "
        "(partial volume, as real thick slices have; default 1: the centre plane); "
        "a list such as 1,3 mixes them, each 5 mm case drawing one",
    )
    s.add_argument(
        "--blind",
        action="store_true",
        help="for reader studies: number the studies in a seeded random order, keep the answers (subtype, "
        "volume, per-slice labels) out of folder names, series descriptions and the studies folder",
    )
    s.set_defaults(func=run_phantom_set)


def thickness_planes_arg(text: str) -> int | tuple[int, ...]:
    """argparse type of --thickness-planes: "3" gives 3, "1,3" gives (1, 3) (a mix); checked."""
    from ichviewer.training.data import thickness_plane_choices

    try:
        choices = thickness_plane_choices(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return choices[0] if len(choices) == 1 else choices


def write_phantom(
    out_dir: str | Path,
    case,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    *,
    series_description: str | None = None,
    labels_path: str | Path | None = None,
) -> list[Path]:
    """Write a `PhantomCase` as DICOM into `out_dir` and its labels.json (there, or to `labels_path`); returns the DICOM paths.

    `series_description` replaces the phantom's own (which names its subtype and volume).
    """
    from ichviewer.io.writer import write_ct_series

    out = Path(out_dir)
    paths = write_ct_series(
        case.volume,
        out,
        series_description=case.volume.series_description if series_description is None else series_description,
        patient_id=f"PHANTOM{case.seed}",
        patient_name=f"PHANTOM^SEED{case.seed}",
        patient_age=case.volume.metadata.get("patient_age"),
        study_description="SYNTHETIC HEAD CT (ICH Viewer phantom)",
        transfer_syntax=transfer_syntax,
    )
    labels = Path(labels_path) if labels_path is not None else out / "labels.json"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text(format_labels_json(case.labels_json()), encoding="utf-8")
    return paths


def format_labels_json(doc: dict) -> str:
    """labels.json text: one key per line and one line per slice, so a diff shows which slice changed."""
    lines = []
    for key, value in doc.items():
        if key == "slices":
            rows = ",\n".join("  " + json.dumps(s) for s in value)
            lines.append(f' "slices": [\n{rows}\n ]')
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def run_phantom(args: argparse.Namespace) -> int:
    from ichviewer.core.phantom import generate_case
    from ichviewer.io import writer

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        print(f"ichviewer phantom: {out} exists and is not a folder", file=sys.stderr)
        return 2
    if out.is_dir():
        own = {f for pat in _OWN_PATTERNS for f in out.glob(pat)}
        others = [f for f in out.iterdir() if f not in own]
        if others:
            print(f"ichviewer phantom: {out} holds other files ({others[0].name}, ...); choose an empty folder", file=sys.stderr)
            return 2
        if own and not args.overwrite:
            print(f"ichviewer phantom: {out} already holds a phantom; pass --overwrite to replace it", file=sys.stderr)
            return 2
        for f in own:
            f.unlink()
    ts = {
        "explicit": writer.EXPLICIT_VR_LITTLE_ENDIAN,
        "rle": writer.RLE_LOSSLESS,
        "jpeg-ls": writer.JPEG_LS_LOSSLESS,
        "jpeg2000": writer.JPEG_2000_LOSSLESS,
    }[args.transfer_syntax]
    try:
        case = generate_case(
            args.seed,
            subtype=args.subtype,
            volume_ml=args.volume_ml,
            mimic=args.mimic,
            slice_mm=args.slice_mm,
            age=args.age,
            matrix=args.matrix,
        )
        paths = write_phantom(out, case, ts)
    except (ValueError, OSError) as exc:
        print(f"ichviewer phantom: {out}: {exc}", file=sys.stderr)
        return 2
    vol = case.volume_ml
    present = ", ".join(f"{s} {vol[s]:.2f} mL" for s in case.present) or "no haemorrhage"
    print(
        f"wrote {len(paths)} slices to {out} ({case.volume.shape[1]}x{case.volume.shape[2]}, {case.slice_mm:g} mm, "
        f"{case.age}): {present}" + (f"; mimic {case.mimic_detail}" if case.mimic else "")
    )
    return 0


LABEL_COLUMNS = ("series_uid", "study_uid", "any", "iph", "ivh", "sdh", "edh", "sah", "volume_ml", "visible_voxels", "mimic", "age",
                 "slice_mm", "kind", "folder")
#: Mixed into --seed for a blind set's reading order, so it is not the plan order (which alternates bleed and no bleed).
BLIND_ORDER_SALT = 20261206


def run_phantom_set(args: argparse.Namespace) -> int:
    import csv

    from ichviewer import SUBTYPES
    from ichviewer.core.phantom import visible_blood_voxels
    from ichviewer.training.data import plan_phantom_cases

    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()):
        print(f"ichviewer phantom-set: {out} is not empty; choose a new folder", file=sys.stderr)
        return 2
    if args.n < 1:
        print("ichviewer phantom-set: --n must be at least 1", file=sys.stderr)
        return 2
    plans = plan_phantom_cases(args.n, args.split, seed=args.seed, thickness_planes=args.thickness_planes)
    if args.blind:
        import numpy as np

        order = np.random.default_rng([args.seed, BLIND_ORDER_SALT]).permutation(len(plans))
        plans = [plans[int(j)] for j in order]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, plan in enumerate(plans):
        case = plan.generate(args.matrix)
        if args.blind:
            folder = out / "studies" / f"{i:04d}"
            write_phantom(folder, case, series_description=f"STUDY {i:04d}",
                          labels_path=out / "answer_key" / f"{i:04d}.labels.json")
        else:
            folder = out / f"{i:04d}_{plan.kind.replace(' ', '_')}"
            write_phantom(folder, case)
        present = set(case.present)
        rows.append({
            "series_uid": case.volume.series_uid,
            "study_uid": case.volume.study_uid,
            "any": int(bool(present)),
            **{s.lower(): int(s in present) for s in SUBTYPES},
            "volume_ml": round(float(case.volume_ml.get("total", 0.0)), 4),
            # blood voxels beyond the bone's partial-volume edge (0: labelled but not visible)
            "visible_voxels": visible_blood_voxels(case),
            "mimic": case.mimic or "",
            "age": case.age,
            "slice_mm": plan.slice_mm,
            "kind": plan.kind,
            "folder": folder.relative_to(out).as_posix(),
        })
        print(f"\r{i + 1}/{len(plans)} {'' if args.blind else plan.kind:<32s}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    n_pos = sum(r["any"] for r in rows)
    print(f"wrote {len(rows)} studies ({n_pos} with haemorrhage) and labels.csv to {out}")
    if args.blind:
        print(f"blind: give readers {out / 'studies'} only; labels.csv and {out / 'answer_key'} hold the answers")
    return 0
