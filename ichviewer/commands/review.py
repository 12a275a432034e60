"""`ichviewer review ...`: the review database from the command line (imports, queues, panels, stats)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

LABEL_NAMES = ("IPH", "IVH", "SDH", "EDH", "SAH", "ANY")


def register(subparsers: argparse._SubParsersAction) -> None:
    review = subparsers.add_parser(
        "review", help="reader adjudication log, difficult-case queues, expert panels, statistics",
        description="Work with the review database (one SQLite file given by --db).")
    sub = review.add_subparsers(dest="review_command", metavar="ACTION")
    review.set_defaults(func=lambda args: _usage(review))

    p = sub.add_parser("import-labels", help="import reference labels from a CSV (study_uid|series_uid, any, subtypes)")
    p.add_argument("csv", type=Path, metavar="CSV")
    p.add_argument("--source", help="where the labels come from (default: import:<file name>)")
    _db(p)
    p.set_defaults(func=_import_labels)

    p = sub.add_parser("import-runs", help="import model runs from an `ichviewer infer` JSON file")
    p.add_argument("infer_json", type=Path, metavar="INFER.json")
    _db(p)
    p.set_defaults(func=_import_runs)

    p = sub.add_parser("queue", help="list a difficult-case queue")
    p.add_argument("--kind", required=True, choices=("ai", "human", "discordant"))
    p.add_argument("--reader", help="reader name (required for --kind discordant)")
    _queue_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _db(p, must_exist=True)
    p.set_defaults(func=_queue)

    p = sub.add_parser("export", help="export reads as CSV, or the whole database as JSON")
    p.add_argument("--format", required=True, choices=("csv", "json"))
    p.add_argument("--out", type=Path, help="output file (default: standard output)")
    p.add_argument("--include-paths", action="store_true",
                   help="include study file paths in the JSON (left out by default: folder names may identify patients)")
    _db(p, must_exist=True)
    p.set_defaults(func=_export)

    p = sub.add_parser("stats", help="accuracy of readers and model before/after amendment; kappas")
    p.add_argument("--json", dest="json_out", type=Path, metavar="OUT",
                   help="write the statistics as JSON to OUT ('-' for standard output)")
    p.add_argument("--label", default="ANY", type=str.upper, choices=LABEL_NAMES)
    p.add_argument("--threshold", type=float, default=None,
                   help="read the model as positive at this probability (default: each model run's own call, made "
                   "at its ensemble's operating point; 0.5 for runs stored without one)")
    p.add_argument("--uncertain-as", default="positive", choices=("positive", "negative", "exclude"),
                   help="how an 'uncertain' read counts (default positive)")
    _db(p, must_exist=True)
    p.set_defaults(func=_stats)

    p = sub.add_parser("add-reader", help="add a reader (or change their role)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("resident", "attending", "panel"))
    _db(p)
    p.set_defaults(func=_add_reader)

    p = sub.add_parser("log-read", help="log one read (the headless form of the adjudication panel)")
    p.add_argument("--reader", required=True)
    p.add_argument("--role", choices=("resident", "attending", "panel"),
                   help="create the reader with this role if new")
    p.add_argument("--series", required=True, help="Series Instance UID")
    p.add_argument("--study", help="Study Instance UID")
    p.add_argument("--status", action="append", default=[], metavar="LABEL=present|absent|uncertain",
                   help="repeatable; ANY is required")
    p.add_argument("--confidence", action="append", default=[], metavar="LABEL=1..5")
    p.add_argument("--ai", action="append", default=[], metavar="LABEL=accept|reject|supplement")
    p.add_argument("--note", default="")
    p.add_argument("--seconds", type=float)
    _db(p)
    p.set_defaults(func=_log_read)

    panel = sub.add_parser("panel", help="expert panels: create, add-member, vote, show, close")
    psub = panel.add_subparsers(dest="panel_command", metavar="ACTION")
    panel.set_defaults(func=lambda args: _usage(panel))

    p = psub.add_parser("create", help="create a panel from a queue and/or listed series")
    p.add_argument("--name", required=True)
    p.add_argument("--from-queue", choices=("ai", "human", "discordant"))
    p.add_argument("--reader", help="reader for --from-queue discordant")
    _queue_options(p)
    p.add_argument("--series", action="append", default=[], help="add this series (repeatable)")
    p.add_argument("--labels", default="ANY", help="comma-separated labels to vote on (default ANY)")
    p.add_argument("--unblinded", action="store_true", help="show model output and votes before voting")
    p.add_argument("--majority-fraction", type=float, default=0.5,
                   help="amend when more than this fraction of members disagree (default 0.5)")
    p.add_argument("--min-disagree", type=int, help="amend when at least this many members disagree")
    _db(p, must_exist=True)
    p.set_defaults(func=_panel_create)

    p = psub.add_parser("add-member", help="add a reader to a panel")
    p.add_argument("panel_id", type=int)
    p.add_argument("--reader", required=True)
    p.add_argument("--role", default="panel", choices=("resident", "attending", "panel"))
    _db(p, must_exist=True)
    p.set_defaults(func=_panel_add_member)

    p = psub.add_parser("vote", help="record a member's vote on one case")
    p.add_argument("panel_id", type=int)
    p.add_argument("--reader", required=True)
    p.add_argument("--series", required=True)
    p.add_argument("--value", choices=("present", "absent"), help="vote of a single-label panel")
    p.add_argument("--vote", action="append", default=[], metavar="LABEL=present|absent")
    p.add_argument("--note", default="")
    _db(p, must_exist=True)
    p.set_defaults(func=_panel_vote)

    p = psub.add_parser("show", help="panel summary, or (with --reader and --series) what a member may see")
    p.add_argument("panel_id", type=int)
    p.add_argument("--reader")
    p.add_argument("--series")
    _db(p, must_exist=True)
    p.set_defaults(func=_panel_show)

    p = psub.add_parser("close", help="close a panel and amend labels by its consensus rule")
    p.add_argument("panel_id", type=int)
    p.add_argument("--reason", default="")
    _db(p, must_exist=True)
    p.set_defaults(func=_panel_close)


def _db(parser: argparse.ArgumentParser, *, must_exist: bool = False) -> None:
    parser.add_argument("--db", required=True, type=Path, help="review database file (SQLite)")
    parser.set_defaults(db_must_exist=must_exist)


def _queue_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label", default="ANY", type=str.upper, choices=LABEL_NAMES)
    parser.add_argument("--positive-max", type=float, default=None,
                        help="difficult for AI: labelled positive with probability <= this (default: Kang et al.'s "
                        "0.4-0.6 band carried to each model run's own operating point, 0.6 for a run calling at 0.5)")
    parser.add_argument("--negative-min", type=float, default=None,
                        help="difficult for AI: labelled negative with probability >= this (default: the same band's "
                        "lower bound, 0.4 for a run calling at 0.5)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="discordance: read the model as positive at this probability (default: each model "
                        "run's own call, made at its ensemble's operating point; 0.5 for runs stored without one)")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fail(message: str) -> int:
    print(f"ichviewer review: {message}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace, body: Any) -> int:
    """Open the store, run `body(store)`, and turn bad input into one clear line on stderr."""
    import sqlite3

    from ichviewer.review import ReviewError, ReviewStore

    if args.db_must_exist and not args.db.exists():
        return _fail(f"{args.db}: no such review database")
    try:
        with ReviewStore(args.db) as store:
            return int(body(store) or 0)
    except ReviewError as exc:
        return _fail(str(exc))
    except sqlite3.Error as exc:
        return _fail(f"{args.db}: database error: {exc}")
    except OSError as exc:
        return _fail(f"{exc.filename or args.db}: {exc.strerror or exc}")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    from ichviewer.review import ReviewError

    out = {}
    for item in items:
        if "=" not in item:
            raise ReviewError(f"{what} must look like LABEL=VALUE, not {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().upper()] = v.strip()
    return out


def _thresholds(args: argparse.Namespace) -> Any:
    from ichviewer.review import QueueThresholds

    return QueueThresholds(args.positive_max, args.negative_min, args.threshold)


def _import_labels(args: argparse.Namespace) -> int:
    from ichviewer.review import import_labels_csv

    def body(store: Any) -> int:
        res = import_labels_csv(store, args.csv, source=args.source)
        print(f"{args.csv}: {res.rows} row(s), {res.series} series, {res.versions_added} label version(s) added, "
              f"{res.unchanged} unchanged")
        if res.unknown_studies:
            print(f"{args.csv}: {len(res.unknown_studies)} study_uid(s) match no series in the database "
                  f"(import the model runs first or use series_uid): {', '.join(res.unknown_studies[:5])}",
                  file=sys.stderr)
            return 1 if res.series == 0 else 0
        return 0

    return _run(args, body)


def _import_runs(args: argparse.Namespace) -> int:
    from ichviewer.review import import_infer_json

    def body(store: Any) -> int:
        res = import_infer_json(store, args.infer_json)
        cited = (f"; {len(res.cited_ids)} kept result(s) were runs already recorded, not imported again"
                 if res.cited_ids else "")
        print(f"{args.infer_json}: {len(res.run_ids)} model run(s) imported{cited}")
        for f in res.failed:
            print(f"{args.infer_json}: inference had failed for {f.get('path')}: {f.get('reason')}", file=sys.stderr)
        return 0

    return _run(args, body)


def _queue(args: argparse.Namespace) -> int:
    from ichviewer.review import build_queue

    def body(store: Any) -> int:
        items = build_queue(store, args.kind, reader=args.reader, label=args.label, thresholds=_thresholds(args))
        if args.json:
            json.dump({"kind": args.kind, "label": args.label, "count": len(items),
                       "items": [it.to_dict() for it in items]}, sys.stdout, indent=2)
            print()
            return 0
        # The folder is what a reader opens the case by (`ichviewer open FOLDER`); "-" when no run or
        # read has recorded where the series is on this machine.
        header = ("series_uid", "label", "probability", "folder", "reason")
        rows = [(it.series_uid, "" if it.label_value is None else str(it.label_value),
                 "" if it.probability is None else f"{it.probability:.3f}", it.path or "-", it.reason) for it in items]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header[:4])]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths + [0])).rstrip())
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths + [0])).rstrip())
        print(f"{len(items)} case(s) on the {args.kind} queue", file=sys.stderr)
        return 0

    return _run(args, body)


def _export(args: argparse.Namespace) -> int:
    from ichviewer.review import export_json, reads_csv

    def body(store: Any) -> int:
        if args.format == "csv":
            text = reads_csv(store)
        else:
            text = json.dumps(export_json(store, include_paths=args.include_paths), indent=2) + "\n"
        if args.out is None:
            sys.stdout.write(text)
        else:
            args.out.write_text(text, encoding="utf-8")
        return 0

    return _run(args, body)


def _stats(args: argparse.Namespace) -> int:
    from ichviewer.review import compute_statistics

    def body(store: Any) -> int:
        stats = compute_statistics(store, label=args.label, threshold=args.threshold, uncertain_as=args.uncertain_as)
        text = json.dumps(stats, indent=2) + "\n"
        if args.json_out is not None and str(args.json_out) == "-":
            sys.stdout.write(text)
            return 0
        if args.json_out is not None:
            args.json_out.write_text(text, encoding="utf-8")
        _print_stats_summary(stats)
        return 0

    return _run(args, body)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _print_stats_summary(stats: dict[str, Any]) -> None:
    print(f"label {stats['label']}: {stats['n_labelled']} labelled series, {stats['n_amended']} amended")
    for which in ("before", "after"):
        m = stats["model"][which]
        print(f"[{which}] model ({stats['model_call']}): n={m['n']} sens={_fmt(m['sensitivity'])} "
              f"spec={_fmt(m['specificity'])} acc={_fmt(m['accuracy'])}")
        for r in stats["readers"][which]:
            print(f"[{which}] {r['reader']} ({r['role']}): n={r['n']} sens={_fmt(r['sensitivity'])} "
                  f"spec={_fmt(r['specificity'])} acc={_fmt(r['accuracy'])}")
            same = r.get("model_same_cases") or {}
            if same:
                print(f"[{which}]   model on the same cases: n={same['n']} sens={_fmt(same['sensitivity'])} "
                      f"spec={_fmt(same['specificity'])} acc={_fmt(same['accuracy'])}")
    for p in stats["panels"]:
        print(f"panel {p['panel_id']} {p['name']}: {p['n_cases']} case(s), Fleiss' kappa {_fmt(p.get('fleiss_kappa'))}")


def _add_reader(args: argparse.Namespace) -> int:
    def body(store: Any) -> int:
        r = store.add_reader(args.name, args.role)
        print(f"reader {r.id}: {r.name} ({r.role})")
        return 0

    return _run(args, body)


def _log_read(args: argparse.Namespace) -> int:
    from ichviewer.review import Read, ReviewError

    def body(store: Any) -> int:
        reader = store.reader(args.reader)
        if reader is None:
            if not args.role:
                raise ReviewError(f"unknown reader {args.reader!r}: give --role to add them")
            reader = store.add_reader(args.reader, args.role)
        try:
            confidence = {k: int(v) for k, v in _pairs(args.confidence, "--confidence").items()}
        except ValueError:
            raise ReviewError("--confidence values must be integers 1-5") from None
        read = Read(args.series, _pairs(args.status, "--status"), confidence, _pairs(args.ai, "--ai"),
                    note=args.note, seconds_spent=args.seconds, study_uid=args.study)
        print(store.log_read(reader, read))
        return 0

    return _run(args, body)


def _panel_create(args: argparse.Namespace) -> int:
    from ichviewer.review import ConsensusRule, create_panel

    def body(store: Any) -> int:
        panel = create_panel(
            store, args.name, queue=args.from_queue, reader=args.reader, queue_label=args.label,
            thresholds=_thresholds(args), series_uids=args.series,
            labels=[s for s in args.labels.split(",") if s.strip()], blinded=not args.unblinded,
            rule=ConsensusRule(args.majority_fraction, args.min_disagree))
        print(panel.id)
        return 0

    return _run(args, body)


def _panel_add_member(args: argparse.Namespace) -> int:
    from ichviewer.review import add_member

    def body(store: Any) -> int:
        r = add_member(store, args.panel_id, args.reader, role=args.role)
        print(f"{r.name} added to panel {args.panel_id}")
        return 0

    return _run(args, body)


def _panel_vote(args: argparse.Namespace) -> int:
    from ichviewer.review import ReviewError, cast_vote

    def body(store: Any) -> int:
        if args.value and args.vote:
            raise ReviewError("give either --value or --vote, not both")
        values: Any = args.value or _pairs(args.vote, "--vote")
        if not values:
            raise ReviewError("give the vote with --value present|absent or --vote LABEL=present|absent")
        ids = cast_vote(store, args.panel_id, args.reader, args.series, values, note=args.note)
        print(" ".join(str(i) for i in ids))
        return 0

    return _run(args, body)


def _panel_show(args: argparse.Namespace) -> int:
    from ichviewer.review import ReviewError, member_view, panel_cases, summarize_panel

    def body(store: Any) -> int:
        if args.series:
            if not args.reader:
                raise ReviewError("--series needs --reader (what that member may see)")
            doc: Any = member_view(store, args.panel_id, args.reader, args.series).to_dict()
        else:
            doc = summarize_panel(store, args.panel_id).to_dict()
            doc["cases"] = panel_cases(store, args.panel_id, reader=args.reader)
        json.dump(doc, sys.stdout, indent=2)
        print()
        return 0

    return _run(args, body)


def _panel_close(args: argparse.Namespace) -> int:
    from ichviewer.review import close_panel

    def body(store: Any) -> int:
        amended = close_panel(store, args.panel_id, reason=args.reason)
        for v in amended:
            print(f"{v.series_uid} {v.label}: {v.previous_value} -> {v.value} ({v.votes_disagree}/{v.votes_total})")
        print(f"panel {args.panel_id} closed; {len(amended)} label(s) amended", file=sys.stderr)
        return 0

    return _run(args, body)
