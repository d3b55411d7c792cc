"""Benchmark: trainlab's k-NN search (E5) against scikit-learn's brute-force NearestNeighbors.

One random float32 gallery (100,000 x 128 by default) and 2,000 queries, k = 5, Euclidean: the
wall time of ``trainlab.evaluate.retrieval.knn_search`` and of
``NearestNeighbors(algorithm="brute").fit(gallery).kneighbors(queries)`` on the same arrays, with
torch and scikit-learn each using the threads they use by default (best of ``REPEAT`` runs
each, so that neither pays for the first call's thread and memory set-up), and whether the
neighbours (indices, in order) are identical.

    python benchmarks/knn_speed.py [--gallery 100000] [--queries 2000] [--dim 128] [--k 5]

The last line is ``speed ratio trainlab / sklearn = <sklearn time / trainlab time>`` (above 1:
trainlab is faster).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainlab.evaluate.retrieval import knn_search  # noqa: E402

REPEAT = 3


def knn_benchmark(n_gallery: int = 100_000, n_queries: int = 2_000, dim: int = 128, k: int = 5) -> dict:
    """Best-of-``REPEAT`` times (seconds) of both searches on one random float32 gallery, and how
    their answers agree.

    Returns ``trainlab_s``, ``sklearn_s`` (fit + kneighbors), ``speed_ratio`` (sklearn_s /
    trainlab_s), ``identical`` (every query's neighbour indices equal, in order),
    ``rows_differing`` and ``max_distance_difference``.
    """
    from sklearn.neighbors import NearestNeighbors

    gen = torch.Generator().manual_seed(0)
    gallery = torch.randn(n_gallery, dim, generator=gen)
    queries = torch.randn(n_queries, dim, generator=gen)

    g_np, q_np = gallery.numpy(), queries.numpy()
    trainlab_s = sklearn_s = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        dist, idx = knn_search(queries, gallery, k, "euclidean")
        trainlab_s = min(trainlab_s, time.perf_counter() - start)
        start = time.perf_counter()
        ref_dist, ref_idx = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(g_np).kneighbors(q_np)
        sklearn_s = min(sklearn_s, time.perf_counter() - start)

    differing = int((idx.numpy() != ref_idx).any(1).sum())
    return {
        "n_gallery": n_gallery, "n_queries": n_queries, "dim": dim, "k": k,
        "torch_threads": torch.get_num_threads(),
        "trainlab_s": trainlab_s,
        "sklearn_s": sklearn_s,
        "speed_ratio": sklearn_s / trainlab_s,
        "identical": differing == 0,
        "rows_differing": differing,
        "max_distance_difference": float(np.abs(dist.numpy().astype(np.float64) - ref_dist).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    r = knn_benchmark(args.gallery, args.queries, args.dim, args.k)
    print(f"gallery {r['n_gallery']} x {r['dim']}, {r['n_queries']} queries, k = {r['k']}, euclidean, float32, "
          f"torch threads {r['torch_threads']}")
    print(f"trainlab knn_search            {r['trainlab_s']:.3f} s")
    print(f"sklearn NearestNeighbors brute {r['sklearn_s']:.3f} s (fit + kneighbors)")
    print(f"neighbours identical: {r['identical']} ({r['rows_differing']} of {r['n_queries']} rows differ; "
          f"largest distance difference {r['max_distance_difference']:.2e})")
    print(f"speed ratio trainlab / sklearn = {r['speed_ratio']:.2f}")


if __name__ == "__main__":
    main()
