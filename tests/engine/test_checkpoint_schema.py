"""T3: a checkpoint's JSON state is checked field by field before anything trusts it.

The schema functions are pure: each case edits one field of a real run's state and expects one
line naming that field (the run-level cases, through `trainlab fit --resume`, are in
tests/badinput/test_run_integrity.py).
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import FAST
from safetensors import safe_open

import trainlab
from trainlab.engine.checkpoint import STATE_KEY, check_model_weights
from trainlab.engine.state_schema import check_info, check_positions, check_state, info_mismatch
from trainlab.errors import RunError

SOURCE = "runs/x/checkpoints/last.safetensors"


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """The JSON state of a real run's last checkpoint (the doctor on, so that a callback state is
    there)."""
    folder = tmp_path_factory.mktemp("schema")
    run = trainlab.fit(None, [*FAST, "train.epochs=1", "train.checkpoint_every_steps=3", f"run.dir={folder / 'r'}"],
                       quiet=True)
    with safe_open(str(run.checkpoints / "last.safetensors"), "pt") as f:
        return json.loads(f.metadata()[STATE_KEY])


def edited(state, path: str, value):
    """A deep copy of ``state`` with the field at the dotted ``path`` (list indices as numbers) set."""
    new = copy.deepcopy(state)
    *parents, last = path.split(".")
    node = new
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return new


def message(state, **kwargs) -> str:
    with pytest.raises(RunError) as err:
        check_state(state, SOURCE, **kwargs)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"checkpoint {SOURCE}: state."), line
    return line


def test_a_real_state_passes(state):
    """T3: what fit writes is what the schema accepts, resumed or evaluated."""
    check_state(state, SOURCE)
    check_state(state, SOURCE, resume=False)
    assert state["callbacks"], "the doctor's state should be there to be checked"


def test_the_example_of_the_issue(state):
    assert message(edited(state, "epoch", -3)) == (f"checkpoint {SOURCE}: state.epoch: expected a non-negative "
                                                    "integer, got -3")


CASES = [
    ("epoch", "3", "state.epoch: expected a non-negative integer, got \"3\""),
    ("epoch", True, "state.epoch: expected a non-negative integer, got true"),
    ("batch", 1.5, "state.batch: expected a non-negative integer, got 1.5"),
    ("step", None, "state.step: expected a non-negative integer, got null"),
    ("history", "abc", "state.history: expected a list, got \"abc\""),
    ("history", [], "state.history: expected the records of epochs 1 to"),
    ("best", [], "state.best: expected a JSON object"),
    ("best.epoch", 99, "state.best.epoch: expected an integer from 1 to"),
    ("best.value", float("inf"), "state.best.value: expected a finite number or null, got Infinity"),
    ("stop_reason", 5, "state.stop_reason: expected a string or null, got 5"),
    ("meter", "full", "state.meter: expected a JSON object"),
    ("meter.n", -1, "state.meter.n: expected a non-negative integer, got -1"),
    ("meter.loss_sum", "1.0", "state.meter.loss_sum: expected a finite number or null, got \"1.0\""),
    ("meter.loss_sum", None, None),  # a diverged epoch's NaN sum, written as null
    ("optimizer.name", 7, "state.optimizer.name: expected a string, got 7"),
    ("optimizer.param_groups", [], "state.optimizer.param_groups: expected at least one parameter group"),
    ("optimizer.param_groups.0.params", [0, 0], "state.optimizer.param_groups[0].params[1]: expected each "
                                                "parameter index once"),
    ("optimizer.param_groups.0.lr", -0.1, "state.optimizer.param_groups[0].lr: expected a finite number >= 0"),
    ("optimizer.scalars", {"x": 1}, "state.optimizer.scalars.x: expected a key <parameter index>.<name>"),
    ("rng.numpy.0", "PCG64", "state.rng.numpy[0]: expected one of MT19937, got \"PCG64\""),
    ("rng.numpy.1", [1, 2, 3], "state.rng.numpy[1]: expected a list of 624 items, got 3 items"),
    ("rng.numpy.2", 625, "state.rng.numpy[2]: expected an integer from 0 to 624, got 625"),
    ("rng.python.1", [0] * 10, "state.rng.python[1]: expected a list of 625 items, got 10 items"),
    ("callbacks", [], "state.callbacks: expected a JSON object"),
    ("callbacks.doctor", "on", "state.callbacks.doctor: expected a JSON object, got \"on\""),
    ("ema_steps", 10**9, "state.ema_steps: expected an integer from 0 to"),
    ("last_lr", -1, "state.last_lr: expected a finite number >= 0 or null, got -1"),
    ("info.input_shape", [0, 8, 8], "state.info.input_shape[0]: expected a positive integer, got 0"),
    ("info.input_shape", [1, 2, 3, 4], "state.info.input_shape: expected 1 to 3 sizes"),
    ("info.class_names", ["a", "b"], "state.info.class_names: expected 10 names (num_classes), got 2 names"),
    ("info.class_names.3", 3, "state.info.class_names[3]: expected a string, got 3"),
    ("info.kind", "audio", "state.info.kind: expected one of image, flat, sequence, got \"audio\""),
]


@pytest.mark.parametrize("path, value, needle", CASES, ids=[f"{c[0]}={c[1]!r}"[:40] for c in CASES])
def test_each_field_is_checked(state, path, value, needle):
    """T3: one wrong field, one line naming it (its path, what is expected, what it holds)."""
    bad = edited(state, path, value)
    if needle is None:
        check_state(bad, SOURCE)
        return
    assert needle in message(bad)


def test_history_records_are_checked_one_by_one(state):
    record = next(i for i, r in enumerate(state["history"]) if "event" not in r)
    assert "state.history[%d].epoch: expected an integer from 1 to" % record in message(
        edited(state, f"history.{record}.epoch", 7))
    assert f"state.history[{record}].val_loss[0]: expected a finite number, got NaN" in message(
        edited(state, f"history.{record}.val_loss", [float("nan")]))
    assert f"state.history[{record + 1}]: expected a JSON object, got 3" in message(
        edited(state, "history", [*state["history"][: record + 1], 3]))


def test_missing_keys_are_named(state):
    bad = copy.deepcopy(state)
    del bad["rng"]
    assert "state.rng: expected a value (the key is missing)" in message(bad)
    del bad["info"]["class_names"]
    assert "state.info.class_names: expected a value" in message(bad, resume=False)


def test_evaluation_checks_only_the_model_description(state):
    """T3: best.safetensors holds no optimizer or RNG state; evaluating checks info (and the epoch)."""
    best = {"format": state["format"], "kind": "best", "epoch": None, "info": state["info"]}
    check_state(best, SOURCE, resume=False)
    with pytest.raises(RunError, match="state.info.num_classes: expected a positive integer, got 0"):
        check_info({**state["info"], "num_classes": 0}, SOURCE)


def test_positions_are_checked_against_the_recipe():
    """T3: the batch within an epoch of this recipe, at a step boundary; no more steps than batches."""
    state = {"epoch": 2, "batch": 4, "step": 20}
    check_positions(state, SOURCE, batches_per_epoch=8, steps_per_epoch=8, accumulate=1)
    check_positions({**state, "batch": 8, "step": 24}, SOURCE, 8, 8, 1)  # saved on an epoch's last step
    with pytest.raises(RunError, match=r"state\.batch: expected an integer from 0 to 8, got 9"):
        check_positions({**state, "batch": 9}, SOURCE, 8, 8, 1)
    with pytest.raises(RunError, match=r"state\.step: expected an integer from 0 to 20, got 21"):
        check_positions({**state, "step": 21}, SOURCE, 8, 8, 1)
    with pytest.raises(RunError, match=r"state\.batch: expected a multiple of train\.accumulate=3"):
        check_positions({**state, "step": 6}, SOURCE, 8, 3, 3)
    check_positions({"epoch": 0, "batch": 8, "step": 3}, SOURCE, 8, 3, 3)  # the short last group


def test_a_foreign_info_is_named(state):
    info = state["info"]
    assert info_mismatch(info, info, SOURCE) is None
    other = {**info, "class_names": [f"c{i}" for i in range(10)]}
    err = info_mismatch(other, info, SOURCE)
    assert err is not None and "state.info.class_names" in str(err) and "another run" in str(err)


def test_model_tensors_of_another_dtype_or_not_finite_are_refused():
    """T3: load_state_dict would cast a float64 tensor silently and use NaN; both are refused."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    good = {k: v.clone() for k, v in model.state_dict().items()}
    check_model_weights(model, good, "best.safetensors")
    with pytest.raises(RunError, match=r"model tensor 0\.weight is float64, the model's is float32"):
        check_model_weights(model, {**good, "0.weight": good["0.weight"].double()}, "best.safetensors")
    with pytest.raises(RunError, match=r"model tensor 1\.num_batches_tracked is int32, the model's is int64"):
        check_model_weights(model, {**good, "1.num_batches_tracked": torch.tensor(3, dtype=torch.int32)}, "b")
    for bad in (float("nan"), float("inf")):
        w = good["1.running_var"].clone()
        w[1] = bad
        with pytest.raises(RunError, match=r"model tensor 1\.running_var holds NaN or infinite values"):
            check_model_weights(model, {**good, "1.running_var": w}, "best.safetensors")
