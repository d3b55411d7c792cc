"""Seeded generators (T3: runs repeat exactly): one helper for every generator seeded from (seed, ...) parts,
on a chosen device."""
from __future__ import annotations

import hashlib
import struct

import torch

from trainlab.rng import derive_seed, generator


def test_generator_is_seeded_from_the_derived_seed_on_the_device():
    """T3: generator(*parts, device=d) draws what a torch.Generator on d seeded with the 63-bit blake2b seed of the
    parts draws; the default device is the CPU."""
    parts = (7, "batch", 2, 5)
    seed = struct.unpack("<Q", hashlib.blake2b(repr(parts).encode(), digest_size=8).digest())[0] >> 1
    assert derive_seed(*parts) == seed
    reference = torch.rand(5, generator=torch.Generator().manual_seed(seed))
    for g in (generator(*parts), generator(*parts, device="cpu"), generator(*parts, device=torch.device("cpu"))):
        assert g.device == torch.device("cpu")
        assert torch.equal(torch.rand(5, generator=g), reference)
    assert not torch.equal(torch.rand(5, generator=generator(7, "batch", 2, 6)), reference)
    if torch.cuda.is_available():
        g = generator(*parts, device="cuda")
        assert g.device.type == "cuda" and g.initial_seed() == seed

