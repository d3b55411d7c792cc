"""Occlusion (D5): Random Erasing, Cutout, Hide-and-Seek and GridMask.

The geometry of each method is a pure function that draws the hidden region of N images at once
from a generator (None: torch's global generator, which the loader seeds per sample) and returns
rectangles (N, K, 4); Hide-and-Seek and GridMask, made of many small rectangles, also have a mask
form (N, 1, H, W) built from the same draws, which their batch operations fill in one pass over
the batch instead of one slice per rectangle. The same functions serve the per-sample transforms
(N = 1, in the loader) and the batch operations (whole batch on the device,
``data.batch_augment``), so both hide exactly the same kind of region.

* Random Erasing: a rectangle of random area fraction ``scale`` and aspect (height / width)
  ``ratio``, clamped to fit, filled with random values (or a constant).
* Cutout: ``holes`` squares of fixed side ``size`` (a fraction of the short side, or pixels if
  > 1) centred anywhere, so they may hang over the border; filled with a constant (0: black).
* Hide-and-Seek: the image cut into ``grid`` × ``grid`` cells, each hidden with ``p_hide``.
* GridMask: squares of side ``ratio`` · d repeated with period d (d drawn in [d_min, d_max] of the
  short side) at a random offset.

Fill values are fractions of the value range (0 black, 1 white) or ``"random"``. Boxes and masks
are left as they are: an occluded object is still there.
"""
from __future__ import annotations

import math

import torch


def _rand(shape, gen, device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device)


def erasing_rects(n: int, h: int, w: int, scale=(0.02, 0.33), ratio=(0.3, 3.3), gen=None, device="cpu"):
    """(N, 1, 4) int64 rectangles [y0, x0, y1, x1] of area fraction in ``scale``, aspect in ``ratio``."""
    u = _rand((n, 4), gen, device)
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(log_r)
    eh = torch.sqrt(area * r).round().clamp(1, h)
    ew = torch.sqrt(area / r).round().clamp(1, w)
    y0 = torch.floor(u[:, 2] * (h - eh + 1))
    x0 = torch.floor(u[:, 3] * (w - ew + 1))
    return torch.stack([y0, x0, y0 + eh, x0 + ew], 1).long()[:, None]


def erasing_rect(h: int, w: int, scale=(0.02, 0.33), ratio=(0.3, 3.3)) -> list[list[list[int]]]:
    """:func:`erasing_rects` for one image, as nested lists [[[y0, x0, y1, x1]]] (N = K = 1).

    The same four draws from torch's global generator, the arithmetic done on Python floats: for
    one rectangle the dozen tensor operations of :func:`erasing_rects` cost twenty times the
    arithmetic (74 vs 4 us). Python computes in float64 where the batch form uses float32, so a
    side within float32 rounding of a tie could differ by a pixel (none did in 40 000 draws).
    """
    u = torch.rand(1, 4).tolist()[0]
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[0])
    r = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    eh = min(max(round(math.sqrt(area * r)), 1), h)  # round: half to even, as torch.round
    ew = min(max(round(math.sqrt(area / r)), 1), w)
    y0 = math.floor(u[2] * (h - eh + 1))
    x0 = math.floor(u[3] * (w - ew + 1))
    return [[[y0, x0, y0 + eh, x0 + ew]]]


def cutout_rects(n: int, h: int, w: int, size: float = 0.5, holes: int = 1, gen=None, device="cpu"):
    """(N, holes, 4) squares [y0, x0, y1, x1] of side ``size`` centred uniformly, clipped to the image."""
    side = int(round(size * min(h, w))) if size <= 1.0 else int(size)
    side = max(side, 1)
    u = _rand((n, holes, 2), gen, device)
    cy = torch.floor(u[..., 0] * h) - side // 2
    cx = torch.floor(u[..., 1] * w) - side // 2
    return torch.stack([cy.clamp(0, h), cx.clamp(0, w), (cy + side).clamp(0, h), (cx + side).clamp(0, w)], -1).long()


def rect_mask(rects: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, 1, H, W) bool: pixels inside any of the (N, K, 4) rectangles [y0, x0, y1, x1)."""
    ys = torch.arange(h, device=rects.device)
    xs = torch.arange(w, device=rects.device)
    rows = (ys >= rects[..., 0:1]) & (ys < rects[..., 2:3])  # (N, K, H)
    cols = (xs >= rects[..., 1:2]) & (xs < rects[..., 3:4])  # (N, K, W)
    inside = rows[..., :, None] & cols[..., None, :]  # (N, K, H, W)
    return inside.any(1, keepdim=True)


def _hidden_cells(n: int, grid: int, p_hide: float, gen, device) -> torch.Tensor:
    """(N, grid²) bool: the Hide-and-Seek cells hidden, row-major."""
    return _rand((n, grid * grid), gen, device) < p_hide


def hide_and_seek_rects(n: int, h: int, w: int, grid: int = 4, p_hide: float = 0.5, gen=None, device="cpu"):
    """(N, grid², 4) rectangles of the grid × grid cells, each hidden with probability ``p_hide``
    (a cell that stays visible is an empty rectangle). Pixel y lies in cell row ⌊y·grid/h⌋."""
    hidden = _hidden_cells(n, grid, p_hide, gen, device)
    cell = torch.arange(grid + 1, device=device)
    ys = (cell * h + grid - 1) // grid  # first pixel row of each cell, and h at the end
    xs = (cell * w + grid - 1) // grid
    iy, ix = torch.meshgrid(torch.arange(grid, device=device), torch.arange(grid, device=device), indexing="ij")
    iy, ix = iy.flatten(), ix.flatten()
    rects = torch.stack([ys[iy], xs[ix], ys[iy + 1], xs[ix + 1]], 1)  # (grid², 4)
    return rects[None] * hidden[..., None]


def hide_and_seek_mask(n: int, h: int, w: int, grid: int = 4, p_hide: float = 0.5, gen=None, device="cpu"):
    """(N, 1, H, W) bool: the pixels :func:`hide_and_seek_rects` hides, from the same draws.

    Pixel (y, x) takes the flag of cell (⌊y·grid/h⌋, ⌊x·grid/w⌋): the cell flags are spread along
    the columns, then whole rows of that are picked, all in uint8 (torch's bool kernels are
    scalar loops on the CPU, several times slower).
    """
    cells = _hidden_cells(n, grid, p_hide, gen, device).to(torch.uint8).view(n, grid, grid)
    row = torch.div(torch.arange(h, device=device) * grid, h, rounding_mode="floor")
    col = torch.div(torch.arange(w, device=device) * grid, w, rounding_mode="floor")
    return cells.index_select(2, col).index_select(1, row)[:, None].view(torch.bool)


def _gridmask_bands(n: int, h: int, w: int, d_min: float, d_max: float, ratio: float, gen, device):
    """GridMask's squares as row bands [y0, y1) (N, ky) and column bands [x0, x1) (N, kx), clipped
    to the image (clipped-away bands are empty): a square is a row band × a column band."""
    u = _rand((n, 3), gen, device)
    short = min(h, w)
    d = (short * (d_min + (d_max - d_min) * u[:, 0])).round().clamp(min=2)
    side = torch.minimum((d * ratio).round().clamp(min=1), d - 1)
    dy, dx = torch.floor(u[:, 1] * d), torch.floor(u[:, 2] * d)
    d_low = max(2, int(round(short * d_min)))
    ky, kx = h // d_low + 2, w // d_low + 2
    y0 = torch.arange(ky, device=device)[None] * d[:, None] - dy[:, None]  # (N, ky)
    x0 = torch.arange(kx, device=device)[None] * d[:, None] - dx[:, None]
    y1, x1 = (y0 + side[:, None]).clamp(0, h), (x0 + side[:, None]).clamp(0, w)
    return (y0.clamp(0, h), y1), (x0.clamp(0, w), x1)


def gridmask_rects(n: int, h: int, w: int, d_min: float = 0.2, d_max: float = 0.5, ratio: float = 0.5,
                   gen=None, device="cpu"):
    """(N, K, 4) squares of side ratio·d repeated every d pixels (d drawn in [d_min, d_max] of the
    short side) at a random offset in [0, d) along each axis: pixel (y, x) is hidden when
    (y + δy) mod d < side and (x + δx) mod d < side. Empty rectangles pad K."""
    (y0, y1), (x0, x1) = _gridmask_bands(n, h, w, d_min, d_max, ratio, gen, device)
    ky, kx = y0.shape[1], x0.shape[1]
    rects = torch.stack([y0[:, :, None].expand(-1, -1, kx), x0[:, None, :].expand(-1, ky, -1),
                         y1[:, :, None].expand(-1, -1, kx), x1[:, None, :].expand(-1, ky, -1)], -1)
    return rects.reshape(n, ky * kx, 4).long()


def _band_cover(lo: torch.Tensor, hi: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size) uint8: 1 where the coordinate lies in one of the (N, K) bands [lo, hi)."""
    at = torch.arange(size, device=lo.device)
    return ((at >= lo[..., None]) & (at < hi[..., None])).any(1).to(torch.uint8)


def gridmask_mask(n: int, h: int, w: int, d_min: float = 0.2, d_max: float = 0.5, ratio: float = 0.5,
                  gen=None, device="cpu"):
    """(N, 1, H, W) bool: the pixels :func:`gridmask_rects` hides, from the same draws.

    The squares are the crossings of row bands and column bands, so the mask is the outer product
    of a row mask and a column mask (computed in uint8: bool broadcasting is a scalar loop on the CPU).
    """
    (y0, y1), (x0, x1) = _gridmask_bands(n, h, w, d_min, d_max, ratio, gen, device)
    rows, cols = _band_cover(y0, y1, h), _band_cover(x0, x1, w)
    return (rows[:, None, :, None] * cols[:, None, None, :]).view(torch.bool)


def random_bytes(n: int, gen=None, device="cpu") -> torch.Tensor:
    """(n,) uint8 uniform random values, reproducible from ``gen``.

    Drawn as ⌈n/8⌉ int64 words over the full 64-bit range (every bit uniform) and read as bytes:
    ``torch.randint(0, 256, dtype=uint8)`` spends one 32-bit generator draw per byte, about six
    times the work for the same distribution.
    """
    words = torch.empty((n + 7) // 8, dtype=torch.int64, device=device)
    return words.random_(-(2**63), None, generator=gen).view(torch.uint8)[:n]


def random_values(n: int, dtype: torch.dtype, max_value: float, gen=None, device="cpu") -> torch.Tensor:
    """(n,) uniform fill values in the stored scale: bytes for uint8, [0, max_value) otherwise."""
    if dtype == torch.uint8:
        return random_bytes(n, gen, device)
    return torch.rand(n, generator=gen, device=device, dtype=dtype) * max_value


def fill_masked(x: torch.Tensor, mask: torch.Tensor, value, max_value: float, gen=None) -> torch.Tensor:
    """``x`` (N, C, H, W) with ``mask`` (N, 1, H, W) pixels set to ``value`` · max_value, or to
    uniform random values when ``value`` is "random"; dtype kept."""
    if value == "random":
        if x.dtype == torch.uint8:
            noise = torch.randint(0, 256, x.shape, dtype=torch.uint8, generator=gen, device=x.device)
        else:
            noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * max_value
        return torch.where(mask, noise, x)
    v = float(value) * max_value
    fill = torch.tensor(round(v) if x.dtype == torch.uint8 else v, dtype=x.dtype, device=x.device)
    return torch.where(mask, fill, x)


# ------------------------------------------------------------------------------ option checks
# The per-sample transforms (augment.py) and the batch operations (batch.py) take the same options
# and check them here. A ValueError becomes one RecipeError line naming the recipe field
# (transforms.build_op).
def check_p(p: float, name: str = "p") -> float:
    """``p`` as a float in [0, 1]: the probability option of every transform and batch operation."""
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return float(p)


def check_value(value) -> None:
    if value == "random":
        return
    if isinstance(value, str) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"value must be a fraction of the value range in [0, 1] or 'random', got {value!r}")


def _pair(name: str, pair) -> tuple[float, float]:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ValueError(f"{name} must be [min, max], got {list(pair) if isinstance(pair, tuple) else pair!r}")
    return float(pair[0]), float(pair[1])


def erasing_options(scale, ratio) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, ratio) of Random Erasing: area fractions 0 < min <= max <= 1, aspects 0 < min <= max."""
    scale, ratio = _pair("scale", scale), _pair("ratio", ratio)
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"scale must be 0 < min <= max <= 1, got {list(scale)}")
    if not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must be 0 < min <= max, got {list(ratio)}")
    return scale, ratio


def cutout_options(size, holes) -> tuple[float, int]:
    """(size, holes) of Cutout: a side > 0 (fraction of the short side, or pixels if > 1), holes >= 1."""
    if float(size) <= 0 or int(holes) < 1:
        raise ValueError(f"size must be > 0 and holes >= 1, got size={size}, holes={holes}")
    return float(size), int(holes)


def hide_and_seek_options(grid, p_hide) -> tuple[int, float]:
    """(grid, p_hide) of Hide-and-Seek: grid >= 1 cells a side, each hidden with p_hide in [0, 1]."""
    if int(grid) < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    return int(grid), check_p(p_hide, "p_hide")


def gridmask_options(d_min, d_max, ratio) -> tuple[float, float, float]:
    """(d_min, d_max, ratio) of GridMask: 0 < d_min <= d_max <= 1 (fractions of the short side) and
    0 < ratio < 1."""
    if not 0.0 < float(d_min) <= float(d_max) <= 1.0:
        raise ValueError(f"need 0 < d_min <= d_max <= 1 (fractions of the short side), got {d_min}, {d_max}")
    if not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    return float(d_min), float(d_max), float(ratio)


# --------------------------------------------------------------------------- batch operations
def fill_masked_(x: torch.Tensor, mask: torch.Tensor, value, max_value: float, gen=None) -> torch.Tensor:
    """In-place :func:`fill_masked`: one pass over ``x``, no new batch-sized tensor for constants."""
    if x.device.type == "cpu" and x.dtype == torch.uint8:
        return _fill_masked_uint8_(x, mask, value, max_value, gen)
    if value == "random":
        return torch.where(mask, fill_masked(x, mask, "random", max_value, gen), x, out=x)
    v = float(value) * max_value
    return x.masked_fill_(mask, round(v) if x.dtype == torch.uint8 else v)


def _fill_masked_uint8_(x: torch.Tensor, mask: torch.Tensor, value, max_value: float, gen) -> torch.Tensor:
    """:func:`fill_masked_` of a uint8 ``x`` on the CPU as x·keep + hide·fill with 0/1 byte masks.

    torch's masked_fill_ and where run a scalar loop for uint8 on the CPU; these vectorized
    multiplies are about ten times faster. Exact: one of the two terms is 0, the other <= 255.
    """
    hide = mask.view(torch.uint8)  # a bool tensor holds 0/1 bytes
    x.mul_(hide ^ 1)
    if value == "random":
        return x.add_(random_bytes(x.numel(), gen).view(x.shape).mul_(hide))
    v = round(float(value) * max_value)
    return x.add_(hide * v) if v else x


def sliceable(x: torch.Tensor):
    """A CPU tensor as an array to read and write small slices of: a numpy array sharing its memory
    (numpy's indexing costs a fraction of torch's per call, which dominates when many small
    rectangles are copied or filled), or the tensor itself for dtypes numpy lacks (bfloat16)."""
    try:
        return x.numpy()
    except (TypeError, RuntimeError):
        return x


def fill_rects_(x: torch.Tensor, rects: torch.Tensor, value, max_value: float, gen=None) -> torch.Tensor:
    """Fill the (N, K, 4) rectangles [y0, x0, y1, x1) of ``x`` (N, C, H, W) in place; ``rects``
    is a tensor or, on the CPU, the same as nested lists.

    On the CPU each rectangle is written through a slice, touching only its own pixels; on an
    accelerator one masked kernel over the batch is cheaper than a launch per rectangle.
    """
    if x.device.type != "cpu":
        rects = torch.as_tensor(rects, dtype=torch.long, device=x.device)  # the per-sample ops pass lists
        return fill_masked_(x, rect_mask(rects, x.shape[-2], x.shape[-1]), value, max_value, gen)
    c, pixels = x.shape[1], sliceable(x)
    rects = rects.tolist() if isinstance(rects, torch.Tensor) else rects
    boxes = [(i, y0, x0, y1, x1) for i, per_image in enumerate(rects)
             for y0, x0, y1, x1 in per_image if y1 > y0 and x1 > x0]
    if value != "random":
        v = float(value) * max_value
        v = round(v) if x.dtype == torch.uint8 else v
        for i, y0, x0, y1, x1 in boxes:
            pixels[i, :, y0:y1, x0:x1] = v
        return x
    # One draw for all rectangles: a generator call per rectangle costs more than its values.
    sizes = [c * (y1 - y0) * (x1 - x0) for _, y0, x0, y1, x1 in boxes]
    noise, start = sliceable(random_values(sum(sizes), x.dtype, max_value, gen)), 0
    for (i, y0, x0, y1, x1), size in zip(boxes, sizes):
        pixels[i, :, y0:y1, x0:x1] = noise[start:start + size].reshape(c, y1 - y0, x1 - x0)
        start += size
    return x


def _applied(n: int, p: float, gen, device) -> torch.Tensor | None:
    """(N,) bool: which images an op with probability ``p`` touches (None: all)."""
    return None if p >= 1.0 else _rand((n,), gen, device) < p


def rect_batch_op(make_rects, value, p: float, max_value: float):
    """A ``(batch, generator) -> batch`` op filling ``make_rects(n, h, w, gen, device)`` rectangles
    of each image (each image independently with probability ``p``), in place. For occlusions of a
    few large rectangles (Random Erasing, Cutout): on the CPU only their pixels are touched."""
    check_value(value)

    def op(batch, gen):
        x = batch["input"]
        n, _, h, w = x.shape
        rects = make_rects(n, h, w, gen, x.device)
        applied = _applied(n, p, gen, x.device)
        if applied is not None:
            rects = rects * applied[:, None, None]  # an all-zero rectangle is empty
        return {**batch, "input": fill_rects_(x, rects, value, max_value, gen)}

    return op


def mask_batch_op(make_mask, value, p: float, max_value: float):
    """A ``(batch, generator) -> batch`` op filling the (N, 1, H, W) mask ``make_mask(n, h, w, gen,
    device)`` (each image independently with probability ``p``), in place. For occlusions of many
    small rectangles (Hide-and-Seek, GridMask): one vectorized pass over the batch costs less than
    a slice per rectangle, on the CPU as on an accelerator."""
    check_value(value)

    def op(batch, gen):
        x = batch["input"]
        n, _, h, w = x.shape
        mask = make_mask(n, h, w, gen, x.device)
        applied = _applied(n, p, gen, x.device)
        if applied is not None:
            mask[~applied] = False
        return {**batch, "input": fill_masked_(x, mask, value, max_value, gen)}

    return op
