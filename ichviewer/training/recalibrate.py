"""Re-place a trained phantom ensemble's operating points on its own validation split, without retraining.

The operating points (per-label high-sensitivity thresholds and the triage thresholds) are
the last step of `ichviewer train`: chosen on the validation cases from the members'
probabilities (`ichviewer.training.ensembling.choose_operating_points`). When only that rule
changes (say, triage rates stated at a clinical prevalence instead of the balanced validation
set's own mix), the networks need not be trained again: this rebuilds the same validation
(and calibration) phantoms from the training log's recipe, scores them with the ensemble's
ONNX members exactly as `ichviewer infer` reads a series (each member's Eq. 4 interpolation
degree, the manifest's weights and ANY rule), and chooses the operating points again.

Before anything is written it checks that it has reproduced the training run's validation:
the ensemble's validation case AUC for ANY must match the training log's, and, with the
sensitivity target unchanged, so must every per-label threshold (within `TOLERANCE`). The
manifest's operating points, the training log (`operating_points`, `command_config`, and the
previous choice under `operating_points_replaced`) and SHA256SUMS are then rewritten; the
networks are not touched. A site with its own labelled studies uses `ichviewer
operating-points` instead.

    python -m ichviewer.training.recalibrate models/default [--triage-prevalence 0.1]
        [--target-miss-rate 0.01] [--min-sensitivity 0.95] [--min-specificity 0.95] [--calibration-cases N] [--work build/train-work]
        [--workers 2]

A log written before a newer rule's option (say the subtypes' specific thresholds, stop 26) takes
that option's recipe default, so recalibrating adds what the rule now chooses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ichviewer import LABELS
from ichviewer.training.recipe import LOG_NAME, RecipeConfig, _jsonable, phantom_caches

#: Largest difference allowed between the training run's validation figures and the rebuilt ones.
TOLERANCE = 0.005
#: The recipe options that place the operating points (and only them): what a recalibration may change.
OPERATING_POINT_OPTIONS = ("triage_prevalence", "target_miss_rate", "min_sensitivity", "min_specificity", "calibration_cases")


class RecalibrationError(ValueError):
    """The folder cannot be recalibrated (not a phantom recipe, or its validation was not reproduced)."""


def recipe_config_from_log(log: dict, out: str | Path, **changes: Any) -> RecipeConfig:
    """The `RecipeConfig` a training log's `command_config` describes, with `changes` applied.

    Keys a newer recipe added after the log was written take their defaults; keys the recipe
    no longer has are ignored.
    """
    cfg = dict(log.get("command_config") or {})
    if not cfg:
        raise RecalibrationError("the training log has no command_config")
    names = {f.name for f in dataclasses.fields(RecipeConfig)}
    kwargs = {k: v for k, v in cfg.items() if k in names}
    for key in ("families", "specialists"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    if isinstance(kwargs.get("thickness_planes"), list):
        kwargs["thickness_planes"] = tuple(kwargs["thickness_planes"])
    kwargs.update(out=Path(out), **changes)
    return RecipeConfig(**kwargs)


def recalibrate(
    models_dir: str | Path,
    *,
    triage_prevalence: float | None,
    target_miss_rate: float | None = None,
    min_sensitivity: float | None = None,
    min_specificity: float | None = None,
    calibration_cases: int | None = None,
    work: str | Path | None = None,
    workers: int = 2,
    threads: int = 2,
    stream: TextIO | None = None,
    argv: Sequence[str] | None = None,
) -> dict:
    """Choose the operating points of the ensemble in `models_dir` again (module docstring); returns the record."""
    from ichviewer.inference.manifest import MANIFEST_NAME, load_manifest, refresh_checksums
    from ichviewer.training.data import concat_caches
    from ichviewer.training.devset import member_slice_probabilities
    from ichviewer.training.ensembling import choose_operating_points, combine_members
    from ichviewer.training.trainer import case_auc

    t0 = time.perf_counter()
    models_dir = Path(models_dir)
    log_path = models_dir / LOG_NAME
    try:
        log = json.loads(log_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecalibrationError(f"{log_path}: no training log; only an ensemble made by `ichviewer train` can be recalibrated") from None
    except json.JSONDecodeError as exc:
        raise RecalibrationError(f"{log_path}: not valid JSON ({exc})") from None
    changes: dict[str, Any] = {"triage_prevalence": triage_prevalence, "workers": workers}
    if target_miss_rate is not None:
        changes["target_miss_rate"] = target_miss_rate
    if min_sensitivity is not None:
        changes["min_sensitivity"] = min_sensitivity
    if min_specificity is not None:
        changes["min_specificity"] = min_specificity
    if calibration_cases is not None:
        changes["calibration_cases"] = int(calibration_cases)
    if work is not None:
        changes["work_dir"] = Path(work)
    config = recipe_config_from_log(log, models_dir, **changes)
    if config.source != "phantoms":
        raise RecalibrationError(
            f"{log_path}: trained on a site's DICOM studies; re-choose its thresholds on labelled studies with "
            "`ichviewer operating-points`"
        )
    manifest = load_manifest(models_dir / MANIFEST_NAME)
    # The same cache files as the training run's (a work folder left by `ichviewer train` is reused).
    loaded = phantom_caches(config, stream, ("validation", "calibration"))
    caches = {split: cache for split, (cache, _plans, _ignore) in loaded.items()}
    val = caches["validation"]
    op_cache = concat_caches([val, caches["calibration"]]) if "calibration" in caches else val
    weights = [spec.weight for spec in manifest.models]
    any_rule = manifest.aggregation.any_rule

    def ensemble_probabilities(cache):
        member_probs = []
        for spec in manifest.models:
            if stream is not None:
                stream.write(f"scoring {cache.n_slices} slices with {spec.file} (degree {spec.interpolation_degree})\n")
            member_probs.append(
                member_slice_probabilities(
                    models_dir / spec.file, cache, threads=threads, degree=spec.interpolation_degree,
                    context_slices=spec.context_slices,
                )
            )
        return combine_members(member_probs, weights, any_rule)

    op_probs = ensemble_probabilities(op_cache)
    val_probs = op_probs[: val.n_slices]
    # The cases the training run chose its thresholds on, when a new calibration count changes them:
    # validation plus the run's own calibration cases, so the check below still compares like with like.
    logged_calibration = int((log.get("command_config") or {}).get("calibration_cases") or 0)
    check_cache, check_probs = op_cache, op_probs
    if config.calibration_cases != logged_calibration:
        check_cache, check_probs = val, val_probs
        if logged_calibration:
            logged = recipe_config_from_log(log, models_dir, **{k: v for k, v in changes.items() if k != "calibration_cases"})
            old_cal = phantom_caches(logged, stream, ("calibration",))["calibration"][0]
            check_cache = concat_caches([val, old_cal])
            check_probs = np.concatenate([val_probs, ensemble_probabilities(old_cal)])

    # Reproduced? The ensemble's validation AUC, and (same sensitivity target) every label's threshold.
    old_ops = log.get("operating_points") or {}
    auc_logged = (log.get("ensemble") or {}).get("validation_case_auc_any")
    auc_now = case_auc(val, val_probs)
    check: dict[str, Any] = {"validation_case_auc_any": {"training_log": auc_logged, "rebuilt": auc_now}}
    problems = []
    undefined = auc_logged is None and not np.isfinite(auc_now)  # one class only: no AUC either time
    if not undefined and (auc_logged is None or not abs(auc_now - auc_logged) <= TOLERANCE):
        problems.append(f"validation case AUC(ANY) {auc_now:.4f} against {auc_logged} in the training log")
    ops, report = choose_operating_points(
        op_cache, op_probs, config.min_sensitivity, config.target_miss_rate, config.triage_prevalence,
        min_specificity=config.min_specificity,
    )
    check_report = report
    if check_cache is not op_cache:
        _ops, check_report = choose_operating_points(
            check_cache, check_probs, config.min_sensitivity, config.target_miss_rate, config.triage_prevalence,
            min_specificity=config.min_specificity,
        )
    if "calibration" in caches:
        report["fitted_on"] = {"validation_cases": len(val.cases), "calibration_cases": len(caches["calibration"].cases)}
    same_target = old_ops.get("min_sensitivity") == config.min_sensitivity
    diffs = {}
    for lab in LABELS:
        old = ((old_ops.get("labels") or {}).get(lab) or {}).get("threshold")
        new = check_report["labels"][lab].get("threshold")
        if old is not None and new is not None:
            diffs[lab] = float(new) - float(old)
    check["threshold_differences"] = diffs
    if same_target:
        off = {lab: d for lab, d in diffs.items() if abs(d) > TOLERANCE}
        if off:
            problems.append("per-label thresholds moved: " + ", ".join(f"{lab} {d:+.4f}" for lab, d in off.items()))
    if problems:
        raise RecalibrationError(
            f"{models_dir}: the rebuilt validation does not reproduce the training run ({'; '.join(problems)}); "
            "nothing was written (different phantom code or a different recipe?)"
        )

    record = {
        "replaced_on": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(argv) if argv is not None else list(sys.argv),
        "reason": ("operating points chosen again with the recipe's current rule on the same validation cases"
                   + (f" plus {config.calibration_cases} calibration cases" if config.calibration_cases else "")),
        "changed_options": {k: v for k, v in changes.items() if k not in ("workers", "work_dir")},
        # options of a newer rule that the training run did not have, at the values used now (e.g. the
        # subtypes' specific thresholds, stop 26)
        "added_options": {
            k: getattr(config, k) for k in OPERATING_POINT_OPTIONS
            if k not in (log.get("command_config") or {}) and k not in changes
        },
        "reproduction_check": check,
        "previous_operating_points": old_ops,
        "previous_manifest_operating_points": manifest.operating_points.to_dict(),
        "seconds": time.perf_counter() - t0,
    }
    dataclasses.replace(manifest, operating_points=ops).write()
    log["operating_points"] = report
    log["command_config"] = {**log.get("command_config", {}), **{
        k: v for k, v in dataclasses.asdict(config).items() if k in OPERATING_POINT_OPTIONS
    }}
    log.setdefault("operating_points_replaced", []).append(record)
    log_path.write_text(json.dumps(_jsonable(log), indent=2) + "\n", encoding="utf-8")
    refresh_checksums(models_dir)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    from ichviewer.commands.evaluate import prevalence_argument, triage_summary_line
    from ichviewer.evaluation.triage import CLINICAL_ICH_PREVALENCE

    p = argparse.ArgumentParser(prog="python -m ichviewer.training.recalibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("models", help="the ensemble folder (manifest.json, training_log.json, the ONNX members)")
    p.add_argument("--triage-prevalence", type=prevalence_argument, default=CLINICAL_ICH_PREVALENCE, metavar="P",
                   help=f"state triage rates at this share of studies with haemorrhage (default {CLINICAL_ICH_PREVALENCE:g}; "
                   "'observed' for the validation set's own mix)")
    p.add_argument("--target-miss-rate", type=float, help="default: the training log's")
    p.add_argument("--min-sensitivity", type=float, help="default: the training log's")
    p.add_argument("--min-specificity", type=float, help="subtypes' specific thresholds (default: the training log's, "
                   "else the recipe's 0.95)")
    p.add_argument("--calibration-cases", type=int, metavar="N",
                   help="choose the thresholds on the validation cases plus N further validation-split phantoms "
                   "(departure 21; default: the training log's). The training run's own choice is still reproduced first")
    p.add_argument("--work", metavar="DIR", help="where the validation cache is kept (default: the training log's)")
    p.add_argument("--workers", type=int, default=2, help="processes generating phantoms (default 2)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    args = p.parse_args(argv)
    try:
        record = recalibrate(
            args.models, triage_prevalence=args.triage_prevalence, target_miss_rate=args.target_miss_rate,
            min_sensitivity=args.min_sensitivity, min_specificity=args.min_specificity,
            calibration_cases=args.calibration_cases, work=args.work, workers=args.workers, threads=args.threads,
            stream=sys.stderr, argv=["python", "-m", "ichviewer.training.recalibrate", *(argv if argv is not None else sys.argv[1:])],
        )
    except (RecalibrationError, ValueError, OSError) as exc:
        print(f"recalibrate: {exc}", file=sys.stderr)
        return 1
    log = json.loads((Path(args.models) / LOG_NAME).read_text(encoding="utf-8"))
    chk = record["reproduction_check"]
    auc = chk["validation_case_auc_any"]
    print(f"reproduced the training run's validation: case AUC(ANY) {auc['rebuilt']:.4f} "
          f"(log {auc['training_log'] if auc['training_log'] is None else format(auc['training_log'], '.4f')}); largest threshold change "
          f"{max((abs(d) for d in chk['threshold_differences'].values()), default=0.0):.4f}")
    print(triage_summary_line(log["operating_points"]["triage"]))
    print(f"wrote {args.models}/manifest.json, {LOG_NAME} and SHA256SUMS ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
