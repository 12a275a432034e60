"""Re-choose an ensemble's operating points on a site's own labelled studies.

The thresholds shipped in a manifest were chosen on the data the ensemble was validated on
(for the bundled one: synthetic phantoms). Probabilities shift between scanners and
reconstructions (the model card shows the bundled thresholds clearing no negatives of
integrated 5 mm slices), so a site re-chooses them on its own studies, as Lee et al. chose
"the high sensitivity operating point from the validation subset" and DeepRadiologyNet set
its triage thresholds for a target miss rate.

`site_operating_points` takes `ichviewer infer` predictions of the ensemble on the site's
studies and their labels, and chooses per label the highest threshold whose sensitivity is
at least the target (`choose_sensitivity_threshold`) and the triage thresholds for a target
miss rate (`choose_triage_thresholds`), and per subtype the specific threshold at which a call
reads "positive" rather than "possible" (`choose_specificity_threshold`, `ichviewer.core.decisions`).
`write_site_ensemble` writes a copy of the ensemble
folder with those operating points, a record of where they came from
(`operating_points.json`) and new checksums; the models and the original folder are not
touched. The predictions must come from the same member files (checked by sha256).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ichviewer import LABELS, SUBTYPES
from ichviewer.evaluation.inputs import EvaluationInputError, MatchedCases, Predictions
from ichviewer.evaluation.metrics import clopper_pearson
from ichviewer.evaluation.operating_point import (
    DEFAULT_MIN_SENSITIVITY,
    DEFAULT_MIN_SPECIFICITY,
    choose_sensitivity_threshold,
    choose_specificity_threshold,
)
from ichviewer.evaluation.triage import choose_triage_thresholds

#: The record written beside the new manifest.
SOURCE_FILE = "operating_points.json"
SOURCE_SCHEMA = "ichviewer.site-operating-points/1"
DEFAULT_TARGET_MISS_RATE = 0.01


@dataclass(frozen=True)
class SiteOperatingPoints:
    """The new operating points (an `OperatingPoints`) and a JSON-ready account of each choice."""

    operating_points: Any
    report: dict


def check_same_models(predictions: Predictions, member_sha256: set[str], predictions_path: str, models_dir: str) -> None:
    """Refuse predictions that do not say they came from exactly these member files."""
    for st in predictions.studies:
        got = set(st.model_sha256)
        if not got:
            raise EvaluationInputError(
                f"{predictions_path}: study {st.series_uid or st.path} does not record the models that scored it "
                "(models[].sha256); run `ichviewer infer` again with this version"
            )
        if got != member_sha256:
            raise EvaluationInputError(
                f"{predictions_path}: study {st.series_uid or st.path} was scored by other models than those in "
                f"{models_dir}; thresholds must be chosen on the outputs of the ensemble they are for"
            )


def site_operating_points(
    matched: MatchedCases,
    current: Any,
    min_sensitivity: float = DEFAULT_MIN_SENSITIVITY,
    target_miss_rate: float = DEFAULT_TARGET_MISS_RATE,
    triage_prevalence: float | None = None,
    min_specificity: float = DEFAULT_MIN_SPECIFICITY,
) -> SiteOperatingPoints:
    """Thresholds chosen on the matched studies; a label without labelled positives keeps `current`'s.

    A subtype given a new threshold gets a new specific threshold too (never below it); one that
    keeps its threshold keeps its specific threshold, if it had one.
    """
    from ichviewer.inference.manifest import OperatingPoints

    if "ANY" not in matched.y_true:
        raise EvaluationInputError("the labels have no ANY column")
    thresholds: dict[str, float] = {}
    specific: dict[str, float] = {}
    labels: dict[str, dict] = {}
    for lab in LABELS:
        old = float(current.thresholds[lab])
        old_specific = current.specific_threshold(lab)
        if old_specific is not None:
            specific[lab] = old_specific
        y = matched.y_true.get(lab)
        entry: dict[str, Any] = {"previous_threshold": old}
        if y is None:
            thresholds[lab] = old
            labels[lab] = {**entry, "threshold": old, "kept": "not labelled"}
            continue
        known = ~np.isnan(y)
        point = choose_sensitivity_threshold(y[known], matched.y_prob[lab][known], min_sensitivity, lab)
        if point.threshold is None:
            thresholds[lab] = old
            labels[lab] = {**entry, "threshold": old, "kept": "no positive study", "n_negative": point.n_negative}
            continue
        thresholds[lab] = float(point.threshold)
        k = round(point.sensitivity * point.n_positive)
        labels[lab] = {**entry, **point.to_dict(), "sensitivity_ci": list(clopper_pearson(k, point.n_positive))}
        specific.pop(lab, None)
        if lab in SUBTYPES:
            sp = choose_specificity_threshold(
                y[known], matched.y_prob[lab][known], min_specificity, lab, floor=thresholds[lab]
            )
            if sp.threshold is not None:
                specific[lab] = float(sp.threshold)
                labels[lab]["specific"] = {**sp.to_dict(), "previous_threshold": old_specific}
    y_any = matched.y_true["ANY"]
    known = ~np.isnan(y_any)
    # A confident negative is never an ANY-positive call, nor a confident positive an ANY-negative one.
    tri = choose_triage_thresholds(
        y_any[known], matched.y_prob["ANY"][known], target_miss_rate, prevalence=triage_prevalence,
        decision_threshold=thresholds["ANY"],
    )
    ops = OperatingPoints(
        thresholds=thresholds, triage_label="ANY",
        negative_below=float(tri.negative_below), positive_above=float(tri.positive_above),
        triage_prevalence=tri.prevalence, specific_thresholds=specific or None,
    )
    report = {
        "min_sensitivity": min_sensitivity,
        "min_specificity": min_specificity,
        "target_miss_rate": target_miss_rate,
        "triage_prevalence": tri.prevalence,
        "n_studies": int(known.sum()),
        "n_positive": int(np.nansum(y_any)),
        "labels": labels,
        "triage": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in tri.to_dict().items()},
        "previous_triage": {"negative_below": current.negative_below, "positive_above": current.positive_above},
    }
    for entry in report["labels"].values():
        for d in (entry, entry.get("specific") or {}):
            for k, v in list(d.items()):
                if isinstance(v, float) and math.isnan(v):
                    d[k] = None
    return SiteOperatingPoints(ops, report)


def ensemble_files(models_dir: Path) -> list[str]:
    """What an ensemble folder needs to run and explain: the manifest, every file it names, the
    atlases next to the members, the checksummed files and the training log."""
    from ichviewer.inference.manifest import CHECKSUMS_NAME, MANIFEST_NAME, checksummed_names, load_manifest

    manifest = load_manifest(models_dir / MANIFEST_NAME)
    names = {MANIFEST_NAME}
    for spec in manifest.models:
        names.add(spec.file)
        names.update(f for f in (spec.cam_weights_file, *(b.tail_file for b in spec.block_outputs)) if f)
    names.update(p.name for p in models_dir.glob("*.atlas.sqlite"))
    names.add(CHECKSUMS_NAME)
    names.update(checksummed_names(models_dir))
    names.update(n for n in ("training_log.json",) if (models_dir / n).is_file())
    return sorted(n for n in names if (models_dir / n).is_file())


def write_site_ensemble(models_dir: str | Path, out_dir: str | Path, chosen: SiteOperatingPoints, sources: dict) -> Path:
    """Copy `models_dir` to `out_dir` with the chosen operating points; return the new manifest's path.

    Only the ensemble is copied (`ensemble_files`), not reports about the original thresholds.
    `out_dir` must not exist yet (nothing is overwritten). The manifest keeps every other
    field; its description says where the thresholds came from; `operating_points.json` keeps
    the whole account; `SHA256SUMS` is rewritten for the changed and added files.
    """
    from ichviewer.inference.manifest import MANIFEST_NAME, refresh_checksums

    src, out = Path(models_dir), Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose a new folder for the re-thresholded ensemble")
    if out.resolve().is_relative_to(src.resolve()):
        raise ValueError(f"{out}: must not be inside the ensemble folder {src}")
    out.mkdir(parents=True)
    try:
        for name in ensemble_files(src):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, out / name)
        manifest_path = out / MANIFEST_NAME
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
        data["operating_points"] = chosen.operating_points.to_dict()
        note = (
            f"Operating points re-chosen on {chosen.report['n_studies']} labelled studies "
            f"({sources.get('labels', '?')}; {SOURCE_FILE})."
        )
        data["description"] = (str(data.get("description", "")).rstrip() + " " + note).strip()
        manifest_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        record = {
            "schema": SOURCE_SCHEMA,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source_models": str(src),
            **sources,
            **chosen.report,
        }
        (out / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        refresh_checksums(out, add=(SOURCE_FILE,))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written ensemble folder left behind
        raise
    return manifest_path
