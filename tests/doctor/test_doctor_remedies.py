"""X9: the doctor's automatic remedies (doctor.auto=true), each checked on a real run."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import trainlab
from trainlab.engine.callbacks import Callback
from trainlab.engine.checkpoint import load_checkpoint, split_prefix

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
FAST = {"run.tensorboard": False, "run.plots": False, "train.progress": False}


def events(run, name=None):
    return [r for r in run.metrics() if "event" in r and (name is None or r["event"] == name)]


def weights(path):
    tensors, _ = load_checkpoint(path)
    return split_prefix(tensors, "model")


class Poison(Callback):
    """Writes a NaN into the first layer after step ``at`` and remembers the weights the doctor
    should roll back to (those after step ``snap``) and the ones it did restore."""

    def __init__(self, at: int, snap: int):
        self.at, self.snap = at, snap
        self.saved = self.restored = None

    def on_batch_end(self, trainer, batch, outputs, loss):
        if trainer.state.step == self.snap:
            self.saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        if trainer.state.step == self.at:
            with torch.no_grad():
                trainer.model.net[1].weight[0, 0] = math.nan

    def on_after_backward(self, trainer):
        if trainer.state.step == self.at + 1:  # the step after the NaN one, before its update
            # Parameters only: this step's forward has already moved the BatchNorm running statistics.
            self.restored = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def test_nan_rolls_back_to_the_last_good_state_halves_the_lr_and_goes_on(tmp_path):
    """X9: on a NaN loss, restore the in-memory state of the last healthy snapshot, halve the LR,
    continue; the run ends healthy and the action is logged in metrics.jsonl and report.md."""
    poison = Poison(at=15, snap=10)
    run = trainlab.fit("digits-mlp", callbacks=[poison], quiet=True, **FAST, **{
        "run.dir": str(tmp_path / "r"), "train.epochs": 3, "doctor.auto": True, "doctor.every": 1,
        "doctor.snapshot_every": 5})
    [rollback] = events(run, "doctor_rollback")
    assert rollback["step"] == 16 and rollback["to_step"] == 10  # NaN loss at step 16; snapshots at 5 and 10
    assert rollback["lr"] == pytest.approx(0.05 * 0.5)
    assert "base lr 0.05 -> 0.025" in rollback["message"]
    for k, v in poison.restored.items():  # the weights exactly as after step 10
        assert torch.equal(v, poison.saved[k]), k
    last = weights(run.dir / "checkpoints" / "last.safetensors")
    assert all(torch.isfinite(v).all() for v in last.values())
    assert run.summary()["val"]["accuracy"] > 0.9
    assert all(r["lr"] == pytest.approx(0.025) for r in run.epochs())  # digits-mlp: step schedule, 15 epochs
    doctor = json.loads((run.dir / "doctor.json").read_text())
    assert doctor["history"]["actions"][0]["action"] == "rollback"
    nan = next(f for f in doctor["findings"] if f["code"] == "nan_loss")
    assert nan["step"] == 16 and "the doctor rolled back 1 time" in nan["message"]
    assert "doctor_rollback" in run.report_path.read_text()


def test_rollbacks_are_limited_then_the_run_stops_with_good_weights(tmp_path):
    """X9: after doctor.max_rollbacks the doctor restores the last good state and stops the run."""
    run = trainlab.fit(str(SCENARIOS / "lr-nan.yaml"), quiet=True, **FAST, **{
        "run.dir": str(tmp_path / "r"), "doctor.auto": True, "doctor.max_rollbacks": 1})
    rollbacks, stops = events(run, "doctor_rollback"), events(run, "doctor_stop")
    assert len(rollbacks) == 1 and rollbacks[0]["lr"] == pytest.approx(50.0)
    assert len(stops) == 1 and run.summary()["stop_reason"].startswith("doctor: the loss is still non-finite")
    last = weights(run.dir / "checkpoints" / "last.safetensors")
    assert all(torch.isfinite(v).all() for v in last.values())


def test_overfitting_stops_and_restores_the_best_weights(tmp_path):
    """X9: once overfitting is established the doctor restores the best epoch's weights and stops."""
    run = trainlab.fit(str(SCENARIOS / "overfitting.yaml"), quiet=True, **FAST, **{
        "run.dir": str(tmp_path / "r"), "doctor.auto": True})
    [stop] = events(run, "doctor_stop")
    summary = run.summary()
    assert stop["code"] == "overfitting" and summary["stop_reason"].startswith("doctor: overfitting from epoch")
    assert summary["epochs_run"] < 12
    epochs = run.epochs()
    best = min(epochs, key=lambda r: r["val_loss"])["epoch"]
    assert stop["restored_epoch"] == best == summary["best_epoch"]
    last = weights(run.dir / "checkpoints" / "last.safetensors")
    best_w = weights(run.dir / "checkpoints" / "best.safetensors")
    assert all(torch.equal(last[k], best_w[k]) for k in best_w)


def test_plateau_under_adam_switches_to_sgd(tmp_path):
    """X9: on a plateau under Adam the doctor switches to SGD with momentum 0.9 and 10x the base LR
    (O5, the notes' Adam -> SGD) and the run goes on with SGD."""
    run = trainlab.fit(str(SCENARIOS / "deep-sigmoid.yaml"), quiet=True, **FAST, **{
        "run.dir": str(tmp_path / "r"), "doctor.auto": True})
    [switch] = events(run, "doctor_switch_optimizer")
    assert switch["step"] == 80 and switch["to"] == "sgd" and switch["lr"] == pytest.approx(0.01)
    assert [r["optimizer"] for r in run.epochs()] == ["adam"] * 4 + ["sgd"] * 2
    assert events(run, "doctor_lr_decay") == []


def test_plateau_decays_the_lr(tmp_path):
    """X9: on a plateau (no Adam switch) the doctor multiplies the base LR by doctor.plateau_lr_factor."""
    run = trainlab.fit(str(SCENARIOS / "deep-sigmoid.yaml"), quiet=True, **FAST, **{
        "run.dir": str(tmp_path / "r"), "doctor.auto": True, "doctor.switch_to_sgd": False, "train.epochs": 5})
    [decay] = events(run, "doctor_lr_decay")
    assert decay["step"] == 80 and decay["lr"] == pytest.approx(1e-4)
    assert [r["lr"] for r in run.epochs()] == pytest.approx([1e-3] * 4 + [1e-4])
    actions = json.loads((run.dir / "doctor.json").read_text())["history"]["actions"]
    assert [a["action"] for a in actions] == ["lr_decay"]
