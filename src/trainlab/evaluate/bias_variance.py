"""The bias/variance reading of a model's errors (E6, notes S2 §10–11).

Errors are fractions in [0, 1] (1 − accuracy, or 1 − the task's score). Against a target error
ε* (human-level or the best error thought possible; 0 by default):

- avoidable bias = train error − ε*: the model does not even fit the data it trains on;
- variance = validation error − train error: what it learned does not carry to new samples;
- validation/test gap = test error − validation error: the held-out sets disagree (the
  validation set was used for too many decisions, or its distribution differs from the test's).

A quantity above ``margin`` (absolute, 2 points by default) counts as high. The four readings
of the notes: high bias (train 15 %, val 16 %), high variance (1 %, 11 %), both (15 %, 30 %),
neither (0.5 %, 1 %). The remedies are those the notes list for each, with the recipe option or
command that applies them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# S2 §11 "高偏差怎么调？" (high bias): features, a model too simple (bigger, or boosting), a learning
# rate too small or too large, a loss that does not converge, too little training.
BIAS_REMEDIES = (
    "a bigger model: wider or deeper (model.width, model.depth) or a stronger architecture (model.name)",
    "train longer, until the training loss has converged (train.epochs)",
    "check the learning rate: neither too small nor too large (optim.lr; trainlab lr-find)",
    "check that the loss suits the task and decreases (loss.name)",
    "better or more input features (data.image_size, less downscaling); boosting (trainlab ensemble)",
)
# S2 §11 "高方差怎么调？" (high variance): more data (a small training set is the usual cause of a
# train/test difference), fewer irrelevant features, a simpler model, regularization, dropout,
# batch normalization, bagging, early stopping.
VARIANCE_REMEDIES = (
    "more training data, or data augmentation (data.augment)",
    "fewer irrelevant input features: crop or mask what carries no signal, or reduce dimensions (whitening/PCA "
    "before a classical model: trainlab baseline --pca)",
    "regularization: L2 weight decay and dropout (optim.weight_decay, model.dropout)",
    "a simpler model (model.width, model.depth); batch normalization (model.norm=batch)",
    "early stopping with the best weights kept (train.early_stop)",
    "bagging: average several models (trainlab ensemble)",
)
# The validation set stands for unseen data only until it has been used to choose too much.
MISMATCH_REMEDIES = (
    "a larger validation split (data.split.val) or k-fold cross-validation (trainlab kfold)",
    "check that validation and test samples come from the same distribution",
)


@dataclass(frozen=True)
class BiasVariance:
    """The reading: the errors, the two gaps, the verdict and the remedies to try, in order."""

    train_error: float
    val_error: float
    test_error: float | None
    target_error: float
    margin: float
    avoidable_bias: float
    variance: float
    high_bias: bool
    high_variance: bool
    verdict: str  # "high bias" | "high variance" | "high bias and high variance" | "neither"
    mismatch: bool = False  # test error above validation error by more than the margin
    remedies: tuple[str, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        """Plain-text lines: the errors side by side, the verdict with its numbers, the remedies."""
        errors = [f"train {pct(self.train_error)}", f"val {pct(self.val_error)}"]
        if self.test_error is not None:
            errors.append(f"test {pct(self.test_error)}")
        out = [f"error: {'  '.join(errors)}  (target {pct(self.target_error)})",
               f"avoidable bias (train − target): {pts(self.avoidable_bias)}; variance (val − train): "
               f"{pts(self.variance)}; high above {pts(self.margin)}",
               f"reading: {self.verdict}"]
        if self.mismatch:
            out.append(f"test error is {pts(self.test_error - self.val_error)} above the validation error: "
                       "the validation set no longer stands for unseen data")
        return out


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def pts(x: float) -> str:
    return f"{100 * x:+.2f} points"


def _check(name: str, v: float | None, optional: bool = False) -> None:
    if v is None and optional:
        return
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{name}: expected an error in [0, 1], got {v!r}")


def read_bias_variance(train_error: float, val_error: float, test_error: float | None = None,
                       target_error: float = 0.0, margin: float = 0.02) -> BiasVariance:
    """The notes' reading of (train, validation[, test]) errors against ``target_error``."""
    _check("train_error", train_error)
    _check("val_error", val_error)
    _check("test_error", test_error, optional=True)
    _check("target_error", target_error)
    if not 0.0 < margin < 1.0:
        raise ValueError(f"margin: expected a fraction in (0, 1), got {margin!r}")
    bias = train_error - target_error
    variance = val_error - train_error
    # a tiny tolerance, so that 0.15 - 0.13 (0.0199999...) is read as the 2 points it is
    eps = 1e-9
    high_bias, high_variance = bias > margin + eps, variance > margin + eps
    verdict = {(True, True): "high bias and high variance", (True, False): "high bias",
               (False, True): "high variance", (False, False): "neither"}[(high_bias, high_variance)]
    mismatch = test_error is not None and test_error - val_error > margin + eps
    remedies = (BIAS_REMEDIES if high_bias else ()) + (VARIANCE_REMEDIES if high_variance else ()) + \
        (MISMATCH_REMEDIES if mismatch else ())
    return BiasVariance(train_error, val_error, test_error, target_error, margin, bias, variance,
                        high_bias, high_variance, verdict, mismatch, remedies)


def errors_from_metrics(train: dict | None, val: dict | None, test: dict | None, quality: str | None
                        ) -> tuple[float, float, float | None] | None:
    """(train, val, test) errors as 1 − the task's score ``quality`` (accuracy, mIoU, ...) of each
    split's metrics; None when the task has no such score or a split lacks it."""
    if quality is None:
        return None

    def err(m):
        v = (m or {}).get(quality)
        return 1.0 - v if isinstance(v, (int, float)) and math.isfinite(v) else None

    tr, va, te = err(train), err(val), err(test)
    if tr is None or va is None:
        return None
    return tr, va, te


def markdown_section(reading: BiasVariance, source: str) -> list[str]:
    """report.md lines: the errors table, the reading and the remedies. ``source`` says where the
    training error comes from."""
    rows = ["| | train | val | test | target |", "|---|---|---|---|---|",
            f"| error | {pct(reading.train_error)} | {pct(reading.val_error)} | "
            f"{pct(reading.test_error) if reading.test_error is not None else '–'} | {pct(reading.target_error)} |"]
    out = ["## Bias and variance", "", *rows, "",
           f"- training error: {source}",
           f"- avoidable bias (train − target) {pts(reading.avoidable_bias)}, variance (val − train) "
           f"{pts(reading.variance)}; either counts as high above {pts(reading.margin)} (eval.bias_variance_margin)",
           f"- **reading: {reading.verdict}**"]
    if reading.mismatch:
        out.append(f"- the test error is {pts(reading.test_error - reading.val_error)} above the validation error")
    if reading.remedies:
        out += ["", "Remedies (the notes', in order):", ""] + [f"{i}. {r}" for i, r in enumerate(reading.remedies, 1)]
    return out + [""]
