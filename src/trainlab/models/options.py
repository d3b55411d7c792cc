"""Typed ``model.options`` per architecture.

Each architecture declares its options as a small pydantic class (fields with descriptions);
:func:`parse_options` validates ``model.options`` against it, so a misspelt or out-of-range option
is one error line naming ``model.options.<key>``, like any other recipe field.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import RecipeError, closest

SMALL_INPUT = 64  # inputs up to this many pixels per side get the small-input stem


class Options(BaseModel):
    """Options every architecture may take; subclasses add their own."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StemOptions(Options):
    stem: Literal["auto", "imagenet", "small"] = Field(
        "auto", description="imagenet: the paper's strided stem; small: 3x3 stride-1 stem, no max-pool; "
        f"auto: small when the input side is <= {SMALL_INPUT} pixels")


def parse_options(options: dict[str, Any], schema: type[Options], arch: str) -> Any:
    """``model.options`` validated against ``schema``; a RecipeError names the offending key."""
    try:
        return schema.model_validate(options or {})
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "options"
        known = list(schema.model_fields)
        if first["type"] == "extra_forbidden":
            near = closest(str(first["loc"][-1]), known)
            hint = f"did you mean {near[0]!r}? " if near else ""
            listing = ", ".join(known) if known else "none"
            raise RecipeError(f"model.options.{key}: unknown option for {arch}; {hint}known: {listing}") from None
        msg = first["msg"].replace("Value error, ", "")
        raise RecipeError(f"model.options.{key}: {msg} (got {first.get('input')!r}) for {arch}") from None


def describe_options(schema: type[Options]) -> list[tuple[str, str, str]]:
    """(name, default, description) of every option, for ``trainlab models --show``."""
    rows = []
    for name, field in schema.model_fields.items():
        rows.append((name, repr(field.get_default(call_default_factory=True)), field.description or ""))
    return rows


def is_small(info, stem: str) -> bool:
    """Whether the small-input stem applies (3x3 stride 1, no max-pool)."""
    if stem != "auto":
        return stem == "small"
    return min(info.input_shape[1:]) <= SMALL_INPUT
