"""Forward+backward throughput of the model zoo on the CPU, and what torch.compile buys (M8, M13).

    python benchmarks/models.py [--size 32] [--batch 16] [--threads 1] [--rounds 5]
                                [--archs resnet18,mobilenet_v2,...] [--compile cnn,resnet18]

Each architecture is built for 3 x size x size inputs (10 classes) and timed over a few training
steps (forward, cross-entropy, backward, SGD step); the median of ``--rounds`` rounds is reported
as images/s. For the ``--compile`` architectures the eager and the compiled model (trainlab's
CompiledForward, i.e. ``train.compile: true``) are timed in alternating rounds, so both see the
same machine load; compilation time is reported separately and excluded. The last line is the
compiled/eager throughput ratio of the first ``--compile`` architecture.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainlab.data.bundle import DataInfo  # noqa: E402
from trainlab.engine.compile import CompiledForward  # noqa: E402
from trainlab.models import build_model  # noqa: E402
from trainlab.recipe import load_recipe  # noqa: E402

DEFAULT_ARCHS = ("mlp,cnn,blocknet,lstm,resnet18,se_resnet18,resnet50,resnext50_32x4d,vgg11,squeezenet1_1,"
                 "mobilenet_v1,mobilenet_v2,shufflenet_v2,xception,vit_tiny,swin_t")


def make(name: str, size: int, channels: int):
    info = DataInfo((channels, size, size), 10, [str(i) for i in range(10)])
    torch.manual_seed(0)
    return build_model(load_recipe({"model": {"name": name}}), info)


def steps(forward, model, opt, x, y, n: int) -> float:
    """Seconds for ``n`` training steps."""
    t0 = time.perf_counter()
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def throughput(name: str, args, compiled: bool = False) -> dict:
    model = make(name, args.size, args.channels).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    forwards = {"eager": model}
    compile_s = None
    if compiled:
        t0 = time.perf_counter()
        fast = CompiledForward(model)
        steps(fast, model, opt, x, y, 2)  # compile forward and backward
        compile_s = time.perf_counter() - t0
        if fast.failed:
            raise SystemExit(f"{name}: compilation failed: {fast.failed}")
        forwards["compiled"] = fast
    steps(model, model, opt, x, y, 1)  # warm-up
    n = max(1, args.steps)
    times: dict[str, list[float]] = {k: [] for k in forwards}
    for _ in range(args.rounds):
        for key, fwd in forwards.items():  # alternate, so that both see the same load
            times[key].append(steps(fwd, model, opt, x, y, n))
    rates = {k: args.batch * n / statistics.median(v) for k, v in times.items()}
    spread = {k: (args.batch * n / max(v), args.batch * n / min(v)) for k, v in times.items()}
    return {"rates": rates, "spread": spread, "compile_s": compile_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--archs", default=DEFAULT_ARCHS)
    p.add_argument("--compile", default="cnn,resnet18", help="architectures to time compiled too ('' for none)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), input {args.channels}x{args.size}x{args.size}, "
          f"batch {args.batch}, median of {args.rounds} rounds of {args.steps} steps")
    print(f"{'model':<18} {'images/s':>10}  {'(min-max)':>17}")
    for name in [a for a in args.archs.split(",") if a]:
        r = throughput(name, args)
        lo, hi = r["spread"]["eager"]
        print(f"{name:<18} {r['rates']['eager']:>10.1f}  ({lo:>7.1f}-{hi:<7.1f})", flush=True)
    ratios = []
    for name in [a for a in args.compile.split(",") if a]:
        r = throughput(name, args, compiled=True)
        e, c = r["rates"]["eager"], r["rates"]["compiled"]
        ratios.append((name, c / e))
        print(f"{name:<18} eager {e:.1f} images/s, compiled {c:.1f} images/s (compile {r['compile_s']:.1f} s): "
              f"ratio {c / e:.2f}", flush=True)
    if ratios:
        name, ratio = ratios[0]
        print(f"compiled_over_eager_{name} = {ratio:.2f}")


if __name__ == "__main__":
    main()
