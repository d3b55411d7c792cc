"""trainlab augment [RECIPE] [key=value ...] [--n 16] [--epoch 0] --out grid.png

The library (:mod:`trainlab.data.preview`) builds the batch and draws the grid in memory; writing
the file (PNG encoding, the ``--out`` policy, the atomic write and its error) happens here, in the
CLI, so that the data layer never imports the CLI.
"""
from __future__ import annotations

from pathlib import Path


def add_arguments(p):
    p.add_argument("recipe", nargs="?", help="built-in recipe name or YAML path (default: digits-cnn)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides parsed as YAML, e.g. 'data.augment=[hflip, mosaic]'")
    p.add_argument("--n", type=int, default=16,
                   help="number of samples in the grid (default 16; at most the training split)")
    p.add_argument("--epoch", type=int, default=0, help="epoch whose order and augmentation to show (default 0)")
    p.add_argument("--out", required=True, help="PNG file to write; missing folders are created")


def write_grid(recipe, out: str | Path, n: int = 16, epoch: int = 0) -> tuple[Path, int]:
    """Write the preview grid as a PNG file; returns its path and the number of samples drawn
    (``n``, or the size of the training split if that is smaller).

    ``out`` follows the output policy of the CLI (:mod:`trainlab.cli.outputs`, errors name
    ``--out``): it is checked before any work, missing folders are created, and the file is
    written atomically.
    """
    import io

    from ..atomic import write_bytes
    from ..data.preview import augmented_batch, grid_image
    from ..errors import RunError
    from .outputs import check_output, make_parent

    from ..tasks import build_task

    path = check_output(out, "--out")
    batch, info = augmented_batch(recipe, n, epoch)
    build_task(recipe, info)  # the recipe's task checks it as fit would (segmentation refuses label mixing)
    image = io.BytesIO()
    grid_image(batch, info).save(image, format="PNG")
    try:
        write_bytes(make_parent(path, "--out"), image.getvalue())
    except OSError as err:
        raise RunError(f"--out: cannot write {str(path)!r} ({err.strerror or err})") from None
    return path, len(batch["input"])


def run(args) -> int:
    from ..errors import RecipeError
    from ..recipe import check_names, load_recipe
    from .fit import split_recipe_and_overrides
    from .outputs import check_output

    check_output(args.out, "--out")
    if args.n < 1:
        raise RecipeError(f"--n: expected at least 1 sample, got {args.n}")
    if args.epoch < 0:
        raise RecipeError(f"--epoch: expected 0 or more, got {args.epoch}")
    source, overrides = split_recipe_and_overrides(args.recipe, args.overrides)
    recipe = load_recipe(source, overrides)
    check_names(recipe)
    path, count = write_grid(recipe, args.out, args.n, args.epoch)
    ops = ", ".join(str(s if isinstance(s, str) else s.get("name")) for s in recipe.data.augment) or "none"
    mix = ", ".join(str(s if isinstance(s, str) else s.get("name")) for s in recipe.data.batch_augment) or "none"
    print(f"wrote {path} ({count} samples of {recipe.data.name}; augment: {ops}; batch_augment: {mix})")
    return 0
