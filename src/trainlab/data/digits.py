"""The built-in ``digits`` data set: scikit-learn's 1,797 real 8×8 handwritten digits.

Pixel values are kept as shipped (0–16, float32); normalization from training-split statistics
happens in the model's input stage.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..registry import DATASETS
from .bundle import DataInfo, TensorSource


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float, labels (1797,) int) from the CSV file scikit-learn ships.

    The file is read directly: importing scikit-learn costs more than a second of start-up, and
    this is the same data ``sklearn.datasets.load_digits`` returns.
    """
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.exists():  # a future layout: fall back to the public loader
        from sklearn.datasets import load_digits

        raw = load_digits()
        return raw.images, raw.target
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


# Fixed 1x8x8 arrays: it uses no data-set option (data.root, data.image_size, ... are refused).
@DATASETS.register("digits", help="scikit-learn's 1,797 handwritten digits, 8x8 grayscale, 10 classes", uses=())
def digits(cfg, seed: int):
    images, labels = load_digits_arrays()
    inputs = torch.from_numpy(images).float().unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    targets = torch.from_numpy(labels).long()
    info = DataInfo(
        input_shape=(1, 8, 8),
        num_classes=10,
        class_names=[str(i) for i in range(10)],
        # A mirrored 2 is no digit, a rotated 6 is a 9 (D7).
        label_changing=("hflip", "vflip", "rotate>30"),
        max_value=16.0,
    )
    return TensorSource(inputs, targets), info
