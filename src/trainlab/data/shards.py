"""The ``shards`` data set: WebDataset tar shards (issue 25), and writing them from a folder.

A shard is a tar file whose members are grouped into samples by key (the member name up to the
first dot of its base name, WebDataset's convention): ``000123.jpg`` (or ``.jpeg``/``.png``) holds
the image and ``000123.cls`` its class index as text. ``data.urls`` names the shards as a brace
pattern (``data/train-{000000..000041}.tar``, expanded by ``braceexpand``, webdataset's own
dependency). Class names come from ``classes.json`` beside the first shard (written by
``trainlab shard``), else they are the class indices.

Local shards are indexed at start-up from their tar headers (offsets and sizes; each ``.cls``
member, a few bytes, is read) and a sample is then read by its offset: the data set is an index
into the shards, so splits, the start-up sample and its cached statistics, crops cut from the
original and ``data.skip_corrupt`` work as for the folder data set (see
:mod:`trainlab.data.folder`). A shard that is truncated, or a pattern naming no file, is an error
naming it.

Shards named by URL (``http://``, ``https://``, ``file://``) are streamed instead (see
:class:`StreamSource`): each is read once per epoch from its first byte to its last, never by
offset. The shard list is permuted from (seed, epoch); rank r of a torchrun world of n takes every
n-th shard of the permutation and its loader worker w of m every m-th of those
(:func:`assign_shards`); ``data.shuffle_buffer`` shuffles samples within a worker's stream, seeded
from (seed, epoch, rank, worker). An epoch is ``data.epoch_samples`` samples over all ranks (a
rank whose shards run out first reads them again, in a new order). At start-up every URL is probed
(HEAD, or the file's existence) and the first ``data.stats_sample`` samples are read for the
channel count, the output size and the statistics, so an unreachable URL, or a first shard that is
truncated, stops the run before anything is written; a shard found truncated later is an error
naming it (with ``data.skip_corrupt``, its remaining samples are skipped and it is named at the end
of the epoch). ``pipe:`` and other schemes are refused.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

import torch

from ..errors import DataError, show_path
from ..registry import DATASETS
from .folder import FileSource, assemble, probe_folder, report_skipped

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
STREAMED = ("http://", "https://", "file://")  # schemes read as streams
TIMEOUT_S = 30.0  # a connection, or a read, silent for longer is an error naming the shard
_REMOTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class Member:
    """One sample's image inside a shard: where its bytes lie."""

    __slots__ = ("shard", "offset", "size", "name")

    def __init__(self, shard: str, offset: int, size: int, name: str):
        self.shard, self.offset, self.size, self.name = shard, offset, size, name

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"

    def read(self) -> bytes:
        try:
            with open(self.shard, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except OSError as err:
            raise DataError(f"{show_path(self)}: cannot be read ({err.strerror})") from None
        if len(data) != self.size:
            raise DataError(f"{show_path(self)}: truncated shard ({len(data)} of {self.size} bytes)")
        return data


class ShardSource(FileSource):
    """Samples of indexed tar shards; ``paths`` holds each sample's :class:`Member`."""

    def _like(self, paths, targets, ids, originals):
        return ShardSource(self.root, paths, targets, ids, self.channels, self.size, max_pixels=self.max_pixels,
                           view=self.view, crop_pct=self.crop_pct, skip_corrupt=self.skip_corrupt, log=self.log,
                           sample=self.sample, originals=originals)

    def _raw(self, index: int):
        from .decode import read_encoded

        member = self.paths[index]
        return read_encoded(str(member), self.channels, self.max_pixels, member.read()), self.targets[index]


def member_key(m: tarfile.TarInfo) -> tuple[str, str] | None:
    """(sample key, lower-case extension) of a tar member, WebDataset's convention: a sample is the
    files sharing a path up to the first dot of their base name (``dir/0001.png`` + ``dir/0001.cls``);
    None for a directory or a name without an extension."""
    if not m.isfile():
        return None
    folder, _, base = m.name.rpartition("/")
    if "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return (folder + "/" if folder else "") + stem, ext.lower()


def expand_urls(pattern: str) -> list[str]:
    """The shard names of a brace pattern, in order; remote URLs are refused (one line naming it)."""
    from braceexpand import braceexpand

    try:
        urls = list(braceexpand(pattern))
    except Exception as err:  # braceexpand raises whatever a malformed pattern makes it raise
        raise DataError(f"data.urls: {pattern!r} is no brace pattern ({err})") from None
    for url in urls:
        if _REMOTE.match(url) and not url.startswith(STREAMED):
            raise DataError(f"data.urls: {url} has a scheme that is not read (expected a local path, or an "
                            f"{', '.join(s[:-3] for s in STREAMED)} URL to stream)")
    # "file:x.tar" (no "//") names a local path, as before streaming was read
    return [u[5:] if u.startswith("file:") and not u.startswith("file://") else u for u in urls]


def index_shard(path: str) -> tuple[list[Member], list[int]]:
    """The image members of one shard and their class indices, from its tar headers."""
    if not Path(path).is_file():
        raise DataError(f"data.urls: shard {show_path(path)} does not exist")
    size = Path(path).stat().st_size
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                named = member_key(m)
                if named is not None:
                    groups.setdefault(named[0], {})[named[1]] = m
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"data.urls: shard {show_path(path)} is truncated or corrupt (not a readable tar file: "
                        f"{err})") from None
    members, labels = [], []
    with open(path, "rb") as f:
        for key, parts in groups.items():
            image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
            if image is None or "cls" not in parts:
                raise DataError(f"data.urls: shard {show_path(path)}: sample {key!r} has no "
                                f"{'image (.jpg/.png)' if image is None else 'class (.cls)'} member")
            for m in (image, parts["cls"]):
                if m.offset_data + m.size > size:
                    raise DataError(f"data.urls: shard {show_path(path)} is truncated (member {m.name} ends at byte "
                                    f"{m.offset_data + m.size} of {size})")
            f.seek(parts["cls"].offset_data)
            text = f.read(parts["cls"].size).decode("utf-8", "replace").strip()
            if not text.isdigit():
                raise DataError(f"data.urls: shard {show_path(path)}: {parts['cls'].name} holds {text[:40]!r}, "
                                "expected a class index")
            members.append(Member(path, image.offset_data, image.size, image.name))
            labels.append(int(text))
    if not members:
        raise DataError(f"data.urls: shard {show_path(path)} holds no samples (image + .cls members)")
    return members, labels


@DATASETS.register("shards", help="WebDataset tar shards of images + .cls labels (data.urls, data.image_size)",
                   uses=("urls", "image_size", "channels", "skip_corrupt", "max_pixels", "eval_resize",
                         "eval_crop_pct", "stats_sample", "epoch_samples", "shuffle_buffer"))
def shards(cfg, seed: int):
    if not cfg.urls:
        raise DataError("data.urls: the shards data set needs data.urls=<brace pattern of .tar shards>")
    urls = expand_urls(cfg.urls)
    streamed = [u for u in urls if u.startswith(STREAMED)]
    if streamed:
        if len(streamed) < len(urls):
            raise DataError(f"data.urls: {cfg.urls} mixes URLs and local paths; name all shards one way")
        return stream_bundle(cfg, seed, urls)
    for field in ("epoch_samples", "shuffle_buffer"):
        if getattr(cfg, field):
            raise DataError(f"data.{field}: applies to shards streamed from URLs (http://, https://, file://); "
                            f"{cfg.urls} names local shards, which are indexed and shuffled as a whole")
    members, labels, digest = [], [], hashlib.sha256()
    for url in urls:
        m, lab = index_shard(url)
        st = Path(url).stat()
        digest.update(f"{Path(url).resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        members += m
        labels += lab
    names_file = Path(urls[0]).parent / "classes.json"
    n_classes = max(labels) + 1
    classes = [str(i) for i in range(n_classes)]
    if names_file.is_file():
        try:
            named = json.loads(names_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{show_path(names_file)}: not a JSON list of class names ({err})") from None
        if not isinstance(named, list) or len(named) < n_classes:
            raise DataError(f"{show_path(names_file)}: expected a list of at least {n_classes} class names")
        classes = [str(c) for c in named]
    if len(set(labels)) < 2:
        raise DataError(f"data.urls: {cfg.urls} holds one class; classification needs at least 2")
    sample, cached = probe_folder(members, digest.hexdigest(), cfg, seed, kind="shards",
                                  read=lambda i, ch: _read_member(members[i], ch, cfg.max_pixels))
    return assemble(cfg, cfg.urls, classes, members, labels, sample, cached, ShardSource)


def _read_member(member: Member, channels, max_pixels):
    from .decode import read_encoded

    return read_encoded(str(member), channels, max_pixels, member.read())


def parse_size(text: str) -> int:
    """'1GB', '500MB', '64KiB', '1000000' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise DataError(f"--size: {text!r} is no size (expected e.g. 1GB, 500MB, 64KiB)")
    unit = m.group(2).upper()
    base = 1024 if (m.group(3) or "").lower() == "ib" else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(unit or " "))


def write_shards(root: Path, out: Path, max_bytes: int, seed: int = 0, follow_links: bool = False,
                 prefix: str = "shard") -> tuple[list[Path], int]:
    """Write the folder data set at ``root`` as tar shards of at most about ``max_bytes`` each under
    ``out`` with webdataset's ``ShardWriter``, samples in a seeded random order (so that every shard
    mixes the classes), and ``classes.json``; returns the shard files and the sample count. Image
    files are copied as they are (not decoded); nothing is written when the folder cannot be listed."""
    import webdataset as wds

    from ..rng import generator
    from .folder import list_folder

    classes, paths, labels, _ = list_folder(root, follow_links)
    order = torch.randperm(len(paths), generator=generator(seed, "shard")).tolist()
    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / f"{prefix}-%06d.tar"), maxcount=10**12, maxsize=max_bytes, verbose=0) as sink:
        for n, i in enumerate(order):
            file = Path(paths[i])
            sink.write({"__key__": f"{n:08d}", file.suffix.lower().lstrip("."): file.read_bytes(), "cls": labels[i]})
    (out / "classes.json").write_text(json.dumps(classes), encoding="utf-8")
    return sorted(out.glob(f"{prefix}-*.tar")), len(order)


# ------------------------------------------------------------------------ shards streamed from URLs
def assign_shards(urls: list[str], seed: int, epoch: int, rank: int = 0, world: int = 1, worker: int = 0,
                  workers: int = 1, cycle: int = 0) -> list[str]:
    """The shards one loader worker of one rank reads in ``epoch``, in reading order: the list
    permuted from (seed, epoch) (and ``cycle``, a rank's further pass over its shards), rank
    ``rank`` of ``world`` taking every ``world``-th shard of the permutation from its ``rank``-th,
    and worker ``worker`` of ``workers`` every ``workers``-th of those. Over the ranks and workers
    the pieces partition the list."""
    from ..rng import generator

    order = torch.randperm(len(urls), generator=generator(seed, "shards", epoch, cycle)).tolist()
    return [urls[i] for i in order[rank::world][worker::workers]]


def _reach_error(url: str, err: BaseException) -> DataError:
    from urllib.error import HTTPError, URLError

    if isinstance(err, HTTPError):
        why = f"HTTP {err.code} {err.reason}"
    elif isinstance(err, URLError):
        why = str(getattr(err.reason, "strerror", None) or err.reason)
    else:
        why = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return DataError(f"data.urls: shard {show_path(url)} cannot be reached ({why})")


def open_url(url: str, method: str = "GET"):
    """(readable binary stream, its length in bytes or None) of a shard URL; an unreachable one is
    a DataError naming it."""
    if url.startswith("file://"):
        from urllib.request import url2pathname

        path = url2pathname(url[len("file://"):])
        try:
            f = open(path, "rb")
        except OSError as err:
            raise DataError(f"data.urls: shard {show_path(url)} cannot be read "
                            f"({'it does not exist' if isinstance(err, FileNotFoundError) else err.strerror})") from None
        return f, Path(path).stat().st_size
    import http.client
    from urllib.request import Request, urlopen

    try:
        response = urlopen(Request(url, method=method), timeout=TIMEOUT_S)
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise _reach_error(url, err) from None
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


def probe_urls(urls: list[str]) -> None:
    """Every shard answers (HEAD; a file:// one exists), or a DataError names the first that does
    not: checked at start-up, before anything is written."""
    from concurrent.futures import ThreadPoolExecutor

    def probe(url):
        try:
            stream, _ = open_url(url, "HEAD")
        except DataError as err:
            return err
        stream.close()
        return None

    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        errors = [e for e in pool.map(probe, urls) if e is not None]
    if errors:
        raise errors[0]


class _Counted:
    """A read-only stream that counts the bytes read from it (a truncated download tells itself
    by a count short of the announced length)."""

    def __init__(self, raw):
        self.raw, self.count = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        return data


def stream_samples(url: str):
    """``(key, name, image bytes, class index)`` of each sample of the shard at ``url``, read as a
    stream (members of a sample adjacent, WebDataset's rule); a shard cut short, or one that is no
    tar file, is a DataError naming it."""
    import http.client

    raw, length = open_url(url)
    counted = _Counted(raw)

    def broken(why: str) -> DataError:
        return DataError(f"data.urls: shard {show_path(url)} is truncated or corrupt ({why})")

    def finish(key, parts):
        image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
        if image is None or "cls" not in parts:
            raise DataError(f"data.urls: shard {show_path(url)}: sample {key!r} has no "
                            f"{'image (.jpg/.png)' if image is None else 'class (.cls)'} member")
        text = parts["cls"][1].decode("utf-8", "replace").strip()
        if not text.isdigit():
            raise DataError(f"data.urls: shard {show_path(url)}: {key}.cls holds {text[:40]!r}, expected a class "
                            "index")
        return key, image[0], image[1], int(text)

    try:
        with raw, tarfile.open(fileobj=counted, mode="r|*") as tar:
            key, parts = None, {}
            for m in tar:
                named = member_key(m)
                if named is None:
                    continue
                k, ext = named
                data = tar.extractfile(m).read()
                if len(data) != m.size:
                    raise broken(f"member {m.name} has {len(data)} of {m.size} bytes")
                if k != key and parts:
                    yield finish(key, parts)
                    parts = {}
                key = k
                parts[ext] = (m.name, data)
            if parts:
                yield finish(key, parts)
            end = tar.offset  # where the end-of-archive blocks begin
            while counted.read(1 << 16):
                pass
            if getattr(tar.fileobj, "comptype", "tar") == "tar" and counted.count < end + 2 * tarfile.BLOCKSIZE:
                raise broken(f"it ends at byte {counted.count}, before the end-of-archive blocks")
            if length is not None and counted.count < length:
                raise broken(f"{counted.count} of {length} bytes arrived")
    except (tarfile.TarError, EOFError, OSError, http.client.HTTPException) as err:
        raise broken(str(err) or type(err).__name__) from None


class StreamSource:
    """The training split of shards streamed from URLs: ``epoch_samples`` samples an epoch, read
    in order by :meth:`stream_batches` (the loader's path for it), never by index.

    Each sample's transforms are seeded from (seed, epoch, shard, key, pass): the same sample gets
    the same augmentation whichever rank or worker reads it and wherever the stream is resumed."""

    def __init__(self, urls: list[str], epoch_samples: int, channels: int, size: tuple[int, int], cfg,
                 held: list[tuple[str, bytes, int]] = (), log=None):
        from .folder import SkipLog

        self.urls = urls
        self.n = epoch_samples
        self.channels = channels
        self.size = tuple(size)
        self.max_pixels = cfg.max_pixels
        self.view = cfg.eval_resize
        self.crop_pct = cfg.eval_crop_pct
        self.skip_corrupt = cfg.skip_corrupt
        self.buffer = cfg.shuffle_buffer
        self.log = log if log is not None else SkipLog()
        self.targets = None  # not known before the stream is read (no class counts, no stratified split)
        # the samples read at start-up (name, bytes, class): what a random read (the augmentation
        # preview) is given, in the main process only
        self.held = list(held)

    def __getstate__(self):
        return {**self.__dict__, "held": []}

    def __len__(self) -> int:
        return self.n

    def attempt(self, index: int, work):
        """``work((encoded, target))`` of start-up sample ``index`` (modulo their count): a streamed
        split has no random access, so a random read (the augmentation preview) gets one of them."""
        from .decode import read_encoded

        if not self.held:
            raise DataError("data.urls: shards streamed from URLs are read in order, not by index")
        name, data, label = self.held[index % len(self.held)]
        return work((read_encoded(name, self.channels, self.max_pixels, data), torch.tensor(label)))

    def load(self, index: int):
        from .decode import eval_view

        return self.attempt(index, lambda s: (eval_view(s[0], self.size, self.view, self.crop_pct), s[1]))

    def subset(self, indices):
        raise DataError("data.urls: shards streamed from URLs cannot be split by index (data.subset, data.fold "
                        "need local shards)")

    def describe(self, index: int) -> str:
        return f"streamed sample {index}"

    def labels_only(self):
        return self

    def labelled(self):
        return self

    def originals(self):
        """Itself: streamed samples arrive undecoded, so a random_resized_crop cuts from the original."""
        return self

    def report_skips(self) -> None:
        """Name the shards and samples skipped since the last report (one stderr line), at the end of
        an epoch."""
        report_skipped(self.log.drain(), "unreadable shard(s) or sample(s)",
                       "a shard's samples after the fault, an image alone")

    def stream_batches(self, loader, epoch: int, start: int = 0):
        """The batches of ``epoch`` from batch ``start`` on, for ``loader`` (a BatchLoader): this rank's
        piece of each global batch of ``loader.batch_size``, from its shards (see
        :func:`assign_shards`). A resumed epoch is read again from its beginning and the samples of
        the batches before ``start`` are dropped unbatched: the same batches follow as in an
        uninterrupted run, for the price of reading those samples again."""
        from .loader import piece_size

        # a loader the trainer gave no rank piece reads the whole split (a final evaluation, or a
        # metric that cannot be summed over ranks), also under torchrun
        rank, world = loader.shard if loader.shard is not None else (0, 1)
        bs, n = loader.batch_size, self.n
        sizes = [piece_size(min(bs, n - b * bs), rank, world) for b in range(len(loader))]
        skip = sum(sizes[:start])
        samples = self._samples(loader, epoch, rank, world)
        try:
            for _ in range(skip):
                next(samples)
            for size in sizes[start:]:
                batch = [next(samples) for _ in range(size)]
                yield loader.collate_fn(batch)
        finally:
            samples.close()
        self.report_skips()

    def _samples(self, loader, epoch: int, rank: int, world: int):
        from .loader import _ignore_sigint

        cycle = 0
        while True:  # a rank whose shards run out before the epoch does reads them again
            stream = _ShardStream(self, loader.transform, loader.seed, epoch, cycle, rank, world,
                                  chunk=max(1, min(16, loader.batch_size // world)))
            dl = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=loader.workers,
                                             worker_init_fn=_ignore_sigint if loader.workers > 0 else None,
                                             generator=torch.Generator())
            got = 0
            it = iter(dl)
            try:
                for chunk in it:
                    got += len(chunk)
                    yield from chunk
            finally:
                del it  # stops the workers
            if not got:
                raise DataError(f"data.urls: rank {rank}'s shards of {len(self.urls)} hold no readable sample")
            cycle += 1


class _ShardStream(torch.utils.data.IterableDataset):
    """One pass of one rank over its shards, split over the loader's workers; yields lists of up to
    ``chunk`` transformed samples (fewer messages between processes than one per sample)."""

    def __init__(self, source: StreamSource, transform, seed: int, epoch: int, cycle: int, rank: int, world: int,
                 chunk: int):
        self.source, self.transform, self.seed, self.epoch = source, transform, seed, epoch
        self.cycle, self.rank, self.world, self.chunk = cycle, rank, world, chunk

    def _raw(self, urls: list[str]):
        src = self.source
        for url in urls:
            try:
                for key, name, data, label in stream_samples(url):
                    yield url, key, name, data, label
            except DataError as err:
                if not src.skip_corrupt:
                    raise
                src.log.note(url, str(err).split(" (", 1)[-1].rstrip(")") if " (" in str(err) else str(err))

    def _shuffled(self, items, rng):
        """Reservoir-style shuffle within a buffer of ``data.shuffle_buffer`` samples."""
        size = self.source.buffer
        if size <= 1:
            yield from items
            return
        held = []
        for item in items:
            held.append(item)
            if len(held) >= size:
                i = rng.randrange(len(held))
                held[i], held[-1] = held[-1], held[i]
                yield held.pop()
        rng.shuffle(held)
        yield from held

    def _transform(self, url, key, name, data, label):
        from .decode import eval_view, read_encoded
        from .loader import sample_seed

        src = self.source
        y = torch.tensor(label)
        with sample_seed(self.seed, self.epoch, f"{url}#{key}#{self.cycle}"):
            enc = read_encoded(f"{url}:{name}", src.channels, src.max_pixels, data)
            t = self.transform
            if t is not None and getattr(t, "reads_from", None) is not None:
                return t(enc, y)
            x = eval_view(enc, src.size, src.view, src.crop_pct)
            return t(x, y) if t is not None else (x, y)

    def __iter__(self):
        import random

        from ..rng import derive_seed

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        urls = assign_shards(self.source.urls, self.seed, self.epoch, self.rank, self.world, worker, workers,
                             self.cycle)
        rng = random.Random(derive_seed(self.seed, "buffer", self.epoch, self.cycle, self.rank, worker))
        chunk = []
        for item in self._shuffled(self._raw(urls), rng):
            try:
                chunk.append(self._transform(*item))
            except DataError as err:
                if not self.source.skip_corrupt:
                    raise
                self.source.log.note(f"{item[0]}:{item[2]}", str(err).split(": ")[-1])
                continue
            if len(chunk) >= self.chunk:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def read_beside(url: str, name: str) -> bytes | None:
    """The file ``name`` in the same folder as the shard at ``url`` (classes.json), None where there
    is none (a 404, a missing file); another failure is a DataError naming it."""
    from urllib.error import HTTPError

    where = url.rsplit("/", 1)[0] + "/" + name
    try:
        stream, _ = open_url(where)
    except DataError as err:
        cause = err.__context__
        if isinstance(cause, HTTPError) and cause.code == 404 or "does not exist" in str(err):
            return None
        raise
    with stream:
        return stream.read()


def stream_bundle(cfg, seed: int, urls: list[str]):
    """The DataBundle of shards streamed from ``urls``: a training split only (:class:`StreamSource`),
    its channel count, output size and statistics from the first ``data.stats_sample`` samples of
    the stream (in the order of ``data.urls``)."""
    from .bundle import DataBundle, DataInfo
    from .folder import probe_folder
    from .images import GRAY_MODES
    from .statistics import mean_std

    if cfg.epoch_samples is None:
        raise DataError(f"data.epoch_samples: shards streamed from URLs ({urls[0]} ...) need the samples per epoch "
                        "(trainlab shard prints the count); a stream's length is not known before it is read")
    if any((a if isinstance(a, str) else next(iter(a), "")) == "mosaic" for a in cfg.augment):
        raise DataError("data.augment: mosaic draws tiles from random samples; shards streamed from URLs are read in "
                        "order (use local shards)")
    if cfg.sampler != "shuffle":
        raise DataError(f"data.sampler: {cfg.sampler} needs every sample's label before the epoch; shards streamed "
                        "from URLs are read in order (use local shards)")
    probe_urls(urls)
    found = []  # (name, bytes, label) of the first samples
    for url in urls:
        for _, name, data, label in stream_samples(url):
            found.append((f"{url}:{name}", data, label))
            if len(found) >= cfg.stats_sample:
                break
        if len(found) >= cfg.stats_sample:
            break
    if not found:
        raise DataError(f"data.urls: {cfg.urls} holds no samples")
    names_json = read_beside(urls[0], "classes.json")
    if names_json is None:
        raise DataError(f"data.urls: no classes.json beside {urls[0]} (a JSON list of class names, written by "
                        "trainlab shard); streamed shards need it for the number of classes")
    try:
        classes = [str(c) for c in json.loads(names_json.decode("utf-8"))]
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise DataError(f"data.urls: classes.json beside {urls[0]} is not a JSON list of class names ({err})") from None
    top = max(label for *_, label in found)
    if len(classes) < 2 or top >= len(classes):
        raise DataError(f"data.urls: classes.json beside {urls[0]} lists {len(classes)} classes; expected at least 2 "
                        f"and more than the largest class index read ({top})")
    from .decode import read_encoded

    digest = hashlib.sha256(json.dumps([urls, [n for n, _, _ in found]]).encode()).hexdigest()
    sample, cached = probe_folder([n for n, _, _ in found], digest, cfg, seed, kind="stream",
                                  read=lambda i, ch: read_encoded(found[i][0], ch, cfg.max_pixels, found[i][1]))
    bad = {i: r["error"] for i, r in sample.items() if "error" in r}
    if bad and (len(bad) == len(sample) or not cfg.skip_corrupt):
        raise DataError(bad[min(bad)])
    good = [r for r in sample.values() if "error" not in r]
    if cfg.image_size is not None:
        size = (cfg.image_size, cfg.image_size) if isinstance(cfg.image_size, int) else tuple(cfg.image_size)
    else:
        size = tuple(good[0]["size"])
        if any(tuple(r["size"]) != size for r in good):
            raise DataError(f"data.image_size: the streamed images differ in size ({urls[0]} ...); set it to the "
                            "output size")
    channels = cfg.channels or (1 if all(r["mode"] in GRAY_MODES for r in good) else 3)
    note = (f"statistics from the first {len(good)} samples of the stream (data.stats_sample; the shards are "
            "streamed, not sampled at random)")
    info = DataInfo(input_shape=(channels, size[0], size[1]), num_classes=len(classes), class_names=classes,
                    extra={"urls": cfg.urls, "streamed": True, "epoch_samples": cfg.epoch_samples,
                           "image_files": True, "statistics": note})
    print(f"data: {note}", file=sys.stderr)
    if cfg.normalize:
        total = torch.tensor([r["sum"] for r in good], dtype=torch.float64).sum(0)
        total_sq = torch.tensor([r["sq"] for r in good], dtype=torch.float64).sum(0)
        mean, std = mean_std(total, total_sq, sum(r["count"] for r in good))
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        mean, std = mean.float(), std.float()
    else:
        mean, std = torch.zeros(channels), torch.ones(channels)
    source = StreamSource(urls, cfg.epoch_samples, channels, size, cfg, held=[found[i] for i in sorted(sample)
                                                                             if "error" not in sample[i]])
    return DataBundle(source, None, None, info, mean, std, None)
