"""Knowledge distillation (T8): the teacher a student learns from (``distill.teacher``).

The loss is :func:`trainlab.losses.distillation_loss`; the classification task applies it in its
training step when ``api.build_components`` hands it the teacher loaded here.
"""
from __future__ import annotations

import sys

import torch

from .errors import RunError
from .run import open_run


def load_teacher(recipe, info) -> torch.nn.Module:
    """The frozen teacher of ``recipe.distill``: its run's best model in eval mode, checked to be a
    classification model of the same classes and input shape (RecipeError, one line, otherwise).
    Built under a forked RNG, so that loading it changes nothing of the student's run."""
    from .errors import RecipeError

    cfg = recipe.distill
    if recipe.task != "classification":
        raise RecipeError(f"distill: only the classification task learns from a teacher (this recipe's task is "
                          f"{recipe.task})")
    try:
        run = open_run(cfg.teacher)
    except RunError as err:
        raise RecipeError(f"distill.teacher: {err}") from None
    with torch.random.fork_rng(devices=[]):
        model, task, _, t_info, _ = run.load_model("best")
    if task.name != "classification":
        raise RecipeError(f"distill.teacher: {cfg.teacher} is a run of the {task.name} task; the teacher must be "
                          "a classification run")
    if list(t_info.class_names) != list(info.class_names):
        shown = ", ".join(map(str, t_info.class_names[:8])) + (", ..." if len(t_info.class_names) > 8 else "")
        raise RecipeError(f"distill.teacher: its classes ({shown}) are not this data set's "
                          f"({', '.join(map(str, info.class_names[:8]))}{', ...' if len(info.class_names) > 8 else ''})")
    if tuple(t_info.input_shape) != tuple(info.input_shape):
        raise RecipeError(f"distill.teacher: it takes inputs of shape {list(t_info.input_shape)}, this data set's are "
                          f"{list(info.input_shape)}")
    stop = recipe.train.early_stop
    if stop is not None and stop.monitor == "val_loss":
        print("distill: train.early_stop.monitor is val_loss, which rises as a student copies its teacher's "
              "confident logits while its accuracy still improves; train.early_stop.monitor=val_accuracy "
              "(the default when distilling) keeps the best epoch by accuracy", file=sys.stderr)
    model.eval().requires_grad_(False)
    return model
