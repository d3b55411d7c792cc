"""Issue 14: a task owns what differs between problems; the trainer keeps what is common.

Each seam is exercised by a task written here that overrides it, run through the real Trainer:
collate of nested structures, a recursive move to the device, a sampler hook, a step whose model
takes the targets, and metric directions declared by the task rather than guessed from names.
"""
from __future__ import annotations

import math

import pytest
import torch
from conftest import FAST

import trainlab
from trainlab.api import build_components
from trainlab.data import build_data
from trainlab.data.samples import pad_stack
from trainlab.device import to_device
from trainlab.engine.trainer import Trainer
from trainlab.errors import RecipeError
from trainlab.models import build_model
from trainlab.recipe import load_recipe
from trainlab.tasks import build_task
from trainlab.tasks.classification import ClassificationTask

TINY = {"train.epochs": 1, "run.tensorboard": False, "run.plots": False, "train.progress": False,
        "train.threads": 1, "data.subset": 128, "model.width": 4}


def test_pad_stack_batches_images_of_different_sizes():
    """K3/issue 14: images of several sizes form one batch: each at the top left, padding filled."""
    a = torch.ones(3, 2, 3)
    b = torch.full((3, 4, 2), 2.0)
    out = pad_stack([a, b], fill=-1)
    assert out.shape == (2, 3, 4, 3)
    assert torch.equal(out[0, :, :2, :3], a) and bool((out[0, :, 2:, :] == -1).all())
    assert torch.equal(out[1, :, :4, :2], b) and bool((out[1, :, :, 2:] == -1).all())
    same = [torch.zeros(2, 2), torch.ones(2, 2)]
    assert torch.equal(pad_stack(same, 0), torch.stack(same))


def test_to_device_walks_nested_batches():
    """Issue 14: per-image lists of box dicts and dicts of several targets move with the batch."""
    batch = {"input": torch.zeros(2, 3), "target": {"cls": torch.zeros(2), "reg": torch.ones(2, 1)},
             "annotations": [{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1)}, {"boxes": torch.zeros(0, 4)}],
             "pair": (torch.zeros(1), torch.ones(1)), "name": "kept"}
    moved = to_device(batch, torch.device("meta"))
    assert moved["input"].is_meta and moved["target"]["reg"].is_meta
    assert all(a["boxes"].is_meta for a in moved["annotations"]) and moved["annotations"][0]["labels"].is_meta
    assert isinstance(moved["pair"], tuple) and moved["pair"][1].is_meta and moved["name"] == "kept"
    assert to_device(batch, torch.device("cpu")) is batch  # the loader's tensors are already there


class _ReversedOrder(ClassificationTask):
    """A sampler hook: visits the samples in reverse, shuffled in blocks of 8 by (seed, epoch)."""

    calls: list = []

    def order(self, targets, seed, epoch, shuffle):
        n = len(targets)
        self.calls.append((n, seed, epoch))
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        blocks = torch.arange(n).flip(0).split(8)
        return torch.cat([blocks[i] for i in torch.randperm(len(blocks), generator=g).tolist()])


class _TargetsIntoModel(ClassificationTask):
    """A step whose model takes the targets in training (as a detector does)."""

    def step(self, model, batch):
        outputs = model(batch["input"])
        if model.training:
            seen.append(batch["target"].clone())
        return outputs, self.loss(outputs, batch)

    def collate(self, samples):
        xs, ys = zip(*samples)
        return {"input": torch.stack(list(xs)), "target": torch.stack(list(ys)),
                "meta": [{"index": i} for i in range(len(xs))]}


seen: list[torch.Tensor] = []


def _trainer(task_cls, overrides):
    recipe = load_recipe("digits-mlp", {**TINY, **overrides})
    base = build_components(recipe)
    task = task_cls(recipe, base.bundle.info)
    model = build_model(recipe, base.bundle.info, base.bundle.mean, base.bundle.std)
    return Trainer(recipe, base.bundle, task, model)


def test_sampler_hook_decides_the_batches_and_resume_sees_the_same():
    """D8/issue 14: the task's order() draws every batch, from (seed, epoch) only."""
    trainer = _trainer(_ReversedOrder, {"data.batch_size": 16, "data.augment": ["noise"]})
    loader = trainer.train_loader
    order = _ReversedOrder.order(trainer.task, loader.source.targets, 0, 1, True)
    batches = [idx.tolist() for idx in loader.index_batches(1)]
    assert batches[0] == order[:16].tolist() and batches[1] == order[16:32].tolist()
    assert [idx.tolist() for idx in loader.index_batches(1, start=1)] == batches[1:]
    targets = [b["target"] for b in loader.batches(1)]
    assert torch.equal(targets[0], loader.source.targets[order[:16]])


def test_step_hook_receives_targets_and_custom_collate_reaches_it():
    """Issue 14: a model may take the targets in training; the task's collate forms the batch."""
    seen.clear()
    trainer = _trainer(_TargetsIntoModel, {"data.batch_size": 32, "data.augment": ["noise"]})
    trainer.fit()
    assert len(seen) == len(trainer.train_loader)
    assert sum(len(t) for t in seen) == len(trainer.train_loader.source) - (len(trainer.train_loader.source) % 32 == 1)
    assert trainer.state.history[-1]["val_accuracy"] > 0


def test_metric_directions_are_declared_not_guessed():
    """Issue 14: val_perplexity is lower-is-better (the name-based guess took it for a score)."""
    seq = build_task(load_recipe("char-rnn"), build_data(load_recipe("char-rnn"), statistics=False).info)
    assert seq.metric_mode("val_perplexity") == "min" and seq.metric_mode("val_bits_per_char") == "min"
    assert seq.metric_mode("train_accuracy") == "max" and seq.metric_mode("val_loss") == "min"
    assert seq.metric_mode("val_perplexity", "max") == "max"  # an explicit mode wins
    with pytest.raises(RecipeError, match="declares no direction"):
        seq.metric_mode("val_sharpness")


def test_early_stopping_on_perplexity_keeps_the_lowest(tmp_path):
    """T2/K6: the best checkpoint of a Char-RNN watched on val_perplexity is its lowest epoch."""
    run = trainlab.fit("char-rnn", {"train.epochs": 3, "run.dir": str(tmp_path / "r"), "run.tensorboard": False,
                                    "run.plots": False, "train.progress": False, "model.width": 32, "data.subset": 64,
                                    "train.early_stop": {"monitor": "val_perplexity", "patience": 5}},
                       quiet=True)
    epochs = run.epochs()
    best = min(epochs, key=lambda r: r["val_perplexity"])
    assert run.summary()["best_epoch"] == best["epoch"]
    assert math.isclose(run.summary()["best_value"], best["val_perplexity"])


def test_trainer_names_no_task():
    """Issue 14: the engine, the report and the doctor do not mention a task or its metrics."""
    from pathlib import Path

    src = Path(trainlab.__file__).parent
    for folder in ("engine", "report", "doctor"):
        for path in (src / folder).glob("*.py"):
            text = path.read_text()
            for word in ("ClassificationTask", "SegmentationTask", "SequenceTask", "val_accuracy\"", "train_acc\""):
                assert word not in text, (path, word)


@pytest.mark.parametrize("fast", [True])
def test_classification_table_and_results_unchanged(tmp_path, capsys, fast):
    """K1/T1: the digits run prints the task's columns and keeps its accuracy."""
    run = trainlab.fit("digits-cnn", [*FAST, f"run.dir={tmp_path / 'd'}"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if not line.startswith("report: ")]  # the live report.html (V5)
    assert lines[0].split() == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s"]
    assert run.summary()["test"]["accuracy"] > 0.9


def test_class_weights_must_match_the_classes():
    """L1/L4: loss.class_weights gives one weight per class, for classification too (one line)."""
    r = load_recipe("digits-mlp", {"loss.class_weights": [1.0, 2.0]})
    with pytest.raises(RecipeError, match=r"loss.class_weights: 2 weights for 10 classes \(0, 1"):
        build_task(r, build_data(r, statistics=False).info)


class _GalleryProbe(ClassificationTask):
    """Evaluation over two splits, as metric learning does: the training split is the gallery
    (class means of the model's outputs), the evaluated split holds the probes."""

    def eval_splits(self, split):
        return ("train", split)

    @torch.no_grad()
    def evaluate(self, model, loaders, split, device, amp):
        model.eval()
        feats = {name: [] for name in loaders}
        for name, loader in loaders.items():
            for batch in loader.batches(0):
                feats[name].append((model(batch["input"]), batch["target"]))
        gx, gy = (torch.cat(t) for t in zip(*feats["train"]))
        px, py = (torch.cat(t) for t in zip(*feats[split]))
        means = torch.stack([gx[gy == c].mean(0) for c in range(int(gy.max()) + 1)])
        nearest = torch.cdist(px, means).argmin(1)
        return {"loss": 0.0, "accuracy": float((nearest == py).double().mean()), "n": len(py),
                "gallery": len(gy)}


def test_evaluation_reads_every_split_the_task_names():
    """Issue 14: evaluation may read several splits (a gallery and its probes): the trainer hands
    the task an unaugmented loader of each, the training split included, in a fixed order."""
    trainer = _trainer(_GalleryProbe, {"data.batch_size": 32, "data.augment": ["noise"]})
    m = trainer.evaluate("val")
    assert m["gallery"] == len(trainer.bundle.train) and m["n"] == len(trainer.bundle.val)
    gallery = trainer.split_loader("train")
    assert gallery is not trainer.train_loader and gallery.transform is None and not gallery.shuffle
    assert trainer.evaluate("val") == m  # same gallery, same order: the same answer
