"""The recipe: one validated tree that says everything about a run.

A recipe is YAML with the sections ``name, seed, task, data, model, loss, optim, schedule, train,
run`` (plus ``doctor`` and ``eval``). :func:`load_recipe` reads a built-in recipe by name or a file
by path, applies dotted overrides (``optim.lr=0.01``; values parsed as YAML, so
``train.early_stop=null`` disables a section) and validates the result. Every problem becomes one
:class:`~trainlab.errors.RecipeError` line naming the field, the value and what is allowed.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from .errors import RecipeError, closest, show



# Counts must be real integers: pydantic's lax mode would read `true` as 1 epoch.
Int = Annotated[int, Strict()]


class Section(BaseModel):
    """Base of every recipe section: unknown keys and NaN/inf are errors, not silently kept."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


# ----------------------------------------------------------------------------------------- data
class SplitConfig(Section):
    val: float = Field(0.15, ge=0.0, lt=1.0, description="fraction of the data held out for validation")
    test: float = Field(0.15, ge=0.0, lt=1.0, description="fraction held out for the final test")
    by: Literal["sample", "class"] = Field("sample", description="sample: every class in every split "
                                           "(stratified); class: whole classes (identities) per split, so "
                                           "validation and test hold identities never seen in training (open set)")
    unseen: list[str] | None = Field(None, min_length=1, description="with by=class: these classes are held out "
                                     "of training and their samples divided between val and test in the ratio "
                                     "val : test (default: val and test are fractions of the classes)")

    @model_validator(mode="after")
    def _unseen_needs_class(self):
        if self.unseen is not None and self.by != "class":
            raise ValueError("unseen: holding classes out needs split.by=class")
        return self


AugmentSpec = Union[str, dict[str, Any]]

SHAPE_KINDS = ("circle", "square", "triangle", "star")


class ShapesConfig(Section):
    """The procedural ``shapes`` data set (D10): coloured shapes on a noisy background."""

    image_size: int = Field(64, ge=16, le=1024, description="side of the square images in pixels")
    count: int = Field(2000, ge=4, description="number of images")
    classes: list[Literal["circle", "square", "triangle", "star"]] = Field(
        default_factory=lambda: list(SHAPE_KINDS), min_length=2, description="shape classes to draw"
    )
    min_objects: int = Field(1, ge=1, le=16, description="fewest objects per image")
    max_objects: int = Field(3, ge=1, le=16, description="most objects per image")
    min_size: float = Field(0.25, gt=0.0, le=1.0, description="smallest object diameter, fraction of the side")
    max_size: float = Field(0.6, gt=0.0, le=1.0, description="largest object diameter, fraction of the side")
    noise: float = Field(0.06, ge=0.0, le=1.0, description="std of the background noise, fraction of 255")
    seed: int | None = Field(None, ge=0, description="seed of the drawings (default: the recipe seed)")

    @model_validator(mode="after")
    def _ranges(self):
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: each shape may appear once (got {self.classes})")
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) must be <= max_objects ({self.max_objects})")
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must be <= max_size ({self.max_size})")
        return self


class FacesConfig(Section):
    """The procedural ``faces`` data set (D10, K5): identities of face-like part layouts, one class each."""

    identities: Int = Field(300, ge=2, le=100_000, description="number of identities (classes)")
    samples_per_identity: Int = Field(20, ge=2, le=10_000, description="images of each identity")
    image_size: Int = Field(32, ge=16, le=512, description="side of the square images in pixels")
    rotation: float = Field(12.0, ge=0.0, le=60.0, description="largest in-plane head tilt, degrees either way")
    yaw: float = Field(0.3, ge=0.0, le=1.0, description="largest head turn, 0 to 1 (at 1 the eyes, nose and mouth "
                       "move sideways by about a fifth of the head's half-height)")
    shift: float = Field(0.06, ge=0.0, le=0.3, description="largest translation, fraction of the side")
    scale: float = Field(0.1, ge=0.0, le=0.5, description="largest relative change of the face's size")
    lighting: float = Field(0.4, ge=0.0, le=1.0, description="strength of brightness, contrast, colour-cast and "
                            "gradient changes")
    noise: float = Field(0.04, ge=0.0, le=1.0, description="std of the pixel noise, fraction of 255")
    occlusion: float = Field(0.25, ge=0.0, le=1.0, description="probability that a rectangle or blob hides part "
                             "of the face")
    seed: int | None = Field(None, ge=0, description="seed of the identities and samples (default: the recipe seed)")


class CocoConfig(Section):
    """The ``coco`` data set: a COCO-style JSON file (``data.root``) and its images."""

    images: str | None = Field(None, description="folder of the image files (default: the JSON file's folder)")
    min_area: float = Field(0.0, ge=0.0, description="ignore annotations smaller than this many pixels")


class SegmentationConfig(Section):
    """The ``segmentation`` data set: ``root/images/*.png`` and ``root/masks/*.png`` of class ids."""

    classes: list[str] | None = Field(None, description="class names by id, 0 first (default: ids found)")
    ignore_index: int | None = Field(255, ge=0, le=255, description="mask value that marks unlabelled pixels")


class FoldConfig(Section):
    """K-fold cross-validation (D9): fold ``index`` of ``k`` is the validation split."""

    k: int = Field(5, ge=2, le=100, description="number of folds of the train+val part")
    index: int = Field(0, ge=0, description="fold used for validation (0-based)")

    @model_validator(mode="after")
    def _index(self):
        if self.index >= self.k:
            raise ValueError(f"index must be < k (got index {self.index} with k {self.k})")
        return self


class ResampleConfig(Section):
    """A resampled training split (T4 bagging, T5 boosting members; set by those loops)."""

    member: Int = Field(..., ge=0, description="draw stream: n draws with replacement from (seed, member)")
    weights: str | None = Field(None, description="JSON list of one weight per training sample: draws in "
                                "proportion to them (boosting); null: uniform draws (a bootstrap)")


class TextConfig(Section):
    """The ``text`` data set (K6): character windows of a .txt file (``data.root``) or a built-in text."""

    builtin: str = Field("lighthouse", min_length=1, description="built-in text, used when data.root is not set")
    seq_len: Int = Field(64, ge=2, description="characters per training window")
    stride: Int | None = Field(None, ge=1, description="start-to-start distance of training windows "
                               "(default seq_len // 2: overlapping windows)")


class DataConfig(Section):
    name: str = Field("digits", description="data set in the registry (`trainlab recipes` shows examples)")
    root: str | None = Field(None, description="folder or file the data set reads (folder, coco, ...)")
    image_size: Int | tuple[Int, Int] | None = Field(None, description="resize images to this (H, W)")
    channels: Literal[1, 3] | None = Field(None, description="convert images to grayscale (1) or RGB (3)")
    batch_size: Int | Literal["full"] = Field(64, description="mini-batch size; 1 is SGD, 'full' is GD")
    sampler: Literal["shuffle", "pk"] = Field("shuffle", description="shuffle: a seeded permutation per epoch; "
                                              "pk: identity-balanced batches of P identities x K samples each")
    p: Int | None = Field(None, ge=2, description="pk sampler: identities per batch")
    k: Int | None = Field(None, ge=2, description="pk sampler: samples per identity in a batch")
    workers: Int = Field(0, ge=0, description="loader worker processes")
    subset: Int | None = Field(None, ge=1, description="use only this many training samples")
    normalize: bool = Field(True, description="zero mean / unit variance from training-split statistics")
    split: SplitConfig = Field(default_factory=SplitConfig)
    augment: list[AugmentSpec] = Field(default_factory=list, description="per-sample transforms")
    batch_augment: list[AugmentSpec] = Field(default_factory=list, description="batch transforms on device")
    forbid: list[str] = Field(default_factory=list, description="transforms that would change labels")
    whiten: Literal["pca", "zca"] | None = Field(None, description="decorrelate flat inputs")
    whiten_eps: float = Field(1e-3, ge=0.0, description="added to the covariance eigenvalues when whitening")
    fold: FoldConfig | None = Field(None, description="k-fold split: train on k-1 folds, validate on one")
    resample: ResampleConfig | None = Field(None, description="train on n draws with replacement from the "
                                            "training split (bagging/boosting members, T4/T5)")
    shapes: ShapesConfig | None = Field(None, description="options of the shapes data set (defaults if null)")
    faces: FacesConfig | None = Field(None, description="options of the faces data set (defaults if null)")
    coco: CocoConfig | None = Field(None, description="options of the coco data set (defaults if null)")
    segmentation: SegmentationConfig | None = Field(None, description="options of the segmentation data set")
    text: TextConfig | None = Field(None, description="options of the text data set (defaults if null)")
    imbalance: float | None = Field(None, gt=0.0, le=1.0, description="keep this fraction of later classes")
    skip_corrupt: bool = Field(False, description="skip unreadable images instead of failing: each is replaced by "
                               "the next readable file and named at the end of the epoch")
    eval_resize: Literal["crop", "squash"] = Field(
        "crop", description="how an image becomes the output size where no random crop is drawn (validation, test): "
        "crop resizes it to cover image_size / eval_crop_pct keeping its aspect ratio and centre-crops "
        "(timm, torchvision); squash resizes it to image_size")
    eval_crop_pct: float = Field(0.875, gt=0.0, le=1.0, description="eval_resize=crop: the centre crop's share "
                                 "of the resized image (timm's crop_pct; 224 of 256 is 0.875)")
    stats_sample: Int = Field(128, ge=1, description="files read at start-up (a seeded random sample): their "
                              "headers give the channel count and output size, their pixels the normalization "
                              "statistics; cached, keyed by the folder's file names")
    urls: str | None = Field(None, description="shards: WebDataset tar shards, a brace pattern of local paths "
                             "or URLs (data/train-{000000..000009}.tar)")
    epoch_samples: Int | None = Field(None, ge=1, description="shards streamed from URLs (http://, https://, "
                                      "file://): samples per epoch over all ranks, which fixes the steps per epoch "
                                      "(a stream's length is not known before it is read)")
    shuffle_buffer: Int = Field(0, ge=0, description="shards streamed from URLs: samples held to shuffle within "
                                "a worker's stream (0: the shard order alone, which is permuted per epoch)")
    max_pixels: Int = Field(89_478_485, ge=1, description="largest image read, in pixels (height x width), "
                            "checked from the file's header before it is decoded; a larger one is an error. The "
                            "default is PIL's own Image.MAX_IMAGE_PIXELS (about 9459 x 9459, 256 MiB as RGB), "
                            "above which PIL only warns and which a 329 KB PNG can claim")
    follow_links: bool = Field(False, description="read image files that lie outside their data set's folder: "
                               "symbolic links leaving data.root (folder) and COCO file_name values leaving "
                               "the images folder ('../', absolute paths)")

    @field_validator("batch_size")
    @classmethod
    def _batch_positive(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 or 'full'")
        return v

    @field_validator("image_size")
    @classmethod
    def _size_positive(cls, v):
        sizes = (v,) if isinstance(v, int) else (v or ())
        if any(s < 1 for s in sizes):
            raise ValueError("must be >= 1")
        return v

    @model_validator(mode="after")
    def _pk_batches(self):
        if self.sampler != "pk":
            if self.p is not None or self.k is not None:
                raise ValueError("p, k: they shape the pk sampler's batches; set sampler: pk")
            return self
        if self.p is None or self.k is None:
            raise ValueError("sampler: pk needs p (identities per batch) and k (samples per identity)")
        if "batch_size" not in self.model_fields_set:
            self.batch_size = self.p * self.k  # a P x K batch
        elif self.batch_size != self.p * self.k:
            raise ValueError(f"batch_size: {self.batch_size} with sampler pk must be p x k = {self.p * self.k} "
                             f"(or left out)")
        return self

    @model_validator(mode="after")
    def _split_sum(self):
        if self.split.val + self.split.test >= 1.0:
            raise ValueError(
                f"split: val + test must be < 1 so that some training data is left "
                f"(got {self.split.val} + {self.split.test})"
            )
        return self


# ---------------------------------------------------------------------------------------- model
class ModelConfig(Section):
    name: str = Field("cnn", description="architecture in the registry (`trainlab models`)")
    width: Int = Field(32, ge=1, description="channels of the first block / hidden units")
    depth: Int = Field(2, ge=1, description="number of blocks / hidden layers")
    activation: str = Field("auto", description="auto (the architecture's own), relu, leaky_relu, prelu, "
                            "sigmoid, tanh, gelu, maxout, ... (`trainlab models --show NAME`)")
    norm: Literal["auto", "batch", "layer", "group", "none"] = Field(
        "auto", description="normalization layer; auto is the architecture's own (batch for conv nets)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability before the head")
    bias_init: float | None = Field(None, description="constant initial value of every bias")
    init: Literal["default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"] = Field(
        "default", description="weight initialization of conv and linear layers (I1, I2); default keeps "
        "the architecture's own")
    init_fan: Literal["in", "avg"] = Field(
        "in", description="xavier variance 1/D_in (in, as in the notes) or Glorot's 2/(D_in + D_out) (avg)")
    zero_init_residual: bool = Field(False, description="zero the last norm of each residual branch")
    weights: str | None = Field(None, description="local weights file to start from (.safetensors, a "
                                "trainlab checkpoint, or a .pt/.pth state dict)")
    options: dict[str, Any] = Field(default_factory=dict, description="architecture-specific options")
    embed_dim: Int = Field(64, ge=2, description="embedding task: size of the L2-normalised embedding (the "
                           "architecture's last layer projects to it)")


# ----------------------------------------------------------------------------------------- loss
class LossConfig(Section):
    name: str = Field("cross_entropy", description="loss in the registry")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    ignore_index: int | None = Field(None, ge=0, description="target value that adds nothing to the loss (unlabelled "
                                     "pixels); default: the data set's (data.segmentation.ignore_index)")
    class_weights: list[Annotated[float, Field(gt=0.0)]] | None = Field(None, min_length=2, description="per-class loss weights, class 0 "
                                              "first (rare classes weigh more)")
    gamma: float = Field(2.0, ge=0.0, description="focal: focusing exponent γ of (1 − p_t)^γ (0: cross-entropy)")
    alpha: float | None = Field(0.25, ge=0.0, le=1.0, description="focal: weight α of the positive class "
                                "(1 − α for negatives); null: unweighted")
    margin: float = Field(0.2, ge=0.0, description="triplet: margin between positive and negative distances")
    mining: Literal["batch_all", "batch_hard", "semi_hard"] = Field(
        "batch_hard", description="triplet: which triplets of a batch count (all with positive loss, the hardest "
        "positive and negative per anchor, or negatives within the margin)")
    distance: Literal["euclidean", "squared", "cosine"] = Field(
        "euclidean", description="triplet and embedding evaluation: distance between embeddings")
    l1: float = Field(0.0, ge=0.0, description="L1 penalty coefficient (sparsity)")
    l2: float = Field(0.0, ge=0.0, description="coupled L2 penalty coefficient, added to the loss")
    beta: float = Field(1.0, ge=0.0, description="smooth_l1: |error| below which the loss is quadratic "
                        "(0: absolute error)")
    pos_weight: Annotated[float, Field(gt=0.0)] | list[Annotated[float, Field(gt=0.0)]] | None = Field(
        None, description="bce: weight p of the positive terms, one value or one per output (null: 1)")
    weights: dict[str, Annotated[float, Field(ge=0.0)]] = Field(
        default_factory=dict, description="multitask: weight of each head's loss by head name (L6: "
        "Loss1 + λ·Loss2 + γ·Loss3); heads not named weigh 1")
    uncertainty: bool = Field(False, description="multitask: learn one log-variance s_i per head and minimise "
                              "Σ exp(−s_i)·w_i·L_i + s_i (Kendall et al. 2018)")


class HeadConfig(Section):
    """One head of the multitask task (K7, M14): what it predicts and the loss it trains with."""

    name: str = Field(..., pattern=r"^[a-z][a-z0-9]*$", description="the target it predicts, one the data set "
                      "provides (shapes: class, count, center, overlap); names its metrics (val_<name>_...)")
    kind: Literal["multiclass", "binary", "regression"] = Field(..., description="multiclass: softmax over "
                                                                "classes; binary: one sigmoid logit; regression: "
                                                                "real values")
    loss: str | None = Field(None, description="loss in the registry (default: cross_entropy, bce, mse by kind)")
    pos_weight: Annotated[float, Field(gt=0.0)] | None = Field(None, description="bce: weight of the positive "
                                                              "terms of this head (default: loss.pos_weight)")
    beta: float | None = Field(None, ge=0.0, description="smooth_l1: this head's beta (default: loss.beta)")


# ---------------------------------------------------------------------------------------- optim
class SwitchConfig(Section):
    """Adam → SGD during training (O5): at a fixed epoch, or when the SWATS criterion fires."""

    to: str = Field("sgd", description="optimizer to switch to")
    at_epoch: Int | None = Field(None, ge=1, description="switch before this epoch (1-based); with auto, the latest epoch")
    auto: bool = Field(False, description="switch when the SWATS criterion fires (Keskar & Socher 2017)")
    lr: float | None = Field(
        None, gt=0.0, description="learning rate after the switch (null: the SWATS estimate of the Adam step)"
    )
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="momentum of the optimizer switched to")
    tolerance: float = Field(
        0.05, gt=0.0, lt=1.0,
        description="auto: switch when |Λ_k − γ_k| < tolerance · Λ_k (relative form of SWATS's ε)",
    )
    min_steps: Int = Field(50, ge=2, description="auto: Adam steps measured before the criterion may fire")

    @model_validator(mode="after")
    def _when(self):
        if self.at_epoch is None and not self.auto:
            raise ValueError("set at_epoch: N or auto: true")
        return self


class OptimConfig(Section):
    """Optimizer (O1–O4), weight decay (L4) and the optional Adam → SGD switch (O5)."""

    name: str = Field("adam", description="optimizer in the registry: gd, sgd, adagrad, adadelta, rmsprop, adam, adamw")
    lr: float = Field(1e-3, gt=0.0, description="base learning rate (Adadelta: 1.0 is Zeiler's setting)")
    weight_decay: float = Field(
        0.0, ge=0.0, description="L2 weight decay: coupled (added to the gradient), decoupled for adamw"
    )
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd/gd/rmsprop momentum ρ (v = ρv + g)")
    nesterov: bool = Field(False, description="sgd/gd: Nesterov momentum (needs momentum > 0, dampening 0)")
    dampening: float = Field(0.0, ge=0.0, lt=1.0, description="sgd/gd: v = ρv + (1 − dampening)·g")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam/adamw (β1, β2) of the two moments")
    eps: float = Field(1e-8, gt=0.0, description="term added to the denominator of adaptive methods")
    alpha: float = Field(0.99, gt=0.0, lt=1.0, description="RMSProp smoothing constant of the squared gradient")
    rho: float = Field(0.9, gt=0.0, lt=1.0, description="Adadelta decay of its two running averages")
    centered: bool = Field(False, description="rmsprop: divide by the variance, not the raw second moment")
    amsgrad: bool = Field(False, description="adam/adamw: keep the maximum second moment (AMSGrad)")
    decay_norm_and_bias: bool = Field(False, description="also apply weight decay to biases and norms")
    switch: SwitchConfig | None = Field(None, description="switch optimizer during training (Adam → SGD)")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v):
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


# ------------------------------------------------------------------------------------- schedule
class WarmupConfig(Section):
    """LR warm-up that multiplies any schedule during the first steps (O6)."""

    epochs: float = Field(0.0, ge=0.0, description="warm-up length in epochs")
    steps: Int = Field(0, ge=0, description="warm-up length in steps (wins over epochs)")
    mode: Literal["linear", "exponential"] = Field(
        "linear", description="ramp of the multiplier from start_factor to 1: linear or geometric"
    )
    start_factor: float = Field(0.01, gt=0.0, le=1.0, description="multiplier of the LR at step 0")


class ScheduleConfig(Section):
    """LR schedule (O6). LR values here are absolute; the schedule multiplies optim.lr by their ratio."""

    name: str = Field("none", description="schedule in the registry")
    step_size: Int = Field(10, ge=1, description="step: epochs between decays")
    gamma: float | None = Field(
        None, gt=0.0,
        description="decay factor (default: step/multistep/plateau 0.1, exponential 0.9 per epoch, "
        "cyclic exp_range: the cycle height falls to 1% by the end of the run)",
    )
    milestones: list[Int] = Field(default_factory=list, description="multistep: epochs where LR decays")
    min_lr: float = Field(0.0, ge=0.0, description="floor of cosine, cosine_restarts and plateau")
    # cyclical and one-cycle
    max_lr: float | None = Field(None, gt=0.0, description="cyclic/onecycle: peak LR (default optim.lr)")
    base_lr: float | None = Field(
        None, gt=0.0, description="cyclic: lower bound of the cycle (default max_lr / 4, Smith's 3-4x rule)"
    )
    step_size_up: Int | None = Field(
        None, ge=1, description="cyclic: optimizer steps from base_lr to max_lr (default 2 epochs)"
    )
    step_size_down: Int | None = Field(None, ge=1, description="cyclic: steps from max_lr back (default step_size_up)")
    mode: Literal["triangular", "triangular2", "exp_range", "cosine"] = Field(
        "triangular", description="cyclic wave: triangular, triangular2 (halve each cycle), exp_range, cosine"
    )
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="onecycle: fraction of the run spent rising")
    div_factor: float = Field(25.0, ge=1.0, description="onecycle: starting LR = max_lr / div_factor")
    final_div_factor: float = Field(1e4, ge=1.0, description="onecycle: final LR = starting LR / final_div_factor")
    anneal: Literal["cos", "linear"] = Field("cos", description="onecycle: shape of both phases")
    cycle_momentum: bool = Field(True, description="onecycle: cycle SGD momentum / Adam beta1 against the LR")
    base_momentum: float = Field(0.85, ge=0.0, lt=1.0, description="onecycle: momentum at the LR peak")
    max_momentum: float = Field(0.95, ge=0.0, lt=1.0, description="onecycle: momentum at the start and end")
    # warm restarts (SGDR)
    T_0: float | None = Field(
        None, gt=0.0, description="cosine_restarts: epochs of the first cycle (default: 3 cycles fill the run)"
    )
    T_mult: Int = Field(2, ge=1, description="cosine_restarts: each cycle is T_mult times longer")
    # on plateau
    monitor: str = Field("val_loss", description="plateau: metric of the epoch record to watch")
    patience: Int = Field(5, ge=0, description="plateau: epochs without improvement before decaying")
    threshold: float = Field(1e-4, ge=0.0, description="plateau: relative improvement that counts")
    cooldown: Int = Field(0, ge=0, description="plateau: epochs to wait after a decay")
    warmup: WarmupConfig | None = Field(None, description="warm-up composed with the schedule")

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v):
        if any(m < 1 for m in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("must be increasing epoch numbers >= 1")
        return v

    @model_validator(mode="after")
    def _momentum_order(self):
        if self.base_momentum > self.max_momentum:
            raise ValueError(
                f"base_momentum ({self.base_momentum}) must be <= max_momentum ({self.max_momentum})"
            )
        return self


# ---------------------------------------------------------------------------------------- train
class EarlyStopConfig(Section):
    monitor: str | None = Field(None, description="metric of the epoch record to watch (default: the task's: "
                                "val_loss for classification, val_miou for segmentation, val_map for detection)")
    patience: Int = Field(5, ge=1, description="epochs without improvement before stopping")
    mode: Literal["auto", "min", "max"] = "auto"
    min_delta: float = Field(0.0, ge=0.0)
    restore_best: bool = Field(True, description="evaluate with the best weights at the end")


class EmaConfig(Section):
    decay: float = Field(0.999, gt=0.0, lt=1.0)
    warmup: bool = Field(True, description="bias-correct the average early in training")
    evaluate: bool = Field(True, description="validate and test with the averaged weights")


class TrainConfig(Section):
    epochs: Int = Field(10, ge=1)
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N")
    amp: bool = Field(True, description="bf16 autocast where the device supports it")
    grad_clip: float | None = Field(None, gt=0.0, description="clip the global gradient norm to this")
    grad_clip_value: float | None = Field(None, gt=0.0, description="clip each gradient to +-this")
    accumulate: Int = Field(1, ge=1, description="batches per optimizer step")
    early_stop: EarlyStopConfig | None = Field(default_factory=EarlyStopConfig)
    ema: EmaConfig | None = None
    compile: bool = False
    checkpoint_every_steps: Int | None = Field(None, ge=1)
    checkpoint_every_minutes: float | None = Field(None, gt=0.0, description="also save last.safetensors at "
                                                   "the first step after this many minutes since the last save "
                                                   "(bounds the work a hard kill loses on long epochs)")
    threads: Int | None = Field(None, ge=1, description="torch CPU threads (default for a new run on the CPU: "
                                "torch's count, lowered to the cores other processes leave idle; written into "
                                "the run's recipe.yaml so that a resume uses the same)")
    progress: bool = Field(True, description="live progress bar when the output is a terminal")
    sync_batchnorm: bool = Field(False, description="under torchrun (T7): BatchNorm statistics over the global "
                                 "batch of every rank instead of each rank's own piece (no effect in one process)")
    bagging: Int = Field(0, ge=0, description="T4: train this many members, each on a bootstrap of the "
                         "training split, in <run.dir>/members/member-K; evaluate their averaged probabilities")
    boosting: Int = Field(0, ge=0, description="T5: train up to this many members in sequence (SAMME), each on "
                          "a draw weighted by the previous members' errors; combined by their alphas")
    snapshots: bool = Field(False, description="T4: with schedule cosine_restarts, save the weights at the end "
                            "of each cycle (checkpoints/snapshot-K) and evaluate them as an ensemble")

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v


# ------------------------------------------------------------------------------------ run, eval
class RunConfig(Section):
    dir: str | None = Field(None, description="run directory (default runs/<name>-<timestamp>)")
    tensorboard: bool = True
    plots: bool = True


class DistillConfig(Section):
    """Knowledge distillation (T8, Hinton et al. 2015): train on a finished run's soft targets."""

    teacher: str = Field(..., min_length=1, description="run directory of the teacher (a finished classification "
                         "run with the same classes); its best checkpoint, frozen, in eval mode")
    temperature: float = Field(4.0, gt=0.0, description="softmax temperature T of teacher and student; the soft "
                               "loss is scaled by T² so its gradients keep their size")
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the soft (teacher) loss; 1 - alpha weighs the "
                         "hard-label loss")


class EvalConfig(Section):
    topk: Int = Field(5, ge=1, description="k of the top-k accuracy")
    # detection post-processing (evaluation and prediction)
    score_threshold: float = Field(0.05, ge=0.0, lt=1.0, description="detection: keep (box, class) pairs scoring "
                                   "above this (COCO evaluation wants a low one; predict may raise it)")
    nms_iou: float = Field(0.5, gt=0.0, le=1.0, description="detection: class-aware NMS drops a box overlapping a "
                           "better one of its class by more than this IoU")
    max_detections: Int = Field(100, ge=1, description="detection: most detections kept per image")
    # embedding evaluation (open set: gallery and probes of identities unseen in training)
    knn_k: Int = Field(5, ge=1, description="embedding: neighbours that vote a probe's identity (k-NN, E5)")
    gallery: float = Field(0.5, gt=0.0, lt=1.0, description="embedding: fraction of each identity's evaluation "
                           "samples enrolled in the gallery; the rest are probes")
    pairs: Int = Field(20000, ge=10, description="embedding: most verification pairs (all same-identity pairs up "
                       "to half of it, as many different-identity pairs)")
    # bias/variance reading (E6): report.md and `trainlab evaluate --bias-variance`
    target_error: float = Field(0.0, ge=0.0, lt=1.0, description="bias/variance: the error thought reachable "
                                "(human-level or Bayes error, 1 − score); avoidable bias is train error minus this")
    bias_variance_margin: float = Field(0.02, gt=0.0, lt=1.0, description="bias/variance: avoidable bias (train "
                                        "error − target) or variance (val error − train error) above this is high")


class DoctorConfig(Section):
    """The training doctor (X1-X9): monitors, the rules' thresholds, and the opt-in remedies.

    docs/doctor.md explains every threshold with the reasoning of the notes behind its default.
    """

    enabled: bool = Field(True, description="monitor the run and write doctor.json")
    every: Int = Field(10, ge=1, description="sample the monitors every N optimizer steps (and the first of each epoch)")
    auto: bool = Field(False, description="let the doctor apply remedies: rollback on NaN, stop on overfitting, "
                                          "LR decay / Adam->SGD on a plateau")
    input_batches: Int = Field(3, ge=0, description="summarize the net's input over this many first batches")
    max_samples: Int = Field(5000, ge=100, description="after this many samples (and each further as many) "
                                                       "the sampling interval doubles, bounding doctor.json")
    # X1 exploding gradients
    explode_factor: float = Field(50.0, gt=1.0, description="a global gradient norm this many times the median "
                                                            "of the previous samples is an explosion")
    explode_window: Int = Field(10, ge=3, description="previous samples whose median is the explosion reference")
    grad_norm_max: float = Field(1e4, gt=0.0, description="a global gradient norm above this is an explosion")
    # X2 vanishing gradients
    vanish_ratio: float = Field(1e-3, gt=0.0, lt=1.0, description="a first layer whose gradient norm is below "
                                                                  "this fraction of the last layer's vanishes")
    # X3 dead ReLU
    dead_fraction: float = Field(0.25, gt=0.0, le=1.0, description="fraction of never-positive units that "
                                                                   "makes a layer dead")
    # X4 / X5 fit quality
    overfit_patience: Int = Field(3, ge=1, description="epochs the validation loss must stay up after its minimum")
    overfit_rise: float = Field(0.1, ge=0.0, description="relative rise of the validation loss above its minimum")
    overfit_score_drop: float = Field(0.02, ge=0.0, le=1.0, description="fall of the validation score below its "
                                      "maximum (absolute) that counts, for tasks judged by their score, not their "
                                      "validation loss (embedding: val_rank1)")
    underfit_accuracy: float = Field(0.8, ge=0.0, le=1.0, description="final training accuracy below this is "
                                                                      "under-fitting")
    underfit_loss_ratio: float = Field(0.5, gt=0.0, le=1.0, description="final training loss above this "
                                                                        "fraction of the initial loss is under-fitting")
    variance_gap: float = Field(0.1, gt=0.0, le=1.0, description="train minus validation accuracy that is high "
                                                                 "variance")
    # X6 learning rate
    lr_high_ratio: float = Field(0.1, gt=0.0, description="median update/weight ratio above which the LR is too high")
    lr_low_ratio: float = Field(1e-4, gt=0.0, description="median update/weight ratio below which the LR is too low")
    diverge_factor: float = Field(2.0, gt=1.0, description="a loss this many times the initial loss has diverged")
    oscillation_rises: Int = Field(2, ge=1, description="epochs whose training loss rose by >10% that make it "
                                                        "oscillate")
    # X7 plateau
    plateau_patience: Int = Field(3, ge=1, description="epochs without training-loss progress that make a plateau")
    plateau_delta: float = Field(0.01, ge=0.0, lt=1.0, description="relative improvement that counts as progress")
    # X8 the data
    input_mean_max: float = Field(1.0, gt=0.0, description="largest |mean| of an input channel the net should see")
    input_std_min: float = Field(0.1, ge=0.0, description="smallest input channel standard deviation")
    input_std_max: float = Field(5.0, gt=0.0, description="largest input channel standard deviation")
    imbalance_ratio: float = Field(4.0, gt=1.0, description="largest / smallest training class count that is "
                                                            "imbalanced")
    small_dataset_per_class: Int = Field(30, ge=1, description="fewer training samples per class is a small dataset")
    # L6 multi-task loss weights
    head_dominance: float = Field(10.0, gt=1.0, description="multitask: a head whose weighted loss's gradient on "
                                  "the shared trunk is this many times every other head's dominates the trunk")
    # X9 remedies (doctor.auto)
    max_rollbacks: Int = Field(3, ge=0, description="rollbacks on NaN/inf before the run is stopped")
    rollback_lr_factor: float = Field(0.5, gt=0.0, lt=1.0, description="LR multiplier at each rollback")
    snapshot_every: Int = Field(5, ge=1, description="healthy sampled steps between in-memory snapshots")
    plateau_lr_factor: float = Field(0.1, gt=0.0, lt=1.0, description="LR multiplier on a plateau")
    switch_to_sgd: bool = Field(True, description="on the first plateau under Adam, switch to SGD with momentum")
    switch_lr: float | None = Field(None, gt=0.0, description="SGD base LR after the switch (default 10x Adam's)")

    @model_validator(mode="after")
    def _ranges(self):
        if self.lr_low_ratio >= self.lr_high_ratio:
            raise ValueError(f"lr_low_ratio ({self.lr_low_ratio}) must be below lr_high_ratio ({self.lr_high_ratio})")
        if self.input_std_min >= self.input_std_max:
            raise ValueError(f"input_std_min ({self.input_std_min}) must be below input_std_max ({self.input_std_max})")
        return self


class Recipe(Section):
    name: str = Field("run", min_length=1)
    seed: Int = Field(0, ge=0, le=2**63 - 1)
    task: str = "classification"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    doctor: DoctorConfig | None = Field(default_factory=DoctorConfig)
    distill: DistillConfig | None = Field(None, description="knowledge distillation from a teacher run (null: off)")
    heads: list[HeadConfig] = Field(default_factory=list, description="multitask task: the heads on the shared "
                                    "trunk, each with its target, kind and loss")

    @model_validator(mode="after")
    def _ensembles(self):
        train = self.train
        if train.bagging and train.boosting:
            raise ValueError("train.bagging and train.boosting: choose one way to train the members")
        if (train.bagging or train.boosting) and self.task != "classification":
            raise ValueError(f"train.bagging/boosting: members are combined by class probabilities; task "
                             f"{self.task!r} is not classification")
        if train.snapshots and self.schedule.name != "cosine_restarts":
            raise ValueError(f"train.snapshots: a snapshot is taken at the end of each warm-restart cycle; set "
                             f"schedule.name=cosine_restarts (got {self.schedule.name!r})")
        if train.snapshots and self.task != "classification":
            raise ValueError(f"train.snapshots: snapshots are combined by class probabilities; task {self.task!r} "
                             "is not classification")
        return self

    @model_validator(mode="after")
    def _heads(self):
        names = [h.name for h in self.heads]
        if self.task != "multitask":
            if self.heads or self.loss.weights or self.loss.uncertainty:
                raise ValueError(f"heads, loss.weights, loss.uncertainty: only the multitask task has heads "
                                 f"(task {self.task!r}); remove them")
            return self
        if not self.heads:
            raise ValueError("heads: the multitask task needs at least one head ({name, kind}, e.g. "
                             "{name: class, kind: multiclass})")
        if len(set(names)) != len(names):
            raise ValueError(f"heads: each head name may appear once (got {', '.join(names)})")
        unknown = [k for k in self.loss.weights if k not in names]
        if unknown:
            raise ValueError(f"loss.weights: {', '.join(map(repr, unknown))} names no head (heads: {', '.join(names)})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------ loading recipes
# A recipe is small: these bounds are far above any real one and far below what hurts. PyYAML's
# composer recurses once per nesting level (a RecursionError near 300), and an alias is a
# reference, so a few lines of nested aliases stand for 10^9 values that validation, a deep copy
# or an error message would each expand (76 s, 8.7 GB and a 2.1 GB error line, measured).
YAML_MAX_DEPTH = 50
YAML_MAX_VALUES = 100_000


class YamlBoundError(yaml.MarkedYAMLError):
    """YAML that parses but is refused for its shape: too deep, or aliases that expand too far."""


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Raise YamlBoundError if the node graph, with every alias expanded, is cyclic, deeper than
    YAML_MAX_DEPTH or holds more than YAML_MAX_VALUES values beyond those written out.

    An alias is the same node object as its anchor, so the graph is a DAG (or has a cycle, from an
    alias inside its own anchor): each node's expanded size and depth are computed once, from its
    children's, in one iterative depth-first pass (no recursion, linear in the written nodes)."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            sizes = [done[id(c)] for c in _yaml_children(node)]
            values = 1 + sum(v for v, _ in sizes)
            depth = 1 + max((d for _, d in sizes), default=0)
            if depth > YAML_MAX_DEPTH:
                raise YamlBoundError(problem=f"aliases nest the values deeper than {YAML_MAX_DEPTH} levels",
                                     problem_mark=node.start_mark)
            if values > YAML_MAX_VALUES and values > len(done) + 1:
                raise YamlBoundError(problem=f"aliases expand this to more than {YAML_MAX_VALUES} values (an alias "
                                             "bomb?); write the values out", problem_mark=node.start_mark)
            done[key] = (values, depth)
        elif key in on_path:
            raise YamlBoundError(problem="an alias refers to a value that contains it (a cycle)",
                                 problem_mark=node.start_mark)
        elif key not in done:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _yaml_children(node))


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded: nesting depth (counted while composing, before Python's
    own recursion limit is near), the values that aliases expand to, and integers of more digits
    than Python converts (a ValueError, not a YAML error, in PyYAML)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise YamlBoundError(problem=f"nested deeper than {YAML_MAX_DEPTH} levels",
                                     problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise YamlBoundError(problem=f"integer of {len(node.value)} digits; Python reads at most 4300",
                                 problem_mark=node.start_mark) from None


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` within the bounds of :class:`BoundedLoader` (YamlBoundError past them)."""
    return yaml.load(text, Loader=BoundedLoader)


def builtin_recipes() -> dict[str, Path]:
    """Built-in recipe names → files shipped inside the package."""
    folder = resources.files("trainlab") / "recipes"
    return {p.name[:-5]: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe file, used by `trainlab recipes`."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def read_recipe_dict(source: str | Path | None) -> dict[str, Any]:
    """The raw YAML mapping of a built-in recipe name or a file path (default: digits-cnn)."""
    source = "digits-cnn" if source is None else source
    builtins = builtin_recipes()
    text_source = str(source)
    if text_source in builtins:
        path = builtins[text_source]
    else:
        path = Path(text_source)
        if not path.exists():
            if path.suffix in (".yaml", ".yml") or "/" in text_source:
                raise RecipeError(f"recipe file {text_source!r} does not exist")
            near = closest(text_source, builtins)
            hint = f"did you mean {', '.join(repr(n) for n in near)}? " if near else ""
            if "." in text_source and not near:
                hint = f"an override needs key=value, e.g. {text_source}=VALUE; "
            raise RecipeError(
                f"unknown recipe {text_source!r}; {hint}built-in: {', '.join(sorted(builtins))} "
                "(or give a path to a YAML file)"
            )
        if path.is_dir():
            raise RecipeError(f"recipe {text_source!r} is a directory, expected a YAML file")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        kind = "YAML refused" if isinstance(err, YamlBoundError) else "YAML syntax error"
        raise RecipeError(f"recipe file {path}:{where}: {kind}: {problem}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"recipe file {path} is not UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file {path}: expected a mapping of sections, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.01"`` → ``(["optim", "lr"], 0.01)``; the value is parsed as YAML."""
    if "=" not in text:
        raise RecipeError(f"override {show(text)}: expected key=value, e.g. optim.lr=0.01")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"override {show(text)}: empty key part in {show(key)}")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except YamlBoundError as err:
        raise RecipeError(f"override {key.strip()}: value {show(raw)} refused: {err.problem}") from None
    except yaml.YAMLError:
        raise RecipeError(f"override {show(text)}: value {show(raw)} is not valid YAML") from None
    # YAML reads "nan"/"inf" as strings; take them as the floats the user meant so that the
    # validator rejects them by name instead of reporting a type mismatch.
    if isinstance(value, str) and value.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        value = float(value)
    return parts, value


def override_pairs(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """Overrides as a mapping of dotted keys to values: ``["optim.lr=0.01"]`` (values parsed as
    YAML, see :func:`parse_override`) or a mapping of dotted keys (copied); None gives ``{}``."""
    if isinstance(overrides, dict):
        return dict(overrides)
    pairs: dict[str, Any] = {}
    for text in overrides or []:
        parts, value = parse_override(text)
        pairs[".".join(parts)] = value
    return pairs


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested mapping, creating sections that were absent or null."""
    for dotted, value in overrides.items():
        parts = dotted.split(".") if isinstance(dotted, str) else list(dotted)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise RecipeError(
                    f"override {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is a value "
                    f"({child!r}), not a section"
                )
            node = child
        node[parts[-1]] = value
    return data


def _fields_at(loc: tuple) -> list[str]:
    """Known field names of the section at ``loc`` (for suggesting a misspelt key)."""
    model: Any = Recipe
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            break
        ann = field.annotation
        sub = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, Section)]
        if not sub:
            break
        model = sub[0]
    return list(model.model_fields)


def _format_validation(err: ValidationError, data: dict[str, Any]) -> str:
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-"))))
    # Pydantic reports union members as extra location parts ("int", "literal['full']"): drop them.
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("int", "str", "float", "bool"))))
    field = ".".join(str(p) for p in loc) or "recipe"
    kind = first["type"]
    if kind == "extra_forbidden":
        known = _fields_at(loc[:-1])
        near = closest(str(loc[-1]), known)
        hint = f"; did you mean {'.'.join(map(str, loc[:-1] + (near[0],)))}?" if near else ""
        return f"{field}: unknown key{hint} (known here: {', '.join(known)})"
    value = first.get("input")
    msg = first["msg"].replace("Value error, ", "")
    if isinstance(value, float) and not math.isfinite(value):
        msg = "must be a finite number"
    shown = "" if isinstance(value, dict) else f" (got {show(value)})"
    return f"{field}: {msg}{shown}"


def validate_recipe(data: dict[str, Any]) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(_format_validation(err, data)) from None


def load_recipe(
    source: str | Path | Recipe | dict | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> Recipe:
    """Read, override and validate a recipe.

    ``source`` is a built-in name, a YAML path, a dict or a Recipe; ``overrides`` is either a list of
    ``"key=value"`` strings (YAML values) or a mapping of dotted keys to Python values.
    """
    if isinstance(source, Recipe):
        data = source.to_dict()
    elif isinstance(source, dict):
        data = yaml.safe_load(yaml.safe_dump(source))  # deep copy of plain data
    else:
        data = read_recipe_dict(source)
    if overrides:
        data = apply_overrides(data, override_pairs(overrides))
    return validate_recipe(data)


def check_names(recipe: Recipe) -> None:
    """Check every registry name in the recipe before anything is built or written."""
    from .registry import DATASETS, LOSSES, MODELS, OPTIMIZERS, SCHEDULES, TASKS

    TASKS.get(recipe.task, "task")
    DATASETS.get(recipe.data.name, "data.name")
    MODELS.get(recipe.model.name, "model.name")
    LOSSES.get(recipe.loss.name, "loss.name")
    OPTIMIZERS.get(recipe.optim.name, "optim.name")
    SCHEDULES.get(recipe.schedule.name, "schedule.name")
    if recipe.optim.switch is not None:
        OPTIMIZERS.get(recipe.optim.switch.to, "optim.switch.to")
