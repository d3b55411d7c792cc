"""A finding is data: what the doctor saw, where, the numbers that show it, and what to do.

Codes are stable (scripts and tests match on them); each belongs to one feature ID of the notes
(X1–X8; L6 for the multi-task loss weights) and carries the remedies the notes give for it.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

SEVERITIES = ("info", "warning", "error")

# code -> (feature ID, short title, remedies from the notes, in the order they should be tried)
CODES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "nan_loss": ("X1", "loss became NaN/inf", (
        "lower the learning rate (optim.lr)",
        "clip gradients (train.grad_clip=5)",
        "Xavier/Kaiming initialization (model.init)",
        "let the doctor roll back and halve the LR (doctor.auto=true)",
    )),
    "exploding_gradients": ("X1", "exploding gradients", (
        "clip gradients (train.grad_clip=5)",
        "lower the learning rate (optim.lr)",
        "Xavier/Kaiming initialization (model.init)",
        "batch normalization (model.norm=batch)",
    )),
    "vanishing_gradients": ("X2", "vanishing gradients", (
        "ReLU instead of sigmoid/tanh (model.activation=relu)",
        "batch normalization (model.norm=batch)",
        "residual connections (a residual architecture)",
        "Xavier (tanh) / Kaiming (ReLU) initialization (model.init)",
    )),
    "dead_relu": ("X3", "dead ReLU units", (
        "Leaky ReLU / PReLU (model.activation=leaky_relu)",
        "lower the learning rate (optim.lr)",
        "do not start biases negative (model.bias_init)",
        "Kaiming initialization and batch normalization (model.norm=batch)",
    )),
    "overfitting": ("X4", "overfitting", (
        "early stopping and keep the best weights (train.early_stop)",
        "dropout (model.dropout=0.5)",
        "L2 weight decay (optim.weight_decay)",
        "data augmentation (data.augment)",
        "more training data; a smaller model (model.width / model.depth)",
    )),
    "underfitting": ("X5", "underfitting (high bias)", (
        "a bigger model (model.width / model.depth)",
        "train longer (train.epochs)",
        "check the learning rate: neither too small nor too large (optim.lr)",
        "momentum or Adam (optim.name=adam)",
    )),
    "high_variance": ("X5", "high variance (generalization gap)", (
        "more training data or augmentation (data.augment)",
        "regularization: weight decay, dropout (optim.weight_decay, model.dropout)",
        "a simpler model (model.width / model.depth)",
        "early stopping (train.early_stop)",
    )),
    "lr_too_high": ("X6", "learning rate too high", (
        "lower the learning rate 3-10x (optim.lr)",
        "a schedule with warm-up (schedule.warmup)",
        "clip gradients (train.grad_clip)",
        "a larger batch smooths the steps (data.batch_size)",
    )),
    "lr_too_low": ("X6", "learning rate too low", (
        "raise the learning rate 10x (optim.lr)",
        "momentum or Adam (optim.momentum=0.9 / optim.name=adam)",
    )),
    "plateau": ("X7", "plateau (stuck)", (
        "change the learning rate: decay it (schedule.name=step) or cycle it",
        "shuffle the data every epoch (on by default)",
        "another initialization (model.init, seed)",
        "momentum or Adam (optim.momentum=0.9 / optim.name=adam)",
        "let the doctor decay the LR on a plateau (doctor.auto=true)",
    )),
    "unnormalized_inputs": ("X8", "unnormalized inputs", (
        "normalize with training-split statistics (data.normalize=true)",
        "batch normalization after the first layer (model.norm=batch)",
    )),
    "class_imbalance": ("X8", "class imbalance", (
        "collect or oversample examples of the small classes",
        "judge by macro recall / macro F1 and the per-class table, not accuracy",
        "weight the loss by inverse class frequency",
    )),
    "small_dataset": ("X8", "dataset too small for deep learning", (
        "more data or data augmentation (data.augment)",
        "a smaller model with regularization (model.width, model.dropout, optim.weight_decay)",
        "compare with classical baselines on the same split: trainlab baseline RECIPE (SVM, k-NN, gradient-boosted trees)",
    )),
    "head_dominance": ("L6", "one head dominates the shared trunk", (
        "balance the heads' loss weights (loss.weights)",
        "learn the weights by uncertainty (loss.uncertainty=true)",
        "rescale the dominant head's targets, or give it a loss that grows less with the error (heads)",
    )),
}


@dataclass(frozen=True)
class Finding:
    """One diagnosis. ``message`` is a single line that quotes the numbers of ``evidence``."""

    code: str
    severity: str
    message: str
    epoch: int | None = None
    step: int | None = None
    layers: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)
    remedies: tuple[str, ...] = ()
    feature: str = ""

    def __post_init__(self):
        if self.code not in CODES:
            raise ValueError(f"unknown finding code {self.code!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"], d["remedies"] = list(self.layers), list(self.remedies)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(code=d["code"], severity=d["severity"], message=d["message"], epoch=d.get("epoch"),
                   step=d.get("step"), layers=tuple(d.get("layers", ())), evidence=dict(d.get("evidence", {})),
                   remedies=tuple(d.get("remedies", ())), feature=d.get("feature", ""))


def finding(code: str, severity: str, message: str, **kw: Any) -> Finding:
    """A Finding with the code's feature ID and remedies filled in (``remedies`` may prepend more)."""
    feature, _, remedies = CODES[code]
    extra = tuple(kw.pop("remedies", ()))
    return Finding(code, severity, message, feature=feature, remedies=extra + remedies, **kw)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Most severe first, then in the order they appeared in training (ties: the order of CODES)."""
    order = list(CODES)
    last = 1 << 60
    return sorted(findings, key=lambda f: (-f.rank, f.epoch if f.epoch is not None else last,
                                           f.step if f.step is not None else last, order.index(f.code)))


def remedy_key(remedy: str) -> str:
    """What a remedy changes: the recipe options in its closing parentheses without their values
    ("lower the learning rate 3-10x (optim.lr)" and "... (optim.lr)" are one remedy; so are
    "train.grad_clip=5" and "train.grad_clip"), or its whole text when it names no option."""
    m = re.search(r"\(([^()]*)\)\s*$", remedy)
    return re.sub(r"=[^\s/]*", "", m.group(1)).strip() if m else remedy.strip().lower()


def share_remedies(findings: list[Finding]) -> list[Finding]:
    """Each remedy listed once over all findings: where several findings suggest the same change,
    it stays with the one that ranks it highest in its own list (the LR with ``lr_too_high``, where
    it is the first thing to try, not with ``dead_relu``, where it is the second), ties going to
    the earlier finding; within a finding the first wording is kept (a rule's specific advice is
    prepended to the generic one)."""
    home: dict[str, tuple[int, int]] = {}  # key -> (rank in its list, finding index)
    for i, f in enumerate(findings):
        seen: set[str] = set()
        for rank, r in enumerate(f.remedies):
            k = remedy_key(r)
            if k in seen:
                continue
            seen.add(k)
            if k not in home or rank < home[k][0]:
                home[k] = (rank, i)
    out = []
    for i, f in enumerate(findings):
        kept, seen = [], set()
        for r in f.remedies:
            k = remedy_key(r)
            if k not in seen and home[k][1] == i:
                kept.append(r)
            seen.add(k)
        out.append(f if tuple(kept) == f.remedies else replace(f, remedies=tuple(kept)))
    return out
