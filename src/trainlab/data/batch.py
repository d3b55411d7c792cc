"""Batch transforms by name (``data.batch_augment``), applied on the device after the loader.

Each entry builds a callable ``(batch, generator) -> batch`` working on the whole batch at once;
``generator`` is seeded from (seed, epoch, step) so the result does not depend on loader workers.
The batch is ``{"input": (N, C, H, W) in stored dtype and scale, "target": (N,) or (N, C), ...}``
(plus ``annotations`` / ``semantic`` for data sets with boxes and masks, see
:mod:`trainlab.data.samples`). Occlusion ops (D5) keep the dtype and write into
``batch["input"]`` in place (the loader hands out a fresh tensor per batch; pass a copy to keep
yours); mixing ops (D6) turn the target into soft labels (N, C) that the classification loss
and metrics accept, and record each image's weight λ in ``batch["mix_lambda"]``.
"""
from __future__ import annotations

from ..registry import BATCH_TRANSFORMS
from . import occlusion
from .mixing import cutmix as _cutmix
from .mixing import mixup as _mixup
from .occlusion import check_p
from .transforms import build_op, parse_spec


def build_batch_transforms(specs, info, field: str = "data.batch_augment"):
    """A callable ``(batch, generator) -> batch`` applying the named batch transforms, or None."""
    if not specs:
        return None
    ops = []
    for i, spec in enumerate(specs):
        name, opts = parse_spec(spec, f"{field}[{i}]")
        ops.append(build_op(name, {"info": info, **opts}, f"{field}[{i}]", BATCH_TRANSFORMS))

    def apply(batch, gen):
        for op in ops:
            batch = op(batch, gen)
        return batch

    return apply


@BATCH_TRANSFORMS.register("random_erasing", help="erase a random rectangle per image, on the whole batch (D5)")
def random_erasing(*, info, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value="random"):
    scale, ratio = occlusion.erasing_options(scale, ratio)
    return occlusion.rect_batch_op(
        lambda n, h, w, g, d: occlusion.erasing_rects(n, h, w, scale, ratio, g, d), value, check_p(p), info.max_value)


@BATCH_TRANSFORMS.register("cutout", help="zero squares of side `size` (fraction of the short side) (D5)")
def cutout(*, info, size: float = 0.5, holes: int = 1, value: float = 0.0, p: float = 1.0):
    size, holes = occlusion.cutout_options(size, holes)
    return occlusion.rect_batch_op(
        lambda n, h, w, g, d: occlusion.cutout_rects(n, h, w, size, holes, g, d), value, check_p(p), info.max_value)


@BATCH_TRANSFORMS.register("hide_and_seek", help="hide grid cells with probability p_hide, per image (D5)")
def hide_and_seek(*, info, grid: int = 4, p_hide: float = 0.5, value: float = 0.0, p: float = 1.0):
    grid, p_hide = occlusion.hide_and_seek_options(grid, p_hide)
    return occlusion.mask_batch_op(
        lambda n, h, w, g, d: occlusion.hide_and_seek_mask(n, h, w, grid, p_hide, g, d),
        value, check_p(p), info.max_value)


@BATCH_TRANSFORMS.register("gridmask", help="hide a regular grid of squares, random period/offset per image (D5)")
def gridmask(*, info, d_min: float = 0.2, d_max: float = 0.5, ratio: float = 0.5, value: float = 0.0,
             p: float = 1.0):
    d_min, d_max, ratio = occlusion.gridmask_options(d_min, d_max, ratio)
    return occlusion.mask_batch_op(
        lambda n, h, w, g, d: occlusion.gridmask_mask(n, h, w, d_min, d_max, ratio, g, d),
        value, check_p(p), info.max_value)


def _mixing_op(mix, info, alpha: float, p: float):
    """A ``(batch, generator) -> batch`` op of ``mix`` (mixup or cutmix) with checked options."""
    if float(alpha) <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    p = check_p(p)
    return lambda batch, gen: mix(batch, gen, float(alpha), info.num_classes, p)


@BATCH_TRANSFORMS.register("mixup", help="blend image pairs, lambda ~ Beta(alpha, alpha); soft targets (D6)")
def mixup(*, info, alpha: float = 0.2, p: float = 1.0):
    return _mixing_op(_mixup, info, alpha, p)


@BATCH_TRANSFORMS.register("cutmix", help="paste a partner's rectangle, labels by area, boxes of both kept (D6)")
def cutmix(*, info, alpha: float = 1.0, p: float = 1.0):
    return _mixing_op(_cutmix, info, alpha, p)
