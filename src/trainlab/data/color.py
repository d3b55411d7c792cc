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

    The matrices are 3 x 3: numpy does them in microseconds, where torch would spend more time
    dispatching than computing.
    """
    mu = np.asarray(channel_means, dtype=np.float64).reshape(-1)
    c = mu.size
    eye = np.eye(c)
    w = np.array(LUMA) if c == 3 else np.ones(1)
    a, b = eye.copy(), np.zeros(c)
    for step in order:
        if step == 0:
            m, o = brightness * eye, 0.0
        elif step == 1:
            grey = float(w @ (a @ mu + b))
            m, o = contrast * eye, (1.0 - contrast) * grey
        elif step == 2 and c == 3:
            m, o = saturation * eye + (1.0 - saturation) * np.outer(np.ones(3), w), 0.0
        elif step == 3 and c == 3:
            m, o = hue_matrix(hue), 0.0
        else:
            continue
        a, b = m @ a, m @ b + o
    return a, b


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
            # Clipped to [0, 255], plus 1.5·2²³: float32 steps are 1 from 2²³ on, so the sum is
            # rounded to the nearest integer (ties to even) and that integer is the low byte of its
            # bit pattern, which the int32 -> uint8 assignment keeps. Written channel by channel
            # into the (H, W, C) buffer: cheaper than a rounding cast followed by a transposing copy.
            np.clip(y, 0.0, 255.0, out=y)
            y += np.float32(12582912.0)
            words = y.view(np.int32).reshape(c, h, w)
            out = np.empty((h, w, c), dtype=np.uint8)
            for i in range(c):
                out[..., i] = words[i]
            return torch.from_numpy(out).permute(2, 0, 1)
        np.clip(y, 0.0, max_value, out=y)
        return torch.from_numpy(y).view(c, h, w).to(dtype)
    y = torch.addmm(torch.from_numpy(b32).to(x.device), torch.from_numpy(a32).to(x.device), x)
    if dtype == torch.uint8:
        return y.add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).view(c, h, w)
    return y.clamp_(0.0, max_value).view(c, h, w).to(dtype)
