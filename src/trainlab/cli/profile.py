"""trainlab profile MODEL [--input CxHxW] [--classes N] [--batch B] [key=value ...]

Per-layer output shapes, parameters and multiply-accumulates of an architecture (M12). Overrides
set model fields (``width=64``, ``options.stem=small``, ``activation=prelu``).
"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("model", help="architecture name (see trainlab models)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="model fields, e.g. width=64 options.stem=small")
    p.add_argument("--input", metavar="SHAPE", help="one sample: CxHxW for images, TxD for a sequence of feature "
                   "vectors, T for a token sequence (D features for flat models) (default: the architecture's)")
    p.add_argument("--classes", type=int, help="number of classes / vocabulary size (default: the architecture's)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the profiled input (default 1)")


def parse_shape(text: str) -> tuple[int, ...]:
    from ..errors import TrainlabError

    try:
        shape = tuple(int(part) for part in text.lower().replace("×", "x").split("x"))
    except ValueError:
        shape = ()
    if not shape or len(shape) > 3 or any(s < 1 for s in shape):
        raise TrainlabError(f"--input: expected CxHxW (e.g. 3x224x224), T or TxD with positive sizes, got {text!r}")
    return shape


def run(args) -> int:
    from ..data.bundle import DataInfo
    from ..errors import RecipeError, TrainlabError
    from ..models.profile import format_profile, profile_model
    from ..recipe import load_recipe, override_pairs
    from ..registry import MODELS

    entry = MODELS.get(args.model, "model")
    shape = parse_shape(args.input) if args.input else tuple(entry.meta.get("default_input", (3, 224, 224)))
    classes = args.classes if args.classes is not None else entry.meta.get("default_classes", 1000)
    if classes < 1 or args.batch < 1:
        raise TrainlabError("--classes and --batch: expected positive numbers")
    # One number is a token sequence for token models (char_rnn) and a flat vector otherwise (mlp).
    tokens = len(shape) == 1 and len(entry.meta.get("default_input", ())) == 1
    kind = "sequence" if tokens or len(shape) == 2 else ("flat" if len(shape) == 1 else "image")
    extra = {"vocab_size": classes} if tokens else {}
    info = DataInfo(shape, classes, [str(i) for i in range(classes)], kind=kind, extra=extra)
    overrides = {"model.name": args.model}
    for key, value in override_pairs(args.overrides).items():
        overrides[key if key.startswith("model.") else f"model.{key}"] = value
    tasks = entry.meta.get("tasks")
    recipe = load_recipe({"task": tasks[0] if tasks else "classification"}, overrides)
    try:
        profile = profile_model(recipe, info, args.batch)
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RecipeError(f"--input: {args.model} cannot take a {'x'.join(map(str, shape))} input ({first[:160]})") from None
    print(format_profile(profile, f"{args.model}: input {'x'.join(map(str, shape))}, {classes} classes"))
    return 0
