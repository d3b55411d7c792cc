"""trainlab identify RUN --gallery DIR PROBE...: who each probe is, among the identities enrolled in
DIR (one sub-folder of images per identity): the k-NN vote (E5) and the nearest identities with
their distances."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory of an embedding run (task: embedding)")
    p.add_argument("--gallery", required=True, metavar="DIR",
                   help="folder with one sub-folder of images (or .npy arrays) per identity")
    p.add_argument("probes", nargs="+", help="image files, .npy arrays or folders of them to identify")
    p.add_argument("--k", type=int, default=None, help="neighbours that vote (default: the run's eval.knn_k)")
    p.add_argument("--top", type=int, default=3, help="nearest identities to print per probe (default 3)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")


def read_gallery(folder: str) -> tuple[list, list[str], list[str]]:
    """(files, identity name per file, identity names) of a gallery folder: one sub-folder per
    identity. DataError (one line) for a folder that is missing, has no sub-folders, or has an
    identity without images."""
    from pathlib import Path

    from ..errors import DataError
    from ..inputs import expand_folders

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"--gallery {folder!r}: not a folder (expected one sub-folder of images per identity)")
    ids = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not ids:
        raise DataError(f"--gallery {folder!r}: no identity sub-folders (expected one sub-folder of images per "
                        "identity)")
    files, owners = [], []
    for d in ids:
        try:
            items, _ = expand_folders([d], None)
        except DataError:
            raise DataError(f"--gallery {folder!r}: identity {d.name!r} has no images") from None
        files += items
        owners += [d.name] * len(items)
    return files, owners, [d.name for d in ids]


def run(args) -> int:
    import torch

    from ..errors import TrainlabError
    from ..evaluate.retrieval import knn_classify, knn_search
    from ..run import embed_inputs, open_run

    if args.top < 1:
        raise TrainlabError(f"--top: expected a positive number, got {args.top}")
    if args.k is not None and args.k < 1:
        raise TrainlabError(f"--k: expected a positive number, got {args.k}")
    files, owners, names = read_gallery(args.gallery)
    run = open_run(args.run)
    loaded = run.load_model(args.checkpoint)[:4]
    recipe = loaded[2]
    metric, k = recipe.loss.distance, min(args.k or recipe.eval.knn_k, len(files))
    g_emb, _ = embed_inputs(run, files, model=loaded)
    p_emb, labels = embed_inputs(run, args.probes, model=loaded)
    g_lab = torch.tensor([names.index(o) for o in owners])
    dist, idx = knn_search(p_emb, g_emb, len(files), metric)  # every gallery item, nearest first
    votes = knn_classify(dist[:, :k], idx[:, :k], g_lab)
    for label, d_row, i_row, vote in zip(labels, dist, idx, votes.tolist()):
        nearest: dict[int, float] = {}
        for d, i in zip(d_row.tolist(), i_row.tolist()):  # each identity at its nearest sample
            nearest.setdefault(int(g_lab[i]), d)
            if len(nearest) == args.top:
                break
        agree = int((g_lab[i_row[:k]] == vote).sum())
        shown = ", ".join(f"{names[n]} {d:.4f}" for n, d in nearest.items())
        print(f"{label}: {names[vote]} ({agree}/{k} of the nearest vote for it); nearest ({metric}): {shown}")
    return 0
