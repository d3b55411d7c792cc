"""T1, T2: the training loop's modes, no_grad evaluation, early stopping and the best snapshot."""
from __future__ import annotations

import json

import pytest
import torch

import trainlab
from trainlab.api import build_components
from trainlab.engine.callbacks import Callback
from trainlab.engine.checkpoint import load_checkpoint, split_prefix
from trainlab.recipe import load_recipe

QUIET = {"run.tensorboard": False, "run.plots": False, "train.progress": False}


class ModeSpy(Callback):
    """Records the model's mode during training steps and during validation forwards."""

    def __init__(self):
        self.train_modes, self.eval_states = [], []

    def on_fit_start(self, trainer):
        def hook(module, inputs, output):
            if not module.training:
                self.eval_states.append(torch.is_grad_enabled())

        trainer.model.register_forward_hook(hook)

    def on_batch_end(self, trainer, batch, outputs, loss):
        self.train_modes.append(trainer.model.training)


def test_train_and_eval_modes_and_no_grad_validation(tmp_path):
    """T1: training batches run in train mode; validation in eval mode under no_grad."""
    spy = ModeSpy()
    run = trainlab.fit("digits-cnn", {**QUIET, "train.epochs": 2, "run.dir": str(tmp_path / "r")},
                       quiet=True, callbacks=[spy])
    assert spy.train_modes and all(spy.train_modes)
    assert spy.eval_states and not any(spy.eval_states)
    epochs = run.epochs()
    assert [r["epoch"] for r in epochs] == [1, 2]
    for key in ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "time_s"):
        assert key in epochs[0]


class ScriptedValLoss(Callback):
    def __init__(self, losses):
        self.losses = list(losses)

    def on_validation_end(self, trainer, metrics):
        metrics["loss"] = self.losses[trainer.state.epoch]


def test_early_stopping_keeps_and_restores_the_best_snapshot(tmp_path):
    """T2: stop after `patience` epochs without improvement; evaluate with the best weights."""
    script = ScriptedValLoss([1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1])
    run = trainlab.fit(
        "digits-cnn",
        {**QUIET, "train.epochs": 8, "train.early_stop.patience": 2, "run.dir": str(tmp_path / "r")},
        quiet=True, callbacks=[script],
    )
    summary = run.summary()
    assert summary["epochs_run"] == 4 and summary["best_epoch"] == 2
    assert "early stop" in summary["stop_reason"]
    assert summary["checkpoint"] == "best"
    _, best_state = load_checkpoint(run.checkpoints / "best.safetensors")
    _, last_state = load_checkpoint(run.checkpoints / "last.safetensors")
    assert best_state["epoch"] == 2 and last_state["epoch"] == 4
    # The test metrics in the summary are those of the best weights, not of the last epoch.
    again = run.evaluate("test", "best", write=False)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])


def test_gradient_clipping_by_norm_bounds_the_update(tmp_path):
    """T1/O7: with train.grad_clip the global gradient norm seen by the optimizer is <= the bound."""
    r = load_recipe("digits-cnn", ["train.grad_clip=0.01", "optim.name=sgd", "optim.lr=1.0",
                                   "optim.weight_decay=0", "train.epochs=1"])
    t = build_components(r)
    before = [p.detach().clone() for p in t.model.parameters()]
    batch = next(t.train_loader.batches(0))
    out = t.model(batch["input"])
    t.task.loss(out, batch).backward()
    raw = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in t.model.parameters() if p.grad is not None]))
    t.optimizer_step()
    step = torch.linalg.vector_norm(torch.stack([(p.detach() - b).norm() for p, b in zip(t.model.parameters(), before)]))
    assert float(raw) > 0.01
    assert float(step) == pytest.approx(0.01, rel=1e-3)  # SGD, lr 1: the step is the clipped gradient
    assert float(t.last_grad_norm) == pytest.approx(float(raw), rel=1e-5)  # the norm before clipping


def test_metrics_jsonl_matches_history(tmp_path):
    run = trainlab.fit("digits-mlp", {**QUIET, "train.epochs": 2, "run.dir": str(tmp_path / "m")}, quiet=True)
    lines = run.metrics_path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["epoch"] == 2
    tensors, state = load_checkpoint(run.checkpoints / "last.safetensors")
    assert state["history"] == [json.loads(line) for line in lines]
    assert set(split_prefix(tensors, "model")) == set(trainlab.open_run(run.dir).load_model("last")[0].state_dict())


def test_eval_loader_keeps_every_sample_in_order():
    """T1: an evaluation split is batched in its own order with every sample (a last batch of one included);
    an absent or empty split has no loader; an in-memory split takes the tensor path (no workers)."""
    from trainlab.data.bundle import TensorSource
    from trainlab.engine.trainer import eval_loader

    recipe = load_recipe("digits-mlp", ["data.workers=2"])
    source = TensorSource(torch.arange(21.0).reshape(21, 1), torch.arange(21))
    loader = eval_loader(source, 10, recipe, torch.device("cpu"))
    batches = list(loader.batches(0))
    assert [len(b["target"]) for b in batches] == [10, 10, 1]
    assert torch.equal(torch.cat([b["target"] for b in batches]), torch.arange(21))
    assert loader._fast and loader._dl is None
    assert eval_loader(None, 10, recipe, torch.device("cpu")) is None
    assert eval_loader(TensorSource(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)), 10, recipe,
                       torch.device("cpu")) is None


class CountingState(Callback):
    name = "counting"

    def __init__(self):
        self.calls = 0

    def state_dict(self):
        self.calls += 1
        return {"calls": self.calls}


def test_checkpoint_snapshots_are_taken_once():
    """T3: a checkpoint asks each callback for its state once; the best weights (EMA-averaged) come back as CPU
    copies that later training does not change, and the model gets its own weights back."""
    from trainlab.engine.callbacks import unprinted_events

    counting = CountingState()
    trainer = build_components(load_recipe("digits-mlp", {**QUIET, "model.width": 8, "model.depth": 1,
                                                          "train.ema": {"decay": 0.5}}), [counting])
    _, state = trainer.checkpoint_state()
    assert counting.calls == 1 and state["callbacks"]["counting"] == {"calls": 1}
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)
    trainer.ema.update(trainer.model)
    own = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    averaged = trainer.ema.averaged()
    tensors, _ = trainer.eval_weights_state()
    weights = split_prefix(tensors, "model")
    assert weights.keys() == own.keys()
    for k, v in weights.items():
        expected = averaged.get(k, own[k])  # parameters averaged, buffers as they are
        assert v.device.type == "cpu" and v.is_contiguous() and torch.equal(v, expected), k
        assert v.untyped_storage().data_ptr() != trainer.model.state_dict()[k].untyped_storage().data_ptr()
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, own[k]), k
    trainer.log_event("note", "first")
    trainer.log_event("note", "second")
    assert unprinted_events(trainer) == ["  note: first", "  note: second"] and unprinted_events(trainer) == []
    trainer.close()
