"""Per-sample transforms by name (``data.augment``), built on torchvision.transforms.v2.

A spec is a bare name (defaults) or a mapping ``{name: ..., p: ..., <options>}``. Transforms see
the stored-scale input tensor (uint8 images stay uint8) and run inside the loader, seeded per
sample from (seed, epoch, index).
"""
from __future__ import annotations

from typing import Any

from ..errors import RecipeError
from ..registry import TRANSFORMS


def parse_spec(spec: str | dict[str, Any], field: str) -> tuple[str, dict[str, Any]]:
    """``"hflip"`` → ``("hflip", {})``; ``{"name": "rotate", "degrees": 10}`` → ``("rotate", {...})``."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        opts = dict(spec)
        return opts.pop("name"), opts
    raise RecipeError(f"{field}: expected a name or a mapping with 'name', got {spec!r}")


def check_label_preserving(specs, label_changing, forbid, field: str = "data.augment") -> None:
    """Refuse transforms that the data set or the recipe declares label-changing (D7)."""
    banned = set(label_changing) | set(forbid)
    for spec in specs:
        name, _ = parse_spec(spec, field)
        if name in banned:
            raise RecipeError(
                f"{field}: {name!r} changes the label of this data set's samples "
                f"(forbidden: {', '.join(sorted(banned))}); remove it"
            )


def build_transforms(specs, info, forbid=(), field: str = "data.augment"):
    """A callable ``(x, y) -> (x, y)`` applying the named transforms in order, or None."""
    if not specs:
        return None
    from torchvision.transforms import v2

    check_label_preserving(specs, info.label_changing, forbid, field)
    ops = []
    for i, spec in enumerate(specs):
        name, opts = parse_spec(spec, f"{field}[{i}]")
        entry = TRANSFORMS.get(name, f"{field}[{i}]")
        try:
            ops.append(entry.fn(**opts))
        except (TypeError, ValueError) as err:
            raise RecipeError(f"{field}[{i}] ({name}): {err}") from None
    pipeline = v2.Compose(ops)

    def apply(x, y):
        return pipeline(x), y

    return apply


@TRANSFORMS.register("hflip", help="mirror left-right with probability p (default 0.5)")
def hflip(p: float = 0.5):
    from torchvision.transforms import v2

    return v2.RandomHorizontalFlip(p)


@TRANSFORMS.register("vflip", help="mirror top-bottom with probability p (default 0.5)")
def vflip(p: float = 0.5):
    from torchvision.transforms import v2

    return v2.RandomVerticalFlip(p)


@TRANSFORMS.register("rotate", help="rotate by a random angle in [-degrees, degrees] (default 15)")
def rotate(degrees: float = 15.0):
    from torchvision.transforms import v2

    return v2.RandomRotation(degrees)
