"""The live run report (V5): report.html rewritten at the end of every epoch of ``trainlab fit``.

The page of a run in progress draws its curves as inline SVG from the history (no matplotlib) and
embeds no PNG, so rendering it costs milliseconds; the bytes go to the trainer's background
durable writer like metrics.jsonl, so the loop never waits on the disk and a reader never sees a
torn file. ``api.finish`` replaces it with the finished run's page.
"""
from __future__ import annotations

from ..engine.callbacks import Callback
from .html import HTML_NAME, environment, recipe_yaml, render_report


class LiveReport(Callback):
    """Keeps ``<run>/report.html`` showing the run so far."""

    name = "live_report"

    def __init__(self, run, recipe):
        self.run = run
        self.recipe = recipe
        self.env: dict[str, str] | None = None
        self.recipe_text: str | None = None

    def write(self, trainer, status: str | None = None) -> None:
        st = trainer.state
        best = (st.best_epoch, trainer.monitor, st.best_value) if st.best_epoch is not None else None
        text = render_report(self.run, self.recipe, trainer.task, st.history, None, (), self.env,
                             self.recipe_text, status, best)
        trainer.writer.submit(self.run.dir / HTML_NAME, text.encode())

    def on_fit_start(self, trainer):
        self.env = environment(trainer.device)
        self.recipe_text = recipe_yaml(self.run, self.recipe)  # the recipe does not change during a fit
        self.write(trainer)

    def on_epoch_end(self, trainer, record):
        self.write(trainer)

    def on_interrupt(self, trainer):
        self.write(trainer, f"Training was stopped; `trainlab fit --resume {self.run.dir}` continues it")
