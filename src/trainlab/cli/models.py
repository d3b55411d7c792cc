"""trainlab models [--show NAME]: the architectures of the registry, or one with its options."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--show", metavar="NAME", help="one architecture: the recipe fields it uses and its model.options")


def _input(entry) -> str:
    shape = entry.meta.get("default_input")
    return "x".join(map(str, shape)) if shape else "-"


def run(args) -> int:
    from ..models.options import describe_options
    from ..registry import MODELS

    if args.show:
        entry = MODELS.get(args.show, "--show")
        print(f"{entry.name}: {entry.help}")
        uses = entry.meta.get("uses", ())
        print(f"  recipe fields used: {', '.join('model.' + u for u in uses) if uses else 'none'}")
        act, norm = entry.meta.get("auto_activation", "relu"), entry.meta.get("auto_norm", "batch")
        print(f"  auto activation: {act}; auto norm: {norm}")
        print(f"  default input for profile: {_input(entry)}, {entry.meta.get('default_classes', 1000)} classes")
        schema = entry.meta.get("options")
        if schema is not None:
            rows = describe_options(schema)
            print("  model.options:" if rows else "  model.options: none")
            for name, default, text in rows:
                print(f"    {name} (default {default}): {text}")
        return 0
    entries = list(MODELS.entries())
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {_input(e):>11}  {e.help}")
    print("\n'trainlab models --show NAME' lists an architecture's options; "
          "'trainlab profile NAME' its layers, parameters and MACs.")
    return 0
