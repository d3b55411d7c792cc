"""The bad-input corpus, run integrity: tampered or foreign checkpoints, a full disk, a read-only
run, a second writer. Each case ends in exit code 2 and one stderr line naming the field or the
path and the reason (no traceback), and the run is left as it was; or, where that is the contract
(evaluating a read-only run with --json elsewhere), succeeds without writing into the run.

A full disk fails os.fsync (where a durable write meets it, with no file name attached) or the
opening of the file; a read-only folder fails every write operation under it, through a Python
audit hook (root ignores permission bits, so chmod cannot stand in for it here).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from conftest import FAST
from safetensors import safe_open
from safetensors.torch import save_file

from trainlab import lock
from trainlab.cli import main
from trainlab.engine.checkpoint import STATE_KEY

# ------------------------------------------------------------------------------ simulated faults
_FAULTS: list[tuple[str, int]] = []  # (path prefix or name part, errno): writes there fail
_ATTEMPTS: list[str] = []  # the writes the faults refused


def _writes(event: str, args: tuple) -> list:
    if event == "open":
        path, mode, flags = args
        if isinstance(mode, str):
            writing = any(c in mode for c in "wax+")
        else:
            writing = isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
        return [path] if writing else []
    if event == "os.rename":
        return list(args[:2])
    if event in ("os.remove", "os.mkdir", "os.rmdir", "os.truncate", "os.chmod", "os.utime", "shutil.rmtree"):
        return list(args[:1])
    return []


def _audit(event: str, args: tuple) -> None:
    if not _FAULTS:
        return
    for path in _writes(event, args):
        if not isinstance(path, (str, bytes, os.PathLike)):
            continue
        full = os.path.abspath(os.fsdecode(path))
        for where, code in _FAULTS:
            if full.startswith(where) or (not where.startswith("/") and where in os.path.basename(full)):
                _ATTEMPTS.append(full)
                raise OSError(code, os.strerror(code), full)


sys.addaudithook(_audit)  # inert while _FAULTS is empty


@pytest.fixture
def faults(monkeypatch):
    """``faults(prefix_or_name, errno)`` makes writes there fail; ``faults.fsync(name)`` makes the
    durable writes of files named like ``name`` fail at fsync with ENOSPC (a full disk)."""
    real_fsync = os.fsync

    class Faults:
        def __call__(self, where: str | Path, code: int) -> None:
            _FAULTS.append((os.path.abspath(where) + os.sep if isinstance(where, Path) else where, code))

        def fsync(self, name: str) -> None:
            def fsync(fd):
                if name in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) says it: no file name
                return real_fsync(fd)

            monkeypatch.setattr(os, "fsync", fsync)

    _ATTEMPTS.clear()
    yield Faults()
    _FAULTS.clear()


# ----------------------------------------------------------------------------------- the run
@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished one-epoch run: with train.epochs=2 it resumes; the doctor keeps a callback state."""
    root = tmp_path_factory.mktemp("integrity")
    assert main(["fit", *FAST, "train.epochs=1", f"run.dir={root / 'run'}", "--quiet"]) == 0
    return root / "run"


def digest(folder: Path) -> dict[str, str]:
    """The run's files, the lock file aside (a writer refused after it took the lock wrote its note)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != lock.LOCK_NAME}


def tamper(path: Path, state: Callable[[dict], None] | None = None,
           tensors: Callable[[dict], None] | None = None) -> None:
    """Rewrite checkpoint ``path`` with its JSON state and/or tensors edited (as a person could)."""
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()[STATE_KEY])
        data = {k: f.get_tensor(k) for k in f.keys()}
    if state:
        state(meta)
    if tensors:
        tensors(data)
    save_file(data, str(path), metadata={STATE_KEY: json.dumps(meta)})


def _set(key: str, value):
    def edit(d):
        *parents, last = key.split(".")
        for k in parents:
            d = d[k]
        d[last] = value

    return edit


def _first(prefix: str, change: Callable[[torch.Tensor], torch.Tensor]):
    def edit(tensors):
        key = sorted(k for k in tensors if k.startswith(prefix))[0]
        tensors[key] = change(tensors[key])

    return edit


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


@dataclass
class Case:
    name: str
    checkpoint: str  # which checkpoint is tampered with: last or best
    argv: Callable[[Path], list[str]]
    needles: list[str]
    state: Callable[[dict], None] | None = None
    tensors: Callable[[dict], None] | None = None
    extra: list[str] = field(default_factory=list)


def resume(run: Path) -> list[str]:
    # train.epochs=2 also asks for recipe.yaml to be rewritten: it must not be, when the check fails
    return ["fit", "--resume", str(run), "train.epochs=2", "--quiet"]


TAMPERED = [
    Case("history is a string", "last", resume, ["last.safetensors: state.history: expected a list, got \"abc\""],
         state=_set("history", "abc")),
    Case("negative epoch", "last", resume, ["state.epoch: expected a non-negative integer, got -3"],
         state=_set("epoch", -3)),
    Case("batch beyond the epoch", "last", resume, ["state.batch: expected an integer from 0 to"],
         state=_set("batch", 999)),
    Case("more steps than batches", "last", resume, ["state.step: expected an integer from 0 to"],
         state=_set("step", 10**6)),
    Case("best epoch after the last", "last", resume, ["state.best.epoch: expected an integer from 1 to 1 or null, got 5"],
         state=_set("best.epoch", 5)),
    Case("unknown optimizer", "last", resume, ["state.optimizer.name: unknown optimizer 'adamx'"],
         state=_set("optimizer.name", "adamx")),
    Case("optimizer tensor of another shape", "last", resume, ["tensor optim.state.0.exp_avg", "like its parameter"],
         tensors=_first("optim.state.0.exp_avg", lambda t: torch.zeros(3))),
    Case("torch RNG state cut short", "last", resume, ["tensor rng.torch: expected a uint8 vector of"],
         tensors=_first("rng.torch", lambda t: t[:100])),
    Case("NumPy RNG state of another kind", "last", resume, ["state.rng.numpy[0]: expected one of MT19937"],
         state=lambda s: s["rng"]["numpy"].__setitem__(0, "PCG64")),
    Case("meter sum as text", "last", resume, ["state.meter.loss_sum: expected a finite number or null"],
         state=_set("meter.loss_sum", "lots")),
    Case("doctor state not an object", "last", resume, ["state.callbacks.doctor: expected a JSON object"],
         state=_set("callbacks.doctor", "on")),
    Case("checkpoint of another data set", "last", resume, ["state.info.class_names", "another run"],
         state=_set("info.class_names", [f"c{i}" for i in range(10)])),
    Case("model tensor as float64", "last", resume, ["model tensor", "is float64, the model's is float32"],
         tensors=_first("model.", lambda t: t.double())),
    Case("model tensor holding NaN", "last", resume, ["model tensor", "holds NaN or infinite values"],
         tensors=_first("model.", _nan)),
    Case("evaluate: class names one short", "best", lambda r: ["evaluate", str(r)],
         ["best.safetensors: state.info.class_names: expected 10 names (num_classes), got 9 names"],
         state=_set("info.class_names", [str(i) for i in range(9)])),
    Case("evaluate: input shape of zero", "best", lambda r: ["evaluate", str(r)],
         ["state.info.input_shape[1]: expected a positive integer, got 0"], state=_set("info.input_shape", [1, 0, 8])),
    Case("predict: NaN weights", "best", lambda r: ["predict", str(r), str(r / "x.npy")],
         ["best.safetensors: model tensor", "holds NaN"], tensors=_first("model.", _nan)),
    Case("export: float16 weights", "best", lambda r: ["export", str(r), "--format", "torchscript", "--out",
                                                       str(r.parent / "m.pt")],
         ["best.safetensors: model tensor", "is float16"], tensors=_first("model.", lambda t: t.half())),
]


@pytest.mark.parametrize("case", TAMPERED, ids=[c.name for c in TAMPERED])
def test_tampered_checkpoints_are_refused_before_anything_changes(case, base_run, tmp_path, capsys):
    """T3: a hand-edited or foreign checkpoint state, a tensor of the wrong shape or dtype, NaN
    weights: exit 2, one line naming the field or tensor; recipe.yaml, metrics.jsonl and the
    checkpoints are as they were."""
    import numpy as np

    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    np.save(run / "x.npy", np.zeros((1, 8, 8), dtype=np.float32))
    tamper(run / "checkpoints" / f"{case.checkpoint}.safetensors", case.state, case.tensors)
    before = digest(run)
    capsys.readouterr()
    assert main(case.argv(run)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in case.needles:
        assert needle in lines[0], (needle, lines[0])
    assert digest(run) == before


# ---------------------------------------------------------------------------- a second writer
def test_a_second_writer_is_refused_with_the_holder_named(base_run, tmp_path, capsys):
    """T3: a run held by another writer (here this process): `fit --resume` and `fit --force` into
    it exit 2 naming the holding process; nothing changes."""
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    before = digest(run)
    held = lock.acquire(run, "fit")
    try:
        for argv in (resume(run), ["fit", *FAST, f"run.dir={run}", "--force", "--quiet"]):
            assert main(argv) == 2
            line, = capsys.readouterr().err.splitlines()
            assert f"is being written by another trainlab process (pid {os.getpid()} on" in line, line
            assert digest(run) == before
    finally:
        held.release()


# ------------------------------------------------------------------------------- a full disk
FULL_DISK = [  # (file that cannot be written, extra overrides)
    ("recipe.yaml", []),
    ("metrics.jsonl", []),
    ("last.safetensors", []),
    ("doctor.json", []),
    ("summary.json", []),
    ("report.md", []),
    ("loss.png", ["run.plots=true"]),
]


@pytest.mark.parametrize("name, extra", FULL_DISK, ids=[c[0] for c in FULL_DISK])
def test_a_full_disk_during_fit_is_one_line(name, extra, faults, tmp_path, capsys):
    """A full disk while fit writes any of its files: exit 2, the file and the reason, no traceback,
    no temporary file left behind."""
    faults.fsync(name)
    assert main(["fit", *FAST, f"run.dir={tmp_path / 'run'}", *extra, "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert name in lines[0] and "No space left on device" in lines[0], lines[0]
    assert not list((tmp_path / "run").rglob(".*.tmp-*"))


def test_a_full_disk_for_tensorboard_is_one_line(faults, tmp_path, capsys):
    faults("events.out.tfevents", errno.ENOSPC)
    assert main(["fit", *FAST, f"run.dir={tmp_path / 'run'}", "run.tensorboard=true", "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "TensorBoard" in lines[0] and "No space left on device" in lines[0], lines[0]


# ------------------------------------------------------------------------------ a read-only run
def test_evaluating_a_read_only_run_with_json_elsewhere_writes_nothing_into_it(base_run, faults, tmp_path, capsys):
    """E1: evaluating reads the run only: with --json elsewhere it succeeds on a read-only run
    without attempting a single write there."""
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    faults(run, errno.EROFS)
    assert main(["evaluate", str(run), "--json", str(tmp_path / "out" / "m.json")]) == 0, capsys.readouterr().err
    assert _ATTEMPTS == []
    assert json.loads((tmp_path / "out" / "m.json").read_text())["split"] == "test"


READ_ONLY = [  # (argv, what the line names)
    (lambda run, tmp: ["evaluate", str(run)], ["eval-test-best.json", "Read-only file system", "--json FILE"]),
    (lambda run, tmp: resume(run), [".trainlab.lock", "Read-only file system"]),
    (lambda run, tmp: ["export", str(run), "--format", "torchscript", "--out", str(tmp / "ro" / "m.pt")],
     ["--out", "m.pt", "Read-only file system"]),
]


@pytest.mark.parametrize("argv, needles", READ_ONLY, ids=["evaluate", "fit --resume", "export --out"])
def test_a_read_only_folder_is_one_line(argv, needles, base_run, faults, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    (tmp_path / "ro").mkdir()
    before = digest(run)
    faults(run, errno.EROFS)
    faults(tmp_path / "ro", errno.EROFS)
    assert main(argv(run, tmp_path)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert digest(run) == before and not list((tmp_path / "ro").iterdir())
