"""Object detection (K2, E2, E3, V4): boxes and their classes, scored by COCO mAP.

A batch is ``{"input": (N, C, H, W), "targets": [{"boxes": (K_i, 4), "labels": (K_i,)}], ...}``:
each image carries its own number of boxes (none at all is allowed: the image is background).
The model (registered with ``tasks=("detection",)``, see :mod:`trainlab.models.detector`)
computes its own loss from the targets, as torchvision's detectors do, so :meth:`step` passes them
to it; the training loss is the sum of its named terms, and the terms are recorded too
(``train_loss_<term>``).

Validation runs the model in eval mode, post-processes its detections (``eval.score_threshold``,
``eval.nms_iou``, ``eval.max_detections``; torchvision's batched NMS) and scores them with the
project's COCO evaluator (:class:`trainlab.evaluate.coco.MeanAveragePrecision`, equal to
pycocotools): ``val_map`` (AP@[.5:.95]), ``val_map50``, ``val_map75``, ``val_mar100``, all
higher-is-better, and ``val_loss`` where the model computes its loss in eval mode (YOLO, SSD;
torchvision's detectors do not).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ..errors import DataError, RecipeError
from ..registry import MODELS, TASKS
from .base import Figure, Task


class DetectionTrainMeter:
    """The epoch's training loss and its named terms, summed without a device sync per step."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor | float] = {}
        self.loss_sum: torch.Tensor | float = 0.0
        self.n = 0

    def add(self, terms: dict[str, torch.Tensor], loss: torch.Tensor, n: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float() * n
        self.loss_sum = self.loss_sum + loss.detach().float() * n
        self.n += n

    def summary(self) -> dict[str, float]:
        n = max(self.n, 1)
        out = {"loss": float(self.loss_sum) / n}
        out.update({f"loss_{k}": float(v) / n for k, v in self.sums.items()})
        return out

    def state(self) -> dict[str, Any]:
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "loss_sum": float(self.loss_sum), "n": self.n}

    def load(self, state: dict[str, Any]) -> None:
        self.sums = dict(state["sums"])
        self.loss_sum, self.n = state["loss_sum"], int(state["n"])


class DetectionEvalMeter:
    """COCO evaluation of a split's detections (and the loss, where the model gives one)."""

    def __init__(self, class_names: list[str]):
        from ..evaluate.coco import MeanAveragePrecision

        self.coco = MeanAveragePrecision(class_names=class_names)
        self.loss_sum: torch.Tensor | float = 0.0
        self.loss_n = 0
        self.n = 0

    def update(self, outputs, batch, loss) -> None:
        targets = batch["targets"]
        self.coco.update(outputs["detections"], targets)
        self.n += len(targets)
        if loss is not None:
            self.loss_sum = self.loss_sum + loss.detach().float() * len(targets)
            self.loss_n += len(targets)

    def compute(self) -> dict[str, Any]:
        result = self.coco.compute()
        s = [float(v) for v in result.stats]
        out: dict[str, Any] = {"map": max(s[0], 0.0), "map50": max(s[1], 0.0), "map75": max(s[2], 0.0),
                               "mar100": max(s[8], 0.0)}
        if self.loss_n:
            out["loss"] = float(self.loss_sum) / self.loss_n
        out["n"] = self.n
        out["coco"] = result.to_dict()
        out["coco_summary"] = result.summary_lines()
        return out


def plain_targets(target: dict[str, Any], where: str, num_classes: int, size: tuple[int, int],
                  masks: bool = False) -> dict[str, torch.Tensor]:
    """A sample's ``{"boxes": (K, 4) float, "labels": (K,) int64}`` (and ``"masks"`` (K, H, W)
    uint8 with ``masks``) as plain tensors. Boxes are clipped to the image (a rotation or an affine
    warp can carry a corner outside) and boxes left without area are dropped with their masks; a
    class id the model has no output for is a DataError naming the sample (``where``) and the box.
    Files are checked when the data set is read (data.coco)."""
    boxes = target["boxes"].as_subclass(torch.Tensor).float().reshape(-1, 4)
    labels = target["labels"].as_subclass(torch.Tensor).long().reshape(-1)
    inst = target["masks"].as_subclass(torch.Tensor).to(torch.uint8) if masks else None
    if len(boxes):
        bad = (labels < 0) | (labels >= num_classes)
        if bool(bad.any()):
            j = int(bad.nonzero()[0])
            box = [round(float(v), 2) for v in boxes[j]]
            raise DataError(f"{where}: box {j} {box} has class id {int(labels[j])}; expected 0..{num_classes - 1}")
        h, w = size
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                             boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1)
        keep = ((boxes[:, 2:] - boxes[:, :2]) > 0).all(1)
        boxes, labels = boxes[keep], labels[keep]
        inst = inst[keep] if inst is not None else None
    out = {"boxes": boxes, "labels": labels}
    if inst is not None:
        out["masks"] = inst.reshape(-1, *size)
    return out


# Pictures and printed lines show detections from this score up (Ultralytics draws from 0.25);
# detections.json keeps every one above eval.score_threshold, as COCO evaluation wants.
DRAW_SCORE = 0.25


def confident(prediction: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keep = prediction["scores"] >= DRAW_SCORE
    return {k: v[keep] for k, v in prediction.items()}


class DetectionTask(Task):
    name = "detection"
    monitor = "val_map"
    train_metrics = ("loss",)
    val_metrics = ("loss", "map", "map50", "map75", "mar100")
    metrics = {"loss": "min", "map": "max", "map50": "max", "map75": "max", "mar100": "max"}
    quality = "map"
    quality_words = "mAP"
    quality_judges_fit = False  # a COCO mAP of 0.5 can be a fine detector: no threshold says under-fitting
    exportable = False  # per-image lists of boxes, and data-dependent NMS: not one traced tensor program

    model_task = "detection"  # the models this task takes declare it in their registry entry
    needs = "boxes"  # the annotation the data set must carry

    def __init__(self, recipe, info):
        super().__init__(recipe, info)
        if self.needs not in info.annotations:
            what = {"boxes": "boxes", "masks": "instance masks"}[self.needs]
            raise RecipeError(f"task: {self.name} needs a data set with {what} (data.name=shapes or coco); "
                              f"{recipe.data.name!r} has none")
        entry = MODELS.get(recipe.model.name, "model.name")
        if self.model_task not in entry.meta.get("tasks", ()):
            det = sorted(e.name for e in MODELS.entries() if self.model_task in e.meta.get("tasks", ()))
            raise RecipeError(f"model.name: {recipe.model.name!r} does not "
                              f"{'detect objects' if self.name == 'detection' else 'predict instance masks'}; "
                              f"task {self.name} takes {', '.join(det)}")
        _refuse_label_mixing(recipe.data.batch_augment)
        self.classes = list(info.class_names)
        if not entry.meta.get("eval_loss", True):  # torchvision's detectors give no loss in eval mode
            self.val_metrics = tuple(m for m in self.val_metrics if m != "loss")

    def metric_mode(self, name: str, mode: str = "auto") -> str:
        bare = name.split("_", 1)[1] if name.startswith(("train_", "val_")) else name
        if mode == "auto" and bare.startswith("loss_"):  # the model's named loss terms
            return "min"
        return super().metric_mode(name, mode)

    def model_info(self, info):
        ev = self.recipe.eval
        post = {"score_threshold": ev.score_threshold, "nms_iou": ev.nms_iou, "max_detections": ev.max_detections}
        return replace(info, extra={**info.extra, "detection": post})

    def eval_batch_size(self, train_batch_size: int) -> int:
        return train_batch_size  # detections per image, not a score per sample: keep batches small

    # ---------------------------------------------------------------------------- batching
    def collate(self, samples):
        """{"input": (N, C, H, W) (mixed sizes padded at the bottom right: boxes stay put),
        "targets": per image {"boxes", "labels"}, "target": (N,) image labels}."""
        from ..data.samples import pad_stack

        images = [x.as_subclass(torch.Tensor) for x, _ in samples]
        targets = []
        for i, (x, y) in enumerate(samples):
            where = y.get("source", f"sample {i} of the batch") if isinstance(y, dict) else f"sample {i}"
            targets.append(plain_targets(y, where, len(self.classes), tuple(x.shape[-2:]), self.needs == "masks"))
        return {"input": pad_stack(images, 0), "targets": targets,
                "target": torch.stack([y["label"] for _, y in samples])}

    # ---------------------------------------------------------------------------- the step
    def step(self, model, batch):
        """The model takes the targets and returns its loss terms (training) and detections
        (eval mode); the loss is the sum of the terms, None when the model gives none."""
        outputs = model(batch["input"], batch["targets"])
        losses = outputs.get("losses")
        loss = sum(losses.values()) if losses else None
        return outputs, loss

    def loss(self, outputs, batch):
        losses = outputs.get("losses") or {}
        return sum(losses.values()) if losses else None

    def train_meter(self):
        return DetectionTrainMeter()

    def train_update(self, meter, outputs, batch, loss):
        meter.add(outputs["losses"], loss, len(batch["targets"]))

    def train_summary(self, meter):
        return meter.summary()

    def eval_meter(self):
        return DetectionEvalMeter(self.classes)

    def predict(self, outputs):
        """One dict per image: ``boxes`` (M, 4) XYXY pixels, ``scores`` (M,), ``labels`` (M,)."""
        return [{k: v.detach().float().cpu() if k != "labels" else v.cpu() for k, v in d.items()}
                for d in outputs["detections"]]

    def prediction_images(self, inputs, predictions, info):
        """Per input: ``boxes``, the image with each detection scoring at least DRAW_SCORE drawn
        in its class colour, with its class name and score (V4)."""
        from ..data.preview import draw_detections

        return [{"boxes": draw_detections(x, confident(p), self.classes, info)}
                for x, p in zip(inputs.cpu(), predictions)]

    def summarize_prediction(self, prediction, classes) -> str:
        p = confident(prediction)
        n = len(p["scores"])
        if not n:
            return f"no detection scoring >= {DRAW_SCORE}"
        items = [f"{classes[int(c)]} {float(s):.2f} [{', '.join(f'{v:.0f}' for v in b.tolist())}]"
                 for b, s, c in zip(p["boxes"], p["scores"], p["labels"])][:8]
        return (f"{n} detection{'s' if n > 1 else ''} scoring >= {DRAW_SCORE}: " + "; ".join(items)
                + ("; ..." if n > 8 else ""))

    def prediction_files(self, predictions, labels, info):
        """``detections.json``: COCO results (image_id, category_id, bbox [x, y, w, h], score),
        the format `trainlab eval-detections GT.json detections.json` reads. An image's id is its
        id in the run's COCO file when the run trained on one and the file name is there, else
        the number its name is (COCO names files by id), else its position (1-based); a class's
        category id is the COCO file's, else its index + 1."""
        from pathlib import Path

        ids_by_name = coco_image_ids(info)
        cat_ids = info.extra.get("category_ids") or list(range(1, len(self.classes) + 1))
        results = []
        for pos, (label, p) in enumerate(zip(labels, predictions), 1):
            name = Path(label.partition("[")[0]).name
            stem = Path(name).stem
            image_id = ids_by_name.get(name, int(stem) if stem.isdigit() else pos)
            for box, score, c in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
                x1, y1, x2, y2 = box
                results.append({"image_id": image_id, "category_id": int(cat_ids[int(c)]),
                                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                "score": round(float(score), 5)})
        return {"detections.json": results}

    # ------------------------------------------------------------------ what a user sees
    def table_columns(self):
        cols = [("train_loss", "train_loss"), ("val_loss", "val_loss"), ("val_map50", "val_mAP50"),
                ("val_map", "val_mAP")]
        return [c for c in cols if not c[0].startswith("val_") or c[0][4:] in self.val_metrics]

    def curves(self):
        return [("map", ["val_map", "val_map50", "val_map75"])]

    def _final(self, summary):
        split = "test" if summary.get("test") else "val"
        return split, summary.get(split) or {}

    def figures(self, summary):
        split, final = self._final(summary)
        rows = (final.get("coco") or {}).get("per_class")
        if not rows:
            return []
        return [Figure("per_class_ap", "bars", f"AP@[.5:.95] per class ({split}), mAP {final['map']:.3f}",
                       {"values": [r["AP"] or 0.0 for r in rows], "labels": [r["name"] for r in rows]}),
                Figure("per_class_ap50", "bars", f"AP@0.5 per class ({split}), mAP@0.5 {final['map50']:.3f}",
                       {"values": [r["AP50"] or 0.0 for r in rows], "labels": [r["name"] for r in rows]})]

    @staticmethod
    def class_rows(metrics) -> list[tuple[str, str, str, str, int, int]]:
        def fmt(v):
            return "-" if v is None else f"{v:.3f}"

        return [(r["name"], fmt(r["AP"]), fmt(r["AP50"]), fmt(r["AP75"]), r["num_gt"], r["num_det"])
                for r in (metrics.get("coco") or {}).get("per_class", [])]

    def report_sections(self, summary):
        split, final = self._final(summary)
        rows = self.class_rows(final)
        if not rows:
            return []
        out = [f"## COCO evaluation ({split})", "", "```", *final.get("coco_summary", []), "```", "",
               "| class | AP | AP50 | AP75 | objects | detections |", "|---|---|---|---|---|---|"]
        out += [f"| {c} | {ap} | {ap50} | {ap75} | {g} | {d} |" for c, ap, ap50, ap75, g, d in rows]
        return out + [""]

    def describe_metrics(self, m):
        rows = self.class_rows(m)
        if not rows:
            return []
        width = max(5, *(len(r[0]) for r in rows))
        lines = ["", *m.get("coco_summary", []), "", f"  {'class':<{width}}     AP   AP50   AP75  objects  detections"]
        lines += [f"  {c:<{width}} {ap:>6} {ap50:>6} {ap75:>6} {g:>8d} {d:>11d}" for c, ap, ap50, ap75, g, d in rows]
        return lines


def coco_image_ids(info) -> dict[str, int]:
    """File name → image id of the COCO file a run trained on ({} for other data sets)."""
    import json
    from pathlib import Path

    root = info.extra.get("root")
    if not info.extra.get("category_ids") or not root or not Path(root).is_file():
        return {}
    try:
        images = json.loads(Path(root).read_text()).get("images", [])
    except (OSError, ValueError):
        return {}
    return {Path(im["file_name"]).name: im["id"] for im in images if isinstance(im, dict) and "file_name" in im}


def _refuse_label_mixing(batch_augment) -> None:
    """MixUp and CutMix blend class labels; a detector's targets are boxes, which they do not
    carry, so they are refused (mosaic, in data.augment, tiles images with their boxes)."""
    from ..data.transforms import parse_spec

    for i, spec in enumerate(batch_augment):
        name, _ = parse_spec(spec, f"data.batch_augment[{i}]")
        if name in ("mixup", "cutmix"):
            raise RecipeError(f"data.batch_augment[{i}]: {name} blends class labels, and task detection trains on "
                              "boxes it does not move; use data.augment: [mosaic] or an occlusion op")


@TASKS.register("detection", help="object detection: boxes and classes, the model's own loss, COCO mAP")
def detection(recipe, info):
    return DetectionTask(recipe, info)
