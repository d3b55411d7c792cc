"""Decoding image files at the scale the work needs: crops from the original, DCT-domain draft
decoding, the evaluation view (issue 25).

A file is read once into an :class:`Encoded` (its bytes and its header: format, mode, upright size,
EXIF orientation); what is decoded from it then depends on what the sample needs:

* :func:`decode_region` decodes a region (a crop's box, or the whole image) of a JPEG at the
  smallest scale 1, 1/2 or 1/4 that keeps the region at least ``min_size`` (libjpeg's
  DCT-domain scaling through PIL's ``Image.draft``, as FFCV and DALI decode small crops of large
  photos). Where no reduction applies a JPEG goes through ``torchvision.io.decode_jpeg``
  (libjpeg-turbo, measured faster than PIL's full decode here, and already in the channels-last
  layout the resize kernel prefers). PNG files, and JPEGs turned by their EXIF orientation, are
  decoded fully by PIL and turned upright (see :mod:`trainlab.data.images`).
* :func:`eval_view` gives the fixed-size view used where no random crop is drawn: the image
  resized to cover ``size / crop_pct`` keeping its aspect ratio, then centre-cropped to ``size``
  (timm's ``crop_pct``; torchvision's ``Resize(S)`` + ``CenterCrop``), or squashed to ``size``.
  An image already of the output size is used as it is.

Every error names the file (DataError), as :func:`trainlab.data.images.read_image` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, show_path
from .images import DEFAULT_MAX_PIXELS, GRAY_MODES, _orientation, _to_array, open_image

_TURNED = (5, 6, 7, 8)


@dataclass
class Encoded:
    """A file's bytes and header; ``pixels`` holds the decoded (C, H, W) uint8 image where the
    format has no cheaper path than a full decode (PNG, or a JPEG with an EXIF turn)."""

    path: Path
    data: bytes
    format: str
    mode: str
    size: tuple[int, int]  # (H, W), upright
    channels: int
    max_pixels: int
    pixels: torch.Tensor | None = None

    @property
    def grey(self) -> bool:
        return self.mode in GRAY_MODES


def _pil_pixels(im, channels: int) -> torch.Tensor:
    """(C, H, W) uint8 of a loaded PIL image, upright, in the channels-last layout numpy gives."""
    from PIL import ImageOps

    if _orientation(im) in range(2, 9):
        im = ImageOps.exif_transpose(im)
    arr = np.array(_to_array(im, channels), copy=True)  # writable: later stages may work in place
    x = torch.from_numpy(arr)
    return x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)


def read_encoded(path: str | Path, channels: int | None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 data: bytes | None = None) -> Encoded:
    """The file at ``path`` as an :class:`Encoded`; its header is checked (``max_pixels``, a
    readable format) before anything is decoded. ``channels`` None leaves the choice to the caller
    (the header's ``mode`` says whether the file is grey); 3 is assumed for any decode. ``data``
    holds the bytes where they come from elsewhere (a shard member; ``path`` then names it)."""
    path = Path(path)
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise DataError(f"{show_path(path)}: cannot be read ({err.strerror})") from None
    with open_image(path, max_pixels, data) as im:
        fmt, mode, (w, h) = im.format or "", im.mode, im.size
        pixels = None
        if fmt == "JPEG":
            if _orientation(im) in range(2, 9):  # rare: decoded and turned at once
                im.load()
                pixels = _pil_pixels(im, channels or 3)
                h, w = pixels.shape[1:]
        else:
            im.load()  # a PNG's eXIf chunk may follow its pixels
            pixels = _pil_pixels(im, channels or 3)
            h, w = pixels.shape[1:]
    return Encoded(path, data, fmt, mode, (int(h), int(w)), channels or 3, max_pixels, pixels)


def _draft_scale(box_hw: tuple[int, int], min_size: tuple[int, int] | None) -> int:
    """The largest JPEG reduction 1, 2 or 4 that keeps a region of ``box_hw`` at least ``min_size``.

    Not 1/8: libjpeg's 1/8 scale keeps only each 8 x 8 block's mean. Measured against
    torchvision's antialiased resize of the full decode on a 480 x 640 JPEG: 0.15-0.9 grey levels
    apart on average at 1/2 and 1/4, but 0.9-4.6 at 1/8, with a bias of +0.65 on every image,
    even with twice the output size to spare."""
    if min_size is None:
        return 1
    scale = 1
    while scale < 4 and box_hw[0] >= 2 * scale * min_size[0] and box_hw[1] >= 2 * scale * min_size[1]:
        scale *= 2
    return scale


def _jpeg_pixels(enc: Encoded, scale: int) -> torch.Tensor:
    """The whole JPEG decoded at 1/``scale`` as (C, h, w) uint8; PIL's draft for reductions,
    torchvision's decode_jpeg otherwise (PIL where torchvision refuses the file, e.g. CMYK, so that
    the error, if any, is PIL's and names the file)."""
    if scale == 1:
        import warnings

        from torchvision.io import ImageReadMode, decode_jpeg

        # torchvision 0.29 points to torchcodec on every call; measured faster than PIL here, it is kept
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision",
                                DeprecationWarning)
        try:
            raw = torch.frombuffer(bytearray(enc.data), dtype=torch.uint8)
            return decode_jpeg(raw, mode=ImageReadMode.GRAY if enc.channels == 1 else ImageReadMode.RGB)
        except RuntimeError:
            pass
    with open_image(enc.path, enc.max_pixels, enc.data) as im:
        if scale > 1:
            h, w = enc.size
            im.draft("L" if enc.channels == 1 else "RGB", (math.ceil(w / scale), math.ceil(h / scale)))
        im.load()
        return _pil_pixels(im, enc.channels)


def decode_region(enc: Encoded, box: tuple[int, int, int, int] | None = None,
                  min_size: tuple[int, int] | None = None) -> torch.Tensor:
    """The region ``box`` = (top, left, height, width) of the upright image (None: all of it) as a
    (C, h, w) uint8 tensor (possibly a strided view), decoded at the smallest scale that keeps it
    at least ``min_size`` (H, W) (see :func:`_draft_scale`; only JPEGs without an EXIF turn are
    decoded reduced, anything else comes at full scale)."""
    h, w = enc.size
    top, left, bh, bw = box if box is not None else (0, 0, h, w)
    if enc.pixels is not None:
        full = enc.pixels
    else:
        full = _jpeg_pixels(enc, _draft_scale((bh, bw), min_size))
    dh, dw = full.shape[1:]
    if (dh, dw) == (h, w):
        return full[:, top:top + bh, left:left + bw]
    fy, fx = dh / h, dw / w  # libjpeg rounds a reduced size up: map the box by the actual ratio
    t, lft = int(round(top * fy)), int(round(left * fx))
    b, r = max(int(round((top + bh) * fy)), t + 1), max(int(round((left + bw) * fx)), lft + 1)
    return full[:, t:min(b, dh), lft:min(r, dw)]


def cover_size(hw: tuple[int, int], size: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """(H', W') that an image of ``hw`` is resized to, keeping its aspect ratio, before a centre
    crop of ``size``: the side that binds is floor(side / crop_pct) and the other follows with
    torchvision's rounding (``Resize(S)``: int(S · long / short)), at least the crop."""
    h, w = hw
    sh, sw = math.floor(size[0] / crop_pct), math.floor(size[1] / crop_pct)
    if sh / h >= sw / w:
        return sh, max(int(sh * w / h), size[1])
    return max(int(sw * h / w), size[0]), sw


def center_box(hw: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, H, W) of a centred ``size`` box in an image of ``hw`` (torchvision's rounding)."""
    return int(round((hw[0] - size[0]) / 2.0)), int(round((hw[1] - size[1]) / 2.0)), size[0], size[1]


def eval_view(enc: Encoded, size: tuple[int, int], mode: str = "crop", crop_pct: float = 0.875) -> torch.Tensor:
    """The (C, H, W) contiguous uint8 image a sample is when no random crop is drawn: resized to
    cover ``size / crop_pct`` and centre-cropped (``mode="crop"``), or squashed to ``size``
    (``"squash"``); as it is when it already has ``size``."""
    from .augment import resize_image

    size = tuple(size)
    if enc.size == size:
        return decode_region(enc).contiguous()
    target = size if mode == "squash" else cover_size(enc.size, size, crop_pct)
    x = resize_image(decode_region(enc, None, target), target)
    if mode != "squash":
        t, lft, ch, cw = center_box(target, size)
        x = x[:, t:t + ch, lft:lft + cw]
    return x.contiguous()
