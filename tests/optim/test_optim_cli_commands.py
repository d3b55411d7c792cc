"""`trainlab schedule` (O6) and `trainlab lr-find` (O9), run in-process through the CLI entry point."""
from __future__ import annotations

import re

import pytest

from trainlab.api import build_components
from trainlab.cli import COMMANDS, main
from trainlab.errors import RecipeError
from trainlab.optim.lr_finder import check_range_test_options
from trainlab.optim.schedules import optimizer_steps_per_epoch
from trainlab.recipe import load_recipe

PNG = b"\x89PNG\r\n\x1a\n"


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("overrides", [[], ["data.batch_size=100", "train.accumulate=3"], ["optim.name=gd"],
                                       ["data.batch_size=full"]])
def test_steps_per_epoch_without_a_model_matches_the_trainer(overrides):
    """O6: the schedule command counts optimizer steps per epoch exactly as the trainer does."""
    recipe = load_recipe("digits-mlp", ["model.width=8", "model.depth=1", "optim.nesterov=false"] + overrides)
    trainer = build_components(recipe)
    assert optimizer_steps_per_epoch(recipe, len(trainer.bundle.train)) == trainer.steps_per_epoch
    # ... and as the loop takes them: one step per `accumulate` batches, a short last group included
    assert trainer.steps_per_epoch == -(-len(trainer.train_loader) // recipe.train.accumulate)
    assert sum(1 for _ in trainer.train_loader.index_batches(0)) == len(trainer.train_loader)


def test_schedule_command_draws_lr_and_momentum(tmp_path, capsys):
    """O6: `trainlab schedule` writes the PNG and prints one summary line (momentum for one-cycle)."""
    out = tmp_path / "lr.png"
    assert main(["schedule", "digits-mlp", "schedule.name=onecycle", "train.epochs=5", "--out", str(out)]) == 0
    line = one_line(capsys.readouterr().out)
    spe = int(re.search(r"5 epochs x (\d+) steps", line).group(1))
    assert spe == 20 and "momentum 0.85..0.95" in line and str(out) in line
    assert out.read_bytes()[:8] == PNG


def test_schedule_command_plateau_states_its_assumption(tmp_path, capsys):
    """O6: plateau depends on metrics: it is drawn for a flat metric, and the line says so."""
    out = tmp_path / "p.png"
    assert main(["schedule", "digits-mlp", "schedule.name=plateau", "schedule.patience=1", "--out", str(out)]) == 0
    assert "assuming a flat val_loss" in one_line(capsys.readouterr().out)
    assert out.exists()


def test_lr_find_command_prints_the_suggestion(tmp_path, capsys):
    """O9: `trainlab lr-find` draws loss against LR and prints one line with the suggested LR."""
    out = tmp_path / "new" / "folder" / "lrfind.png"  # missing folders are created
    code = main(["lr-find", "digits-mlp", "model.width=16", "model.depth=1", "data.subset=256",
                 "--steps", "25", "--out", str(out)])
    line = one_line(capsys.readouterr().out)
    assert code == 0 and "suggested lr" in line and "optim.lr=" in line
    assert out.read_bytes()[:8] == PNG
    assert "schedule" in COMMANDS and "lr-find" in COMMANDS


@pytest.mark.parametrize("argv,needle", [
    (["schedule", "digits-mlp", "schedule.name=cyclic", "schedule.base_lr=5"], "schedule.base_lr"),
    (["schedule", "digits-mlp", "schedule.name=cosin"], "schedule.name"),
    (["schedule", "digits-mlp", "schedule.T_mult=0"], "schedule.T_mult"),
    (["schedule", "digits-mlp", "--out", "a-file/lr.png"], "--out"),
    (["schedule", "digits-mlp", "--out", "lr.jpg"], "--out"),
    (["schedule", "digits-mlp", "schedule.name=plateau", "schedule.monitor=val_foo"], "schedule.monitor"),
    (["schedule", "digits-mlp", "schedule.name=plateau", "data.split.val=0"], "schedule.monitor"),
    (["lr-find", "digits-mlp", "--end-lr", "1e-9"], "start_lr"),
    (["lr-find", "digits-mlp", "--out", "a-file/lrfind.png"], "--out"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys, monkeypatch):
    """O6/O9: user errors end with exit code 2 and one line naming the field."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    assert main(argv) == 2
    err = one_line(capsys.readouterr().err)
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("monitor,overrides", [("val_foo", []), ("train_acc", []), ("val_loss", ["data.split.val=0", "train.early_stop=null"])])
def test_schedule_rejects_the_plateau_monitors_fit_rejects(monitor, overrides, tmp_path, capsys):
    """O6: `schedule` checks schedule.monitor of a plateau schedule against the metrics the task
    records, exactly as fit does: same one-line error (exit 2), nothing drawn."""
    argv = ["digits-mlp", "schedule.name=plateau", f"schedule.monitor={monitor}", *overrides]
    out = tmp_path / "lr.png"
    assert main(["schedule", *argv, "--out", str(out)]) == 2
    err = one_line(capsys.readouterr().err)
    with pytest.raises(RecipeError) as fit_error:
        build_components(load_recipe(argv[0], argv[1:]))
    assert err.endswith(f"error: {fit_error.value}") and "schedule.monitor" in err
    assert not out.exists()


def test_schedule_accepts_a_known_plateau_monitor_and_creates_folders(tmp_path, capsys):
    """O6: a monitor the task records is drawn; missing folders of --out are created."""
    out = tmp_path / "a" / "b" / "lr.png"
    argv = ["schedule", "digits-mlp", "schedule.name=plateau", "schedule.monitor=val_macro_f1", "--out", str(out)]
    assert main(argv) == 0
    assert "assuming a flat val_macro_f1" in one_line(capsys.readouterr().out)
    assert out.read_bytes()[:8] == PNG


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("option,value,needle", [
    ("diverge", NAN, "diverge"), ("diverge", INF, "diverge"), ("diverge", 1.0, "diverge"),
    ("start_lr", NAN, "start_lr"), ("start_lr", -1.0, "start_lr"),
    ("end_lr", NAN, "end_lr"), ("end_lr", INF, "end_lr"),
    ("smoothing", NAN, "smoothing"), ("smoothing", 1.0, "smoothing"), ("smoothing", -0.1, "smoothing"),
])
def test_lr_find_options_reject_nan_and_out_of_range(option, value, needle):
    """O9: every float option of the range test is checked so that NaN fails (NaN compares false
    with everything, so `diverge <= 1` let it through), and the LRs and diverge must be finite."""
    options = {"start_lr": 1e-7, "end_lr": 10.0, "steps": 100, "smoothing": 0.9, "diverge": 4.0}
    check_range_test_options(**options)  # the defaults pass
    options[option] = value
    with pytest.raises(RecipeError, match=needle):
        check_range_test_options(**options)


@pytest.mark.parametrize("flag", ["--diverge", "--start-lr", "--end-lr", "--smoothing"])
def test_lr_find_cli_rejects_nan_before_building(flag, tmp_path, capsys, monkeypatch):
    """O9: `trainlab lr-find --diverge nan` (and the other float options) exit 2 with one line, and
    the check comes before the data and model are built."""
    import trainlab.api

    def no_build(*args, **kwargs):
        raise AssertionError("built components before checking the options")

    monkeypatch.setattr(trainlab.api, "build_components", no_build)
    assert main(["lr-find", "digits-mlp", flag, "nan", "--out", str(tmp_path / "x.png")]) == 2
    err = one_line(capsys.readouterr().err)
    assert "nan" in err and "Traceback" not in err


def test_schedule_rejects_the_early_stop_monitor_fit_rejects(tmp_path, capsys):
    """O6/T2: `trainlab schedule digits-cnn train.early_stop.monitor=val_acc` exits 2 with the line fit gives
    (it used to check only a plateau schedule's monitor, and drew the schedule)."""
    out = tmp_path / "lr.png"
    assert main(["schedule", "digits-cnn", "train.early_stop.monitor=val_acc", "--out", str(out)]) == 2
    schedule_err = one_line(capsys.readouterr().err)
    assert main(["fit", "digits-cnn", "train.early_stop.monitor=val_acc", f"run.dir={tmp_path / 'run'}"]) == 2
    fit_err = one_line(capsys.readouterr().err)
    assert "train.early_stop.monitor: unknown metric 'val_acc'" in schedule_err
    assert schedule_err.split(": error: ", 1)[1] == fit_err.split(": error: ", 1)[1]
    assert not out.exists() and not (tmp_path / "run").exists()
