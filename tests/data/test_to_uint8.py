"""D4, D6: float pixels rounded to uint8 (colour jitter, MixUp/CutMix of uint8 images) by one
helper, checked against the rounding rule written out: clamp to [0, 255], round to the nearest
integer, exact .5 ties to the even neighbour."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainlab.data.images import to_uint8, uint8_words_


def reference(values: list[float]) -> list[int]:
    """The rule, one Python float at a time."""
    out = []
    for v in values:
        v = min(max(v, 0.0), 255.0)
        low = math.floor(v)
        frac = v - low
        out.append(low + 1 if frac > 0.5 or (frac == 0.5 and low % 2 == 1) else low)
    return out


def float32_values() -> torch.Tensor:
    ties = [k + 0.5 for k in range(-3, 258)]  # every .5 tie in range, and a few around it
    near = []
    for t in (2.5, 3.5, 127.5, 254.5):  # the float32 neighbours of a tie round away from it
        f = torch.tensor(t, dtype=torch.float32)
        near += [torch.nextafter(f, torch.tensor(-math.inf)).item(), torch.nextafter(f, torch.tensor(math.inf)).item()]
    outside = [-1e9, -300.0, -1.0, -0.5000001, 255.50001, 256.0, 300.0, 1e9, -math.inf, math.inf]
    exact = [float(k) for k in range(256)]
    gen = torch.Generator().manual_seed(0)
    spread = (torch.rand(2000, generator=gen) * 320 - 30).tolist()
    return torch.tensor(ties + near + outside + exact + spread, dtype=torch.float32)


def test_to_uint8_clamps_and_rounds_ties_to_even():
    """D4: to_uint8 equals the rule written out for .5 ties, their float32 neighbours, values
    far out of range and infinities; it returns uint8 of the input's shape, input untouched."""
    x = float32_values()
    kept = x.clone()
    got = to_uint8(x)
    assert got.dtype == torch.uint8 and got.shape == x.shape
    assert got.tolist() == reference(x.tolist())
    assert torch.equal(x, kept)
    assert to_uint8(torch.tensor([[0.5, 1.5], [2.5, 255.5]], dtype=torch.float64)).tolist() == [[0, 2], [2, 255]]


def test_uint8_words_low_byte_is_the_value_in_any_layout():
    """D4, D6: the int32 words' low byte is the rounded value whether torch's copy_ or numpy's
    assignment casts them (the two call sites); x is rounded in place; without the clamp, values
    already in [0, 255] (ties included) round the same."""
    x = float32_values()
    want = reference(x.tolist())
    work = x.clone()
    words = uint8_words_(work)
    assert words.dtype == torch.int32 and words.data_ptr() == work.data_ptr()
    into = torch.empty(x.shape, dtype=torch.uint8)
    into.copy_(words)
    assert into.tolist() == want
    arr = np.empty(x.shape, dtype=np.uint8)
    arr[...] = words.numpy()
    assert arr.tolist() == want

    inside = x[(x >= 0) & (x <= 255)]
    got = torch.empty(inside.shape, dtype=torch.uint8).copy_(uint8_words_(inside.clone(), clamp=False))
    assert got.tolist() == reference(inside.tolist())
    with pytest.raises(TypeError, match="float32"):
        uint8_words_(torch.zeros(3, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_uint8_rounding_on_cuda_matches_the_cpu():
    """D4: the same bytes on the GPU (IEEE float32 addition rounds ties to even there too)."""
    x = float32_values()
    assert torch.equal(to_uint8(x.cuda()).cpu(), to_uint8(x))
