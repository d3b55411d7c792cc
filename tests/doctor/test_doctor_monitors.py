"""The doctor's monitors against independent measurements of the same run (torch as the oracle)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import trainlab
from trainlab.data.statistics import channel_moments
from trainlab.doctor.monitors import group_norms, unit_alive
from trainlab.engine.callbacks import Callback
from trainlab.registry import MODELS

FAST = {"run.tensorboard": False, "run.plots": False, "train.progress": False}


# ------------------------------------------------------------------------------ pure statistics


def test_group_norms_equal_the_norm_of_the_concatenated_group():
    """X1/X2: per-layer gradient norm = L2 norm of all of the layer's parameter gradients together."""
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(5, 3, generator=g), torch.randn(4, generator=g), torch.randn(2, 2, 2, generator=g),
               torch.randn(7, generator=g)]
    groups = [0, 0, 2, 2]
    got = group_norms([float(torch.linalg.vector_norm(t)) for t in tensors], groups, 3)
    oracle = [torch.linalg.vector_norm(torch.cat([t.flatten() for t in tensors[:2]])), 0.0,
              torch.linalg.vector_norm(torch.cat([t.flatten() for t in tensors[2:]]))]
    assert got == pytest.approx([float(v) for v in oracle], rel=1e-6)
    assert math.isnan(group_norms([1.0, math.nan], [0, 0], 1)[0])
    assert group_norms([1.0, math.inf], [0, 0], 1) == [math.inf]


def test_unit_alive_per_feature_and_per_channel():
    """X3: a unit is a feature of (N, F) or a channel of (N, C, H, W); alive if positive anywhere."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 3, 3, generator=g) - 2.5
    oracle = torch.tensor([bool((x[:, c] > 0).any()) for c in range(6)])
    assert torch.equal(unit_alive(x), oracle)
    f = torch.tensor([[-1.0, 2.0, 0.0], [-3.0, -1.0, 0.0]])
    assert unit_alive(f).tolist() == [False, True, False]
    assert unit_alive(torch.tensor([[math.nan, -1.0]])).tolist() == [True, False]  # NaN is a blow-up, not death


def test_channel_moments_match_torch():
    """X8: input statistics per channel of a (N, C, H, W) batch."""
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(2)) * 3 + 1
    s, sq, n, lo, hi = channel_moments(x)
    mean = s / n
    var = sq / n - mean**2
    assert n == 8 * 16
    assert torch.allclose(mean, x.double().mean(dim=(0, 2, 3)))
    assert torch.allclose(var, x.double().var(dim=(0, 2, 3), unbiased=False))
    assert float(lo) == pytest.approx(float(x.min())) and float(hi) == pytest.approx(float(x.max()))


# -------------------------------------------------------------------------- one monitored fit
class Oracle(Callback):
    """Measures, at every step, what the doctor samples: per-module gradient norms, update/weight
    ratios, the loss, which ReLU units were positive, and the first batches the net sees."""

    def __init__(self):
        self.grads, self.ratios, self.loss, self.alive, self.inputs = {}, {}, {}, {}, []
        self.handles = []

    def on_fit_start(self, trainer):
        self.modules = [(n, m) for n, m in trainer.model.named_modules() if list(m.parameters(recurse=False))]
        for name, mod in trainer.model.named_modules():
            if isinstance(mod, nn.ReLU):
                self.handles.append(mod.register_forward_hook(self._relu(trainer, name)))
        self.handles.append(trainer.model.net.register_forward_pre_hook(self._net_input))

    def _relu(self, trainer, name):
        def hook(module, args, out):
            if module.training:
                step = trainer.state.step + 1
                self.alive.setdefault(step, {})[name] = torch.tensor(
                    [bool((out[:, j] > 0).any()) for j in range(out.shape[1])])
        return hook

    def _net_input(self, module, args):
        if module.training and len(self.inputs) < 3:
            self.inputs.append(args[0].detach().clone())

    def on_after_backward(self, trainer):
        step = trainer.state.step + 1
        self.grads[step] = {n: float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in m.parameters(recurse=False)])))
                            for n, m in self.modules}
        self.before = {n: torch.cat([p.detach().flatten().clone() for p in m.parameters(recurse=False)])
                       for n, m in self.modules}

    def on_batch_end(self, trainer, batch, outputs, loss):
        step = trainer.state.step
        self.loss[step] = float(loss.detach())
        self.ratios[step] = {}
        for n, m in self.modules:
            after = torch.cat([p.detach().flatten() for p in m.parameters(recurse=False)])
            self.ratios[step][n] = float(torch.linalg.vector_norm(after - self.before[n]) /
                                         torch.linalg.vector_norm(self.before[n]))

    def on_fit_end(self, trainer):
        for h in self.handles:
            h.remove()


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    oracle = Oracle()
    run = trainlab.fit("digits-mlp", callbacks=[oracle], quiet=True, **FAST, **{
        "run.dir": str(tmp_path_factory.mktemp("mon") / "run"), "train.epochs": 2, "doctor.every": 3,
        "data.normalize": False, "model.norm": "none", "model.width": 32, "model.bias_init": -0.3,
        "optim.lr": 0.01})
    data = json.loads((run.dir / "doctor.json").read_text())
    return run, oracle, data["history"]


def test_sampled_steps_follow_every_and_the_first_batch_of_each_epoch(monitored):
    """X1: samples at steps 1, 1+every, 1+2*every, ... and at the first step of every epoch."""
    run, oracle, h = monitored
    spe = h["data"]["steps_per_epoch"]
    total = run.epochs()[-1]["step"]
    expected = [s for s in range(1, total + 1) if (s - 1) % 3 == 0 or (s - 1) % spe == 0]
    assert h["steps"]["step"] == expected
    assert h["steps"]["epoch"] == [1 + (s - 1) // spe for s in expected]


def test_layer_gradients_update_ratios_and_loss_match_the_oracle(monitored):
    """X1/X2/X6: per-module gradient norm (forward order), global norm, update/weight ratio, loss."""
    run, oracle, h = monitored
    names = [layer["name"] for layer in h["layers"]]
    assert names == ["net.1", "net.4", "net.8"]  # the three Linear layers, in forward order
    assert all(layer["weight"] for layer in h["layers"])
    for i, step in enumerate(h["steps"]["step"]):
        want = [oracle.grads[step][n] for n in names]
        assert h["steps"]["layer_grad"][i] == pytest.approx(want, rel=2e-3)
        assert h["steps"]["grad_norm"][i] == pytest.approx(math.sqrt(sum(v * v for v in want)), rel=2e-3)
        assert h["steps"]["update_ratio"][i] == pytest.approx([oracle.ratios[step][n] for n in names], rel=2e-3)
        assert h["steps"]["loss"][i] == pytest.approx(oracle.loss[step], rel=1e-4)


def test_dead_fraction_is_over_the_sampled_batches_of_each_epoch(monitored):
    """X3: a unit is dead if never positive over the epoch's sampled training batches (not validation)."""
    run, oracle, h = monitored
    acts = [a["name"] for a in h["activations"]]
    assert acts == ["net.3", "net.6"]
    spe = h["data"]["steps_per_epoch"]
    assert len(h["liveness"]) == 2
    for rec in h["liveness"]:
        steps = [s for s in h["steps"]["step"] if 1 + (s - 1) // spe == rec["epoch"]]
        assert rec["batches"] == len(steps)
        for j, name in enumerate(acts):
            alive = torch.stack([oracle.alive[s][name] for s in steps]).any(0)
            assert rec["dead"][j] == pytest.approx(1 - alive.float().mean().item(), abs=1e-4)
    assert any(d > 0 for rec in h["liveness"] for d in rec["dead"])  # bias_init=-0.3 kills some units


def test_input_statistics_are_of_what_the_net_sees(monitored):
    """X8: mean/std/min/max of the Normalize stage's output over the first 3 batches (raw 0..16 here)."""
    run, oracle, h = monitored
    x = torch.cat([b.flatten() for b in oracle.inputs]).double()
    s = h["inputs"]
    assert s["batches"] == 3
    assert s["mean"] == pytest.approx(float(x.mean()), rel=1e-6)
    assert s["std"] == pytest.approx(float(x.std(unbiased=False)), rel=1e-6)
    assert (s["min"], s["max"]) == (0.0, 16.0)


def test_no_hook_is_left_behind(monitored, tmp_path):
    """X3: liveness hooks exist only during sampled batches; none remain after fit."""
    class Probe(Callback):
        def on_fit_start(self, trainer):
            self.model = trainer.model

    probe = Probe()
    trainlab.fit("digits-mlp", callbacks=[probe], quiet=True, **FAST,
                 **{"run.dir": str(tmp_path / "r"), "train.epochs": 1})
    assert [n for n, m in probe.model.named_modules() if m._forward_hooks or m._forward_pre_hooks] == []


@MODELS.register("doctor_test_reversed", help="test model whose modules are registered in reverse order of use")
def _reversed(cfg, info):
    class Reversed(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(16, info.num_classes)
            self.middle = nn.Linear(16, 16)
            self.stem = nn.Linear(64, 16)

        def forward(self, x):
            return self.head(torch.relu(self.middle(torch.relu(self.stem(x.flatten(1))))))

    return Reversed()


def test_layers_are_listed_in_forward_order_not_registration_order(tmp_path):
    """X2: 'the first layers' are the ones the input meets first, found from the forward pass."""
    run = trainlab.fit("digits-mlp", quiet=True, **FAST, **{"run.dir": str(tmp_path / "r"), "train.epochs": 1,
                                                            "model.name": "doctor_test_reversed"})
    h = json.loads((run.dir / "doctor.json").read_text())["history"]
    assert [layer["name"] for layer in h["layers"]] == ["net.stem", "net.middle", "net.head"]


def test_sampling_interval_doubles_after_max_samples(tmp_path):
    """X1: a long run's history stays bounded: after doctor.max_samples samples the interval doubles."""
    run = trainlab.fit("digits-mlp", quiet=True, **FAST, **{
        "run.dir": str(tmp_path / "r"), "train.epochs": 7, "doctor.every": 1, "doctor.max_samples": 100})
    h = json.loads((run.dir / "doctor.json").read_text())["history"]
    steps, spe = h["steps"]["step"], h["data"]["steps_per_epoch"]
    assert steps[:100] == list(range(1, 101))
    later = [s for s in steps[100:] if (s - 1) % spe != 0]  # the first step of an epoch is always sampled
    assert later and all((s - 1) % 2 == 0 for s in later)
    assert len(steps) < 7 * spe


# ---------------------------------------------------------------------------- which units can die
def test_liveness_only_for_activations_with_no_gradient_below_a_floor():
    """X3: ReLU, ReLU6 and Hardtanh units can die (flat below 0, 0 and min_val); Leaky ReLU, PReLU,
    RReLU, ELU, SELU, GELU, SiLU, Mish, Hardswish and Maxout keep a gradient and cannot."""
    from trainlab.doctor.monitors import liveness_floor
    from trainlab.models.layers import ChannelMaxout

    assert liveness_floor(nn.ReLU()) == 0.0 and liveness_floor(nn.ReLU6()) == 0.0
    assert liveness_floor(nn.Hardtanh()) == -1.0 and liveness_floor(nn.Hardtanh(-2.0, 2.0)) == -2.0
    for act in (nn.LeakyReLU(), nn.PReLU(), nn.RReLU(), nn.ELU(), nn.CELU(), nn.SELU(), nn.GELU(), nn.SiLU(),
                nn.Mish(), nn.Hardswish(), nn.Sigmoid(), nn.Tanh(), ChannelMaxout(4, 2)):
        assert liveness_floor(act) is None, type(act).__name__


@MODELS.register("doctor_test_floors", help="test model: half the units of two activations start far below zero")
def _floors(cfg, info):
    class Floors(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.act1 = nn.Linear(64, 16), nn.Hardtanh()
            self.middle, self.act2 = nn.Linear(16, 16), nn.LeakyReLU(0.01)
            self.head = nn.Linear(16, info.num_classes)
            with torch.no_grad():
                self.stem.bias[:8] = -100.0  # below Hardtanh's -1: flat, no gradient, dead
                self.middle.bias[:8] = -100.0  # below zero, but Leaky ReLU still passes 1% of the gradient

        def forward(self, x):
            return self.head(self.act2(self.middle(self.act1(self.stem(x.flatten(1))))))

    return Floors()


def test_dead_units_are_judged_per_activation_floor(tmp_path):
    """X3: Hardtanh units stuck at -1 are dead; Leaky ReLU units that are never positive are not
    monitored at all (they are not dead: their gradient is 1% of the slope above zero)."""
    run = trainlab.fit("digits-mlp", quiet=True, **FAST, **{"run.dir": str(tmp_path / "r"), "train.epochs": 1,
                                                            "model.name": "doctor_test_floors"})
    data = json.loads((run.dir / "doctor.json").read_text())
    assert data["history"]["activations"] == [{"name": "net.act1", "type": "Hardtanh", "units": 16, "floor": -1.0}]
    [f] = [f for f in data["findings"] if f["code"] == "dead_relu"]
    assert f["evidence"]["dead"] == {"net.act1": 0.5}
    assert "never above -1 (no gradient below it)" in f["message"]


def test_compiled_training_says_which_monitors_are_off(tmp_path):
    """X3/X8: with train.compile=true the hooks of liveness and input statistics would recompile the
    graph, so they are off; the doctor says so in one line at fit start instead of skipping silently."""
    import io

    from trainlab.api import build_components
    from trainlab.doctor import Doctor
    from trainlab.recipe import load_recipe

    recipe = load_recipe("digits-mlp", {"train.compile": True, "run.dir": str(tmp_path / "r")})
    trainer = build_components(recipe)  # torch.compile is lazy: nothing is compiled here
    out = io.StringIO()
    Doctor(recipe.doctor, stream=out).on_fit_start(trainer)
    assert out.getvalue().splitlines() == [
        ("doctor: warning: train.compile=true: monitors off (liveness (dead_relu) and input statistics "
         "(unnormalized_inputs)): their forward hooks would recompile the graph")]
    quiet = io.StringIO()
    Doctor(recipe.doctor, stream=quiet, quiet=True).on_fit_start(trainer)
    eager = build_components(load_recipe("digits-mlp", {"run.dir": str(tmp_path / "e")}))
    Doctor(recipe.doctor, stream=quiet).on_fit_start(eager)
    assert quiet.getvalue() == ""
