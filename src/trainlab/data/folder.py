"""The ``folder`` data set: one sub-folder per class holding PNG/JPEG images (D10).

    root/
      cat/ 001.png 002.jpg ...
      dog/ ...

Class names are the sub-folder names in sorted order. Every file is decoded once at start-up, so
that a bad file stops the run before anything is written: unreadable files, an empty class folder, a single class, or images of different
sizes without ``data.image_size`` are errors that name the file or folder. With
``data.skip_corrupt=true`` unreadable files are skipped and counted instead. A symbolic link (a
class folder or a file) that leads outside ``data.root`` is an error unless
``data.follow_links=true``: the data set is what lies under its root.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..errors import DataError, show_path
from ..registry import DATASETS
from .bundle import DataInfo, SampleSource
from .images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, common_shape, inspect_image, read_image


class FileSource(SampleSource):
    """Image files with class labels, decoded on demand (in loader workers when there are any)."""

    def __init__(self, paths: list[Path], targets: torch.Tensor, channels: int, size: tuple[int, int],
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.paths = paths
        self.targets = targets
        self.channels = channels
        self.size = size
        self.max_pixels = max_pixels

    def load(self, index: int):
        return read_image(self.paths[index], self.channels, self.size, self.max_pixels), self.targets[index]

    def subset(self, indices: torch.Tensor) -> FileSource:
        return FileSource([self.paths[int(i)] for i in indices], self.targets[indices], self.channels, self.size,
                          self.max_pixels)

    def describe(self, index: int) -> str:
        return show_path(self.paths[index])


def check_inside(path: Path, root: Path) -> None:
    """DataError unless the symbolic link ``path`` leads inside ``root`` (resolved); files that
    are no links lie where their (checked) folder does, so only links are resolved."""
    target = path.resolve()
    if not target.is_relative_to(root):
        raise DataError(f"data.root: {show_path(path)} is a symbolic link to {show_path(target)}, outside "
                        f"{show_path(root)}; set data.follow_links=true to read it")


def scan_folder(root: Path, skip_corrupt: bool, follow_links: bool = False,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[str], list[Path], list[int], list, int]:
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
    real_root = root.resolve()
    paths, labels, headers, skipped = [], [], [], 0
    for label, name in enumerate(classes):
        if not follow_links and (root / name).is_symlink():
            check_inside(root / name, real_root)
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
            if not follow_links and f.is_symlink():
                check_inside(f, real_root)
            try:
                headers.append(inspect_image(f, max_pixels))
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
                   uses=("root", "image_size", "channels", "skip_corrupt", "max_pixels", "follow_links"))
def folder(cfg, seed: int):
    if not cfg.root:
        raise DataError("data.root: the folder data set needs data.root=<folder of class sub-folders>")
    root = Path(cfg.root).expanduser()
    classes, paths, labels, headers, skipped = scan_folder(root, cfg.skip_corrupt, cfg.follow_links, cfg.max_pixels)
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
    return FileSource(paths, torch.tensor(labels, dtype=torch.long), channels, size, cfg.max_pixels), info
