"""Reading image files into uint8 tensors, with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image(path: str | Path, channels: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The image at ``path`` as a (channels, H, W) uint8 tensor, resized to ``size`` if given.

    Grayscale, palette, RGBA and RGB files are all converted to the requested channel count
    (alpha is dropped), so a folder of mixed modes loads as one consistent data set.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (expected PNG or JPEG data)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or truncated image ({str(err).splitlines()[0]})") from None
    x = torch.from_numpy(arr.copy())
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    if size is not None and tuple(x.shape[1:]) != tuple(size):
        from torchvision.transforms.v2 import functional as TF

        x = TF.resize(x, list(size), antialias=True)
    return x.contiguous()


def image_header(path: str | Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (H, W)) from the file header alone; raises DataError for non-images."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.mode, (im.height, im.width)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (expected PNG or JPEG data)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt image header ({str(err).splitlines()[0]})") from None
