"""T7: data-parallel training under torchrun (DistributedDataParallel, gloo on the CPU).

The references are written out here, not taken from the code under test: two processes with a
global batch of 2B must end with the weights of one process with batch 2B (DDP averages the ranks'
gradients, and the mean loss over 2B samples is the mean of two means over B), BatchNorm
synchronised over the ranks must give one process's BatchNorm, and a killed two-process run
resumed must end bit for bit where an unbroken one ends. Real torchrun launches (tests/engine/
ddp_run.py is the worker); several runs share one launch, as each costs seconds of start-up.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cli_env
from safetensors.torch import load_file

import trainlab
from trainlab.cli import main as cli_main
from trainlab.data.bundle import TensorSource
from trainlab.data.loader import BatchLoader, steps_per_epoch
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.engine.distributed import sum_states

WORKER = Path(__file__).with_name("ddp_run.py")
# digits-mlp (BatchNorm, dropout 0.2): 20 steps of a global batch of 64 per epoch, 32 per rank
BASE = ["digits-mlp", "train.epochs=2", "data.batch_size=64", "run.tensorboard=false", "run.plots=false",
        "train.progress=false", "doctor.enabled=false", "train.threads=1"]
NO_BN = ["model.dropout=0", "model.norm=none"]
SYNC_BN = ["model.dropout=0", "train.sync_batchnorm=true"]
RESUMABLE = ["train.checkpoint_every_steps=5"]


def torchrun(mode: str, k: int, *groups: list[str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER),
            mode, str(k)]
    for i, group in enumerate(groups):
        args += (["--"] if i else []) + group
    return subprocess.Popen(args, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(p: subprocess.Popen) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def weights(run: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(run / "checkpoints" / "last.safetensors").items() if k.startswith("model.")}


def epochs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ no processes
def test_a_world_size_that_does_not_divide_the_batch_is_refused(tmp_path, monkeypatch, capsys):
    """T7: data.batch_size is the global batch; 2 ranks cannot share 63 samples equally. One line,
    exit 2, before any process waits for another, and nothing is written."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    run = tmp_path / "run"
    assert cli_main(["fit", *BASE, "data.batch_size=63", f"run.dir={run}"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "data.batch_size: 63" in lines[0] and "world size 2" in lines[0], lines
    assert not run.exists()


def test_ranks_share_each_global_batch_of_the_seed_epoch_order():
    """T7/D8: rank pieces, concatenated in rank order, are one process's batches of the same
    (seed, epoch) order; a short trailing batch is split as evenly as possible and its pieces weigh
    by their share (weights x pieces sum to the batch), and one too small for two samples per rank
    is dropped."""
    n, bs = 203, 20  # 10 full batches and a trailing one of 3: 3 < 2 samples x 2 ranks, dropped
    src = TensorSource(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n))
    one = BatchLoader(src, bs, seed=5, shuffle=True)
    ranks = [BatchLoader(src, bs, seed=5, shuffle=True, shard=(r, 2)) for r in range(2)]
    assert len(one) == 11 and len(ranks[0]) == len(ranks[1]) == 10 == steps_per_epoch(n, bs, world=2)
    for epoch in (0, 3):
        mine = list(one.batches(epoch))
        theirs = [list(loader.batches(epoch)) for loader in ranks]
        for b in range(10):
            assert [len(t[b]["target"]) for t in theirs] == [10, 10]
            assert torch.equal(torch.cat([t[b]["target"] for t in theirs]), mine[b]["target"])
    # 207 samples: a trailing batch of 7 is kept over 2 ranks (4 + 3), weighted 8/7 and 6/7
    src = TensorSource(torch.zeros(207, 1), torch.arange(207))
    ranks = [BatchLoader(src, bs, seed=5, shuffle=True, shard=(r, 2)) for r in range(2)]
    pieces = [list(loader.batches(1))[-1]["target"] for loader in ranks]
    assert [len(p) for p in pieces] == [4, 3]
    w = [loader.shard_weight(10) for loader in ranks]
    assert w == pytest.approx([4 * 2 / 7, 3 * 2 / 7]) and ranks[0].shard_weight(3) == 1.0
    # DDP averages: (w0 * mean0 + w1 * mean1) / 2 is the mean over the 7 samples
    x = torch.randn(207)
    means = [x[p].mean() for p in pieces]
    assert float((w[0] * means[0] + w[1] * means[1]) / 2) == pytest.approx(float(x[torch.cat(pieces)].mean()))


def test_meter_states_add_up_over_ranks():
    """T7: training meters are summed over the ranks (numbers, lists and dicts element-wise)."""
    a = {"loss_sum": 1.5, "correct": 3.0, "n": 4, "per_class": [1, 2], "name": "x"}
    b = {"loss_sum": 0.5, "correct": 1.0, "n": 2, "per_class": [0, 5], "name": "x"}
    assert sum_states([a, b]) == {"loss_sum": 2.0, "correct": 4.0, "n": 6, "per_class": [1, 7], "name": "x"}


def test_cross_rank_batchnorm_computes_batchnorm(tmp_path):
    """T7: the CPU BatchNorm across ranks (train.sync_batchnorm) is BatchNorm's formula: output,
    input and parameter gradients and running statistics (unbiased variance) of torch's BatchNorm2d,
    here over a group of one process (the sums over ranks are the process's own)."""
    import torch.distributed as dist

    from trainlab.engine.distributed import CrossRankBatchNorm, synchronise_batchnorm

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, momentum=0.3))
        with torch.no_grad():
            ref[1].weight.uniform_(0.5, 1.5)
            ref[1].bias.uniform_(-1, 1)
        mine = synchronise_batchnorm(copy.deepcopy(ref), torch.device("cpu"))
        assert isinstance(mine[1], CrossRankBatchNorm) and mine.state_dict().keys() == ref.state_dict().keys()
        x = torch.randn(6, 3, 7, 7) * 3 + 1
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        for _ in range(2):
            ya, yb = ref(xa), mine(xb)
            assert torch.allclose(ya, yb, atol=1e-5)
            (ya * torch.arange(ya.numel()).reshape(ya.shape).sin()).sum().backward()
            (yb * torch.arange(yb.numel()).reshape(yb.shape).sin()).sum().backward()
        assert torch.allclose(xa.grad, xb.grad, atol=1e-5)
        for (name, a), b in zip(ref.named_parameters(), mine.parameters()):
            assert torch.allclose(a.grad, b.grad, atol=1e-4), name
        for key, value in ref.state_dict().items():
            assert torch.allclose(value.float(), mine.state_dict()[key].float(), atol=1e-5), key
        ref.eval(), mine.eval()
        assert torch.allclose(ref(x), mine(x), atol=1e-5)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------ torchrun runs
@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One torchrun launch of 2 processes training three runs, and the one-process references."""
    root = tmp_path_factory.mktemp("ddp")
    p = torchrun("plain", 0, [*BASE, *NO_BN, f"run.dir={root / 'nobn'}"],
                 [*BASE, *SYNC_BN, f"run.dir={root / 'syncbn'}", "--quiet"],
                 [*BASE, *RESUMABLE, f"run.dir={root / 'ref'}", "--quiet"])
    one = {name: trainlab.fit("digits-mlp", [*BASE[1:], *extra, f"run.dir={root / ('one-' + name)}"], quiet=True)
           for name, extra in (("nobn", NO_BN), ("syncbn", SYNC_BN))}
    code, out, err = finished(p)
    assert code == 0, err[-3000:]
    return root, out, one


@pytest.mark.slow
def test_two_processes_of_batch_b_equal_one_process_of_batch_2b(launched):
    """T7: after two epochs, 2 gloo processes with 32 samples each end with one process's weights
    at batch 64 (to 1e-6), BatchNorm synchronised over the ranks included; validation metrics,
    reduced over the ranks, are one process's; only rank 0 prints and writes."""
    root, out, one = launched
    for name in ("nobn", "syncbn"):
        a, b = weights(root / name), weights(one[name].dir)
        assert a.keys() == b.keys()
        worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
        assert worst < 1e-6, (name, worst)
        for mine, theirs in zip(epochs(root / name), epochs(one[name].dir)):
            for key in ("val_loss", "val_accuracy", "val_macro_f1", "train_loss", "train_accuracy"):
                assert mine[key] == pytest.approx(theirs[key], abs=1e-6), (name, key)
    assert out.count("train_loss") == 1  # one epoch table: rank 0's
    assert (root / "nobn" / "report.md").exists() and (root / "syncbn" / "summary.json").exists()


@pytest.mark.slow
def test_killed_two_process_runs_resume_bitwise(launched, tmp_path):
    """T7/T3: a 2-process run whose every process is SIGKILLed mid-epoch 2, and one whose rank 1 dies
    there, resumed under torchrun, end with the weights of the unbroken run, bit for bit (each
    rank's dropout stream and meter come back). The rank that survives a dead one fails with one
    line, torchrun exits non-zero, and the last checkpoint is whole."""
    root, _, _ = launched
    killed, died = tmp_path / "killed", tmp_path / "died"
    procs = [torchrun(mode, 33, [*BASE, *RESUMABLE, f"run.dir={run}", "--quiet"])
             for mode, run in (("kill", killed), ("die", died))]
    (kill_code, _, _), (die_code, _, die_err) = map(finished, procs)
    assert kill_code != 0 and die_code != 0
    lines = [line for line in die_err.splitlines() if line.startswith("trainlab fit: error:")]
    assert len(lines) == 1 and "rank 0: another of the 2 processes stopped" in lines[0], die_err[-3000:]
    assert f"{died / 'checkpoints' / 'last.safetensors'} is intact" in lines[0]
    _, state = load_checkpoint(died / "checkpoints" / "last.safetensors")
    assert (state["epoch"], state["step"], state["world_size"]) == (1, 30, 2)
    resumed = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 "2", "-m", "trainlab", "fit", "--resume", str(run), "--quiet"], env=cli_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for run in (killed, died)]
    for p in resumed:
        code, _, err = finished(p)
        assert code == 0, err[-3000:]
    reference = weights(root / "ref")
    for run in (killed, died):
        mine = weights(run)
        assert mine.keys() == reference.keys()
        for k in mine:
            assert torch.equal(mine[k], reference[k]), (run.name, k)
        assert [r["train_loss"] for r in epochs(run)] == [r["train_loss"] for r in epochs(root / "ref")]


@pytest.mark.slow
def test_ranks_that_disagree_on_the_recipe_stop_at_start_up(tmp_path):
    """T7: the ranks compare recipe hashes before training; rank 1 with another optim.lr makes every
    rank stop, rank 0 printing one line that names the field, and nothing is written."""
    run = tmp_path / "mismatch"
    code, _, err = finished(torchrun("mismatch", 0, [*BASE, f"run.dir={run}"]))
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("trainlab fit: error:")]
    assert len(lines) == 1, err[-3000:]
    assert "disagree on the recipe" in lines[0] and "optim.lr is 0.01 on rank 0 and 0.02 on rank 1" in lines[0]
    assert not run.exists()
