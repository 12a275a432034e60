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
    p.set_defaults(func=run_evaluate)

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
    m.set_defaults(func=run_model_card)


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
                               extra_evaluations=extra, normal_series_json=args.normal_series)
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
            args.predictions, args.labels, n_boot=args.bootstrap, seed=args.seed, compare_path=args.compare
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
        )
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


def _fmt(v: object) -> str:
    import math

    return f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else "n/a"
