"""Augmentation speed: trainlab vs torchvision v2 vs albumentations, and batch ops vs a loop.

    python benchmarks/augment.py [--n 300] [--rounds 5] [--batch 64]

Part 1, per sample: images/s of the standard pipeline (random resized crop to 224, horizontal
flip, colour jitter 0.4/0.4/0.4/0.1, random erasing with p 0.5) on 224x224 uint8 RGB images, one
thread, the three libraries measured in interleaved rounds (median of rounds). trainlab is
timed as its loader runs it: each sample's generator seeded from (seed, epoch, index)
(loader.sample_seed), then the pipeline built from the recipe names. albumentations gets HWC numpy arrays
(its native format); the two others get CHW uint8 tensors.

Part 2, batch ops: each occlusion and mixing op of ``data.batch_augment`` applied to a batch of
224x224 uint8 images at once, against a Python loop applying the same op image by image (the
per-sample transform for occlusion, pairwise blending/pasting for mixing, with the batch op's
output dtype).

The last line is the headline: ``speed vs torchvision v2 = <trainlab img/s / torchvision img/s>``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

STANDARD = [
    "random_resized_crop",
    "hflip",
    {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    {"name": "random_erasing", "p": 0.5, "value": 0.0},
]


def make_images(n: int, size: int = 224) -> list[torch.Tensor]:
    """Smooth random images (noise would make every resize look the same as any other)."""
    g = torch.Generator().manual_seed(0)
    low = torch.randint(0, 256, (n, 3, 14, 14), generator=g, dtype=torch.uint8).float()
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return [x.round().clamp(0, 255).to(torch.uint8).contiguous() for x in up]


def trainlab_pipeline(images):
    from trainlab.data.bundle import DataInfo
    from trainlab.data.loader import sample_seed
    from trainlab.data.transforms import build_transforms

    info = DataInfo(input_shape=(3, 224, 224), num_classes=10, class_names=[str(i) for i in range(10)])
    pipe = build_transforms(STANDARD, info)
    label = torch.tensor(0)

    def run(epoch):
        for i, x in enumerate(images):
            with sample_seed(0, epoch, i):
                pipe(x, label)

    return run


def torchvision_pipeline(images):
    from torchvision.transforms import v2

    pipe = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(),
                       v2.ColorJitter(0.4, 0.4, 0.4, 0.1), v2.RandomErasing(p=0.5)])

    def run(epoch):
        for x in images:
            pipe(x)

    return run


def albumentations_pipeline(images):
    import albumentations as A

    pipe = A.Compose([A.RandomResizedCrop(size=(224, 224)), A.HorizontalFlip(p=0.5),
                      A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=1.0),
                      A.Erasing(p=0.5)])
    arrays = [np.ascontiguousarray(x.permute(1, 2, 0).numpy()) for x in images]

    def run(epoch):
        for a in arrays:
            pipe(image=a)

    return run


def per_sample(n: int, rounds: int) -> dict[str, float]:
    images = make_images(n)
    runners = {"trainlab": trainlab_pipeline(images), "torchvision v2": torchvision_pipeline(images)}
    try:
        runners["albumentations"] = albumentations_pipeline(images)
    except ImportError:
        print("albumentations is not installed (pip install trainlab[bench]); skipped")
    times: dict[str, list[float]] = {k: [] for k in runners}
    for name, run in runners.items():  # warm-up: imports, kernels, caches
        run(0)
    for r in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(r + 1)
            times[name].append(time.perf_counter() - t0)
    rates = {k: n / statistics.median(v) for k, v in times.items()}
    print(f"per-sample pipeline (crop 224, flip, jitter 0.4/0.4/0.4/0.1, erase p=0.5), {n} images x {rounds} rounds")
    for k, v in times.items():
        lo, hi = n / max(v), n / min(v)
        print(f"  {k:<16} {rates[k]:8.0f} img/s   (rounds {lo:.0f}..{hi:.0f})")
    return rates


# ------------------------------------------------------------------------------- batch ops
def loop_mixup(batch, gen, alpha, num_classes):
    x, y = batch["input"], batch["target"]
    # The batch op's output: uint8 images stay uint8 (rounded), other inputs become float32.
    out = torch.empty(x.shape, dtype=torch.uint8 if x.dtype == torch.uint8 else torch.float32)
    soft = torch.zeros(len(x), num_classes)
    perm = torch.randperm(len(x), generator=gen)
    rng = np.random.default_rng(0)
    for i in range(len(x)):
        lam = float(rng.beta(alpha, alpha))
        j = int(perm[i])
        mixed = lam * x[i].float() + (1 - lam) * x[j].float()
        out[i] = mixed.round() if x.dtype == torch.uint8 else mixed
        soft[i, y[i]] += lam
        soft[i, y[j]] += 1 - lam
    return {"input": out, "target": soft}


def loop_cutmix(batch, gen, alpha, num_classes):
    x, y = batch["input"], batch["target"]
    out = x.clone()
    soft = torch.zeros(len(x), num_classes)
    perm = torch.randperm(len(x), generator=gen)
    rng = np.random.default_rng(0)
    h, w = x.shape[-2:]
    for i in range(len(x)):
        lam = float(rng.beta(alpha, alpha))
        ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy - ch // 2 + ch, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx - cw // 2 + cw, w)
        j = int(perm[i])
        out[i, :, y0:y1, x0:x1] = x[j, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        soft[i, y[i]] += lam
        soft[i, y[j]] += 1 - lam
    return {"input": out, "target": soft}


def batch_ops(batch_size: int, rounds: int) -> dict[str, float]:
    from trainlab.data.batch import build_batch_transforms
    from trainlab.data.bundle import DataInfo
    from trainlab.data.transforms import build_transforms

    info = DataInfo(input_shape=(3, 224, 224), num_classes=10, class_names=[str(i) for i in range(10)])
    x = torch.stack(make_images(batch_size))
    y = torch.arange(batch_size) % 10
    ops = {
        "random_erasing": {"name": "random_erasing", "p": 1.0},
        "cutout": "cutout",
        "hide_and_seek": "hide_and_seek",
        "gridmask": "gridmask",
        "mixup": {"name": "mixup", "alpha": 0.4},
        "cutmix": "cutmix",
    }
    ratios = {}
    print(f"batch ops on {batch_size} x 3x224x224 uint8, median of {rounds} rounds")
    for name, spec in ops.items():
        batched = build_batch_transforms([spec], info)
        if name in ("mixup", "cutmix"):
            loop_fn = loop_mixup if name == "mixup" else loop_cutmix
            alpha = spec.get("alpha", 1.0) if isinstance(spec, dict) else 1.0

            def looped(b, g, f=loop_fn, a=alpha):
                return f(b, g, a, 10)
        else:
            single = build_transforms([spec], info)

            def looped(b, g, s=single):
                return {"input": torch.stack([s(img, lab)[0] for img, lab in zip(b["input"], b["target"])]),
                        "target": b["target"]}
        tb, tl = [], []
        for r in range(rounds + 1):
            g = torch.Generator().manual_seed(r)
            fresh = x.clone()  # the loader hands out a fresh batch, which batch ops may write into
            t0 = time.perf_counter()
            batched({"input": fresh, "target": y}, g)
            t1 = time.perf_counter()
            looped({"input": x, "target": y}, g)
            t2 = time.perf_counter()
            if r:  # round 0 warms up
                tb.append(t1 - t0)
                tl.append(t2 - t1)
        fb, fl = statistics.median(tb), statistics.median(tl)
        ratios[name] = fl / fb
        print(f"  {name:<16} batch {batch_size / fb:9.0f} img/s   loop {batch_size / fl:9.0f} img/s   "
              f"x{fl / fb:5.1f}")
    gm = float(np.exp(np.mean(np.log(list(ratios.values())))))
    print(f"  batch ops vs per-sample loop (geometric mean) = {gm:.1f}x")
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images per round (per-sample part)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64, help="batch size (batch-op part)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a loader worker runs one thread; so do the three libraries here
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    batch_ops(args.batch, args.rounds)
    rates = per_sample(args.n, args.rounds)
    if "albumentations" in rates:
        print(f"speed vs albumentations = {rates['trainlab'] / rates['albumentations']:.2f}")
    print(f"speed vs torchvision v2 = {rates['trainlab'] / rates['torchvision v2']:.2f}")


if __name__ == "__main__":
    main()
