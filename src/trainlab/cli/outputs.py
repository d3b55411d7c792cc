"""Output paths of the commands that write one file (augment, schedule, lr-find, eval-detections,
evaluate --json, doctor --json).

One policy for all of them: the path is checked before any work (its suffix, that it is not a
folder, that no existing file stands where a folder should be), and missing folders are created
when the file is written. Failures are one-line user errors naming the option.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import TrainlabError


def check_output(path: str | Path, option: str, suffix: str | None = ".png") -> Path:
    """``path`` as a Path, or a TrainlabError naming ``option`` if it cannot be written as given.

    ``suffix`` (case-insensitive) is required unless it is None; nothing is created here.
    """
    out = Path(path)
    if suffix is not None and out.suffix.lower() != suffix:
        raise TrainlabError(f"{option} {str(path)!r}: expected a {suffix} file name")
    if out.is_dir():
        raise TrainlabError(f"{option} {str(path)!r}: is a folder; expected a file name")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise TrainlabError(f"{option} {str(path)!r}: {str(parent)!r} is a file, not a folder")
            break
    return out


def make_parent(out: Path, option: str) -> Path:
    """Create the folders above ``out`` (no-op when they exist); returns ``out``."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrainlabError(
            f"{option} {str(out)!r}: cannot create folder {str(out.parent)!r} ({err.strerror or err})"
        ) from None
    return out
