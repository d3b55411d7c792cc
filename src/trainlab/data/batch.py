"""Batch transforms by name (``data.batch_augment``), applied on the device after the loader.

Each entry builds a callable ``(batch, generator) -> batch`` working on the whole batch at once;
``generator`` is seeded from (seed, epoch, step) so the result does not depend on loader workers.
"""
from __future__ import annotations

from ..errors import RecipeError
from ..registry import BATCH_TRANSFORMS
from .transforms import parse_spec


def build_batch_transforms(specs, info, field: str = "data.batch_augment"):
    """A callable ``(batch, generator) -> batch`` applying the named batch transforms, or None."""
    if not specs:
        return None
    ops = []
    for i, spec in enumerate(specs):
        name, opts = parse_spec(spec, f"{field}[{i}]")
        entry = BATCH_TRANSFORMS.get(name, f"{field}[{i}]")
        try:
            ops.append(entry.fn(info=info, **opts))
        except (TypeError, ValueError) as err:
            raise RecipeError(f"{field}[{i}] ({name}): {err}") from None

    def apply(batch, gen):
        for op in ops:
            batch = op(batch, gen)
        return batch

    return apply
