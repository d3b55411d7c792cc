"""Mixing samples (D6, L3): MixUp and CutMix on batches, Mosaic on samples.

* MixUp: x = λ·a + (1 − λ)·b with λ ~ Beta(α, α) per image and b a shuffled partner from the same
  batch; the target becomes the soft label λ·onehot(a) + (1 − λ)·onehot(b), so cross-entropy
  against it equals λ·CE(a) + (1 − λ)·CE(b), the loss "weighted by λ" of the notes. uint8 images
  stay uint8, rounded to the nearest value (as timm's fast-collate MixUp does; the model's input
  stage normalizes them like any uint8 batch), which keeps the batch four times smaller than
  float; other inputs become float32 (stored scale). λ and the soft targets are exact.
* CutMix: a rectangle of area (1 − λ)·HW from the partner is pasted in; λ is then recomputed from
  the pasted area after clipping, so the label weights are exactly the visible pixel shares. The
  input keeps its dtype (on the CPU the patches are written into ``batch["input"]`` in place).
  The boxes of both images are kept: the image's own boxes (re-fitted to their visible mask, or
  dropped when fully covered) and the partner's boxes clipped to the patch.
* Mosaic: four samples (the sample and three more drawn from the data set with the per-sample
  generator) are scaled to half size and tiled around a random centre; boxes and masks follow,
  boxes are clipped to their tile, and boxes smaller than ``min_size`` pixels or with less than
  ``min_visibility`` of their area left are dropped. The image label becomes the label of the tile
  that covers the largest area.

Batch ops draw from the generator the trainer seeds with (seed, epoch, batch).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .images import uint8_words_
from .occlusion import rect_mask, sliceable


def beta_draws(alpha: float, n: int, gen: torch.Generator | None, device) -> torch.Tensor:
    """(n,) float32 samples of Beta(alpha, alpha) on ``device``, reproducible from ``gen``.

    torch's Beta sampler takes no generator, so a numpy generator is seeded from ``gen``.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=device if gen is None else gen.device))
    lam = np.random.default_rng(seed).beta(alpha, alpha, size=n)
    return torch.from_numpy(lam.astype(np.float32)).to(device)


def soft_targets(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, C) float class probabilities from (N,) indices; (N, C) targets pass through."""
    if target.dim() == 2:
        return target.float()
    return torch.nn.functional.one_hot(target.long(), num_classes).float()


def mix_targets(target: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor, num_classes: int) -> torch.Tensor:
    """λ·t + (1 − λ)·t[perm] on soft targets: each row still sums to 1."""
    t = soft_targets(target, num_classes)
    lam = lam.to(t.dtype)[:, None]
    return lam * t + (1.0 - lam) * t[perm]


def _chunk(n: int, x: torch.Tensor, budget: int = 1 << 20) -> int:
    """Images per step: the whole batch on an accelerator, about ``budget`` bytes of float32 on the
    CPU, where a batch-sized float temporary would fall out of the cache and cost more than the
    arithmetic."""
    if x.device.type != "cpu":
        return n
    return max(1, min(n, budget // max(x[0].numel() * 4, 1)))


def mix_images(x: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """λ·x + (1 − λ)·x[perm] per image: (N, C, H, W) uint8 → uint8 rounded to nearest (ties to
    even, as np.rint), any other dtype → float32; ``perm`` (N,) int64, ``lam`` (N,) float. ``x``
    is not modified."""
    n = x.shape[0]
    w = lam.to(device=x.device, dtype=torch.float32).reshape(n, *([1] * (x.dim() - 1)))
    if x.dtype != torch.uint8:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        step = _chunk(n, x)
        for s in range(0, n, step):
            e = min(s + step, n)
            torch.lerp(x[perm[s:e]].float(), x[s:e].float(), w[s:e], out=out[s:e])  # w·a + (1 − w)·b
        return out
    # Float temporaries of about 4 MiB (six 224² RGB images): measured fastest on the CPU, where
    # one image at a time pays each op's fixed cost too often (about 40% slower) and 10 MiB falls
    # out of the cache (1.5 to 2 times slower).
    step = _chunk(n, x, budget=1 << 22)
    out = torch.empty_like(x)
    a = torch.empty((step, *x.shape[1:]), dtype=torch.float32, device=x.device)
    b = torch.empty_like(a)
    partners = perm.tolist() if x.device.type == "cpu" else None
    for s in range(0, n, step):
        e = min(s + step, n)
        k = e - s
        a[:k].copy_(x[s:e])
        if partners is None:
            b[:k].copy_(x[perm[s:e]])
        else:  # an index gather of uint8 is a scalar loop on the CPU; a copy per image is not
            for t, j in enumerate(partners[s:e]):
                b[t].copy_(x[j])
        # λ·a + (1 − λ)·b lies in [0, 255]: no clamp needed (a pass saved, about 20% of the op).
        b[:k].lerp_(a[:k], w[s:e])
        out[s:e].copy_(uint8_words_(b[:k], clamp=False))
    return out


def mixup(batch: dict[str, Any], gen, alpha: float, num_classes: int, p: float = 1.0) -> dict[str, Any]:
    """MixUp of a batch (see the module docstring); images not drawn (probability 1 − p) keep λ = 1."""
    x = batch["input"]
    n, device = x.shape[0], x.device
    perm = torch.randperm(n, generator=gen, device=device)
    lam = beta_draws(alpha, n, gen, device)
    if p < 1.0:
        lam = torch.where(torch.rand(n, generator=gen, device=device) < p, lam, torch.ones_like(lam))
    out = {**batch, "input": mix_images(x, perm, lam),
           "target": mix_targets(batch["target"], perm, lam, num_classes), "mix_lambda": lam}
    if "annotations" in batch:
        mixed = lam < 1.0
        out["annotations"] = [
            _concat(batch["annotations"][i], batch["annotations"][int(perm[i])]) if bool(mixed[i])
            else batch["annotations"][i] for i in range(n)
        ]
    if "semantic" in batch:
        sem = batch["semantic"]
        out["semantic"] = torch.where((lam >= 0.5)[:, None, None], sem, sem[perm])
    return out


def cutmix_rects(lam: torch.Tensor, h: int, w: int, gen, device) -> torch.Tensor:
    """(N, 1, 4) rectangles [y0, x0, y1, x1] of area ~ (1 − λ)·HW centred uniformly, clipped."""
    n = lam.shape[0]
    cut = torch.sqrt(1.0 - lam)
    ch, cw = (h * cut).round(), (w * cut).round()
    u = torch.rand(n, 2, generator=gen, device=device)
    cy, cx = torch.floor(u[:, 0] * h), torch.floor(u[:, 1] * w)
    y0 = (cy - torch.div(ch, 2, rounding_mode="floor")).clamp(0, h)
    x0 = (cx - torch.div(cw, 2, rounding_mode="floor")).clamp(0, w)
    y1, x1 = (y0 + ch).clamp(0, h), (x0 + cw).clamp(0, w)
    return torch.stack([y0, x0, y1, x1], 1).long()[:, None]


def cutmix(batch: dict[str, Any], gen, alpha: float, num_classes: int, p: float = 1.0) -> dict[str, Any]:
    """CutMix of a batch (see the module docstring)."""
    x = batch["input"]
    n, _, h, w = x.shape
    device = x.device
    perm = torch.randperm(n, generator=gen, device=device)
    lam = beta_draws(alpha, n, gen, device)
    if p < 1.0:
        lam = torch.where(torch.rand(n, generator=gen, device=device) < p, lam, torch.ones_like(lam))
    rects = cutmix_rects(lam, h, w, gen, device)
    area = ((rects[:, 0, 2] - rects[:, 0, 0]) * (rects[:, 0, 3] - rects[:, 0, 1])).float()
    lam = 1.0 - area / (h * w)
    pasted = paste_rects_(x, perm, rects)
    out = {**batch, "input": pasted,
           "target": mix_targets(batch["target"], perm, lam, num_classes), "mix_lambda": lam}
    if "annotations" in batch:
        ann = batch["annotations"]
        boxes_r = rects[:, 0].tolist()
        out["annotations"] = [
            _paste_annotations(ann[i], ann[int(perm[i])], boxes_r[i], (h, w)) if lam[i] < 1.0 else ann[i]
            for i in range(n)
        ]
    if "semantic" in batch:
        sem = batch["semantic"]
        out["semantic"] = torch.where(rect_mask(rects, h, w)[:, 0], sem[perm], sem)
    return out


def paste_rects_(x: torch.Tensor, perm: torch.Tensor, rects: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) with the rectangle rects[i] = [[y0, x0, y1, x1]] (N, 1, 4) of image i
    taken from image perm[i] (a permutation), as it was before any pasting.

    On the CPU the patches are copied through slices into ``x`` in place. Images are visited
    along the cycles of ``perm`` (i, perm[i], perm[perm[i]], ...), so each reads a partner not yet
    written, except the last of a cycle, whose partner is the cycle's first image: only that one
    patch per cycle is saved beforehand, instead of a clone of every patch. On an accelerator one
    masked kernel over the batch is cheaper than a launch per image (a new tensor).
    """
    n, _, h, w = x.shape
    if x.device.type != "cpu":
        return torch.where(rect_mask(rects, h, w), x[perm], x)
    boxes, partners, pixels = rects[:, 0].tolist(), perm.tolist(), sliceable(x)
    done = [False] * n
    for first in range(n):
        cycle, i = [], first
        while not done[i]:
            done[i] = True
            cycle.append(i)
            i = partners[i]
        if len(cycle) < 2:  # an image pasted onto itself, or a cycle already visited
            continue
        y0, x0, y1, x1 = boxes[cycle[-1]]
        saved = x[first, :, y0:y1, x0:x1].clone()
        for i in cycle[:-1]:
            y0, x0, y1, x1 = boxes[i]
            pixels[i, :, y0:y1, x0:x1] = pixels[partners[i], :, y0:y1, x0:x1]
        y0, x0, y1, x1 = boxes[cycle[-1]]
        pixels[cycle[-1], :, y0:y1, x0:x1] = sliceable(saved)
    return x


# --------------------------------------------------------------------------- annotations
def _wrap_like(values: torch.Tensor, like):
    from torchvision import tv_tensors

    return tv_tensors.wrap(values, like=like) if isinstance(like, tv_tensors.TVTensor) else values


def _concat(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Annotations of both images (MixUp keeps every object of both)."""
    out = {}
    for key in a:
        if key in b:
            both = [a[key].as_subclass(torch.Tensor), b[key].as_subclass(torch.Tensor)]
            out[key] = _wrap_like(torch.cat(both), a[key])
    return out


def _paste_annotations(a: dict[str, Any], b: dict[str, Any], rect: list[int], size: tuple[int, int]) -> dict[str, Any]:
    """Annotations of image ``a`` after the rectangle ``rect`` = [y0, x0, y1, x1] of ``b`` is pasted in."""
    from .samples import boxes_from_masks

    y0, x0, y1, x1 = rect
    h, w = size
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    parts = []
    for src, keep_region in ((a, ~inside), (b, inside)):
        boxes = src["boxes"].as_subclass(torch.Tensor).float()
        labels = src["labels"]
        masks = src["masks"].as_subclass(torch.Tensor) * keep_region if "masks" in src else None
        if masks is not None:
            boxes = boxes_from_masks(masks.bool())
        elif src is a:  # no masks: keep a's boxes unless the patch covers them completely
            covered = (boxes[:, 0] >= x0) & (boxes[:, 2] <= x1) & (boxes[:, 1] >= y0) & (boxes[:, 3] <= y1)
            boxes = torch.where(covered[:, None], torch.zeros_like(boxes), boxes)
        else:
            boxes = torch.stack([boxes[:, 0].clamp(x0, x1), boxes[:, 1].clamp(y0, y1),
                                 boxes[:, 2].clamp(x0, x1), boxes[:, 3].clamp(y0, y1)], 1)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        parts.append((boxes[keep], labels[keep], masks[keep] if masks is not None else None))
    out = {"boxes": _wrap_like(torch.cat([parts[0][0], parts[1][0]]), a["boxes"]),
           "labels": torch.cat([parts[0][1], parts[1][1]])}
    if "masks" in a and "masks" in b:
        out["masks"] = _wrap_like(torch.cat([parts[0][2], parts[1][2]]), a["masks"])
    return out


# --------------------------------------------------------------------------------- mosaic
class Mosaic:
    """Four samples tiled into one (see the module docstring); called by the sample pipeline with
    the sample and a function that draws more samples from the data set."""

    def __init__(self, center=(0.25, 0.75), min_size: float = 2.0, min_visibility: float = 0.2, p: float = 1.0):
        if not 0.0 <= center[0] <= center[1] <= 1.0:
            raise ValueError(f"center must be 0 <= lo <= hi <= 1 (fractions of the size), got {list(center)}")
        if min_size < 0 or not 0.0 <= min_visibility <= 1.0:
            raise ValueError(f"need min_size >= 0 and min_visibility in [0, 1], got {min_size}, {min_visibility}")
        self.center, self.min_size, self.min_visibility, self.p = center, float(min_size), float(min_visibility), p

    def __call__(self, sample, draw_tiles):
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        from .augment import resize_image

        if self.p < 1.0 and float(torch.rand(())) >= self.p:
            return sample
        if not (isinstance(sample, tuple) and isinstance(sample[1], dict) and "boxes" in sample[1]):
            raise DataError("mosaic needs samples with boxes (an image and a target dict)")
        image0 = sample[0]
        c, h, w = image0.shape
        th, tw = h // 2, w // 2
        u = torch.rand(2).tolist()
        yc = int(round(h * (self.center[0] + (self.center[1] - self.center[0]) * u[0])))
        xc = int(round(w * (self.center[0] + (self.center[1] - self.center[0]) * u[1])))
        tiles = [sample] + draw_tiles(3)
        canvas = torch.zeros(c, h, w, dtype=image0.dtype)
        has_masks = "masks" in sample[1]
        has_sem = "semantic" in sample[1]
        semantic = torch.zeros(h, w, dtype=torch.uint8) if has_sem else None
        boxes, labels, masks, areas = [], [], [], []
        origins = ((yc - th, xc - tw), (yc - th, xc), (yc, xc - tw), (yc, xc))
        for (image, target), (oy, ox) in zip(tiles, origins):
            img = resize_image(image, (th, tw)).as_subclass(torch.Tensor)
            y0, y1, x0, x1 = max(oy, 0), min(oy + th, h), max(ox, 0), min(ox + tw, w)
            areas.append(max(y1 - y0, 0) * max(x1 - x0, 0))
            if y1 <= y0 or x1 <= x0:
                continue
            src = (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))
            canvas[:, y0:y1, x0:x1] = img[:, src[0], src[1]]
            if has_sem:
                sem = F.resize(target["semantic"], [th, tw]).as_subclass(torch.Tensor)
                semantic[y0:y1, x0:x1] = sem[src[0], src[1]]
            b = F.resize(target["boxes"], [th, tw]).as_subclass(torch.Tensor).float()
            b = b + torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
            full = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            b = torch.stack([b[:, 0].clamp(x0, x1), b[:, 1].clamp(y0, y1),
                             b[:, 2].clamp(x0, x1), b[:, 3].clamp(y0, y1)], 1)
            wh = b[:, 2:] - b[:, :2]
            keep = (wh >= self.min_size).all(1) & (wh.prod(1) >= self.min_visibility * full.clamp(min=1e-6))
            boxes.append(b[keep])
            labels.append(target["labels"][keep])
            if has_masks:
                m = F.resize(target["masks"], [th, tw]).as_subclass(torch.Tensor)[keep]
                placed = torch.zeros(m.shape[0], h, w, dtype=m.dtype)
                placed[:, y0:y1, x0:x1] = m[:, src[0], src[1]]
                masks.append(placed)
        label = tiles[max(range(4), key=lambda k: areas[k])][1]["label"]
        out: dict[str, Any] = {"label": label.clone()}
        out["boxes"] = tv_tensors.BoundingBoxes(torch.cat(boxes) if boxes else torch.zeros(0, 4),
                                                format="XYXY", canvas_size=(h, w))
        out["labels"] = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
        if has_masks:
            out["masks"] = tv_tensors.Mask(torch.cat(masks) if masks else torch.zeros(0, h, w, dtype=torch.uint8))
        if has_sem:
            out["semantic"] = tv_tensors.Mask(semantic)
        return tv_tensors.Image(canvas), out
