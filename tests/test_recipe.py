"""The recipe: YAML, dotted overrides, validation with one-line errors naming the field."""
from __future__ import annotations

import pytest

from trainlab.errors import RecipeError
from trainlab.recipe import Recipe, builtin_recipes, check_names, load_recipe, override_pairs, parse_override


def test_default_recipe_is_digits_cnn():
    r = load_recipe()
    assert r.name == "digits-cnn"
    assert r.data.name == "digits" and r.model.name == "cnn"


def test_every_builtin_recipe_validates_and_names_resolve():
    for name in builtin_recipes():
        r = load_recipe(name)
        check_names(r)
        assert r.name


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("optim.lr=0.01", ["optim", "lr"], 0.01),
        ("data.augment=[hflip,cutout]", ["data", "augment"], ["hflip", "cutout"]),
        ("train.early_stop=null", ["train", "early_stop"], None),
        ("data.split.val=0.2", ["data", "split", "val"], 0.2),
        ("name=my run", ["name"], "my run"),
    ],
)
def test_override_values_are_yaml(text, key, value):
    assert parse_override(text) == (key, value)


def test_override_pairs_from_strings_or_a_mapping():
    """The one place overrides become dotted keys: strings parsed as YAML (the last of a key wins), a mapping
    copied, None empty; a string without '=' is a one-line recipe error."""
    assert override_pairs(["optim.lr=0.01", "data.augment=[hflip]", "optim.lr=0.1"]) == {
        "optim.lr": 0.1, "data.augment": ["hflip"]}
    mapping = {"train.epochs": 3}
    pairs = override_pairs(mapping)
    assert pairs == mapping and pairs is not mapping
    assert override_pairs(None) == {} and override_pairs([]) == {}
    with pytest.raises(RecipeError, match=r"^override 'optim.lr': expected key=value"):
        override_pairs(["optim.lr"])


def test_overrides_apply_and_null_disables_a_section():
    r = load_recipe("digits-cnn", ["optim.lr=0.01", "train.early_stop=null", "data.augment=[hflip]"])
    assert r.optim.lr == 0.01
    assert r.train.early_stop is None
    assert r.data.augment == ["hflip"]
    # Setting a key inside a disabled section brings it back with defaults for the rest.
    r2 = load_recipe("digits-cnn", ["train.early_stop=null", "train.early_stop.patience=2"])
    assert r2.train.early_stop.patience == 2 and r2.train.early_stop.monitor is None  # the task's own


def test_keyword_overrides_and_round_trip_through_yaml(tmp_path):
    r = load_recipe("digits-cnn", {"train.epochs": 3, "seed": 7})
    path = tmp_path / "r.yaml"
    path.write_text(r.to_yaml())
    again = load_recipe(path)
    assert again == r


@pytest.mark.parametrize(
    "override, needles",
    [
        (["optim.lr=0"], ["optim.lr", "greater than 0", "got 0"]),
        (["optim.lr=-1"], ["optim.lr", "greater than 0"]),
        (["optim.lr=nan"], ["optim.lr"]),
        (["train.epochs=0"], ["train.epochs", "greater than or equal to 1"]),
        (["data.batch_size=0"], ["data.batch_size", ">= 1"]),
        (["data.split.val=0.5", "data.split.test=0.5"], ["data", "val + test must be < 1"]),
        (["train.epochs=abc"], ["train.epochs", "integer"]),
        (["train.epoch=3"], ["train.epoch", "unknown key", "did you mean train.epochs"]),
        (["optim.lrr=3"], ["optim.lrr", "did you mean optim.lr"]),
        (["train.early_stop.patiense=3"], ["train.early_stop.patiense", "did you mean train.early_stop.patience"]),
        (["data.workers=-1"], ["data.workers"]),
        (["seed=-5"], ["seed"]),
        (["train.device=gpu"], ["train.device", "auto, cpu, cuda"]),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_field(override, needles):
    with pytest.raises(RecipeError) as err:
        load_recipe("digits-cnn", override)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_unknown_registry_names_suggest_the_closest():
    for override, needle in [
        ("model.name=cnnn", "did you mean 'cnn'"),
        ("data.name=digit", "did you mean 'digits'"),
        ("optim.name=adan", "'adam'"),
        ("schedule.name=cosin", "'cosine'"),
    ]:
        with pytest.raises(RecipeError) as err:
            check_names(load_recipe("digits-cnn", [override]))
        assert needle in str(err.value), str(err.value)


def test_unknown_recipe_and_yaml_errors(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe 'digits-cn'.*did you mean 'digits-cnn'"):
        load_recipe("digits-cn")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [0.1\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: line \d+ column \d+: YAML syntax error"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="expected a mapping"):
        load_recipe(listy)


def test_recipe_sections_are_the_documented_ones():
    assert {"name", "seed", "task", "data", "model", "loss", "optim", "schedule", "train", "run"} <= set(
        Recipe.model_fields
    )


@pytest.mark.parametrize("override", ["loss.options.gamma=2", "schedule.options.warm=1", "data.options.seq_len=8"])
def test_free_form_option_dicts_are_gone(override):
    """Recipe sections reject unknown keys: loss.options, schedule.options and data.options (nothing read the first
    two; the text data set's options are the typed data.text section) are unknown keys, not silently ignored."""
    section = override.split(".")[0]
    with pytest.raises(RecipeError, match=rf"^{section}.options: unknown key.*known here: "):
        load_recipe("digits-mlp", [override])
