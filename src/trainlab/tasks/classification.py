"""Image classification (K1): logits, (soft-target) loss, accuracy and the E1 metrics."""
from __future__ import annotations

import torch

from ..evaluate.classification import ClassificationMeter
from ..registry import LOSSES, TASKS
from .base import Figure, Task, TrainMeter, check_class_weights


class _EvalMeter:
    summed = ("meter",)  # its ClassificationMeter's sums (torchrun ranks add them up)

    def __init__(self, num_classes: int, topk: int):
        self.meter = ClassificationMeter(num_classes, topk)

    def update(self, outputs, batch, loss):
        self.meter.update(outputs, batch["target"], loss)

    def compute(self):
        return self.meter.compute()


class ClassificationTask(Task):
    name = "classification"

    train_metrics = ("loss", "accuracy")
    quality = "accuracy"
    quality_judges_fit = True
    labels_per_sample = True

    def __init__(self, recipe, info):
        super().__init__(recipe, info)
        k = recipe.eval.topk
        self.val_metrics = ("loss", "accuracy", "macro_precision", "macro_recall", "macro_f1")
        if ClassificationMeter(info.num_classes, k).reports_topk:  # k < classes: top-C accuracy is always 1
            self.val_metrics += (f"top{k}_accuracy",)
        self.metrics = {"loss": "min", **{m: "max" for m in self.val_metrics[1:]}}
        check_class_weights(recipe.loss.class_weights, info.class_names)
        self.criterion = LOSSES.get(recipe.loss.name, "loss.name").fn(recipe.loss, info)

    @property
    def monitor(self) -> str:
        """val_loss, or val_accuracy for a student learning from a teacher (T8): it copies the
        teacher's confident logits, so its cross-entropy at T = 1 rises while its accuracy still
        improves, and a loss monitor would keep an early, worse epoch (measured on digits: best
        val_loss at epoch 2 with 95.2% val accuracy, 99.3% by epoch 6)."""
        return "val_accuracy" if self.teacher is not None else "val_loss"

    @property
    def overfit_measure(self) -> str:
        """The doctor judges a student's over-fitting by accuracy: its training loss is the
        distillation loss, not the cross-entropy its val_loss measures (rules.fit_measure)."""
        return "accuracy" if self.teacher is not None else "loss"

    def loss(self, outputs, batch):
        return self.criterion(outputs, batch["target"])

    def step(self, model, batch):
        outputs = self.forward(model, batch)
        loss = self.loss(outputs, batch)
        if self.teacher is not None and model.training:
            # the teacher sees the same (augmented) batch; validation keeps the plain loss, so that
            # val_loss compares with a run trained without a teacher
            from ..losses import distillation_loss

            with torch.no_grad():
                soft = self.teacher(batch["input"])
            cfg = self.recipe.distill
            loss = distillation_loss(outputs, soft, loss, cfg.temperature, cfg.alpha)
        return outputs, loss

    def train_update(self, meter: TrainMeter, outputs, batch, loss):
        target = batch["target"]
        if target.dim() == 2:
            target = target.argmax(1)
        n = len(target)
        meter.loss_sum = meter.loss_sum + loss.detach() * n
        meter.correct = meter.correct + (outputs.detach().argmax(1) == target).sum()
        meter.n += n

    def train_summary(self, meter: TrainMeter):
        n = max(meter.n, 1)
        return {"loss": float(meter.loss_sum) / n, "accuracy": float(meter.correct) / n}

    def eval_meter(self):
        return _EvalMeter(self.info.num_classes, self.recipe.eval.topk)

    def predict(self, outputs):
        return torch.softmax(outputs.float(), dim=1)

    def figures(self, summary):
        split = "test" if summary.get("test") else "val"
        final = summary.get(split) or {}
        if "confusion" not in final:
            return []
        return [Figure("confusion", "matrix", f"confusion matrix ({split})",
                       {"matrix": final["confusion"], "labels": summary.get("class_names", [])})]

    def report_sections(self, summary):
        split = "test" if summary.get("test") else "val"
        pc = (summary.get(split) or {}).get("per_class")
        if not pc:
            return []
        rows = [f"## Per class ({split})", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for i, name in enumerate(summary.get("class_names", [])):
            rows.append(f"| {name} | {pc['precision'][i]:.3f} | {pc['recall'][i]:.3f} | {pc['f1'][i]:.3f} | "
                        f"{pc['support'][i]} |")
        return rows + [""]

    def describe_metrics(self, m):
        pc, names = m.get("per_class"), m.get("class_names", [])
        if not pc:
            return []
        width = max(5, max(len(n) for n in names))
        lines = ["", f"  {'class':<{width}} precision  recall      F1  support"]
        for i, name in enumerate(names):
            lines.append(f"  {name:<{width}} {pc['precision'][i]:9.4f} {pc['recall'][i]:7.4f} {pc['f1'][i]:7.4f} "
                         f"{pc['support'][i]:8d}")
        lines += ["", "confusion matrix (rows true, columns predicted):"]
        lines += [f"  {name:<{width}} " + " ".join(f"{v:4d}" for v in row) for name, row in zip(names, m["confusion"])]
        return lines


@TASKS.register("classification", help="image classification: class logits, cross-entropy, accuracy/F1")
def classification(recipe, info):
    return ClassificationTask(recipe, info)
