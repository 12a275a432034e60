"""The development set that model experiments are compared on (models/EXPERIMENTS.md).

Never the test set: 300 phantoms planned from the validation split with seed 5, disjoint
from every recipe run's training and validation cases (seed 0) and from the held-out test
split. The cache holds model inputs exactly as the recipe makes them (brain-subdural-bone
windows, head crop, thin series in 5 mm slabs), so ONNX members are scored on the same
pixels they would see from `ichviewer infer`, without the DICOM round trip.

    python -m ichviewer.training.devset build dev300_256.npz [--input-size 256] [--workers 2] [--n 300]
    python -m ichviewer.training.devset score dev300_256.npz MODEL.onnx [MODEL.onnx ...] [--json OUT] [--any-rule noisy-or] [--degree N] [--weights equal]

`score` prints each member's case-level AUC for ANY (case score: the highest slice's
probability), the ensemble's case and slice-level AUC (members weighted as the manifest
beside them says, else equally), and the AUC of each bleed-size bin (punctate <= 0.1 mL,
0.1-5 mL, > 5 mL) and of punctate bleeds by subtype, each against all negatives: the figures
EXPERIMENTS.md tabulates. Each slice is read with the
Eq. 4 interpolation degree the manifest beside the ONNX files gives its member, as
`ichviewer infer` reads it (`--degree 1`: the slice alone, as every figure before stop 20 was).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ichviewer import LABELS, SUBTYPES
from ichviewer.core.windowing import INPUT_WINDOW_SETS
from ichviewer.evaluation.metrics import roc_auc
from ichviewer.inference.manifest import ANY_RULES, INTERPOLATION_BETAS
from ichviewer.training.data import SliceCache, build_phantom_cache, plan_phantom_cases

DEV_CASES = 300
DEV_SPLIT = "validation"
DEV_SEED = 5
#: Bleed-size bins (mL) of the model card and EXPERIMENTS.md: punctate, small, larger.
SIZE_BINS = (("punctate", 0.0, 0.1), ("0.1-5 mL", 0.1, 5.0), ("> 5 mL", 5.0, float("inf")))
ANY = LABELS.index("ANY")


def build_dev_cache(
    input_size: int = 256, workers: int = 1, n: int = DEV_CASES, windows: str = "brain-subdural-bone"
) -> SliceCache:
    """The development cache, built as the recipe builds its own (recipe.RecipeConfig defaults; `windows`
    names an `INPUT_WINDOW_SETS` entry, kept in the cache's meta so members of other windows are refused)."""
    plans = plan_phantom_cases(n, DEV_SPLIT, seed=DEV_SEED)
    cache = build_phantom_cache(
        plans, input_size, 256, workers=workers,
        windows=INPUT_WINDOW_SETS[windows], crop="head", slab_mm=5.0,
    )
    cache.meta["windows"] = [[w.width, w.level] for w in INPUT_WINDOW_SETS[windows]]
    return cache


def case_neighbours(cache: SliceCache) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) neighbour row of every cache row, within its own case (as `neighbours` does per series)."""
    from ichviewer.inference.interpolation import neighbours

    lower = np.empty(cache.n_slices, dtype=np.int64)
    upper = np.empty(cache.n_slices, dtype=np.int64)
    for c in cache.cases:
        lo, up = neighbours(np.arange(c.stop - c.start), c.stop - c.start)
        lower[c.start : c.stop] = c.start + lo
        upper[c.start : c.stop] = c.start + up
    return lower, upper


def member_slice_probabilities(
    onnx_path: str | Path, cache: SliceCache, batch: int = 64, threads: int = 2, degree: int = 1,
    context_slices: int = 1,
) -> np.ndarray:
    """Sigmoid of one ONNX member's logits for every slice of `cache`: (N, len(LABELS)).

    `degree` > 1 reads each slice as the inference engine does with a member of that
    interpolation degree (Lee et al. 2019, Eq. 4: the slice and its blends with each
    neighbour in its own case, combined by `ichviewer.inference.interpolation.combine`).
    `context_slices` 3 gives the member each slice with its neighbours as channels, as the
    manifest's `input.context_slices` tells the engine to.
    """
    import onnxruntime as ort

    from ichviewer.inference.interpolation import combine, image_weights, interpolated_images

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    out = np.empty((cache.n_slices, len(LABELS)), dtype=np.float32)
    n_images = image_weights(degree).size  # raises for a degree the paper does not define
    lower, upper = case_neighbours(cache) if degree > 1 else (None, None)

    def inputs(r: np.ndarray) -> np.ndarray:
        return cache.context_images(r, context_slices)

    step = max(1, batch // n_images)
    for i in range(0, cache.n_slices, step):
        rows = np.arange(i, min(i + step, cache.n_slices))
        x = inputs(rows)
        # degree 1 has no blends: the neighbours are not read (interpolated_images returns x alone)
        nb = (inputs(lower[rows]), inputs(upper[rows])) if degree > 1 else (x, x)
        images = interpolated_images(x, *nb, degree)
        (z,) = sess.run(["logits"], {"image": images.reshape((-1,) + images.shape[2:])})
        out[rows] = combine((1.0 / (1.0 + np.exp(-z))).reshape(n_images, rows.size, len(LABELS)), degree)
    return out


def manifest_members(models: Sequence[str | Path]) -> dict[str, dict]:
    """Each ONNX file's Eq. 4 degree, ensemble weight and context slices, from the manifest beside it.

    The manifest is read by `load_manifest`, as the engine reads it (same validation and
    defaults). A file with no manifest beside it, or none naming it, reads each slice alone
    (degree 1) with weight 1.
    """
    from ichviewer.inference.manifest import MANIFEST_NAME, load_manifest

    manifests: dict[Path, dict[str, object]] = {}
    out: dict[str, dict] = {}
    for path in map(Path, models):
        if path.parent not in manifests:
            found = (path.parent / MANIFEST_NAME).is_file()
            manifests[path.parent] = {m.file: m for m in load_manifest(path.parent).models} if found else {}
        spec = manifests[path.parent].get(path.name)
        out[str(path)] = (
            {"degree": 1, "weight": 1.0, "context_slices": 1} if spec is None
            else {"degree": spec.interpolation_degree, "weight": spec.weight, "context_slices": spec.context_slices,
                  "windows": [[w.width, w.level] for w in spec.windows]}
        )
    return out


def case_scores(cache: SliceCache, slice_probs: np.ndarray) -> np.ndarray:
    """Case score per label: the highest slice's probability (as `ichviewer infer` scores a series)."""
    return np.stack([slice_probs[c.start : c.stop].max(axis=0) for c in cache.cases])


def dev_figures(
    cache: SliceCache, member_probs: dict[str, np.ndarray], any_rule: str = "model", weights: dict[str, float] | None = None
) -> dict:
    """Member and ensemble AUCs on the development cache (see the module docstring).

    `any_rule` makes ANY as a manifest's `aggregation.any` does ("noisy-or": from the five
    subtypes), for each member and for the ensemble. The ensemble is the mean of the members,
    or with `weights` (by member name) their weighted mean, normalised as the engine does.
    """
    from ichviewer.inference.findings import apply_any_rule
    from ichviewer.training.ensembling import combine_members

    y_case = cache.case_labels()[:, ANY]
    out: dict = {"n_cases": len(cache.cases), "n_positive": int(y_case.sum()), "any_rule": any_rule, "members": {}}
    for name, p in member_probs.items():
        out["members"][name] = roc_auc(y_case, case_scores(cache, apply_any_rule(p, any_rule))[:, ANY])
    w = np.asarray([1.0 if weights is None else weights[n] for n in member_probs], dtype=np.float64)
    out["ensemble_weights"] = dict(zip(member_probs, (w / w.sum()).tolist()))
    mean = combine_members(list(member_probs.values()), w, any_rule)  # as the recipe and the engine combine members
    case = case_scores(cache, mean)
    out["ensemble_case_auc"] = roc_auc(y_case, case[:, ANY])
    out["ensemble_slice_auc"] = roc_auc(cache.labels[:, ANY], mean[:, ANY])
    volume = np.asarray([c.volume_ml for c in cache.cases])
    negatives = y_case == 0
    bins = {}
    for name, lo, hi in SIZE_BINS:
        pos = (y_case == 1) & (volume > lo) & (volume <= hi) if lo > 0 else (y_case == 1) & (volume <= hi)
        keep = pos | negatives
        bins[name] = {"n": int(pos.sum()), "auc": roc_auc(y_case[keep], case[keep, ANY]) if pos.any() else None}
    out["size_bins"] = bins
    punct = (y_case == 1) & (volume <= SIZE_BINS[0][2])
    labels = cache.case_labels()
    by_subtype = {}
    for k, st in enumerate(SUBTYPES):
        pos = punct & (labels[:, LABELS.index(st)] == 1)
        keep = pos | negatives
        by_subtype[st] = {"n": int(pos.sum()), "auc": roc_auc(y_case[keep], case[keep, ANY]) if pos.any() else None}
    out["punctate_by_subtype"] = by_subtype
    kinds: dict[str, list[float]] = {}
    for c, s, y in zip(cache.cases, case[:, ANY], y_case):
        if not y:
            key = ("1 mm " if c.slice_mm < 5 else "5 mm ") + "negatives"
            kinds.setdefault(key, []).append(float(s))
    out["negative_mean_case_score"] = {k: float(np.mean(v)) for k, v in sorted(kinds.items())}
    thin = np.asarray([c.slice_mm < 5 for c in cache.cases])
    both = thin.any() and 0 < y_case[thin].sum() < thin.sum()
    out["thin_case_auc"] = roc_auc(y_case[thin], case[thin, ANY]) if both else None  # within the thin studies
    out["case_scores"] = {c.case_id: float(v) for c, v in zip(cache.cases, case[:, ANY])}
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_figures(fig: dict) -> str:
    lines = [f"{fig['n_cases']} cases, {fig['n_positive']} with haemorrhage"]
    degrees = fig.get("interpolation_degrees", {})
    for name, auc in fig["members"].items():
        read = f" (Eq. 4 degree {degrees[name]})" if name in degrees else ""
        lines.append(f"  member {name}: case AUC {_fmt(auc)}{read}")
    w = list(fig.get("ensemble_weights", {}).values())
    kind = "mean ensemble" if not w or np.allclose(w, w[0]) else "weighted ensemble (" + ", ".join(
        f"{k} {v:.2f}" for k, v in fig["ensemble_weights"].items()) + ")"
    lines.append(f"{kind}: case AUC {_fmt(fig['ensemble_case_auc'])}, slice AUC {_fmt(fig['ensemble_slice_auc'])}")
    lines.append("  by size, against all negatives: " + ", ".join(
        f"{k} {_fmt(v['auc'])} (n={v['n']})" for k, v in fig["size_bins"].items()))
    lines.append("  punctate by subtype, against all negatives: " + ", ".join(
        f"{k} {_fmt(v['auc'])} (n={v['n']})" for k, v in fig["punctate_by_subtype"].items()))
    lines.append("  mean case score of negatives: " + ", ".join(
        f"{k} {v:.2f}" for k, v in fig["negative_mean_case_score"].items()))
    if fig.get("thin_case_auc") is not None:
        lines.append(f"  case AUC within the thin (1 mm) studies: {_fmt(fig['thin_case_auc'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ichviewer.training.devset", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="generate the development cache")
    b.add_argument("out")
    b.add_argument("--input-size", type=int, default=256)
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--n", type=int, default=DEV_CASES,
                   help=f"cases (default {DEV_CASES}); a larger set starts with the same {DEV_CASES}")
    b.add_argument("--windows", default="brain-subdural-bone", choices=sorted(INPUT_WINDOW_SETS),
                   help="input channel windows, as the recipe's --windows (default brain-subdural-bone)")
    s = sub.add_parser("score", help="score ONNX members on the development cache")
    s.add_argument("cache")
    s.add_argument("models", nargs="+")
    s.add_argument("--json", default=None)
    s.add_argument("--any-rule", choices=ANY_RULES, default="model",
                   help="ANY as the networks output it, or the noisy-OR of the subtypes (manifest aggregation.any)")
    s.add_argument("--degree", default="manifest", choices=["manifest", *map(str, sorted(INTERPOLATION_BETAS))],
                   help="Eq. 4 interpolation degree to read each slice with: as the manifest beside the ONNX files "
                        "says (the default, as `ichviewer infer` reads them; 1 without a manifest), or a number "
                        "(1: the slice alone)")
    s.add_argument("--weights", default="manifest", choices=["manifest", "equal"],
                   help="ensemble weights: the manifest's (the default, as the app combines members; equal "
                        "without a manifest) or equal")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        cache = build_dev_cache(args.input_size, args.workers, args.n, args.windows)
        cache.save(args.out)
        print(f"wrote {args.out}: {len(cache.cases)} cases, {cache.n_slices} slices")
        return 0
    cache = SliceCache.load(args.cache)
    members = manifest_members(args.models)
    kept = cache.meta.get("windows")  # recorded by `build` since stop 35 (brain-subdural-bone before)
    as_floats = lambda windows: [[float(width), float(level)] for width, level in windows]  # noqa: E731
    for path, m in members.items():
        if kept is not None and "windows" in m and as_floats(m["windows"]) != as_floats(kept):
            print(f"{path}: its manifest's input windows {m['windows']} are not the cache's {kept}; build a cache "
                  "with the same --windows", file=sys.stderr)
            return 2
    degrees = {p: m["degree"] for p, m in members.items()} if args.degree == "manifest" else {p: int(args.degree) for p in args.models}
    weights = {Path(p).stem: m["weight"] for p, m in members.items()} if args.weights == "manifest" else None
    probs = {}
    for path in args.models:
        probs[Path(path).stem] = member_slice_probabilities(
            path, cache, degree=degrees[path], context_slices=members[path]["context_slices"]
        )
    fig = dev_figures(cache, probs, args.any_rule, weights)
    fig["interpolation_degrees"] = {Path(p).stem: d for p, d in degrees.items()}
    print(format_figures(fig))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
