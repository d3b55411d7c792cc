"""The ``folder`` data set: one sub-folder per class holding PNG/JPEG images (D10).

    root/
      cat/ 001.png 002.jpg ...
      dog/ ...

Class names are the sub-folder names in sorted order. Every file is decoded once at start-up, so
that a bad file stops the run before anything is written: unreadable files, an empty class folder, a single class, or images of different
sizes without ``data.image_size`` are errors that name the file or folder. With
``data.skip_corrupt=true`` unreadable files are skipped and counted instead.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..errors import DataError
from ..registry import DATASETS
from .bundle import DataInfo, SampleSource
from .images import IMAGE_SUFFIXES, common_shape, inspect_image, read_image


class FileSource(SampleSource):
    """Image files with class labels, decoded on demand (in loader workers when there are any)."""

    def __init__(self, paths: list[Path], targets: torch.Tensor, channels: int, size: tuple[int, int]):
        self.paths = paths
        self.targets = targets
        self.channels = channels
        self.size = size

    def load(self, index: int):
        return read_image(self.paths[index], self.channels, self.size), self.targets[index]

    def subset(self, indices: torch.Tensor) -> FileSource:
        return FileSource([self.paths[int(i)] for i in indices], self.targets[indices], self.channels, self.size)

    def describe(self, index: int) -> str:
        return str(self.paths[index])


def scan_folder(root: Path, skip_corrupt: bool) -> tuple[list[str], list[Path], list[int], list, int]:
    """Classes, files, labels, headers and the number of files skipped as unreadable."""
    if not root.exists():
        raise DataError(f"data.root: folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise DataError(f"data.root: {str(root)!r} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"data.root: {str(root)!r} has no class sub-folders (expected root/<class>/<image>.png)"
        )
    paths, labels, headers, skipped = [], [], [], 0
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (root / name).iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"data.root: class folder {str(root / name)!r} has no images "
                f"({', '.join(IMAGE_SUFFIXES)}); remove it or add images"
            )
        for f in files:
            try:
                headers.append(inspect_image(f))
            except DataError:
                if not skip_corrupt:
                    raise
                skipped += 1
                continue
            paths.append(f)
            labels.append(label)
    if len(classes) < 2:
        raise DataError(f"data.root: {str(root)!r} has one class ({classes[0]!r}); classification needs at least 2")
    present = set(labels)
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise DataError(f"data.root: class folder {str(root / empty[0])!r} has no readable images")
    return classes, paths, labels, headers, skipped


@DATASETS.register("folder", help="class-per-subfolder tree of PNG/JPEG images (data.root, data.image_size)",
                   uses=("root", "image_size", "channels", "skip_corrupt"))
def folder(cfg, seed: int):
    if not cfg.root:
        raise DataError("data.root: the folder data set needs data.root=<folder of class sub-folders>")
    root = Path(cfg.root).expanduser()
    classes, paths, labels, headers, skipped = scan_folder(root, cfg.skip_corrupt)
    channels, size = common_shape(cfg.image_size, cfg.channels, headers, paths)
    if skipped:
        print(f"data: skipped {skipped} unreadable image file(s) under {root} (data.skip_corrupt=true)",
              file=sys.stderr)
    info = DataInfo(
        input_shape=(channels, size[0], size[1]),
        num_classes=len(classes),
        class_names=classes,
        extra={"root": str(root), "skipped_corrupt": skipped, "image_files": True},
    )
    return FileSource(paths, torch.tensor(labels, dtype=torch.long), channels, size), info
