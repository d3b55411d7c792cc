"""trainlab prune RUN --amount 0.5 [--structured] [--epochs N] [--out DIR]: zero the smallest weights
of a run's best model (global magnitude, or whole channels by their norm), optionally fine-tune,
and write the pruned run; prints sparsity per layer, parameters, MACs and test metrics before
and after."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("--amount", type=float, required=True, help="fraction of the weights to zero, in (0, 1)")
    p.add_argument("--structured", action="store_true",
                   help="remove whole output channels of each layer by L2 norm (not the last layer)")
    p.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs with the zeros kept (default 0)")
    p.add_argument("--out", metavar="DIR", help="the pruned run's folder (default RUN-pruned<percent>)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")


def run(args) -> int:
    from ..compress import prune_run
    from ..models.profile import human
    from ..models.pruning import check_amount
    from ..run import open_run

    check_amount(args.amount)
    t = prune_run(open_run(args.run), args.amount, args.structured, args.epochs, args.out, args.force)
    width = max(5, max((len(r["name"]) for r in t["layers"]), default=5))
    print(f"  {'layer':<{width}} {'weights':>9} {'zeros':>9} sparsity")
    for r in t["layers"]:
        print(f"  {r['name']:<{width}} {r['params']:9d} {r['zeros']:9d} {100 * r['sparsity']:7.1f}%")
    b, a = t["before"], t["after"]
    metrics = [k for k in b if k not in ("params", "nonzero_params", "macs") and k in a]
    print(f"\n  {'':<22} {'before':>10} {'after':>10}")
    print(f"  {'parameters (non-zero)':<22} {human(b['nonzero_params']):>10} {human(a['nonzero_params']):>10}")
    print(f"  {'MACs (non-zero)':<22} {human(b['macs']):>10} {human(a['macs']):>10}")
    for k in metrics:
        print(f"  {'test ' + k:<22} {b[k]:10.4f} {a[k]:10.4f}")
    print(f"pruned run: {t['run']}")
    return 0
