"""The training doctor: monitors, rules, findings, remedies (X1-X9).

Monitors (:mod:`.monitors`) record cheap statistics while training; rules (:mod:`.rules`) are
pure functions from that history to :class:`~.findings.Finding` objects; remedies
(:mod:`.remedies`) act on the run when ``doctor.auto`` is set; :mod:`.report` prints, plots and
writes the diagnosis. See docs/doctor.md.
"""
from __future__ import annotations

from .findings import CODES, Finding
from .history import DoctorHistory
from .monitors import Doctor
from .report import diagnose_run, format_table
from .rules import RULES, diagnose

__all__ = ["CODES", "Finding", "DoctorHistory", "Doctor", "diagnose", "diagnose_run", "format_table", "RULES"]
