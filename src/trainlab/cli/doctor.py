"""trainlab doctor RUN [doctor.key=value ...] [--json FILE]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("overrides", nargs="*", metavar="doctor.key=value",
                   help="judge the same numbers with other thresholds, e.g. doctor.dead_fraction=0.1")
    p.add_argument("--json", metavar="FILE", help="also write the findings to FILE as {\"findings\": [...]}; "
                                                  "missing folders are created")


def run(args) -> int:
    from ..atomic import write_json
    from ..doctor.report import diagnose_run, format_table
    from ..run import open_run
    from .outputs import check_output, make_parent

    # Checked before the diagnosis, so a typo costs no work and ends in one line, not a traceback.
    out = check_output(args.json, "--json", suffix=None) if args.json else None
    findings, history = diagnose_run(open_run(args.run), args.overrides)
    state = "" if history.finished else " (training did not finish: whole-run rules skipped)"
    print(format_table(findings, title=f"doctor: {args.run}{state}"))
    if out is not None:
        write_json(make_parent(out, "--json"), {"findings": [f.to_dict() for f in findings]})
        print(f"\nwritten: {args.json}")
    return 0
