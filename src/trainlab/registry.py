"""Name → builder tables, one per pipeline stage.

An entry is added by decorating its builder::

    @MODELS.register("cnn", help="conv-norm-act blocks, pooling, dropout, linear head")
    def build_cnn(cfg, info): ...

Looking up an unknown name raises a :class:`~trainlab.errors.RecipeError` that lists the closest
known names. Each stage's package imports its modules on first use (``ensure_loaded``), so a
process that never builds a model never pays for importing the zoo.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import unknown_name


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Any]
    help: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """A table of named builders for one kind of thing (``model``, ``optimizer`` ...)."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._prefixes: dict[str, Entry] = {}  # "timm:" -> builder taking (rest_of_name, ...)
        # Modules whose import fills this table; imported lazily on the first lookup.
        self._modules = list(modules)
        self._loaded = not modules

    def register(self, name: str | None = None, *, help: str = "", **meta: Any):
        def deco(fn):
            key = name or fn.__name__
            if key in self._entries and self._entries[key].fn is not fn:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            doc = help or (fn.__doc__ or "").strip().splitlines()[0:1]
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._entries[key] = Entry(key, fn, text, dict(meta))
            return fn

        return deco

    def register_prefix(self, prefix: str, fn: Callable[..., Any], help: str = "", **meta: Any) -> None:
        """Names ``prefix<rest>`` resolve to ``fn(rest, ...)`` (e.g. ``timm:<any timm model>``)."""
        self._prefixes[prefix] = Entry(prefix + "<name>", fn, help, dict(meta))

    def ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._modules:
            importlib.import_module(mod)

    def get(self, name: str, field: str | None = None) -> Entry:
        self.ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            for prefix, entry in self._prefixes.items():
                if name.startswith(prefix) and len(name) > len(prefix):
                    rest = name[len(prefix):]
                    return Entry(name, lambda *a, _f=entry.fn, _r=rest, **k: _f(_r, *a, **k), entry.help, entry.meta)
            known = list(self._entries) + [e.name for e in self._prefixes.values()]
            raise unknown_name(self.kind, name, known, field) from None

    def __contains__(self, name: str) -> bool:
        self.ensure_loaded()
        return name in self._entries or any(name.startswith(p) and len(name) > len(p) for p in self._prefixes)

    def names(self) -> list[str]:
        self.ensure_loaded()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        """Registered entries by name, then the prefix entries (``timm:<name>``)."""
        self.ensure_loaded()
        for key in sorted(self._entries):
            yield self._entries[key]
        yield from self._prefixes.values()


# Each stage's catalog module imports the modules that fill its table.
MODELS = Registry("model", ("trainlab.models.catalog",))
DATASETS = Registry("data set", ("trainlab.data.catalog",))
TRANSFORMS = Registry("transform", ("trainlab.data.transforms",))
BATCH_TRANSFORMS = Registry("batch transform", ("trainlab.data.batch",))
LOSSES = Registry("loss", ("trainlab.losses",))
OPTIMIZERS = Registry("optimizer", ("trainlab.optim.optimizers",))
SCHEDULES = Registry("schedule", ("trainlab.optim.schedules",))
TASKS = Registry("task", ("trainlab.tasks.catalog",))
