"""Reading image files into uint8 tensors, with errors that name the file; rounding float pixels to uint8.

Every read checks the pixel count from the file's header before anything is decoded
(``data.max_pixels``; a small PNG can claim gigapixels) and turns the image as its EXIF
orientation says (PIL's ``ImageOps.exif_transpose``: a phone photo stored sideways is read upright,
as torchvision.io and timm read it); the sizes reported are the turned ones.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, show_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("L", "1", "I;16", "I")  # PIL modes of single-channel files
# PIL's own Image.MAX_IMAGE_PIXELS, where it warns (it refuses at twice this): data.max_pixels' default
DEFAULT_MAX_PIXELS = 89_478_485
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap height and width


@contextmanager
def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, data: bytes | None = None):
    """The PIL image at ``path``, opened lazily (header only), as a context manager; a DataError
    naming the file if it is no image or has more than ``max_pixels`` pixels. PIL's own bomb
    check (a warning above Image.MAX_IMAGE_PIXELS) is an error here; a ``max_pixels`` above PIL's
    limit raises that limit, PIL's documented switch, as the recipe asked for larger images.
    ``data`` holds the file's bytes where the caller has read them already (``path`` then only
    names the file)."""
    import io

    from PIL import Image, UnidentifiedImageError

    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    name = show_path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path if data is None else io.BytesIO(data))
        except UnidentifiedImageError:
            raise DataError(f"{name}: not a readable image (expected PNG or JPEG data)") from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
            raise DataError(f"{name}: image has more pixels than data.max_pixels = {max_pixels} "
                            f"({str(err).splitlines()[0]})") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{name}: corrupt or truncated image ({str(err).splitlines()[0]})") from None
        with im:
            if im.width * im.height > max_pixels:
                raise DataError(f"{name}: image of {im.width}x{im.height} = {im.width * im.height} pixels (width x "
                                f"height) is larger than data.max_pixels = {max_pixels}; raise data.max_pixels "
                                "to read it")
            try:
                yield im
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
                    Image.DecompressionBombError) as err:
                raise DataError(f"{name}: corrupt or truncated image ({str(err).splitlines()[0]})") from None


def _orientation(im) -> int:
    """The EXIF orientation (1..8; 1 upright) of a loaded image (a PNG's eXIf chunk may follow
    its pixels). A damaged EXIF block leaves the pixels as stored, as it does in other readers."""
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:  # PIL's EXIF parser raises whatever a damaged block makes it raise
        return 1


def _to_array(im, channels: int) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) pixels; 16- and 32-bit images are rescaled, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        wide = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(wide.max()), 1.0)
        gray = np.clip(wide / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return gray if channels == 1 else np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(im.convert("L" if channels == 1 else "RGB"))


def read_image(path: str | Path, channels: int, size: tuple[int, int] | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """The image at ``path`` as a (channels, H, W) uint8 tensor, upright as its EXIF orientation
    says, resized to ``size`` if given.

    Grayscale, palette, RGBA and RGB files are all converted to the requested channel count
    (alpha is dropped), so a folder of mixed modes loads as one consistent data set. More than
    ``max_pixels`` pixels is a DataError, found from the header before decoding.
    """
    from PIL import ImageOps

    with open_image(path, max_pixels) as im:
        im.load()  # decoding errors surface here, not in the EXIF read of a PNG
        if _orientation(im) in range(2, 9):
            arr = _to_array(ImageOps.exif_transpose(im), channels)
        else:  # exif_transpose would copy an upright image
            arr = _to_array(im, channels)
    x = torch.from_numpy(arr.copy())
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    if size is not None and tuple(x.shape[1:]) != tuple(size):
        from torchvision.transforms.v2 import functional as TF

        x = TF.resize(x, list(size), antialias=True)
    return x.contiguous()


def inspect_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (H, W)) of an image file, H and W as :func:`read_image` returns it (turned by its
    EXIF orientation). The file is decoded fully so that truncated or corrupt files are found
    before a run starts, not halfway through it, once its header has shown at most ``max_pixels``
    pixels. Raises DataError naming the file."""
    with open_image(path, max_pixels) as im:
        im.load()
        turned = _orientation(im) in _TURNED
        return im.mode, ((im.width, im.height) if turned else (im.height, im.width))


def common_shape(image_size, channels: int | None, headers: Sequence[tuple[str, tuple[int, int]]],
                 names: Sequence[object]) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) that every image of a data set is loaded at.

    ``headers`` holds each image's (PIL mode, (H, W)) from :func:`inspect_image` and ``names`` what
    to call it in an error. ``image_size`` (``data.image_size``: an int, an (H, W) pair or None)
    wins; without it all images must have the size of the first, else a DataError names the first
    image that differs. ``channels`` (``data.channels``) wins too; without it the data set is
    grayscale (1) when every file is, RGB (3) otherwise.
    """
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    else:
        size = headers[0][1]
        odd = next((i for i, (_, hw) in enumerate(headers) if hw != size), None)
        if odd is not None:
            (h, w), (h0, w0) = headers[odd][1], size
            raise DataError(f"{names[odd]}: image is {h}x{w} but {names[0]} is {h0}x{w0}; "
                            "set data.image_size to resize all images to one size")
    if channels is None:
        channels = 1 if all(mode in GRAY_MODES for mode, _ in headers) else 3
    return channels, size


# 1.5·2²³: from 2²³ on, consecutive float32 values are 1 apart, so adding it to a value in [0, 255]
# rounds that value to an integer n (IEEE round to nearest, ties to even: the constant is even) and
# the sum's bit pattern is 0x4B400000 + n, whose low byte is n.
_ROUNDER = 12582912.0


def uint8_words_(x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Round the float32 tensor ``x`` (any shape, any device) to uint8 values in place, and return
    its memory viewed as int32 (same shape) whose low byte is each value: ``x`` clamped to
    [0, 255], then rounded to the nearest integer, ties to even (as ``torch.round``, ``np.rint``).

    Any int32 → uint8 cast keeps the low byte (torch's ``copy_`` and ``.to(torch.uint8)``,
    numpy's assignment), so the caller writes the result in whatever layout it needs. Two
    vectorized passes over ``x``, which is overwritten: torch's own float → uint8 cast is a scalar
    loop on the CPU, several times slower. ``clamp=False`` saves a pass where every value is
    known to lie in [0, 255] (a convex combination of uint8 images); values outside would wrap.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"uint8_words_ needs a float32 tensor, got {x.dtype}")
    if clamp:
        x.clamp_(0.0, 255.0)
    return x.add_(_ROUNDER).view(torch.int32)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """The float tensor ``x`` (any shape, taken as float32) as uint8 of the same shape: clamped to
    [0, 255], rounded to the nearest integer, ties to even. ``x`` is not modified (see
    :func:`uint8_words_`, which the in-place fast paths call)."""
    return uint8_words_(x.to(torch.float32, copy=True)).to(torch.uint8)
