"""The doctor's rules as pure functions: synthetic histories in, findings with quoted numbers out."""
from __future__ import annotations

import json
import math
import statistics

import pytest

from trainlab.atomic import dumps
from trainlab.doctor.findings import CODES, Finding
from trainlab.doctor.history import DoctorHistory
from trainlab.doctor.rules import RULES, diagnose, num
from trainlab.recipe import DoctorConfig, load_recipe
from trainlab.errors import RecipeError

CFG = DoctorConfig()


def history(n_layers=3, weight=None, every=10) -> DoctorHistory:
    h = DoctorHistory(every=every)
    weight = weight or [True] * n_layers
    h.layers = [{"name": f"net.{2 * i}", "type": "Linear" if w else "BatchNorm1d", "params": 10, "weight": w}
                for i, w in enumerate(weight)]
    h.data = {"train_samples": 1000, "num_classes": 10, "class_names": [str(i) for i in range(10)],
              "parameters": 5000, "class_counts": [100] * 10}
    return h


def add_steps(h, losses, grads=None, ratios=None, epoch_of=lambda i: 1 + i // 2):
    n = len(h.layers)
    for i, loss in enumerate(losses):
        g = grads[i] if grads is not None else [1.0] * n
        r = ratios[i] if ratios is not None else [1e-3] * n
        global_norm = math.sqrt(sum(x * x for x in g)) if all(math.isfinite(x) for x in g) else math.nan
        h.add_step(1 + i * h.every, epoch_of(i), loss, 0.1, global_norm, g, r)
    return h


def epochs(train, val=None, train_acc=None, val_acc=None):
    out = []
    for i, t in enumerate(train):
        r = {"epoch": i + 1, "step": 10 * (i + 1), "train_loss": t}
        if val is not None:
            r["val_loss"] = val[i]
        if train_acc is not None:
            r["train_accuracy"] = train_acc[i]
        if val_acc is not None:
            r["val_accuracy"] = val_acc[i]
        out.append(r)
    return out


def codes(findings):
    return {f.code for f in findings}


# ------------------------------------------------------------------------------------------ X1
def test_nan_loss_quotes_the_step_and_the_last_finite_loss():
    """X1: a non-finite loss is an error that names the step, the last finite loss and the LR."""
    h = add_steps(history(), [2.3, 2.1, 1.9])
    h.nonfinite.append({"step": 25, "epoch": 2, "what": "loss", "value": "nan"})
    [f] = RULES["nan_loss"](h, [], CFG, False)
    assert f.code == "nan_loss" and f.severity == "error" and f.feature == "X1"
    assert f.step == 25 and f.epoch == 2
    assert "nan at step 25" in f.message and "last finite sampled loss 1.9 at step 21" in f.message
    assert f.evidence["last_finite_step"] == 21
    assert "clip gradients (train.grad_clip=5)" in f.remedies
    assert RULES["nan_loss"](add_steps(history(), [2.3]), [], CFG, False) == []


def test_exploding_gradients_spike_against_the_median_of_the_previous_window():
    """X1: a global norm far above the median of the previous samples is an explosion; the finding
    quotes the norm, the factor and the span of steps it was compared with."""
    base = [0.9, 1.1, 1.0, 1.3, 0.8, 1.2, 1.0, 0.95, 1.05, 1.1, 1.0, 0.9]
    spike_layers = [[v / math.sqrt(3)] * 3 for v in base] + [[10.0, 10.0, 3.1e4]]
    h = add_steps(history(), [2.0] * 13, grads=spike_layers)
    [f] = RULES["exploding_gradients"](h, [], CFG, False)
    norm = math.sqrt(2 * 10.0**2 + 3.1e4**2)
    ref = statistics.median(math.sqrt(3 * (v / math.sqrt(3)) ** 2) for v in base[-CFG.explode_window:])
    assert f.severity == "warning" and f.step == 121
    assert f.evidence["grad_norm"] == pytest.approx(norm, rel=1e-4)
    assert f.evidence["factor"] == pytest.approx(norm / ref, rel=1e-3)
    assert f"{norm / ref:.0f}× the median of the previous 100 steps" in f.message
    assert f.layers[0] == "net.4"  # the layer whose gradient grew most
    # 40x is below the default factor of 50: no finding; with doctor.explode_factor=20 there is one.
    mild = add_steps(history(), [2.0] * 6, grads=[[1.0] * 3] * 5 + [[40.0] * 3])
    assert RULES["exploding_gradients"](mild, [], CFG, False) == []
    assert RULES["exploding_gradients"](mild, [], DoctorConfig(explode_factor=20), False)


def test_exploding_gradients_absolute_limit_and_nonfinite_gradients():
    """X1: a norm above doctor.grad_norm_max with no history, and NaN gradients (an error)."""
    h = add_steps(history(), [2.0], grads=[[2e4, 1.0, 1.0]])
    [f] = RULES["exploding_gradients"](h, [], CFG, False)
    assert "> 1e4" in f.message
    h = add_steps(history(), [2.0, 2.0], grads=[[1.0] * 3, [math.nan, 1.0, 1.0]])
    h.nonfinite.append({"step": 11, "epoch": 1, "what": "gradients", "layers": ["net.0"]})
    [f] = RULES["exploding_gradients"](h, [], CFG, False)
    assert f.severity == "error" and f.layers == ("net.0",) and "became NaN/inf at step 11" in f.message


# ------------------------------------------------------------------------------------------ X2
def test_vanishing_gradients_names_the_first_layers_and_the_sigmoid():
    """X2: layers whose gradient norm is below doctor.vanish_ratio of the last layer's."""
    rows = [[1e-6, 3e-4, 2e-2, 5e-1, 1.0]] * 5
    h = add_steps(history(5, weight=[True, True, True, False, True]), [2.3] * 5, grads=rows)
    h.activation_types = ["Sigmoid"]
    [f] = RULES["vanishing_gradients"](h, [], CFG, False)
    assert f.layers == ("net.0", "net.2")  # 1e-6 and 3e-4 are below 1e-3; 2e-2 is not
    assert f.evidence["ratios"]["net.0"] == pytest.approx(1e-6)
    assert "the first 2 weight layers (net.0, net.2) get 1e-6 to 3e-4 of the last layer's (net.8)" in f.message
    assert "sigmoid" in f.message and f.feature == "X2"
    assert "ReLU instead of sigmoid/tanh (model.activation=relu)" in f.remedies
    # Two weight layers are not a deep network; a dead ReLU layer explains zero gradients instead.
    assert RULES["vanishing_gradients"](add_steps(history(2), [2.3] * 5, grads=[[1e-6, 1.0]] * 5), [], CFG, False) == []
    h.liveness.append({"epoch": 1, "batches": 2, "dead": [1.0]})
    h.activations.append({"name": "net.1", "type": "ReLU", "units": 8})
    assert RULES["vanishing_gradients"](h, [], CFG, False) == []


# ------------------------------------------------------------------------------------------ X3
def test_dead_relu_fraction_per_layer():
    """X3: the share of units never positive over the sampled batches of the last epoch."""
    h = history()
    h.activations = [{"name": "net.1", "type": "ReLU", "units": 100}, {"name": "net.3", "type": "ReLU", "units": 100}]
    h.liveness = [{"epoch": 1, "batches": 3, "dead": [0.1, 0.0]}, {"epoch": 2, "batches": 3, "dead": [0.31, 0.02]}]
    [f] = RULES["dead_relu"](h, [], CFG, False)
    assert f.message.startswith("31% of ReLU units in net.1 are dead")
    assert f.layers == ("net.1",) and f.severity == "warning" and f.epoch == 2
    assert RULES["dead_relu"](h, [], DoctorConfig(dead_fraction=0.4), False) == []
    h.liveness.append({"epoch": 3, "batches": 3, "dead": [1.0, 0.5]})
    [f] = RULES["dead_relu"](h, [], CFG, False)
    assert f.severity == "error" and f.layers == ("net.1", "net.3") and f.evidence["since_epoch"] == 2
    # A network whose weights went NaN says nothing about its units.
    h.nonfinite.append({"step": 5, "epoch": 1, "what": "weights", "layers": ["net.0"]})
    assert RULES["dead_relu"](h, [], CFG, False) == []


# ---------------------------------------------------------------------------------------- X4/X5
def test_overfitting_from_the_epoch_after_the_validation_minimum():
    """X4: validation loss rising above its minimum while training loss keeps falling."""
    ep = epochs([1.0, 0.6, 0.4, 0.3, 0.2, 0.1], val=[1.0, 0.7, 0.5, 0.52, 0.6, 0.7])
    [f] = RULES["overfitting"](history(), ep, CFG, False)
    assert f.epoch == 4 and f.message.startswith("overfitting from epoch 4")
    assert f.evidence["best_epoch"] == 3 and f.evidence["rise"] == pytest.approx(0.7 / 0.5 - 1)
    assert "from 0.5 (epoch 3, its minimum) to 0.7 (epoch 6, +40%)" in f.message
    # Two epochs after the minimum are not enough with overfit_patience=3, and val noise below 10% is not a rise.
    assert RULES["overfitting"](history(), ep[:5], CFG, False) == []
    flat = epochs([1.0, 0.6, 0.4, 0.3, 0.2, 0.1], val=[1.0, 0.7, 0.5, 0.52, 0.53, 0.54])
    assert RULES["overfitting"](history(), flat, CFG, False) == []


def test_underfitting_and_high_variance_judge_the_whole_run():
    """X5: high bias (low training accuracy) and high variance (train/validation gap), at the end only."""
    h = add_steps(history(), [2.3])
    ep = epochs([2.2, 2.0, 1.9], val=[2.2, 2.0, 1.9], train_acc=[0.2, 0.3, 0.4], val_acc=[0.2, 0.3, 0.4])
    assert RULES["underfitting"](h, ep, CFG, False) == []
    [f] = RULES["underfitting"](h, ep, CFG, True)
    assert "training accuracy 40% after 3 epochs" in f.message and f.feature == "X5"
    ok = epochs([2.2, 0.5, 0.2], train_acc=[0.5, 0.9, 0.95])
    assert RULES["underfitting"](h, ok, CFG, True) == []
    gap = epochs([1.0, 0.1], train_acc=[0.7, 1.0], val_acc=[0.6, 0.82])
    [f] = RULES["high_variance"](h, gap, CFG, True)
    assert f.evidence["gap"] == pytest.approx(0.18) and "gap 18 points" in f.message
    assert RULES["high_variance"](h, gap, DoctorConfig(variance_gap=0.2), True) == []


# ------------------------------------------------------------------------------------------ X6
def test_lr_too_high_by_divergence_oscillation_or_update_size():
    """X6: the loss diverging, oscillating, or steps moving weights by a large share of their norm."""
    h = add_steps(history(), [2.3, 3.0, 9.0])
    [f] = RULES["lr_too_high"](h, [], CFG, False)
    assert "diverged from 2.3 to 9 by step 21" in f.message and f.step == 21
    osc = epochs([2.0, 1.0, 1.3, 1.0, 1.2])
    [f] = RULES["lr_too_high"](add_steps(history(), [2.3]), osc, CFG, False)
    assert "rose 2 times" in f.message and f.evidence["rises"][0] == [3, 1.0, 1.3]
    big = add_steps(history(), [2.3] * 4, ratios=[[0.5, 0.4, 0.6]] * 4)
    [f] = RULES["lr_too_high"](big, [], CFG, False)
    assert f.evidence["update_ratio"] == pytest.approx(0.5)
    assert RULES["lr_too_high"](add_steps(history(), [2.3, 2.0, 1.5]), epochs([2.0, 1.0, 0.5]), CFG, False) == []


def test_lr_too_low_needs_tiny_updates_and_no_progress():
    """X6: updates below doctor.lr_low_ratio of the weights while the model has not learned."""
    h = add_steps(history(), [2.3] * 6, ratios=[[2e-6] * 3] * 6)
    stuck = epochs([2.29, 2.28, 2.27], train_acc=[0.1, 0.11, 0.12])
    [f] = RULES["lr_too_low"](h, stuck, CFG, False)
    assert f.evidence["update_ratio"] == pytest.approx(2e-6) and "2e-6× their norm" in f.message
    learned = epochs([2.0, 0.5, 0.1], train_acc=[0.5, 0.9, 0.98])
    assert RULES["lr_too_low"](h, learned, CFG, False) == []
    # Weights that do not move because every unit is dead are not an LR problem.
    h.activations = [{"name": "net.1", "type": "ReLU", "units": 8}]
    h.liveness = [{"epoch": 3, "batches": 2, "dead": [1.0]}]
    assert RULES["lr_too_low"](h, stuck, CFG, False) == []


# ------------------------------------------------------------------------------------------ X7
def test_plateau_while_underfitting_with_working_updates():
    """X7: no training-loss progress for doctor.plateau_patience epochs while the model is still poor."""
    h = add_steps(history(), [2.3] * 10, ratios=[[1e-3] * 3] * 10, epoch_of=lambda i: 1 + i // 2)
    flat = epochs([2.0, 1.5, 1.5, 1.499, 1.5, 1.51], train_acc=[0.3, 0.5, 0.5, 0.5, 0.5, 0.5])
    [f] = RULES["plateau"](h, flat, CFG, False)
    assert f.evidence["first_epoch"] == 3 and f.evidence["last_epoch"] == 5
    assert "from epoch 3 to 5" in f.message
    converged = epochs([2.0, 0.1, 0.1, 0.1, 0.1], train_acc=[0.5, 0.99, 0.99, 0.99, 0.99])
    assert RULES["plateau"](h, converged, CFG, False) == []
    tiny = add_steps(history(), [2.3] * 10, ratios=[[1e-6] * 3] * 10)
    assert RULES["plateau"](tiny, flat, CFG, False) == []  # that is lr_too_low


# ------------------------------------------------------------------------------------------ X8
def test_input_and_data_rules():
    """X8: unnormalized inputs, class imbalance and a dataset too small, from the recorded facts."""
    h = history()
    h.inputs = {"batches": 3, "channels": 1, "mean": 4.9, "std": 6.0, "min": 0.0, "max": 16.0,
                "worst_abs_mean": 4.9, "max_std": 6.0, "min_std": 6.0}
    [f] = RULES["unnormalized_inputs"](h, [], CFG, False)
    assert "values 0..16" in f.message and "all inputs are positive" in f.message
    h.inputs.update(mean=0.0, std=1.0, min=-1.0, worst_abs_mean=0.01, max_std=1.0, min_std=1.0)
    assert RULES["unnormalized_inputs"](h, [], CFG, False) == []
    h.data["class_counts"] = [124, 90, 60, 40, 30, 20, 15, 10, 8, 6]
    [f] = RULES["class_imbalance"](h, [], CFG, False)
    assert f.evidence["ratio"] == pytest.approx(124 / 6) and "'9' 6 (20.7×" in f.message
    h.data["train_samples"] = 50
    [f] = RULES["small_dataset"](h, [], CFG, False)
    assert "50 training samples for 10 classes (5.0 per class" in f.message
    h.data["train_samples"] = 300
    assert RULES["small_dataset"](h, [], CFG, False) == []


# ------------------------------------------------------------------------------- the whole set
def test_every_code_has_a_rule_feature_and_remedies():
    """X1-X8: the stable codes of the issue, each with its feature ID and the notes' remedies."""
    expected = {"exploding_gradients", "nan_loss", "vanishing_gradients", "dead_relu", "overfitting", "underfitting",
                "high_variance", "lr_too_high", "lr_too_low", "plateau", "unnormalized_inputs", "class_imbalance",
                "small_dataset", "head_dominance"}
    assert set(CODES) == expected == set(RULES)
    for code, (feature, title, remedies) in CODES.items():
        # head_dominance judges the multi-task loss weights (L6), the others the X features
        assert feature in {*(f"X{i}" for i in range(1, 9)), "L6"} and title and len(remedies) >= 2
    with pytest.raises(ValueError):
        Finding("no_such_code", "warning", "x")


def test_history_round_trip_through_json_gives_the_same_diagnosis():
    """X1: NaN in the history becomes null in doctor.json; the rules judge both the same way."""
    h = add_steps(history(), [2.3, 2.0, math.nan], grads=[[1.0] * 3, [1.0] * 3, [math.nan] * 3])
    h.nonfinite += [{"step": 21, "epoch": 2, "what": "loss", "value": "nan"},
                    {"step": 21, "epoch": 2, "what": "gradients", "layers": ["net.0", "net.2", "net.4"]}]
    ep = epochs([2.2, math.nan], val=[2.1, math.nan])
    before = diagnose(h, ep, CFG)
    text = dumps({"history": h.to_dict(), "epochs": ep})
    data = json.loads(text)
    after = diagnose(DoctorHistory.from_dict(data["history"]), data["epochs"], CFG)
    assert [f.to_dict() for f in before] == [f.to_dict() for f in after]
    assert {"nan_loss", "exploding_gradients"} <= codes(after)
    assert [f.code for f in after][:2] == ["nan_loss", "exploding_gradients"]  # errors first, then by step


def test_thresholds_are_validated_recipe_fields():
    """X1-X8: thresholds are typed doctor.* fields; bad values fail naming the field."""
    r = load_recipe("digits-mlp", {"doctor.dead_fraction": 0.5, "doctor.every": 3})
    assert r.doctor.dead_fraction == 0.5 and r.doctor.every == 3
    with pytest.raises(RecipeError, match="doctor.dead_fraction"):
        load_recipe("digits-mlp", {"doctor.dead_fraction": 2})
    with pytest.raises(RecipeError, match="lr_low_ratio"):
        load_recipe("digits-mlp", {"doctor.lr_low_ratio": 0.5})
    with pytest.raises(RecipeError, match="doctor.dead_fractoin: unknown key; did you mean doctor.dead_fraction"):
        load_recipe("digits-mlp", {"doctor.dead_fractoin": 0.5})


def test_number_format():
    assert [num(v) for v in (0, 2e-6, 3.3e-4, 0.0123, 2.3, 999, 1140, 3.1e4)] == \
        ["0", "2e-6", "3.3e-4", "0.0123", "2.3", "999", "1.1e3", "3.1e4"]


def test_inputs_with_nan_are_an_error():
    """X8: NaN/inf in the net's inputs (stored as null in doctor.json) is an error, not a crash."""
    h = history()
    h.inputs = {"batches": 3, "channels": 1, "mean": None, "std": None, "min": None, "max": None,
                "worst_abs_mean": None, "max_std": None, "min_std": None}
    [f] = RULES["unnormalized_inputs"](h, [], CFG, False)
    assert f.severity == "error" and "NaN/inf" in f.message


# ------------------------------------------------------------------------------ review fixes
def test_underfitting_with_mixed_labels_is_judged_on_validation():
    """X5: with CutMix/MixUp the training accuracy and loss are of blended targets (a good model
    stays near 80% and half the initial loss); under-fitting is judged on the validation curve."""
    ep = epochs([1.30, 1.29, 1.26], val=[0.48, 0.43, 0.42], train_acc=[0.76, 0.78, 0.79],
                val_acc=[0.97, 0.98, 0.98])
    h = add_steps(history(), [2.44])
    [f] = RULES["underfitting"](h, ep, CFG, True)  # clean labels: these training numbers are high bias
    assert "training accuracy 79%" in f.message
    h.data["mixed_labels"] = ["cutmix"]
    assert RULES["underfitting"](h, ep, CFG, True) == []
    assert "plateau" not in codes(diagnose(h, ep, CFG))
    bad = epochs([1.9, 1.8, 1.8], val=[1.6, 1.5, 1.5], train_acc=[0.3, 0.35, 0.4], val_acc=[0.4, 0.5, 0.55])
    [f] = RULES["underfitting"](h, bad, CFG, True)
    assert f.message.startswith("underfitting (high bias): validation accuracy 55% after 3 epochs, validation loss 1.5")
    assert "judged on validation because data.batch_augment mixes labels (cutmix)" in f.message
    assert f.evidence["basis"] == "val" and f.evidence["val_accuracy"] == 0.55


def test_mixed_labels_are_read_from_the_batch_augment_specs():
    """X5: mixup and cutmix (when their probability is above 0) blend labels; occlusion ops do not."""
    from trainlab.doctor.monitors import mixed_labels

    specs = ["cutout", {"name": "cutmix", "alpha": 1.0}, {"name": "mixup", "p": 0.0}, "random_erasing"]
    assert mixed_labels(specs) == ["cutmix"]
    assert mixed_labels([{"name": "mixup", "alpha": 0.2}, "cutmix"]) == ["mixup", "cutmix"]
    assert mixed_labels([]) == []


def test_sequence_data_skips_the_per_class_rules_and_the_accuracy_bar():
    """X8/X5: a char-rnn's windows are not samples of one class each, and its vocabulary is not a
    set of classes; next-character accuracy has no 80% bar, so only the loss judges under-fitting."""
    h = add_steps(history(), [3.78])
    h.data.update(task="sequence", train_samples=130, num_classes=44, class_counts=[1] + [30] * 43)
    assert RULES["small_dataset"](h, [], CFG, False) == []
    assert RULES["class_imbalance"](h, [], CFG, False) == []
    ep = epochs([2.0, 1.2, 0.5], val=[2.0, 1.4, 1.5], train_acc=[0.4, 0.6, 0.87], val_acc=[0.4, 0.55, 0.59])
    assert RULES["underfitting"](h, ep[:2], CFG, True) == []  # 60% accuracy, loss at 32% of the start
    slow = epochs([3.4, 2.8, 2.6], train_acc=[0.16, 0.25, 0.29])
    [f] = RULES["underfitting"](h, slow, CFG, True)
    assert f.message.startswith("underfitting (high bias): training loss 2.6 vs 3.78") and "accuracy" not in f.message
    h.data["task"] = "classification"  # the same numbers for a classifier
    assert codes(diagnose(h, [], CFG)) == {"small_dataset", "class_imbalance"}
    assert "training accuracy 60%" in RULES["underfitting"](h, ep[:2], CFG, True)[0].message
    # what the task declares wins over its name (issue 14: the doctor names no task)
    h.data.update(labels_per_sample=False, quality_judges_fit=False)
    assert RULES["small_dataset"](h, [], CFG, False) == [] and RULES["underfitting"](h, ep[:2], CFG, True) == []


def test_a_segmentation_history_is_judged_by_its_declared_score():
    """X4/X5/K3 (issue 14): a task without classification columns is judged by the score it
    declares (mIoU): under-fitting from a low training mIoU, variance from the train/val gap."""
    h = add_steps(history(), [1.6])
    h.data.update(task="segmentation", quality="miou", quality_words="mIoU", quality_judges_fit=True,
                  labels_per_sample=False, train_samples=20, num_classes=5, class_counts=[19, 1, 0, 0, 0])
    ep = epochs([1.0, 0.6, 0.5], val=[1.0, 0.7, 0.6])
    for r, tr, va in zip(ep, [0.3, 0.5, 0.6], [0.3, 0.45, 0.4]):
        r.update(train_miou=tr, val_miou=va)
    [under] = RULES["underfitting"](h, ep, CFG, True)
    assert "training mIoU 60%" in under.message and "accuracy" not in under.message
    [var] = RULES["high_variance"](h, ep, CFG, True)
    assert "training mIoU 60% vs validation 40%" in var.message and var.evidence["gap"] == pytest.approx(0.2)
    assert RULES["small_dataset"](h, [], CFG, False) == [] and RULES["class_imbalance"](h, [], CFG, False) == []


def test_findings_reported_during_training_stay_in_the_diagnosis_marked_resolved():
    """X3: a dead-unit finding printed in epoch 1 whose units revive by epoch 3 is listed as an info
    finding marked resolved, so the final table holds every finding that was printed."""
    h = history()
    h.activations = [{"name": "net.1", "type": "ReLU", "units": 100, "floor": 0.0}]
    h.liveness = [{"epoch": 1, "batches": 3, "dead": [0.4]}]
    [f] = diagnose(h, epochs([2.0]), CFG, done=False)
    h.reported.append({"code": f.code, "severity": f.severity, "message": f.message, "epoch": f.epoch,
                       "step": f.step, "layers": list(f.layers), "reported_epoch": 1})
    assert diagnose(h, epochs([2.0]), CFG, done=False) == [f]
    h.liveness += [{"epoch": 2, "batches": 3, "dead": [0.1]}, {"epoch": 3, "batches": 3, "dead": [0.0]}]
    [r] = diagnose(h, epochs([2.0, 1.0, 0.5]), CFG, done=True)
    assert (r.code, r.severity, r.feature, r.layers) == ("dead_relu", "info", "X3", ("net.1",))
    assert r.message == f"resolved (reported as warning in epoch 1 of training, not found at epoch 3): {f.message}"
    assert r.evidence["resolved"] is True and r.remedies == f.remedies
    restored = DoctorHistory.from_dict(json.loads(dumps(h.to_dict())))
    assert diagnose(restored, epochs([2.0, 1.0, 0.5]), CFG) == [r]
    # Only the codes asked for (the quick check during a step) get their resolved entry.
    assert diagnose(h, epochs([2.0, 1.0, 0.5]), CFG, codes=("nan_loss",)) == []


def test_dead_units_of_hardtanh_are_judged_against_its_floor():
    """X3: Hardtanh passes no gradient below min_val; its dead units are those never above it."""
    h = history()
    h.activations = [{"name": "net.1", "type": "Hardtanh", "units": 16, "floor": -1.0}]
    h.liveness = [{"epoch": 1, "batches": 2, "dead": [0.5]}]
    [f] = RULES["dead_relu"](h, [], CFG, False)
    assert f.message.startswith("50% of Hardtanh units in net.1 are dead: never above -1 (no gradient below it)")


def test_one_divergence_test_for_the_rules_and_the_remedies():
    """X6, X9: a loss has diverged when it exceeds diverge_factor x the initial loss (the first finite sampled
    loss, else the first epoch's mean); a NaN/inf loss never passes, and without a positive finite initial
    loss nothing counts as diverged. The lr_too_high rule and the remedies' choice of a state to keep
    (a good epoch, a healthy sample) use this one test."""
    from trainlab.doctor.remedies import Remedies
    from trainlab.doctor.rules import initial_loss, within_divergence

    cfg = DoctorConfig()  # diverge_factor 2
    assert within_divergence(2.0, 1.0, cfg) and not within_divergence(2.01, 1.0, cfg)
    assert not within_divergence(math.nan, 1.0, cfg) and not within_divergence(math.inf, None, cfg)
    for init in (None, math.nan, math.inf, 0.0, -2.0):
        assert within_divergence(1e6, init, cfg) and within_divergence(-1.0, init, cfg)

    good = Remedies(cfg)._good_epoch
    # Every sampled loss NaN (stored as None): the initial loss is the first epoch's mean.
    h = add_steps(history(), [math.nan, math.nan])
    assert initial_loss(h, epochs([1.0, 5.0])) == 1.0
    assert not good(h, epochs([1.0, 5.0])) and good(h, epochs([1.0, 1.5]))
    # A non-positive initial loss is no reference (the rule says the same: no divergence finding).
    h = add_steps(history(), [-2.0, -3.0])
    assert good(h, epochs([-1.0, -1.5]))
    assert "lr_too_high" not in codes(diagnose(h, epochs([-1.0, -1.5]), cfg, done=True))
    assert not good(h, epochs([-1.0, math.inf]))
