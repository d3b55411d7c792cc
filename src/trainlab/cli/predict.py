"""trainlab predict RUN FILE|FOLDER... [--topk K] [--out DIR]: top-k classes with softmax probabilities;
for a segmentation run, each image's predicted mask and an overlay as PNG files; for a detection
run, each image with its boxes, class names and scores drawn, and detections.json (COCO results,
which `trainlab eval-detections` reads); for a multitask run, one line per input with each head's
prediction."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("files", nargs="+",
                   help=".npy arrays, image files (a run trained on arrays takes images of exactly its input size) "
                        "or folders of them")
    p.add_argument("--topk", type=int, default=3, help="classes to print per input (default 3)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--out", metavar="DIR",
                   help="segmentation: folder for <name>.mask.png and <name>.overlay.png; detection: <name>.boxes.png "
                        "and detections.json (default RUN/predictions)")


def _names(labels: list[str]) -> list[str]:
    """A file stem per input, unique: 'a.png' -> 'a'; repeats get -2, -3..."""
    from pathlib import Path

    seen: dict[str, int] = {}
    out = []
    for label in labels:
        base, _, index = label.partition("[")  # 'batch.npy[3]' is sample 3 of an array file
        stem = Path(base).stem + (f"-{index.rstrip(']')}" if index else "")
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def _write_pictures(folder, labels, pictures, lines, files) -> None:
    """Each picture of each input as <name>.<picture>.png and each of the task's JSON files
    (a detector's COCO results), written atomically; one line per input."""
    import io

    from PIL import Image

    from ..atomic import dumps, write_bytes, write_text
    from ..errors import TrainlabError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrainlabError(f"--out {str(folder)!r}: cannot create the folder ({err.strerror or err})") from None
    for label, name, pics, line in zip(labels, _names(labels), pictures, lines):
        written = []
        for kind, array in pics.items():
            buf = io.BytesIO()
            Image.fromarray(array).save(buf, format="PNG")
            path = folder / f"{name}.{kind}.png"
            write_bytes(path, buf.getvalue())
            written.append(str(path))
        print(f"{label}: {line}; written: {', '.join(written)}")
    for file_name, document in files.items():
        write_text(folder / file_name, dumps(document, indent=1) + "\n")
        print(f"wrote {folder / file_name}")


def run(args) -> int:
    from pathlib import Path

    from ..errors import TrainlabError
    from ..run import open_run

    if args.topk < 1:
        raise TrainlabError(f"--topk: expected a positive number, got {args.topk}")
    run = open_run(args.run)
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise TrainlabError(f"--out {args.out!r}: is a file; expected a folder")
    p = run.prediction(args.files, args.checkpoint)
    probs, labels, classes = p["probs"], p["labels"], p["classes"]
    if p["images"] is not None:
        lines = [p["task"].summarize_prediction(pred, classes) for pred in probs]
        _write_pictures(Path(args.out) if args.out else run.dir / "predictions", labels, p["images"], lines,
                        p["task"].prediction_files(probs, labels, p["info"]))
        return 0
    if args.out is not None:
        raise TrainlabError(f"--out {args.out!r}: this run's predictions are printed, not written as images "
                            "(only segmentation and detection runs write pictures); remove --out")
    lines = p["task"].prediction_lines(probs, classes)
    if lines is not None:  # one value per head of a multi-task model, not class probabilities
        for label, line in zip(labels, lines):
            print(f"{label}: {line}")
        return 0
    k = min(args.topk, probs.shape[1])
    top = probs.topk(k, dim=1)
    for label, values, idx in zip(labels, top.values.tolist(), top.indices.tolist()):
        print(f"{label}: " + ", ".join(f"{classes[i]} {v:.4f}" for v, i in zip(values, idx)))
    return 0
