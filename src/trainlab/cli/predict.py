"""trainlab predict RUN FILE... [--topk K]: top-k classes with softmax probabilities."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("files", nargs="+", help="image files (folder runs) or .npy arrays")
    p.add_argument("--topk", type=int, default=3, help="classes to print per input (default 3)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")


def run(args) -> int:
    from ..errors import TrainlabError
    from ..run import open_run

    if args.topk < 1:
        raise TrainlabError(f"--topk: expected a positive number, got {args.topk}")
    run = open_run(args.run)
    probs, labels, classes = run.predict(args.files, args.checkpoint)
    k = min(args.topk, probs.shape[1])
    top = probs.topk(k, dim=1)
    for label, values, idx in zip(labels, top.values.tolist(), top.indices.tolist()):
        print(f"{label}: " + ", ".join(f"{classes[i]} {v:.4f}" for v, i in zip(values, idx)))
    return 0
