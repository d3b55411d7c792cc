"""trainlab embed RUN FILE|FOLDER... --out emb.npy: the L2-normalised embeddings of an embedding
run's model, one row per input, as a NumPy file; the input names go to <out stem>.names.txt."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory of an embedding run (task: embedding)")
    p.add_argument("files", nargs="+", help="image files, .npy arrays or folders of them")
    p.add_argument("--out", required=True, metavar="FILE.npy", help="where to write the (N, D) float32 array")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")


def run(args) -> int:
    import io
    from pathlib import Path

    import numpy as np

    from ..atomic import write_bytes, write_text
    from ..errors import TrainlabError
    from ..run import embed_inputs, open_run

    out = Path(args.out)
    if out.suffix != ".npy":
        raise TrainlabError(f"--out {args.out!r}: expected a .npy file name")
    if out.is_dir():
        raise TrainlabError(f"--out {args.out!r}: is a folder; expected a .npy file name")
    if not out.parent.is_dir():
        raise TrainlabError(f"--out {args.out!r}: folder {str(out.parent)!r} does not exist")
    emb, labels = embed_inputs(open_run(args.run), args.files, args.checkpoint)
    buf = io.BytesIO()
    np.save(buf, emb.numpy().astype(np.float32))
    write_bytes(out, buf.getvalue())
    names = out.with_suffix(".names.txt")
    write_text(names, "".join(f"{label}\n" for label in labels))
    print(f"wrote {out}: {emb.shape[0]} embeddings of {emb.shape[1]} dimensions (names in {names})")
    return 0
