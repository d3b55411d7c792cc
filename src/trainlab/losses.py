"""Losses by name (``loss.name``: cross_entropy, mse, mae, smooth_l1, bce, focal, triplet), focal loss
(L2) and the L1 / coupled-L2 penalties (L1, L4).

A loss builder takes the recipe's ``loss`` section and the :class:`~trainlab.data.DataInfo` and
returns ``fn(outputs, targets) -> scalar``. Classification targets may be class indices (N,) or
soft targets (N, C) from MixUp/CutMix; cross-entropy and focal loss handle both.

Focal loss (L2, the notes S1 Q31; Lin et al. 2017, "Focal Loss for Dense Object Detection") is
``FL(p_t) = −α_t (1 − p_t)^γ log p_t``: cross-entropy times a factor that vanishes for examples
already classified well (p_t → 1), so that the many easy ones (the background of a detector)
stop drowning out the few hard ones. γ = 0 is cross-entropy. Two forms:

- :func:`sigmoid_focal_loss`: independent binary terms (a detector's per-class scores, multi-label);
  ``α_t`` is α for the positives and 1 − α for the negatives. Same values as
  :func:`torchvision.ops.sigmoid_focal_loss`.
- :func:`softmax_focal_loss`: one softmax over C classes (classification, segmentation); this is
  the registered ``loss.name=focal``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .registry import LOSSES


@LOSSES.register("cross_entropy", help="softmax + cross-entropy, optional label smoothing, class weights and an "
                 "ignored target value; soft targets too; per pixel for (N, C, H, W) scores")
def cross_entropy(cfg, info):
    """Cross-entropy of class scores (N, C) or (N, C, H, W) against class indices (N) / (N, H, W)
    or soft targets of the scores' shape (L1, L3, L7). ``loss.class_weights`` weights each class's
    terms and the mean is over the weights of the counted targets, as torch defines it.
    ``loss.ignore_index`` marks class-index targets that add nothing (the unlabelled pixels of a
    segmentation mask; the segmentation task sets it to the data set's); a batch with no counted
    target has loss 0 rather than 0/0. Soft targets (MixUp, CutMix) have nothing to ignore."""
    smoothing = cfg.label_smoothing
    ignore = cfg.ignore_index
    weight = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, dtype=torch.float32)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if weight is None else weight.to(logits.device)
        logits = logits.float()
        if ignore is None or target.is_floating_point():
            return F.cross_entropy(logits, target, weight=w, label_smoothing=smoothing)
        total = F.cross_entropy(logits, target, weight=w, ignore_index=ignore, label_smoothing=smoothing,
                                reduction="sum")
        counted = target != ignore
        denom = counted.sum() if w is None else w[target[counted]].sum()
        # 0/0 (nothing counted) is 0; a counted weight sum below 1 still divides (clamp(min=1) would not)
        return total / torch.where(denom > 0, denom, torch.ones_like(denom))

    return loss


# --- regression and binary losses (L1) -----------------------------------------------------------


def dense_targets(outputs: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(targets of the outputs' shape and dtype, mask of the counted elements or None) for the
    element-wise losses. Class indices (N,) / (N, d1, ...) against scores (N, C) / (N, C, d1, ...)
    become one-hot rows along dim 1 (so a classifier may train with ``bce`` or ``mse``), with the
    ``ignore_index`` positions left out; an (N,) target of (N, 1) outputs gains the unit axis.
    Anything else must already have the outputs' shape."""
    mask = None
    if not target.is_floating_point() and outputs.dim() >= 2 and target.shape == outputs.shape[:1] + outputs.shape[2:] \
            and outputs.shape[1] > 1:
        counted = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
        onehot = F.one_hot(target.masked_fill(~counted, 0), outputs.shape[1]).movedim(-1, 1)
        mask = None if ignore_index is None else counted.unsqueeze(1).expand_as(outputs)
        return onehot.to(outputs.dtype), mask
    if outputs.dim() == target.dim() + 1 and outputs.shape[-1] == 1 and outputs.shape[:-1] == target.shape:
        target = target.unsqueeze(-1)
    if target.shape != outputs.shape:
        raise ValueError(f"targets {tuple(target.shape)} do not match the outputs {tuple(outputs.shape)}")
    return target.to(outputs.dtype), mask


def _masked_mean(terms: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return terms.mean()
    n = mask.sum()
    return (terms * mask).sum() / torch.where(n > 0, n, torch.ones_like(n))  # nothing counted: 0, not 0/0


def _elementwise(name: str, terms):
    """A criterion ``(outputs, targets) -> mean of terms(x, y)`` over the counted elements, in float32."""
    def build(cfg, info):
        def loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            x = outputs.float()
            y, mask = dense_targets(x, target, cfg.ignore_index)
            return _masked_mean(terms(x, y, cfg), mask)

        loss.__name__ = name
        return loss

    return build


LOSSES.register("mse", help="mean squared error mean((x − y)²) (L1): regression; class-index targets become "
                "one-hot rows")(_elementwise("mse", lambda x, y, cfg: (x - y).pow(2)))
LOSSES.register("mae", help="mean absolute error mean(|x − y|) (L1): regression, robust to outliers")(
    _elementwise("mae", lambda x, y, cfg: (x - y).abs()))


def smooth_l1_terms(x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """Huber-like terms: ``0.5 d² / β`` where ``|d| < β``, else ``|d| − 0.5 β`` (d = x − y);
    β = 0 is the absolute error. Same as :func:`torch.nn.functional.smooth_l1_loss`."""
    return F.smooth_l1_loss(x, y, reduction="none", beta=beta)


LOSSES.register("smooth_l1", help="smooth L1 (L1): quadratic below loss.beta, linear above (robust regression, "
                "box offsets)")(_elementwise("smooth_l1", lambda x, y, cfg: smooth_l1_terms(x, y, cfg.beta)))


@LOSSES.register("bce", help="binary cross-entropy with logits (L1): sigmoid per output, loss.pos_weight weighs "
                 "the positive terms; class-index targets become one-hot rows (one-vs-rest)")
def bce(cfg, info):
    """Binary cross-entropy of logits x against targets y in [0, 1], per element
    ``−[p·y·log σ(x) + (1 − y)·log(1 − σ(x))]`` with ``p = loss.pos_weight`` (one value, or one per
    output column; null: 1), averaged over the counted elements. Computed from logits
    (:func:`torch.nn.functional.binary_cross_entropy_with_logits`), so confident scores stay finite."""
    pw = cfg.pos_weight
    pos = None if pw is None else torch.tensor(pw if isinstance(pw, list) else [pw], dtype=torch.float32)
    classes = getattr(info, "num_classes", None)
    if pos is not None and len(pos) > 1 and classes and len(pos) != classes:
        from .errors import RecipeError  # refused when the task is built, before a run folder exists

        raise RecipeError(f"loss.pos_weight: {len(pos)} values for {classes} outputs (classes); give one value "
                          "or one per class")

    def loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = outputs.float()
        y, mask = dense_targets(x, target, cfg.ignore_index)
        p = None
        if pos is not None:
            if len(pos) > 1 and (x.dim() < 2 or x.shape[1] != len(pos)):
                raise ValueError(f"loss.pos_weight: {len(pos)} weights for outputs {tuple(x.shape)}")
            p = pos.to(x.device).view(-1, *([1] * max(x.dim() - 2, 0))) if len(pos) > 1 else pos.to(x.device)
        terms = F.binary_cross_entropy_with_logits(x, y, pos_weight=p, reduction="none")
        return _masked_mean(terms, mask)

    return loss


# --- focal loss (L2) ----------------------------------------------------------------------------

_REDUCTIONS = ("none", "mean", "sum")


def _check_focal(gamma: float, alpha: float | None, reduction: str) -> None:
    if gamma < 0:
        raise ValueError(f"focal loss: gamma must be >= 0, got {gamma}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"focal loss: alpha must be in [0, 1] or None (unweighted), got {alpha}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"focal loss: unknown reduction {reduction!r}; known: {', '.join(_REDUCTIONS)}")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    reduction: str = "none",
) -> torch.Tensor:
    """Binary focal loss of independent sigmoid scores (L2): RetinaNet's classification loss.

    Args:
        logits: scores of any shape, e.g. ``(N, C)`` per anchor and class; ``p = sigmoid(logits)``.
        targets: the same shape, 1 for a positive and 0 for a negative (values in between are
            taken as soft labels, as torchvision does).
        gamma: focusing exponent γ >= 0 of ``(1 − p_t)^γ``; 0 gives (α-weighted) BCE.
        alpha: α in [0, 1] weighs the positives' terms, 1 − α the negatives'; None: unweighted
            (torchvision's ``alpha=-1``).
        reduction: ``"none"`` (the default: one term per element, the logits' shape), ``"mean"``
            or ``"sum"``.

    Per element, with ``p_t = p`` for a positive and ``1 − p`` for a negative:
    ``FL = −α_t (1 − p_t)^γ log p_t = α_t (1 − p_t)^γ · BCE(logits, targets)``.

    The values are those of :func:`torchvision.ops.sigmoid_focal_loss` (note its argument order
    is ``alpha, gamma``: pass them by keyword). Computed from BCE-with-logits, and the factor as
    ``exp(γ log(1 − p_t))`` with ``log(1 − p_t) = log(t σ(−x) + (1 − t) σ(x))`` taken in log space
    (``logsigmoid``): no ``1 − p`` cancellation for confident scores, and finite gradients for
    every finite logit and every γ >= 0 (``(1 − p_t) ** γ`` gives NaN gradients for γ < 1 once
    ``p_t`` rounds to 1). Half-precision logits are computed and returned in float32.
    """
    _check_focal(gamma, alpha, reduction)
    if targets.shape != logits.shape:
        raise ValueError(f"sigmoid focal loss: targets {tuple(targets.shape)} differ in shape from the logits "
                         f"{tuple(logits.shape)}")
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    t = targets.to(x.dtype)
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    if gamma:
        # log(1 − p_t), 1 − p_t = t σ(−x) + (1 − t) σ(x); log 0 = −inf drops a term of a hard target
        log_1m_pt = torch.logaddexp(torch.log(t) + F.logsigmoid(-x), torch.log1p(-t) + F.logsigmoid(x))
        loss = loss * torch.exp(gamma * log_1m_pt)
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _reduce(loss, reduction)


def _softplus(m: torch.Tensor) -> torch.Tensor:
    # log(1 + e^m) without F.softplus's linear cut-off above 20 (off by up to 2e-9 there)
    return m.clamp(min=0) + torch.log1p(torch.exp(-m.abs()))


def _softmax_margins(logits: torch.Tensor) -> torch.Tensor:
    """``m_c = log Σ_{c' ≠ c} e^{z_c'} − z_c = log((1 − p_c) / p_c)`` along dim 1, so that
    ``−log p_c = softplus(m_c)`` and ``log(1 − p_c) = logsigmoid(m_c)``: the softmax class's
    terms in the binary form, accurate for confident predictions and with finite gradients.

    For every class but the most probable one p_c <= 1/2 and the sum over the others is
    ``lse + log1p(−p_c)`` without cancellation; for the most probable one it is the log-sum-exp
    of the other logits (no ``1 − p`` that rounds to 0 when p is close to 1)."""
    lse = logits.logsumexp(1, keepdim=True)
    top = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.argmax(1, keepdim=True), True)
    others = lse + torch.log1p(-(logits.masked_fill(top, -math.inf) - lse).exp())
    others_top = logits.masked_fill(top, -math.inf).logsumexp(1, keepdim=True)
    return torch.where(top, others_top, others) - logits


def softmax_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | None = None,
    *,
    ignore_index: int | None = None,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class focal loss of one softmax over C classes (L2): classification, segmentation.

    Args:
        logits: scores ``(N, C)`` or ``(N, C, d1, ...)`` (per pixel: ``(N, C, H, W)``), C >= 2.
        target: class indices ``(N)`` / ``(N, d1, ...)`` (int64), or soft targets of the logits'
            shape (float, each row summing to 1: MixUp, CutMix).
        gamma: focusing exponent γ >= 0; with γ = 0 (and α None) this is
            :func:`torch.nn.functional.cross_entropy`, term for term and in every reduction.
        alpha: a scalar α in [0, 1] that multiplies every term, or None (unweighted). In the binary
            form α weighs the positive terms and 1 − α the negative ones; a softmax loss has only
            the true class's term, the "positive", so α_t = α for every term: it scales the loss
            (and with it SGD's step) and does not re-balance anything. Per-class α is
            ``class_weights``.
        ignore_index: class-index targets with this value add nothing (unlabelled pixels).
        class_weights: ``(C,)`` weight of each class's terms, as in cross-entropy.
        label_smoothing: ε in [0, 1): the target is ``(1 − ε)`` on the labelled class and ε / C on
            every class, as in cross-entropy.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (one value per sample / pixel).

    Per counted target y, with ``p = softmax(logits)`` and ``f_c = −(1 − p_c)^γ log p_c``:
    ``loss = α [(1 − ε) w_y f_y + (ε / C) Σ_c w_c f_c]``. The mean divides by the summed weight
    ``w_y`` of the counted targets, as ``F.cross_entropy`` does; a batch with no counted target
    has loss 0 rather than 0/0 (``F.cross_entropy`` gives NaN there).

    Soft targets y (N, C) are supported: ``loss = −α Σ_c w_c y_c (1 − p_c)^γ log p_c`` (after
    smoothing ``y ← (1 − ε) y + ε / C``), the mean over the samples as ``F.cross_entropy`` takes
    it. With hard one-hot y it is the class-index loss. Each class's factor uses that class's own
    probability, so a MixUp pair of classes is down-weighted class by class as p_c approaches 1.

    Each class's terms come from its margin ``m_c = log((1 − p_c) / p_c)`` (see
    :func:`_softmax_margins`): ``−log p_c = softplus(m_c)`` and ``(1 − p_c)^γ = exp(γ logsigmoid(m_c))``.
    Unlike ``1 − softmax`` and ``log_softmax``, they stay accurate for confident predictions
    (p_t = 1 − 1e-11 in float32), and the gradients are finite for every γ >= 0. Half-precision
    logits are computed in float32.
    """
    _check_focal(gamma, alpha, reduction)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"focal loss: label_smoothing must be in [0, 1), got {label_smoothing}")
    if logits.dim() < 2 or logits.shape[1] < 2:
        raise ValueError(f"softmax focal loss: logits must be (N, C, ...) with C >= 2 classes, got "
                         f"{tuple(logits.shape)}")
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    c = x.shape[1]
    w = None
    if class_weights is not None:
        if class_weights.shape != (c,):
            raise ValueError(f"softmax focal loss: class_weights {tuple(class_weights.shape)} for {c} classes")
        w = class_weights.to(device=x.device, dtype=x.dtype).view(1, c, *([1] * (x.dim() - 2)))

    def terms(m: torch.Tensor) -> torch.Tensor:  # −(1 − p)^γ log p from the margins
        return _softplus(m) if gamma == 0 else _softplus(m) * torch.exp(gamma * F.logsigmoid(m))

    if target.is_floating_point():
        if target.shape != x.shape:
            raise ValueError(f"softmax focal loss: soft targets {tuple(target.shape)} differ in shape from the "
                             f"logits {tuple(x.shape)}")
        y = target.to(x.dtype)
        if label_smoothing:
            y = y * (1 - label_smoothing) + label_smoothing / c
        f = terms(_softmax_margins(x))
        loss = (y * (f if w is None else f * w)).sum(1)
        return _reduce(loss if alpha is None else alpha * loss, reduction)

    if target.shape != x.shape[:1] + x.shape[2:]:
        raise ValueError(f"softmax focal loss: class-index targets {tuple(target.shape)} do not match the "
                         f"logits {tuple(x.shape)} (expected {tuple(x.shape[:1] + x.shape[2:])})")
    counted = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    y = target.masked_fill(~counted, 0).unsqueeze(1)
    wt = counted.to(x.dtype) if w is None else w.expand_as(x).gather(1, y).squeeze(1) * counted
    if label_smoothing:
        f = terms(_softmax_margins(x))  # every class's term
        f_y = f.gather(1, y).squeeze(1)
        smooth = (f if w is None else f * w).sum(1)
        loss = (1 - label_smoothing) * f_y * wt + (label_smoothing / c) * smooth * counted
    else:
        # the labelled class's margin only: log Σ_{c ≠ y} e^{z_c} − z_y (no (N, C, ...) temporaries)
        is_y = torch.zeros_like(x, dtype=torch.bool).scatter_(1, y, True)
        m_y = x.masked_fill(is_y, -math.inf).logsumexp(1) - x.gather(1, y).squeeze(1)
        loss = terms(m_y) * wt
    if alpha is not None:
        loss = alpha * loss
    if reduction == "mean":
        denom = wt.sum()
        return loss.sum() / torch.where(denom > 0, denom, torch.ones_like(denom))
    return _reduce(loss, reduction)


@LOSSES.register("focal", help="softmax focal loss −α(1 − p_t)^γ log p_t (L2): easy examples weigh less; "
                 "loss.gamma (0: cross-entropy); loss.alpha only scales it here (null: as cross-entropy; "
                 "per class: loss.class_weights); label smoothing, ignored target value, soft targets as "
                 "cross_entropy")
def focal(cfg, info):
    """Softmax focal loss (L2) of class scores (N, C) or (N, C, H, W) against class indices or soft
    targets: :func:`softmax_focal_loss` with ``loss.gamma``, ``loss.alpha``, ``loss.class_weights``,
    ``loss.label_smoothing`` and ``loss.ignore_index``, reduced as :func:`cross_entropy` is.

    ``loss.alpha`` (default 0.25) is RetinaNet's α of the positive terms; the softmax form has
    only positive terms, so it multiplies the whole loss by α: the loss values are α times
    smaller and SGD's step with them (Adam's barely changes). ``loss.alpha=null`` keeps the scale
    of cross-entropy; ``loss.class_weights`` is the per-class α. The binary α / 1 − α balance is
    :func:`sigmoid_focal_loss`, for a detector's per-class sigmoid scores."""
    weight = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, dtype=torch.float32)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return softmax_focal_loss(logits.float(), target, cfg.gamma, cfg.alpha, ignore_index=cfg.ignore_index,
                                  class_weights=weight, label_smoothing=cfg.label_smoothing)

    return loss


@LOSSES.register("triplet", help="triplet margin loss of embeddings (L5) for the embedding task: loss.margin, "
                 "loss.mining (batch_all, batch_hard, semi_hard), loss.distance (euclidean, squared, cosine)")
def triplet(cfg, info):
    """The triplet loss of :func:`trainlab.triplet.triplet_loss` as a criterion (embeddings (B, D),
    identities (B,)) -> scalar; the embedding task calls the function itself to keep its statistics."""
    from .triplet import triplet_loss

    def loss(embeddings: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return triplet_loss(embeddings.float(), target, cfg.margin, cfg.mining, cfg.distance)[0]

    return loss


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, hard: torch.Tensor, temperature: float,
                      alpha: float) -> torch.Tensor:
    """Knowledge distillation (T8, Hinton et al. 2015): ``alpha · T² · KL(p_teacher^T ‖ p_student^T)
    + (1 − alpha) · hard``.

    student, teacher: logits (N, C); ``p^T = softmax(logits / T)``; the KL divergence is summed over
    classes and averaged over the batch; ``hard``: the student's usual loss on the labels (scalar).
    The T² keeps the soft term's gradients the size of the hard term's as T grows (they scale as
    1/T²)."""
    t = float(temperature)
    log_s = F.log_softmax(student.float() / t, dim=1)
    log_t = F.log_softmax(teacher.float() / t, dim=1)
    soft = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (t * t)
    return alpha * soft + (1 - alpha) * hard


def penalized_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Weights of conv and linear layers (:func:`trainlab.models.layers.weight_layers`): the
    parameters a weight penalty applies to. Biases, norms and embeddings are not penalized."""
    from .models.layers import weight_layers

    return [m.weight for m in weight_layers(model)]


def weight_penalty(params: list[torch.Tensor], l1: float, l2: float) -> torch.Tensor:
    """l1 · Σ|w| + (l2 / 2) · Σ w², so that the L2 gradient is l2 · w as in weight decay (L4)."""
    total = params[0].new_zeros(())
    for w in params:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + 0.5 * l2 * w.pow(2).sum()
    return total
