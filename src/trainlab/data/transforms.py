"""Per-sample transforms by name (``data.augment``), built on torchvision.transforms.v2.

A spec is a bare name (defaults) or a mapping ``{name: ..., p: ..., <options>}``. Transforms see
the stored-scale input (uint8 images stay uint8; float images such as digits are mapped to [0, 1]
around the pipeline) and run inside the loader, seeded per sample from (seed, epoch, index).
Samples that carry boxes and masks (see :mod:`trainlab.data.samples`) go through torchvision's
box- and mask-aware kernels, so every geometric op moves them with the image (D3).

This module only registers names and checks recipes; the transform classes live in
:mod:`trainlab.data.augment`, imported on first use (torchvision's import costs seconds).

Label-preserving guard (D7): a data set declares in ``DataInfo.label_changing`` which transforms
would change its labels, either by name (``hflip``) or as a magnitude rule (``rotate>30``: any
transform that rotates by more than 30 degrees); ``data.forbid`` adds the user's own. A recipe
that asks for one fails validation naming it.
"""
from __future__ import annotations

import inspect
import re
from typing import Any

from ..errors import RecipeError, closest
from ..registry import BATCH_TRANSFORMS, TRANSFORMS
from .occlusion import check_p

_RULE = re.compile(r"^([a-z_]+)\s*>\s*([0-9]+(?:\.[0-9]*)?)$")


def parse_spec(spec: str | dict[str, Any], field: str) -> tuple[str, dict[str, Any]]:
    """``"hflip"`` → ``("hflip", {})``; ``{"name": "rotate", "degrees": 10}`` → ``("rotate", {...})``."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        opts = dict(spec)
        return opts.pop("name"), opts
    raise RecipeError(f"{field}: expected a name or a mapping with 'name', got {spec!r}")


# ---------------------------------------------------------------------------- the D7 guard
def _magnitude(entry, opts: dict[str, Any]) -> tuple[str, float] | None:
    """(kind, largest magnitude) of a transform that declares one, e.g. ("rotate", 45.0)."""
    declared = entry.meta.get("magnitude")
    if not declared:
        return None
    kind, option = declared
    value = opts.get(option, inspect.signature(entry.fn).parameters[option].default)
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        return kind, max(abs(float(v)) for v in values)
    except (TypeError, ValueError):
        return None  # a malformed value is reported by the transform's own check


def _rules(names) -> tuple[set[str], dict[str, float]]:
    """Forbidden names and magnitude limits (kind -> largest allowed) from rule strings."""
    banned, limits = set(), {}
    for rule in names:
        m = _RULE.match(rule.strip())
        if m:
            kind, limit = m.group(1), float(m.group(2))
            limits[kind] = min(limit, limits.get(kind, limit))
        else:
            banned.add(rule.strip())
    return banned, limits


def check_forbid_names(forbid, field: str = "data.forbid") -> None:
    """Every entry of data.forbid is a known transform name or a ``kind>number`` rule."""
    known = set(TRANSFORMS.names()) | set(BATCH_TRANSFORMS.names())
    kinds = {e.meta["magnitude"][0] for e in TRANSFORMS.entries() if e.meta.get("magnitude")}
    for i, rule in enumerate(forbid):
        m = _RULE.match(rule.strip())
        if m:
            if m.group(1) not in kinds:
                raise RecipeError(
                    f"{field}[{i}]: {rule!r} limits an unknown kind {m.group(1)!r}; "
                    f"magnitude rules exist for: {', '.join(sorted(kinds))} (e.g. rotate>30)"
                )
        elif rule.strip() not in known:
            near = closest(rule, known)
            hint = f"did you mean {', '.join(repr(n) for n in near)}? " if near else ""
            raise RecipeError(f"{field}[{i}]: unknown transform {rule!r}; {hint}known: {', '.join(sorted(known))}")


def check_label_preserving(specs, label_changing, forbid, field: str = "data.augment", registry=None) -> None:
    """Refuse transforms that the data set or the recipe declares label-changing (D7)."""
    registry = TRANSFORMS if registry is None else registry
    ds_banned, ds_limits = _rules(label_changing)
    user_banned, user_limits = _rules(forbid)
    for i, spec in enumerate(specs):
        name, opts = parse_spec(spec, f"{field}[{i}]")
        for banned, limits, who in ((ds_banned, ds_limits, "this data set declares"),
                                    (user_banned, user_limits, "data.forbid declares")):
            if name in banned:
                rules = sorted(banned | {f"{k}>{v:g}" for k, v in limits.items()})
                raise RecipeError(
                    f"{field}[{i}]: {name!r} changes the label of this data set's samples "
                    f"({who} it label-changing: {', '.join(rules)}); remove it"
                )
            if name not in registry or not limits:
                continue
            mag = _magnitude(registry.get(name), opts)
            if mag and mag[0] in limits and mag[1] > limits[mag[0]]:
                option = registry.get(name).meta["magnitude"][1]
                raise RecipeError(
                    f"{field}[{i}]: {name!r} with {option}={mag[1]:g} changes the label of this data set's "
                    f"samples ({who} {mag[0]}>{limits[mag[0]]:g} label-changing); use {option} <= "
                    f"{limits[mag[0]]:g} or remove it"
                )


def check_augment(cfg, info) -> None:
    """Validate data.augment, data.batch_augment and data.forbid against the data set (D7).

    Runs when the data are built, before anything is trained or written.
    """
    check_forbid_names(cfg.forbid)
    for specs, registry, field in ((cfg.augment, TRANSFORMS, "data.augment"),
                                   (cfg.batch_augment, BATCH_TRANSFORMS, "data.batch_augment")):
        for i, spec in enumerate(specs):
            name, _ = parse_spec(spec, f"{field}[{i}]")
            registry.get(name, f"{field}[{i}]")
        check_label_preserving(specs, info.label_changing, cfg.forbid, field, registry)
    mosaics = [i for i, s in enumerate(cfg.augment) if parse_spec(s, "data.augment")[0] == "mosaic"]
    if len(mosaics) > 1:
        raise RecipeError(f"data.augment[{mosaics[1]}]: mosaic may appear once (it already is at [{mosaics[0]}])")
    if mosaics and "boxes" not in info.annotations:
        raise RecipeError(
            f"data.augment[{mosaics[0]}]: mosaic tiles four images with their boxes, and data set "
            f"{cfg.name!r} has no boxes (use shapes or coco)"
        )


# ------------------------------------------------------------------------------- building
def build_op(name: str, opts: dict[str, Any], field: str, registry=None):
    """Call a registered builder, turning bad options into a one-line RecipeError."""
    registry = TRANSFORMS if registry is None else registry
    entry = registry.get(name, field)
    try:
        return entry.fn(**opts)
    except TypeError as err:
        msg = str(err)
        msg = msg.split("() ", 1)[-1] if "() " in msg else msg
        params = [p for p in inspect.signature(entry.fn).parameters if p != "info"]
        raise RecipeError(f"{field} ({name}): {msg}; options: {', '.join(params) or 'none'}") from None
    except ValueError as err:
        raise RecipeError(f"{field} ({name}): {str(err).splitlines()[0]}") from None


def build_transforms(specs, info, forbid=(), field: str = "data.augment", source=None):
    """A callable ``(x, y) -> (x, y)`` applying the named transforms in order, or None.

    The result is a :class:`~trainlab.data.augment.SamplePipeline`; the loader binds it to the
    split it runs on (``pipeline.bind(source)``), which is where ``mosaic`` draws its extra tiles.
    """
    if not specs:
        return None
    check_label_preserving(specs, info.label_changing, forbid, field)
    ops = []
    for i, spec in enumerate(specs):
        name, opts = parse_spec(spec, f"{field}[{i}]")
        ops.append(build_op(name, opts, f"{field}[{i}]"))
    from .augment import SamplePipeline

    pipeline = SamplePipeline.from_ops(ops, info)
    return pipeline.bind(source) if source is not None else pipeline


# ------------------------------------------------------------------------------ the names
@TRANSFORMS.register("hflip", help="mirror left-right with probability p (default 0.5)")
def hflip(p: float = 0.5):
    from .augment import RandomFlip

    return RandomFlip(check_p(p))


@TRANSFORMS.register("vflip", help="mirror top-bottom with probability p (default 0.5)")
def vflip(p: float = 0.5):
    from .augment import RandomFlip

    return RandomFlip(check_p(p), vertical=True)


@TRANSFORMS.register("rotate", help="rotate by a random angle in [-degrees, degrees] (default 15)",
                     magnitude=("rotate", "degrees"))
def rotate(degrees: float | list[float] = 15.0, p: float = 1.0):
    from torchvision.transforms import v2

    from .augment import maybe

    # Bilinear for images; torchvision always resamples masks with nearest.
    return maybe(v2.RandomRotation(degrees, interpolation=v2.InterpolationMode.BILINEAR), check_p(p))


@TRANSFORMS.register("affine", help="random rotation, translation, scale and shear (D3)",
                     magnitude=("rotate", "degrees"))
def affine(degrees: float | list[float] = 0.0, translate: float | list[float] = 0.1,
           scale: list[float] = (0.9, 1.1), shear: float | list[float] = 0.0, p: float = 1.0):
    from torchvision.transforms import v2

    if isinstance(translate, (int, float)):
        translate = (translate, translate)
    op = v2.RandomAffine(degrees, translate=tuple(translate), scale=tuple(scale), shear=shear or None,
                         interpolation=v2.InterpolationMode.BILINEAR)
    from .augment import maybe

    return maybe(op, check_p(p))


@TRANSFORMS.register("random_resized_crop", help="crop a random area/aspect, resize back (size: input size)")
def random_resized_crop(size: int | list[int] | None = None, scale: list[float] = (0.08, 1.0),
                        ratio: list[float] = (3 / 4, 4 / 3), p: float = 1.0):
    from .augment import RandomResizedCrop

    return RandomResizedCrop(size, tuple(scale), tuple(ratio), p=check_p(p))


@TRANSFORMS.register("random_crop", help="pad by `padding` pixels and crop back to the input size")
def random_crop(padding: int = 4, p: float = 1.0):
    from .augment import RandomCropPad

    return RandomCropPad(padding, p=check_p(p))


@TRANSFORMS.register("color_jitter", help="brightness, contrast, saturation, hue (HSV-style) in one pass (D4)")
def color_jitter(brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1,
                 p: float = 1.0):
    from .augment import ColorJitter

    return ColorJitter(brightness, contrast, saturation, hue, p=check_p(p))


@TRANSFORMS.register("noise", help="additive Gaussian noise, std a fraction of the value range (D4)")
def noise(std: float = 0.05, p: float = 1.0):
    from .augment import GaussianNoise

    return GaussianNoise(std, p=check_p(p))


@TRANSFORMS.register("grayscale", help="convert to grey (channel count kept) with probability p")
def grayscale(p: float = 0.1):
    from torchvision.transforms import v2

    return v2.RandomGrayscale(check_p(p))


@TRANSFORMS.register("random_erasing", help="erase a random rectangle (area `scale`, aspect `ratio`) (D5)")
def random_erasing(p: float = 0.5, scale: list[float] = (0.02, 0.33), ratio: list[float] = (0.3, 3.3),
                   value: float | str = "random"):
    from .augment import RandomErasing

    return RandomErasing(check_p(p), tuple(scale), tuple(ratio), value)


@TRANSFORMS.register("cutout", help="zero a square of side `size` (fraction of the short side) (D5)")
def cutout(size: float = 0.5, holes: int = 1, value: float = 0.0, p: float = 1.0):
    from .augment import Cutout

    return Cutout(size, holes, value, p=check_p(p))


@TRANSFORMS.register("hide_and_seek", help="hide each cell of a grid x grid split with probability p_hide (D5)")
def hide_and_seek(grid: int = 4, p_hide: float = 0.5, value: float = 0.0, p: float = 1.0):
    from .augment import HideAndSeek

    return HideAndSeek(grid, p_hide, value, p=check_p(p))


@TRANSFORMS.register("gridmask", help="hide a regular grid of squares, random period and offset (D5)")
def gridmask(d_min: float = 0.2, d_max: float = 0.5, ratio: float = 0.5, value: float = 0.0, p: float = 1.0):
    from .augment import GridMask

    return GridMask(d_min, d_max, ratio, value, p=check_p(p))


@TRANSFORMS.register("mosaic", help="tile 4 samples (3 drawn from the data set) into one, boxes kept (D6)",
                     stage="mosaic")
def mosaic(center: list[float] = (0.25, 0.75), min_size: float = 2.0, min_visibility: float = 0.2,
           p: float = 1.0):
    from .mixing import Mosaic

    return Mosaic(tuple(center), min_size, min_visibility, p=check_p(p))
