"""L2: focal loss, FL(p_t) = −α_t (1 − p_t)^γ log p_t (the notes S1 Q31), sigmoid and softmax forms."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import trainlab
from trainlab.losses import sigmoid_focal_loss, softmax_focal_loss
from trainlab.recipe import load_recipe
from trainlab.registry import LOSSES

tv_ops = pytest.importorskip("torchvision.ops")

QUIET = {"run.tensorboard": False, "run.plots": False, "train.progress": False}


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sigmoid_focal_loss_equals_torchvision(gamma, alpha, reduction):
    """L2: sigmoid_focal_loss gives torchvision.ops.sigmoid_focal_loss's values (alpha None ↔ -1),
    hard and soft targets, float64 and float32."""
    gen = torch.Generator().manual_seed(int(gamma * 10) + (0 if alpha is None else int(alpha * 100)))
    logits = torch.randn(64, 5, generator=gen, dtype=torch.float64) * 4
    hard = (torch.rand(64, 5, generator=gen) < 0.3).double()
    soft = torch.rand(64, 5, generator=gen, dtype=torch.float64)
    tv_alpha = -1 if alpha is None else alpha
    for target in (hard, soft):
        ours = sigmoid_focal_loss(logits, target, gamma, alpha, reduction)
        ref = tv_ops.sigmoid_focal_loss(logits, target, alpha=tv_alpha, gamma=gamma, reduction=reduction)
        assert ours.shape == ref.shape and ours.dtype == torch.float64
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-14)
        ours32 = sigmoid_focal_loss(logits.float(), target.float(), gamma=gamma, alpha=alpha, reduction=reduction)
        ref32 = tv_ops.sigmoid_focal_loss(logits.float(), target.float(), alpha=tv_alpha, gamma=gamma,
                                          reduction=reduction)
        torch.testing.assert_close(ours32, ref32, rtol=1e-5, atol=1e-7)


def test_sigmoid_focal_loss_refuses_bad_arguments():
    """L2: alpha outside [0, 1], gamma < 0, an unknown reduction and mismatched shapes raise."""
    x, t = torch.zeros(3, 2), torch.ones(3, 2)
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss(x, t, alpha=-1)
    with pytest.raises(ValueError, match="gamma"):
        sigmoid_focal_loss(x, t, gamma=-0.5)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(x, t, reduction="avg")
    with pytest.raises(ValueError, match="shape"):
        sigmoid_focal_loss(x, t[:, :1])


def _cross_entropy_cases():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, 6, (32,), generator=gen)
    soft = torch.softmax(torch.randn(32, 6, generator=gen, dtype=torch.float64), 1)
    w = torch.rand(6, generator=gen, dtype=torch.float64) + 0.2
    xs = torch.randn(2, 4, 5, 3, generator=gen, dtype=torch.float64) * 3
    ys = torch.randint(0, 4, (2, 5, 3), generator=gen)
    ys[0, :2] = 255  # unlabelled pixels
    ws = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    return {
        "indices": (x, y, {}),
        "weights": (x, y, {"weight": w}),
        "smoothing": (x, y, {"label_smoothing": 0.1}),
        "weights+smoothing": (x, y, {"weight": w, "label_smoothing": 0.2}),
        "soft": (x, soft, {}),
        "soft+weights+smoothing": (x, soft, {"weight": w, "label_smoothing": 0.1}),
        "pixels+ignore+weights": (xs, ys, {"weight": ws, "ignore_index": 255}),
        "pixels+ignore+smoothing": (xs, ys, {"ignore_index": 255, "label_smoothing": 0.1}),
    }


@pytest.mark.parametrize("case", list(_cross_entropy_cases()))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_focal_loss_with_gamma_0_is_cross_entropy(case, reduction):
    """L2: with γ = 0 and α None the softmax focal loss is F.cross_entropy: class indices, soft
    targets, class weights, label smoothing, per pixel with an ignored value; every reduction."""
    x, y, kw = _cross_entropy_cases()[case]
    ours = softmax_focal_loss(x, y, gamma=0.0, alpha=None, class_weights=kw.get("weight"),
                              ignore_index=kw.get("ignore_index"), label_smoothing=kw.get("label_smoothing", 0.0),
                              reduction=reduction)
    ref = F.cross_entropy(x, y, reduction=reduction, **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    # α scales every term
    scaled = softmax_focal_loss(x, y, gamma=0.0, alpha=0.25, class_weights=kw.get("weight"),
                                ignore_index=kw.get("ignore_index"), label_smoothing=kw.get("label_smoothing", 0.0),
                                reduction=reduction)
    torch.testing.assert_close(scaled, 0.25 * ref, rtol=1e-12, atol=1e-12)


def test_softmax_focal_loss_soft_one_hot_targets_equal_class_indices():
    """L2: soft targets (MixUp) give −Σ_c y_c (1 − p_c)^γ log p_c; one-hot rows equal the class-index loss."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64) * 2
    y = torch.randint(0, 5, (16,), generator=gen)
    one_hot = F.one_hot(y, 5).double()
    torch.testing.assert_close(softmax_focal_loss(x, one_hot, 2.0), softmax_focal_loss(x, y, 2.0), rtol=1e-12, atol=0)
    mix = 0.7 * one_hot + 0.3 * one_hot.roll(1, 0)
    p = torch.softmax(x, 1)
    expected = (-(mix * (1 - p) ** 2 * p.log()).sum(1)).mean()
    torch.testing.assert_close(softmax_focal_loss(x, mix, 2.0), expected, rtol=1e-12, atol=0)


def test_focal_loss_hand_computed_two_samples():
    """L2: two samples worked out by hand, γ = 2, α = 0.25.

    Softmax form, 2 classes. Sample 1: logits (ln 9, 0), so p = (0.9, 0.1); label 0, p_t = 0.9:
        FL_1 = −0.25 · (1 − 0.9)² · ln 0.9 = 0.25 · 0.01 · 0.1053605 = 0.000263401
    Sample 2: logits (0, 0), p = (0.5, 0.5); label 1, p_t = 0.5:
        FL_2 = −0.25 · (1 − 0.5)² · ln 0.5 = 0.25 · 0.25 · 0.6931472 = 0.0433217
    mean = (0.000263401 + 0.0433217) / 2 = 0.0217926.

    Sigmoid form, one score each. Sample 1: logit ln 9, p = 0.9, target 1: p_t = 0.9, α_t = α:
        FL_1 = 0.25 · 0.01 · 0.1053605 = 0.000263401
    Sample 2: logit 0, p = 0.5, target 0: p_t = 1 − p = 0.5, α_t = 1 − α = 0.75:
        FL_2 = 0.75 · 0.25 · 0.6931472 = 0.1299651
    """
    ln9 = math.log(9.0)
    x = torch.tensor([[ln9, 0.0], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    fl1 = 0.25 * 0.1**2 * -math.log(0.9)
    fl2 = 0.25 * 0.5**2 * -math.log(0.5)
    assert fl1 == pytest.approx(0.000263401, rel=1e-5) and fl2 == pytest.approx(0.0433217, rel=1e-5)
    out = softmax_focal_loss(x, y, gamma=2.0, alpha=0.25, reduction="none")
    assert out.tolist() == pytest.approx([fl1, fl2], rel=1e-12)
    assert float(softmax_focal_loss(x, y, gamma=2.0, alpha=0.25)) == pytest.approx(0.0217926, rel=1e-5)

    s = sigmoid_focal_loss(torch.tensor([ln9, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64),
                           gamma=2.0, alpha=0.25)
    assert s.tolist() == pytest.approx([0.000263401, 0.1299651], rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 5.0])
def test_easy_examples_are_down_weighted_by_the_formula(gamma):
    """L2: FL(p_t = 0.9) / FL(p_t = 0.5) = (0.1 / 0.5)^γ · ln 0.9 / ln 0.5: relative to
    cross-entropy an easy example (p_t = 0.9) weighs (1/5)^γ of a hard one (1/25 at γ = 2)."""
    expected = (0.1 / 0.5) ** gamma * math.log(0.9) / math.log(0.5)
    # softmax: logits (ln 9, 0) give p_t = 0.9, (0, 0) give 0.5
    x = torch.tensor([[math.log(9.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
    easy, hard = softmax_focal_loss(x, torch.tensor([0, 0]), gamma, 0.25, reduction="none").tolist()
    assert easy / hard == pytest.approx(expected, rel=1e-12)
    # sigmoid, positives: logit ln 9 gives p_t = 0.9, logit 0 gives 0.5
    z = torch.tensor([math.log(9.0), 0.0], dtype=torch.float64)
    easy, hard = sigmoid_focal_loss(z, torch.ones(2, dtype=torch.float64), gamma, 0.25).tolist()
    assert easy / hard == pytest.approx(expected, rel=1e-12)
    ce_easy, ce_hard = F.cross_entropy(x, torch.tensor([0, 0]), reduction="none").tolist()
    assert (easy / hard) / (ce_easy / ce_hard) == pytest.approx(0.2**gamma, rel=1e-12)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_confident_predictions_stay_accurate_with_finite_gradients(gamma):
    """L2: (1 − p_t)^γ is taken in log space: a confident float32 score (p_t = 1 − 2e-9, which rounds
    to 1) keeps its small loss to float32 accuracy, and gradients are finite for γ < 1 too."""
    # sigmoid, logit 20 on a positive: BCE = log1p(e^-20), 1 − p_t = σ(−20)
    z = torch.tensor([20.0, -30.0, 80.0], requires_grad=True)
    t = torch.tensor([1.0, 0.0, 1.0])
    out = sigmoid_focal_loss(z, t, gamma=gamma, alpha=None)
    for value, logit in zip(out.tolist(), (20.0, 30.0, 80.0)):
        exact = math.log1p(math.exp(-logit)) * (1 / (1 + math.exp(logit))) ** gamma
        assert value == pytest.approx(exact, rel=1e-5)
    out.sum().backward()
    assert torch.isfinite(z.grad).all()
    # softmax: the true class far ahead; 1 − p_t = Σ of the other probabilities, no cancellation
    x = torch.tensor([[25.0, 0.0, -3.0], [-5.0, 90.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    out = softmax_focal_loss(x, y, gamma=gamma, reduction="none")
    x64 = x.detach().double()
    p = torch.softmax(x64, 1)
    rest = p.masked_fill(F.one_hot(y, 3).bool(), 0).sum(1)  # 1 − p_t without cancellation
    exact = -(rest**gamma) * torch.log_softmax(x64, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=0)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_focal_loss_gradients_match_finite_differences():
    """L2: the gradients of both forms (γ = 2 and γ = 0.5, soft targets, smoothing) pass gradcheck."""
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(6, 4, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    y = torch.randint(0, 4, (6,), generator=gen)
    soft = torch.softmax(torch.randn(6, 4, generator=gen, dtype=torch.float64), 1)
    t = (torch.rand(6, 4, generator=gen) < 0.4).double()
    w = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    for gamma in (0.5, 2.0):
        assert torch.autograd.gradcheck(lambda z: softmax_focal_loss(z, y, gamma, 0.25, class_weights=w,
                                                                     label_smoothing=0.1), (x,))
        assert torch.autograd.gradcheck(lambda z: softmax_focal_loss(z, soft, gamma), (x,))
        assert torch.autograd.gradcheck(lambda z: sigmoid_focal_loss(z, t, gamma, 0.25, "sum"), (x,))


def test_softmax_focal_loss_counts_no_ignored_target_and_refuses_bad_shapes():
    """L2: ignored pixels add nothing (an all-ignored batch has loss 0, not NaN); mismatched targets raise."""
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    y = torch.full((1, 2, 2), 255)
    loss = softmax_focal_loss(x, y, ignore_index=255)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    with pytest.raises(ValueError, match="class-index targets"):
        softmax_focal_loss(torch.randn(4, 3), torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="soft targets"):
        softmax_focal_loss(torch.randn(4, 3), torch.rand(4, 2))
    with pytest.raises(ValueError, match="C >= 2"):
        softmax_focal_loss(torch.randn(4, 1), torch.zeros(4, dtype=torch.long))


def test_registered_focal_loss_reads_the_recipe():
    """L2: loss.name=focal builds softmax focal loss from loss.gamma, loss.alpha, loss.class_weights,
    loss.label_smoothing and loss.ignore_index."""
    assert "focal" in LOSSES.names()
    recipe = load_recipe("digits-mlp", ["loss.name=focal", "loss.gamma=2", "loss.alpha=0.25",
                                        "loss.label_smoothing=0.1", "loss.class_weights=[1,2,1,1,1,1,1,1,1,3]"])
    fn = LOSSES.get(recipe.loss.name, "loss.name").fn(recipe.loss, None)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(8, 10, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    w = torch.tensor([1, 2, 1, 1, 1, 1, 1, 1, 1, 3.0])
    torch.testing.assert_close(fn(x, y), softmax_focal_loss(x, y, 2.0, 0.25, class_weights=w, label_smoothing=0.1))
    # γ = 0, α null: the registered cross_entropy
    plain = load_recipe("digits-mlp", ["loss.name=focal", "loss.gamma=0", "loss.alpha=null"]).loss
    ce = LOSSES.get("cross_entropy").fn(plain, None)
    torch.testing.assert_close(LOSSES.get("focal").fn(plain, None)(x, y), ce(x, y))
    # per pixel with the ignored value, as the segmentation task passes it
    seg = plain.model_copy(update={"ignore_index": 255})
    xs, ys = torch.randn(2, 4, 3, 3, generator=gen), torch.randint(0, 4, (2, 3, 3), generator=gen)
    ys[1] = 255
    torch.testing.assert_close(LOSSES.get("focal").fn(seg, None)(xs, ys),
                               LOSSES.get("cross_entropy").fn(seg, None)(xs, ys))


def test_fit_with_focal_loss_through_the_public_api(tmp_path):
    """L2: trainlab.fit trains a classifier with loss.name=focal (with MixUp's soft targets too) and
    reports finite losses."""
    run = trainlab.fit("digits-mlp", {**QUIET, "loss.name": "focal", "loss.gamma": 2.0, "loss.alpha": 0.25,
                                      "train.epochs": 1, "run.dir": str(tmp_path / "focal")}, quiet=True)
    (epoch,) = run.epochs()
    assert math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["val_loss"])
    assert epoch["val_accuracy"] > 0.5  # the 8x8 digits: one epoch is well above chance (0.1)
    assert run.recipe().loss.name == "focal" and run.recipe().loss.alpha == 0.25
    mixed = trainlab.fit("digits-mlp", {**QUIET, "loss.name": "focal", "data.batch_augment": ["mixup"],
                                        "train.epochs": 1, "run.dir": str(tmp_path / "mixup")}, quiet=True)
    assert math.isfinite(mixed.epochs()[0]["train_loss"])
