"""Profile (M12): per-layer output shapes, parameters and MACs against the notes' worked example and published
figures."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from trainlab.cli import main
from trainlab.data.bundle import DataInfo
from trainlab.models.profile import profile_model, profile_network, rnn_macs
from trainlab.recipe import load_recipe


def test_worked_example_of_the_notes():
    """M12, S4 2.1: 3x32x32 input, ten 5x5 filters, stride 1, pad 2 -> 10x32x32, 760 parameters, 768K MACs."""
    prof = profile_network(nn.Conv2d(3, 10, 5, stride=1, padding=2), torch.zeros(1, 3, 32, 32))
    (row,) = prof.rows
    assert row.output == (1, 10, 32, 32)
    assert row.params == 10 * (3 * 5 * 5 + 1) == 760
    assert row.macs == (3 * 5 * 5) * (10 * 32 * 32) == 768_000
    assert prof.macs == 768_000 and prof.activation_bytes == 10 * 32 * 32 * 4


def test_resnet18_at_224():
    """M12: ResNet-18 at 3x224x224 with 1000 classes: 11,689,512 parameters and about 1.81 G MACs (torchvision's
    published 1.81 GFLOPS counts multiply-adds); the first row is the 7x7 stride-2 stem, 64x112x112."""
    info = DataInfo((3, 224, 224), 1000, [str(i) for i in range(1000)])
    prof = profile_model(load_recipe({"model": {"name": "resnet18"}}), info)
    assert prof.params == 11_689_512
    assert abs(prof.macs / 1.814e9 - 1) < 0.005
    stem = prof.rows[0]
    assert stem.name == "conv1" and stem.output == (1, 64, 112, 112)
    assert stem.macs == 3 * 7 * 7 * 64 * 112 * 112
    fc = prof.rows[-1]
    assert fc.name == "fc" and fc.macs == 512 * 1000 and fc.params == 513_000


def test_recurrent_and_grouped_macs():
    """M12/M7: an LSTM does 4·H·(D + H) MACs per step and layer; a grouped conv 1/G of the dense one."""
    lstm = nn.LSTM(8, 16, batch_first=True)
    assert rnn_macs(lstm, batch=2, steps=5) == 2 * 5 * 4 * 16 * (8 + 16)
    prof = profile_network(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=4)), torch.zeros(1, 8, 6, 6))
    assert prof.macs == (8 // 4) * 9 * 16 * 36
    info = DataInfo((64,), 65, [str(i) for i in range(65)], kind="sequence")
    char = profile_model(load_recipe({"task": "sequence", "model": {"name": "char_rnn", "width": 32, "depth": 1}}),
                         info)
    rnn_row = next(r for r in char.rows if r.kind == "LSTM")
    assert rnn_row.macs == 64 * 4 * 32 * (32 + 32)


@pytest.mark.parametrize("name", ["char_rnn", "lstm", "vit_tiny", "fcn_resnet18"])
def test_every_model_profiles_with_its_default_input(name, capsys):
    """M12: `trainlab profile NAME` alone works, sequence models included."""
    assert main(["profile", name]) == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and "MACs:" in out and "activation memory:" in out


def test_profile_cli_input_and_errors(capsys):
    """M12: --input CxHxW and --classes set the profiled shape; a bad shape is a one-line error."""
    assert main(["profile", "resnet18", "--input", "1x8x8", "--classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "1x10" in out and "conv1" in out
    assert main(["profile", "resnet18", "--input", "3x5x5x5"]) == 2
    assert "--input" in capsys.readouterr().err
    assert main(["profile", "resnet81"]) == 2
    assert "did you mean 'resnet18'" in capsys.readouterr().err
