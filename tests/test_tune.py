"""T6: hyper-parameter search on Optuna (`trainlab tune`): search spaces over recipe keys, pruning on
the per-epoch validation metric, every trial an ordinary run, studies that survive a killed process
and take several workers; bad spaces refused before anything is written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, cli_env

optuna = pytest.importorskip("optuna")

import trainlab  # noqa: E402
from trainlab.cli import main  # noqa: E402
from trainlab.recipe import load_recipe  # noqa: E402

HERE = Path(__file__).resolve().parent
TINY = [*FAST, "data.subset=200", "model.width=16", "doctor.enabled=false"]
SPACE = "optim.lr: {type: loguniform, low: 1.0e-3, high: 0.3}\nmodel.dropout: {type: uniform, low: 0.0, high: 0.4}\n"


def _space(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _study(folder: Path):
    settings = json.loads((folder / "tune.json").read_text())
    return optuna.load_study(study_name=settings["study"], storage=settings["storage"])


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file() and p.name != ".trainlab.lock"}


def _trained_once(run: Path) -> None:
    """A trial's run trained each epoch exactly once, in one process (never resumed or rerun)."""
    epochs = [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "event" not in r]
    assert epochs == list(range(1, len(epochs) + 1)), (run, epochs)
    assert not (run / "checkpoints" / "last.safetensors").stat().st_size == 0


@pytest.mark.parametrize("text, needles", [
    ("optim.lrr: {type: loguniform, low: 1.0e-3, high: 0.1}\n", ["optim.lrr", "unknown key", "did you mean optim.lr"]),
    ("optim.lr: {type: loguniform, low: 0.1, high: 0.1}\n", ["optim.lr", "empty range"]),
    ("model.width: {type: int, low: 64, high: 16}\n", ["model.width", "empty range"]),
    ("optim.name: {type: categorical, choices: []}\n", ["optim.name", "empty range"]),
    ("optim.name: {type: categorical, choices: [adam, sgdd]}\n", ["optim.name", "sgdd"]),
    ("model.dropout: {type: uniform, low: 0.0, high: 1.5}\n", ["model.dropout=1.5", "less than 1"]),
    ("run.dir: {type: categorical, choices: [a]}\n", ["run.dir", "set by the search"]),
    ("optim.lr: {type: normal, low: 0, high: 1}\n", ["optim.lr.type"]),
])
def test_a_bad_search_space_is_one_line_and_touches_nothing(tmp_path, capsys, text, needles):
    """T6 / bad input: a space naming an unknown recipe key, an empty range or a value the recipe refuses
    exits 2 with one line naming it; no tuning folder, study or run is created."""
    out = tmp_path / "tune"
    code = main(["tune", "digits-mlp", *TINY, f"run.dir={out}", "--space", str(_space(tmp_path, text)), "--trials", "2"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists()


def test_a_bad_resume_or_worker_count_is_one_line(tmp_path, capsys):
    """T6 / bad input: --resume of a folder that holds no search, --workers 0, a missing --space."""
    (tmp_path / "empty").mkdir()
    assert main(["tune", "--resume", str(tmp_path / "empty")]) == 2
    assert "not a tuning folder" in capsys.readouterr().err
    assert main(["tune", "digits-mlp", "--space", str(_space(tmp_path)), "--trials", "2", "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(["tune", "digits-mlp", "--trials", "2"]) == 2
    assert "--space" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []
    out = tmp_path / "tune"
    assert main(["tune", "digits-mlp", *TINY, f"run.dir={out}", "--space", str(_space(tmp_path)), "--trials", "2",
                 "--storage", "nosuchdb://host/db"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--storage" in err[0] and not out.exists()


def test_joining_a_shared_study_that_optimises_another_metric_is_refused(tmp_path, capsys):
    """T6 / bad input: Optuna joins an existing study whatever direction is asked, so a second machine
    searching val loss (minimised) would feed losses into a study maximising val accuracy. `--storage` with
    another --metric exits 2 with one line; its tuning folder is not created and the study is unchanged."""
    from trainlab.tune import start

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    start("digits-mlp", str(_space(tmp_path)), 2, [*TINY, f"run.dir={tmp_path / 'a'}"], storage=url, study="s")
    for metric in ("loss", "macro_f1"):  # another direction; the same direction but another measure
        out = tmp_path / f"b-{metric}"
        code = main(["tune", "digits-mlp", *TINY, f"run.dir={out}", "--space", str(_space(tmp_path)), "--trials", "2",
                     "--storage", url, "--study", "s", "--metric", metric])
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "val accuracy" in lines[0] and f"val {metric}" in lines[0], lines
        assert not out.exists()
    study = optuna.load_study(study_name="s", storage=url)
    assert study.direction.name == "MAXIMIZE" and study.trials == []
    assert study.user_attrs == {"trainlab_metric": "accuracy"}
    # the same metric joins (a second machine's folder)
    start("digits-mlp", str(_space(tmp_path)), 2, [*TINY, f"run.dir={tmp_path / 'c'}"], storage=url, study="s")
    assert (tmp_path / "c" / "tune.json").is_file()


@pytest.mark.parametrize("text, needle", [
    ('{"trials": ', "not valid JSON"), ("[1]", "expected a JSON object"),
    ('{"trials": "3", "metric": "accuracy"}', "trials: expected an integer"),
])
def test_a_damaged_settings_file_is_one_line_on_resume(tmp_path, capsys, text, needle):
    """T6 / bad input: --resume (with or without --trials) of a folder whose tune.json is truncated or
    edited by hand exits 2 with one line naming the file; the file is left as it was."""
    folder = tmp_path / "tune"
    folder.mkdir()
    (folder / "tune.json").write_text(text)
    for extra in ([], ["--trials", "3"]):
        assert main(["tune", "--resume", str(folder), *extra]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and "tune.json" in lines[0] and needle in lines[0], lines
    assert (folder / "tune.json").read_text() == text and [p.name for p in folder.iterdir()] == ["tune.json"]


def test_the_reporter_prunes_as_optunas_median_pruner_decides_and_the_run_stops_cleanly(tmp_path):
    """T6: the trainer callback reports val accuracy per epoch to the Optuna trial; when Optuna's median
    pruner says prune (a first trial reported 1.0 at every epoch), the run stops after that epoch with its
    summary and report written, and the stop reason says why."""
    from trainlab.tune import PruningReporter

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask()
    for epoch in (1, 2, 3):
        first.report(1.0, epoch)
    study.tell(first, 1.0)
    trial = study.ask()
    reporter = PruningReporter(trial, "val_accuracy")
    run = trainlab.fit("digits-mlp", [*TINY, "train.epochs=3", f"run.dir={tmp_path / 'run'}"], quiet=True,
                       callbacks=[reporter])
    assert reporter.pruned_at == 1
    summary = run.summary()
    assert summary["epochs_run"] == 1 and summary["stop_reason"].startswith("pruned by the search at epoch 1")
    assert trial.should_prune()  # Optuna's own decision on what was reported
    epoch1 = run.epochs()[0]["val_accuracy"]
    assert study.trials[1].intermediate_values == {1: epoch1} and epoch1 < 1.0
    assert (run.dir / "report.md").exists()


def test_a_search_writes_every_trial_as_a_run_and_the_best_recipe(tmp_path, capsys):
    """T6: `trainlab tune` runs N trials as ordinary runs in TUNEDIR/trial-NNNN, each with the sampled values
    in its recipe; the best trial is the one with the highest val accuracy in its summary.json, and
    best.yaml is its recipe; the history plot is drawn; --resume of a finished search trains nothing."""
    out = tmp_path / "tune"
    code = main(["tune", "digits-mlp", *TINY, f"run.dir={out}", "--space", str(_space(tmp_path)), "--trials", "3",
                 "--pruner", "none"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    study = _study(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    values = {}
    for t in study.trials:
        run = out / f"trial-{t.number:04d}"
        assert t.user_attrs["run"] == str(run.resolve())
        recipe = load_recipe(run / "recipe.yaml")
        assert recipe.optim.lr == pytest.approx(t.params["optim.lr"]) and recipe.model.dropout == pytest.approx(
            t.params["model.dropout"])
        values[t.number] = json.loads((run / "summary.json").read_text())["val"]["accuracy"]
        assert t.value == pytest.approx(values[t.number])
        _trained_once(run)
    best = max(values, key=values.get)
    assert study.best_trial.number == best
    assert f"best trial {best}: val accuracy" in stdout
    best_recipe = load_recipe(out / "best.yaml")
    assert best_recipe.optim.lr == pytest.approx(study.trials[best].params["optim.lr"])
    assert best_recipe.run.dir is None
    assert (out / "plots" / "history.png").stat().st_size > 0
    before = _files(out / "trial-0000")
    assert main(["tune", "--resume", str(out)]) == 0
    assert len(_study(out).trials) == 3 and _files(out / "trial-0000") == before


def test_a_trial_that_diverges_is_marked_failed_and_the_search_goes_on(tmp_path, capsys):
    """T6: a sampled learning rate of 1e6 drives the weights to NaN, which the run refuses to evaluate (a
    RunError out of fit). That point is one failed trial (user attribute `failed`), not the end of the
    search: the other value still reaches N complete trials. Only when more than N trials of a worker fail
    does the search stop, with one line."""
    out = tmp_path / "tune"
    args = [*TINY, "model.norm=none", "--pruner", "none", "--no-plots"]
    space = "optim.lr: {type: categorical, choices: [1.0e+6, 0.05]}\n"
    code = main(["tune", "digits-mlp", *args, f"run.dir={out}", "--space", str(_space(tmp_path, space)),
                 "--trials", "2"])
    assert code == 0, capsys.readouterr().err
    trials = _study(out).trials
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed and all(t.params["optim.lr"] == 1e6 and "NaN" in t.user_attrs["failed"] for t in failed)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2 and all(t.params["optim.lr"] == 0.05 for t in complete)
    assert f"trial {failed[0].number}: failed: " in capsys.readouterr().out
    # every point diverges: stopped after N + 1 failures, one line
    out = tmp_path / "tune-all"
    space = "optim.lr: {type: categorical, choices: [1.0e+6]}\n"
    code = main(["tune", "digits-mlp", *args, f"run.dir={out}", "--space", str(_space(tmp_path, space)),
                 "--trials", "1"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and "2 trials of this worker failed" in lines[0], lines
    assert [t.state.name for t in _study(out).trials] == ["FAIL", "FAIL"]


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_finish_n_trials_none_lost_none_twice(tmp_path, capsys):
    """T6: `--workers 2` starts two processes on the study's SQLite file; together they finish exactly N
    trials (complete or pruned), each trial's run folder trained once by one worker, both workers worked,
    and no run folder exists for a trial that did not finish."""
    out = tmp_path / "tune"
    n = 6
    code = main(["tune", "digits-mlp", *TINY, f"run.dir={out}", "--space", str(_space(tmp_path)), "--trials", str(n),
                 "--workers", "2", "--pruner", "hyperband"])
    assert code == 0, capsys.readouterr()
    study = _study(out)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n
    others = [t for t in study.trials if t not in finished]
    assert all(t.state.name == "FAIL" and t.user_attrs.get("surplus") for t in others), others
    runs = sorted(p.name for p in out.glob("trial-*"))
    assert runs == sorted(f"trial-{t.number:04d}" for t in finished)
    for t in finished:
        _trained_once(out / f"trial-{t.number:04d}")
    assert len({t.user_attrs["worker"]["pid"] for t in finished}) == 2


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_keeping_every_finished_trial(tmp_path, capsys):
    """T6: SIGKILL in the middle of trial 2 leaves trials 0 and 1 finished and trial 2 running; `--resume`
    marks trial 2 failed, runs its values again as a new trial, reaches N finished trials, and leaves the
    finished trials' runs untouched (none run twice)."""
    out = tmp_path / "tune"
    n = 4
    args = ["digits-mlp", *TINY, f"run.dir={out}", "--space", str(_space(tmp_path)), "--trials", str(n),
            "--pruner", "none"]
    proc = subprocess.run([sys.executable, str(HERE / "tune_kill.py"), "2", "3", *args], env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    study = _study(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "RUNNING"]
    killed = study.trials[2]
    kept = {k: _files(out / f"trial-000{k}") for k in (0, 1)}

    assert main(["tune", "--resume", str(out)]) == 0, capsys.readouterr().err
    study = _study(out)
    states = {t.number: t.state.name for t in study.trials}
    assert states[2] == "FAIL"
    assert sum(s == "COMPLETE" for s in states.values()) == n
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 2]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == killed.params
    for k in (0, 1):
        assert _files(out / f"trial-000{k}") == kept[k]
    for t in study.trials:
        if t.state.name == "COMPLETE":
            _trained_once(out / f"trial-{t.number:04d}")
    assert "4 of 4 trials finished" in capsys.readouterr().out
