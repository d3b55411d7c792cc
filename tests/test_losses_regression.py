"""L1: the regression and binary losses of the registry (mse, mae, smooth_l1, bce), each checked
against its formula written out here, and usable by any task (a classifier trains with bce)."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import FAST

import trainlab
from trainlab.cli import main
from trainlab.data.bundle import DataInfo
from trainlab.errors import RecipeError
from trainlab.recipe import LossConfig
from trainlab.registry import LOSSES

INFO = DataInfo((1, 8, 8), 3, ["a", "b", "c"])


def build(name: str, **cfg):
    return LOSSES.get(name).fn(LossConfig(name=name, **cfg), INFO)


def data(seed: int = 0, shape=(6, 3)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 3, torch.randn(*shape, generator=g) * 3


def test_the_four_losses_are_registered_beside_cross_entropy():
    """L1: mse, mae, smooth_l1 and bce are loss names, as cross_entropy is."""
    assert {"cross_entropy", "mse", "mae", "smooth_l1", "bce"} <= set(LOSSES.names())


def test_mse_and_mae_follow_their_formulas():
    """L1: mse = mean((x − y)²), mae = mean(|x − y|) over every element."""
    x, y = data()
    n = x.numel()
    mse = sum((a - b) ** 2 for a, b in zip(x.flatten().tolist(), y.flatten().tolist())) / n
    mae = sum(abs(a - b) for a, b in zip(x.flatten().tolist(), y.flatten().tolist())) / n
    assert float(build("mse")(x, y)) == pytest.approx(mse, rel=1e-6)
    assert float(build("mae")(x, y)) == pytest.approx(mae, rel=1e-6)
    # an (N,) target of (N, 1) outputs (a one-value regression head)
    assert float(build("mse")(x[:, :1], y[:, 0])) == pytest.approx(float(((x[:, 0] - y[:, 0]) ** 2).mean()), rel=1e-6)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 0.0])
def test_smooth_l1_is_quadratic_below_beta_and_linear_above(beta):
    """L1: smooth_l1 = mean(0.5 d²/β if |d| < β else |d| − 0.5 β); β = 0 is the absolute error."""
    x, y = data(1)
    terms = []
    for a, b in zip(x.flatten().tolist(), y.flatten().tolist()):
        d = abs(a - b)
        terms.append(0.5 * d * d / beta if d < beta else d - 0.5 * beta)
    assert float(build("smooth_l1", beta=beta)(x, y)) == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    # both branches were exercised
    d = (x - y).abs()
    assert beta == 0.0 or (bool((d < beta).any()) and bool((d >= beta).any()))


def bce_formula(x: float, y: float, p: float = 1.0) -> float:
    s = 1 / (1 + math.exp(-x))
    return -(p * y * math.log(s) + (1 - y) * math.log(1 - s))


def test_bce_with_logits_and_pos_weight_follows_its_formula():
    """L1: bce = mean(−[p·y·log σ(x) + (1 − y)·log(1 − σ(x))]) with pos_weight p (one, or per column)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, generator=g) * 2
    y = (torch.rand(8, 3, generator=g) > 0.5).float()
    y[0, 0] = 0.3  # a soft label
    pairs = list(zip(x.flatten().tolist(), y.flatten().tolist()))
    plain = sum(bce_formula(a, b) for a, b in pairs) / len(pairs)
    weighted = sum(bce_formula(a, b, 3.0) for a, b in pairs) / len(pairs)
    assert float(build("bce")(x, y)) == pytest.approx(plain, rel=1e-6)
    assert float(build("bce", pos_weight=3.0)(x, y)) == pytest.approx(weighted, rel=1e-6)
    cols = [1.0, 2.0, 5.0]
    per_col = sum(bce_formula(x[i, j].item(), y[i, j].item(), cols[j]) for i in range(8) for j in range(3)) / 24
    assert float(build("bce", pos_weight=cols)(x, y)) == pytest.approx(per_col, rel=1e-6)
    # a binary head: (N, 1) logits and (N,) 0/1 targets
    assert float(build("bce", pos_weight=3.0)(x[:, :1], y[:, 1])) == pytest.approx(
        sum(bce_formula(a, b, 3.0) for a, b in zip(x[:, 0].tolist(), y[:, 1].tolist())) / 8, rel=1e-6)
    # confident logits stay finite (computed from logits, not from σ)
    assert math.isfinite(float(build("bce")(torch.tensor([[200.0, -200.0]]), torch.tensor([[0.0, 1.0]]))))
    with pytest.raises(RecipeError, match="pos_weight: 2 values for 3 outputs"):  # refused when built
        build("bce", pos_weight=[1.0, 2.0])
    two = LOSSES.get("bce").fn(LossConfig(name="bce", pos_weight=[1.0, 2.0]), DataInfo((1, 8, 8), 2, ["a", "b"]))
    with pytest.raises(ValueError, match="pos_weight"):  # outputs that are not the declared classes
        two(x, y)


def test_class_indices_become_one_hot_rows_and_ignored_targets_count_nothing():
    """L1: a classifier's (N, C) scores against class indices: bce and mse see one-hot rows; the
    ignore_index positions add nothing (per pixel too)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=g)
    t = torch.tensor([0, 2, 1, 1, 0])
    onehot = torch.eye(3)[t]
    ref = sum(bce_formula(a, b) for a, b in zip(x.flatten().tolist(), onehot.flatten().tolist())) / 15
    assert float(build("bce")(x, t)) == pytest.approx(ref, rel=1e-6)
    assert float(build("mse")(x, t)) == pytest.approx(float(((x - onehot) ** 2).mean()), rel=1e-6)
    scores = torch.randn(2, 3, 4, 4, generator=g)
    mask = torch.randint(0, 3, (2, 4, 4), generator=g)
    mask[0, 0, :] = 255
    counted = mask != 255
    dense = torch.eye(3)[mask.clamp(max=2)].permute(0, 3, 1, 2)
    ref = (((scores - dense) ** 2) * counted[:, None]).sum() / (3 * counted.sum())
    assert float(build("mse", ignore_index=255)(scores, mask)) == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.slow
def test_a_classifier_trains_with_bce(tmp_path):
    """L1: the registered losses are usable by any task: digits classification with loss.name=bce
    (one-vs-rest sigmoid terms) learns (chance is 0.1)."""
    run = trainlab.fit("digits-mlp", [*FAST, "train.epochs=3", "data.subset=512", "loss.name=bce",
                                      "doctor.enabled=false", f"run.dir={tmp_path / 'r'}"], quiet=True)
    rec = run.epochs()[-1]
    assert math.isfinite(rec["train_loss"]) and rec["val_accuracy"] > 0.5


def test_a_non_positive_pos_weight_is_one_line_through_the_cli(tmp_path, capsys):
    """L1: loss.pos_weight must be positive; the CLI says which field and exits 2."""
    assert main(["fit", "digits-cnn", "loss.name=bce", "loss.pos_weight=0", f"run.dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "loss.pos_weight" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_pos_weight_of_the_wrong_length_is_one_line_through_the_cli(tmp_path, capsys):
    """L1: loss.pos_weight with one value per output must have as many values as the classifier has
    classes; otherwise one line and exit 2 before any run folder is written (not a traceback in
    the first training step)."""
    assert main(["fit", "digits-mlp", "loss.name=bce", "loss.pos_weight=[1, 2]", f"run.dir={tmp_path / 'r'}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "loss.pos_weight: 2 values for 10 outputs" in err[0], err
    assert not (tmp_path / "r").exists()
