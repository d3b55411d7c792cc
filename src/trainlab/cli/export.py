"""trainlab export RUN --format torchscript|exported|onnx --out FILE [--checkpoint best|last]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("--format", required=True, choices=("torchscript", "exported", "onnx"),
                   help="torchscript (torch.jit trace, .pt), exported (torch.export, .pt2) or onnx (.onnx)")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--batch", type=int, default=4, help="batch size of the capture (default 4)")


def run(args) -> int:
    from ..errors import TrainlabError
    from ..export import export_model
    from ..run import open_run

    if args.batch < 1:
        raise TrainlabError(f"--batch: expected a positive number, got {args.batch}")
    run = open_run(args.run)
    model, task, _, info, _ = run.load_model(args.checkpoint)
    if not task.exportable:
        raise TrainlabError(f"{args.run}: a {task.name} model returns a list of results per image, which trainlab "
                            "export does not capture; export supports classification, segmentation and sequence runs")
    result = export_model(model, info, args.format, args.out, args.batch)
    print(result.line())
    return 0
