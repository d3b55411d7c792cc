"""D1, D8, D9: stratified splits, training-split statistics, batch sizes."""
from __future__ import annotations

import torch

from trainlab.data import build_data
from trainlab.data.bundle import DataInfo, TensorSource
from trainlab.data.loader import BatchLoader, steps_per_epoch
from trainlab.data.splits import apply_imbalance, stratified_split
from trainlab.data.statistics import channel_stats
from trainlab.recipe import load_recipe


def test_stratified_split_is_disjoint_complete_proportional_and_seeded():
    """D9: train/val/test partition the data with each class in proportion, from the seed."""
    targets = torch.arange(10).repeat_interleave(torch.tensor([50, 60, 70, 80, 90, 100, 110, 120, 130, 140]))
    tr, va, te = stratified_split(targets, 0.2, 0.1, seed=3)
    allidx = torch.cat([tr, va, te])
    assert len(allidx) == len(targets) and len(torch.unique(allidx)) == len(targets)
    assert len(te) == round(0.1 * len(targets)) and len(va) == round(0.2 * len(targets))
    overall = torch.bincount(targets, minlength=10).double() / len(targets)
    for part in (tr, va, te):
        share = torch.bincount(targets[part], minlength=10).double() / len(part)
        assert (share - overall).abs().max() < 0.01
    again = stratified_split(targets, 0.2, 0.1, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((tr, va, te), again))
    other = stratified_split(targets, 0.2, 0.1, seed=4)
    assert not torch.equal(te, other[2])


def test_subset_is_a_stratified_prefix_and_imbalance_is_long_tailed():
    r = load_recipe("digits-cnn", ["data.subset=100"])
    b = build_data(r)
    assert len(b.train) == 100
    counts = torch.bincount(b.train.targets, minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11
    targets = torch.arange(4).repeat_interleave(100)
    kept = apply_imbalance(torch.arange(400), targets, 0.1, 4, seed=0)
    assert torch.bincount(targets[kept], minlength=4).tolist() == [100, 46, 22, 10]


def test_build_data_without_statistics_keeps_the_splits(monkeypatch):
    """D1, D2: statistics=False gives the same splits with mean 0, std 1 and no whitening, and
    never computes the statistics or fits the whitening (evaluate, kfold and schedule use it)."""
    import trainlab.data.statistics as statistics
    import trainlab.data.whiten as whiten

    recipe = load_recipe("digits-mlp", ["data.whiten=zca"])
    full = build_data(recipe)
    assert full.whiten is not None

    def refuse(*args, **kwargs):
        raise AssertionError("statistics computed")

    monkeypatch.setattr(statistics, "channel_stats", refuse)
    monkeypatch.setattr(whiten, "fit_training_whitening", refuse)
    bare = build_data(recipe, statistics=False)
    for a, b in ((full.train, bare.train), (full.val, bare.val), (full.test, bare.test)):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert bare.mean.tolist() == [0.0] and bare.std.tolist() == [1.0] and bare.whiten is None
    assert bare.info == full.info


def test_statistics_of_flat_and_streamed_sources_match_torch():
    """D1: per-feature statistics of flat inputs, and per-channel statistics of a source streamed sample by
    sample (the path of decoded images), equal torch's float64 mean and population std."""
    from trainlab.data.bundle import SampleSource

    class Streamed(SampleSource):  # loaded sample by sample, like decoded image files
        def __init__(self, inputs):
            self.inputs, self.targets = inputs, torch.zeros(len(inputs), dtype=torch.long)

        def load(self, index):
            return self.inputs[index], self.targets[index]

        def subset(self, indices):
            return Streamed(self.inputs[indices])

    g = torch.Generator().manual_seed(0)
    flat = torch.rand(300, 7, generator=g, dtype=torch.float64).float() * 16
    mean, std = channel_stats(TensorSource(flat, torch.zeros(300, dtype=torch.long)), DataInfo((7,), 2, ["a", "b"],
                                                                                               kind="flat"), 0)
    assert torch.allclose(mean.double(), flat.double().mean(0), rtol=1e-6)
    assert torch.allclose(std.double(), flat.double().std(0, unbiased=False), rtol=1e-6)
    images = torch.randint(0, 256, (100, 3, 5, 4), generator=g, dtype=torch.uint8)
    mean, std = channel_stats(Streamed(images), DataInfo((3, 5, 4), 2, ["a", "b"]), 0)
    assert torch.allclose(mean.double(), images.double().mean((0, 2, 3)), rtol=1e-6)
    assert torch.allclose(std.double(), images.double().std((0, 2, 3), unbiased=False), rtol=1e-6)


def test_constant_channel_gets_unit_std():
    info = DataInfo((2, 4, 4), 2, ["a", "b"])
    x = torch.zeros(10, 2, 4, 4)
    x[:, 1] = torch.randn(10, 4, 4)
    mean, std = channel_stats(TensorSource(x, torch.zeros(10, dtype=torch.long)), info, 0)
    assert std[0] == 1.0 and std[1] != 1.0


def test_batch_size_one_full_and_singleton_tail():
    """D8: single-sample SGD, full-batch GD, and no trailing batch of one sample."""
    src = TensorSource(torch.zeros(21, 1), torch.zeros(21, dtype=torch.long))
    assert len(BatchLoader(src, 1, seed=0, shuffle=True)) == 21
    full = BatchLoader(src, 21, seed=0, shuffle=True)
    assert len(full) == 1 and len(next(full.batches(0))["input"]) == 21  # one batch holding the whole split
    assert len(BatchLoader(src, 10, seed=0, shuffle=True)) == 2  # 10 + 10, the 21st sample waits
    assert steps_per_epoch(21, 10, drop_singleton=False) == 3
    r = load_recipe("digits-cnn", ["data.batch_size=full"])
    from trainlab.api import build_components

    t = build_components(r)
    assert len(t.train_loader) == 1 and t.train_loader.batch_size == len(t.bundle.train)
