"""trainlab: deep-learning training for computer vision, with a training doctor.

The public API mirrors the CLI::

    import trainlab
    run = trainlab.fit("digits-cnn", **{"train.epochs": 5})
    run.evaluate("test")
    trainlab.open_run(run.dir).predict(arrays)

Heavy modules (torch, torchvision, matplotlib) load on first use, not on ``import trainlab``.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["fit", "evaluate", "predict", "open_run", "Recipe", "load_recipe", "TrainlabError"]

from .errors import TrainlabError


def __getattr__(name: str):
    if name in ("fit", "evaluate", "predict"):
        from . import api

        return getattr(api, name)
    if name == "open_run":
        from .run import open_run

        return open_run
    if name in ("Recipe", "load_recipe"):
        from . import recipe

        return getattr(recipe, name)
    raise AttributeError(f"module 'trainlab' has no attribute {name!r}")
