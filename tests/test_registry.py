"""The registry: decorated builders, lazy loading, closest-name suggestions."""
from __future__ import annotations

import pytest

from trainlab.errors import RecipeError
from trainlab.registry import Registry


def test_register_get_and_suggest():
    reg = Registry("widget")

    @reg.register("resnet18", help="a widget")
    def build():
        return 1

    assert reg.get("resnet18").fn() == 1
    assert reg.get("resnet18").help == "a widget"
    assert "resnet18" in reg and reg.names() == ["resnet18"]
    with pytest.raises(RecipeError, match="unknown widget 'resnet19'; did you mean 'resnet18'"):
        reg.get("resnet19")


def test_double_registration_is_refused():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError):
        reg.register("a")(lambda: 2)


def test_lazy_modules_fill_the_table():
    reg = Registry("thing", ("trainlab.models.catalog",))
    assert reg.names() == []  # the catalog registers into MODELS, not into this table
    from trainlab.registry import MODELS

    assert {"mlp", "cnn"} <= set(MODELS.names())
