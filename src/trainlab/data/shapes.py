"""The procedural ``shapes`` data set (D10): coloured circles, squares, triangles and stars.

Each image holds ``min_objects``..``max_objects`` shapes of random class, size, position, rotation
and colour on a dark background with Gaussian noise. The objects are drawn from the smallest to the
largest, so the largest is in front and fully visible; the image's class label is the class of
that largest object. Every object's visible pixels form its instance mask, its box is the exact
extent of that mask (pixel-edge XYXY), and the semantic mask holds class + 1 (0 is background).
An object hidden completely by larger ones is left out of the annotations.

Everything is a function of (seed, index): image i is the same in every process, split and run,
which is what lets loader workers render samples on demand. Rendered samples are cached in memory
when the whole set fits in ``CACHE_BYTES``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..rng import derive_seed
from ..registry import DATASETS
from .bundle import DataInfo, SampleSource
from .samples import make_target

CACHE_BYTES = 256 * 2**20
STAR_INNER = 0.45  # inner radius of the five-pointed star, relative to the outer one


def shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices (x, y) of a square, triangle or star of circumradius ``r`` rotated by ``angle``."""
    if kind == "square":
        corners = [(angle + math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif kind == "triangle":
        corners = [(angle - math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)]
    elif kind == "star":
        corners = [(angle - math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else r * STAR_INNER) for k in range(10)]
    else:
        raise ValueError(f"no polygon for shape {kind!r}")
    return [(cx + rad * math.cos(a), cy + rad * math.sin(a)) for a, rad in corners]


def draw_objects(rng: np.random.Generator, cfg, num_classes: int) -> dict[str, np.ndarray]:
    """The random parameters of one image's objects, smallest first (the last is in front)."""
    s = cfg.image_size
    k = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    sizes = np.maximum(np.sort(rng.uniform(cfg.min_size, cfg.max_size, k)) * s, 2.0)
    radius = sizes / 2
    cx = rng.uniform(radius, s - radius)
    cy = rng.uniform(radius, s - radius)
    hsv = np.stack([rng.uniform(0, 1, k), rng.uniform(0.5, 1.0, k), rng.uniform(0.65, 1.0, k)], 1)
    return {
        "classes": rng.integers(0, num_classes, k),
        "radius": radius, "cx": cx, "cy": cy,
        "angle": rng.uniform(0, 2 * math.pi, k),
        "rgb": np.array([_hsv_to_rgb(*c) for c in hsv]),
        "background": rng.uniform(10, 70, 3),
        "noise_seed": int(rng.integers(0, 2**31)),
    }


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return 255 * r, 255 * g, 255 * b


def render(params: dict[str, Any], kinds: list[str], size: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8, id map (H, W) uint8: 0 background, k + 1 where object k is visible)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(params["noise_seed"])
    image = params["background"][None, None, :] + rng.normal(0.0, noise * 255.0, (size, size, 3))
    ids = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(ids)
    for k, c in enumerate(params["classes"]):
        kind = kinds[int(c)]
        cx, cy, r = params["cx"][k], params["cy"][k], params["radius"][k]
        # Pixel centres sit at i + 0.5; PIL draws in pixel-index coordinates, hence the shift.
        if kind == "circle":
            draw.ellipse([cx - r - 0.5, cy - r - 0.5, cx + r - 0.5, cy + r - 0.5], fill=k + 1)
        else:
            verts = [(x - 0.5, y - 0.5) for x, y in shape_polygon(kind, cx, cy, r, params["angle"][k])]
            draw.polygon(verts, fill=k + 1)
    idmap = np.asarray(ids).copy()
    objects = idmap > 0
    colours = np.concatenate([np.zeros((1, 3)), params["rgb"]])
    image[objects] = colours[idmap[objects]]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), idmap


# Per-image targets the multitask task (K7) can put a head on: name -> what the head predicts.
# "class" is the image label; the others are read off the (augmented) boxes by image_targets.
IMAGE_TARGETS: dict[str, dict[str, Any]] = {
    "class": {"kind": "multiclass", "words": "class of the largest shape"},
    "count": {"kind": "regression", "dim": 1, "integer": True, "words": "number of visible shapes"},
    "center": {"kind": "regression", "dim": 2, "words": "centre (x, y) of the largest shape's box, in [0, 1]"},
    "overlap": {"kind": "binary", "words": "whether the boxes of two shapes overlap"},
}


def image_targets(annotations: list[dict[str, Any]], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The multitask targets of a batch of N shapes samples from their (transformed) annotations.

    annotations: per image ``{"boxes" (K, 4) XYXY pixel-edge with its canvas size, "labels" (K,)}``,
    smallest object first, so the last box is the largest (front) shape; labels: (N,) image labels.
    Returns ``class`` (N,) int64, ``count`` (N,) float (visible shapes), ``center`` (N, 2) float
    (the last box's centre over the canvas (W, H): in [0, 1] after any flip or rotation, which
    move the box with the image) and ``overlap`` (N,) float, 1 where two boxes share area."""
    n = len(annotations)
    count = torch.zeros(n)
    center = torch.full((n, 2), 0.5)
    overlap = torch.zeros(n)
    for i, ann in enumerate(annotations):
        boxes = ann["boxes"]
        count[i] = len(boxes)
        if len(boxes) == 0:
            continue
        h, w = boxes.canvas_size
        b = boxes.as_subclass(torch.Tensor).float()
        center[i, 0] = (b[-1, 0] + b[-1, 2]) / (2 * w)
        center[i, 1] = (b[-1, 1] + b[-1, 3]) / (2 * h)
        lo = torch.maximum(b[:, None, :2], b[None, :, :2])
        hi = torch.minimum(b[:, None, 2:], b[None, :, 2:])
        shared = (hi - lo).clamp(min=0).prod(-1)  # (K, K) intersection areas
        overlap[i] = float(bool((shared.triu(1) > 0).any()))
    return {"class": labels.long(), "count": count, "center": center, "overlap": overlap}


class ShapesSource(SampleSource):
    """Images ``indices`` of the procedural set; rendered on demand, cached when small.

    Cached samples are returned as they are, so transforms must not modify their inputs in place
    (torchvision's and trainlab's transforms return new tensors).
    """

    def __init__(self, cfg, seed: int, kinds: list[str], channels: int, params=None, indices=None, cache=None,
                 annotated: bool = True):
        self.cfg, self.seed, self.kinds, self.channels, self.annotated = cfg, seed, kinds, channels, annotated
        if params is None:
            params = [draw_objects(np.random.default_rng(derive_seed(seed, "shapes", i)), cfg, len(kinds))
                      for i in range(cfg.count)]
        self.params = params
        self.indices = torch.arange(cfg.count) if indices is None else indices
        self.targets = torch.tensor([int(params[int(i)]["classes"][-1]) for i in self.indices], dtype=torch.long)
        fits = cfg.count * cfg.image_size**2 * 8 <= CACHE_BYTES
        self.cache: dict[int, tuple[torch.Tensor, dict]] | None = (cache if cache is not None else {}) if fits else None

    def sample(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Image ``i`` of the whole set (not of this subset) with its target, freshly rendered."""
        p = self.params[i]
        image, idmap = render(p, self.kinds, self.cfg.image_size, self.cfg.noise)
        x = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        if self.channels == 1:
            luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
            x = (x.float() * luma).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        k = len(p["classes"])
        masks = idmap[None] == np.arange(1, k + 1, dtype=np.uint8)[:, None, None]  # (K, H, W)
        rows, cols = masks.any(2), masks.any(1)
        visible = rows.any(1)
        h, w = idmap.shape
        boxes = np.stack([cols.argmax(1), rows.argmax(1), w - cols[:, ::-1].argmax(1), h - rows[:, ::-1].argmax(1)], 1)
        lut = np.concatenate([[0], p["classes"] + 1]).astype(np.uint8)
        target = make_target(
            int(p["classes"][-1]),
            torch.from_numpy(boxes[visible].astype(np.float32)),
            torch.from_numpy(p["classes"][visible].astype(np.int64)),
            (h, w),
            masks=torch.from_numpy(masks[visible]),
            semantic=torch.from_numpy(lut[idmap]),
        )
        return x, target

    def load(self, index: int):
        i = int(self.indices[index])
        if self.cache is None:
            x, target = self.sample(i)
        else:
            if i not in self.cache:
                self.cache[i] = self.sample(i)
            x, target = self.cache[i]
        return (x, target) if self.annotated else (x, target["label"])

    def subset(self, indices: torch.Tensor) -> ShapesSource:
        return ShapesSource(self.cfg, self.seed, self.kinds, self.channels, self.params,
                            self.indices[indices], self.cache, self.annotated)

    def labels_only(self) -> ShapesSource:
        return ShapesSource(self.cfg, self.seed, self.kinds, self.channels, self.params,
                            self.indices, self.cache, annotated=False)

    def describe(self, index: int) -> str:
        return f"shapes image {int(self.indices[index])}"


@DATASETS.register("shapes", help="procedural coloured shapes with boxes and masks (data.shapes: size, count, ...)",
                   uses=("channels", "shapes"), image_targets=image_targets,
                   hints={"image_size": "it draws its images at data.shapes.image_size; set that instead"})
def shapes(cfg, seed: int):
    from ..recipe import ShapesConfig

    sc = cfg.shapes or ShapesConfig()
    channels = cfg.channels or 3
    kinds = list(sc.classes)
    source = ShapesSource(sc, seed if sc.seed is None else sc.seed, kinds, channels)
    info = DataInfo(
        input_shape=(channels, sc.image_size, sc.image_size),
        num_classes=len(kinds),
        class_names=kinds,
        annotations=("boxes", "masks", "semantic"),
        max_value=255.0,
        extra={"semantic_classes": ["background", *kinds], "label": "class of the largest (front) object",
               "targets": {k: dict(v, classes=kinds) if v["kind"] == "multiclass" else dict(v)
                           for k, v in IMAGE_TARGETS.items()}},
    )
    return source, info
