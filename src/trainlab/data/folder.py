"""The ``folder`` data set: one sub-folder per class holding PNG/JPEG images (D10, issue 25).

    root/
      cat/ 001.png 002.jpg ...
      dog/ ...

Class names are the sub-folder names in sorted order. Start-up reads file names, not pixels:

* The index is the folder's listing: names and entry types from ``os.scandir`` (no file is opened
  or stat'ed, so the index costs about what the listing does).
* A seeded random sample of ``data.stats_sample`` files (all of them in a folder that small) is
  read at start-up: their headers give the channel count (grey only when every sampled file is)
  and, without ``data.image_size``, the output size (every sampled image must have the same
  one); their pixels give the normalization statistics of the training files among them; a
  corrupt one stops the run before anything is written. What the sample found is cached under
  :func:`~trainlab.data.statistics.cache_dir`, keyed by the sorted file names and the sample's
  options, and valid while the sampled files keep their sizes and modification times (see
  :func:`probe_folder`), so a second run on the same folder reads no image before its first
  batch. A file outside the sample rewritten in place under the same name does not refresh the
  cache, and need not: nothing cached came from it.
* Any other file is decoded when a batch needs it. An unreadable one is an error naming it;
  with ``data.skip_corrupt=true`` it is replaced by the next readable file (a deterministic
  choice) and named at the end of the epoch.

Samples are the decoded originals, not copies resized at load: a ``random_resized_crop`` at the
head of ``data.augment`` cuts its crop from the original (decoded at a reduced JPEG scale where
the crop is much larger than the output, see :mod:`trainlab.data.decode`) and resizes it to the
output size (``data.image_size``); everywhere else (validation, test, a training pipeline without
that crop) a sample is the image resized to cover ``size / data.eval_crop_pct`` and centre
cropped (``data.eval_resize=crop``, timm's and torchvision's evaluation view), or squashed to the
output size (``data.eval_resize=squash``). A symbolic link (a class folder or a file) that leads
outside ``data.root`` is an error unless ``data.follow_links=true``.
"""
from __future__ import annotations

import hashlib
import json
import operator
import os
import sys
import tempfile
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..errors import DataError, show_path
from ..registry import DATASETS
from .bundle import DataInfo, SampleSource
from .images import DEFAULT_MAX_PIXELS, GRAY_MODES, IMAGE_SUFFIXES

# Sampled images are decoded at the smallest JPEG scale (1, 1/2 or 1/4) whose short side is still
# at least this, and weighted by their full pixel count: about a third of a full decode's time
# (the entropy decoding stays). The mean is kept (a reduced DCT keeps block means): within 0.3% of
# a std of full decodes on scikit-learn's sample photos. The std loses the variance inside 4x4
# blocks and comes out low: by 1.2-2.1% on those photos (tests/data/test_folder_crops.py holds
# it to 5%), 0.2% on the benchmark's smoother ones; for normalization that is an input std of
# 1.02 instead of 1, below what drawing 128 files costs (the bootstrap standard error on the
# benchmark's photos: 7.5% of a std for the mean, 3.5% for the std).
STATS_SIDE = 32
PROBE_VERSION = 3  # bump when what the cache holds changes meaning


class SkipLog:
    """Files skipped as unreadable, shared by a data set's splits and their loader workers: one
    line per skip appended to a temporary file (appends of a short line are atomic, so worker
    processes write to it directly); the main process reads and clears it at the end of an epoch."""

    def __init__(self):
        fd, name = tempfile.mkstemp(prefix="trainlab-skipped-", suffix=".txt")
        os.close(fd)
        self.path = name
        self._remove = weakref.finalize(self, os.unlink, name)

    def __getstate__(self):  # workers get the path only; the main process removes the file
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]

    def note(self, name: str, reason: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{name}\t{reason}\n".replace("\r", " "))

    def drain(self) -> list[tuple[str, str]]:
        try:
            with open(self.path, "r+", encoding="utf-8") as f:
                lines = f.read().splitlines()
                f.seek(0)
                f.truncate()
        except FileNotFoundError:
            return []
        return [tuple(line.split("\t", 1)) for line in lines if "\t" in line]


class FileSource(SampleSource):
    """Image files with class labels, decoded on demand (in loader workers when there are any).

    ``load(i)`` gives the evaluation view at the output size (see the module doc); the
    :meth:`originals` view gives each file undecoded (:class:`~trainlab.data.decode.Encoded`), for a
    pipeline that crops from it. ``ids`` are the files' positions in the folder's listing (what the
    start-up sample is keyed by)."""

    def __init__(self, root: Path, paths: list, targets: torch.Tensor, ids: list[int], channels: int,
                 size: tuple[int, int], *, max_pixels: int = DEFAULT_MAX_PIXELS, view: str = "crop",
                 crop_pct: float = 0.875, skip_corrupt: bool = False, log: SkipLog | None = None,
                 sample: dict | None = None, originals: bool = False):
        self.root = root
        self.paths = paths
        self.targets = targets
        self.ids = ids
        self.channels = channels
        self.size = tuple(size)
        self.max_pixels = max_pixels
        self.view = view
        self.crop_pct = crop_pct
        self.skip_corrupt = skip_corrupt
        self.log = log if log is not None else SkipLog()
        self.sample = sample or {}  # listing id -> {"sum": [...], "sq": [...], "count": n}
        self.is_originals = originals

    def _like(self, paths, targets, ids, originals) -> FileSource:
        return FileSource(self.root, paths, targets, ids, self.channels, self.size, max_pixels=self.max_pixels,
                          view=self.view, crop_pct=self.crop_pct, skip_corrupt=self.skip_corrupt, log=self.log,
                          sample=self.sample, originals=originals)

    def subset(self, indices: torch.Tensor) -> FileSource:
        idx = indices.tolist()
        return self._like(take(self.paths, idx), self.targets[indices], take(self.ids, idx), self.is_originals)

    def originals(self) -> FileSource:
        """This split yielding each file undecoded, for a transform that crops from the original."""
        return self._like(self.paths, self.targets, self.ids, True)

    def describe(self, index: int) -> str:
        return show_path(self.paths[index])

    def _raw(self, index: int):
        from .decode import read_encoded

        return read_encoded(self.paths[index], self.channels, self.max_pixels), self.targets[index]

    def attempt(self, index: int, work):
        """``work((encoded, target))`` for sample ``index``; with ``skip_corrupt`` a file that cannot
        be read or decoded is noted in the skip log and the next one in the split taken instead."""
        j = index
        for _ in range(len(self)):
            try:
                return work(self._raw(j))
            except DataError as err:
                if not self.skip_corrupt:
                    raise
                self.log.note(self.describe(j), str(err).split(": ", 1)[-1] if ": " in str(err) else str(err))
                j = (j + 1) % len(self)
        raise DataError(f"data.root: no file of this split of {show_path(self.root)} could be read "
                        "(every one was skipped as unreadable)")

    def load(self, index: int):
        if self.is_originals:
            return self.attempt(index, lambda s: s)
        from .decode import eval_view

        return self.attempt(index, lambda s: (eval_view(s[0], self.size, self.view, self.crop_pct), s[1]))

    def report_skips(self) -> None:
        """Name the files skipped since the last report (one stderr line), at the end of an epoch."""
        report_skipped(self.log.drain(), "unreadable image file(s)", "each replaced by the next readable one")

    def sampled_moments(self):
        """(sum (C,), sum of squares (C,), pixel count, images) over this split's files among the
        start-up sample, float64; None when none of them was sampled."""
        rows = [self.sample[i] for i in self.ids if i in self.sample]
        if not rows:
            return None
        total = torch.tensor([r["sum"] for r in rows], dtype=torch.float64).sum(0)
        total_sq = torch.tensor([r["sq"] for r in rows], dtype=torch.float64).sum(0)
        return total, total_sq, sum(r["count"] for r in rows), len(rows)


def take(items: list, idx: list[int]) -> list:
    """``[items[i] for i in idx]``, picked in C (a split of a large folder is a list of 10^5 names)."""
    if len(idx) < 2:
        return [items[i] for i in idx]
    return list(operator.itemgetter(*idx)(items))


def check_inside(path: Path, root: Path) -> None:
    """DataError unless the symbolic link ``path`` leads inside ``root`` (resolved); files that
    are no links lie where their (checked) folder does, so only links are resolved."""
    target = path.resolve()
    if not target.is_relative_to(root):
        raise DataError(f"data.root: {show_path(path)} is a symbolic link to {show_path(target)}, outside "
                        f"{show_path(root)}; set data.follow_links=true to read it")


def other_file(entry: os.DirEntry, root: Path, follow_links: bool) -> bool:
    """Whether a directory entry that is no regular file is an image file to index: a symbolic
    link to one (checked to lead inside ``root`` unless ``follow_links``)."""
    if not entry.is_symlink() or entry.name[0] == "." or not entry.name.lower().endswith(tuple(IMAGE_SUFFIXES)):
        return False
    if not follow_links:
        check_inside(Path(entry.path), root)
    return entry.is_file()


def list_folder(root: Path, follow_links: bool = False) -> tuple[list[str], list[str], list[int], str]:
    """Classes, files, labels and a digest of the listing (the sorted relative file names): the
    index of the folder, from directory entries alone (no file is opened, none is stat'ed: on
    Linux ``os.scandir`` gives an entry's name and type, so the index costs what the listing
    does)."""
    if not root.exists():
        raise DataError(f"data.root: folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise DataError(f"data.root: {str(root)!r} is not a folder")
    classes = sorted(p.name for p in os.scandir(root) if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"data.root: {str(root)!r} has no class sub-folders (expected root/<class>/<image>.png)"
        )
    real_root = root.resolve()
    digest = hashlib.sha256()
    suffixes = tuple(IMAGE_SUFFIXES)
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)  # plain strings: a Path per file would cost more than the listing
        if not follow_links and os.path.islink(folder):
            check_inside(Path(folder), real_root)
        with os.scandir(folder) as listing:
            # one pass, cheapest test first; a regular file is known from the entry's type (no
            # stat); links and odd entries, rare, are looked at one by one
            names = [n for e in listing
                     if (n := e.name)[0] != "." and (n.endswith(suffixes) or n.lower().endswith(suffixes))
                     and (e.is_file(follow_symlinks=False) or other_file(e, real_root, follow_links))]
        names.sort()
        if not names:
            raise DataError(
                f"data.root: class folder {folder!r} has no images "
                f"({', '.join(IMAGE_SUFFIXES)}); remove it or add images"
            )
        prefix = folder + os.sep
        paths += [prefix + n for n in names]
        labels += [label] * len(names)
        # "cls/a.jpg\ncls/b.jpg\n": one join per class, not a string per file
        digest.update((name + "/" + ("\n" + name + "/").join(names) + "\n").encode("utf-8", "surrogateescape"))
    if len(classes) < 2:
        raise DataError(f"data.root: {str(root)!r} has one class ({classes[0]!r}); classification needs at least 2")
    return classes, paths, labels, digest.hexdigest()


def file_stamp(path: str) -> list[int] | None:
    """[size, modification time (ns)] of the file at ``path``, None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _probe_one(read, i: int, channels: int | None) -> dict:
    """Header and pixel moments of sampled file ``i`` (``read(i, channels)`` gives it undecoded), at
    the statistics scale, or its error."""
    from .decode import decode_region

    try:
        enc = read(i, channels)
        if channels is None and enc.grey:  # decoded grey; the caller re-reads if the folder is not
            enc = read(i, 1)
        x = decode_region(enc, None, (STATS_SIDE, STATS_SIDE))
        flat = x.reshape(x.shape[0], -1).to(torch.int32)
        # exact integer sums (an int64 holds the squares of 1.4e14 pixels), weighted by
        # the full-size pixel count, as a full decode would weigh the image
        full = enc.size[0] * enc.size[1]
        w = full / flat.shape[1]
        total, total_sq = flat.sum(1, dtype=torch.int64), (flat * flat).sum(1, dtype=torch.int64)
        return {"mode": enc.mode, "size": list(enc.size), "channels": enc.channels,
                "sum": [v * w for v in total.tolist()], "sq": [v * w for v in total_sq.tolist()], "count": full}
    except DataError as err:
        return {"error": str(err)}


def probe_folder(paths: list, listing: str, cfg, seed: int, read=None, kind: str = "folder"
                 ) -> tuple[dict[int, dict], bool]:
    """{listing id: what :func:`_probe_one` found} for a seeded random sample of ``data.stats_sample``
    files, and whether it came from the cache (see the module doc). ``read(i, channels)`` gives file
    ``i`` undecoded (default: ``paths[i]`` read from disk).

    The cache key is ``listing`` (a digest of the file names: which files are sampled follows from
    it, the sample size and the seed) and the options that change what is found. Files read from
    disk are also stamped with their size and modification time: a cached sample is used only
    while every sampled file still has its stamp (``data.stats_sample`` stat calls, whatever the
    folder's size), so a sampled file rewritten in place is re-read; an unsampled one changes
    nothing the cache holds."""
    from ..rng import generator
    from .decode import read_encoded
    from .statistics import cache_load, cache_store

    stamp = None
    if read is None:
        def read(i, channels):
            return read_encoded(paths[i], channels, cfg.max_pixels)

        def stamp(i):
            return file_stamp(paths[i])

    k = min(cfg.stats_sample, len(paths))
    key = hashlib.sha256(json.dumps([PROBE_VERSION, listing, k, seed, cfg.channels, cfg.max_pixels,
                                     STATS_SIDE]).encode()).hexdigest()
    cached = cache_load(kind, key)
    if isinstance(cached, dict) and len(cached) == k:
        try:
            found = {int(i): row for i, row in cached.items()}
            if stamp is None or all(row.get("stamp") == stamp(i) for i, row in found.items()):
                return found, True
        except (ValueError, TypeError, AttributeError, IndexError):
            pass  # a damaged entry: recomputed
    if k == len(paths):
        ids = list(range(k))
    else:
        ids = sorted(torch.randperm(len(paths), generator=generator(seed, "stats"))[:k].tolist())
    # stamped before the read: a file rewritten while it is read gets a stale stamp, so a later
    # run re-reads it rather than trusting moments of a half-written file
    stamps = {i: stamp(i) for i in ids} if stamp is not None else {}
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:  # decoders free the GIL
        rows = list(pool.map(lambda i: _probe_one(read, i, cfg.channels), ids))
    found = dict(zip(ids, rows))
    decoded = [r for r in found.values() if "error" not in r]
    if cfg.channels is None and decoded and not all(r["mode"] in GRAY_MODES for r in decoded):
        for i, r in found.items():  # a grey file in a colour folder: its moments as RGB
            if r.get("channels") == 1:
                found[i] = _probe_one(read, i, 3)
    for i, st in stamps.items():
        found[i]["stamp"] = st
    cache_store(kind, key, {str(i): r for i, r in found.items()})
    return found, False


@DATASETS.register("folder", help="class-per-subfolder tree of PNG/JPEG images (data.root, data.image_size)",
                   uses=("root", "image_size", "channels", "skip_corrupt", "max_pixels", "follow_links",
                         "eval_resize", "eval_crop_pct", "stats_sample"))
def folder(cfg, seed: int):
    if not cfg.root:
        raise DataError("data.root: the folder data set needs data.root=<folder of class sub-folders>")
    root = Path(cfg.root).expanduser()
    classes, paths, labels, listing = list_folder(root, cfg.follow_links)
    sample, cached = probe_folder(paths, listing, cfg, seed)
    return assemble(cfg, root, classes, paths, labels, sample, cached, FileSource)


def assemble(cfg, root, classes: list[str], paths: list, labels: list[int], sample: dict[int, dict], cached: bool,
             source_type, **source_options):
    """(source, info) of a file data set from its index and its start-up sample: the sample's
    errors (all files unreadable: the folder is named; one: that file, unless data.skip_corrupt),
    the output size and channel count (see the module doc)."""
    bad = {i: r["error"] for i, r in sample.items() if "error" in r}
    if bad and len(bad) == len(sample):
        first = bad[min(bad)]
        raise DataError(f"data.root: no image under {show_path(root)} can be read ({len(bad)} of {len(bad)} "
                        f"sampled files are corrupt or no images; the first: {first})")
    if bad and not cfg.skip_corrupt:
        raise DataError(bad[min(bad)])
    good = {i: r for i, r in sample.items() if "error" not in r}
    if bad:  # known unreadable: out of the index, and said once
        keep = [i for i in range(len(paths)) if i not in bad]
        names = ", ".join(show_path(paths[i]) for i in sorted(bad)[:10])
        print(f"data: skipped {len(bad)} unreadable image file(s) under {root} (data.skip_corrupt=true): {names}"
              + (" ..." if len(bad) > 10 else ""), file=sys.stderr)
    else:
        keep = range(len(paths))
    present = set(labels) if not bad else {labels[i] for i in keep}
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise DataError(f"data.root: class {empty[0]!r} of {show_path(root)} has no readable images")
    ordered = sorted(good)
    if cfg.image_size is not None:
        size = (cfg.image_size, cfg.image_size) if isinstance(cfg.image_size, int) else tuple(cfg.image_size)
    else:
        size = tuple(good[ordered[0]]["size"])
        odd = next((i for i in ordered if tuple(good[i]["size"]) != size), None)
        if odd is not None:
            (h, w), (h0, w0) = good[odd]["size"], size
            raise DataError(f"{show_path(paths[odd])}: image is {h}x{w} but {show_path(paths[ordered[0]])} is "
                            f"{h0}x{w0}; set data.image_size to the output size (images are cropped or resized "
                            "to it, see data.eval_resize)")
    channels = cfg.channels or (1 if all(r["mode"] in GRAY_MODES for r in good.values()) else 3)
    how = "the cache" if cached else f"a random sample of {len(sample)} of {len(paths)} files"
    info = DataInfo(
        input_shape=(channels, size[0], size[1]),
        num_classes=len(classes),
        class_names=classes,
        extra={"root": str(root), "skipped_corrupt": len(bad), "image_files": True,
               "sample": {"files": len(sample), "of": len(paths), "cached": cached,
                          "statistics_from": how}},
    )
    source = source_type(root, take(paths, keep) if bad else list(paths),
                         torch.tensor(take(labels, keep) if bad else labels, dtype=torch.long), list(keep),
                         channels, size, max_pixels=cfg.max_pixels, view=cfg.eval_resize,
                         crop_pct=cfg.eval_crop_pct, skip_corrupt=cfg.skip_corrupt, sample=good, **source_options)
    return source, info


def report_skipped(skipped, what: str, how: str) -> None:
    """One stderr line naming the (name, reason) pairs ``data.skip_corrupt`` skipped this epoch (the
    first 10), or nothing when none was."""
    if skipped:
        names = sorted(set(skipped))
        shown = "; ".join(f"{n} ({why})" for n, why in names[:10]) + (" ..." if len(names) > 10 else "")
        print(f"data: skipped {len(names)} {what} this epoch (data.skip_corrupt=true), {how}: {shown}",
              file=sys.stderr)
