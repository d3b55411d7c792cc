"""report.md (V5): the metrics table follows the metrics the task reports, and the report is written from the
recipe and history the trainer holds or, standalone, from the run directory."""
from __future__ import annotations

import json
import math

from trainlab.recipe import load_recipe
from trainlab.report.markdown import metrics_table, write_report
from trainlab.run import Run


def _summary(val, test=None):
    return {"epochs_run": 2, "wall_s": 1.0, "train_time_s": 0.5, "best_epoch": 2, "monitor": "val_loss",
            "best_value": val["loss"], "checkpoint": "best", "stop_reason": None, "class_names": [], "val": val,
            "test": test}


def test_classification_table_keeps_its_columns():
    """V5: a classification run's table: loss, accuracy, the macro averages and top-k, one row per split."""
    val = {"accuracy": 0.9, "macro_precision": 0.8, "macro_recall": 0.7, "macro_f1": 0.75,
           "per_class": {"precision": [1.0]}, "loss": 0.25, "top5_accuracy": 1.0, "confusion": [[1]], "n": 10}
    table = metrics_table(_summary(val, dict(val, loss=0.5))).splitlines()
    assert table[0] == "| split | loss | accuracy | macro_precision | macro_recall | macro_f1 | top5_accuracy |"
    assert table[1] == "|---|---|---|---|---|---|---|"
    assert table[2] == "| val | 0.2500 | 0.9000 | 0.8000 | 0.7000 | 0.7500 | 1.0000 |"
    assert table[3].startswith("| test | 0.5000 |") and len(table) == 4


def test_sequence_table_shows_perplexity_and_bits_per_char():
    """V5/K6: a char-rnn run's table has perplexity and bits per character, and no empty classification columns."""
    loss = 1.5
    val = {"loss": loss, "accuracy": 0.5, "perplexity": math.exp(loss), "bits_per_char": loss / math.log(2), "n": 99}
    table = metrics_table(_summary(val)).splitlines()
    assert table[0] == "| split | loss | accuracy | perplexity | bits_per_char |"
    assert table[2] == f"| val | 1.5000 | 0.5000 | {math.exp(1.5):.4f} | {1.5 / math.log(2):.4f} |"
    assert len(table) == 3


def test_report_from_the_trainer_matches_the_standalone_report(tmp_path):
    """V5: write_report given the recipe and history writes what it writes when it reads recipe.yaml and
    metrics.jsonl itself."""
    recipe = load_recipe("char-rnn", ["name=seq-report"])
    run = Run.create(recipe, tmp_path / "run")
    history = [{"epoch": 1, "step": 4, "lr": 0.01, "train_loss": 2.0},
               {"event": "optimizer_switch", "epoch": 2, "step": 6, "message": "adam -> sgd at epoch 2"},
               {"epoch": 2, "step": 8, "lr": 0.01, "train_loss": 1.5}]
    val = {"loss": 1.5, "accuracy": 0.5, "perplexity": math.exp(1.5), "bits_per_char": 1.5 / math.log(2), "n": 9}
    summary = _summary(val)
    write_report(run, summary, recipe, history)
    given = run.report_path.read_text()
    assert "# Run report: seq-report" in given
    assert "- epoch 2, step 6: **optimizer_switch**: adam -> sgd at epoch 2" in given
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    write_report(run, summary)
    assert run.report_path.read_text() == given
    run.metrics_path.unlink()
    run.recipe_path.unlink()  # given recipe and history: the run directory is not read
    write_report(run, summary, recipe, history)
    assert run.report_path.read_text() == given


def test_plots_from_the_given_epochs(tmp_path):
    """V1: plot_run draws the epoch records it is given (the trainer's) without metrics.jsonl in the run."""
    from trainlab.report.plots import plot_run

    run = Run.create(load_recipe("digits-mlp"), tmp_path / "run")
    epochs = [{"epoch": 1, "lr": 0.1, "train_loss": 2.0, "val_loss": 2.1},
              {"epoch": 2, "lr": 0.05, "train_loss": 1.0, "val_loss": None}]
    paths = plot_run(run, {"best_epoch": 1, "val": None, "test": None}, epochs)
    assert not run.metrics_path.exists()
    assert sorted(p.name for p in paths) == ["loss.png", "lr.png"]  # no accuracy in these records
