"""The data bundle a recipe's ``data`` section turns into."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..errors import DataError, RecipeError

if TYPE_CHECKING:
    from ..recipe import Recipe


@dataclass
class DataInfo:
    """What the model and the task need to know about the inputs."""

    input_shape: tuple[int, ...]  # one sample: (C, H, W) for images, (D,) for flat vectors
    num_classes: int
    class_names: list[str]
    kind: str = "image"  # image | flat | sequence
    # Transforms that would change a sample's label (D7), declared by the data set: a name
    # ("hflip") or a magnitude rule ("rotate>30": rotations beyond 30 degrees).
    label_changing: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # What each sample's target carries besides the class label: boxes, masks, semantic.
    annotations: tuple[str, ...] = ()
    # Largest value of the stored scale (255 for uint8 images, 16 for digits): transforms and
    # occlusion fills work in fractions of it.
    max_value: float = 255.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "kind": self.kind,
            "label_changing": list(self.label_changing),
            "extra": self.extra,
            "annotations": list(self.annotations),
            "max_value": self.max_value,
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
            annotations=tuple(d.get("annotations", ())),
            max_value=float(d.get("max_value", 255.0)),
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

    def labels_only(self) -> SampleSource:
        """This split yielding ``(input, label)`` without boxes and masks (see build_data)."""
        return self

    def labelled(self) -> SampleSource:
        """The samples that have a class label (a classifier cannot train on an image of
        background only; a detector or a segmenter can, see build_data)."""
        return self


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
    # (feature mean (D,), whitening matrix (D, D)) fitted on the normalized training split (D2).
    whiten: tuple[torch.Tensor, torch.Tensor] | None = None

    def split(self, name: str) -> SampleSource:
        source = {"train": self.train, "val": self.val, "test": self.test}[name]
        if source is None or len(source) == 0:
            raise DataError(f"the {name} split is empty (see data.split.{name})")
        return source


def needs_annotations(recipe: Recipe) -> bool:
    """Whether samples must carry their boxes and masks: for every task but classification, and
    for mosaic (which moves boxes). Classification otherwise drops them at the source, so that
    no transform spends time moving masks that nothing reads."""
    from .transforms import parse_spec

    mosaic = any(parse_spec(s, "data.augment")[0] == "mosaic" for s in recipe.data.augment)
    return recipe.task != "classification" or mosaic


# Options build_data applies when it splits a data set itself; a data set that ships its own
# splits must declare the ones it implements (``DATASETS.register(..., handles=("fold", ...))``).
SPLIT_OPTIONS = ("fold", "subset", "imbalance", "whiten", "resample")
# Options a data set's builder reads itself. Each entry declares the ones it uses
# (``DATASETS.register(..., uses=("root", "image_size"))``); any other one set to a value other
# than its default is refused rather than silently ignored. ``hints`` (option -> advice) may say
# what to set instead.
DATASET_OPTIONS = ("root", "image_size", "channels", "skip_corrupt", "max_pixels", "follow_links", "shapes", "faces",
                   "coco", "segmentation", "text", "eval_resize", "eval_crop_pct", "stats_sample", "urls")


def _is_default(cfg, key: str) -> bool:
    return getattr(cfg, key) == type(cfg).model_fields[key].get_default(call_default_factory=True)


def _refuse_image_options(cfg, annotations: bool | None) -> None:
    """Token sequences are not images: image transforms, whitening, a class-imbalance profile,
    resizing, channel conversion and boxes/masks do not apply (an hflip would silently reverse
    every window while its targets stay forward)."""
    from ..errors import RecipeError

    why = f"data set {cfg.name!r} gives token sequences, not images"
    refused = (
        ("augment", bool(cfg.augment), "per-sample image transforms do not apply to them"),
        ("batch_augment", bool(cfg.batch_augment), "batch transforms mix or occlude images"),
        ("whiten", cfg.whiten is not None, "token ids are embedded, not whitened"),
        ("imbalance", cfg.imbalance is not None, "their targets are next tokens, not classes to thin out"),
        ("image_size", cfg.image_size is not None, "there is nothing to resize"),
        ("channels", cfg.channels is not None, "there are no colour channels"),
    )
    for key, given, reason in refused:
        if given:
            raise RecipeError(f"data.{key}: {why}; {reason} (remove data.{key})")
    if annotations:
        raise RecipeError(f"data.name: {why}; there are no images, boxes or masks to keep or draw "
                          "(use an image data set)")


def check_used_options(cfg, entry, annotations: bool | None = None) -> None:
    """Refuse, before the data set is loaded, every data-set option it does not use (one
    RecipeError line): ``data.root`` for shapes, ``data.coco`` for digits, ``data.skip_corrupt``
    for coco. An entry registered with ``kind="sequence"`` first gets the sequence rules of
    :func:`check_data_options`, whose reasons say more than "does not use it"."""
    from ..errors import RecipeError

    if entry.meta.get("kind") == "sequence":
        _refuse_image_options(cfg, annotations)
    uses = tuple(entry.meta.get("uses", ()))
    for key in DATASET_OPTIONS:
        if key not in uses and not _is_default(cfg, key):
            used = f"it uses: {', '.join(f'data.{k}' for k in uses)}" if uses else "it uses no data-set option"
            hint = entry.meta.get("hints", {}).get(key)
            raise RecipeError(f"data.{key}: the {entry.name} data set does not use it ({used})"
                              + (f"; {hint}" if hint else ""))


def check_data_options(cfg, info: DataInfo, own_splits: bool, handles=(), annotations: bool | None = None) -> None:
    """Refuse data options the loaded data set would ignore or break on, with one RecipeError line.

    Token sequences (``info.kind == "sequence"``) are not images (see :func:`_refuse_image_options`).
    A data set that ships its own splits (``own_splits``) bypasses the engine's split, so
    ``data.fold``, ``data.subset``, ``data.imbalance`` and ``data.whiten`` work only when it
    declares them in ``handles``.
    """
    from ..errors import RecipeError

    if info.kind == "sequence":
        _refuse_image_options(cfg, annotations)
    if own_splits:
        for key in SPLIT_OPTIONS:
            if getattr(cfg, key) is not None and key not in handles:
                supported = ", ".join(f"data.{k}" for k in handles) or "none of them"
                raise RecipeError(f"data.{key}: data set {cfg.name!r} ships its own splits and does not support it "
                                  f"(supported: {supported})")


def check_subset(subset: int | None, available: int, unit: str = "samples") -> None:
    """``data.subset`` may not ask for more than the ``available`` training samples (DataError)."""
    if subset is not None and subset > available:
        raise DataError(f"data.subset={subset} is larger than the training split ({available} {unit})")


def check_train_split(train: SampleSource | torch.Tensor, hint: str) -> None:
    """An empty training split is a DataError (it has nothing to train on, nor to batch)."""
    if len(train) == 0:
        raise DataError(f"the training split is empty ({hint})")


def batch_size_note(batch_size: int | str, n_train: int, unit: str = "samples") -> str | None:
    """The line that says a fixed ``data.batch_size`` is larger than the ``n_train`` training samples
    (None when it is not): training then uses the whole split as one batch, as Keras and torch's
    DataLoader do, rather than refusing (issue 22). The recipe keeps the size that was asked for."""
    if isinstance(batch_size, int) and batch_size > n_train > 0:
        return (f"data: data.batch_size={batch_size} is larger than the training split ({n_train} {unit}); "
                f"training with one batch of {n_train}")
    return None


def unseen_classes(names: list[str] | None, info: DataInfo) -> list[int] | None:
    """Class ids of ``data.split.unseen`` (names of the data set's classes; RecipeError naming an
    unknown one), or None."""
    if names is None:
        return None
    index = {str(n): i for i, n in enumerate(info.class_names)}
    unknown = [n for n in names if str(n) not in index]
    if unknown:
        shown = ", ".join(info.class_names[:12]) + (", ..." if len(info.class_names) > 12 else "")
        raise RecipeError(f"data.split.unseen: no class {unknown[0]!r} in the data set (classes: {shown})")
    if len(set(map(str, names))) == len(index):
        raise RecipeError("data.split.unseen: every class is held out; training needs at least one")
    return [index[str(n)] for n in names]


def build_data(recipe: Recipe, annotations: bool | None = None, statistics: bool = True) -> DataBundle:
    """Load the data set, split it from the seed and compute training-split statistics (D1).

    ``annotations`` keeps (True) or drops (False) the boxes and masks of the samples; None decides
    by :func:`needs_annotations`.

    ``statistics=False`` is for callers that need the splits but not the input stage: a run's
    checkpoint carries its own, and a recipe check only needs the sizes. Mean and std are then
    zeros and ones and no whitening is fitted, which spares decoding up to MAX_STAT_SAMPLES
    images and up to MAX_FIT_SAMPLES samples plus an eigen-decomposition on file data sets. The
    recipe is checked as fully as with statistics (whitening's feature limit included).

    With ``data.fold`` the test split is held out as usual and the rest is cut into k stratified
    folds; fold ``index`` is the validation split (D9). Augmentations are checked against the
    data set's label-changing transforms here (D7), and options the data set does not use or
    cannot honour (see :func:`check_used_options`, :func:`check_data_options`) are refused, before
    anything is trained or written. A ``data.batch_size`` larger than the training split is not
    refused: the trainer uses the whole split as one batch (:func:`batch_size_note`).
    """
    from ..registry import DATASETS
    from .splits import apply_imbalance, class_split, stratified_kfold, stratified_split
    from .statistics import channel_stats
    from .transforms import check_augment

    cfg = recipe.data
    entry = DATASETS.get(cfg.name, "data.name")
    check_used_options(cfg, entry, annotations)
    loaded = entry.fn(cfg, recipe.seed)
    own_splits = isinstance(loaded, DataBundle)
    info = loaded.info if own_splits else loaded[1]
    check_data_options(cfg, info, own_splits, entry.meta.get("handles", ()), annotations)
    check_augment(cfg, info)
    unit = "windows" if info.kind == "sequence" else "samples"
    if own_splits:  # data sets that ship their own splits (and apply what they declare in ``handles``)
        check_train_split(loaded.train, f"data set {cfg.name!r} ships its own splits")
        return loaded
    source = loaded[0]
    if recipe.task == "classification":
        source = source.labelled()
    if not (needs_annotations(recipe) if annotations is None else annotations):
        source = source.labels_only()
    if cfg.fold is not None and cfg.split.by == "class":
        raise RecipeError("data.fold: k-fold splits samples, not classes; it cannot be combined with data.split.by=class")
    if cfg.fold is not None:
        rest, _, test_idx = stratified_split(source.targets, 0.0, cfg.split.test, recipe.seed)
        if len(rest) < cfg.fold.k:
            raise DataError(f"data.fold.k={cfg.fold.k} is larger than the train+val part ({len(rest)} samples)")
        folds = stratified_kfold(source.targets[rest], cfg.fold.k, recipe.seed)
        val_idx = rest[folds == cfg.fold.index]
        train_idx = rest[folds != cfg.fold.index]
    elif cfg.split.by == "class":
        train_idx, val_idx, test_idx = class_split(source.targets, cfg.split.val, cfg.split.test, recipe.seed,
                                                   unseen_classes(cfg.split.unseen, info))
    else:
        train_idx, val_idx, test_idx = stratified_split(source.targets, cfg.split.val, cfg.split.test, recipe.seed)
    if cfg.imbalance is not None:
        train_idx = apply_imbalance(train_idx, source.targets, cfg.imbalance, info.num_classes, recipe.seed)
    if cfg.subset is not None:
        check_subset(cfg.subset, len(train_idx), unit)
        train_idx = train_idx[: cfg.subset]
    if cfg.resample is not None:  # a bagging or boosting member's draw (T4, T5), after every other choice
        from .resample import load_weights, resample_indices

        weights = load_weights(cfg.resample.weights, len(train_idx)) if cfg.resample.weights else None
        train_idx = train_idx[resample_indices(len(train_idx), recipe.seed, cfg.resample.member, weights)]
    check_train_split(train_idx, f"{len(source)} {unit} in all; see data.split.val and data.split.test")
    train = source.subset(train_idx)
    val = source.subset(val_idx) if len(val_idx) else None
    test = source.subset(test_idx) if len(test_idx) else None
    if cfg.normalize and statistics:
        mean, std = channel_stats(train, info, recipe.seed)
    else:
        c = info.input_shape[0]
        mean, std = torch.zeros(c), torch.ones(c)
    whiten = None
    if cfg.whiten is not None:
        from .whiten import check_whiten_size, fit_training_whitening

        check_whiten_size(info)
        if statistics:
            whiten = fit_training_whitening(train, info, mean, std, cfg.whiten, cfg.whiten_eps, recipe.seed)
    return DataBundle(train, val, test, info, mean, std, whiten)
