"""The data bundle a recipe's ``data`` section turns into."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..errors import DataError

if TYPE_CHECKING:
    from ..recipe import Recipe


@dataclass
class DataInfo:
    """What the model and the task need to know about the inputs."""

    input_shape: tuple[int, ...]  # one sample: (C, H, W) for images, (D,) for flat vectors
    num_classes: int
    class_names: list[str]
    kind: str = "image"  # image | flat | sequence
    # Transforms that would change a sample's label (D7), declared by the data set.
    label_changing: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "kind": self.kind,
            "label_changing": list(self.label_changing),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataInfo:
        return cls(
            input_shape=tuple(d["input_shape"]),
            num_classes=int(d["num_classes"]),
            class_names=list(d["class_names"]),
            kind=d.get("kind", "image"),
            label_changing=tuple(d.get("label_changing", ())),
            extra=dict(d.get("extra", {})),
        )


class SampleSource(ABC):
    """A split of a data set: ``len(source)`` samples, ``source.load(i) -> (input, target)``.

    Inputs are tensors in their stored scale and dtype (uint8 images, or float arrays as shipped);
    normalization happens on the device, inside the model (see :mod:`trainlab.models.wrapper`).
    """

    targets: torch.Tensor  # (N,) class index per sample, used for stratification and statistics

    def __len__(self) -> int:
        return len(self.targets)

    @abstractmethod
    def load(self, index: int) -> tuple[torch.Tensor, Any]:
        """Sample ``index`` as (input, target), untransformed."""

    @abstractmethod
    def subset(self, indices: torch.Tensor) -> SampleSource:
        """The samples at ``indices``, in that order."""

    def describe(self, index: int) -> str:
        """A name for sample ``index`` in error messages (a file path where there is one)."""
        return f"sample {index}"


class TensorSource(SampleSource):
    """A split held in memory as one input tensor and one target tensor."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor):
        if len(inputs) != len(targets):
            raise DataError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs = inputs
        self.targets = targets

    def load(self, index: int):
        return self.inputs[index], self.targets[index]

    def subset(self, indices: torch.Tensor) -> TensorSource:
        return TensorSource(self.inputs[indices], self.targets[indices])


@dataclass
class DataBundle:
    train: SampleSource
    val: SampleSource | None
    test: SampleSource | None
    info: DataInfo
    # Per-channel (images) or per-feature (flat) statistics of the training split, stored scale.
    mean: torch.Tensor
    std: torch.Tensor

    def split(self, name: str) -> SampleSource:
        source = {"train": self.train, "val": self.val, "test": self.test}[name]
        if source is None or len(source) == 0:
            raise DataError(f"the {name} split is empty (see data.split.{name})")
        return source


def build_data(recipe: Recipe) -> DataBundle:
    """Load the data set, split it from the seed and compute training-split statistics (D1)."""
    from ..registry import DATASETS
    from .splits import apply_imbalance, stratified_split
    from .statistics import channel_stats

    cfg = recipe.data
    entry = DATASETS.get(cfg.name, "data.name")
    loaded = entry.fn(cfg, recipe.seed)
    if isinstance(loaded, DataBundle):  # data sets that ship their own splits
        return loaded
    source, info = loaded
    train_idx, val_idx, test_idx = stratified_split(source.targets, cfg.split.val, cfg.split.test, recipe.seed)
    if cfg.imbalance is not None:
        train_idx = apply_imbalance(train_idx, source.targets, cfg.imbalance, info.num_classes, recipe.seed)
    if cfg.subset is not None:
        if cfg.subset > len(train_idx):
            raise DataError(
                f"data.subset={cfg.subset} is larger than the training split ({len(train_idx)} samples)"
            )
        train_idx = train_idx[: cfg.subset]
    train = source.subset(train_idx)
    val = source.subset(val_idx) if len(val_idx) else None
    test = source.subset(test_idx) if len(test_idx) else None
    if isinstance(cfg.batch_size, int) and cfg.batch_size > len(train):
        raise DataError(
            f"data.batch_size={cfg.batch_size} is larger than the training split ({len(train)} samples); "
            f"use at most {len(train)} or 'full'"
        )
    if cfg.normalize:
        mean, std = channel_stats(train, info, recipe.seed)
    else:
        c = info.input_shape[0]
        mean, std = torch.zeros(c), torch.ones(c)
    return DataBundle(train, val, test, info, mean, std)
