"""Benchmark: trainlab's NMS (E2) against torchvision.ops.nms, side by side, on the CPU.

trainlab's ``nms``, ``batched_nms`` and ``box_iou`` are the teaching reference; the training,
evaluation and prediction paths call torchvision.ops. This script measures how far apart they are.

Two kinds of input, each at several sizes:

- ``chain``: sliding boxes ``[i, 0, i + 10, 10]`` with decreasing scores, so every box overlaps the
  next few (IoU 0.82, 0.67, 0.54 at shifts 1..3): the longest possible suppression chain, the
  worst case for any method that resolves the chain level by level.
- ``random``: detector-like output: one object per 20 boxes on a 500 x 500 image, each fired at
  by jittered boxes with random scores (many short chains, a few hundred kept at 4000 boxes).

For each case the answers of trainlab's default path, its sequential loop (``matrix=False``) and
torchvision are checked to be identical, and the best of ``--repeat`` wall times is printed.

Then two side-by-side lines at detector scale:

- ``batched_nms``: ``--batched-boxes`` (10,000) detector-like boxes over ``--classes`` (80) labels
  (each object has a class; a fifth of its boxes carry a random other class), trainlab's
  ``batched_nms`` (default path, which is the sequential loop above 4096 boxes, and the forced
  suppression matrix) against ``torchvision.ops.batched_nms``. trainlab is timed best of
  ``--batched-repeat`` (2), it takes seconds. The answers are checked to keep the same boxes in
  the same score order (torchvision may order boxes of exactly equal score either way here).
- ``box_iou``: the (N, N) IoU matrix of the 4000 random boxes against ``torchvision.ops.box_iou``.

    python benchmarks/nms.py [--sizes 500 1000 2000 4000] [--repeat 5] [--threshold 0.5]
                             [--batched-boxes 10000] [--classes 80] [--batched-repeat 2]

The last lines are ``<case> slowdown vs torchvision = <trainlab time / torchvision time>`` for
the largest chain (``nms chain``), ``batched_nms`` and ``box_iou``. The default run takes well
under a minute.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainlab.evaluate.boxes import batched_nms, box_iou, nms  # noqa: E402


def chain(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(n, dtype=torch.float32)
    boxes = torch.stack((i, torch.zeros(n), i + 10, torch.full((n,), 10.0)), dim=1)
    return boxes, torch.linspace(1.0, 0.0, n)


def _scattered(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    objects = max(1, n // 20)
    centre = torch.rand(objects, 2, generator=gen) * 450 + 25
    size = torch.rand(objects, 2, generator=gen) * 60 + 10
    which = torch.randint(0, objects, (n,), generator=gen)
    c = centre[which] + torch.randn(n, 2, generator=gen) * size[which] * 0.15
    wh = size[which] * (1 + torch.randn(n, 2, generator=gen) * 0.15).clamp(min=0.3)
    return torch.cat((c - wh / 2, c + wh / 2), 1), torch.rand(n, generator=gen), which


def scattered(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    boxes, scores, _ = _scattered(n, seed)
    return boxes, scores


def labelled(n: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`scattered` boxes with labels: each object has a class; a fifth of the boxes that
    fire at it carry a random class instead (a detector's confusions)."""
    boxes, scores, which = _scattered(n, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(0, classes, (int(which.max()) + 1,), generator=gen)[which]
    confused = torch.rand(n, generator=gen) < 0.2
    labels[confused] = torch.randint(0, classes, (int(confused.sum()),), generator=gen)
    return boxes, scores, labels


def same_keep(keep: torch.Tensor, ref: torch.Tensor, scores: torch.Tensor) -> bool:
    """The same kept boxes in the same score order. Above 4000 boxes on the CPU,
    torchvision.ops.batched_nms merges its per-class results with an unstable sort, so boxes of
    exactly equal score (a few among 10,000 ``torch.rand`` scores) may come in either order."""
    return torch.equal(keep.sort().values, ref.sort().values) and torch.equal(scores[keep], scores[ref])


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
    parser.add_argument("--batched-boxes", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--batched-repeat", type=int, default=2, help="repetitions of trainlab's batched_nms (slow)")
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

    n, k = args.batched_boxes, args.classes
    b, s, lab = labelled(n, k)
    ref = tv.batched_nms(b, s, lab, thr)
    for matrix in (None, True):
        if not same_keep(batched_nms(b, s, lab, thr, matrix=matrix), ref, s):
            raise SystemExit(f"batched {n} x {k}: trainlab (matrix={matrix}) differs from torchvision")
    t_ours = best_time(lambda: batched_nms(b, s, lab, thr), args.batched_repeat)
    t_matrix = best_time(lambda: batched_nms(b, s, lab, thr, matrix=True), args.batched_repeat)
    t_tv = best_time(lambda: tv.batched_nms(b, s, lab, thr), args.repeat)
    batched_ratio = t_ours / t_tv
    print(f"\nbatched_nms, {n} boxes x {k} classes, {ref.numel()} kept (trainlab best of {args.batched_repeat}):")
    print(f"  trainlab {t_ours * 1e3:.1f} ms (matrix {t_matrix * 1e3:.1f} ms), torchvision {t_tv * 1e3:.2f} ms, "
          f"ratio {batched_ratio:.1f} (matrix {t_matrix / t_tv:.1f})")

    n = max(args.sizes)
    b, _ = scattered(n)
    if not torch.allclose(box_iou(b, b), tv.box_iou(b, b), atol=1e-6):
        raise SystemExit(f"box_iou {n}: trainlab differs from torchvision")
    t_ours = best_time(lambda: box_iou(b, b), args.repeat)
    t_tv = best_time(lambda: tv.box_iou(b, b), args.repeat)
    iou_ratio = t_ours / t_tv
    print(f"box_iou, {n} x {n} boxes: trainlab {t_ours * 1e3:.1f} ms, torchvision {t_tv * 1e3:.1f} ms, "
          f"ratio {iou_ratio:.2f}\n")

    print(f"nms chain slowdown vs torchvision = {last_ratio:.1f}")
    print(f"batched_nms slowdown vs torchvision = {batched_ratio:.1f}")
    print(f"box_iou slowdown vs torchvision = {iou_ratio:.2f}")


if __name__ == "__main__":
    main()
