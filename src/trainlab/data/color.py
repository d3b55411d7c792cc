"""Colour jitter as one affine colour transform per sample (D4).

Brightness, contrast, saturation and hue are each an affine map of a pixel's colour vector:

    brightness β   x → β x
    contrast c     x → c x + (1 − c) m        m: mean grey level of the image at that point
    saturation s   x → s x + (1 − s) (wᵀx) 1   w: luma weights, wᵀx the pixel's grey level
    hue h          x → T⁻¹ R(2πh) T x          T: RGB → YIQ, R rotates the chroma plane (I, Q)

so any sequence of them composes into one matrix A and offset b, and the image is touched once:
y = clamp(A x + b). The grey mean needed by contrast is itself an affine function of the input's
per-channel means, so the composed map is exact for any order of the four steps; the only
difference from applying them one by one is that intermediate results are not clipped. The hue
step rotates chroma around the grey axis at constant luma: the linear counterpart of an HSV hue
shift (saturated primaries drift slightly differently than under an exact HSV round trip).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .images import uint8_words_

LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601 weights as torchvision rounds them in rgb_to_grayscale
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def hue_matrix(hue: float) -> np.ndarray:
    """(3, 3) RGB matrix rotating chroma by ``hue`` turns (hue in [-0.5, 0.5]) at constant luma."""
    a = 2.0 * math.pi * hue
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ


def _hue_parts() -> tuple[tuple[float, ...], ...]:
    """(P0, P1, P2), row-major 9-tuples, with hue_matrix(h) = P0 + cos(2πh) P1 + sin(2πh) P2."""
    keep = np.diag([1.0, 0.0, 0.0])
    cos = np.diag([0.0, 1.0, 1.0])
    sin = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    return tuple(tuple((_YIQ_TO_RGB @ m @ _RGB_TO_YIQ).reshape(-1).tolist()) for m in (keep, cos, sin))


_HUE_PARTS = _hue_parts()


def color_affine(
    channel_means,
    brightness: float = 1.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue: float = 0.0,
    order: tuple[int, ...] = (0, 1, 2, 3),
) -> tuple[np.ndarray, np.ndarray]:
    """(A (C, C), b (C,)) float64 arrays composing the steps in ``order`` (0 brightness,
    1 contrast, 2 saturation, 3 hue). ``channel_means``: (C,) means of the input image; C is 1 or
    3 (for one channel, saturation and hue are no-ops). Offsets are in the input's scale.

    The matrices are 3 x 3, composed on Python floats (float64, as numpy would), written out
    entry by entry: numpy spends a microsecond of overhead per call on arrays this small, and the
    composition with numpy took 25 us per sample against 5 here. Brightness and contrast scale A
    and b; saturation mixes each row with the luma row wᵀA; only hue is a full 3 x 3 product.
    """
    mu = np.asarray(channel_means, dtype=np.float64).reshape(-1).tolist()
    if len(mu) not in (1, 3):
        raise ValueError(f"colour jitter needs images with 1 or 3 channels, got {len(mu)}")
    if len(mu) == 1:
        k, o = 1.0, 0.0  # one channel: x -> k x + o
        for step in order:
            if step in (0, 1):
                f = brightness if step == 0 else contrast
                shift = (1.0 - contrast) * (k * mu[0] + o) if step == 1 else 0.0
                k, o = f * k, f * o + shift
        return np.array([[k]]), np.array([o])
    m0, m1, m2 = mu
    w0, w1, w2 = LUMA
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0
    b0 = b1 = b2 = 0.0
    for step in order:
        if step in (0, 1):  # k I, plus (1 - c) times the grey level of the mean for contrast
            k = brightness if step == 0 else contrast
            o = 0.0 if step == 0 else (1.0 - contrast) * (w0 * (a0 * m0 + a1 * m1 + a2 * m2 + b0)
                                                          + w1 * (a3 * m0 + a4 * m1 + a5 * m2 + b1)
                                                          + w2 * (a6 * m0 + a7 * m1 + a8 * m2 + b2))
            a0, a1, a2, a3, a4, a5, a6, a7, a8 = (k * a0, k * a1, k * a2, k * a3, k * a4, k * a5,
                                                  k * a6, k * a7, k * a8)
            b0, b1, b2 = k * b0 + o, k * b1 + o, k * b2 + o
        elif step == 2:  # s I + (1 - s) 1 wᵀ
            s, t = saturation, 1.0 - saturation
            l0 = t * (w0 * a0 + w1 * a3 + w2 * a6)
            l1 = t * (w0 * a1 + w1 * a4 + w2 * a7)
            l2 = t * (w0 * a2 + w1 * a5 + w2 * a8)
            lb = t * (w0 * b0 + w1 * b1 + w2 * b2)
            a0, a1, a2, a3, a4, a5, a6, a7, a8 = (s * a0 + l0, s * a1 + l1, s * a2 + l2, s * a3 + l0, s * a4 + l1,
                                                  s * a5 + l2, s * a6 + l0, s * a7 + l1, s * a8 + l2)
            b0, b1, b2 = s * b0 + lb, s * b1 + lb, s * b2 + lb
        elif step == 3:  # hue_matrix(hue) @ (A, b)
            turn = 2.0 * math.pi * hue
            cs, sn = math.cos(turn), math.sin(turn)
            h0, h1, h2, h3, h4, h5, h6, h7, h8 = (p + cs * q + sn * r for p, q, r in zip(*_HUE_PARTS))
            a0, a1, a2, a3, a4, a5, a6, a7, a8 = (
                h0 * a0 + h1 * a3 + h2 * a6, h0 * a1 + h1 * a4 + h2 * a7, h0 * a2 + h1 * a5 + h2 * a8,
                h3 * a0 + h4 * a3 + h5 * a6, h3 * a1 + h4 * a4 + h5 * a7, h3 * a2 + h4 * a5 + h5 * a8,
                h6 * a0 + h7 * a3 + h8 * a6, h6 * a1 + h7 * a4 + h8 * a7, h6 * a2 + h7 * a5 + h8 * a8)
            b0, b1, b2 = h0 * b0 + h1 * b1 + h2 * b2, h3 * b0 + h4 * b1 + h5 * b2, h6 * b0 + h7 * b1 + h8 * b2
    return np.array([[a0, a1, a2], [a3, a4, a5], [a6, a7, a8]]), np.array([b0, b1, b2])


def channel_means(image: torch.Tensor) -> torch.Tensor:
    """(C,) mean of each channel of a (C, H, W) image."""
    return image.float().mean(dim=(1, 2))


def apply_color_affine(image: torch.Tensor, a, b, max_value: float) -> torch.Tensor:
    """clamp(A x + b, 0, max_value) for every pixel x of a (C, H, W) image; dtype is kept
    (uint8 results are rounded to nearest, ties to even)."""
    return affine_planes(image.float(), a, b, max_value, image.dtype)


def affine_planes(planes: torch.Tensor, a, b, max_value: float, dtype: torch.dtype) -> torch.Tensor:
    """:func:`apply_color_affine` on a contiguous float32 (C, H, W) image, returning ``dtype``.

    On the CPU the 3 x 3 product and the casts run in numpy: its float32 matrix product is several
    times faster than torch's on tensors of one image. A uint8 result comes back channels-last, a
    (C, H, W) view of an (H, W, C) buffer: the layout the bilinear resize that follows inside a
    ``random_resized_crop`` runs fastest on (see ``augment.channels_last_uint8``), written at no
    extra cost by the final cast.
    """
    c, h, w = planes.shape
    x = planes.reshape(c, h * w)
    a32 = np.asarray(a, dtype=np.float32)
    b32 = np.asarray(b, dtype=np.float32).reshape(c, 1)
    if x.device.type == "cpu":
        y = a32 @ x.numpy()
        y += b32
        if dtype == torch.uint8:
            # Rounded in place (torch's clamp on the same memory: half the time of np.clip), then
            # written channel by channel into the (H, W, C) buffer by the int32 -> uint8
            # assignment: cheaper than a rounding cast followed by a transposing copy, and twice as
            # fast as torch's copy_ into a permuted view.
            words = uint8_words_(torch.from_numpy(y)).numpy().reshape(c, h, w)
            out = np.empty((h, w, c), dtype=np.uint8)
            for i in range(c):
                out[..., i] = words[i]
            return torch.from_numpy(out).permute(2, 0, 1)
        np.clip(y, 0.0, max_value, out=y)
        return torch.from_numpy(y).view(c, h, w).to(dtype)
    y = torch.addmm(torch.from_numpy(b32).to(x.device), torch.from_numpy(a32).to(x.device), x)
    if dtype == torch.uint8:
        return y.clamp_(0.0, 255.0).round_().to(torch.uint8).view(c, h, w)  # ties to even, as on the CPU
    return y.clamp_(0.0, max_value).view(c, h, w).to(dtype)
