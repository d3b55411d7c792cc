"""Issue 22, points 4 and 5: a batch larger than the training split trains with one batch of the
whole split (D8) and says so in one line; `--resume` on a finished run says so and exits 0 without
touching the run (T3); the README's examples and its sentence on recipe defaults hold."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import FAST, stopped_and_resumed

import trainlab
from trainlab.cli import main
from trainlab.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
NOTE = "data: data.batch_size=64 is larger than the training split (30 samples); training with one batch of 30"


def test_a_batch_larger_than_the_split_trains_one_batch_and_says_so(tmp_path, capsys):
    """Issue 22 / D8: `trainlab fit data.batch_size=64` on a 30-sample training split exits 0, prints one
    line on stderr, takes one optimizer step per epoch, and the run's recipe keeps the 64 asked for."""
    run = tmp_path / "run"
    code = main(["fit", "data.subset=30", "data.batch_size=64", *FAST, f"run.dir={run}", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert [line for line in err.splitlines() if line.strip()] == [NOTE]
    epochs = trainlab.open_run(run).epochs()
    assert [r["step"] for r in epochs] == [1, 2]  # one batch of the whole split per epoch
    assert load_recipe(run / "recipe.yaml").data.batch_size == 64


def test_a_batch_larger_than_the_split_resumes_bit_for_bit(tmp_path, capsys):
    """Issue 22 / T3: a run trained with one batch of the whole split (64 > 30) stopped after epoch 1 and
    resumed ends with the same weights as the run never stopped."""
    stopped_and_resumed(["data.subset=30", "data.batch_size=64", *FAST], tmp_path)
    assert capsys.readouterr().err.count(NOTE) == 3  # said once per training process, resume included


def test_an_empty_training_split_is_still_a_one_line_data_error(tmp_path):
    """Issue 22: with the batch-size refusal gone, an empty training split (2 samples, 90% held out)
    is refused by name rather than trained on."""
    from trainlab.data import build_data
    from trainlab.data.bundle import DataInfo, TensorSource
    from trainlab.errors import DataError
    from trainlab.registry import DATASETS

    def tiny(cfg, seed):
        return TensorSource(torch.randn(2, 4), torch.zeros(2, dtype=torch.long)), DataInfo((4,), 2, ["a", "b"],
                                                                                           kind="flat")

    DATASETS.register("test-two-samples", help="throwaway data set of two samples")(tiny)
    try:
        recipe = load_recipe({"name": "tiny", "data": {"name": "test-two-samples", "split": {"val": 0.5, "test": 0.4}},
                              "model": {"name": "mlp"}})
        with pytest.raises(DataError, match=r"^the training split is empty \(2 samples in all; see data.split.val "
                                            r"and data.split.test\)$"):
            build_data(recipe)
    finally:
        DATASETS._entries.pop("test-two-samples", None)


def _files(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _refuse_building(monkeypatch):
    import trainlab.api

    def build_components(*args, **kwargs):
        raise AssertionError("a finished run must not build data or a trainer")

    monkeypatch.setattr(trainlab.api, "build_components", build_components)


def test_resuming_a_finished_run_says_so_and_touches_nothing(tmp_path, capsys, monkeypatch):
    """Issue 22 / T3: `trainlab fit --resume RUN` on a run that trained all its epochs prints one line
    and exits 0, without building data, evaluating or writing anything."""
    run = trainlab.fit("digits-mlp", [*FAST, f"run.dir={tmp_path / 'run'}"], quiet=True).dir
    best = trainlab.open_run(run).summary()["best_epoch"]
    before = _files(run)
    capsys.readouterr()
    _refuse_building(monkeypatch)
    assert main(["fit", "--resume", str(run)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{run}: finished (2 of 2 epochs, best epoch {best}); nothing to resume "
                                "(train.epochs=N with N > 2 trains on)"], out
    assert err == ""
    assert main(["fit", "--resume", str(run), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert _files(run) == before


def test_resuming_an_early_stopped_run_says_so_even_with_more_epochs(tmp_path, capsys, monkeypatch):
    """Issue 22 / T2, T3: an early-stopped run is finished: resuming it (even with a larger train.epochs)
    names the stop and leaves the run as it is."""
    stop = "train.early_stop={monitor: val_loss, patience: 1, min_delta: 100}"  # never improves after epoch 1
    run = trainlab.fit("digits-mlp", [*FAST, "train.epochs=4", stop, f"run.dir={tmp_path / 'run'}"], quiet=True).dir
    assert trainlab.open_run(run).summary()["epochs_run"] == 2
    before = _files(run)
    capsys.readouterr()
    _refuse_building(monkeypatch)
    assert main(["fit", "--resume", str(run), "train.epochs=10"]) == 0
    line, = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{run}: finished (2 of 10 epochs, best epoch 1; early stop: val_loss has not improved")
    assert line.endswith("); nothing to resume")
    assert _files(run) == before


def test_a_finished_run_still_extends_and_one_killed_while_finishing_is_finished(tmp_path, capsys):
    """Issue 22 / T3: `--resume RUN train.epochs=3` on a finished 2-epoch run trains epoch 3 (extending
    is not resuming a finished run); a run whose summary and report were never written (killed while
    finishing) is finished by resuming it, without training again."""
    run = trainlab.fit("digits-mlp", [*FAST, f"run.dir={tmp_path / 'run'}"], quiet=True).dir
    trainlab.fit(resume=run, overrides=["train.epochs=3"], quiet=True)
    assert [r["epoch"] for r in trainlab.open_run(run).epochs()] == [1, 2, 3]
    assert load_recipe(run / "recipe.yaml").train.epochs == 3

    (run / "summary.json").unlink()
    (run / "report.md").unlink()
    trainlab.fit(resume=run, quiet=True)
    assert trainlab.open_run(run).summary()["epochs_run"] == 3
    assert (run / "report.md").exists()
    assert [r["epoch"] for r in trainlab.open_run(run).epochs()] == [1, 2, 3]


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_the_readme_fit_examples_pass_the_recipe_and_data_checks():
    """Issue 22, point 5: every `trainlab fit RECIPE key=value...` line of the README's tour (its
    `my-recipe.yaml` being a copy of the default recipe) and the overrides paragraph's examples pass
    the checks that run before training (names, data options, D7's label-changing augmentations)."""
    from trainlab.data import build_data
    from trainlab.recipe import check_names

    lines = [line.split("#")[0].split() for line in _readme().splitlines() if line.strip().startswith("trainlab fit ")]
    examples = [words[2:] for words in lines if any("=" in w for w in words)]
    assert any("data.augment=" in w for words in examples for w in words)  # the override example is checked
    inline = re.search(r"Overrides are dotted keys[^\n]*\n[^\n]*", _readme()).group(0)
    examples.append([w.strip("`,") for w in re.findall(r"`[a-z_.]+=[^`]+`", inline)])
    for words in examples:
        recipe, overrides = (words[0], words[1:]) if "=" not in words[0] else (None, words)
        if recipe == "my-recipe.yaml":
            recipe = ROOT / "src" / "trainlab" / "recipes" / "digits-cnn.yaml"
        r = load_recipe(recipe, overrides)
        check_names(r)
        build_data(r, statistics=False)


def test_the_readme_says_what_a_recipe_file_leaves_out_and_how_to_see_it(tmp_path, capsys):
    """Issue 22, point 5: a section left out of a recipe file takes the schema's defaults, not the default
    recipe's, as the README says (adam at 0.001, 10 epochs), and `trainlab recipes --show FILE` shows them."""
    text = " ".join(_readme().split())
    assert "takes the schema's default, not the default recipe's" in text
    assert "a file without `optim` trains with `adam` at lr 0.001" in text
    assert "and one without `train` for 10 epochs" in text
    assert "`trainlab recipes --show NAME` (a built-in name or a YAML path)" in text
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\n")
    r, default = load_recipe(mine), load_recipe(None)
    assert (r.optim.name, r.optim.lr, r.train.epochs) == ("adam", 0.001, 10)
    assert (default.optim.name, default.optim.lr, default.train.epochs) == ("adamw", 0.003, 30)
    assert main(["recipes", "--show", str(mine)]) == 0
    shown = capsys.readouterr().out
    assert load_recipe(mine).to_yaml() == shown
    assert re.search(r"^optim:\n  name: adam\n  lr: 0.001\n", shown, re.M)
