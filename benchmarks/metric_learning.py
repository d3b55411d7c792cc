"""Benchmark: metric learning (K5, L5, E5) on identities never seen in training.

Trains the built-in recipes as a user runs them (`trainlab fit NAME`, whole process) and prints,
on the test split (identities unseen in training; gallery and probes as the recipe says):

- digits-triplet: rank-1 identification by 5-NN vote on the digits 7-9 (goal >= 0.95, < 10 min);
- faces-triplet: verification AUC on 45 unseen procedural identities (goal >= 0.99, < 10 min);

with each run's curve (validation rank-1 and AUC per epoch), then the k-NN search over a
100,000-embedding gallery against scikit-learn's brute-force NearestNeighbors (benchmarks/knn_speed.py:
identical neighbours, speed ratio >= 1 is the goal).

    python benchmarks/metric_learning.py [--only digits-triplet|faces-triplet|knn] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipe_runs import run_recipe  # noqa: E402

GOALS = {"digits-triplet": ("rank1", 0.95), "faces-triplet": ("auc", 0.99)}
LIMIT_S = 600.0


def report(name: str, result: dict) -> bool:
    metric, goal = GOALS[name]
    s, epochs = result["summary"], result["epochs"]
    test = s["test"]
    print(f"{name}: test rank-1 {test['rank1']:.4f} (5-NN vote), rank-5 {test['rank5']:.4f}, AUC {test['auc']:.4f}, "
          f"EER {test['eer']:.4f}, TAR@FAR1e-3 {test['tar_far1e-3']:.4f}; best epoch {s['best_epoch']} of "
          f"{s['epochs_run']}, {result['wall']:.0f} s whole process")
    print("  curve (epoch: val rank-1, val AUC): " + ", ".join(
        f"{r['epoch']}: {r.get('val_rank1', float('nan')):.3f}/{r.get('val_auc', float('nan')):.3f}" for r in epochs))
    ok = test[metric] >= goal and result["wall"] < LIMIT_S
    print(f"  goal {metric} >= {goal} in < {LIMIT_S:.0f} s: {'met' if ok else 'NOT met'}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("digits-triplet", "faces-triplet", "knn"))
    ap.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    args = ap.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="trainlab-metric-"))
    for name in ("digits-triplet", "faces-triplet"):
        if args.only in (None, name):
            report(name, run_recipe(name, [], folder))
    if args.only in (None, "knn"):
        from knn_speed import knn_benchmark

        r = knn_benchmark()
        print(f"knn over a {r['n_gallery']:,} x {r['dim']} gallery, {r['n_queries']:,} queries, k={r['k']}: trainlab "
              f"{r['trainlab_s']:.3f} s, scikit-learn {r['sklearn_s']:.3f} s, neighbours identical: {r['identical']}; "
              f"speed ratio trainlab / sklearn = {r['sklearn_s'] / r['trainlab_s']:.2f}")


if __name__ == "__main__":
    main()
