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
    # The history's action carries what the logged event carries (one helper records both).
    assert doctor["history"]["actions"][0] == {"action": "rollback", "step": 16, "epoch": rollback["epoch"],
                                               "code": "nan_loss", "to_step": 10, "lr": rollback["lr"],
                                               "cause": "loss"}
    nan = next(f for f in doctor["findings"] if f["code"] == "nan_loss")
    assert nan["step"] == 16 and "the doctor rolled back 1 time" in nan["message"]
    assert "doctor_rollback" in run.report_path.read_text()


def test_rollbacks_are_limited_then_the_run_stops_with_good_weights(tmp_path):
    """X9: after doctor.max_rollbacks the doctor restores the last good state and stops the run."""
    run = trainlab.fit(str(SCENARIOS / "lr-nan.yaml"), quiet=True, **FAST, **{
        "run.dir": str(tmp_path / "r"), "doctor.auto": True, "doctor.max_rollbacks": 1})
    rollbacks, stops = events(run, "doctor_rollback"), events(run, "doctor_stop")
    assert len(rollbacks) == 1 and rollbacks[0]["lr"] == pytest.approx(50.0)
    # The step after the rollback overflows the weights at the end of epoch 2: caught before validation.
    reason = run.summary()["stop_reason"]
    assert len(stops) == 1 and reason.startswith("doctor: the weights are still non-finite (after the last step")
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


def finite_weights(path) -> bool:
    return all(torch.isfinite(v).all() for v in weights(path).values() if v.is_floating_point())


def test_nan_weights_at_an_epoch_end_are_rolled_back_before_validation_and_checkpoints(tmp_path):
    """X9: a NaN loss inside an accumulation group poisons the weights without a NaN loss at a step
    boundary; the doctor rolls back (counted) after the epoch's last step, so validation sees the
    restored weights and neither checkpoint holds NaN while rollbacks remain."""
    run = trainlab.fit("digits-mlp", quiet=True, **FAST, **{
        "run.dir": str(tmp_path / "r"), "train.epochs": 2, "optim.lr": 1e6, "train.accumulate": 3,
        "doctor.auto": True, "data.normalize": False})
    rollbacks = events(run, "doctor_rollback")
    assert len(rollbacks) <= 3 and events(run, "doctor_stop") == []
    at_end = [r for r in rollbacks if r.get("cause") == "weights"]
    assert at_end and "weights non-finite after the last step of epoch 2" in at_end[0]["message"]
    last_epoch = run.epochs()[-1]
    assert last_epoch["epoch"] == 2 and math.isfinite(last_epoch["val_loss"])  # validated after the rollback
    for name in ("last", "best"):
        assert finite_weights(run.dir / "checkpoints" / f"{name}.safetensors"), name


class PoisonAfterValidation(Callback):
    """Writes a NaN into the weights at the end of epoch ``at``, after validation (user callbacks
    run before the doctor), and keeps the weights the epoch before ended with."""

    def __init__(self, at: int):
        self.at, self.before = at, None

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.at - 1:
            self.before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        if record["epoch"] == self.at:
            with torch.no_grad():
                trainer.model.net[1].weight[0, 0] = math.nan


def test_weights_poisoned_after_validation_do_not_become_the_best_checkpoint(tmp_path):
    """X9: weights found NaN only after validation are still rolled back before the Checkpointer;
    the epoch's record is marked rolled_back and the epoch no longer counts as best."""
    poison = PoisonAfterValidation(at=2)
    run = trainlab.fit("digits-mlp", callbacks=[poison], quiet=True, **FAST, **{
        "run.dir": str(tmp_path / "r"), "train.epochs": 2, "train.early_stop": None, "doctor.auto": True})
    [rollback] = events(run, "doctor_rollback")
    assert rollback["cause"] == "weights" and "at the end of epoch 2" in rollback["message"]
    records = run.epochs()
    assert records[1].get("rolled_back") is True and records[1]["val_loss"] < records[0]["val_loss"]
    assert run.summary()["best_epoch"] == 1
    best = weights(run.dir / "checkpoints" / "best.safetensors")
    assert all(torch.equal(best[k], poison.before[k]) for k in best)
    assert finite_weights(run.dir / "checkpoints" / "last.safetensors")


def test_rollback_after_optim_switch_keeps_the_new_optimizer_and_reports_the_live_lr(tmp_path):
    """X9 (with O5): optim.switch replaces Adam by SGD; a later rollback restores the SGD state taken
    at the switch, not the Adam one from before it, and quotes the live base LR."""
    run = trainlab.fit("digits-mlp", quiet=True, **FAST, **{
        "run.dir": str(tmp_path / "r"), "train.epochs": 3, "optim.name": "adam", "optim.lr": 0.003,
        "optim.nesterov": False, "optim.switch": {"at_epoch": 2, "lr": 1e25}, "doctor.auto": True,
        "doctor.every": 1})
    [switch] = events(run, "optimizer_switch")
    rollbacks = events(run, "doctor_rollback")
    assert rollbacks and all(r["step"] > switch["step"] for r in rollbacks)
    assert "base lr 1e25 -> 5e24" in rollbacks[0]["message"] and rollbacks[0]["lr"] == pytest.approx(5e24)
    assert [r["optimizer"] for r in run.epochs()][1:] == ["sgd"] * (len(run.epochs()) - 1)
    assert run.epochs()[0]["optimizer"] == "adam"
