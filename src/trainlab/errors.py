"""User-facing errors.

Anything a user can cause (a bad recipe, a missing file, a corrupt image) raises a subclass of
:class:`TrainlabError`. The CLI prints its message as one line and exits with code 2; no traceback.
Programming errors stay ordinary exceptions so that they do show a traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class TrainlabError(Exception):
    """An error caused by the user's input; its message is one line meant for them."""

    exit_code = 2


class RecipeError(TrainlabError):
    """A recipe field holds a value that is not allowed."""


class DataError(TrainlabError):
    """A data set, file or array cannot be used as given."""


class RunError(TrainlabError):
    """A run directory or checkpoint is missing, damaged or would be overwritten."""


def closest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names nearest to ``name`` (difflib ratio), best first."""
    known = list(known)
    hits = difflib.get_close_matches(name, known, n=n, cutoff=0.5)
    if not hits:
        low = name.lower()
        hits = [k for k in known if low in k.lower() or k.lower() in low][:n]
    return hits


def unknown_name(kind: str, name: str, known: Iterable[str], field: str | None = None) -> TrainlabError:
    """An error for a name that is not in a table, suggesting the closest known names."""
    known = sorted(known)
    near = closest(name, known)
    where = f"{field}: " if field else ""
    hint = f"did you mean {', '.join(repr(h) for h in near)}? " if near else ""
    return RecipeError(f"{where}unknown {kind} {name!r}; {hint}known: {', '.join(known)}")
