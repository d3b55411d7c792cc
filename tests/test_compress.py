"""Smaller and faster models (T8): distillation, pruning and int8 quantization of finished runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import trainlab
from trainlab.cli import main
from trainlab.errors import RecipeError
from trainlab.losses import distillation_loss
from trainlab.models.pruning import KeepZeros, prune_model, sparsity

FAST = {"train.progress": False, "run.plots": False, "run.tensorboard": False, "train.threads": 1}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "run"
    return trainlab.fit("digits-cnn", quiet=True, **FAST, **{"train.epochs": 3, "model.width": 8,
                                                             "run.dir": str(path)})


def test_distillation_loss_is_hintons_formula():
    """T8: alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) (summed over classes, mean over the batch)
    + (1 − alpha) · the hard loss, written out."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    hard, T, alpha = torch.tensor(0.7), 3.0, 0.8
    pt, ps = torch.softmax(t / T, 1), torch.softmax(s / T, 1)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    expected = alpha * T * T * kl + (1 - alpha) * hard
    assert torch.allclose(distillation_loss(s, t, hard, T, alpha), expected, atol=1e-6)
    assert torch.allclose(distillation_loss(s, s, hard, T, 1.0), torch.tensor(0.0), atol=1e-6)


def test_teacher_sees_the_students_augmented_batch_and_only_in_training(teacher):
    """T8: the frozen teacher gets exactly the batch the student trains on (after augmentation);
    validation uses the plain loss."""
    from trainlab.recipe import load_recipe
    from trainlab.tasks import build_task

    recipe = load_recipe("digits-cnn", [f"distill.teacher={teacher.dir}"])
    task = build_task(recipe, teacher.info())
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x)
            return torch.zeros(len(x), 10)

    task.teacher = Recorder()
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    batch = {"input": torch.randn(6, 1, 8, 8), "target": torch.arange(6)}
    _, loss = task.step(student.train(), batch)
    assert len(seen) == 1 and seen[0] is batch["input"]
    _, plain = task.step(student.eval(), batch)
    assert len(seen) == 1 and torch.allclose(plain, task.loss(student(batch["input"]), batch))
    assert not torch.allclose(loss, plain)


def test_distilled_fit_and_teachers_that_do_not_fit(teacher, tmp_path, capsys):
    """T8 / bad input: `fit ... distill.teacher=RUN` trains; a teacher of another task, of other
    classes, or no run at all is one line and exit 2, with no run folder written."""
    from trainlab.distill import load_teacher
    from trainlab.data.bundle import DataInfo
    from trainlab.recipe import load_recipe

    run = trainlab.fit("digits-mlp", quiet=True, **FAST, **{
        "train.epochs": 2, "distill.teacher": str(teacher.dir), "distill.temperature": 2.0, "distill.alpha": 0.5,
        "run.dir": str(tmp_path / "student")})
    assert run.summary()["test"]["accuracy"] > 0.5
    recipe = load_recipe("digits-mlp", [f"distill.teacher={teacher.dir}"])
    other = DataInfo(input_shape=(1, 8, 8), num_classes=10, class_names=[f"c{i}" for i in range(10)])
    with pytest.raises(RecipeError, match=r"^distill.teacher: its classes \(0, 1, 2"):
        load_teacher(recipe, other)
    assert main(["fit", "digits-mlp", f"distill.teacher={tmp_path / 'nowhere'}", f"run.dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trainlab fit: error: distill.teacher: ") and not (tmp_path / "x").exists()


def test_a_student_keeps_its_best_epoch_by_accuracy(teacher, capsys):
    """T8: a distilled student watches val_accuracy by default and the doctor judges its
    over-fitting by accuracy: its val_loss (cross-entropy at T = 1) rises as it copies the teacher's
    confident logits while its accuracy improves, and its training loss is another loss. A recipe
    that names val_loss keeps it and is told why it may keep an early epoch."""
    from trainlab.api import build_components
    from trainlab.recipe import load_recipe

    plain = build_components(load_recipe("digits-mlp", ["train.early_stop={patience: 3}"]))
    student = build_components(load_recipe("digits-mlp", [f"distill.teacher={teacher.dir}",
                                                          "train.early_stop={patience: 3}"]))
    assert (plain.monitor, student.monitor) == ("val_loss", "val_accuracy")
    assert (plain.task.overfit_measure, student.task.overfit_measure) == ("loss", "accuracy")
    capsys.readouterr()
    named = build_components(load_recipe("digits-mlp", [f"distill.teacher={teacher.dir}",
                                                        "train.early_stop={monitor: val_loss}"]))
    assert named.monitor == "val_loss"
    assert "train.early_stop.monitor=val_accuracy" in capsys.readouterr().err


def test_global_pruning_zeroes_the_smallest_weights_of_the_whole_network():
    """T8: unstructured pruning zeroes exactly the amount × N smallest |w| over every conv and
    linear weight together (global L1); structured pruning zeroes, in each layer but the last,
    the output channels of smallest L2 norm."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 5), nn.ReLU(), nn.Linear(5, 3))
    weights = torch.cat([m.weight.detach().flatten().abs() for m in net if hasattr(m, "weight")])
    k = round(0.4 * len(weights))
    threshold = weights.sort().values[k - 1]
    before = [m.weight.detach().clone() for m in net if hasattr(m, "weight")]
    prune_model(net, 0.4)
    after = [m.weight.detach() for m in net if hasattr(m, "weight")]
    assert sum(int((w == 0).sum()) for w in after) == k
    for b, a in zip(before, after):
        assert torch.equal(a == 0, b.abs() <= threshold)
        assert torch.equal(a[a != 0], b[a != 0])  # the rest is untouched
    assert [round(s.sparsity, 3) for s in sparsity(net)] == [round(float((a == 0).float().mean()), 3) for a in after]

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 5), nn.ReLU(), nn.Linear(5, 3))
    norms = [m.weight.detach().flatten(1).norm(dim=1) for m in net if hasattr(m, "weight")]
    prune_model(net, 0.5, structured=True)
    for m, n in zip([m for m in net if hasattr(m, "weight")][:-1], norms):
        gone = (m.weight.detach().flatten(1) == 0).all(1)
        assert int(gone.sum()) == round(0.5 * len(n))
        assert torch.equal(gone, n <= n.sort().values[int(gone.sum()) - 1])
    assert not (net[5].weight == 0).any()  # the class layer keeps every output

    keep = KeepZeros(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    net(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    keep.apply()
    for m, n in zip([m for m in net if hasattr(m, "weight")][:-1], norms):
        assert int((m.weight.detach().flatten(1) == 0).all(1).sum()) == round(0.5 * len(n))


def test_prune_cli_writes_a_normal_run(teacher, tmp_path, capsys):
    """T8: `trainlab prune RUN --amount 0.5` prints sparsity per layer, parameters, MACs and test
    metrics before and after and writes a run that evaluate, predict and export work on; with
    --epochs it fine-tunes keeping the zeros; a bad amount or --out naming the run itself is exit 2."""
    out = tmp_path / "pruned"
    assert main(["prune", str(teacher.dir), "--amount", "0.5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sparsity" in text and "parameters (non-zero)" in text and "MACs (non-zero)" in text
    table = json.loads((out / "prune.json").read_text())
    assert table["after"]["nonzero_params"] < 0.6 * table["before"]["nonzero_params"]
    assert table["after"]["macs"] < table["before"]["macs"]
    from trainlab.run import open_run

    evaluated = open_run(out).evaluate("test", write=False)
    assert evaluated["accuracy"] == pytest.approx(table["after"]["accuracy"])
    model = open_run(out).load_model()[0]
    assert sum(int((p == 0).sum()) for p in model.parameters()) >= table["after"]["params"] - table["after"]["nonzero_params"]
    assert open_run(out).predict(np.zeros((2, 1, 8, 8), np.float32)).probs.shape == (2, 10)
    tuned = tmp_path / "tuned"
    assert main(["prune", str(teacher.dir), "--amount", "0.6", "--epochs", "1", "--out", str(tuned)]) == 0
    capsys.readouterr()
    t = json.loads((tuned / "prune.json").read_text())
    weights = [m.weight for m in open_run(tuned).load_model()[0].modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.6, abs=0.01) and t["fine_tune_epochs"] == 1
    for argv, text in ((["prune", str(teacher.dir), "--amount", "1.5"], "--amount: expected a fraction"),
                       (["prune", str(teacher.dir), "--amount", "0.5", "--out", str(teacher.dir)], "is the run being pruned")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0]


@pytest.mark.parametrize("method", ["dynamic", "static"])
def test_quantize_cli_int8_accuracy_latency_and_size(teacher, tmp_path, capsys, method):
    """T8: `trainlab quantize RUN --method M` writes an int8 TorchScript model whose test accuracy
    stays within 2 points of float32 (static: smaller on disk), and prints the table."""
    out = tmp_path / f"q-{method}.pt"
    assert main(["quantize", str(teacher.dir), "--method", method, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "latency per batch of 64" in text and "size on disk" in text
    t = json.loads(out.with_suffix(".json").read_text())
    assert abs(t["int8"]["accuracy"] - t["float"]["accuracy"]) <= 0.02
    if method == "static":
        assert t["int8"]["bytes"] < t["float"]["bytes"]
    scripted = torch.jit.load(str(out))
    assert scripted(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_quantize_bad_input(teacher, tmp_path, capsys):
    """T8 / bad input: an unknown method, or a run that is not a classification run: exit 2, one line."""
    assert main(["quantize", str(teacher.dir), "--method", "int4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--method: unknown quantization method 'int4'" in err[0]
