"""Static graphs (M13, S3 "frameworks"): export to TorchScript, torch.export and ONNX with a parity check, and
training through torch.compile with a real eager fallback."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from trainlab import fit
from trainlab.cli import main
from trainlab.data.bundle import DataInfo
from trainlab.export import ParityError, export_model
from trainlab.models.wrapper import TrainlabModel

from conftest import FAST


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return fit("digits-cnn", FAST + ["train.epochs=1", "model.width=8",
                                     f"run.dir={tmp_path_factory.mktemp('static') / 'run'}"], quiet=True)


@pytest.mark.parametrize("fmt", ["torchscript", "exported", "onnx"])
def test_export_matches_eager(digits_run, tmp_path, fmt):
    """M13: the reloaded export gives the eager model's outputs (max |diff| tiny) on two batch sizes."""
    model, _, _, info, _ = digits_run.load_model()
    out = tmp_path / f"model.{fmt}"
    result = export_model(model, info, fmt, out)
    assert out.is_file() and out.stat().st_size > 0
    assert result.max_abs_diff <= 1e-4 and result.batch_sizes == (4, 7)
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        x = torch.full((3, 1, 8, 8), 8.0)
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        torch.testing.assert_close(got, model(x), atol=1e-4, rtol=1e-4)


def test_export_cli_prints_the_difference(digits_run, tmp_path, capsys):
    """M13: `trainlab export RUN --format F --out FILE` writes the file and prints the max absolute difference."""
    out = tmp_path / "m.pt2"
    assert main(["export", str(digits_run.dir), "--format", "exported", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "max |export - eager|" in line and out.is_file()
    assert main(["export", str(digits_run.dir), "--format", "exported", "--out", str(tmp_path / "no" / "m")]) == 2


class BatchDependent(nn.Module):
    """Python control flow on the batch size: a trace freezes the branch it saw."""

    def forward(self, x):
        return x * 2 if x.shape[0] > 4 else x


def test_parity_check_catches_a_wrong_trace(tmp_path):
    """M13: a trace that froze Python control flow differs from eager on another batch size: ParityError."""
    model = TrainlabModel(nn.Identity(), BatchDependent())
    info = DataInfo((3,), 3, list("abc"), kind="flat")
    with pytest.raises(ParityError, match="parity check failed"):
        export_model(model, info, "torchscript", tmp_path / "bad.pt")


def test_compile_failure_falls_back_to_eager_once(tmp_path, capsys, monkeypatch):
    """M13: when compilation fails at the first forward, training warns once and continues eagerly, ending with the
    same weights as an eager run (the failed call's BatchNorm statistics are rolled back)."""
    def broken_compile(model, **kwargs):
        def compiled(*args, **kw):
            model(*args, **kw)  # a failure after part of the work ran: BatchNorm statistics moved
            raise RuntimeError("backend compiler failed: no C++ compiler")

        return compiled

    eager = fit("digits-cnn", FAST + ["train.epochs=1", "model.width=8", f"run.dir={tmp_path / 'a'}"], quiet=True)
    monkeypatch.setattr(torch, "compile", broken_compile)
    fallback = fit("digits-cnn", FAST + ["train.epochs=1", "model.width=8", "train.compile=true",
                                         f"run.dir={tmp_path / 'b'}"], quiet=True)
    err = capsys.readouterr().err
    assert err.count("train.compile failed") == 1 and "no C++ compiler" in err
    from safetensors.torch import load_file

    a = load_file(str(eager.dir / "checkpoints" / "last.safetensors"))
    b = load_file(str(fallback.dir / "checkpoints" / "last.safetensors"))
    for key in a:
        if key.startswith("model."):
            assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_compiled_forward_and_backward_match_eager():
    """M13: CompiledForward really compiles (inductor, C++ on the CPU): same outputs and gradients as eager."""
    import shutil

    from trainlab.engine.compile import CompiledForward

    if shutil.which("g++") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile needs a C++ compiler on the CPU")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.randn(16, 1, 8, 8)
    eager_out = model(x)
    eager_out.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = CompiledForward(model)
    out = compiled(x)
    out.square().sum().backward()
    assert compiled.failed is None and compiled.compiled is not None
    torch.testing.assert_close(out, eager_out, atol=1e-5, rtol=1e-5)
    for p, g in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-5)


def test_compiled_forward_snapshots_only_unseen_signatures(monkeypatch):
    """M13: the rollback snapshot (buffers, RNG state) is taken only for an input signature that has not yet run
    compiled; a new signature (batch size, train/eval mode) still gets one, and its failure is rolled back."""
    from trainlab.engine.compile import CompiledForward

    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    fail_on = {"n": None}

    def fake_compile(m, **kwargs):
        def compiled(x):
            out = m(x)  # BatchNorm statistics move before the (simulated) compile failure
            if x.shape[0] == fail_on["n"]:
                raise RuntimeError("backend compiler failed")
            return out

        return compiled

    snapshots = []
    real_get_rng_state = torch.get_rng_state
    monkeypatch.setattr(torch, "get_rng_state", lambda: snapshots.append(1) or real_get_rng_state())
    fwd = CompiledForward(model, compiler=fake_compile, stream=io.StringIO())
    x8 = torch.randn(8, 4)
    for _ in range(3):
        fwd(x8)
    assert len(snapshots) == 1  # the first call of the (8, 4) training signature only
    model.eval()
    fwd(x8)
    assert len(snapshots) == 2  # eval mode is another signature
    model.train()
    fwd(x8)
    assert len(snapshots) == 2
    before = model[1].running_mean.clone()
    fail_on["n"] = 5
    x5 = torch.randn(5, 4)
    out = fwd(x5)  # new batch size: snapshot, failure, rollback, eager forward
    assert len(snapshots) == 3 and fwd.failed is not None and out.shape == (5, 3)
    # the statistics moved once (the eager forward; momentum 0.1), the failed call's move was rolled back
    expected = 0.9 * before + 0.1 * model[0](x5).detach().mean(0)
    torch.testing.assert_close(model[1].running_mean, expected)
    assert model[1].num_batches_tracked.item() == 5  # 4 compiled training calls + the eager one
