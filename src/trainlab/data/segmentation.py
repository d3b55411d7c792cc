"""The ``segmentation`` data set: images and masks of class ids in two folders (D10).

    root/
      images/ 001.png 002.jpg ...
      masks/  001.png 002.png ...     one single-channel PNG per image, same stem, same size

A mask pixel holds the class id of its image pixel (0 is background; ``ignore_index``, 255 by
default, marks unlabelled pixels). Class names come from ``data.segmentation.classes`` (by id) or
are ``class_0 .. class_K`` for the ids found. Each sample's target carries the mask as a
``tv_tensors.Mask`` (``semantic``), so geometric transforms move it with the image. For splitting
and classification, an image's class is the non-background class covering most of its pixels
(background when there is none).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..registry import DATASETS
from .bundle import DataInfo, SampleSource
from .images import IMAGE_SUFFIXES, common_shape, inspect_image, read_image
from .samples import make_target

MASK_MODES = ("L", "P", "1")


def read_mask(path: Path) -> np.ndarray:
    """(H, W) uint8 class ids from a single-channel PNG; DataError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in MASK_MODES:
                raise DataError(
                    f"{path}: mask has mode {im.mode}; expected a single-channel PNG of class ids (L or P mode)"
                )
            return np.asarray(im).astype(np.uint8)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable PNG mask") from None
    except OSError as err:
        raise DataError(f"{path}: corrupt mask ({str(err).splitlines()[0]})") from None


def image_class(mask: np.ndarray, ignore: int | None) -> int:
    """The non-background, non-ignored class with most pixels, or 0."""
    counts = np.bincount(mask.ravel(), minlength=256)
    counts[0] = 0
    if ignore is not None:
        counts[ignore] = 0
    return int(counts.argmax()) if counts.any() else 0


class MaskSource(SampleSource):
    def __init__(self, images: list[Path], masks: list[Path], targets: torch.Tensor, channels: int,
                 size: tuple[int, int] | None, annotated: bool = True):
        self.images, self.masks, self.targets = images, masks, targets
        self.channels, self.size, self.annotated = channels, size, annotated

    def load(self, index: int):
        if not self.annotated:
            return read_image(self.images[index], self.channels, self.size), self.targets[index]
        image = read_image(self.images[index], self.channels)
        mask = torch.from_numpy(read_mask(self.masks[index]))
        target = make_target(int(self.targets[index]), None, None, tuple(image.shape[1:]), semantic=mask)
        if self.size is not None and tuple(image.shape[1:]) != tuple(self.size):
            from .samples import resize_sample

            image, target = resize_sample(image, target, self.size)
        return image, target

    def subset(self, indices: torch.Tensor) -> MaskSource:
        pick = [int(i) for i in indices]
        return MaskSource([self.images[i] for i in pick], [self.masks[i] for i in pick], self.targets[indices],
                          self.channels, self.size, self.annotated)

    def labels_only(self) -> MaskSource:
        return MaskSource(self.images, self.masks, self.targets, self.channels, self.size, annotated=False)

    def describe(self, index: int) -> str:
        return str(self.images[index])


@DATASETS.register("segmentation", help="root/images + root/masks PNG of class ids (data.segmentation.classes)",
                   uses=("root", "image_size", "channels", "segmentation"))
def segmentation(cfg, seed: int):
    from ..recipe import SegmentationConfig

    sc = cfg.segmentation or SegmentationConfig()
    if not cfg.root:
        raise DataError("data.root: the segmentation data set needs data.root=<folder with images/ and masks/>")
    root = Path(cfg.root).expanduser()
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise DataError(f"data.root: {str(root / sub)!r} is not a folder (expected root/images and root/masks)")
    images = sorted(p for p in (root / "images").iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(images) < 2:
        raise DataError(f"data.root: {str(root / 'images')!r} holds {len(images)} image(s); at least 2 are needed")
    masks, labels, headers, seen = [], [], [], np.zeros(256, dtype=bool)
    for img in images:
        mask_path = root / "masks" / (img.stem + ".png")
        if not mask_path.is_file():
            raise DataError(f"{img}: no mask {mask_path} (each image needs a PNG mask with the same name)")
        mode, hw = inspect_image(img)
        mask = read_mask(mask_path)
        if mask.shape != hw:
            raise DataError(f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but {img} is {hw[0]}x{hw[1]}")
        present = np.unique(mask)
        if sc.classes is not None:
            bad = [int(v) for v in present if v >= len(sc.classes) and v != sc.ignore_index]
            if bad:
                raise DataError(
                    f"{mask_path}: class id {bad[0]} but data.segmentation.classes names {len(sc.classes)} "
                    f"classes (ids 0..{len(sc.classes) - 1}; {sc.ignore_index} is ignored)"
                )
        seen[present] = True
        masks.append(mask_path)
        labels.append(image_class(mask, sc.ignore_index))
        headers.append((mode, hw))
    if sc.ignore_index is not None:
        seen[sc.ignore_index] = False
    found = int(np.flatnonzero(seen).max()) + 1 if seen.any() else 1
    names = list(sc.classes) if sc.classes is not None else [f"class_{i}" for i in range(found)]
    if len(names) < 2:
        raise DataError(f"{root / 'masks'}: the masks hold only class 0; segmentation needs at least 2 classes")
    channels, size = common_shape(cfg.image_size, cfg.channels, headers, images)
    info = DataInfo(
        input_shape=(channels, size[0], size[1]),
        num_classes=len(names),
        class_names=names,
        annotations=("semantic",),
        max_value=255.0,
        extra={"root": str(root), "semantic_classes": names, "ignore_index": sc.ignore_index,
               "label": "non-background class with most pixels"},
    )
    return MaskSource(images, masks, torch.tensor(labels, dtype=torch.long), channels, size), info
