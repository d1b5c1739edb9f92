"""``clean``: score a folder's files out of fold and serve the cleaning page, or without a
browser print the top suspects (``--report``), write them (``--csv``) or apply the journalled
decisions (``--apply``). Needs the ``clean`` extra (cleanlab, imagehash)."""

from __future__ import annotations

import argparse
import csv

from fastcore_cv.cli.common import one_line_errors, positive

COLUMNS = ("path", "label", "predicted", "probability", "score", "issue", "duplicate_of")


def _table(items: list[dict], top: int) -> str:
    rows = [
        [str(n + 1)] + ["" if i[c] is None else str(i[c]) for c in COLUMNS]
        for n, i in enumerate(items[:top])
    ]
    head = ["#", *COLUMNS]
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *rows]
    )


@one_line_errors("clean")
def _clean(args: argparse.Namespace) -> int:
    from fastcore_cv.clean import require_extra

    require_extra()
    from fastcore_cv.clean.session import CleanSession
    from fastcore_cv.output_files import atomic_path, check_writable

    if args.model is None and not args.apply:
        raise ValueError("--model: required to score the folder (a checkpoint .pt or an .onnx)")
    if args.csv:
        check_writable(args.csv, "--csv")
    session = CleanSession(
        args.folder, args.model, folds=args.folds, seed=args.seed, threads=args.threads
    )
    s = session.summary()
    print(
        f"{s['files']} files, {len(s['classes'])} classes; issues: "
        + ", ".join(f"{n} {k}" for k, n in s["issues"].items())
        + f"; features: {s['features']}, {s['folds']}-fold out-of-fold head"
        + ("" if s["honest"] else " (in-sample: the model's own probabilities)")
    )
    suspects = [i for i in session.items() if i["issue"]]
    if args.report:
        print(_table(suspects, args.top))
    if args.csv:
        with atomic_path(args.csv) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            w.writerows([["" if i[c] is None else i[c] for c in COLUMNS] for i in suspects])
        print(f"wrote {len(suspects)} suspects to {args.csv}")
    if args.apply:
        r = session.apply()
        print(
            f"applied: {r['deleted']} moved to {session.folder}/.fastcore-cv/trash, "
            f"{r['relabelled']} relabelled; {r['csv']} lists {r['kept']} files"
        )
    if args.report or args.csv or args.apply:
        return 0
    from fastcore_cv.clean.app import run

    print(f"cleaning page: http://{args.host}:{args.port}/", flush=True)
    run(session, host=args.host, port=args.port)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``clean``."""
    from fastcore_cv.serve.limits import HOST, PORT

    positive_int = positive(int)
    p = sub.add_parser("clean", help="find label errors, duplicates and bad files; fix them")
    p.add_argument("folder", help="the dataset folder (FOLDER/<class>/ or train/ + valid/)")
    p.add_argument("--model", help="a checkpoint (model.pt + model.json) or an exported .onnx")
    p.add_argument("--report", action="store_true", help="print the top suspects, no server")
    p.add_argument("--top", type=positive_int, default=20, help="rows of --report (%(default)s)")
    p.add_argument("--csv", help="write every suspect (path, label, predicted, ...) to this CSV")
    p.add_argument("--apply", action="store_true", help="apply the journalled decisions")
    p.add_argument("--folds", type=positive_int, default=5, help="out-of-fold splits (%(default)s)")
    p.add_argument("--seed", type=int, default=42, help="fold seed (%(default)s)")
    p.add_argument("--threads", type=positive_int, default=1, help="model threads (%(default)s)")
    p.add_argument("--host", default=HOST, help="address to bind (%(default)s)")
    p.add_argument("--port", type=int, default=PORT, help="port (%(default)s)")
    p.set_defaults(run=_clean)
