"""T4/T5 end to end on tiny digits runs: bagging members are normal runs trained on bootstraps and
resumed member by member; `trainlab ensemble` equals the model for one model or identical copies
and reads its runs only; boosting's weights follow SAMME; snapshot ensembles save at each
warm restart. Bad input: one line, exit 2, nothing touched."""
from __future__ import annotations

import json
import math
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trainlab
from trainlab.cli import main
from trainlab.data import build_data
from trainlab.data.resample import resample_indices
from trainlab.ensemble import evaluate_ensemble
from trainlab.engine.callbacks import Callback
from trainlab.engine.trainer import Interrupted
from trainlab.recipe import load_recipe
from trainlab.run import open_run

TINY = ["data.subset=300", "model.width=16", "train.epochs=2", "train.early_stop=null", "doctor=null",
        "run.tensorboard=false", "run.plots=false", "train.progress=false", "train.threads=1"]


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``folder``: what "no run touched" compares."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bagged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bag")
    return trainlab.fit("digits-mlp", [*TINY, "train.bagging=2", f"run.dir={folder / 'bag'}"], quiet=True)


def test_bagging_members_are_normal_runs_on_bootstraps(bagged):
    """T4: train.bagging=N: member k is a normal run in RUN/members/member-k, trained on n draws
    with replacement of the n training samples from (seed, k); the run's summary holds the
    averaged ensemble's val and test metrics."""
    parent = load_recipe(bagged.recipe_path)
    base = build_data(parent, statistics=False)
    n = len(base.train)
    for k in range(2):
        member = open_run(bagged.dir / "members" / f"member-{k}")
        recipe = member.recipe()
        assert recipe.data.resample.member == k and recipe.train.bagging == 0
        data = build_data(recipe, statistics=False)
        idx = resample_indices(n, parent.seed, k)
        assert torch.equal(data.train.inputs, base.train.inputs[idx])
        assert torch.equal(data.test.targets, base.test.targets)  # evaluation splits unchanged
        assert member.evaluate("test", write=False)["n"] == len(base.test)  # evaluate works on a member
    summary = json.loads(bagged.summary_path.read_text())
    assert summary["ensemble"] == "bagging" and len(summary["members"]) == 2
    ens = evaluate_ensemble([bagged], "mean", "test")  # the same members, through `trainlab ensemble`
    assert summary["test"]["accuracy"] == pytest.approx(ens["accuracy"])
    assert summary["test"]["gain"] == pytest.approx(ens["accuracy"] - max(m["accuracy"] for m in ens["members"]))
    assert json.loads((bagged.dir / "eval-test-ensemble.json").read_text())["accuracy"] == summary["test"]["accuracy"]
    # --split train is the training split the members were drawn from, not the first member's draw
    on_train = evaluate_ensemble([bagged], "mean", "train")
    probs = [torch.as_tensor(open_run(bagged.dir / "members" / f"member-{k}").predict(base.train.inputs).probs)
             for k in range(2)]
    want = ((probs[0] + probs[1]) / 2).argmax(1) == base.train.targets
    assert on_train["n"] == n and on_train["accuracy"] == pytest.approx(float(want.double().mean()), abs=1.5 / n)
    page = (bagged.dir / "report.html").read_text()  # V5: beside report.md, linking each member's own page
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert all(f'href="members/member-{k}/report.html"' in page for k in range(2))
    assert f"{summary['test']['accuracy']:.4f}" in page


def test_ensemble_of_one_model_equals_the_model(bagged):
    """T4: an ensemble of one run has the run's own evaluation (`trainlab evaluate`)."""
    member = open_run(bagged.dir / "members" / "member-0")
    own = member.evaluate("test", write=False)
    for method in ("mean", "vote", "weighted"):
        ens = evaluate_ensemble([member], method, "test")
        for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "top5_accuracy", "n"):
            assert ens[key] == pytest.approx(own[key], abs=1e-12), (method, key)
        assert ens["confusion"] == own["confusion"]
        assert ens["loss"] == pytest.approx(own["loss"], rel=1e-4)
        assert ens["gain"] == 0


def test_ensemble_of_identical_copies_equals_the_model(bagged, tmp_path):
    """T4: an ensemble of identical copies of a run equals the run."""
    src = bagged.dir / "members" / "member-1"
    copies = [src] + [shutil.copytree(src, tmp_path / f"copy-{i}") for i in range(2)]
    own = open_run(src).evaluate("test", write=False)
    for method in ("mean", "vote", "weighted"):
        ens = evaluate_ensemble(copies, method, "test")
        assert ens["accuracy"] == own["accuracy"] and ens["confusion"] == own["confusion"], method
        assert ens["loss"] == pytest.approx(own["loss"], rel=1e-4)


def test_cli_ensemble_writes_its_json_and_reads_the_runs_only(bagged, tmp_path, capsys):
    """T4: `trainlab ensemble RUN RUN --method vote --out FILE` prints the table and writes the
    evaluation JSON; the runs are left byte for byte as they were."""
    members = [bagged.dir / "members" / f"member-{k}" for k in range(2)]
    before = files_of(bagged.dir)
    out = tmp_path / "out" / "vote.json"
    assert main(["ensemble", *map(str, members), "--method", "vote", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "method vote" in printed and "gain over the best member" in printed and "confusion matrix" in printed
    result = json.loads(out.read_text())
    assert result["method"] == "vote" and len(result["members"]) == 2 and result["split"] == "test"
    assert files_of(bagged.dir) == before


def _copy_with(src: Path, dst: Path, **recipe_changes) -> Path:
    shutil.copytree(src, dst)
    text = (dst / "recipe.yaml").read_text()
    import yaml

    data = yaml.safe_load(text)
    for key, value in recipe_changes.items():
        data[key] = value
    (dst / "recipe.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


def _with_other_classes(src: Path, dst: Path) -> Path:
    """A copy of run ``src`` whose checkpoints say the classes have other names."""
    from trainlab.engine.checkpoint import load_checkpoint, save_checkpoint

    shutil.copytree(src, dst)
    for name in ("best", "last"):
        path = dst / "checkpoints" / f"{name}.safetensors"
        tensors, state = load_checkpoint(path, ())
        state.pop("format")
        state["info"]["class_names"] = [f"digit {c}" for c in state["info"]["class_names"]]
        save_checkpoint(path, tensors, state)
    return dst


def test_bad_input_is_one_line_exit_2_and_touches_nothing(bagged, tmp_path, capsys):
    """T4, bad input: runs of different tasks, classes or data, an unknown method, a run with no
    checkpoint: exit 2 with one line, no --out written, no run touched."""
    m0 = bagged.dir / "members" / "member-0"
    seed = _copy_with(m0, tmp_path / "seed", seed=5)
    task = _copy_with(m0, tmp_path / "task", task="embedding")
    classes = _with_other_classes(m0, tmp_path / "classes")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(m0 / "recipe.yaml", bare / "recipe.yaml")
    before = {p: files_of(p) for p in (bagged.dir, seed, task, classes, bare)}
    out = tmp_path / "never.json"
    cases = [
        ([m0, seed], "differ in seed"),
        ([m0, task], "embedding task"),
        ([m0, classes], "classes"),
        ([m0, bare], "no best checkpoint"),
        ([m0, tmp_path / "absent"], "is not a folder"),
        ([m0, "--method", "median"], "unknown method 'median'"),
        ([m0, "--snapshots"], "no snapshot checkpoints"),
    ]
    for args, needle in cases:
        assert main(["ensemble", *map(str, args), "--out", str(out)]) == 2, args
        lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(lines) == 1 and needle in lines[0], (args, lines)
        assert not out.exists()
    assert main(["ensemble", str(m0), "--out", str(m0 / "summary.json")]) == 2  # a run's own file
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and "is a file of run" in lines[0], lines
    assert {p: files_of(p) for p in before} == before


def test_bad_ensemble_options_in_a_recipe_are_refused_before_writing(tmp_path, capsys):
    """T4/T5: snapshots without warm restarts, bagging with boosting, members of a task that has
    no class probabilities: one line, exit 2, no run folder."""
    cases = [
        (["train.snapshots=true"], "cosine_restarts"),
        (["train.bagging=2", "train.boosting=2"], "choose one"),
        (["train.bagging=2", "task=embedding"], "not classification"),
    ]
    for i, (args, needle) in enumerate(cases):
        folder = tmp_path / f"run-{i}"
        assert main(["fit", "digits-mlp", *TINY, *args, f"run.dir={folder}"]) == 2
        lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(lines) == 1 and needle in lines[0], lines
        assert not folder.exists()


class StopSecondMember(Callback):
    """Ctrl-C in the middle of the second member's last epoch."""

    name = "stop_second"

    def __init__(self):
        self.fits = 0

    def on_fit_start(self, trainer):
        self.fits += 1

    def on_batch_end(self, trainer, batch, outputs, loss):
        if self.fits == 2 and trainer.state.epoch == 1 and trainer.state.batch == 2:
            trainer._interrupt = signal.SIGINT


def test_bagging_resumes_member_by_member(bagged, tmp_path):
    """T4: a bagging run stopped inside its second member is resumed with `fit --resume RUN`: the
    finished member is skipped (left as it is), the stopped one resumes from its checkpoint and
    ends bit for bit where an uninterrupted run's member ends; a finished run stays as it is."""
    run_dir = tmp_path / "bag"
    with pytest.raises(Interrupted) as info:
        trainlab.fit("digits-mlp", [*TINY, "train.bagging=2", f"run.dir={run_dir}"], quiet=True,
                     callbacks=[StopSecondMember()])
    assert Path(info.value.run_dir) == run_dir  # the CLI tells to resume the bagging run
    first = files_of(run_dir / "members" / "member-0")
    assert not (run_dir / "summary.json").exists()
    assert main(["fit", "--resume", str(run_dir), "--quiet"]) == 0
    assert files_of(run_dir / "members" / "member-0") == first
    for k in range(2):
        a = load_file(bagged.dir / "members" / f"member-{k}" / "checkpoints" / "last.safetensors")
        b = load_file(run_dir / "members" / f"member-{k}" / "checkpoints" / "last.safetensors")
        for key in (key for key in a if key.startswith("model.")):
            assert torch.equal(a[key], b[key]), (k, key)
    done = files_of(run_dir)
    assert main(["fit", "--resume", str(run_dir), "--quiet"]) == 0
    assert files_of(run_dir) == done


def test_boosting_follows_samme(tmp_path):
    """T5: train.boosting=2: member 1's sample weights are member 0's SAMME update, written out
    here from member 0's own predictions on the training split, and the ensemble predicts the
    alpha-weighted vote of the members."""
    run = trainlab.fit("digits-mlp", [*TINY, "train.epochs=1", "model.width=4", "train.boosting=2",
                                      f"run.dir={tmp_path / 'boost'}"], quiet=True)
    summary = json.loads(run.summary_path.read_text())
    parent = load_recipe(run.recipe_path)
    data = build_data(parent, statistics=False)
    y, n, K = data.train.targets, len(data.train), 10
    members = [open_run(run.dir / "members" / f"member-{k}") for k in range(len(summary["members"]))]
    assert len(members) == 2, summary["stop_reason"]
    pred0 = members[0].predict(data.train.inputs).probs.argmax(1)
    miss = torch.as_tensor(pred0) != y
    w0 = torch.full((n,), 1 / n, dtype=torch.float64)
    err = float(w0[miss].sum())
    alpha = math.log((1 - err) / err) + math.log(K - 1)
    assert summary["members"][0]["alpha"] == pytest.approx(alpha)
    w1 = w0 * torch.exp(alpha * miss.double())
    w1 = w1 / w1.sum()
    saved = json.loads((run.dir / "boost-weights" / "member-1.json").read_text())
    assert torch.allclose(torch.tensor(saved, dtype=torch.float64), w1)
    assert members[1].recipe().data.resample.weights == str(run.dir / "boost-weights" / "member-1.json")
    # the ensemble's test predictions: argmax_k sum_m alpha_m [pred_m == k]
    alphas = [m["alpha"] for m in summary["members"]]
    votes = torch.zeros(len(data.test), K, dtype=torch.float64)
    for a, m in zip(alphas, members):
        votes[torch.arange(len(data.test)), torch.as_tensor(m.predict(data.test.inputs).probs.argmax(1))] += a
    want = float((votes.argmax(1) == data.test.targets).double().mean())
    assert summary["test"]["accuracy"] == pytest.approx(want, abs=1.5 / len(data.test))  # exact ties aside
    # the members' chain of weights is fixed: a resume may not train them further (one line, nothing touched)
    before = files_of(run.dir)
    assert main(["fit", "--resume", str(run.dir), "train.epochs=3"]) == 2
    assert files_of(run.dir) == before


def test_snapshot_ensemble_saves_at_each_warm_restart(tmp_path, capsys):
    """T4: with cosine_restarts and train.snapshots, a snapshot at the end of each cycle; the
    last one is the final weights; the summary and `trainlab ensemble RUN --snapshots` evaluate
    them together."""
    run = trainlab.fit("digits-mlp", [*TINY, "train.epochs=3", "train.snapshots=true",
                                      "schedule.name=cosine_restarts", "schedule.T_0=1", "schedule.T_mult=1",
                                      f"run.dir={tmp_path / 'snap'}"], quiet=True)
    snaps = sorted(run.checkpoints.glob("snapshot-*.safetensors"))
    assert [p.name for p in snaps] == [f"snapshot-{i}.safetensors" for i in (1, 2, 3)]
    last = load_file(run.checkpoints / "last.safetensors")
    third, first = load_file(snaps[2]), load_file(snaps[0])
    model_keys = [k for k in last if k.startswith("model.")]
    assert all(torch.equal(third[k], last[k]) for k in model_keys)
    assert not all(torch.equal(first[k], last[k]) for k in model_keys)
    summary = json.loads(run.summary_path.read_text())["snapshot_ensemble"]
    assert summary["snapshots"] == 3
    out = tmp_path / "snap.json"
    assert main(["ensemble", str(run.dir), "--snapshots", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert [m["accuracy"] for m in result["members"]] == pytest.approx(summary["test"]["members"])
    test = summary["test"]  # both reports show the snapshot ensemble beside its best snapshot
    row = f"| test | {test['accuracy']:.4f} | {max(test['members']):.4f} | {100 * test['gain']:+.2f} |"
    assert "## Snapshot ensemble" in run.report_path.read_text() and row in run.report_path.read_text()
    page = (run.dir / "report.html").read_text()
    assert "Snapshot ensemble" in page and f"{test['accuracy']:.4f}" in page
