"""The CLI contract end to end: fit, evaluate, predict, recipes, and one-line errors (exit 2)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FAST, assert_user_error, run_cli

from trainlab.cli import main


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One real `trainlab fit` (plots and TensorBoard on) shared by the tests below."""
    root = tmp_path_factory.mktemp("cli")
    proc = run_cli("fit", "digits-cnn", "train.epochs=2", "train.progress=false", f"run.dir={root / 'run'}", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run", proc


def test_fit_writes_the_run_directory(trained_run):
    """K1/T1/V1/V2/V5: image classification end to end: fit prints a per-epoch table and writes
    every artifact of a run."""
    run, proc = trained_run
    assert "epoch" in proc.stdout and "val_acc" in proc.stdout and "test: accuracy" in proc.stdout
    for rel in ("recipe.yaml", "metrics.jsonl", "summary.json", "report.md", "checkpoints/best.safetensors",
                "checkpoints/best.json", "checkpoints/last.safetensors", "checkpoints/last.json",
                "plots/loss.png", "plots/accuracy.png", "plots/lr.png", "plots/confusion.png"):
        assert (run / rel).is_file(), rel
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    for key in ("best_epoch", "epochs_run", "wall_s"):
        assert key in summary
    assert {"accuracy", "macro_f1", "loss"} <= set(summary["test"]) and summary["val"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "time_s"} <= set(records[0])
    report = (run / "report.md").read_text()
    assert "## Metrics" in report and "plots/loss.png" in report


def test_evaluate_json_creates_missing_folders(trained_run, tmp_path, capsys, monkeypatch):
    """E1: `trainlab evaluate RUN --json new/m.json` creates the missing folder (the output policy of
    cli/outputs.py); a file where a folder should be is one line, exit 2, found before evaluating."""
    from trainlab.run import Run

    run, _ = trained_run
    out = tmp_path / "new" / "m.json"
    assert main(["evaluate", str(run), "--split", "val", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["split"] == "val" and len(data["confusion"]) == 10
    assert f"written: {out}" in capsys.readouterr().out
    (tmp_path / "a-file").write_text("not a folder")

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before the output path was checked")

    monkeypatch.setattr(Run, "evaluate", no_evaluation)
    assert main(["evaluate", str(run), "--json", str(tmp_path / "a-file" / "m.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'a-file' is a file, not a folder" in err[0].replace(str(tmp_path) + "/", "")


def test_evaluate_and_predict(trained_run, tmp_path):
    """E1: evaluate prints metrics and a confusion matrix and writes JSON; predict prints top-k."""
    run, _ = trained_run
    proc = run_cli("evaluate", run, "--split", "val", "--checkpoint", "last")
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "confusion matrix" in proc.stdout
    data = json.loads((run / "eval-val-last.json").read_text())
    assert data["split"] == "val" and len(data["confusion"]) == 10
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.save(tmp_path / "one.npy", digits.images[0])
    np.save(tmp_path / "many.npy", digits.images[:3, None])
    proc = run_cli("predict", run, tmp_path / "one.npy", tmp_path / "many.npy", "--topk", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith(str(tmp_path / "one.npy"))
    probs = [float(tok) for tok in lines[1].split(": ")[1].replace(",", "").split()[1::2]]
    assert len(probs) == 2 and probs[0] >= probs[1] and 0 <= probs[0] <= 1


def test_recipes_lists_builtins_with_a_description():
    proc = run_cli("recipes")
    assert proc.returncode == 0
    line = next(line for line in proc.stdout.splitlines() if line.startswith("digits-cnn"))
    assert len(line.split(None, 1)[1]) > 10


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    proc = run_cli("fit", "digits-cnn", "optim.lr=-1", cwd=tmp_path)
    assert_user_error(proc, "optim.lr")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["fit", "digits-cn"], ["unknown recipe 'digits-cn'", "digits-cnn"]),
        (["fit", "data.name=digitz"], ["data.name", "'digits'"]),
        (["fit", "model.name=resnet-18"], ["model.name", "known:"]),
        (["fit", "optim.name=adamm"], ["optim.name", "'adam'"]),
        (["fit", "schedule.name=cosin"], ["schedule.name", "'cosine'"]),
        (["fit", "optim.lr=0"], ["optim.lr", "greater than 0"]),
        (["fit", "train.epochs=0"], ["train.epochs"]),
        (["fit", "data.batch_size=0"], ["data.batch_size"]),
        (["fit", "data.split.val=0.6", "data.split.test=0.4"], ["val + test must be < 1"]),
        (["fit", "data.name=folder"], ["data.root"]),
        (["fit", "data.name=folder", "data.root=/nonexistent/x"], ["data.root", "does not exist"]),
        (["fit", "train.early_stop.monitor=val_acc"], ["train.early_stop.monitor", "val_accuracy"]),
        (["fit", "optim.lr"], ["unknown recipe 'optim.lr'", "key=value"]),
        (["evaluate", "."], ["not a run directory"]),
        (["predict", ".", "x.npy"], ["not a run directory"]),
        (["evaluate", "/nonexistent/run"], ["is not a folder"]),
        (["fitt"], ["unknown command 'fitt'", "fit"]),
    ],
)
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(argv, needles, tmp_path, monkeypatch, capsys):
    """Bad input: exit 2, one line naming the problem and what is allowed, no run directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "emptyroot").mkdir()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (tmp_path / "runs").exists()


def test_empty_data_root_and_existing_run_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["fit", "data.name=folder", "data.root=empty"]) == 2
    assert "no class sub-folders" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert main(["fit", "run.dir=taken", *FAST]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
