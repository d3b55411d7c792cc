"""trainlab doctor RUN [doctor.key=value ...] [--json FILE]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("overrides", nargs="*", metavar="doctor.key=value",
                   help="judge the same numbers with other thresholds, e.g. doctor.dead_fraction=0.1")
    p.add_argument("--json", metavar="FILE", help="also write the findings to FILE as {\"findings\": [...]}")


def run(args) -> int:
    from pathlib import Path

    from ..atomic import write_json
    from ..doctor.report import diagnose_run, format_table
    from ..errors import RunError

    if args.json:
        # Checked before the diagnosis, so a typo costs no work and ends in one line, not a traceback.
        folder = Path(args.json).parent
        if not folder.is_dir():
            raise RunError(f"--json {args.json}: folder {str(folder)!r} does not exist (create it first)")
        if Path(args.json).is_dir():
            raise RunError(f"--json {args.json}: is a folder; expected a file name, e.g. "
                           f"{Path(args.json) / 'findings.json'}")
    findings, history = diagnose_run(args.run, args.overrides)
    state = "" if history.finished else " (training did not finish: whole-run rules skipped)"
    print(format_table(findings, title=f"doctor: {args.run}{state}"))
    if args.json:
        write_json(args.json, {"findings": [f.to_dict() for f in findings]})
        print(f"\nwritten: {args.json}")
    return 0
