"""The `ichviewer evaluate` subcommand: case-level metrics with confidence intervals, as JSON and HTML."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate `ichviewer infer` predictions against a labels CSV",
        description=(
            "Compare the case-level predictions written by `ichviewer infer` with reference labels: ROC AUC and "
            "average precision with bootstrap 95 % CIs, sensitivity/specificity/PPV/NPV with exact binomial CIs, "
            "sensitivity by bleed size, false positives on mimics and the triage curve. The JSON keys are documented "
            "in ichviewer.evaluation.summary."
        ),
    )
    p.add_argument("--predictions", required=True, metavar="INFER.json", help="output of `ichviewer infer --json`")
    p.add_argument(
        "--labels",
        required=True,
        metavar="LABELS.csv",
        help="study_uid or series_uid column, 0/1 columns any (required), iph, ivh, sdh, edh, sah; optional volume_ml, mimic",
    )
    p.add_argument("--json", required=True, metavar="OUT.json", help="where to write the metrics")
    p.add_argument("--report", metavar="OUT.html", help="also write a self-contained HTML report")
    p.add_argument(
        "--compare",
        metavar="OTHER.json",
        help="a second `ichviewer infer` JSON on the same studies: DeLong's test of the AUC difference per label",
    )
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    add_triage_prevalence_argument(p)
    p.set_defaults(func=run_evaluate)

    o = subparsers.add_parser(
        "operating-points",
        help="re-choose an ensemble's thresholds on your own labelled studies, into a copy of its folder",
        description="Choose per-label high-sensitivity thresholds and the triage thresholds on a site's labelled "
        "studies from `ichviewer infer` predictions of the same ensemble, and write a copy of the ensemble folder "
        "with them (the models are unchanged; operating_points.json records the choice). Point --models at the "
        "copy to use it.",
    )
    o.add_argument("--models", required=True, metavar="DIR", help="the ensemble folder that produced the predictions")
    o.add_argument("--predictions", required=True, metavar="INFER.json", help="`ichviewer infer --models DIR` output")
    o.add_argument("--labels", required=True, metavar="LABELS.csv", help="same format as for `ichviewer evaluate`")
    o.add_argument("--out", required=True, metavar="NEW_DIR", help="where to write the re-thresholded copy (must not exist)")
    o.add_argument("--min-sensitivity", type=float, default=0.95, help="per-label sensitivity target (default 0.95)")
    o.add_argument("--min-specificity", type=float, default=0.95,
                   help="specificity of each subtype's specific threshold, from which a called subtype reads 'positive' "
                   "rather than 'possible' (default 0.95)")
    o.add_argument("--target-miss-rate", type=float, default=0.01,
                   help="largest share of haemorrhages among studies triaged 'confident negative' (default 0.01)")
    add_triage_prevalence_argument(o)
    o.set_defaults(func=run_operating_points)

    m = subparsers.add_parser(
        "model-card",
        help="write models/MODEL_CARD.md from an evaluation JSON and a training log",
        description="Render the model card from the JSON of `ichviewer evaluate` and the training_log.json of "
        "`ichviewer train`, quoting the commands that produced them; no number is typed by hand.",
    )
    m.add_argument("--evaluation", required=True, metavar="EVAL.json")
    m.add_argument("--training-log", required=True, metavar="training_log.json")
    m.add_argument("--out", required=True, metavar="MODEL_CARD.md")
    m.add_argument("--command", action="append", default=[], metavar="NAME=COMMAND",
                   help="a command to quote, e.g. 'train=ichviewer train ...' (train, test set, infer, evaluate, atlas)")
    m.add_argument("--atlas-json", metavar="ATLAS_EVAL.json", help="`ichviewer atlas evaluate` output to summarise")
    m.add_argument("--extra-evaluation", action="append", default=[], metavar="NAME=EVAL.json",
                   help="the same models evaluated on another test set, shown beside the held-out figures "
                   "(quote its commands with --command 'NAME=...'; repeatable)")
    m.add_argument("--normal-series", metavar="INFER.json",
                   help="`ichviewer infer` JSON of real series known to contain no haemorrhage "
                   "(quote its command with --command 'normal series=...')")
    m.add_argument("--localization", metavar="LOCALIZATION.json",
                   help="`ichviewer evaluate-attention` output (quote its command with --command 'attention=...')")
    m.set_defaults(func=run_model_card)

    a = subparsers.add_parser(
        "evaluate-attention",
        help="how well attention maps point at the bleed, on phantoms (Lee et al. 2019's localisation check)",
        description="Generate the planned phantoms of a split (as `ichviewer phantom-set` does), and for every "
        "subtype present take its attention map on the slice where its lesion is largest, keep the pixels above "
        "20 %% of the map's highest value (Lee et al. 2019, Methods) and check that the lesion's centre is inside. "
        "Reports the share found with exact 95 %% CIs and the kept area as a share of the head, per member, "
        "subtype and lesion size.",
    )
    a.add_argument("--models", metavar="DIR", default=None, help="ensemble directory (default: the bundled models/default)")
    a.add_argument("--n", type=int, default=200, help="planned studies, as `phantom-set --n` (default 200; the "
                   "ones with haemorrhage are scored)")
    a.add_argument("--split", choices=("train", "validation", "test"), default="test")
    a.add_argument("--seed", type=int, default=0, help="run seed of the split's plans (default 0)")
    a.add_argument("--matrix", type=int, default=256, help="phantom in-plane matrix (default 256)")
    a.add_argument("--all-members", action="store_true",
                   help="score every member with a CAM head, not only the one the workstation explains with")
    a.add_argument("--json", required=True, metavar="OUT.json", help="where to write the figures and every check")
    a.set_defaults(func=run_evaluate_attention)


def run_operating_points(args: argparse.Namespace) -> int:
    from ichviewer.evaluation.inputs import EvaluationInputError, match_cases, read_labels, read_predictions
    from ichviewer.evaluation.site_operating_points import (
        SOURCE_FILE,
        check_same_models,
        site_operating_points,
        write_site_ensemble,
    )
    from ichviewer.inference.errors import InferenceError
    from ichviewer.inference.manifest import MANIFEST_NAME, load_manifest

    prog = "ichviewer operating-points"
    if not 0.0 < args.min_sensitivity <= 1.0 or not 0.0 < args.min_specificity <= 1.0 or not 0.0 <= args.target_miss_rate < 1.0:
        print(f"{prog}: --min-sensitivity and --min-specificity must be in (0, 1] and --target-miss-rate in [0, 1)",
              file=sys.stderr)
        return 2
    try:
        manifest = load_manifest(f"{args.models}/{MANIFEST_NAME}")
        predictions = read_predictions(args.predictions)
        check_same_models(predictions, {m.sha256 for m in manifest.models}, args.predictions, args.models)
        matched = match_cases(predictions, read_labels(args.labels), args.predictions)
        chosen = site_operating_points(
            matched, manifest.operating_points, args.min_sensitivity, args.target_miss_rate, args.triage_prevalence,
            min_specificity=args.min_specificity,
        )
        path = write_site_ensemble(args.models, args.out, chosen, {
            "predictions": str(args.predictions), "labels": str(args.labels), **matched.inputs_summary(),
        })
    except (EvaluationInputError, InferenceError, ValueError, FileExistsError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prog}: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    r = chosen.report
    print(f"{prog}: {r['n_studies']} studies ({r['n_positive']} with haemorrhage), sensitivity target {r['min_sensitivity']:g}")
    for lab, e in r["labels"].items():
        if "kept" in e:
            print(f"  {lab}: threshold {e['threshold']:.3g} kept ({e['kept']})")
        else:
            lo, hi = e["sensitivity_ci"]
            print(f"  {lab}: threshold {e['previous_threshold']:.3g} -> {e['threshold']:.3g}: sensitivity "
                  f"{e['sensitivity']:.3f} (95 % CI {lo:.2f}-{hi:.2f}; {e['n_positive']} positive), specificity "
                  + ("-" if e["specificity"] is None else f"{e['specificity']:.3f}") + f" ({e['n_negative']} negative)")
            sp = e.get("specific")
            if sp:
                sens = "-" if sp["sensitivity"] is None else f"{sp['sensitivity']:.3f}"
                print(f"    'positive' rather than 'possible' from {sp['threshold']:.3g}: specificity "
                      f"{sp['specificity']:.3f}, sensitivity {sens}")
    print("  " + triage_summary_line(r["triage"]))
    few = [lab for lab, e in r["labels"].items() if "kept" not in e and e["n_positive"] < 20]
    if few:
        print(f"  warning: {', '.join(few)} had fewer than 20 positive studies; their thresholds are uncertain "
              "(see the intervals) and should be re-chosen on more studies")
    print(f"wrote {path} and {SOURCE_FILE}; use it with --models {args.out}")
    return 0


def _positive_tier_summary(entry: dict) -> str:
    """`  PPV 0.21; "positive" tier: ...` for a subtype scored in two tiers (ichviewer.core.decisions), else ""."""
    tier = entry.get("operating_point_positive_tier")
    if not tier:
        return ""
    return (f"  PPV {_fmt(entry['operating_point']['ppv']['value'])}; \"positive\" tier: sensitivity "
            f"{_fmt(tier['sensitivity']['value'])}  specificity {_fmt(tier['specificity']['value'])}  "
            f"PPV {_fmt(tier['ppv']['value'])}")


def run_evaluate_attention(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ichviewer.evaluation.localization import evaluate_localization
    from ichviewer.inference import InferenceError, load_ensemble
    from ichviewer.inference.manifest import default_models_dir
    from ichviewer.training.data import plan_phantom_cases

    if args.n < 1:
        print("ichviewer evaluate-attention: --n must be at least 1", file=sys.stderr)
        return 2
    try:
        ensemble = load_ensemble(args.models or default_models_dir())
    except InferenceError as exc:
        print(f"ichviewer evaluate-attention: {exc}", file=sys.stderr)
        return 2
    explaining = ensemble.cam_model.name if ensemble.cam_model is not None else None
    members = None
    if args.all_members:  # the explaining member first, as the model card lists them
        members = sorted((m.name for m in ensemble.models if m.cam_weight is not None), key=lambda n: n != explaining)
    if explaining is None and not members:
        print(f"ichviewer evaluate-attention: no member of {ensemble.directory} has a CAM head", file=sys.stderr)
        return 2
    plans = plan_phantom_cases(args.n, args.split, seed=args.seed)

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} studies with haemorrhage", end="", file=sys.stderr, flush=True)

    result = evaluate_localization(plans, ensemble, members=members, matrix=args.matrix, progress=progress)
    print(file=sys.stderr)
    result["models"] = args.models or "the bundled models/default"  # as given: the file is committed beside it
    result["explaining_member"] = explaining  # the member whose maps the workstation shows
    result["plans"] = {"n": args.n, "split": args.split, "seed": args.seed, "matrix": args.matrix}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", "utf-8")
    for name, summary in result["members"].items():
        o = summary["overall"]
        print(f"{name}: bleed centre inside the map's >= 20 % region in {o['found']}/{o['n']} "
              f"({_fmt(o['value'])}, 95 % CI {_fmt(o['ci'][0])}-{_fmt(o['ci'][1])}); region {_fmt(o['mean_area_fraction'])} "
              "of the head on average")
    print(f"wrote {out}")
    return 0


def run_model_card(args: argparse.Namespace) -> int:
    import json

    from ichviewer.evaluation.model_card import write_model_card

    commands: dict[str, str] = {}
    for item in args.command:
        name, sep, cmd = item.partition("=")
        if not sep:
            print(f"ichviewer model-card: --command must be NAME=COMMAND, got {item!r}", file=sys.stderr)
            return 2
        name = name.strip()  # a name given twice quotes both commands, one per line
        commands[name] = f"{commands[name]}\n{cmd.strip()}" if name in commands else cmd.strip()
    extra = []
    for item in args.extra_evaluation:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            print(f"ichviewer model-card: --extra-evaluation must be NAME=EVAL.json, got {item!r}", file=sys.stderr)
            return 2
        extra.append((name.strip(), path.strip()))
    atlas = None
    try:
        if args.atlas_json:
            atlas = json.loads(open(args.atlas_json, encoding="utf-8").read())
        out = write_model_card(args.out, args.evaluation, args.training_log, commands, atlas,
                               extra_evaluations=extra, normal_series_json=args.normal_series,
                               localization_json=args.localization)
    except (OSError, ValueError, KeyError) as exc:
        print(f"ichviewer model-card: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ichviewer.evaluation.inputs import EvaluationInputError, evaluate_files
    from ichviewer.evaluation.report import write_json, write_report

    if args.bootstrap < 1:
        print(f"ichviewer evaluate: --bootstrap must be at least 1, got {args.bootstrap}", file=sys.stderr)
        return 2
    try:
        result = evaluate_files(
            args.predictions, args.labels, n_boot=args.bootstrap, seed=args.seed, compare_path=args.compare,
            triage_prevalence=args.triage_prevalence,
        )
    except EvaluationInputError as exc:
        print(f"ichviewer evaluate: {exc}", file=sys.stderr)
        return 2
    try:
        write_json(result, args.json)
        if args.report:
            write_report(result, args.report)
    except OSError as exc:
        print(f"ichviewer evaluate: cannot write output: {exc}", file=sys.stderr)
        return 1
    inputs = result["inputs"]
    print(f"{inputs['n_matched']} studies evaluated (matched on {inputs['match_key']})")
    for label, e in result["labels"].items():
        auc, sens, spec = e["auc"], e["operating_point"]["sensitivity"], e["operating_point"]["specificity"]
        print(
            f"  {label:<4} AUC {_fmt(auc['value'])} ({_fmt(auc['ci'][0])}-{_fmt(auc['ci'][1])})"
            f"  sensitivity {_fmt(sens['value'])}  specificity {_fmt(spec['value'])}"
            + _positive_tier_summary(e)
        )
    observed = (result.get("triage") or {}).get("observed")
    if observed:
        c = observed["counts"]
        line = (f"  triage as inferred: {c['confident negative']} confident negative (haemorrhage among them "
                f"{_fmt(observed['miss_rate']['value'])}")
        at = observed.get("miss_rate_at_prevalence")
        if at is not None:
            line += f"; at {result['triage']['prevalence']:g} prevalence {_fmt(at['value'])}"
        print(line + f"), {c['refer']} refer, {c['confident positive']} confident positive")
    comparison = result.get("comparison")
    if comparison:
        print(f"compared with {comparison['predictions_b']} on {comparison['n_cases']} studies (DeLong):")
        for label, test in comparison["labels"].items():
            if test:
                print(f"  {label:<4} AUC difference {test['difference']:+.3f}  p = {test['p_value']:.3g}")
    for what, key in (("labelled studies without a prediction", "unmatched_labels"),
                      ("predicted studies without a label", "unmatched_predictions"),
                      ("studies inference could not read", "failed")):
        if inputs[key]:
            print(f"  note: {len(inputs[key])} {what} (listed in the JSON)", file=sys.stderr)
    print(f"metrics written to {args.json}" + (f", report to {args.report}" if args.report else ""))
    return 0


def prevalence_argument(text: str) -> float | None:
    """argparse type of --triage-prevalence: a share of studies in (0, 1), or 'observed' (the labelled set's own mix)."""
    from ichviewer.evaluation.triage import check_prevalence

    if text.strip().lower() in ("observed", "none"):
        return None
    try:
        return check_prevalence(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive) or 'observed', got {text!r}") from None


def add_triage_prevalence_argument(parser: argparse.ArgumentParser) -> None:
    from ichviewer.evaluation.triage import CLINICAL_ICH_PREVALENCE

    parser.add_argument(
        "--triage-prevalence", type=prevalence_argument, default=CLINICAL_ICH_PREVALENCE, metavar="P",
        help="state triage miss and false-positive rates at this share of studies with haemorrhage, as on a "
        f"clinical worklist (default {CLINICAL_ICH_PREVALENCE:g}; 'observed' uses the labelled studies' own mix, "
        "which for a balanced set is 0.5)",
    )


def triage_summary_line(t: dict) -> str:
    """One line on chosen triage thresholds (a TriageThresholds dict)."""
    prev = t.get("prevalence")
    at = f" at {prev:g} prevalence" if prev is not None else ""
    if t["negative_reached"]:
        neg = (f"confident negative below {t['negative_below']:.3g} ({t['fraction_negative']:.0%} of these studies, "
               f"miss rate{at} {_fmt(t['miss_rate'])})")
    else:
        neg = f"confident negative off (no threshold meets a miss rate{at} of {t['target_miss_rate']:g})"
    if t["positive_reached"]:
        pos = (f"confident positive above {t['positive_above']:.3g} ({t['fraction_positive']:.0%}, "
               f"false-positive share{at} {_fmt(t['false_positive_rate'])})")
    else:
        pos = "confident positive off"
    return f"triage on ANY: {neg}; {pos}"


def _fmt(v: object) -> str:
    import math

    return f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else "n/a"
