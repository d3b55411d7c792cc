"""trainlab recipes [--show NAME]: the built-in recipes, one line each; or one recipe (a built-in
name or a YAML path) resolved, every key a recipe file leaves out filled in with the schema's
default."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--show", metavar="NAME",
                   help="print a recipe (built-in name or YAML path) with every default filled in")


def run(args) -> int:
    from ..recipe import builtin_recipes, read_recipe_dict, recipe_summary, validate_recipe

    recipes = builtin_recipes()
    if args.show:
        recipe = validate_recipe(read_recipe_dict(args.show))
        print(recipe.to_yaml(), end="")
        return 0
    width = max(len(n) for n in recipes)
    for name in sorted(recipes):
        print(f"{name:<{width}}  {recipe_summary(recipes[name])}")
    return 0
