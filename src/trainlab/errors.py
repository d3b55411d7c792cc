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


# Messages show user values, and a value can be anything a file holds: a 2 GB string, an alias
# bomb's expansion, a file name with a line break. These keep a message one short line.
SHOWN_CHARS = 80


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters. reprlib bounds the work (a few
    items per level, a few levels), so a huge or deeply nested value costs no more than a small one."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxlong, r.maxother = 4, limit, limit, limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 8
    try:
        text = r.repr(value)
    except ValueError:  # an int past Python's 4300-digit limit for int -> str
        text = f"<{type(value).__name__} too long to show>"
    return shorten(text, limit)


def show_path(path: object) -> str:
    """A file name as messages show it: as it is, or quoted like a Python string where it holds a
    line break or another unprintable character, so that the message stays one readable line."""
    text = str(path)
    return text if text.isprintable() else repr(text)
