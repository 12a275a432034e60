"""Choose the member whose attention maps and prediction basis explain the ensemble.

Lee et al. 2019 (Methods, "Localization performance evaluation of attention maps") chose the
network whose maps the system shows by how often those maps point at the bleed. The recipe used
to name the ResNet-style member outright, as the paper's choice was a ResNet-50; but which
member localises best is a property of the trained weights, not the family. The four-window
run of stop 36 showed it: its ResNet found 20 of 55 validation lesions (none of 18 IPH) while
its Inception found 40, where the previous ResNet had been the best.

So the recipe now chooses on its own validation phantoms (their lesions are known voxel by
voxel): every member with a CAM head is scored by `ichviewer.evaluation.localization`
(each subtype's map on the slice where its lesion is largest, cut at 20 % of its peak; found
when the lesion pixel nearest the centroid is inside), and the member that finds the most wins;
ties go to the smaller mean kept area (a tighter map), then to the manifest's member order.
The held-out test split is never used. The manifest's `attention_model` and `explaining_model`
are set to it, the choice and every member's figures are recorded in the training log
(`explaining_model_choice`), and SHA256SUMS is rewritten. The networks are not touched.

`ichviewer train` does this as its last step for phantom data (a DICOM source has no lesion
masks, so the ResNet-style member stays). For a folder trained before this step:

    python -m ichviewer.training.explainer models/default

Build the atlas again afterwards (`ichviewer atlas bundle --models DIR`): it is built from the
explaining member's features.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

#: Training-log key of the record this module writes.
LOG_KEY = "explaining_model_choice"


class ExplainerChoiceError(ValueError):
    """The folder's explaining member cannot be chosen (no CAM heads, or not a phantom recipe)."""


def choose_explaining_member(figures: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> str:
    """The member whose maps found the most lesions; ties: smaller mean kept area, then `order`.

    `figures` maps member name -> its localisation summary's `overall` (`found`, `n`,
    `mean_area_fraction`).
    """
    if not figures:
        raise ExplainerChoiceError("no member with a CAM head was scored")
    rank = {name: i for i, name in enumerate(order)}

    def key(name: str) -> tuple:
        o = figures[name]
        area = o.get("mean_area_fraction")
        return (-int(o["found"]), float("inf") if area is None else float(area), rank.get(name, len(rank)))

    return min(figures, key=key)


def apply_explainer_choice(models_dir: str | Path, plans: Sequence[Any], matrix: int,
                           stream: TextIO | None = None) -> dict[str, Any]:
    """Score every CAM member's maps on `plans` (the run's validation phantoms), set the manifest's
    attention and explaining member to the best, record the choice in the training log and rewrite
    SHA256SUMS. Returns the record."""
    from ichviewer.evaluation.localization import evaluate_localization
    from ichviewer.inference import load_ensemble
    from ichviewer.inference.manifest import refresh_checksums
    from ichviewer.training.recipe import LOG_NAME

    models_dir = Path(models_dir)
    ensemble = load_ensemble(models_dir)
    members = [m.name for m in ensemble.models if m.cam_weight is not None]
    if not members:
        raise ExplainerChoiceError(f"no member of {models_dir} has a CAM head")
    previous = ensemble.cam_model.name if ensemble.cam_model is not None else None
    def progress(done: int, total: int) -> None:
        if stream is not None:
            stream.write(f"\rattention maps (validation) {done}/{total} studies with haemorrhage")
            stream.flush()

    result = evaluate_localization(plans, ensemble, members=members, matrix=matrix, progress=progress)
    if stream is not None:
        stream.write("\n")
    figures = {name: result["members"][name]["overall"] for name in members if name in result["members"]}
    chosen = choose_explaining_member(figures, members)
    record = {
        "chosen": chosen,
        "previous": previous,
        "rule": "most lesions found by the member's attention map on the run's validation phantoms (Lee et al. 2019, "
                "Methods: map cut at 20 % of its peak, found when the lesion pixel nearest the centroid is inside); "
                "ties: smaller mean kept area, then member order",
        "validation_studies": len(plans),
        "matrix": matrix,
        "members": {name: {k: figures[name][k] for k in ("found", "n", "value", "ci", "mean_area_fraction")}
                    for name in figures},
    }
    manifest_path = models_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text("utf-8"))
    manifest["attention_model"] = chosen
    manifest["explaining_model"] = chosen
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")  # as EnsembleManifest.write
    log_path = models_dir / LOG_NAME
    log = json.loads(log_path.read_text("utf-8"))
    log[LOG_KEY] = record
    log_path.write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    refresh_checksums(models_dir, add=("manifest.json", LOG_NAME))
    if stream is not None:
        stream.write("explaining member: " + ", ".join(
            f"{n} {figures[n]['found']}/{figures[n]['n']}" for n in figures) + f" -> {chosen}\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    from ichviewer.training.recalibrate import recipe_config_from_log
    from ichviewer.training.recipe import LOG_NAME, phantom_split_plans

    parser = argparse.ArgumentParser(prog="python -m ichviewer.training.explainer", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", help="a folder written by `ichviewer train` (manifest.json, training_log.json)")
    args = parser.parse_args(argv)
    models_dir = Path(args.models)
    try:
        log = json.loads((models_dir / LOG_NAME).read_text("utf-8"))
        config = recipe_config_from_log(log, models_dir)
        if config.source != "phantoms":
            raise ExplainerChoiceError(f"{models_dir} was trained on {config.source} data: no lesion masks to score maps on")
        plans = phantom_split_plans(config)["validation"]
        apply_explainer_choice(models_dir, plans, config.matrix, stream=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"python -m ichviewer.training.explainer: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {models_dir / 'manifest.json'} (rebuild the atlas: ichviewer atlas bundle --models {models_dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
