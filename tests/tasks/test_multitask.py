"""Multi-task learning (K7, M14, L6): a shared zoo trunk with named heads (multiclass, binary,
regression), the weighted loss Loss1 + λ·Loss2 + γ·Loss3 and its learned-uncertainty variant,
per-head metrics in metrics.jsonl / the table / report.md, evaluate and predict on a multitask run,
the doctor's head_dominance rule, exact resume with learned weights, and bad input."""
from __future__ import annotations

import json
import math
import signal

import pytest
import torch
import torch.nn.functional as F
from conftest import cli_env  # noqa: F401  (conftest sets torch to one thread)
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

import trainlab
from trainlab.api import build_components
from trainlab.cli import main
from trainlab.data.shapes import image_targets
from trainlab.doctor.rules import RULES
from trainlab.engine.callbacks import Callback
from trainlab.recipe import DoctorConfig, load_recipe

TINY = ["data.shapes.count=120", "data.batch_size=16", "model.width=4", "model.options.features=16",
        "model.options.hidden=8", "train.progress=false", "run.plots=false", "run.tensorboard=false",
        "train.threads=1", "doctor.every=2"]


def heads(**change: str) -> str:
    """A ``heads=[...]`` override: the recipe's four heads with some replaced by their YAML."""
    spec = {"class": "{name: class, kind: multiclass}", "count": "{name: count, kind: regression, loss: smooth_l1, "
            "beta: 0.5}", "center": "{name: center, kind: regression, loss: mse}",
            "overlap": "{name: overlap, kind: binary, loss: bce}"}
    spec.update(change)
    return "heads=[" + ", ".join(spec.values()) + "]"


def boxes(rows, size=(32, 40)):
    return tv_tensors.BoundingBoxes(torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), format="XYXY",
                                    canvas_size=size)


def test_image_targets_from_the_boxes_match_hand_computed_values():
    """K7: count = visible shapes, center = centre of the last (largest, front) box over (W, H),
    overlap = two boxes share area (touching edges do not)."""
    anns = [
        {"boxes": boxes([[0, 0, 10, 10], [4, 8, 20, 24]]), "labels": torch.tensor([1, 2])},   # overlap
        {"boxes": boxes([[0, 0, 10, 10], [10, 0, 20, 10], [20, 16, 40, 32]]), "labels": torch.tensor([0, 3, 1])},
        {"boxes": boxes([[8, 2, 16, 30]]), "labels": torch.tensor([2])},
    ]
    t = image_targets(anns, torch.tensor([2, 1, 2]))
    assert t["class"].tolist() == [2, 1, 2]
    assert t["count"].tolist() == [2.0, 3.0, 1.0]
    assert torch.allclose(t["center"], torch.tensor([[12 / 40, 16 / 32], [30 / 40, 24 / 32], [12 / 40, 16 / 32]]))
    assert t["overlap"].tolist() == [1.0, 0.0, 0.0]


def test_targets_follow_a_flip_of_the_image():
    """K7: the targets are read off the augmented boxes: a horizontal flip mirrors the centre's x."""
    recipe = load_recipe("shapes-multitask", ["data.shapes.count=8"])
    trainer = build_components(recipe)
    src = trainer.bundle.train
    x, target = src.load(0)
    flipped = TF.horizontal_flip(target["boxes"])
    a = image_targets([{"boxes": target["boxes"]}], target["label"][None])
    b = image_targets([{"boxes": flipped}], target["label"][None])
    assert b["center"][0, 0] == pytest.approx(1 - float(a["center"][0, 0]))
    assert b["center"][0, 1] == pytest.approx(float(a["center"][0, 1]))
    assert b["count"].tolist() == a["count"].tolist() and b["overlap"].tolist() == a["overlap"].tolist()


def step_of(overrides):
    recipe = load_recipe("shapes-multitask", ["data.shapes.count=40", *overrides])
    trainer = build_components(recipe)
    batch = next(iter(trainer.train_loader.batches(0)))
    return trainer, batch


@pytest.mark.parametrize("trunk", ["mlp", "blocknet"])
def test_any_zoo_classifier_is_the_shared_trunk(trunk):
    """M14: the trunk is a zoo model ending in model.options.features shared features; each head
    maps them to its outputs (classes, one logit, one or two values); every head's loss reaches the
    trunk's first layer."""
    trainer, batch = step_of([f"model.options.trunk={trunk}", "model.options.features=12", "model.width=4"])
    net = trainer.model.net
    out, total = trainer.task.step(trainer.model, batch)
    n = len(batch["target"])
    assert out["trunk"].shape == (n, 12)
    assert {k: tuple(v.shape) for k, v in out["heads"].items()} == {
        "class": (n, 4), "count": (n, 1), "center": (n, 2), "overlap": (n, 1)}
    first = next(p for p in net.trunk.parameters() if p.dim() > 1)
    for term in out["terms"]:
        (g,) = torch.autograd.grad(term, first, retain_graph=True)
        assert float(g.abs().sum()) > 0


def test_total_loss_is_the_weighted_sum_of_the_head_losses():
    """L6/K7/M14: loss = Σ w_i·L_i with w from loss.weights (1 where not named), each L_i the
    head's own loss (cross-entropy, smooth L1 with its beta, MSE, BCE with pos_weight) written out."""
    trainer, batch = step_of(["loss.weights={class: 2.0, center: 7.5}",
                              heads(overlap="{name: overlap, kind: binary, loss: bce, pos_weight: 3.0}")])
    model, task = trainer.model, trainer.task
    model.eval()
    with torch.no_grad():
        out, total = task.step(model, batch)
    h, y = out["heads"], batch["targets"]
    d = (h["count"][:, 0] - y["count"]).abs()
    smooth = torch.where(d < 0.5, 0.5 * d**2 / 0.5, d - 0.25).mean()
    s = torch.sigmoid(h["overlap"][:, 0])
    bce = -(3.0 * y["overlap"] * torch.log(s) + (1 - y["overlap"]) * torch.log(1 - s)).mean()
    ce = -torch.log_softmax(h["class"], 1).gather(1, y["class"][:, None]).mean()
    mse = ((h["center"] - y["center"]) ** 2).mean()
    ref = 2.0 * ce + smooth + 7.5 * mse + bce  # count and overlap are not named: weight 1
    assert float(total.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    for name, v in (("class", ce), ("count", smooth), ("center", mse), ("overlap", bce)):
        assert float(out["losses"][name]) == pytest.approx(float(v), rel=1e-5)


def test_uncertainty_weighting_learns_one_log_variance_per_head():
    """L6: loss.uncertainty: total = Σ exp(−s_i)·w_i·L_i + s_i with s_i model parameters (trained
    by the optimizer, saved with the model)."""
    trainer, batch = step_of(["loss.uncertainty=true"])
    model, task = trainer.model, trainer.task
    s = model.net.uncertainty.log_vars
    with torch.no_grad():
        s.copy_(torch.tensor([0.5, -0.25, 1.0, 0.0]))
    model.eval()
    out, total = task.step(model, batch)
    w = {"class": 1.0, "count": 0.5, "center": 10.0, "overlap": 0.5}
    ref = sum(math.exp(-si) * w[n] * float(out["losses"][n].detach()) + si
              for si, n in zip([0.5, -0.25, 1.0, 0.0], ["class", "count", "center", "overlap"]))
    assert float(total.detach()) == pytest.approx(ref, rel=1e-5)
    total.backward()
    assert s.grad is not None and bool((s.grad != 0).all())
    assert any(p is s for g in trainer.optimizer.param_groups for p in g["params"])
    assert "net.uncertainty.log_vars" in model.state_dict()


def test_trunk_gradient_probe_matches_autograd_and_leaves_training_unchanged():
    """L6: the per-head gradient on the shared features is ||∂(w_i·L_i)/∂features||, and measuring
    it changes no parameter gradient (bit-identical to a step without the probe)."""
    trainer, batch = step_of([])
    model, task = trainer.model, trainer.task
    model.train()
    grads = []
    for probe in (True, False):
        torch.manual_seed(0)
        task.train_meter().batches = 0 if probe else 1  # the probe runs on every doctor.every-th batch
        model.zero_grad()
        out, total = task.step(model, batch)
        if probe:
            feats = out["trunk"]
            ref = [torch.autograd.grad(t, feats, retain_graph=True)[0].norm() for t in out["terms"]]
            assert torch.allclose(out["trunk_grad"], torch.stack(ref))
        else:
            assert "trunk_grad" not in out
        total.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_head_dominance_rule_quotes_the_norms_and_the_ratio():
    """L6: the doctor reports a head whose gradient on the trunk is doctor.head_dominance times
    every other head's, since the first epoch of the run of such epochs; not below the limit."""
    cfg = DoctorConfig()
    epochs = [{"epoch": 1, "train_trunkgrad_a": 1.0, "train_trunkgrad_b": 0.5},
              {"epoch": 2, "train_trunkgrad_a": 3.0, "train_trunkgrad_b": 0.2, "train_trunkgrad_c": 0.1},
              {"epoch": 3, "train_trunkgrad_a": 2.4, "train_trunkgrad_b": 0.2, "train_trunkgrad_c": 0.1}]
    [f] = RULES["head_dominance"](None, epochs, cfg, True)
    assert f.code == "head_dominance" and f.feature == "L6" and f.epoch == 2
    assert f.evidence["dominant"] == "a" and f.evidence["runner_up"] == "b"
    assert f.evidence["ratio"] == pytest.approx(12.0)
    assert "12× the next head's ('b') at epoch 3, since epoch 2" in f.message and "limit 10×" in f.message
    assert any("loss.weights.a" in r for r in f.remedies)
    epochs[-1]["train_trunkgrad_b"] = 0.3  # 8×: below the limit in the latest epoch
    assert RULES["head_dominance"](None, epochs, cfg, True) == []
    assert RULES["head_dominance"](None, [{"epoch": 1, "train_trunkgrad_a": 9.0}], cfg, True) == []


@pytest.mark.slow
def test_multitask_run_end_to_end_with_evaluate_predict_and_the_doctor(tmp_path, capsys):
    """K7/M14/L6: shapes-multitask on a tiny set: per-head metrics in metrics.jsonl, the per-epoch
    table, report.md and summary.json; a head weighted 1000× is reported by the doctor
    (head_dominance); `trainlab evaluate` prints the heads table; `trainlab predict` one line per
    input with every head."""
    run = trainlab.fit("shapes-multitask", [*TINY, "train.epochs=2", "loss.weights.center=1000",
                                            f"run.dir={tmp_path / 'r'}"])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.strip().startswith("epoch"))
    assert header.split() == ["epoch", "train_loss", "val_loss", "class_acc", "count_acc", "center_mae",
                              "overlap_acc", "lr", "time_s"]
    rec = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rec if "event" not in r][-1]
    for key in ("train_class_acc", "val_class_acc", "val_count_mae", "val_count_acc", "val_center_mae",
                "val_overlap_acc", "val_center_loss", "train_trunkgrad_center", "train_trunkgrad_class"):
        assert math.isfinite(last[key]), key
    test = run.summary()["test"]
    assert 0 <= test["class_acc"] <= 1 and test["center_mae"] >= 0 and "overlap_acc" in test
    report = (run.dir / "report.md").read_text()
    assert "## Heads (test)" in report and "| center | regression | mse | 1000 |" in report
    doctor = json.loads((run.dir / "doctor.json").read_text())
    [dom] = [f for f in doctor["findings"] if f["code"] == "head_dominance"]
    assert dom["evidence"]["dominant"] == "center" and dom["evidence"]["ratio"] >= 10

    assert main(["evaluate", str(run.dir), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "center_mae" in out and "overlap" in out and "smooth_l1" in out

    paths = []
    for i in range(2):
        x, _ = run_source(run).load(i)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(paths[-1])
    assert main(["predict", str(run.dir), *map(str, paths)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 2
    for line in lines:
        assert all(f"{h} " in line for h in ("class", "count", "center", "overlap")), line
    p = run.predict(paths)
    assert set(p.probs[0]) == {"class", "count", "center", "overlap"} and p.probs[0]["center"].shape == (2,)
    assert p.probs[0]["class"].sum() == pytest.approx(1.0, abs=1e-5)


def run_source(run):
    from trainlab.data import build_data

    return build_data(load_recipe(run.recipe_path)).test


class StopInSecondEpoch(Callback):
    """Interrupts (as Ctrl-C does) after batch 3 of epoch 2: the meter holds probe sums by then."""

    def on_batch_end(self, trainer, batch, outputs, loss):
        if trainer.state.epoch == 1 and trainer.state.batch == 3:
            trainer._interrupt = signal.SIGINT


@pytest.mark.slow
def test_exact_resume_with_learned_uncertainty_weights(tmp_path):
    """L6/K7: a run interrupted inside epoch 2 and resumed ends with the same weights (the learned
    log-variances included) and the same epoch-2 record (per-head sums and trunk-gradient probes
    carried in the checkpointed meter) as a run never stopped."""
    from safetensors.torch import load_file

    from trainlab.engine.trainer import Interrupted

    args = [*TINY, "loss.uncertainty=true", "train.epochs=2"]
    full = trainlab.fit("shapes-multitask", [*args, f"run.dir={tmp_path / 'full'}"], quiet=True)
    with pytest.raises(Interrupted):
        trainlab.fit("shapes-multitask", [*args, f"run.dir={tmp_path / 'part'}"], quiet=True,
                     callbacks=[StopInSecondEpoch()])
    resumed = trainlab.fit(resume=tmp_path / "part", quiet=True)
    a = load_file(full.checkpoints / "last.safetensors")
    b = load_file(resumed.checkpoints / "last.safetensors")
    assert "model.net.uncertainty.log_vars" in a
    assert not torch.equal(a["model.net.uncertainty.log_vars"], torch.zeros(4))  # they were trained
    for k in (k for k in a if k.startswith("model.")):
        assert torch.equal(a[k], b[k]), k
    ra, rb = full.epochs()[-1], resumed.epochs()[-1]
    for k, v in ra.items():
        if k.startswith(("train_", "val_")):
            assert rb[k] == v, k
    assert "train_trunkgrad_center" in ra and "val_weight_center" in ra


@pytest.mark.parametrize("override, needle", [
    ([heads(center="{name: size, kind: regression}"), "loss.weights={class: 2.0}"],
     "heads.size: the shapes data set has no target 'size'"),
    ([heads(**{"class": "{name: class, kind: regression}"})], "heads.class.kind: 'class' is a multiclass target"),
    ([heads(center="{name: center, kind: regression, loss: cross_entropy}")],
     "heads.center.loss: 'cross_entropy' does not fit a regression head"),
    ([heads(center="{name: center, kind: regression, loss: hinge}")], "heads.center.loss"),
    (["loss.weights.colour=2"], "loss.weights: 'colour' names no head"),
    (["loss.pos_weight=[1, 2]"], "loss.pos_weight: 2 values, head 'overlap' has 1 output"),
    (["model.name=cnn"], "model.name: the multitask task needs model multitask"),
    (["loss.name=mse"], "loss.name: the multitask task takes each head's loss from heads.<head>.loss"),
    (["data.batch_augment=[mixup]"], "data.batch_augment[0]: mixup blends the images of two samples"),
    (["task=classification"], "heads, loss.weights, loss.uncertainty: only the multitask task has heads"),
    (["data.name=digits", "data.shapes=null", "data.augment=[]"],
     "data.name: the multitask task needs a data set with per-image"),
])
def test_bad_multitask_recipes_are_one_line_through_the_cli(tmp_path, capsys, override, needle):
    """K7 / bad input: an unknown target, a kind or loss that does not fit, a top-level loss.name
    that no head would use, a weight for no head,
    a model without heads, image mixing, heads on another task, data without targets: exit 2, one
    line, nothing written."""
    assert main(["fit", "--quiet", "shapes-multitask", "data.shapes.count=40", *override,
                 f"run.dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "r").exists()
