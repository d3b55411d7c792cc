"""`trainlab schedule` (O6) and `trainlab lr-find` (O9), run in-process through the CLI entry point."""
from __future__ import annotations

import re

import pytest

from trainlab.api import build_components
from trainlab.cli import COMMANDS, main
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
    out = tmp_path / "lrfind.png"
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
    (["schedule", "digits-mlp", "--out", "/no/such/folder/lr.png"], "--out"),
    (["lr-find", "digits-mlp", "--end-lr", "1e-9"], "start_lr"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys, monkeypatch):
    """O6/O9: user errors end with exit code 2 and one line naming the field."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = one_line(capsys.readouterr().err)
    assert needle in err and "Traceback" not in err
