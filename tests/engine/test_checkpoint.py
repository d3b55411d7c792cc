"""T3: checkpoints hold tensors in safetensors and state in JSON; damage is a clear error."""
from __future__ import annotations

import json

import pytest
import torch

from trainlab.engine.checkpoint import (
    load_checkpoint,
    load_model_weights,
    optimizer_from_checkpoint,
    optimizer_to_checkpoint,
    save_checkpoint,
)
from trainlab.errors import RunError


def test_round_trip_tensors_and_state(tmp_path):
    tensors = {"model.w": torch.randn(3, 4), "model.n": torch.tensor(7), "rng.torch": torch.get_rng_state()}
    state = {"epoch": 3, "history": [{"epoch": 1, "loss": 0.5}], "nan": float("nan")}
    save_checkpoint(tmp_path / "c.safetensors", tensors, state)
    t2, s2 = load_checkpoint(tmp_path / "c.safetensors", require=("epoch", "history"))
    assert all(torch.equal(tensors[k], t2[k]) for k in tensors)
    assert s2["epoch"] == 3 and s2["history"] == state["history"] and s2["nan"] is None
    assert (tmp_path / "c.json").exists()


def test_checkpoint_files_are_read_by_the_safetensors_library(tmp_path):
    """T3: a checkpoint, written directly and through the background writer, is a safetensors
    file the library (the reference) reads back: every dtype a checkpoint holds, 0-d and empty
    tensors, and a state with quotes, newlines, control and non-ASCII characters in its JSON."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from trainlab.engine.checkpoint import STATE_KEY
    from trainlab.engine.writer import DurableWriter

    gen = torch.Generator().manual_seed(0)
    tensors = {
        "model.conv.weight": torch.randn(4, 3, 3, 3, generator=gen),
        "model.bn.num_batches_tracked": torch.tensor(12),
        "optim.state.0.step": torch.tensor(3.0),
        "rng.torch": torch.get_rng_state(),
        "ema.half": torch.randn(5, generator=gen).half(),
        "ema.bf16": torch.randn(2, 3, generator=gen).bfloat16(),
        "x.double": torch.randn(3, generator=gen, dtype=torch.float64),
        "x.int32": torch.arange(7, dtype=torch.int32),
        "x.int16": torch.arange(3, dtype=torch.int16),
        "x.int8": torch.arange(-3, 3, dtype=torch.int8),
        "x.bool": torch.tensor([True, False, True]),
        "x.empty": torch.zeros(0, 4),
        "x.strided": torch.arange(12.0).reshape(3, 4).t(),  # not contiguous: the snapshot packs it
    }
    state = {"info": {"name": 'quote " newline \n é ☃ \x01 tab\t'}, "epoch": 2}
    writer = DurableWriter()
    save_checkpoint(tmp_path / "direct.safetensors", tensors, state)
    save_checkpoint(tmp_path / "thread.safetensors", tensors, state, writer.submit)
    writer.close()
    for name in ("direct", "thread"):
        path = tmp_path / f"{name}.safetensors"
        back = load_file(path)
        assert set(back) == set(tensors)
        assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in tensors.items())
        with safe_open(path, "pt") as f:
            assert json.loads(f.metadata()[STATE_KEY]) == {"format": "trainlab-checkpoint/1", **state}
        t2, s2 = load_checkpoint(path, require=("info", "epoch"))
        assert s2["info"] == state["info"] and all(torch.equal(t2[k], v) for k, v in tensors.items())
        assert json.loads((tmp_path / f"{name}.json").read_text())["epoch"] == 2
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file is left behind


def test_optimizer_state_round_trip_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    tensors, meta = optimizer_to_checkpoint(opt)
    clone = torch.nn.Linear(4, 3)
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.Adam(clone.parameters(), lr=0.5)
    optimizer_from_checkpoint(opt2, {k: v.clone() for k, v in tensors.items()}, meta)
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        m(x).square().sum().backward()
        o.step()
    assert torch.equal(model.weight, clone.weight)
    assert opt2.param_groups[0]["lr"] == 0.1


def test_damaged_checkpoints_are_named_errors(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"model.w": torch.randn(100)}, {"epoch": 1})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match=r"c.safetensors is damaged"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(RunError, match="c.safetensors"):
        load_checkpoint(path)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}")
    with pytest.raises(RunError, match="c.safetensors"):
        load_checkpoint(path)
    with pytest.raises(RunError, match="does not exist"):
        load_checkpoint(tmp_path / "none.safetensors")
    save_checkpoint(path, {"model.w": torch.randn(3)}, {"epoch": 1})
    with pytest.raises(RunError, match="c.safetensors: its state lacks info"):
        load_checkpoint(path)


def test_shape_mismatch_lists_the_keys():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    weights["1.weight"] = torch.zeros(5, 3)
    weights["extra"] = torch.zeros(1)
    del weights["0.bias"]
    with pytest.raises(RunError) as err:
        load_model_weights(model, weights, "best.safetensors")
    msg = str(err.value)
    assert "1.weight (5, 3) vs model (2, 3)" in msg and "missing: 0.bias" in msg and "unexpected: extra" in msg
