"""The Task interface: everything that differs between problem types.

The trainer keeps what every problem shares (the loop, accumulation, clipping, schedules, EMA,
checkpoints, callbacks, exact resume) and asks the task for the rest:

    forming a batch     collate(samples), order(n, seed, epoch, shuffle), to_device(batch, device)
    one step            step(model, batch) -> (outputs, loss); a model may take targets in training
    metrics             metrics: name -> "max" | "min" (declared, never guessed from the name),
                        train_meter / train_update / train_summary, eval_meter, quality
    evaluation          eval_splits(split), evaluate(model, loaders, split, device, amp)
    predictions         predict(outputs), prediction_lines(predictions, classes)
    what a user sees    table_columns(), curves(), figures(summary), report_sections(summary),
                        describe_metrics(metrics)

A metric named in a recipe (``train.early_stop.monitor``, ``schedule.monitor``, kfold's
``--metric``) is looked up in ``metrics``; its direction decides what "better" means.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import RecipeError
from ..registry import TASKS


def scalar_metrics(metrics: dict[str, Any] | None) -> dict[str, int | float]:
    """The numeric entries of a metrics dict (``eval_meter().compute()``, a summary's val/test):
    drops structures such as the confusion matrix and per-class tables, and booleans."""
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


EVAL_BATCH = 512  # samples per evaluation batch for tasks whose outputs are small (see eval_batch_size)


def check_class_weights(weights: list[float] | None, classes: list[str]) -> None:
    """``loss.class_weights`` gives one weight per class the loss sees (RecipeError otherwise)."""
    if weights is not None and len(weights) != len(classes):
        shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
        raise RecipeError(f"loss.class_weights: {len(weights)} weights for {len(classes)} classes ({shown})")


@dataclass
class Figure:
    """One figure a task asks the report to draw into ``plots/<name>.png``.

    kind ``matrix``: ``data["matrix"]`` (rows true, columns predicted) with ``data["labels"]``;
    kind ``bars``: ``data["values"]`` per ``data["labels"]``, on a 0..1 axis;
    kind ``scatter``: points ``data["x"]``, ``data["y"]`` coloured by ``data["labels"]`` (int), named by
    ``data["names"]``; kind ``curve``: ``data["x"]``, ``data["y"]`` with axis labels, ``logx`` and
    vertical ``marks``; kind ``histograms``: counts per ``data["series"]`` name over ``data["edges"]``.
    """

    name: str
    kind: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)


class TrainMeter:
    """Running training loss and one count (correct predictions, pixels...) without a device sync
    per step; tasks that need more keep a richer meter with the same state()/load()."""

    def __init__(self):
        self.loss_sum: torch.Tensor | float = 0.0
        self.correct: torch.Tensor | int = 0
        self.n = 0

    def state(self) -> dict[str, Any]:
        return {"loss_sum": float(self.loss_sum), "correct": float(self.correct), "n": self.n}

    def load(self, state: dict[str, Any]) -> None:
        self.loss_sum, self.correct, self.n = state["loss_sum"], state["correct"], int(state["n"])


class Task(ABC):
    """What the engine needs from a problem type (see the module docstring)."""

    name = "task"
    monitor = "val_loss"  # default metric for early stopping and best checkpoints
    train_metrics: tuple[str, ...] = ("loss",)  # keys of train_summary()
    val_metrics: tuple[str, ...] = ("loss",)  # scalar keys of eval_meter().compute()
    # Direction of every metric the task reports (bare names; train_/val_ records share them).
    metrics: Mapping[str, str] = {"loss": "min"}
    # The headline score in [0, 1], higher is better, that the doctor judges fit by (accuracy,
    # mIoU); None where no such score says "under-fitting" (next-character accuracy).
    quality: str | None = None
    quality_words = "accuracy"  # how a message names it
    quality_judges_fit = False  # whether a low quality means under-fitting (doctor.underfit_accuracy)
    labels_per_sample = False  # one class per sample: per-class counts and rules apply (the doctor)
    exportable = True  # the model maps a tensor to a tensor (trainlab export checks parity on it)
    # The validation metric the doctor judges over-fitting by: the loss, where it is the training
    # loss measured on other samples; a score where it is not (the doctor: rules.fit_measure).
    overfit_measure = "loss"
    # Under torchrun (T7), the trainer sets this to a function that sums an evaluation meter's
    # accumulators over the ranks (engine.distributed.reduce_meter); None in one process.
    reduce_meter = None

    def __init__(self, recipe, info):
        self.recipe = recipe
        self.info = info
        # a frozen teacher model whose outputs the step may learn from (``distill``, T8); set by
        # api.build_components, which loads it from its run; only classification uses one
        self.teacher: torch.nn.Module | None = None

    # ------------------------------------------------------------------------------ metrics
    def metric_mode(self, name: str, mode: str = "auto") -> str:
        """'min' or 'max' for metric ``name`` (bare, or ``train_``/``val_`` prefixed), as declared
        in ``metrics``; ``mode`` other than auto overrides it. An undeclared metric is an error."""
        if mode != "auto":
            return mode
        bare = name.split("_", 1)[1] if name.startswith(("train_", "val_")) else name
        if bare not in self.metrics:
            raise RecipeError(f"metric {name!r}: task {self.name} declares no direction for it "
                              f"(declared: {', '.join(sorted(self.metrics))})")
        return self.metrics[bare]

    def train_meter(self) -> TrainMeter:
        """A fresh accumulator of the training metrics of one epoch (its state is checkpointed)."""
        return TrainMeter()

    @abstractmethod
    def train_update(self, meter: TrainMeter, outputs: Any, batch: dict[str, Any], loss: torch.Tensor) -> None:
        """Add one training batch to ``meter`` without synchronizing the device."""

    @abstractmethod
    def train_summary(self, meter: TrainMeter) -> dict[str, float]:
        """The epoch's training metrics, e.g. {"loss": ..., "accuracy": ...}."""

    @abstractmethod
    def eval_meter(self) -> Any:
        """An accumulator with ``update(outputs, batch, loss)`` and ``compute() -> dict``."""

    # ---------------------------------------------------------------------------- batching
    def collate(self, samples: list[tuple[Any, Any]]) -> dict[str, Any]:
        """A list of ``(input, target)`` samples → one batch dict (``{"input", "target", ...}``)."""
        from ..data.samples import collate

        return collate(samples)

    def order(self, targets: torch.Tensor, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
        """The sampler: the order in which an epoch visits the samples of a split (``targets``: one
        per sample, len N), a function of (targets, seed, epoch) so that a resumed run sees the same
        batches. Batches are consecutive runs of it; an identity-balanced sampler returns P×K
        blocks (data.sampler=pk), for any task."""
        if shuffle and self.recipe.data.sampler == "pk":
            from ..data.pk_sampler import pk_order

            return pk_order(targets, self.recipe.data.p, self.recipe.data.k, seed, epoch)
        from ..data.loader import epoch_order

        return epoch_order(len(targets), seed, epoch, shuffle)

    def check_data(self, bundle) -> None:
        """Refuse (RecipeError, one line) a data bundle this task cannot train or evaluate on,
        before anything is written: P×K batches need P identities of K samples each."""
        if self.recipe.data.sampler == "pk":
            from ..data.pk_sampler import check_pk

            check_pk(bundle.train.targets, self.recipe.data.p, self.recipe.data.k, bundle.info.class_names)

    def to_device(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """``batch`` on ``device``, nested lists and dicts of tensors included."""
        from ..device import to_device

        return to_device(batch, device)

    def model_info(self, info):
        """The DataInfo the model is built for (a segmentation head predicts the per-pixel
        classes, not the image labels the data set stratifies by)."""
        return info

    # ---------------------------------------------------------------------------- the step
    def forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> Any:
        return model(batch["input"])

    @abstractmethod
    def loss(self, outputs: Any, batch: dict[str, Any]) -> torch.Tensor:
        """Scalar loss of a batch."""

    def step(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[Any, torch.Tensor]:
        """(outputs, scalar loss) of one batch, in training and in evaluation. A task whose model
        computes its own loss from the targets (a detector) overrides this."""
        outputs = self.forward(model, batch)
        return outputs, self.loss(outputs, batch)

    # -------------------------------------------------------------------------- evaluation
    def eval_batch_size(self, train_batch_size: int) -> int:
        """Samples per evaluation batch: large where outputs are small (no gradients are kept)."""
        return max(train_batch_size, EVAL_BATCH)

    def eval_splits(self, split: str) -> tuple[str, ...]:
        """The splits that evaluating ``split`` reads, ``split`` last (metric learning reads the
        training split as its gallery, then ``split`` as probes)."""
        return (split,)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, loaders: Mapping[str, Any], split: str, device: torch.device,
                 amp: bool) -> dict[str, Any]:
        """The metrics of ``split``: every batch of ``loaders[split]`` through ``step`` into the
        eval meter, in eval mode under no_grad. ``loaders`` holds every split of eval_splits()."""
        from ..device import autocast

        was_training = model.training
        model.eval()
        try:
            meter = self.eval_meter()
            for batch in loaders[split].batches(0):
                batch = self.to_device(batch, device)
                with autocast(device, amp):
                    outputs, loss = self.step(model, batch)
                meter.update(outputs, batch, loss)
            if self.reduce_meter is not None:  # torchrun: each rank saw a piece of every batch
                self.reduce_meter(meter)
            return meter.compute()
        finally:
            model.train(was_training)

    @abstractmethod
    def predict(self, outputs: Any) -> Any:
        """Model outputs → predictions (class probabilities, boxes, masks...)."""

    def prediction_images(self, inputs: torch.Tensor, predictions: Any, info) -> list[dict[str, Any]] | None:
        """Pictures of each input's prediction, as uint8 arrays by name (a segmentation mask and
        its overlay), for `trainlab predict` to write; None where predictions are printed."""
        return None

    def summarize_prediction(self, prediction: Any, classes: list[str]) -> str | None:
        """One line about one input's prediction where pictures are written (the classes a mask
        covers, the objects found); None where predictions are printed as class probabilities."""
        return None

    def prediction_lines(self, predictions: Any, classes: list[str]) -> list[str] | None:
        """One printed line per input where predictions are neither class probabilities nor
        pictures (a multi-task model's value per head); None: `trainlab predict` prints the top-k
        classes."""
        return None

    def prediction_files(self, predictions: Any, labels: list[str], info) -> dict[str, Any]:
        """JSON documents `trainlab predict --out` writes besides the pictures, by file name
        (a detector's COCO results file)."""
        return {}

    # ------------------------------------------------------------------ what a user sees
    def table_columns(self) -> list[tuple[str, str]]:
        """(epoch-record key, header) of the per-epoch table, between the epoch and the LR."""
        cols = [("train_loss", "train_loss")]
        if self.quality and self.quality in self.train_metrics:
            cols.append((f"train_{self.quality}", f"train_{self.short(self.quality)}"))
        cols.append(("val_loss", "val_loss"))
        if self.quality and self.quality in self.val_metrics:
            cols.append((f"val_{self.quality}", f"val_{self.short(self.quality)}"))
        return cols

    @staticmethod
    def short(metric: str) -> str:
        return {"accuracy": "acc", "pixel_accuracy": "pix_acc"}.get(metric, metric)

    def curves(self) -> list[tuple[str, list[str]]]:
        """(plot name, epoch-record keys) of the task's curves besides the loss and the LR."""
        if self.quality is None:
            return []
        return [(self.quality, [f"train_{self.quality}", f"val_{self.quality}"])]

    def figures(self, summary: dict[str, Any]) -> list[Figure]:
        """The task's figures of a finished run besides its curves (a confusion matrix, a
        per-class chart), as data: the report draws them, so no task imports matplotlib."""
        return []

    def report_sections(self, summary: dict[str, Any]) -> list[str]:
        """Markdown lines the task adds to report.md after the metrics table (per-class tables)."""
        return []

    def describe_metrics(self, metrics: dict[str, Any]) -> list[str]:
        """Lines `trainlab evaluate` prints after the scalar metrics (per-class tables)."""
        return []


def build_task(recipe, info) -> Task:
    return TASKS.get(recipe.task, "task").fn(recipe, info)
