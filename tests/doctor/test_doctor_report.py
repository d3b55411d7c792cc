"""The doctor inside fit: printed findings, doctor.json, report.md section, plots, resume, CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import trainlab
from trainlab.doctor import diagnose_run
from trainlab.errors import RecipeError, RunError

from conftest import assert_user_error, run_cli

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
FAST = {"run.tensorboard": False, "train.progress": False}


@pytest.fixture(scope="module")
def dead_run(tmp_path_factory):
    """The dead-ReLU scenario with plots, its printed output captured."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run = trainlab.fit(str(SCENARIOS / "dead-relu.yaml"), **FAST,
                           **{"run.dir": str(tmp_path_factory.mktemp("dead") / "run")})
    return run, out.getvalue()


def test_each_finding_prints_once_then_a_table(dead_run):
    """X3: during fit a new finding is one line, printed once; the end prints the table."""
    run, out = dead_run
    lines = [line for line in out.splitlines() if line.startswith("doctor [")]
    assert len(lines) == 1 and lines[0].startswith("doctor [warning] dead_relu: ")
    assert "doctor: 1 finding (1 warning)" in out
    table = out[out.index("doctor: 1 finding"):]
    assert "dead_relu" in table and "X3" in table and "try: Leaky ReLU" in table


def test_doctor_json_and_report_section_with_evidence_plots(dead_run):
    """X3/V5: doctor.json holds findings + history; report.md gets a doctor section with plots."""
    run, _ = dead_run
    data = json.loads((run.dir / "doctor.json").read_text())
    [f] = data["findings"]
    assert f["code"] == "dead_relu" and f["feature"] == "X3" and f["layers"] == ["net.3"]
    assert set(f) >= {"code", "severity", "message", "epoch", "step", "layers", "evidence", "remedies", "feature"}
    assert data["history"]["finished"] is True
    report = run.report_path.read_text()
    section = report[report.index("## Doctor"):]
    assert "| warning | `dead_relu` | X3 |" in section
    for name in ("doctor-gradients", "doctor-update-ratio", "doctor-dead-units", "doctor-curves"):
        assert (run.plots / f"{name}.png").stat().st_size > 1000
        assert f"(plots/{name}.png)" in section


def test_rediagnosis_equals_the_run_and_thresholds_can_change(dead_run):
    """X3: the rules applied again to the saved history give doctor.json's findings; doctor.*
    overrides judge the same numbers differently; other overrides are refused."""
    run, _ = dead_run
    findings, history = diagnose_run(run)
    saved = json.loads((run.dir / "doctor.json").read_text())["findings"]
    assert [f.to_dict() for f in findings] == saved
    dead = saved[0]["evidence"]["dead"]["net.3"]
    # Judged with a higher threshold the units are no longer dead; what training printed stays
    # listed, as an info finding marked resolved.
    [again] = diagnose_run(run, [f"doctor.dead_fraction={dead + 0.01}"])[0]
    assert again.code == "dead_relu" and again.severity == "info" and again.evidence["resolved"] is True
    assert again.message.startswith("resolved (reported as warning in epoch 1 of training, not found at epoch 6)")
    with pytest.raises(RecipeError, match="only doctor"):
        diagnose_run(run, ["optim.lr=0.1"])


def test_cli_prints_the_diagnosis_and_writes_json(dead_run, tmp_path):
    """X3: `trainlab doctor RUN` re-reads a finished run and prints the same diagnosis; --json creates
    missing folders (the output policy of cli/outputs.py)."""
    run, _ = dead_run
    proc = run_cli("doctor", run.dir, "--json", tmp_path / "new" / "f.json")
    assert proc.returncode == 0, proc.stderr
    assert "dead_relu" in proc.stdout and "1 finding" in proc.stdout
    saved = json.loads((run.dir / "doctor.json").read_text())["findings"]
    assert json.loads((tmp_path / "new" / "f.json").read_text())["findings"] == saved


def test_cli_run_without_doctor_json_is_a_user_error(dead_run, tmp_path):
    """X3: a run without doctor.json: one line, exit 2."""
    run, _ = dead_run
    copy = tmp_path / "copy"
    shutil.copytree(run.dir, copy)
    (copy / "doctor.json").unlink()
    assert_user_error(run_cli("doctor", copy), "no doctor.json", "doctor.enabled=false")
    with pytest.raises(RunError, match="no doctor.json"):
        diagnose_run(trainlab.open_run(copy))


def test_doctor_runs_before_the_checkpointer_and_can_be_disabled(tmp_path):
    """X1/X9: the Doctor callback is on by default, before the metrics logger (so its remedies'
    events, even those at fit end, land in metrics.jsonl) and the Checkpointer (which stays last)."""
    from trainlab.api import standard_callbacks
    from trainlab.recipe import load_recipe
    from trainlab.run import Run

    names = [cb.name for cb in standard_callbacks(load_recipe("digits-mlp"), Run(tmp_path), quiet=True)]
    assert names[-3:] == ["doctor", "metrics", "checkpoint"]
    for off in ({"doctor.enabled": False}, {"doctor": None}):
        names = [cb.name for cb in standard_callbacks(load_recipe("digits-mlp", off), Run(tmp_path), quiet=True)]
        assert "doctor" not in names and names[-1] == "checkpoint"


def test_resumed_run_keeps_one_continuous_history(tmp_path):
    """X1: the monitors' history is checkpointed; a resumed run appends to it and diagnoses it whole."""
    d = str(tmp_path / "r")
    trainlab.fit(str(SCENARIOS / "tiny-lr.yaml"), quiet=True, **FAST,
                 **{"run.dir": d, "run.plots": False, "train.epochs": 2})
    first = json.loads((Path(d) / "doctor.json").read_text())["history"]
    run = trainlab.fit(resume=d, quiet=True, **{"train.epochs": 4})
    h = json.loads((run.dir / "doctor.json").read_text())["history"]
    n = len(first["steps"]["step"])
    assert h["steps"]["step"][:n] == first["steps"]["step"] and len(h["steps"]["step"]) > n
    assert sorted(set(h["steps"]["step"])) == h["steps"]["step"]  # no step recorded twice
    assert [r["epoch"] for r in h["liveness"]] == [1, 2, 3, 4]
    assert h["inputs"] == first["inputs"] and h["finished"] is True
    codes = {f["code"] for f in json.loads((run.dir / "doctor.json").read_text())["findings"]}
    assert "lr_too_low" in codes


def test_every_printed_finding_is_in_the_final_table_and_sequence_data_is_not_per_class(tmp_path):
    """X3/X6/X8: every finding printed during fit is in the final table; Adam's first steps, which
    move every weight by about the LR whatever its scale, are no `lr_too_high` (it was printed at
    step 1 of char-rnn and withdrawn later); the char-rnn's windows and vocabulary do not make a
    'small dataset' of 130 samples for 44 classes."""
    import contextlib
    import io
    import re

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run = trainlab.fit("char-rnn", **FAST, **{"run.dir": str(tmp_path / "r"), "run.plots": False,
                                                  "train.epochs": 3})
    text = out.getvalue()
    table = text[text.index("\ndoctor: "):]
    printed = re.findall(r"^doctor \[(\w+)\] (\w+):", text, flags=re.MULTILINE)
    row = re.compile(r"^  (info|warning|error)\s+(\w+)\s+X\d", flags=re.MULTILINE)
    rows = {m.group(2): m.group(1) for m in row.finditer(table)}
    assert {code for _, code in printed} <= set(rows)
    assert "lr_too_high" not in rows
    data = json.loads((run.dir / "doctor.json").read_text())
    assert data["history"]["data"]["task"] == "sequence"
    assert data["history"]["data"]["moment_warmup_steps"] == 10  # Adam, beta1 0.9
    assert [r["code"] for r in data["history"]["reported"]] == [code for _, code in printed]
    assert "small_dataset" not in rows and "class_imbalance" not in rows
    assert [f.to_dict() for f in diagnose_run(run)[0]] == data["findings"]


def test_cli_json_that_cannot_be_written_is_a_user_error(tmp_path, capsys):
    """X3: `trainlab doctor RUN --json a-file/x.json` (a file where a folder should be) is one line and
    exit 2, checked before the diagnosis (so the run need not even be read); so is a folder."""
    from trainlab.cli import main

    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "x.json"
    assert main(["doctor", str(tmp_path), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"trainlab doctor: error: --json '{out}': '{tmp_path / 'a-file'}' is a file, not a folder"]
    assert main(["doctor", str(tmp_path), "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder" in err[0]
