"""E6: the bias/variance reading of train, validation and test error, against the notes' cases (S2 §10–11),
in report.md and through `trainlab evaluate --bias-variance`."""
from __future__ import annotations

import json

import pytest
from conftest import FAST

import trainlab
from trainlab.cli import main
from trainlab.evaluate.bias_variance import (
    BIAS_REMEDIES, MISMATCH_REMEDIES, VARIANCE_REMEDIES, errors_from_metrics, read_bias_variance,
)


@pytest.mark.parametrize("train, val, verdict", [
    (0.01, 0.11, "high variance"),  # fits the training set, 10 points worse on new samples
    (0.15, 0.16, "high bias"),  # 15 points above a ~0% target, and generalizes what it learned
    (0.15, 0.30, "high bias and high variance"),
    (0.005, 0.01, "neither"),
])
def test_the_notes_four_cases_against_a_zero_target(train, val, verdict):
    """E6: the four textbook readings (human-level error ~0%): avoidable bias = train − target, variance =
    val − train, each high above 2 points; the remedies are the notes' for what is high, bias first."""
    r = read_bias_variance(train, val, target_error=0.0)
    assert r.verdict == verdict
    assert r.avoidable_bias == pytest.approx(train) and r.variance == pytest.approx(val - train)
    expected = (BIAS_REMEDIES if "bias" in verdict else ()) + (VARIANCE_REMEDIES if "variance" in verdict else ())
    assert r.remedies == expected


def test_the_target_error_moves_the_bias_reading():
    """E6: 15% train / 16% val is high bias against a 0% target, but not against a 14% one (Bayes error:
    the data cannot be fitted better), where the same numbers read as neither."""
    assert read_bias_variance(0.15, 0.16, target_error=0.0).high_bias
    r = read_bias_variance(0.15, 0.16, target_error=0.14)
    assert r.verdict == "neither" and r.avoidable_bias == pytest.approx(0.01)
    # exactly at the margin is not above it: 2 points of variance is still acceptable
    assert read_bias_variance(0.13, 0.15, target_error=0.12).verdict == "neither"
    assert read_bias_variance(0.13, 0.151, target_error=0.12).verdict == "high variance"


def test_a_test_error_far_above_validation_is_named():
    """E6: test error 6 points above validation (the validation set was used for too many choices)."""
    r = read_bias_variance(0.01, 0.02, test_error=0.08)
    assert r.verdict == "neither" and r.mismatch and r.remedies == MISMATCH_REMEDIES
    assert not read_bias_variance(0.01, 0.02, test_error=0.03).mismatch


def test_bad_errors_are_refused():
    with pytest.raises(ValueError, match="train_error"):
        read_bias_variance(float("nan"), 0.1)
    with pytest.raises(ValueError, match="val_error"):
        read_bias_variance(0.1, 1.5)


def test_errors_are_one_minus_the_tasks_score():
    assert errors_from_metrics({"accuracy": 0.99}, {"accuracy": 0.9}, None, "accuracy") == pytest.approx((0.01, 0.1, None))
    assert errors_from_metrics({"accuracy": 0.99}, {"accuracy": 0.9}, {"accuracy": 0.8}, None) is None


def test_report_and_evaluate_show_the_reading(tmp_path, capsys):
    """E6: report.md holds a bias/variance section (train error from the evaluated epoch's training
    batches); `trainlab evaluate RUN --bias-variance --target-error E` evaluates the three splits with the
    best checkpoint and prints the reading that read_bias_variance gives for those errors."""
    run = trainlab.fit("digits-mlp", [*FAST, "data.subset=300", f"run.dir={tmp_path / 'run'}"], quiet=True)
    report = (run.dir / "report.md").read_text()
    assert "## Bias and variance" in report and "reading: " in report
    capsys.readouterr()
    assert main(["evaluate", str(run.dir), "--bias-variance", "--target-error", "0.01"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((run.dir / "bias-variance-best.json").read_text())
    metrics = {s: run.evaluate(s, "best", write=False)["accuracy"] for s in ("train", "val", "test")}
    assert saved["train_error"] == pytest.approx(1 - metrics["train"])
    assert saved["val_error"] == pytest.approx(1 - metrics["val"])
    assert saved["test_error"] == pytest.approx(1 - metrics["test"])
    expected = read_bias_variance(1 - metrics["train"], 1 - metrics["val"], 1 - metrics["test"], target_error=0.01)
    assert saved["verdict"] == expected.verdict and f"reading: {expected.verdict}" in out
    assert saved["remedies"] == list(expected.remedies)


def test_bad_target_error_is_one_line(tmp_path, capsys):
    run = trainlab.fit("digits-mlp", [*FAST, "data.subset=100", f"run.dir={tmp_path / 'run'}"], quiet=True)
    capsys.readouterr()
    assert main(["evaluate", str(run.dir), "--bias-variance", "--target-error", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--target-error" in err[0]
    assert not (run.dir / "bias-variance-best.json").exists()
