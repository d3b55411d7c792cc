"""Input pipeline on real image folders: trainlab vs torchvision vs timm, doing the same work.

    python benchmarks/input_pipeline.py [--files 2000 8000] [--workers 0 1 2] [--epoch-files 1000]
                                        [--tree 100000] [--rounds 2] [--startup-only] [--out DIR]

The folder: JPEG photos (procedural: gradients, discs, rings and noise; quality 90) of mixed sizes
from 200x150 to 500x375, in 10 class folders, written once under ``--out`` (default a temporary
folder). The work, per image: decode, a random resized crop from the original (scale 0.08-1, ratio
3/4-4/3) to 224 x 224, a horizontal flip with p 0.5, colour jitter 0.4/0.4/0.4/0.1; batches of 64
uint8 images (normalization is left to the device in all three, as timm's prefetcher and
trainlab's model wrapper do).

* trainlab: the folder data set (``data.image_size=224``) and its loader, as ``trainlab fit`` builds
  them (crops from the original, JPEG draft decoding where the crop allows).
* torchvision (PIL): ``ImageFolder`` + ``transforms.v2`` on PIL images, ``PILToTensor`` last.
* torchvision (decode_jpeg): ``ImageFolder`` whose loader is ``torchvision.io.decode_jpeg`` (RGB),
  ``transforms.v2`` on uint8 tensors.
* timm: ``ImageDataset`` + ``transforms_imagenet_train(use_prefetcher=True)`` (uint8 out, bilinear)
  + timm's ``fast_collate``.

Each measurement runs in its own process (so that ``ru_maxrss`` is that pipeline's peak memory,
workers included) and reports:

* images/s over ``--epoch-files`` images (after one warm-up batch) at 0, 1 and 2 loader workers, the
  best of ``--rounds`` interleaved rounds (the four pipelines one after another in each round);
* start-up: seconds from the folder's path to the first batch (modules already imported), for each
  folder size, best of ``--rounds``; trainlab twice, a first run (a fresh statistics cache: the
  sample is read) and a second one (the statistics read from the cache);
* peak resident memory (MiB).

``--tree N`` (default 100,000; 0 for none) adds start-up lines for trees of N and of max(--files)
small (32 x 32) JPEGs, and the growth between them: the microseconds of start-up each added file
costs, for every pipeline and for a bare ``os.scandir`` of the same trees (best of 3), and each
pipeline's growth as a multiple of the listing's. Small images on both ends, so the slope is the
index's cost, not a difference in what the first batch decodes.
The headline lines are ``trainlab / best torchvision at W workers = X``, the start-up table and
the growth line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

BATCH = 64
SIZE = 224


def make_folder(root: Path, n: int, small: bool = False, classes: int = 10) -> Path:
    """``n`` JPEGs under root/<class>/ (written once; a folder that has them is reused)."""
    import numpy as np
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(n)
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if small:
            h = w = 32
        else:
            w = int(rng.integers(200, 501))
            h = int(round(w * 0.75)) if rng.random() < 0.5 else int(rng.integers(150, 376))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        colour = rng.uniform(40, 215, 3)
        img = np.empty((h, w, 3), np.float32)
        for ch in range(3):
            img[..., ch] = colour[ch] + rng.uniform(-60, 60) * (xx / w - 0.5) + rng.uniform(-60, 60) * (yy / h - 0.5)
        for _ in range(3):  # discs and rings: edges a crop can keep or lose
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, max(h, w) / 3)
            d = np.hypot(yy - cy, xx - cx)
            img[d < r] += rng.uniform(-80, 80, 3)
            img += (20 * np.sin(d / rng.uniform(2, 8)))[..., None] * (d < 1.5 * r)[..., None]
        img += rng.normal(0, 6, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            root / f"class{i % classes:02d}" / f"{i:06d}.jpg", quality=90)
    done.touch()
    return root


# ------------------------------------------------------------------------ the pipelines
def trainlab_loader(root: Path, workers: int):
    from trainlab.data import build_data
    from trainlab.data.loader import BatchLoader
    from trainlab.data.transforms import build_transforms
    from trainlab.recipe import load_recipe

    recipe = load_recipe("digits-cnn", [
        "data.name=folder", f"data.root={root}", f"data.image_size={SIZE}", "data.split.val=0",
        "data.split.test=0", f"data.workers={workers}",
        "data.augment=[random_resized_crop, hflip, {name: color_jitter, brightness: 0.4, contrast: 0.4, "
        "saturation: 0.4, hue: 0.1}]"])
    bundle = build_data(recipe)
    pipe = build_transforms(recipe.data.augment, bundle.info)
    loader = BatchLoader(bundle.train, BATCH, seed=0, shuffle=True, transform=pipe, workers=workers)
    return (b["input"] for b in loader.batches(0))


def torchvision_loader(root: Path, workers: int, decoder: str):
    import torch
    from torchvision import datasets
    from torchvision.transforms import v2

    jitter = v2.ColorJitter(0.4, 0.4, 0.4, 0.1)
    crop = v2.RandomResizedCrop(SIZE, antialias=True)
    if decoder == "pil":
        tf = v2.Compose([crop, v2.RandomHorizontalFlip(), jitter, v2.PILToTensor()])
        ds = datasets.ImageFolder(str(root), transform=tf)
    else:
        tf = v2.Compose([crop, v2.RandomHorizontalFlip(), jitter])
        ds = datasets.ImageFolder(str(root), transform=tf, loader=_decode_jpeg)
    dl = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers,
                                     persistent_workers=workers > 0)
    return (x for x, _ in dl)


def _decode_jpeg(path: str):
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    return decode_jpeg(read_file(path), mode=ImageReadMode.RGB)


def timm_loader(root: Path, workers: int):
    import torch
    from timm.data import ImageDataset
    from timm.data.loader import fast_collate
    from timm.data.transforms_factory import transforms_imagenet_train

    tf = transforms_imagenet_train(SIZE, hflip=0.5, color_jitter=(0.4, 0.4, 0.4, 0.1), interpolation="bilinear",
                                   use_prefetcher=True)
    ds = ImageDataset(str(root), transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, collate_fn=fast_collate,
                                     persistent_workers=workers > 0)
    return (x for x, _ in dl)


PIPELINES = {
    "trainlab": trainlab_loader,
    "torchvision (PIL)": lambda root, w: torchvision_loader(root, w, "pil"),
    "torchvision (decode_jpeg)": lambda root, w: torchvision_loader(root, w, "decode_jpeg"),
    "timm": timm_loader,
}


def measure(name: str, root: Path, workers: int, images: int) -> dict:
    """In this process: start-up to the first batch, then images/s over ``images`` more."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    import torchvision.datasets  # noqa: F401  (imports are not start-up: each pipeline's are done first)
    import torchvision.transforms.v2  # noqa: F401

    if name == "trainlab":
        import trainlab.data.augment  # noqa: F401
        import trainlab.data.catalog  # noqa: F401
        import trainlab.data.decode  # noqa: F401
        import trainlab.data.loader  # noqa: F401
        import trainlab.data.splits  # noqa: F401
        import trainlab.data.statistics  # noqa: F401
        import trainlab.data.transforms  # noqa: F401
        import trainlab.recipe  # noqa: F401
    elif name == "timm":
        import timm.data  # noqa: F401
    t0 = time.perf_counter()
    it = PIPELINES[name](root, workers)
    first = next(it)
    startup = time.perf_counter() - t0
    assert first.shape[1:] == (3, SIZE, SIZE) and first.dtype == torch.uint8, (name, first.shape, first.dtype)
    seen, t1 = 0, time.perf_counter()
    while seen < images:
        try:
            seen += len(next(it))
        except StopIteration:
            break
    rate = seen / (time.perf_counter() - t1) if seen else 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"startup_s": startup, "img_s": rate, "peak_mib": peak / 1024}


def run_child(name: str, root: Path, workers: int, images: int, cache: Path) -> dict:
    env = dict(os.environ, TRAINLAB_CACHE=str(cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--child", name, str(root), str(workers), str(images)],
                         env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[2000, 8000])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epoch-files", type=int, default=1000, help="images timed per throughput measurement")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each cell is the best")
    ap.add_argument("--startup-only", action="store_true", help="skip the images/s table")
    ap.add_argument("--tree", type=int, default=100000,
                    help="also time start-up on trees of this many and of max(--files) 32x32 JPEGs (0: none)")
    ap.add_argument("--out", type=Path, default=None, help="where the folders are written (kept between runs)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        name, root, workers, images = args.child
        print(json.dumps(measure(name, Path(root), int(workers), int(images))), flush=True)
        os._exit(0)  # unfinished epochs leave loader workers that interpreter exit would wait for
    base = args.out or Path(tempfile.gettempdir()) / "trainlab-input-pipeline"
    folders = {n: make_folder(base / f"photos-{n}", n) for n in args.files}
    print(f"folders: {', '.join(f'{n} JPEGs' for n in args.files)} under {base}; cpus: {os.cpu_count()}; "
          f"batch {BATCH}, output {SIZE}x{SIZE}", flush=True)

    # ---- throughput on the smallest folder, at each worker count
    root = folders[min(args.files)]
    if args.startup_only:
        args.workers = []
    if args.workers:
        print(f"\nimages/s ({args.epoch_files} images after the first batch, best of {args.rounds} interleaved rounds; "
              "peak memory in MiB)")
        print(f"{'pipeline':28s}" + "".join(f"{f'{w} workers':>22s}" for w in args.workers))
    rates: dict[str, dict[int, float]] = {}
    peaks: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as cache:
        # interleaved rounds, best of each cell: the machine's load changes between measurements
        for _ in range(args.rounds):
            for w in args.workers:
                for name in PIPELINES:
                    r = run_child(name, root, w, args.epoch_files, Path(cache))
                    rates.setdefault(name, {})[w] = max(rates.get(name, {}).get(w, 0.0), r["img_s"])
                    peaks.setdefault(name, {})[w] = max(peaks.get(name, {}).get(w, 0.0), r["peak_mib"])
    for name in PIPELINES if args.workers else ():
        cells = [f"{rates[name][w]:8.0f} ({peaks[name][w]:5.0f} MiB)" for w in args.workers]
        print(f"{name:28s}" + "".join(f"{c:>22s}" for c in cells), flush=True)
    for w in args.workers:  # the headline ratios
        best = max(v[w] for k, v in rates.items() if k.startswith("torchvision"))
        print(f"trainlab / best torchvision at {w} workers = {rates['trainlab'][w] / best:.2f}"
              f"  (/ timm = {rates['trainlab'][w] / rates['timm'][w]:.2f})")

    # ---- start-up: nothing to the first batch, 0 workers
    trees = dict(folders)
    if args.tree:  # small trees of two sizes: the slope between them is the per-file cost of start-up
        for n in sorted({max(args.files), args.tree}):
            trees[f"{n} small"] = make_folder(base / f"small-{n}", n, small=True)
    print(f"\nstart-up to the first batch (s), 0 workers, best of {args.rounds} interleaved rounds")
    names = ["trainlab (first run)", "trainlab (cached)", "torchvision (PIL)", "timm", "os.scandir listing"]
    print(f"{'folder':20s}" + "".join(f"{n:>22s}" for n in names))
    best: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for label, root in trees.items():
            with tempfile.TemporaryDirectory() as cache:  # a fresh cache: the first run computes the statistics
                cold = run_child("trainlab", root, 0, 0, Path(cache))["startup_s"]
                warm = run_child("trainlab", root, 0, 0, Path(cache))["startup_s"]
            tv = run_child("torchvision (PIL)", root, 0, 0, Path(tempfile.gettempdir()))["startup_s"]
            tm = run_child("timm", root, 0, 0, Path(tempfile.gettempdir()))["startup_s"]
            listing = min(time_listing(root) for _ in range(3))
            row = [cold, warm, tv, tm, listing]
            best[label] = [min(a, b) for a, b in zip(best.get(label, row), row)]
    for label, row in best.items():
        print(f"{str(label) + ' files':20s}" + "".join(f"{v:22.3f}" for v in row), flush=True)
    if args.tree and max(args.files) != args.tree:  # the growth: extra seconds per extra file
        lo, hi = max(args.files), args.tree
        slopes = [(b - a) / (hi - lo) * 1e6 for a, b in zip(best[f"{lo} small"], best[f"{hi} small"])]
        print(f"\ngrowth from {lo} to {hi} small files, microseconds of start-up per added file: "
              + ", ".join(f"{n} {v:.2f}" for n, v in zip(names, slopes)))
        print("growth / the listing's: " + ", ".join(f"{n} {v / slopes[-1]:.1f}x" for n, v in zip(names[:-1], slopes)))


def time_listing(root: Path) -> float:
    """Seconds for a bare ``os.scandir`` of the class folders (counting their entries)."""
    t0 = time.perf_counter()
    sum(1 for d in os.scandir(root) if d.is_dir() for _ in os.scandir(d.path))
    return time.perf_counter() - t0

if __name__ == "__main__":
    main()
