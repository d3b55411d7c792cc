"""Turning user inputs (arrays, tensors, image files, .npy files) into one model batch."""
from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError, show_path


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
            subs = " (its sub-folders are not searched)" if any(f.is_dir() for f in path.iterdir()) else ""
            raise DataError(f"{show_path(path)}: folder has no image or .npy files ({', '.join(INPUT_SUFFIXES)})"
                            f"{subs}")
        items += files
        if names:
            out_names += [f"{names[i]}/{f.name}" for f in files]
    return items, out_names


def what_is(path: Path) -> str:
    """What a path that is no regular file is, for a message: "no such file", "a directory",
    "a FIFO (named pipe)"... (a FIFO or a device would block or never end a read)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a symbolic link to nothing" if path.is_symlink() else "no such file"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((word for test, word in kinds if test(mode)), "not a regular file")


def check_npy_header(path: Path) -> None:
    """DataError unless the .npy header of ``path`` describes a numeric array that the file holds:
    its shape x item size, in bytes, must be what follows the header. np.load allocates what
    the header claims before reading (a 136-byte file can claim 466 TiB), so this comes first."""
    name = show_path(path)
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
            read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"format version {version[0]}.{version[1]}, expected 1.0 or 2.0")
            shape, _, dtype = read_header(f)
        except (ValueError, OSError, EOFError, SyntaxError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"{name}: not a readable .npy array, damaged header ({reason})") from None
        start = f.tell()
    if dtype.hasobject:
        raise DataError(f"{name}: expected a numeric array, got Python objects (dtype object)")
    if dtype.kind not in "biuf":
        raise DataError(f"{name}: expected a numeric array, got dtype {dtype}")
    claimed = math.prod(shape) * dtype.itemsize  # Python ints: no overflow for any claimed shape
    held = os.path.getsize(path) - start
    if claimed > held:  # more bytes than claimed are left unread by np.load, as NumPy allows
        raise DataError(f"{name}: the .npy header claims shape {list(shape)} of {dtype} ({claimed} bytes) but the file "
                        f"holds {held} bytes after its header (truncated or damaged)")


def load_npy(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A numeric .npy file as a batch of ``shape``. Files that are no .npy (a renamed text file
    or pickle) and .npy files of Python objects get trainlab's own words: NumPy's advice to pass
    allow_pickle is no advice for a prediction input. The header is checked against the file's
    size before NumPy allocates what it claims."""
    name = show_path(path)
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        what = "an empty file" if not head else "it does not start with the .npy header"
        raise DataError(f"{name}: not a NumPy .npy file (not a readable .npy array: {what}; "
                        "save arrays with numpy.save)")
    check_npy_header(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{name}: not a readable .npy array, truncated or damaged ({reason})") from None
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))  # torch wants native order
    return _as_batch(torch.from_numpy(arr), shape, name)


def read_exact_image(path: Path, info, max_pixels: int | None = None) -> torch.Tensor:
    """(1, C, H, W) float32 from an image file for a run trained on arrays (digits: values
    0..16): the file must have the model input's size and channels (nothing is resized, as no
    training sample was), and its 0..255 pixels are rescaled to the run's 0..info.max_value."""
    from .data.images import DEFAULT_MAX_PIXELS, GRAY_MODES, inspect_image, read_image

    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    channels, height, width = info.input_shape
    mode, (h, w) = inspect_image(path, max_pixels)
    grey = mode in (*GRAY_MODES, "LA", "La", "F", "I;16B", "I;16L")
    x = read_image(path, 1 if grey else 3, max_pixels=max_pixels)
    if channels == 1 and not grey and bool((x == x[:1]).all()):
        x = x[:1]  # a grey picture stored as RGB: one channel of grey
    if tuple(x.shape) != (channels, height, width):
        got = len(x)
        raise DataError(f"{show_path(path)}: image of {h}x{w} pixels with {got} channel{'s' if got > 1 else ''}; "
                        f"this run was trained on {channels}x{height}x{width} arrays, so images must be {height}x{width} "
                        f"with {channels} channel{'s' if channels > 1 else ''}")
    return (x.float() * (info.max_value / 255.0)).unsqueeze(0)


def gather_inputs(inputs, info, names: list[str] | None = None, exact: bool = False,
                  max_pixels: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Stack inputs into one batch; returns (batch, one name per sample for printing).

    ``inputs``: arrays, tensors or paths (one or a list). A path is a .npy array, an image file or
    a folder of them (its .png/.jpg/.jpeg/.bmp/.npy files, sorted by name). Image files of a run
    trained on image files are converted to its channels and resized as its training images were;
    a run trained on arrays (digits: values 0..16, ``info.max_value`` 16) takes images of exactly
    its input size and channels, their 0..255 pixels rescaled to 0..max_value. ``exact`` asks the
    same of every image file (a run whose data set draws its images at one size, with no
    ``data.image_size`` resize to repeat: an embedding must not be judged on a stretched face).
    ``max_pixels`` bounds an image file's pixels (default: ``data.max_pixels``' default); a path
    that is no regular file (a FIFO, a device) is named for what it is, not read.
    """
    if isinstance(inputs, (str, Path, np.ndarray, torch.Tensor)):
        inputs = [inputs]
    inputs, names = expand_folders(list(inputs), names)
    shape = tuple(info.input_shape)
    parts, labels = [], []
    for i, item in enumerate(inputs):
        name = names[i] if names else (show_path(item) if isinstance(item, (str, Path)) else f"input {i}")
        if isinstance(item, (str, Path)):
            path = Path(item)
            if not path.is_file():
                what = what_is(path)
                raise DataError(f"{show_path(path)}: {what}" + ("" if what == "no such file" else
                                                                 "; expected an image or .npy file"))
            if path.suffix.lower() == ".npy":
                batch = load_npy(path, shape)
            elif info.kind != "image":
                raise DataError(f"{show_path(path)}: this run was trained on {info.kind} arrays, not image files; "
                                f"give .npy arrays of shape {list(shape)}")
            elif info.max_value != 255 or exact:
                batch = read_exact_image(path, info, max_pixels)
            else:
                from .data.images import DEFAULT_MAX_PIXELS, read_image

                batch = read_image(path, shape[0], shape[1:], max_pixels or DEFAULT_MAX_PIXELS).unsqueeze(0)
        else:
            arr = item if isinstance(item, torch.Tensor) else torch.from_numpy(np.asarray(item))
            batch = _as_batch(arr, shape, name)
        parts.append(batch.float() if batch.dtype not in (torch.uint8, torch.float32) else batch)
        labels += [name] if len(batch) == 1 else [f"{name}[{j}]" for j in range(len(batch))]
    dtypes = {p.dtype for p in parts}
    if len(dtypes) > 1:
        parts = [p.float() for p in parts]
    return torch.cat(parts), labels
