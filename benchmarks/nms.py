"""Benchmark: trainlab's NMS (E2) against torchvision.ops.nms, side by side, on the CPU.

Two kinds of input, each at several sizes:

- ``chain``: sliding boxes ``[i, 0, i + 10, 10]`` with decreasing scores, so every box overlaps the
  next few (IoU 0.82, 0.67, 0.54 at shifts 1..3): the longest possible suppression chain, the
  worst case for any method that resolves the chain level by level.
- ``random``: detector-like output: one object per 20 boxes on a 500 x 500 image, each fired at
  by jittered boxes with random scores (many short chains, a few hundred kept at 4000 boxes).

For each case the answers of trainlab's default path, its sequential loop (``matrix=False``) and
torchvision are checked to be identical, and the best of ``--repeat`` wall times is printed.

    python benchmarks/nms.py [--sizes 500 1000 2000 4000] [--repeat 5] [--threshold 0.5]

The last line is ``nms chain slowdown vs torchvision = <trainlab time / torchvision time>`` for
the largest chain.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainlab.evaluate.boxes import nms  # noqa: E402


def chain(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(n, dtype=torch.float32)
    boxes = torch.stack((i, torch.zeros(n), i + 10, torch.full((n,), 10.0)), dim=1)
    return boxes, torch.linspace(1.0, 0.0, n)


def scattered(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    objects = max(1, n // 20)
    centre = torch.rand(objects, 2, generator=gen) * 450 + 25
    size = torch.rand(objects, 2, generator=gen) * 60 + 10
    which = torch.randint(0, objects, (n,), generator=gen)
    c = centre[which] + torch.randn(n, 2, generator=gen) * size[which] * 0.15
    wh = size[which] * (1 + torch.randn(n, 2, generator=gen) * 0.15).clamp(min=0.3)
    return torch.cat((c - wh / 2, c + wh / 2), 1), torch.rand(n, generator=gen)


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    import torchvision.ops as tv

    torch.set_num_threads(1)
    thr = args.threshold
    print(f"torch {torch.__version__}, one thread, IoU threshold {thr}, best of {args.repeat}")
    print(f"{'case':>8} {'boxes':>6} {'kept':>5} {'trainlab ms':>12} {'loop ms':>9} {'torchvision ms':>15} {'ratio':>7}")
    last_ratio = float("nan")
    for kind, make in (("random", scattered), ("chain", chain)):
        for n in args.sizes:
            b, s = make(n)
            ref = tv.nms(b, s, thr)
            for matrix in (None, False):
                if not torch.equal(nms(b, s, thr, matrix=matrix), ref):
                    raise SystemExit(f"{kind} {n}: trainlab (matrix={matrix}) differs from torchvision")
            t_ours = best_time(lambda: nms(b, s, thr), args.repeat)
            t_loop = best_time(lambda: nms(b, s, thr, matrix=False), args.repeat)
            t_tv = best_time(lambda: tv.nms(b, s, thr), args.repeat)
            ratio = t_ours / t_tv
            print(f"{kind:>8} {n:>6} {ref.numel():>5} {t_ours * 1e3:>12.2f} {t_loop * 1e3:>9.2f} "
                  f"{t_tv * 1e3:>15.2f} {ratio:>7.1f}")
            if kind == "chain":
                last_ratio = ratio
    print(f"nms chain slowdown vs torchvision = {last_ratio:.1f}")


if __name__ == "__main__":
    main()
