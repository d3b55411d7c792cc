"""Batches of a split, in an order derived from (seed, epoch) (D8).

Two paths, one behaviour. A split held in memory with no per-sample transform is batched by
indexing its tensors, with no per-sample Python work (this is what keeps trainlab's epoch within a
few percent of a hand-written loop). Anything else goes through a torch DataLoader whose samples
carry their (epoch, index) key, so each sample's augmentation is seeded by (seed, epoch, index) and
the result is the same for any number of workers. Both paths can start mid-epoch at a given batch,
which is how an interrupted run resumes exactly.
"""
from __future__ import annotations

import signal
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..rng import derive_seed, generator
from ..errors import TrainlabError
from .bundle import SampleSource, TensorSource
from .samples import collate

Transform = Callable[[Any, Any], tuple[Any, Any]]
Collate = Callable[[list[tuple[Any, Any]]], dict[str, Any]]
# (targets of the split's samples, seed, epoch, shuffle) -> sample order; the targets let an
# identity-balanced sampler (data.pk_sampler) form its batches
Order = Callable[[torch.Tensor, int, int, bool], torch.Tensor]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The sample order of one epoch: a fresh permutation per epoch when shuffling."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=generator(seed, "order", epoch))


@contextlib.contextmanager
def sample_seed(seed: int, epoch: int, index: int):
    """Seed torch's CPU generator for one sample's transforms, restoring its state afterwards.

    The state is restored so that the global generator (dropout, init) is untouched in the main
    process. Only the CPU generator is seeded: transforms run on the CPU, and torch.manual_seed
    (or fork_rng's device bookkeeping) would cost a hundred times more per sample.

    The transforms run on one intra-op thread, as they do in a loader worker: a single sample is
    too small to split across threads, and on a busy machine the thread hand-offs cost ten times
    the work itself.
    """
    saved = torch.get_rng_state()
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    torch.default_generator.manual_seed(derive_seed(seed, "sample", epoch, index))
    try:
        yield
    finally:
        torch.set_rng_state(saved)
        if threads > 1:
            torch.set_num_threads(threads)


def load_sample(source: SampleSource, transform: Transform | None, seed: int, epoch: int, index: int):
    """Sample ``index`` of ``source`` as the loader yields it in ``epoch``: ``(x, y)`` loaded, then
    put through ``transform`` with torch's generator seeded from (seed, epoch, index).

    A transform that reads the split's files undecoded (``transform.reads_from``, a file data set
    whose crops are cut from the original) loads them itself, under the same seed; an unreadable
    file is then replaced as the data set says (``reads_from.attempt``, data.skip_corrupt)."""
    reads = getattr(transform, "reads_from", None)
    if reads is not None:
        with sample_seed(seed, epoch, index):
            return reads.attempt(index, lambda sample: transform(*sample))
    x, y = source.load(index)
    if transform is not None:
        with sample_seed(seed, epoch, index):
            x, y = transform(x, y)
    return x, y


class _Keyed(torch.utils.data.Dataset):
    """Maps an (epoch, index) key to a transformed sample, seeding the transform from the key."""

    def __init__(self, source: SampleSource, transform: Transform | None, seed: int):
        self.source = source
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        return load_sample(self.source, self.transform, self.seed, epoch, index)


class _KeyBatches:
    """Batch sampler over (epoch, index) keys; ``epoch`` and ``start`` are set before each pass."""

    def __init__(self, loader: BatchLoader):
        self.loader = loader
        self.epoch = 0
        self.start = 0

    def __iter__(self):
        for idx in self.loader.index_batches(self.epoch, self.start):
            yield [(self.epoch, i) for i in idx.tolist()]

    def __len__(self) -> int:
        return len(self.loader) - self.start


def _ignore_sigint(worker_id: int) -> None:
    """Workers leave Ctrl-C, and SIGTERM/SIGHUP sent to the whole process group (SLURM's scancel,
    a terminal closing), to the main process, which saves a checkpoint and stops them."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


class BatchLoader:
    """Iterates a split in batches (``{"input": x, "target": y}`` by default).

    ``batch_size`` of 1 gives single-sample SGD, the split size gives full-batch GD (D8). A trailing
    batch of a single sample is dropped when batches are larger, because BatchNorm cannot compute
    statistics over one sample.

    The task decides what a batch is and which samples form it: ``collate`` turns a list of
    samples into a batch (default :func:`~trainlab.data.samples.collate`), ``order`` gives an
    epoch's sample order from (targets, seed, epoch, shuffle) (default :func:`epoch_order` of the
    split's size); batches are
    consecutive runs of that order. The in-memory fast path applies to the default collate only.
    """

    def __init__(
        self,
        source: SampleSource,
        batch_size: int,
        *,
        seed: int,
        shuffle: bool,
        transform: Transform | None = None,
        workers: int = 0,
        pin_memory: bool = False,
        drop_singleton: bool = True,
        device: torch.device | None = None,
        collate_fn: Collate | None = None,
        order: Order | None = None,
        shard: tuple[int, int] | None = None,
    ):
        self.source = source
        self.batch_size = min(batch_size, len(source))
        # (rank, world size) under torchrun: batches stay the global ones of the (seed, epoch)
        # order, and this process takes its contiguous piece of each (:func:`shard`)
        self.shard = shard
        self._order_len = len(source)
        self.seed = seed
        self.shuffle = shuffle
        # A transform that draws from the data set (mosaic) is bound to the split it runs on.
        self.transform = transform.bind(source) if hasattr(transform, "bind") else transform
        self.workers = workers
        self.pin_memory = pin_memory
        self._num_batches = steps_per_epoch(len(source), self.batch_size, drop_singleton,
                                            shard[1] if shard is not None else 1)
        self.collate_fn = collate_fn or collate
        self.order = order
        self._fast = isinstance(source, TensorSource) and transform is None and collate_fn is None
        if self._fast:
            # An in-memory split moves to the device once; batches are then gathered there.
            dev = device or torch.device("cpu")
            self._tensors = (source.inputs.to(dev), source.targets.to(dev))
        self._dl = None
        self._it = None
        self._sampler = None

    def __len__(self) -> int:
        return self._num_batches

    def index_batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        if self.order is None:
            order = epoch_order(len(self.source), self.seed, epoch, self.shuffle)
        else:
            order = self.order(self.source.targets, self.seed, epoch, self.shuffle)
        bs = self.batch_size
        if self.shard is None:
            for b in range(start, self._num_batches):
                yield order[b * bs : (b + 1) * bs]
            return
        self._order_len = len(order)
        rank, world = self.shard
        for b in range(start, self._num_batches):
            idx = shard(order[b * bs : (b + 1) * bs], rank, world)
            if len(idx):  # an evaluation batch smaller than the world size leaves some ranks out
                yield idx

    def shard_weight(self, b: int) -> float:
        """This rank's share of global batch ``b`` times the world size: 1 where the ranks' pieces
        are equal. A mean loss scaled by it makes DDP's average of the ranks' gradients the gradient
        of the mean over the whole batch when the pieces differ (a short trailing batch)."""
        rank, world = self.shard
        n = max(0, min(self.batch_size, self._order_len - b * self.batch_size))
        return piece_size(n, rank, world) * world / n if n else 1.0

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of ``epoch``, beginning at batch index ``start``."""
        if self._fast:
            x, y = self._tensors
            for idx in self.index_batches(epoch, start):
                yield {"input": x[idx], "target": y[idx]}
            return
        stream = getattr(self.source, "stream_batches", None)
        if stream is not None:  # a split read in order, not by index (shards streamed from URLs)
            try:
                yield from stream(self, epoch, start)
            except TrainlabError as err:
                raise _user_error(err) from None
            return
        if self._dl is None:
            self._sampler = _KeyBatches(self)
            self._dl = torch.utils.data.DataLoader(
                _Keyed(self.source, self.transform, self.seed),
                batch_sampler=self._sampler,
                num_workers=self.workers,
                collate_fn=self.collate_fn,
                pin_memory=self.pin_memory,
                persistent_workers=self.workers > 0,
                worker_init_fn=_ignore_sigint if self.workers > 0 else None,
                # Its own generator: otherwise each epoch's iterator draws a seed from torch's
                # global generator and shifts the dropout stream of the model.
                generator=torch.Generator(),
            )
        self._sampler.epoch, self._sampler.start = epoch, start
        # The iterator is referenced from here and from the DataLoader only, never from this
        # frame: close() can then free it even while an unfinished epoch's generator lives on (in
        # a traceback being handled), and a DataLoader iterator stops its workers when it is freed.
        self._it = iter(self._dl)
        try:
            while self._it is not None:
                try:
                    batch = next(self._it)
                except StopIteration:
                    report = getattr(self.source, "report_skips", None)  # files skipped as unreadable
                    if report is not None:
                        report()
                    return
                yield batch
        except TrainlabError as err:
            raise _user_error(err) from None

    def close(self) -> None:
        """Stop worker processes (persistent workers otherwise live until the loader is freed).

        torch has no public call for it: a DataLoader's iterator shuts its workers down when it is
        freed, so the references to the DataLoader and its iterator are dropped here."""
        self._it = None
        self._dl = None


def _user_error(err: TrainlabError) -> TrainlabError:
    """A worker re-raises with its traceback folded into the message; keep the user's line.
    The original traceback goes: its frames hold the iterator, which close() must free.
    Only a worker's message is folded ("...\ntrainlab.errors.DataError: <line>"); a line
    raised here is kept whole (it may begin with the file it names)."""
    lines = str(err).strip().splitlines() or [""]
    message = lines[-1].split(": ", 1)[-1] if len(lines) > 1 else lines[-1]
    err.__traceback__ = None
    return type(err)(message)


def steps_per_epoch(n: int, batch_size: int, drop_singleton: bool = True, world: int = 1) -> int:
    """Batches per epoch of ``n`` samples (a trailing single sample is dropped, see BatchLoader;
    over ``world`` ranks, a trailing batch that cannot give each of them two samples)."""
    batch_size = min(batch_size, n)
    if n == 0:
        return 0
    full, rest = divmod(n, batch_size)
    if world > 1:
        return full + (1 if rest and not (drop_singleton and rest < trailing_minimum(batch_size, world)) else 0)
    return full + (1 if rest and not (drop_singleton and rest == 1 and batch_size > 1) else 0)


# ------------------------------------------------------------------ sharding over torchrun ranks
def shard(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous piece of a global batch (pieces differ by at most one sample;
    contiguous keeps a P x K batch's identities whole on a rank)."""
    return torch.tensor_split(indices, world)[rank]


def piece_size(n: int, rank: int, world: int) -> int:
    """Samples of a global batch of ``n`` that :func:`shard` gives ``rank``."""
    return n // world + (1 if rank < n % world else 0)


def trailing_minimum(batch_size: int, world: int) -> int:
    """The fewest samples a trailing (short) batch must have to be trained on over ``world`` ranks:
    two per rank when batches hold more than one sample per rank (BatchNorm needs two), one per rank
    otherwise. For one process this is the rule of dropping a trailing single sample."""
    return world * (2 if batch_size > world else 1)
