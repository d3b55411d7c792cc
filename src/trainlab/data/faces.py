"""The procedural ``faces`` data set (D10): identities for metric learning and recognition (K5).

An identity is a fixed arrangement of face parts drawn from (seed, identity): the head's outline
(width, height, roundness), skin tone, ears, hair (volume, hairline, fringe, or none) and its
colour, eyebrows (length, thickness, slant), eyes (spacing, height, size, iris colour), nose
(length, width, shape), mouth (width, thickness, curve, lip colour) and sometimes a beard. Many
parts vary at once, so no single colour or size tells the identities apart.

A sample of an identity is drawn from (seed, identity, sample index): tilt, a head turn (the inner
features move sideways), translation and scale; a slight change of expression (mouth curve and
opening, eyebrow height); the background colour; lighting (brightness, contrast, a colour cast and a
linear gradient); with probability ``occlusion`` a rectangle or blob of random colour over part of
the face; and Gaussian pixel noise. The label is the identity. Image ``i`` is sample
``i % samples_per_identity`` of identity ``i // samples_per_identity``, the same in every process,
split and run, so loader workers render samples on demand; rendered images are cached in memory
when the whole set fits in ``CACHE_BYTES``.

Every part is a (possibly bent) superellipse in the face's frame (x to the right, y down, the head
spans about [-1, 1]); all the parts of an image are evaluated at once with numpy, with antialiased
edges, and composited back to front.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from ..rng import derive_seed
from ..registry import DATASETS
from .bundle import DataInfo, SampleSource

CACHE_BYTES = 256 * 2**20
FACE_HALF_HEIGHT = 0.36  # half-height of the head, fraction of the image side, before the scale jitter
MID_GREY = 128.0  # the value contrast changes leave as it is
EXPRESSION = 0.3  # how much the mouth's curve changes between samples (its own curve spans about ±0.6)

# Part fields: centre (cx, cy), half-axes (a, b), angle, superellipse exponent p, bend of the
# vertical axis (a curved mouth or brow), how far a head turn moves the part (turn), whether it is
# clipped to the head (clip) and its colour.
FIELDS = ("cx", "cy", "a", "b", "angle", "p", "bend", "turn", "clip")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return 255.0 * np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


# (probability, hue, saturation, value ranges) of each kind of colour, drawn in this order
HAIR = (
    (0.30, (0.0, 0.1), (0.1, 0.5), (0.06, 0.2)),  # black
    (0.28, (0.04, 0.1), (0.4, 0.75), (0.22, 0.5)),  # brown
    (0.14, (0.1, 0.15), (0.35, 0.7), (0.7, 0.95)),  # blond
    (0.10, (0.01, 0.06), (0.6, 0.9), (0.5, 0.85)),  # red
    (0.10, (0.0, 0.0), (0.0, 0.0), (0.55, 0.92)),  # grey / white
    (0.08, (0.0, 1.0), (0.5, 0.9), (0.4, 0.9)),  # dyed
)
IRIS = (
    (0.40, (0.04, 0.09), (0.5, 0.85), (0.15, 0.4)),  # brown
    (0.20, (0.55, 0.62), (0.35, 0.75), (0.45, 0.8)),  # blue
    (0.15, (0.25, 0.4), (0.3, 0.6), (0.35, 0.6)),  # green
    (0.15, (0.1, 0.16), (0.4, 0.7), (0.35, 0.55)),  # hazel
    (0.10, (0.5, 0.6), (0.05, 0.2), (0.4, 0.7)),  # grey
)


def _colour(rng: np.random.Generator, table) -> np.ndarray:
    """An RGB colour (0..255) of one kind of ``table``, drawn by its probabilities."""
    kind = rng.choice(len(table), p=[row[0] for row in table])
    _, h, s, v = table[kind]
    return _hsv(*(rng.uniform(lo, hi) if hi > lo else lo for lo, hi in (h, s, v)))


def _hair_colour(rng: np.random.Generator) -> np.ndarray:
    return _colour(rng, HAIR)


def _iris_colour(rng: np.random.Generator) -> np.ndarray:
    return _colour(rng, IRIS)


def draw_identity(rng: np.random.Generator) -> dict[str, Any]:
    """The parts of one identity, back to front: field arrays (P,), ``rgb`` (P, 3) and the roles."""
    skin = _hsv(rng.uniform(0.02, 0.11), rng.uniform(0.2, 0.65), rng.uniform(0.35, 0.97))
    hair = _hair_colour(rng)
    head_a, head_b = rng.uniform(0.66, 0.92), rng.uniform(0.88, 1.0)
    head_p = rng.uniform(1.8, 3.6)  # round .. square jaw
    parts: list[tuple[str, dict[str, float], np.ndarray]] = []

    def part(role, rgb, cx=0.0, cy=0.0, a=0.1, b=0.1, angle=0.0, p=2.0, bend=0.0, turn=0.0, clip=0.0):
        parts.append((role, dict(cx=cx, cy=cy, a=a, b=b, angle=angle, p=p, bend=bend, turn=turn, clip=clip), rgb))

    style = rng.choice(4, p=[0.12, 0.38, 0.3, 0.2])  # bald, short, long, big
    if style >= 2:  # hair behind the head
        grow = rng.uniform(0.06, 0.2) if style == 2 else rng.uniform(0.2, 0.34)
        drop = rng.uniform(0.1, 0.45) if style == 2 else rng.uniform(-0.05, 0.2)
        part("hair", hair, cy=-0.1 + drop / 2, a=head_a + grow, b=head_b + drop / 2 + grow / 2, p=rng.uniform(2, 3.2),
             turn=-0.05)
    ear_y, ear_a, ear_b = rng.uniform(-0.15, 0.15), rng.uniform(0.1, 0.2), rng.uniform(0.16, 0.28)
    ear_rgb, ear_angle = skin * rng.uniform(0.82, 0.95), rng.uniform(-0.2, 0.3)
    for side in (-1, 1):
        part("ear", ear_rgb, cx=side * (head_a - 0.02), cy=ear_y, a=ear_a, b=ear_b, angle=side * ear_angle, turn=-0.12)
    part("head", skin, a=head_a, b=head_b, p=head_p)
    if rng.random() < 0.22:  # beard: the lower face in the hair's colour
        part("beard", hair * 0.9, cy=rng.uniform(0.55, 0.75), a=head_a * 1.05, b=rng.uniform(0.35, 0.55),
             p=rng.uniform(2, 3), clip=1.0, turn=0.05)
    if style >= 1:  # the hair on the head: a cap clipped to the head, its lower edge is the hairline
        line = rng.uniform(-0.75, -0.3)
        part("hair", hair, cx=rng.uniform(-0.12, 0.12), cy=line - 1.0, a=head_a * rng.uniform(1.0, 1.35), b=1.0,
             angle=rng.uniform(-0.25, 0.25), p=rng.uniform(1.8, 4.0), clip=1.0)
    eye_x, eye_y = rng.uniform(0.24, 0.44), rng.uniform(-0.22, 0.06)
    eye_a = rng.uniform(0.11, 0.19)
    eye_b = eye_a * rng.uniform(0.45, 0.85)
    iris = _iris_colour(rng)
    brow_dy, brow_a = rng.uniform(0.1, 0.2), rng.uniform(0.1, 0.22)
    brow_b, brow_angle = rng.uniform(0.03, 0.07), rng.uniform(-0.35, 0.35)
    brow_rgb, brow_bend = hair * rng.uniform(0.45, 0.8), rng.uniform(-0.15, 0.15)
    nose_y, nose_len = rng.uniform(0.1, 0.32), rng.uniform(0.12, 0.26)
    part("nose", skin * rng.uniform(0.68, 0.85), cy=nose_y, a=rng.uniform(0.06, 0.13), b=nose_len,
         p=rng.uniform(1.3, 2.8), turn=0.26)
    mouth_y = max(rng.uniform(0.45, 0.7), nose_y + nose_len + 0.12)
    lips = _hsv(rng.uniform(0.95, 1.03) % 1.0, rng.uniform(0.35, 0.75), rng.uniform(0.35, 0.75))
    part("mouth", lips, cy=mouth_y, a=rng.uniform(0.2, 0.38), b=rng.uniform(0.045, 0.1), p=rng.uniform(1.8, 3.0),
         bend=rng.uniform(-0.6, 0.6), turn=0.18)
    for side in (-1, 1):
        part("eye", np.array([238.0, 236.0, 230.0]), cx=side * eye_x, cy=eye_y, a=eye_a, b=eye_b, turn=0.18)
    for side in (-1, 1):
        part("iris", iris, cx=side * eye_x, cy=eye_y, a=eye_b * 0.95, b=eye_b * 0.95, turn=0.2)
    for side in (-1, 1):
        part("brow", brow_rgb, cx=side * eye_x, cy=eye_y - eye_b - brow_dy, a=brow_a, b=brow_b,
             angle=side * brow_angle, bend=brow_bend, turn=0.18)
    roles = [r for r, _, _ in parts]
    out: dict[str, Any] = {k: np.array([f[k] for _, f, _ in parts], np.float32) for k in FIELDS}
    out["rgb"] = np.stack([c for _, _, c in parts]).astype(np.float32)
    out["cos"], out["sin"] = np.cos(out["angle"]), np.sin(out["angle"])
    out["general"] = np.flatnonzero(out["p"] != 2.0)  # superellipses other than ellipses
    out["bent"] = np.flatnonzero(out["bend"] != 0.0)
    out["clipped"] = np.flatnonzero(out["clip"] > 0)
    out["roles"] = roles
    out["head"] = roles.index("head")
    out["mouth"] = roles.index("mouth")
    out["brows"] = np.array([r == "brow" for r in roles])
    return out


def draw_sample(rng: np.random.Generator, cfg) -> dict[str, Any]:
    """The pose, expression, background, lighting, occlusion and noise of one image."""
    u = rng.uniform(-1.0, 1.0, 13)
    v = rng.uniform(0.0, 1.0, 15)
    light = cfg.lighting
    sample: dict[str, Any] = {
        "angle": math.radians(cfg.rotation) * u[0],
        "yaw": cfg.yaw * u[1],
        "dx": cfg.shift * u[2], "dy": cfg.shift * u[3],
        "scale": 1.0 + cfg.scale * u[4],
        "smile": EXPRESSION * u[5], "open": 0.8 + 0.55 * v[0], "brow": 0.04 * u[6],
        "background": _hsv(v[1], 0.7 * v[2], 0.1 + 0.85 * v[3]),
        "gain": (1.0 + 0.45 * light * u[7]) * (1.0 + 0.12 * light * u[8:11]),
        "contrast": 1.0 + 0.45 * light * u[11],
        "gradient": 0.6 * light * v[4], "gradient_angle": 2 * math.pi * v[5],
    }
    # In the image's unit square: a rectangle (sunglasses, a hand, a scarf) or an ellipse. It is drawn
    # whether it is used or not, so that the occlusion probability changes nothing else.
    occluder = {
        "ellipse": bool(v[7] < 0.5),
        "cx": 0.5 + 0.25 * u[12], "cy": 0.22 + 0.56 * v[8],
        "w": 0.12 + 0.18 * v[9], "h": 0.08 + 0.16 * v[10],
        "angle": v[11] - 0.5,
        "rgb": _hsv(v[12], v[13], 0.05 + 0.95 * v[14]),
    }
    sample["occluder"] = occluder if v[6] < cfg.occlusion else None
    size = cfg.image_size
    sample["noise"] = rng.standard_normal((3, size * size), dtype=np.float32) if cfg.noise > 0 else None
    return sample


@functools.lru_cache(maxsize=8)
def pixel_grid(size: int) -> np.ndarray:
    """(3, S*S) float32: each pixel centre's x, y (pixel units, row-major) and a row of ones."""
    centres = np.arange(size, dtype=np.float32) + np.float32(0.5)
    return np.stack([np.tile(centres, size), np.repeat(centres, size), np.ones(size * size, np.float32)])


def _soft(distance: np.ndarray) -> np.ndarray:
    """Coverage of a pixel whose centre is ``distance`` pixels outside an edge (antialiasing)."""
    out = np.subtract(np.float32(0.5), distance, dtype=np.float32)
    return np.minimum(np.maximum(out, 0.0, out=out), 1.0, out=out)


def render(ident: dict[str, Any], sample: dict[str, Any], size: int, noise: float) -> np.ndarray:
    """One image (3, H, W) uint8 of identity ``ident`` drawn as ``sample`` says."""
    f32 = np.float32
    grid = pixel_grid(size)
    # Pixel -> face frame: centre the face, divide by its half-height in pixels, undo the tilt.
    half = FACE_HALF_HEIGHT * size * sample["scale"]
    ox, oy = size * (0.5 + sample["dx"]), size * (0.52 + sample["dy"])
    c, s = math.cos(sample["angle"]), math.sin(sample["angle"])
    pose = np.array([[c, s, -(c * ox + s * oy)], [-s, c, s * ox - c * oy], [0.0, 0.0, half]]) / half
    # Face frame -> each part's own frame, its half-axes scaled to 1.
    a, b, bend = ident["a"].astype(np.float64), ident["b"].astype(np.float64), ident["bend"].astype(np.float64)
    m = ident["mouth"]
    b[m] *= sample["open"]
    bend[m] += sample["smile"]
    cx = ident["cx"] + sample["yaw"] * ident["turn"]
    cy = ident["cy"] + sample["brow"] * ident["brows"]
    ca, sa = ident["cos"].astype(np.float64), ident["sin"].astype(np.float64)
    rows = np.concatenate([
        np.stack([ca, sa, -(ca * cx + sa * cy)], 1) / a[:, None],
        np.stack([-sa, ca, sa * cx - ca * cy], 1) / b[:, None],
    ])  # (2P, 3)
    n = len(a)
    uv = (rows @ pose).astype(f32) @ grid  # (2P, S*S)
    u, v = uv[:n], uv[n:]
    bent = ident["bent"]
    if len(bent):  # curved parts: the vertical axis follows a parabola along the horizontal one
        v[bent] -= (bend[bent] * a[bent] / b[bent]).astype(f32)[:, None] * u[bent] ** 2
    # r = |u|^p + |v|^p is 1 on the edge; (r - 1) / p is the distance to it in half-axes near
    # the edge, which is where the antialiasing reads it. Ellipses (p = 2) need no power.
    r = u * u
    r += v * v
    g = ident["general"]
    if len(g):
        pg = ident["p"][g][:, None]
        r[g] = np.abs(u[g]) ** pg + np.abs(v[g]) ** pg
    r -= f32(1.0)
    r *= (np.minimum(a, b) * half / ident["p"]).astype(f32)[:, None]
    alpha = _soft(r)
    clip = ident["clipped"]
    if len(clip):
        alpha[clip] = np.minimum(alpha[clip], alpha[ident["head"]])
    # Back to front: part k is covered by everything in front of it.
    weight = np.empty_like(alpha)
    through = np.ones(alpha.shape[1], f32)
    for k in range(n - 1, -1, -1):
        np.multiply(alpha[k], through, out=weight[k])
        through -= weight[k]
    image = ident["rgb"].T @ weight + sample["background"].astype(f32)[:, None] * through  # (3, S*S)

    occ = sample["occluder"]
    if occ is not None:  # in the image's unit square
        co, so, w, h = math.cos(occ["angle"]), math.sin(occ["angle"]), occ["w"], occ["h"]
        ocx, ocy = occ["cx"] * size, occ["cy"] * size
        rows = np.array([[co, so, -(co * ocx + so * ocy)], [-so, co, so * ocx - co * ocy]], np.float32)
        ux, uy = rows @ grid  # pixels along the occluder's axes
        if occ["ellipse"]:
            dist = (np.sqrt((ux / f32(w * size)) ** 2 + (uy / f32(h * size)) ** 2) - f32(1.0)) * f32(min(w, h) * size)
        else:
            dist = np.maximum(np.abs(ux) - f32(w * size), np.abs(uy) - f32(h * size))
        cover = _soft(dist)
        image += cover * (occ["rgb"].astype(f32)[:, None] - image)

    # Lighting: a linear gradient across the image, contrast about mid-grey, brightness and colour cast.
    ga, k = sample["gradient_angle"], sample["gradient"] / size
    ramp = np.array([k * math.cos(ga), k * math.sin(ga), 1.0 - 0.5 * k * size * (math.cos(ga) + math.sin(ga))], f32)
    image *= ramp @ grid
    gain = sample["gain"].astype(f32)[:, None]
    contrast = f32(sample["contrast"])
    image = image * (contrast * gain) + (f32(MID_GREY) * (1 - contrast)) * gain
    if noise > 0:
        image += sample["noise"] * f32(noise * 255.0)
    np.rint(image, out=image)
    return np.clip(image, 0, 255, out=image).astype(np.uint8).reshape(3, size, size)


class FacesSource(SampleSource):
    """Images ``indices`` of the procedural face set; rendered on demand, cached when small.

    Cached images are returned as they are, so transforms must not modify their inputs in place
    (torchvision's and trainlab's transforms return new tensors).
    """

    def __init__(self, cfg, seed: int, channels: int, identities=None, indices=None, cache=None):
        self.cfg, self.seed, self.channels = cfg, seed, channels
        if identities is None:
            identities = [draw_identity(np.random.default_rng(derive_seed(seed, "faces", k)))
                          for k in range(cfg.identities)]
        self.identities = identities
        count = cfg.identities * cfg.samples_per_identity
        self.indices = torch.arange(count) if indices is None else indices
        self.targets = torch.div(self.indices, cfg.samples_per_identity, rounding_mode="floor").long()
        fits = count * channels * cfg.image_size**2 <= CACHE_BYTES
        self.cache: dict[int, torch.Tensor] | None = (cache if cache is not None else {}) if fits else None

    def locate(self, i: int) -> tuple[int, int]:
        """(identity, sample index within it) of image ``i`` of the whole set."""
        return divmod(int(i), self.cfg.samples_per_identity)

    def sample(self, i: int) -> torch.Tensor:
        """Image ``i`` of the whole set (not of this subset), freshly rendered: (C, S, S) uint8."""
        identity, j = self.locate(i)
        params = draw_sample(np.random.default_rng(derive_seed(self.seed, "faces", identity, j)), self.cfg)
        x = torch.from_numpy(render(self.identities[identity], params, self.cfg.image_size, self.cfg.noise))
        if self.channels == 1:
            luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
            x = (x.float() * luma).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        return x

    def load(self, index: int):
        i = int(self.indices[index])
        if self.cache is None:
            x = self.sample(i)
        else:
            if i not in self.cache:
                self.cache[i] = self.sample(i)
            x = self.cache[i]
        return x, self.targets[index]

    def subset(self, indices: torch.Tensor) -> FacesSource:
        return FacesSource(self.cfg, self.seed, self.channels, self.identities, self.indices[indices], self.cache)

    def describe(self, index: int) -> str:
        identity, j = self.locate(int(self.indices[index]))
        return f"faces image {int(self.indices[index])} (identity {identity}, sample {j})"


@DATASETS.register("faces", help="procedural face-like identities for recognition and metric learning "
                   "(data.faces: identities, samples_per_identity, ...)",
                   uses=("channels", "faces"),
                   hints={"image_size": "it draws its images at data.faces.image_size; set that instead"})
def faces(cfg, seed: int):
    from ..recipe import FacesConfig

    fc = cfg.faces or FacesConfig()
    channels = cfg.channels or 3
    source = FacesSource(fc, seed if fc.seed is None else fc.seed, channels)
    digits = len(str(fc.identities - 1))
    names = [f"id{k:0{max(3, digits)}d}" for k in range(fc.identities)]
    info = DataInfo(
        input_shape=(channels, fc.image_size, fc.image_size),
        num_classes=fc.identities,
        class_names=names,
        max_value=255.0,
        extra={"label": "identity", "samples_per_identity": fc.samples_per_identity},
    )
    return source, info
