"""T3: checkpoints hold tensors in safetensors and state in JSON; damage is a clear error."""
from __future__ import annotations

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
