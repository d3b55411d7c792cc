"""Turning user inputs (arrays, tensors, image files, .npy files) into one model batch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError


@dataclass(frozen=True, eq=False)
class Prediction:
    """What ``Run.predict`` returns, by name.

    - ``probs``: the task's predictions as NumPy: class probabilities (N, C) for classification,
      per-pixel class probabilities (N, K, H, W) for segmentation, next-token probabilities
      (N, T, V) for sequences; for detection and instance segmentation one dict per input of
      ``boxes`` (M, 4) XYXY pixels, ``scores`` (M,), ``labels`` (M,) (and ``masks`` (M, H, W)).
    - ``classes``: the predicted class name of each input (classification); None for tasks that
      predict no single class per input.
    - ``inputs``: one name per input sample (a file path, ``batch.npy[3]``, ``input 0``).
    - ``class_names``: every class, in the order of the probabilities' class axis.

    It is not a tuple: ``probs, labels, classes = run.predict(...)`` raises a TypeError rather
    than reading input names as labels.
    """

    probs: Any
    classes: list[str] | None
    inputs: list[str]
    class_names: list[str]

    def __iter__(self):
        raise TypeError("a Prediction does not unpack: read its fields .probs, .classes (predicted class "
                        "per input), .inputs (input names) and .class_names")

    @classmethod
    def from_outputs(cls, probs: Any, inputs: list[str], class_names: list[str],
                     labels_per_sample: bool) -> Prediction:
        """From a task's predictions (tensors, or one dict of tensors per input)."""
        if isinstance(probs, torch.Tensor):
            probs = probs.detach().cpu().numpy()
        else:
            probs = [{k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in d.items()}
                     for d in probs]
        classes = None
        if labels_per_sample and isinstance(probs, np.ndarray) and probs.ndim == 2:
            classes = [class_names[i] for i in probs.argmax(1).tolist()]
        return cls(probs, classes, list(inputs), list(class_names))


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


# What a folder argument stands for: its image files and .npy arrays.
INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".npy")
NPY_MAGIC = b"\x93NUMPY"


def expand_folders(inputs: list, names: list[str] | None) -> tuple[list, list[str] | None]:
    """Each folder among ``inputs`` replaced by its image and .npy files (sorted by name; hidden
    files and other suffixes skipped); a folder with none is a DataError."""
    items, out_names = [], [] if names else None
    for i, item in enumerate(inputs):
        path = Path(item) if isinstance(item, (str, Path)) else None
        if path is None or not path.is_dir():
            items.append(item)
            if names:
                out_names.append(names[i])
            continue
        files = sorted(f for f in path.iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in INPUT_SUFFIXES)
        if not files:
            raise DataError(f"{path}: folder has no image or .npy files ({', '.join(INPUT_SUFFIXES)})")
        items += files
        if names:
            out_names += [f"{names[i]}/{f.name}" for f in files]
    return items, out_names


def load_npy(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A numeric .npy file as a batch of ``shape``. Files that are no .npy (a renamed text file
    or pickle) and .npy files of Python objects get trainlab's own words: NumPy's advice to pass
    allow_pickle is no advice for a prediction input."""
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        what = "an empty file" if not head else "it does not start with the .npy header"
        raise DataError(f"{path}: not a NumPy .npy file (not a readable .npy array: {what}; "
                        "save arrays with numpy.save)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "pickle" in reason.lower():  # NumPy's words for a .npy of dtype object
            raise DataError(f"{path}: expected a numeric array, got Python objects (dtype object)") from None
        raise DataError(f"{path}: not a readable .npy array, truncated or damaged ({reason})") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))  # torch wants native order
    return _as_batch(torch.from_numpy(arr), shape, str(path))


def read_exact_image(path: Path, info) -> torch.Tensor:
    """(1, C, H, W) float32 from an image file for a run trained on arrays (digits: values
    0..16): the file must have the model input's size and channels (nothing is resized, as no
    training sample was), and its 0..255 pixels are rescaled to the run's 0..info.max_value."""
    from .data.images import GRAY_MODES, inspect_image, read_image

    channels, height, width = info.input_shape
    mode, (h, w) = inspect_image(path)
    grey = mode in (*GRAY_MODES, "LA", "La", "F", "I;16B", "I;16L")
    x = read_image(path, 1 if grey else 3)
    if channels == 1 and not grey and bool((x == x[:1]).all()):
        x = x[:1]  # a grey picture stored as RGB: one channel of grey
    if tuple(x.shape) != (channels, height, width):
        got = len(x)
        raise DataError(f"{path}: image of {h}x{w} pixels with {got} channel{'s' if got > 1 else ''}; this run "
                        f"was trained on {channels}x{height}x{width} arrays, so images must be {height}x{width} "
                        f"with {channels} channel{'s' if channels > 1 else ''}")
    return (x.float() * (info.max_value / 255.0)).unsqueeze(0)


def gather_inputs(inputs, info, names: list[str] | None = None, exact: bool = False) -> tuple[torch.Tensor, list[str]]:
    """Stack inputs into one batch; returns (batch, one name per sample for printing).

    ``inputs``: arrays, tensors or paths (one or a list). A path is a .npy array, an image file or
    a folder of them (its .png/.jpg/.jpeg/.bmp/.npy files, sorted by name). Image files of a run
    trained on image files are converted to its channels and resized as its training images were;
    a run trained on arrays (digits: values 0..16, ``info.max_value`` 16) takes images of exactly
    its input size and channels, their 0..255 pixels rescaled to 0..max_value. ``exact`` asks the
    same of every image file (a run whose data set draws its images at one size, with no
    ``data.image_size`` resize to repeat: an embedding must not be judged on a stretched face).
    """
    if isinstance(inputs, (str, Path, np.ndarray, torch.Tensor)):
        inputs = [inputs]
    inputs, names = expand_folders(list(inputs), names)
    shape = tuple(info.input_shape)
    parts, labels = [], []
    for i, item in enumerate(inputs):
        name = names[i] if names else (str(item) if isinstance(item, (str, Path)) else f"input {i}")
        if isinstance(item, (str, Path)):
            path = Path(item)
            if not path.is_file():
                raise DataError(f"{path}: no such file")
            if path.suffix.lower() == ".npy":
                batch = load_npy(path, shape)
            elif info.kind != "image":
                raise DataError(f"{path}: this run was trained on {info.kind} arrays, not image files; "
                                f"give .npy arrays of shape {list(shape)}")
            elif info.max_value != 255 or exact:
                batch = read_exact_image(path, info)
            else:
                from .data.images import read_image

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
