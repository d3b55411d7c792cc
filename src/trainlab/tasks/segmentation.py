"""Semantic segmentation (K3, L7, E4): a class for every pixel.

The model maps images (N, C, H, W) to per-pixel class scores (N, K, H, W); the loss is the
per-pixel cross-entropy against the mask (N, H, W). One ignore value (``loss.ignore_index`` or the
data set's, else 255) marks unlabelled pixels for the loss, the metrics and the padding of mixed
sizes; ``loss.class_weights`` weighs rare classes. Metrics come from one confusion matrix
accumulated on the device over the split (:mod:`trainlab.evaluate.segmentation`): pixel accuracy, mean class
accuracy, per-class IoU and mIoU.

The K classes are the data set's semantic classes (``info.extra["semantic_classes"]``, background
first), not its image labels: the shapes data set labels an image by its largest object (4
classes) but its masks hold background + 4 shapes.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ..errors import RecipeError
from ..evaluate.segmentation import confusion_matrix, segmentation_metrics
from ..registry import LOSSES, MODELS, TASKS
from .base import Figure, Task, check_class_weights


def semantic_classes(info) -> list[str]:
    """The per-pixel class names of a data set, background first (RecipeError without masks)."""
    names = info.extra.get("semantic_classes")
    if "semantic" not in info.annotations or not names:
        raise RecipeError("task: segmentation needs a data set with per-pixel masks "
                          "(data.name=shapes or segmentation)")
    return list(names)


class ConfusionMeter:
    """A (K, K) confusion matrix and the loss, accumulated without a device sync per batch; its
    state is JSON so that a mid-epoch checkpoint resumes it exactly."""

    def __init__(self, num_classes: int, ignore_index: int):
        self.k, self.ignore = num_classes, ignore_index
        self.cm: torch.Tensor | None = None
        self.loss_sum: torch.Tensor | float = 0.0
        self.n = 0  # images; the loss is the image-weighted mean of the batch losses

    def add(self, scores: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        cm = confusion_matrix(scores.detach().argmax(1), target, self.k, self.ignore)
        # a resumed meter's matrix comes back on the CPU; the batches may be on an accelerator
        self.cm = cm if self.cm is None else self.cm.to(cm.device) + cm
        self.loss_sum = self.loss_sum + loss.detach() * len(target)
        self.n += len(target)

    def metrics(self) -> dict[str, Any]:
        cm = self.cm if self.cm is not None else torch.zeros(self.k, self.k, dtype=torch.long)
        out = segmentation_metrics(cm)
        out["loss"] = float(self.loss_sum) / max(self.n, 1)
        out["n"] = self.n
        return out

    # the trainer checkpoints a train meter mid-epoch
    def state(self) -> dict[str, Any]:
        cm = None if self.cm is None else self.cm.cpu().tolist()
        return {"cm": cm, "loss_sum": float(self.loss_sum), "n": self.n}

    def load(self, state: dict[str, Any]) -> None:
        self.cm = None if state["cm"] is None else torch.tensor(state["cm"], dtype=torch.long)
        self.loss_sum, self.n = state["loss_sum"], int(state["n"])

    # the eval-meter protocol
    def update(self, outputs, batch, loss) -> None:
        self.add(outputs, batch["target"], loss)

    def compute(self) -> dict[str, Any]:
        return self.metrics()


UNLABELLED = 255  # the ignore value when neither the recipe nor the data set names one


def ignore_value(loss_ignore: int | None, data_ignore: int | None, classes: list[str]) -> int:
    """The one mask value that marks unlabelled pixels: ``loss.ignore_index`` or the data set's
    (they may not disagree: masks are checked against the data set's), else 255."""
    if loss_ignore is not None and data_ignore is not None and loss_ignore != data_ignore:
        raise RecipeError(f"loss.ignore_index: {loss_ignore} differs from the data set's ignore index {data_ignore} "
                          "(data.segmentation.ignore_index), which its masks use; set only one of them")
    value = next((v for v in (loss_ignore, data_ignore) if v is not None), UNLABELLED)
    if value < len(classes):
        raise RecipeError(f"loss.ignore_index: {value} is a class id ({classes[value]}); "
                          f"use a value >= {len(classes)}")
    return value


LABEL_MIXING = ("mixup", "cutmix")


def _refuse_label_mixing(batch_augment) -> None:
    """MixUp and CutMix blend class labels into soft targets; this task's targets are masks, which
    they do not blend, so they are refused rather than left to train on mismatched pairs. The
    occlusion ops (random_erasing, cutout, hide_and_seek, gridmask) change the image only and
    apply; mosaic (data.augment) tiles masks with their images."""
    from ..data.transforms import parse_spec

    for i, spec in enumerate(batch_augment):
        name, _ = parse_spec(spec, f"data.batch_augment[{i}]")
        if name in LABEL_MIXING:
            raise RecipeError(f"data.batch_augment[{i}]: {name} blends class labels, and task segmentation "
                              "trains on masks it does not blend; use an occlusion op (random_erasing, cutout, "
                              "hide_and_seek, gridmask) or data.augment: [mosaic]")


class SegmentationTask(Task):
    name = "segmentation"
    monitor = "val_miou"
    train_metrics = ("loss", "pixel_accuracy", "miou")
    val_metrics = ("loss", "pixel_accuracy", "mean_accuracy", "miou")
    metrics = {"loss": "min", "pixel_accuracy": "max", "mean_accuracy": "max", "miou": "max"}
    quality = "miou"
    quality_words = "mIoU"
    quality_judges_fit = True

    def __init__(self, recipe, info):
        super().__init__(recipe, info)
        self.classes = semantic_classes(info)
        entry = MODELS.get(recipe.model.name, "model.name")
        if "segmentation" not in entry.meta.get("tasks", ()):
            seg = sorted(e.name for e in MODELS.entries() if "segmentation" in e.meta.get("tasks", ()))
            raise RecipeError(f"model.name: {recipe.model.name!r} does not predict a class per pixel; "
                              f"task segmentation takes {', '.join(seg)}")
        check_class_weights(recipe.loss.class_weights, self.classes)
        self.ignore_index = ignore_value(recipe.loss.ignore_index, info.extra.get("ignore_index"), self.classes)
        # One ignore value for the loss, the metrics and the padding of mixed sizes.
        loss_cfg = recipe.loss.model_copy(update={"ignore_index": self.ignore_index})
        self.criterion = LOSSES.get(recipe.loss.name, "loss.name").fn(loss_cfg, info)
        _refuse_label_mixing(recipe.data.batch_augment)

    def model_info(self, info):
        return replace(info, num_classes=len(self.classes), class_names=list(self.classes))

    def eval_batch_size(self, train_batch_size: int) -> int:
        # (N, K, H, W) scores: a classifier's 512-sample evaluation batch would be gigabytes here
        return train_batch_size

    # ---------------------------------------------------------------------------- batching
    def collate(self, samples):
        """{"input": (N, C, H, W), "target": (N, H, W) int64 class ids}; images of different
        sizes are padded at the bottom and right to the largest, their masks with the ignore
        index, so padding never counts."""
        from ..data.samples import pad_stack

        images = [x.as_subclass(torch.Tensor) for x, _ in samples]
        masks = [y["semantic"].as_subclass(torch.Tensor) for _, y in samples]
        return {"input": pad_stack(images, 0), "target": pad_stack(masks, self.ignore_index).long()}

    # ---------------------------------------------------------------------------- the step
    def loss(self, outputs, batch):
        return self.criterion(outputs, batch["target"])

    def train_meter(self):
        return ConfusionMeter(len(self.classes), self.ignore_index)

    def train_update(self, meter, outputs, batch, loss):
        meter.add(outputs, batch["target"], loss)

    def train_summary(self, meter):
        m = meter.metrics()
        return {k: m[k] for k in self.train_metrics}

    def eval_meter(self):
        return ConfusionMeter(len(self.classes), self.ignore_index)

    def predict(self, outputs):
        """Per-pixel class probabilities (N, K, H, W)."""
        return torch.softmax(outputs.float(), dim=1)

    def prediction_images(self, inputs, predictions, info):
        """Per input: ``mask`` (H, W) uint8 class ids and ``overlay`` (H', W', 3) uint8, the
        image with each predicted class painted in its colour (V4)."""
        from ..data.preview import render_tile

        masks = predictions.argmax(1).to(torch.uint8).cpu()
        out = []
        for x, mask in zip(inputs.cpu(), masks):
            overlay = render_tile(x, None, mask, info)
            out.append({"mask": mask.numpy(), "overlay": overlay.permute(1, 2, 0).contiguous().numpy()})
        return out

    def summarize_prediction(self, prediction, classes):
        """The share of the image each predicted class covers, largest first."""
        share = prediction.argmax(0).flatten().bincount(minlength=len(classes)).double() / prediction[0].numel()
        return ", ".join(f"{classes[i]} {100 * float(share[i]):.1f}%" for i in share.argsort(descending=True).tolist()
                         if share[i] > 0)

    # ------------------------------------------------------------------ what a user sees
    def table_columns(self):
        return [("train_loss", "train_loss"), ("train_miou", "train_miou"), ("val_loss", "val_loss"),
                ("val_pixel_accuracy", "val_pix_acc"), ("val_miou", "val_miou")]

    def curves(self):
        return [("miou", ["train_miou", "val_miou"]), ("pixel_accuracy", ["train_pixel_accuracy",
                                                                          "val_pixel_accuracy"])]

    def _final(self, summary):
        split = "test" if summary.get("test") else "val"
        return split, summary.get(split) or {}

    def figures(self, summary):
        split, final = self._final(summary)
        if "per_class" not in final:
            return []
        iou = [v if v is not None else 0.0 for v in final["per_class"]["iou"]]
        return [Figure("per_class_iou", "bars", f"IoU per class ({split}), mIoU {final['miou']:.3f}",
                       {"values": iou, "labels": self.classes}),
                Figure("confusion", "matrix", f"pixel confusion matrix ({split})",
                       {"matrix": final["confusion"], "labels": self.classes})]

    def class_rows(self, metrics) -> list[tuple[str, str, str, int]]:
        """(class, IoU, accuracy, pixels) per class, '-' where undefined."""
        pc = metrics["per_class"]

        def fmt(v):
            return "-" if v is None else f"{v:.4f}"

        return [(name, fmt(pc["iou"][i]), fmt(pc["accuracy"][i]), pc["pixels"][i])
                for i, name in enumerate(self.classes)]

    def report_sections(self, summary):
        split, final = self._final(summary)
        if "per_class" not in final:
            return []
        rows = [f"## Per class ({split})", "", "| class | IoU | accuracy | pixels |", "|---|---|---|---|"]
        rows += [f"| {c} | {iou} | {acc} | {n} |" for c, iou, acc, n in self.class_rows(final)]
        return rows + [""]

    def describe_metrics(self, m):
        if "per_class" not in m:
            return []
        width = max(5, *(len(c) for c in self.classes))
        lines = ["", f"  {'class':<{width}}      IoU  accuracy     pixels"]
        lines += [f"  {c:<{width}} {iou:>8} {acc:>9} {n:>10d}" for c, iou, acc, n in self.class_rows(m)]
        return lines


@TASKS.register("segmentation", help="semantic segmentation: per-pixel cross-entropy, pixel accuracy, IoU/mIoU")
def segmentation(recipe, info):
    return SegmentationTask(recipe, info)
