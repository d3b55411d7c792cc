"""Turning user inputs (arrays, tensors, image files, .npy files) into one model batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import DataError


def _as_batch(arr: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """(N, *shape) from a single sample or a batch; a 1-channel image may omit its channel axis."""
    if not torch.is_floating_point(arr) and arr.dtype != torch.uint8:
        arr = arr.float()
    if torch.is_floating_point(arr) and not bool(torch.isfinite(arr).all()):
        bad = int((~torch.isfinite(arr)).sum())
        raise DataError(f"{name}: contains {bad} NaN or infinite value(s); inputs must be finite")
    dims = tuple(arr.shape)
    if dims == shape:
        return arr.unsqueeze(0)
    if dims[1:] == shape:
        return arr
    if shape[0] == 1 and len(shape) == 3:
        if dims == shape[1:]:
            return arr.reshape(1, *shape)
        if dims[1:] == shape[1:]:
            return arr.unsqueeze(1)
    want = "x".join(map(str, shape))
    raise DataError(f"{name}: array of shape {list(dims)} does not fit the model input {want} (or N x {want})")


def gather_inputs(inputs, info, names: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Stack inputs into one batch; returns (batch, one label per sample for printing)."""
    if isinstance(inputs, (str, Path, np.ndarray, torch.Tensor)):
        inputs = [inputs]
    shape = tuple(info.input_shape)
    parts, labels = [], []
    for i, item in enumerate(inputs):
        name = names[i] if names else (str(item) if isinstance(item, (str, Path)) else f"input {i}")
        if isinstance(item, (str, Path)):
            path = Path(item)
            if not path.is_file():
                raise DataError(f"{path}: no such file")
            if path.suffix.lower() == ".npy":
                try:
                    arr = np.load(path, allow_pickle=False)
                except (ValueError, OSError, EOFError) as err:
                    raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0]})") from None
                if arr.dtype.kind not in "biuf":
                    raise DataError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
                arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))  # torch wants native order
                batch = _as_batch(torch.from_numpy(arr), shape, str(path))
            else:
                from .data.images import read_image

                if info.kind != "image" or (not info.extra.get("image_files") and info.max_value != 255):
                    # e.g. digits: trained on arrays of values 0..16; a PNG's 0..255 would be misread
                    raise DataError(f"{path}: this run was trained on arrays, not image files; "
                                    f"give .npy arrays of shape {list(shape)}")
                batch = read_image(path, shape[0], shape[1:]).unsqueeze(0)
        else:
            arr = item if isinstance(item, torch.Tensor) else torch.from_numpy(np.asarray(item))
            batch = _as_batch(arr, shape, name)
        parts.append(batch.float() if batch.dtype not in (torch.uint8, torch.float32) else batch)
        labels += [name] if len(batch) == 1 else [f"{name}[{j}]" for j in range(len(batch))]
    dtypes = {p.dtype for p in parts}
    if len(dtypes) > 1:
        parts = [p.float() for p in parts]
    return torch.cat(parts), labels
