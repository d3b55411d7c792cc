"""D1, D8 and determinism: training-split statistics, per-epoch shuffling, and the same batches
for any number of loader workers."""
from __future__ import annotations

import multiprocessing

import pytest
import torch
from helpers_data import shapes_recipe

from trainlab.data import build_data
from trainlab.data.batch import build_batch_transforms
from trainlab.data.bundle import TensorSource
from trainlab.data.loader import BatchLoader
from trainlab.data.transforms import build_transforms
from trainlab.errors import DataError
from trainlab.rng import generator
from trainlab.recipe import load_recipe


def test_normalization_statistics_come_from_the_training_split_only():
    """D1: mean/std are the per-channel statistics of the training split (not of all the data)."""
    from trainlab.data.digits import load_digits_arrays

    bundle = build_data(load_recipe(None, []))
    train = bundle.train.inputs.double()
    assert torch.allclose(bundle.mean.double(), train.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bundle.std.double(), train.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)
    everything = torch.from_numpy(load_digits_arrays()[0]).double()
    assert abs(float(everything.mean()) - float(bundle.mean)) > 1e-4
    model_stage = __import__("trainlab.models", fromlist=["build_model"]).build_model(
        load_recipe(None, []), bundle.info, bundle.mean, bundle.std).input
    assert torch.equal(model_stage.mean.flatten(), bundle.mean)  # stored with the model
    off = build_data(load_recipe("digits-cnn", ["data.normalize=false"]))
    assert off.mean.tolist() == [0.0] and off.std.tolist() == [1.0]


def test_order_reshuffles_every_epoch_reproducibly():
    """D8: each epoch has its own permutation of every sample, identical for the same (seed, epoch),
    another for another seed; the batches hold the samples in that order, and starting mid-epoch
    yields exactly the remaining batches (exact resume relies on it)."""
    source = TensorSource(torch.arange(100).float().reshape(100, 1), torch.arange(100) % 3)
    a = BatchLoader(source, 10, seed=3, shuffle=True)
    e0 = torch.cat(list(a.index_batches(0)))
    e1 = torch.cat(list(a.index_batches(1)))
    assert not torch.equal(e0, e1) and sorted(e0.tolist()) == sorted(e1.tolist()) == list(range(100))
    assert torch.equal(e1, torch.cat(list(BatchLoader(source, 10, seed=3, shuffle=True).index_batches(1))))
    assert not torch.equal(e0, torch.cat(list(BatchLoader(source, 10, seed=4, shuffle=True).index_batches(0))))
    # the batches' contents follow the order (the inputs here are the sample indices)
    assert torch.equal(torch.cat([b["input"] for b in a.batches(1)]).flatten().long(), e1)
    tail = torch.cat([b["input"] for b in a.batches(1, start=4)]).flatten().long()
    assert torch.equal(tail, e1[40:])
    assert torch.equal(torch.cat(list(a.index_batches(1, start=4))), e1[40:])


def test_same_batches_for_zero_and_two_workers():
    """D8: per-sample augmentation is seeded by (seed, epoch, index) and batch ops by (seed, epoch,
    batch), so 0 and 2 loader workers give identical batches; the global generator is untouched."""
    recipe = shapes_recipe("data.augment=[random_resized_crop, hflip, color_jitter, mosaic, random_erasing]",
                           count=30, size=24)
    bundle = build_data(recipe)
    tf = build_transforms(recipe.data.augment, bundle.info)
    ops = build_batch_transforms(["mixup", "cutmix", "gridmask"], bundle.info)
    runs = []
    for workers in (0, 2):
        loader = BatchLoader(bundle.train, 8, seed=0, shuffle=True, transform=tf, workers=workers)
        state = torch.get_rng_state()
        batches = []
        for epoch in (0, 1):
            for b, batch in enumerate(loader.batches(epoch)):
                batches.append(ops(batch, generator(0, "batch", epoch, b)))
        loader.close()
        assert torch.equal(torch.get_rng_state(), state)
        runs.append(batches)
    assert len(runs[0]) == len(runs[1]) > 4
    for b0, b2 in zip(*runs):
        assert torch.equal(b0["input"], b2["input"]) and torch.equal(b0["target"], b2["target"])
        for a0, a2 in zip(b0["annotations"], b2["annotations"]):
            assert torch.equal(a0["boxes"], a2["boxes"]) and torch.equal(a0["masks"], a2["masks"])
    epoch0 = [b["input"] for b in runs[0][: len(runs[0]) // 2]]
    epoch1 = [b["input"] for b in runs[0][len(runs[0]) // 2:]]
    assert not all(torch.equal(p, q) for p, q in zip(epoch0, epoch1))  # new augmentation each epoch


def _identity(x, y):
    return x, y


def _fails_on_five(x, y):
    if int(y) == 5:
        raise DataError("sample 5 is broken")
    return x, y


def test_close_stops_the_workers_even_while_an_unfinished_epoch_is_referenced():
    """D8: close() stops the worker processes at once, though the generator of an epoch left
    half way is still referenced, and inside the handler of a worker's error (whose traceback
    holds the epoch's frames), as the trainer closes its loaders; the unfinished epoch then ends."""
    before = set(multiprocessing.active_children())
    source = TensorSource(torch.arange(64.0).reshape(64, 1), torch.arange(64))
    loader = BatchLoader(source, 4, seed=0, shuffle=False, transform=_identity, workers=2)
    batches = loader.batches(0)
    assert next(batches)["target"].tolist() == [0, 1, 2, 3]
    assert len(set(multiprocessing.active_children()) - before) == 2
    loader.close()
    assert not set(multiprocessing.active_children()) - before
    assert list(batches) == []

    loader = BatchLoader(source, 4, seed=0, shuffle=False, transform=_fails_on_five, workers=2)
    with pytest.raises(DataError, match="^sample 5 is broken$"):
        try:
            for _ in loader.batches(0):
                pass
        except DataError:
            loader.close()
            assert not set(multiprocessing.active_children()) - before
            raise
