"""TensorBoard beyond the scalars (V2, V3, V4): at the end of a fit, the first-layer filters, the
task's matrix figures (the confusion matrix), the augmentation preview, and the run's hyper-
parameters with its final metrics (the HParams dashboard), written into the run's tensorboard/
folder beside the per-epoch scalars of ``TensorBoardLogger``.
"""
from __future__ import annotations

import math
from typing import Any

# recipe sections whose settings are hyper-parameters (run.*, eval.*, doctor.* say how a run is
# written, evaluated or watched, not what is trained)
HPARAM_SECTIONS = ("seed", "task", "data", "model", "loss", "optim", "schedule", "train", "distill")
PREVIEW = 16  # samples in the augmentation preview


def hparams_of(recipe) -> dict[str, Any]:
    """Dotted recipe setting -> value TensorBoard accepts (number, text or bool; lists as text;
    unset settings left out)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, v in value.items():
                walk(f"{prefix}.{key}", v)
        elif value is None:
            return
        elif isinstance(value, (bool, int, float, str)):
            out[prefix] = value
        else:
            out[prefix] = str(value)

    tree = recipe.to_dict()
    for section in HPARAM_SECTIONS:
        if section in tree:
            walk(section, tree[section])
    return out


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """``hparam/<split>_<metric>`` -> value for the finite scalar val and test metrics."""
    from ..tasks.base import scalar_metrics

    out = {}
    for split in ("val", "test"):
        for key, value in scalar_metrics(summary.get(split)).items():
            if key != "n" and math.isfinite(value):
                out[f"hparam/{split}_{key}"] = float(value)
    return out


def figure_array(fig):
    """A drawn matplotlib figure as an (H, W, 3) uint8 NumPy array."""
    import numpy as np

    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def log_final(run, recipe, model, task, info, summary: dict[str, Any]) -> list[str]:
    """Write the images and the hyper-parameters of a finished run; returns the image tags.
    An OS error (a full disk) is one RunError line naming the folder."""
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    from ..errors import RunError, TrainlabError
    from .figures import gc_paused
    from .plots import confusion_figure

    step = summary.get("epochs_run", 0)
    images: dict[str, Any] = {}
    filters = _filters(model, info)
    if filters is not None:
        images["inside/first_layer_filters"] = filters
    with gc_paused():
        for figure in task.figures(summary):
            if figure.kind == "matrix":
                images[f"figures/{figure.name}"] = figure_array(
                    confusion_figure(figure.data["matrix"], figure.data["labels"], figure.title))
    try:
        from ..data.preview import augmented_batch, grid_image

        images["data/augmentation_preview"] = np.asarray(grid_image(*augmented_batch(recipe, PREVIEW, 0)))
    except TrainlabError:
        pass  # a data set the preview cannot draw (token sequences): the other images still go in
    try:
        writer = SummaryWriter(log_dir=str(run.tensorboard))
        try:
            for tag, image in images.items():
                writer.add_image(tag, image, step, dataformats="HWC")
            metrics = final_metrics(summary)
            if metrics:
                for part in hparams(hparams_of(recipe), metrics):
                    writer._get_file_writer().add_summary(part)
                for key, value in metrics.items():  # the HParams dashboard reads these scalars
                    writer.add_scalar(key, value, step)
        finally:
            writer.close()
    except OSError as err:
        raise RunError(f"could not write TensorBoard events in {run.tensorboard}: {err.strerror or err}") from None
    return list(images)


def _filters(model, info):
    """The first-layer filter grid (H, W, 3) uint8 of an image model, else None."""
    import torch

    from ..errors import TrainlabError
    from .inside import call_order, filter_image, first_layer_filters

    if info.kind != "image" or len(info.input_shape) != 3:
        return None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()  # no batch statistics or dropout: the forward pass only reveals the call order
    try:
        layers = call_order(model, torch.zeros(1, *info.input_shape, device=device))
        _, weights = first_layer_filters(layers, tuple(info.input_shape))
    except (TrainlabError, RuntimeError, TypeError):
        return None
    finally:
        model.train(was_training)
    return (filter_image(weights) * 255).round().to(torch.uint8).numpy()
