"""``python3 -m labelemb.report``: the command line."""
from __future__ import annotations

import sys

from ..errors import UserError
from ..parsing import Parser, parser
from .embeddings import MAX_HEATMAP_CLASSES
from .folders import make_report
from .paper import PAPER_HEATMAP_CLASSES
from .records import _one_line


def build_parser() -> Parser:
    p = parser("python3 -m labelemb.report", command="labelemb-report", description=(
        "Paper-style report over results folders: tables (printed, and written as report.md, report.csv and "
        "comparisons.csv), curves.png and heatmap(s) in each folder; where SPEC has the paper's row, "
        "against_paper.csv and the paper's figure too. It writes over no file it did not write, and removes "
        "its own figures and against_paper.csv of an earlier report that it no longer makes."))
    p.add_argument("dirs", nargs="+", metavar="DIR", help="results folders, e.g. mlp_results cnn_results")
    p.add_argument("--include-dry-run", action="store_true",
                   help="count --dry-run records too (smoke checks; default: they are skipped)")
    p.add_argument("--run", type=int, default=None, metavar="NUM",
                   help="heatmap of emb run NUM instead of the mean over emb runs (default: the mean)")
    p.add_argument("--classes", default=None, metavar="A,B,C",
                   help="comma-separated class names for the heatmap(s); each group shows those it has "
                        f"(default: all classes up to {MAX_HEATMAP_CLASSES}, else the paper's "
                        f"{len(PAPER_HEATMAP_CLASSES)} CIFAR-100 labels)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    prog = p.prog
    wanted = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes is not None else None
    if args.classes is not None and not wanted:
        print(f"{prog}: error: --classes needs at least one class name", file=sys.stderr)
        return 2
    try:
        reports = make_report(args.dirs, args.include_dry_run, args.run, wanted)
    except UserError as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    for rep in reports:
        for name, reason in rep.skipped:
            print(f"{prog}: warning: {rep.folder / name} skipped: {reason}", file=sys.stderr)
        print(f"# {rep.folder}\n\n{rep.tables}")
        print(f"written: {', '.join(str(p) for p in rep.written)}")
        if rep.removed:
            print(f"removed (of an earlier report, not written now): {', '.join(str(p) for p in rep.removed)}")
        print()
    return 0

