"""The doctor in context (issue 22, points 2 and 11): advice that another finding or the run's own
configuration already explains is not given as a warning; each remedy is listed once; the plots
show every measured layer and keep their thresholds and scales readable."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import trainlab
from trainlab.doctor.findings import finding, remedy_key, share_remedies
from trainlab.doctor.history import DoctorHistory
from trainlab.doctor.monitors import Doctor, moment_warmup_steps
from trainlab.doctor.report import diagnose_run, doctor_figures
from trainlab.doctor.rules import diagnose
from trainlab.recipe import DoctorConfig
from trainlab.report.figures import range_scale
from trainlab.report.plots import curves_figure

CFG = DoctorConfig()
QUIET = {"run.plots": False, "train.progress": False}


def _history(layer_types=("Linear", "LSTM", "BatchNorm1d", "Linear"), steps=6, ratio=1e-3, first_ratio=None):
    h = DoctorHistory(every=10)
    h.layers = [{"name": f"net.{i}", "type": t, "params": 10, "weight": t == "Linear"}
                for i, t in enumerate(layer_types)]
    h.data = {"train_samples": 1000, "num_classes": 10, "parameters": 5000}
    n = len(h.layers)
    for i in range(steps):
        r = first_ratio if (i == 0 and first_ratio is not None) else ratio
        h.add_step(1 + 10 * i, 1 + i // 2, 2.3 - 0.1 * i, 0.01, 1.0, [1.0 + j for j in range(n)], [r] * n)
    return h


def test_diverged_run_is_not_underfitting_and_each_remedy_is_listed_once(tmp_path):
    """X5/X6/X9: `digits-mlp optim.lr=20` diverges; the doctor says so (lr_too_high, exploding
    gradients) and does not also call the blown-up loss high bias (no "train longer", no "a
    bigger model"); "lower the learning rate" is listed once, with lr_too_high, where it is the
    first remedy."""
    run = trainlab.fit("digits-mlp", quiet=True, **QUIET, **{"optim.lr": 20, "run.dir": str(tmp_path / "r")})
    found, _ = diagnose_run(run)
    codes = [f.code for f in found]
    assert "lr_too_high" in codes and "exploding_gradients" in codes
    assert "underfitting" not in codes and "plateau" not in codes
    keys = [remedy_key(r) for f in found for r in f.remedies]
    assert len(keys) == len(set(keys))
    high = next(f for f in found if f.code == "lr_too_high")
    assert high.remedies[0] == "lower the learning rate 3-10x (optim.lr)"


def test_share_remedies_keeps_each_change_with_the_finding_that_ranks_it_first():
    """X9: the same recipe change suggested by several findings stays with the one that lists it
    earliest in its own list, ties to the more severe (earlier) finding; within one finding a
    rule's specific wording beats the generic one."""
    dead = finding("dead_relu", "error", "dead")  # optim.lr is its 2nd remedy
    high = finding("lr_too_high", "warning", "high")  # optim.lr is its 1st
    under = finding("underfitting", "warning", "under",
                    remedies=("train longer: the loss is still falling (train.epochs)",))
    out = share_remedies([dead, high, under])
    assert "lower the learning rate (optim.lr)" not in out[0].remedies
    assert out[1].remedies[0] == "lower the learning rate 3-10x (optim.lr)"
    assert "clip gradients (train.grad_clip)" in out[1].remedies  # lr_too_high alone suggests clipping here
    assert [r for r in out[2].remedies if "train.epochs" in r] == ["train longer: the loss is still falling (train.epochs)"]
    assert "check the learning rate: neither too small nor too large (optim.lr)" not in out[2].remedies
    assert remedy_key("clip gradients (train.grad_clip=5)") == remedy_key("clip gradients (train.grad_clip)")


def test_overfitting_handled_by_restored_best_weights_is_info_and_a_warning_otherwise():
    """X4: over-fitting whose best weights the run keeps (early stopping restores them) is told at
    info level with what was done; with restore_best off it stays a warning."""
    h = _history()
    val = [1.0, 0.6, 0.5, 0.55, 0.62, 0.7, 0.8]
    ep = [{"epoch": i + 1, "train_loss": 1.0 - 0.1 * i, "val_loss": v} for i, v in enumerate(val)]
    h.data.update(restore_best=True, best_epoch=3, monitor="val_loss", stop_reason="early stop: ...")
    over = next(f for f in diagnose(h, ep, CFG) if f.code == "overfitting")
    assert over.severity == "info"
    assert ("handled: early stopping ended the run at epoch 7, 4 epochs after the validation-loss minimum; the best "
            "checkpoint holds the weights of epoch 3 (best val_loss; its minimum)") in over.message
    assert not any("train.early_stop" in r for r in over.remedies)
    h.data["best_epoch"] = 7  # kept the over-fitted epoch (e.g. a monitor that kept improving)
    assert next(f for f in diagnose(h, ep, CFG) if f.code == "overfitting").severity == "warning"
    h.data.update(best_epoch=3, restore_best=False)
    assert next(f for f in diagnose(h, ep, CFG) if f.code == "overfitting").severity == "warning"


def test_adam_first_steps_are_not_a_too_high_learning_rate():
    """X6: Adam moves every weight by about the LR on its first step whatever the weight's scale;
    the update ratio is judged only after its moment estimates warm up (1/(1 - beta1) steps)."""
    h = _history(steps=2, ratio=0.01, first_ratio=0.5)
    ep = [{"epoch": 1, "train_loss": 2.0}]
    h.data["moment_warmup_steps"] = 10
    assert "lr_too_high" not in {f.code for f in diagnose(h, ep, CFG, done=False)}
    h.data["moment_warmup_steps"] = 0
    h2 = _history(steps=1, first_ratio=0.5)
    h2.data["moment_warmup_steps"] = 0
    assert "lr_too_high" in {f.code for f in diagnose(h2, ep, CFG, done=False)}
    adam = torch.optim.Adam([nn.Parameter(torch.zeros(1))], betas=(0.9, 0.999))
    sgd = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    assert moment_warmup_steps(adam) == 10 and moment_warmup_steps(sgd) == 0


@pytest.mark.parametrize("recipe", ["digits-mlp", "digits-lstm"])
def test_builtin_recipes_as_shipped_end_without_false_alarms(recipe, tmp_path):
    """X4/X6: digits-mlp and digits-lstm, trained as shipped, end with over-fitting at info level
    (early stopping kept the best epoch's weights) and no live lr_too_high from Adam's first steps."""
    run = trainlab.fit(recipe, quiet=True, **QUIET, **{"run.dir": str(tmp_path / "r")})
    found, _ = diagnose_run(run)
    assert [f.code for f in found if f.severity != "info"] == []
    assert "lr_too_high" not in {f.code for f in found}
    over = [f for f in found if f.code == "overfitting"]
    assert all("handled: early stopping ended the run" in f.message for f in over)


def test_plots_show_every_measured_layer_two_distinct_thresholds_and_a_log_loss_axis():
    """X1/X6: the gradient and update-ratio plots draw every layer the doctor measured (an LSTM
    and a BatchNorm layer too, not only conv/linear ones; the layers a finding names always
    labelled), the two update-ratio thresholds differ in colour and say which side is which, and a
    loss spanning orders of magnitude is drawn on a log axis (symlog with zeros)."""
    import matplotlib

    matplotlib.use("Agg")
    types = ("Linear", "LSTM", "BatchNorm1d") + ("Linear",) * 14
    h = _history(types)
    ep = [{"epoch": 1, "train_loss": 2.3, "val_loss": 2.2}, {"epoch": 2, "train_loss": 4e9, "val_loss": 1e10}]
    named = finding("vanishing_gradients", "warning", "x", layers=("net.7",))
    figs = dict(doctor_figures(h, ep, [named], CFG))
    for name in ("doctor-gradients", "doctor-update-ratio"):
        ax = figs[name].axes[0]
        layer_lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
        assert len(layer_lines) == len(types)  # every layer, MAX_LINES of them labelled
        labels = {ln.get_label() for ln in layer_lines}
        assert {"net.0", "net.7", "net.16"} <= labels  # first, last and the named one
    ax = figs["doctor-update-ratio"].axes[0]
    refs = [ln for ln in ax.get_lines() if ln.get_label().startswith("too ")]
    assert len(refs) == 2 and refs[0].get_color() != refs[1].get_color()
    assert refs[0].get_linestyle() != refs[1].get_linestyle()
    curves = figs["doctor-curves"].axes[0]
    assert curves.get_yscale() == "log" and "log" in curves.get_ylabel()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert range_scale(ax, [0.0, 1.0, 1e6]) == " (symlog scale)" and ax.get_yscale() == "symlog"
    fig2, ax2 = plt.subplots()
    assert range_scale(ax2, [0.5, 0.4, 0.3, math.nan]) == "" and ax2.get_yscale() == "linear"
    fig3 = curves_figure(ep, ["train_loss", "val_loss"], "loss", "loss", logy="auto")  # the run's loss.png
    assert fig3.axes[0].get_yscale() == "log"
    for f in [*figs.values(), fig, fig2, fig3]:
        plt.close(f)


class _SharedHead(nn.Module):
    """One conv + norm + ReLU applied to two pyramid levels (RetinaNet's head), and one ReLU module
    applied after two different layers (ResNet's block)."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.act = nn.Conv2d(2, 4, 1), nn.GroupNorm(1, 4), nn.ReLU()
        self.fc1, self.fc2, self.block_act = nn.Linear(4, 4), nn.Linear(4, 4), nn.ReLU()

    def forward(self, a, b):
        levels = [self.act(self.norm(self.conv(x))) for x in (a, b)]
        v = torch.stack([lvl.mean((2, 3)) for lvl in levels]).sum(0)
        return self.block_act(self.fc2(self.block_act(self.fc1(v))))


def test_a_module_shared_by_pyramid_levels_is_one_layer_of_units():
    """X3: a ReLU applied at every pyramid level after the same norm layer is one set of units
    (dead only if never positive at any level); one applied after two different layers (ResNet's
    block ReLU) is two."""
    model = _SharedHead().train()
    doc = Doctor(CFG, quiet=True)
    doc._relus = [(n, m, 0.0) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    doc._activation_names = set()

    class _T:
        pass

    trainer = _T()
    trainer.model = model
    doc._arm(trainer)
    a = torch.randn(3, 2, 4, 4)
    b = -a  # the other level: units that never fire on one level fire on the other
    model(a, b)
    names = [x["name"] for x in doc.history.activations]
    assert names == ["act", "block_act", "block_act#2"]
    alive = (doc._alive["act"] > 0).float().mean().item()
    assert alive >= 0.5 and not math.isnan(alive)
    doc._disarm()


def test_a_task_judged_by_its_score_overfits_when_the_score_falls_not_the_loss():
    """X4/K5: for the embedding task (its validation triplet loss mines unseen identities in other
    batches) over-fitting is judged by validation rank-1: a rising validation loss with a rising
    rank-1 is no finding; rank-1 falling by doctor.overfit_score_drop for overfit_patience epochs is."""
    h = _history()
    h.data["overfit_measure"] = "rank1"
    h.data.update(quality="rank1", quality_words="rank-1 identification")
    rising = [{"epoch": i + 1, "train_loss": 1.0 - 0.1 * i, "val_loss": 0.2 + 0.05 * i, "val_rank1": 0.8 + 0.02 * i}
              for i in range(7)]
    assert "overfitting" not in {f.code for f in diagnose(h, rising, CFG)}
    falling = [dict(r, val_rank1=v) for r, v in zip(rising, [0.8, 0.9, 0.95, 0.92, 0.9, 0.9, 0.91])]
    over = next(f for f in diagnose(h, falling, CFG) if f.code == "overfitting")
    assert over.severity == "warning" and over.evidence["measure"] == "rank1"
    assert over.message.startswith("overfitting from epoch 4: validation rank-1 identification fell from 0.95 "
                                   "(epoch 3, its maximum) to 0.9 (epoch 6, -5.0 points)")
    h.data.update(restore_best=True, best_epoch=3, monitor="val_rank1")
    assert next(f for f in diagnose(h, falling, CFG) if f.code == "overfitting").severity == "info"
