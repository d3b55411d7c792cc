"""The run directory: one training, reopened later to evaluate, predict, diagnose or resume.

    runs/<name>/
      recipe.yaml        resolved recipe
      metrics.jsonl      one JSON object per epoch (and per event)
      checkpoints/       last.safetensors, best.safetensors (+ .json state beside each)
      plots/             loss.png, accuracy.png, lr.png, confusion.png
      tensorboard/       event files
      summary.json       best epoch, wall time, val and test metrics
      report.md          numbers, plots and findings together
      report.html        the same in one self-contained page, rewritten at every epoch end while training
      .trainlab.lock     locked by the one process writing the run (trainlab.lock); inert otherwise
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import RunError
from .lock import LOCK_NAME
from .lock import holder as lock_holder

RUN_FILES = ("recipe.yaml", "metrics.jsonl", "summary.json", "report.md", "report.html", "doctor.json")
RUN_FOLDERS = ("checkpoints", "plots", "tensorboard")


class Run:
    def __init__(self, path: str | Path):
        self.dir = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    # ------------------------------------------------------------------------------- paths
    @property
    def recipe_path(self) -> Path:
        return self.dir / "recipe.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def plots(self) -> Path:
        return self.dir / "plots"

    @property
    def tensorboard(self) -> Path:
        return self.dir / "tensorboard"

    @property
    def summary_path(self) -> Path:
        return self.dir / "summary.json"

    @property
    def report_path(self) -> Path:
        return self.dir / "report.md"

    def checkpoint(self, which: str = "best") -> Path:
        if which not in ("best", "last"):
            raise RunError(f"checkpoint: expected best or last, got {which!r}")
        path = self.checkpoints / f"{which}.safetensors"
        if which == "best" and not path.exists() and (self.checkpoints / "last.safetensors").exists():
            return self.checkpoints / "last.safetensors"
        if not path.exists():
            raise RunError(f"run {self.dir} has no {which} checkpoint ({path} is missing)")
        return path

    # ------------------------------------------------------------------------------ reading
    def recipe(self):
        from .recipe import load_recipe

        return load_recipe(self.recipe_path)

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.metrics() if "event" not in r]

    def summary(self) -> dict[str, Any]:
        if not self.summary_path.exists():
            raise RunError(f"run {self.dir} has no summary.json (did training finish?)")
        return json.loads(self.summary_path.read_text())

    def info(self, recipe=None):
        """The DataInfo the run trained on: from the JSON state beside its checkpoints, or, for a
        run without one yet, from its data set (sizes and names only, no statistics); ``recipe``
        stands for the run's recipe.yaml when given."""
        from .data.bundle import DataInfo

        for name in ("last.json", "best.json"):
            path = self.checkpoints / name
            if path.is_file():
                try:
                    return DataInfo.from_dict(json.loads(path.read_text())["info"])
                except (ValueError, KeyError, TypeError):
                    continue
        from .data import build_data

        return build_data(self.recipe() if recipe is None else recipe, statistics=False).info

    def task(self, recipe=None):
        """The run's task, rebuilt from its recipe (or ``recipe``) and :meth:`info`."""
        from .tasks import build_task

        recipe = self.recipe() if recipe is None else recipe
        return build_task(recipe, self.info(recipe))

    # ---------------------------------------------------------------------------- creating
    @classmethod
    def create(cls, recipe, path: str | Path | None = None, force: bool = False) -> Run:
        """Make the run directory; refuse a non-empty one unless ``force`` (then clear our files)."""
        run = cls(path or default_dir(recipe))
        check_writable_target(run.dir, force)
        if force:
            for name in RUN_FILES:
                (run.dir / name).unlink(missing_ok=True)
            for name in RUN_FOLDERS:
                shutil.rmtree(run.dir / name, ignore_errors=True)
        try:
            run.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"run.dir: cannot create {str(run.dir)!r} ({err.strerror})") from None
        from .atomic import write_text

        write_text(run.recipe_path, recipe.to_yaml())
        return run

    # ------------------------------------------------------------------------------- using
    def load_model(self, checkpoint: str = "best"):
        """(model in eval mode, task, recipe, DataInfo, checkpoint state) rebuilt from this run."""
        from .data.bundle import DataInfo
        from .engine.checkpoint import load_checkpoint, load_model_weights, split_prefix
        from .models import build_model
        from .tasks import build_task

        recipe = self.recipe()
        path = self.checkpoint(checkpoint)
        tensors, state = load_checkpoint(path)
        info = DataInfo.from_dict(state["info"])
        task = build_task(recipe, info)
        model = build_model(recipe, task.model_info(info), load_weights=False)  # the checkpoint replaces model.weights
        load_model_weights(model, split_prefix(tensors, "model"), str(path))
        model.eval()
        return model, task, recipe, info, state

    def evaluate(self, split: str = "test", checkpoint: str = "best", write: bool = True) -> dict[str, Any]:
        """Metrics of ``checkpoint`` on ``split`` (rebuilt from the recipe and seed); writes JSON."""
        import torch

        from .atomic import write_json
        from .data import build_data
        from .device import resolve_device
        from .engine.trainer import eval_loader
        from .optim.optimizers import train_batch_size

        if split not in ("train", "val", "test"):
            raise RunError(f"split: expected train, val or test, got {split!r}")
        model, task, recipe, info, state = self.load_model(checkpoint)
        # The model's input stage (normalization, whitening) comes from the checkpoint.
        bundle = build_data(recipe, statistics=False)
        device = resolve_device(recipe.train.device)
        model.to(device)
        batch = task.eval_batch_size(train_batch_size(recipe, len(bundle.train)))
        loaders = {name: eval_loader(bundle.split(name), batch, recipe, device, task)
                   for name in task.eval_splits(split)}
        with torch.no_grad():
            metrics = task.evaluate(model, loaders, split, device, recipe.train.amp)
        metrics["split"], metrics["checkpoint"], metrics["epoch"] = split, checkpoint, state.get("epoch")
        metrics["class_names"] = task.model_info(info).class_names
        if write:
            write_json(self.dir / f"eval-{split}-{checkpoint}.json", metrics)
        return metrics

    def predict(self, inputs, checkpoint: str = "best", names: list[str] | None = None):
        """A :class:`~trainlab.inputs.Prediction` for arrays, tensors or paths (images, .npy
        arrays, folders of them), by name: ``probs`` (NumPy: class probabilities (N, C) for
        classification, per-pixel class probabilities (N, K, H, W) for segmentation, one dict of
        ``boxes`` (M, 4) XYXY pixels, ``scores`` and ``labels`` per image for detection, unit
        embeddings (N, D) for an embedding run),
        ``classes`` (the predicted class name per input, classification), ``inputs`` (one name
        per input) and ``class_names``. It does not unpack like a tuple."""
        from .inputs import Prediction

        p = self.prediction(inputs, checkpoint, names)
        return Prediction.from_outputs(p["probs"], p["labels"], p["classes"], p["task"].labels_per_sample)

    def prediction(self, inputs, checkpoint: str = "best", names: list[str] | None = None) -> dict[str, Any]:
        """What :meth:`predict` returns, as a dict of torch values: ``probs`` (the task's
        predictions), ``labels`` (one name per input), ``classes`` (all class names), with the
        input batch and the task's pictures of the predictions (``task.prediction_images``: a mask
        and an overlay per image for segmentation; None where predictions are printed)."""
        import torch

        from .inputs import gather_inputs

        model, task, recipe, info, _ = self.load_model(checkpoint)
        x, labels = gather_inputs(inputs, info, names)
        with torch.no_grad():
            probs = task.predict(model(x))
        return {"inputs": x, "probs": probs, "labels": labels, "classes": task.model_info(info).class_names,
                "images": task.prediction_images(x, probs, info), "task": task, "info": info}


def embed_inputs(run: Run, inputs, checkpoint: str = "best", names: list[str] | None = None, model=None):
    """(embeddings (N, D) float32 tensor, one name per input) of an embedding run's model for
    arrays, tensors or paths (images, .npy, folders of them). Image files must have the size the
    model was trained at unless the run resizes its images (``data.image_size``). ``model``:
    the (model, task, recipe, info) of an earlier load, to embed several lists with one load."""
    import torch

    from .inputs import gather_inputs

    model, task, recipe, info = model or run.load_model(checkpoint)[:4]
    if task.name != "embedding":
        raise RunError(f"run {run.dir} is a run of the {task.name} task; embeddings come from an embedding run "
                       "(task: embedding)")
    x, labels = gather_inputs(inputs, info, names, exact=recipe.data.image_size is None)
    with torch.no_grad():
        emb = torch.cat([task.predict(model(part)) for part in x.split(256)]) if len(x) else torch.empty(0)
    return emb, labels


def default_dir(recipe) -> Path:
    if recipe.run.dir:
        return Path(recipe.run.dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{recipe.name}-{stamp}"
    path, i = base, 2
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def check_writable_target(path: Path, force: bool) -> None:
    """A run may be written to ``path``: it is absent, empty, or ``force`` is given, and no other
    process is writing a run there (even with ``force``)."""
    if path.exists() and not path.is_dir():
        raise RunError(f"run.dir: {str(path)!r} exists and is not a folder")
    busy = lock_holder(path)
    if busy:
        raise RunError(busy)
    if path.is_dir() and _occupied(path) and not force:
        raise RunError(
            f"run.dir: {str(path)!r} is not empty; resume it with --resume {path}, "
            "pick another run.dir, or pass --force to replace its run files"
        )


def _occupied(path: Path) -> bool:
    """True when ``path`` holds anything but what a run killed during its creation leaves behind
    (an empty checkpoints/ folder, a torn temporary file, the lock file): such a folder may be reused."""
    for entry in path.iterdir():
        if (entry.name.startswith(".") and ".tmp-" in entry.name) or entry.name == LOCK_NAME:
            continue
        if entry.name == "checkpoints" and entry.is_dir() and not any(entry.iterdir()):
            continue
        return True
    return False


def open_run(path: str | Path) -> Run:
    """Reopen a run directory written by ``trainlab fit``."""
    run = Run(path)
    if not run.dir.is_dir():
        raise RunError(f"{str(run.dir)!r} is not a folder (expected a run directory from trainlab fit)")
    if not run.recipe_path.is_file():
        raise RunError(f"{str(run.dir)!r} is not a run directory (no recipe.yaml)")
    return run


__all__ = ["Run", "open_run", "refresh_reports"]


def refresh_reports(run) -> bool:
    """Write report.md and report.html of a finished run again (from its files, with the sections
    of the doctor and of `trainlab baseline` when the run has them); False when the run has no
    summary.json yet."""
    from .report.html import write_html_report
    from .report.markdown import baseline_section, write_report

    if not run.summary_path.exists():
        return False
    recipe = run.recipe()
    task = run.task(recipe)
    summary, history = run.summary(), run.metrics()
    sections = []
    if (run.dir / "doctor.json").exists():
        from .doctor.report import markdown_section

        sections = list(markdown_section(run))
    if (run.dir / "baseline.json").exists():  # `trainlab baseline` added its section to the reports
        import json

        try:
            sections += baseline_section(json.loads((run.dir / "baseline.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable baseline.json: the reports go on without its section
    write_report(run, summary, recipe, history, task, sections)
    write_html_report(run, recipe, task, history, summary, sections)
    return True
