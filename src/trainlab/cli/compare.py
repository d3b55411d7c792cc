"""trainlab compare RUN RUN... [--out compare.html]: several runs side by side on one HTML page
(curves overlaid, a metrics table, the recipes' differences highlighted; V5)."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by trainlab fit (two or more)")
    p.add_argument("--out", default="compare.html",
                   help="HTML file to write (default compare.html); missing folders are created")


def run(args) -> int:
    from ..errors import TrainlabError
    from ..report.compare import write_compare
    from ..run import open_run
    from .outputs import check_output, make_parent

    out = check_output(args.out, "--out", suffix=".html")
    if len(args.runs) < 2:
        raise TrainlabError(f"compare: got 1 run ({args.runs[0]}); give two or more run directories")
    runs = [open_run(path) for path in args.runs]
    for r in runs:  # the runs are only read: no file of theirs (report.html) is replaced
        if out.is_file() and out.resolve().is_relative_to(r.dir.resolve()):
            raise TrainlabError(f"--out {str(out)!r}: is a file of run {r.dir}; write the comparison elsewhere")
    seen = {}
    for path, r in zip(args.runs, runs):
        key = r.dir.resolve()
        if key in seen:
            raise TrainlabError(f"compare: {path} is given twice (also as {seen[key]})")
        seen[key] = path
    path = write_compare(runs, make_parent(out, "--out"))
    print(f"wrote {path} ({len(runs)} runs)")
    return 0
