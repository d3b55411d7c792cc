"""The per-sample transform classes and the pipeline that runs them (D3, D4, D6).

Every class is a torchvision v2 ``Transform``: given a sample structure (an ``Image`` and a target
dict with ``BoundingBoxes`` and ``Mask`` entries) it moves boxes and masks with the image through
torchvision's kernels. Randomness comes from torch's global generator, which the loader seeds per
sample from (seed, epoch, index).

Speed (the figure is ``benchmarks/augment.py``). Images stay uint8 end to end, and
:class:`SamplePipeline` takes two shortcuts that do not change what a sample can become:

* A sample that is a bare image (classification) skips torchvision's structure walk: each
  :class:`SampleTransform` draws its parameters and applies its image kernel directly.
* Transforms that commute with resizing (flips, colour jitter, grayscale) placed right after a
  ``random_resized_crop`` run on the crop *before* it is resized (on average about half the
  pixels). Flips commute exactly; colour jitter takes its contrast mean over the crop at its own
  resolution instead of the resized one, a difference of interpolation rounding.

Inside those paths the work per sample is kept to a few passes over the pixels: flips are one
``flip`` (no v2 dispatch), colour jitter writes its uint8 result channels-last, the layout torch's
uint8 resize kernel runs fastest on (:func:`channels_last_uint8` makes that copy otherwise, in
numpy), and small parameter arithmetic (the 3 x 3 colour map, the erasing rectangle) runs on
Python floats rather than on tensors whose dispatch would cost more than the arithmetic.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F_nn
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..errors import DataError
from .color import affine_planes, color_affine
from .decode import Encoded
from .occlusion import (
    check_value,
    cutout_options,
    cutout_rects,
    erasing_options,
    erasing_rect,
    fill_rects_,
    gridmask_options,
    gridmask_rects,
    hide_and_seek_options,
    hide_and_seek_rects,
)
from .samples import drop_small_boxes


def image_size(flat_inputs: list[Any]) -> tuple[int, int]:
    """(H, W) of the image in a flattened sample."""
    for x in flat_inputs:
        if isinstance(x, (tv_tensors.Image, tv_tensors.Mask)) or (isinstance(x, torch.Tensor) and x.dim() >= 2
                                                                   and not isinstance(x, tv_tensors.BoundingBoxes)):
            return int(x.shape[-2]), int(x.shape[-1])
        if isinstance(x, tv_tensors.BoundingBoxes):
            return tuple(x.canvas_size)
    raise DataError("a transform got a sample without an image")


def is_image(x: Any) -> bool:
    return isinstance(x, tv_tensors.Image)


def as_image(x: torch.Tensor) -> tv_tensors.Image:
    """``x`` viewed as a tv_tensors.Image (no copy, none of the constructor's checks)."""
    return x.as_subclass(tv_tensors.Image)


def channels_last_uint8(image: torch.Tensor) -> torch.Tensor:
    """A (C, H, W) uint8 image (any strides) as a (1, C, H, W) channels-last batch of one.

    On the CPU the copy is one strided numpy copy per channel: three times faster than torch's
    ``contiguous(memory_format=torch.channels_last)`` on one uint8 image (33 vs 101 us for
    3 x 160 x 160). The batch stride is spelled out (C·H·W, not the C that unsqueezing a permuted
    view gives): interpolate's fast channels-last kernel takes only the standard strides, and runs
    at half speed on the others.
    """
    c, h, w = image.shape
    if image.device.type != "cpu" or image.dtype != torch.uint8:
        return image[None].contiguous(memory_format=torch.channels_last)
    if image.stride() != (1, w * c, c):
        src = image.numpy()  # a view: the crop's strides are kept, nothing copied yet
        out = np.empty((h, w, c), dtype=np.uint8)
        for i in range(c):
            out[..., i] = src[i]
        image = torch.from_numpy(out).permute(2, 0, 1)
    return image.as_strided((1, c, h, w), (c * h * w, 1, w * c, c))


def resize_image(image: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """A (C, H, W) image resized to ``size`` with bilinear interpolation, dtype kept.

    uint8 goes through torch's native uint8 kernel on a channels-last copy, its fastest layout
    (measured: the kernel takes less than half the time it takes on a contiguous (C, H, W) image).
    The copy is made by :func:`channels_last_uint8`.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    x = image.as_subclass(torch.Tensor)[None]
    if x.dtype == torch.uint8:
        out = F_nn.interpolate(channels_last_uint8(x[0]), size=tuple(size), mode="bilinear",
                               antialias=antialias, align_corners=False)
    else:
        out = F_nn.interpolate(x.float(), size=tuple(size), mode="bilinear", antialias=antialias,
                               align_corners=False).to(x.dtype)
    return as_image(out[0]) if is_image(image) else out[0]


def maybe(op, p: float):
    """``op`` applied with probability ``p`` (the op itself when p is 1)."""
    return op if p >= 1.0 else v2.RandomApply([op], p=p)


class SampleTransform(v2.Transform):
    """Base of trainlab's transforms: applied with probability ``p``, with a bare-image fast path.

    Subclasses implement ``make_params(flat_inputs)`` and ``transform(inpt, params)`` as any v2
    transform; both paths draw the same random numbers in the same order.
    """

    commutes_with_resize = False  # may run on a crop before it is resized (see the module doc)

    def __init__(self, p: float = 1.0):
        super().__init__()
        self.p = p

    def _skip(self) -> bool:
        return self.p < 1.0 and float(torch.rand(())) >= self.p

    def forward(self, *inputs: Any) -> Any:
        if self._skip():
            return inputs if len(inputs) > 1 else inputs[0]
        return super().forward(*inputs)

    def apply_image(self, image: torch.Tensor) -> torch.Tensor:
        if self._skip():
            return image
        return self.transform(image, self.make_params([image]))


def apply_op(op, sample):
    """Run one transform on a sample: the bare-image fast path when the sample is an image.

    A sample is either a bare image tensor or a tuple (image, target dict).
    """
    if isinstance(sample, torch.Tensor):
        image = sample if is_image(sample) else as_image(sample)
        fast = getattr(op, "apply_image", None)
        out = fast(image) if fast is not None else op(image)
        return out if is_image(out) else as_image(out)
    return op(sample)


# ------------------------------------------------------------------------------ geometric
class RandomResizedCrop(SampleTransform):
    """Crop a random area fraction ``scale`` and aspect ``ratio`` and resize to ``size`` (D3).

    ``size`` None keeps the input size. ``inner`` holds resize-commuting transforms that the
    pipeline moved onto the crop; they run between the crop and the resize.
    """

    def __init__(self, size=None, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), p: float = 1.0, antialias=True):
        super().__init__(p)
        if size is not None:
            size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"size must be a positive int or [H, W], got {size}")
        if not (0.0 < scale[0] <= scale[1] <= 1.0):
            raise ValueError(f"scale must be 0 < min <= max <= 1, got {list(scale)}")
        if not (0.0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must be 0 < min <= max, got {list(ratio)}")
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.antialias = antialias
        self.inner: list = []
        self._log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def make_params(self, flat_inputs):
        return self.params_for(*image_size(flat_inputs))

    def params_for(self, h: int, w: int) -> dict:
        """The crop box (top, left, height, width) drawn for an (h, w) image, and the output size."""
        area = h * w
        r = torch.rand(10, 2).tolist()
        for u_area, u_ratio in r:  # up to ten tries, then the whole image clipped to the ratio range
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u_area)
            aspect = math.exp(self._log_ratio[0] + (self._log_ratio[1] - self._log_ratio[0]) * u_ratio)
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, ()))
                left = int(torch.randint(0, w - cw + 1, ()))
                return {"top": top, "left": left, "height": ch, "width": cw, "size": self.size or (h, w)}
        ratio = w / h
        if ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif ratio > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            ch, cw = h, w
        return {"top": (h - ch) // 2, "left": (w - cw) // 2, "height": ch, "width": cw, "size": self.size or (h, w)}

    def transform(self, inpt, params):  # one leaf, used when inner is empty
        crop = {k: params[k] for k in ("top", "left", "height", "width")}
        if is_image(inpt):
            view = inpt[..., crop["top"]:crop["top"] + crop["height"], crop["left"]:crop["left"] + crop["width"]]
            return tv_tensors.wrap(resize_image(view, params["size"], self.antialias), like=inpt)
        return F.resized_crop(inpt, **crop, size=list(params["size"]), antialias=self.antialias)

    def forward(self, *inputs):
        sample = inputs if len(inputs) > 1 else inputs[0]
        if self._skip():
            for op in self.inner:
                sample = apply_op(op, sample)
            return sample
        flat, spec = tree_flatten(sample)
        needs = self._needs_transform_list(flat)
        params = self.make_params([x for x, n in zip(flat, needs) if n])
        if not self.inner:
            return tree_unflatten([self.transform(x, params) if n else x for x, n in zip(flat, needs)], spec)
        crop = {k: params[k] for k in ("top", "left", "height", "width")}
        flat = [F.crop(x, **crop) if n else x for x, n in zip(flat, needs)]
        sample = tree_unflatten(flat, spec)
        for op in self.inner:
            sample = apply_op(op, sample)
        flat, spec = tree_flatten(sample)
        needs = self._needs_transform_list(flat)
        size = list(params["size"])
        out = [(resize_image(x, size, self.antialias) if is_image(x) else F.resize(x, size, antialias=self.antialias))
               if n else x for x, n in zip(flat, needs)]
        return tree_unflatten(out, spec)

    def apply_image(self, image):
        if self._skip():
            for op in self.inner:
                image = apply_op(op, image)
            return image
        p = self.make_params([image])
        # Sliced as a plain tensor: indexing an Image goes through tv_tensors' __torch_function__.
        plain = image.as_subclass(torch.Tensor)
        crop = as_image(plain[..., p["top"]:p["top"] + p["height"], p["left"]:p["left"] + p["width"]])
        for op in self.inner:
            crop = apply_op(op, crop)
        return resize_image(crop, p["size"], self.antialias)


    def apply_encoded(self, enc, size: tuple[int, int], view: str, crop_pct: float) -> torch.Tensor:
        """The crop of an undecoded file (:class:`~trainlab.data.decode.Encoded`) at ``size``: its box
        drawn from the header's size, only that box decoded, at the smallest JPEG scale that keeps
        it at least ``size`` (issue 25). Skipped (p < 1), the sample is the file's evaluation view."""
        from .decode import decode_region, eval_view

        if self._skip():
            image = as_image(eval_view(enc, size, view, crop_pct))
            for op in self.inner:
                image = apply_op(op, image)
            return image
        p = self.params_for(*enc.size)
        crop = as_image(decode_region(enc, (p["top"], p["left"], p["height"], p["width"]), size))
        for op in self.inner:
            crop = apply_op(op, crop)
        return resize_image(crop, size, self.antialias)


class RandomCropPad(SampleTransform):
    """Pad by ``padding`` pixels of zeros and crop back to the input size: a random shift (D3)."""

    def __init__(self, padding: int = 4, p: float = 1.0):
        super().__init__(p)
        if int(padding) < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = int(padding)

    def make_params(self, flat_inputs):
        h, w = image_size(flat_inputs)
        top, left = (int(v) for v in torch.randint(0, 2 * self.padding + 1, (2,)))
        return {"top": top, "left": left, "height": h, "width": w}

    def transform(self, inpt, params):
        if self.padding == 0:
            return inpt
        padded = F.pad(inpt, [self.padding] * 4, fill=0)
        return F.crop(padded, **params)


class RandomFlip(SampleTransform):
    """Mirror left-right (or top-bottom with ``vertical``) with probability ``p``; boxes and masks
    follow through torchvision's flip kernels (D3).

    Its own class rather than ``v2.RandomHorizontalFlip`` so that a bare image skips the v2
    dispatch (a third of a flip's time on a crop): :meth:`apply_image` is one ``flip``.
    """

    commutes_with_resize = True

    def __init__(self, p: float = 0.5, vertical: bool = False):
        super().__init__(p)
        self.vertical = bool(vertical)

    def _skip(self) -> bool:  # drawn even at p = 1, as v2's flips do
        return float(torch.rand(())) >= self.p

    def make_params(self, flat_inputs):
        return {}

    def transform(self, inpt, params):
        return self._call_kernel(F.vertical_flip if self.vertical else F.horizontal_flip, inpt)

    def apply_image(self, image):
        if self._skip():
            return image
        return as_image(image.as_subclass(torch.Tensor).flip(-2 if self.vertical else -1))


# ---------------------------------------------------------------------------- photometric
class ColorJitter(SampleTransform):
    """Brightness, contrast, saturation (factors in [1−x, 1+x]) and hue (turns in [−hue, hue]) in a
    random order, composed into one affine colour map (see :mod:`trainlab.data.color`) (D4)."""

    commutes_with_resize = True

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p: float = 1.0):
        super().__init__(p)
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if not 0.0 <= float(hue) <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (turns), got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = map(float, (brightness, contrast, saturation, hue))

    def make_params(self, flat_inputs):
        u = torch.rand(4).tolist()
        order = tuple(torch.randperm(4).tolist())
        return {
            "brightness": 1.0 + self.brightness * (2 * u[0] - 1),
            "contrast": 1.0 + self.contrast * (2 * u[1] - 1),
            "saturation": 1.0 + self.saturation * (2 * u[2] - 1),
            "hue": self.hue * (2 * u[3] - 1),
            "order": order,
        }

    def transform(self, inpt, params):
        if not is_image(inpt):
            return inpt
        image = inpt.as_subclass(torch.Tensor)
        max_value = 255.0 if image.dtype == torch.uint8 else 1.0
        # Converted once, to a contiguous (C, H, W) float32 copy whatever the input's layout
        # (a crop view, or the channels-last result of a resize): the contrast pivot and the
        # colour map share it.
        planes = image.to(torch.float32, memory_format=torch.contiguous_format)
        # One row sum over the (contiguous) float planes, divided in Python: 7 us on a 160 x 160
        # crop, where numpy's mean takes 18.
        pixels = planes.shape[1] * planes.shape[2]
        means = [v / pixels for v in planes.reshape(planes.shape[0], pixels).sum(1).tolist()]
        a, b = color_affine(means, params["brightness"], params["contrast"], params["saturation"],
                            params["hue"], params["order"])
        return as_image(affine_planes(planes, a, b, max_value, image.dtype))


class GaussianNoise(SampleTransform):
    """Add N(0, (std · max value)²) noise to every pixel, clipped to the value range (D4)."""

    def __init__(self, std: float = 0.05, p: float = 1.0):
        super().__init__(p)
        if not 0.0 <= float(std) <= 1.0:
            raise ValueError(f"std must be in [0, 1] (fraction of the value range), got {std}")
        self.std = float(std)

    def make_params(self, flat_inputs):
        h, w = image_size(flat_inputs)
        c = next((x.shape[0] for x in flat_inputs if is_image(x)), 1)
        return {"noise": torch.randn(c, h, w)}

    def transform(self, inpt, params):
        if not is_image(inpt):
            return inpt
        x = inpt.as_subclass(torch.Tensor)
        max_value = 255.0 if x.dtype == torch.uint8 else 1.0
        y = x.float() + params["noise"] * (self.std * max_value)
        if x.dtype == torch.uint8:
            return as_image(y.add_(0.5).clamp_(0, 255).to(torch.int32).to(torch.uint8))
        return as_image(y.clamp_(0.0, max_value).to(x.dtype))


# ------------------------------------------------------------------------------ occlusion
class _Occlusion(SampleTransform):
    """Fill the rectangles ``rects(h, w)`` returns (D5, see :mod:`trainlab.data.occlusion`).

    Boxes and masks are left as they are: an occluded object is still there.
    """

    value: float | str = 0.0

    def rects(self, h: int, w: int):  # (1, K, 4): a tensor or nested lists
        raise TypeError(f"{type(self).__name__} defines no rectangles")

    def make_params(self, flat_inputs):
        h, w = image_size(flat_inputs)
        return {"rects": self.rects(h, w)}

    def transform(self, inpt, params):
        if not is_image(inpt):
            return inpt
        x = inpt.as_subclass(torch.Tensor).clone()[None]
        max_value = 255.0 if x.dtype == torch.uint8 else 1.0
        return as_image(fill_rects_(x, params["rects"], self.value, max_value)[0])


class RandomErasing(_Occlusion):
    def __init__(self, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value="random"):
        super().__init__(p)
        self.scale, self.ratio = erasing_options(scale, ratio)
        check_value(value)
        self.value = value

    def rects(self, h, w):
        return erasing_rect(h, w, self.scale, self.ratio)


class Cutout(_Occlusion):
    def __init__(self, size=0.5, holes=1, value=0.0, p=1.0):
        super().__init__(p)
        self.size, self.holes = cutout_options(size, holes)
        check_value(value)
        self.value = value

    def rects(self, h, w):
        return cutout_rects(1, h, w, self.size, self.holes)


class HideAndSeek(_Occlusion):
    def __init__(self, grid=4, p_hide=0.5, value=0.0, p=1.0):
        super().__init__(p)
        self.grid, self.p_hide = hide_and_seek_options(grid, p_hide)
        check_value(value)
        self.value = value

    def rects(self, h, w):
        return hide_and_seek_rects(1, h, w, self.grid, self.p_hide)


class GridMask(_Occlusion):
    def __init__(self, d_min=0.2, d_max=0.5, ratio=0.5, value=0.0, p=1.0):
        super().__init__(p)
        self.d_min, self.d_max, self.ratio = gridmask_options(d_min, d_max, ratio)
        check_value(value)
        self.value = value

    def rects(self, h, w):
        return gridmask_rects(1, h, w, self.d_min, self.d_max, self.ratio)


_COMMUTING_TV = (v2.RandomGrayscale,)


def commutes_with_resize(op) -> bool:
    return isinstance(op, _COMMUTING_TV) or bool(getattr(op, "commutes_with_resize", False))


def fuse_into_crops(ops: list) -> list:
    """Move resize-commuting transforms that directly follow a random_resized_crop into it."""
    out: list = []
    for op in ops:
        last = out[-1] if out else None
        if isinstance(last, RandomResizedCrop) and commutes_with_resize(op):
            last.inner.append(op)
        else:
            out.append(op)
    return out


# ------------------------------------------------------------------------------- pipeline
class SamplePipeline:
    """``(x, y) -> (x, y)``: the recipe's transforms on one sample, seeded by the loader.

    ``before`` runs on the sample (and, with mosaic, on each of the three extra tiles), ``mosaic``
    tiles the four, ``after`` runs on the result. Float images are mapped to [0, 1] by
    ``info.max_value`` around the transforms (torchvision's convention) and back afterwards.
    """

    # The split's undecoded files, where the pipeline starts with a random_resized_crop and the split
    # can give them (a file data set): the crop is then cut from each original (see bind).
    reads_from = None

    def __init__(self, before: list, mosaic, after: list, info, source=None):
        self.before = before
        self.mosaic = mosaic
        self.after = after
        self.info = info
        self.source = source

    @classmethod
    def from_ops(cls, ops: list, info) -> SamplePipeline:
        from .mixing import Mosaic

        at = next((i for i, op in enumerate(ops) if isinstance(op, Mosaic)), None)
        if at is None:
            return cls(fuse_into_crops(ops), None, [], info)
        return cls(fuse_into_crops(ops[:at]), ops[at], fuse_into_crops(ops[at + 1:]), info)

    def bind(self, source) -> SamplePipeline:
        """This pipeline drawing mosaic tiles from ``source`` (the split the loader iterates). A
        split of image files (``source.originals()``) under a pipeline that starts with a
        random_resized_crop is read undecoded (``reads_from``): the crop is cut from the original
        at the output size, not from an image resized at load."""
        bound = SamplePipeline(self.before, self.mosaic, self.after, self.info, source)
        if (self.mosaic is None and self.before and isinstance(self.before[0], RandomResizedCrop)
                and hasattr(source, "originals")):
            bound.reads_from = source.originals()
        return bound

    def _wrap(self, x: torch.Tensor, y: Any):
        x = x.as_subclass(torch.Tensor)
        if x.is_floating_point() and self.info.max_value != 1.0:
            x = x / self.info.max_value
        image = as_image(x)
        return image if not isinstance(y, dict) else (image, y)

    def _run(self, ops: list, sample):
        for op in ops:
            sample = apply_op(op, sample)
        return sample

    def __call__(self, x: torch.Tensor, y: Any):
        if isinstance(x, Encoded):  # an undecoded file (see bind): cropped from its original
            shape, dtype = tuple(self.info.input_shape), torch.uint8
            crop = self.before[0]
            size = crop.size or shape[1:]
            image = crop.apply_encoded(x, size, self.reads_from.view, self.reads_from.crop_pct)
            sample = self._run(self.before[1:], image if not isinstance(y, dict) else (image, y))
        else:
            shape, dtype = tuple(x.shape), x.dtype
            sample = self._run(self.before, self._wrap(x, y))
        if self.mosaic is not None:
            if self.source is None:
                raise DataError("mosaic needs the data set it draws tiles from (pipeline.bind(source))")
            sample = self.mosaic(sample, self._tiles)
        sample = self._run(self.after, sample)
        image, target = (sample, y) if isinstance(sample, torch.Tensor) else sample
        out = image.as_subclass(torch.Tensor)
        if out.is_floating_point() and self.info.max_value != 1.0:
            out = out * self.info.max_value
        if tuple(out.shape) != shape:
            raise DataError(
                f"data.augment changed the sample shape from {list(shape)} to {list(out.shape)}; per-sample "
                "transforms must keep the size (resize every split with data.image_size instead)"
            )
        if isinstance(target, dict):
            target = drop_small_boxes(target, 1.0)
        return out.to(dtype), target

    def _tiles(self, n: int) -> list:
        """``n`` more samples drawn from the bound source with the per-sample generator, each put
        through the transforms before the mosaic."""
        picks = torch.randint(0, len(self.source), (n,)).tolist()
        return [self._run(self.before, self._wrap(*self.source.load(i))) for i in picks]
