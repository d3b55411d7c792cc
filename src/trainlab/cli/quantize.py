"""trainlab quantize RUN --method dynamic|static|qat: int8 through torch.ao (dynamic: linear and
recurrent layers; static: the traced graph calibrated on training batches; qat: fake-quantized
fine-tuning), written as TorchScript; prints accuracy, CPU latency per batch and size, float vs int8."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory of a classification run written by trainlab fit")
    p.add_argument("--method", default="static", help="dynamic, static (default) or qat")
    p.add_argument("--calibration-batches", type=int, default=8, help="static: training batches that set the "
                   "activation ranges (default 8)")
    p.add_argument("--epochs", type=int, default=1, help="qat: fine-tuning epochs (default 1)")
    p.add_argument("--out", metavar="FILE.pt", help="the int8 TorchScript file (default RUN/quantized-METHOD.pt)")


def run(args) -> int:
    from ..compress import quantize_run
    from ..models.profile import human
    from ..models.quantization import check_method
    from ..run import open_run

    check_method(args.method)
    t = quantize_run(open_run(args.run), args.method, args.calibration_batches, args.epochs, args.out)
    f, q = t["float"], t["int8"]
    metrics = [k for k in f if k not in ("latency_s", "bytes") and k in q]
    print(f"  {'':<26} {'float32':>10} {'int8':>10}")
    for k in metrics:
        print(f"  {'test ' + k:<26} {f[k]:10.4f} {q[k]:10.4f}")
    print(f"  {'latency per batch of ' + str(t['batch']):<26} {1000 * f['latency_s']:8.2f}ms {1000 * q['latency_s']:8.2f}ms"
          f"   ({f['latency_s'] / q['latency_s']:.2f}x faster)")
    print(f"  {'size on disk':<26} {human(f['bytes'], 'B'):>10} {human(q['bytes'], 'B'):>10}")
    print(f"wrote {t['file']} (TorchScript) and {t['file'][:-3]}.json")
    return 0
