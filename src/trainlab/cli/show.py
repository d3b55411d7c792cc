"""trainlab show RUN filters|features|saliency|embeddings [--input FILE] [--layer NAME]

Seeing inside a trained network (V3): the first layer's filters as an image grid, the feature maps
of a layer for one input, saliency (vanilla gradient and Grad-CAM) for one input, and a t-SNE view
of the penultimate features of a split coloured by class. Each view is a PNG in the run's plots/
(``filters.png``, ``features-<layer>.png``, ``saliency.png``, ``embeddings.png``), and the run's
report.md and report.html are written again to include it.
"""
from __future__ import annotations

VIEWS = ("filters", "features", "saliency", "embeddings")


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("view", metavar="VIEW", help="filters, features, saliency or embeddings")
    p.add_argument("--input", metavar="FILE", help="image or .npy file to look at (features, saliency; default: "
                                                   "the first sample of --split)")
    p.add_argument("--layer", metavar="NAME", help="layer (dotted module name) of the feature maps (default: the "
                                                   "first with maps) or of Grad-CAM (default: the last with maps)")
    p.add_argument("--class", dest="target", metavar="NAME", help="class the saliency explains (default: the "
                                                                  "predicted one)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="split of the default input and of the t-SNE samples (default test)")
    p.add_argument("--n", type=int, default=500, help="samples in the t-SNE view (default 500)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")


def run(args) -> int:
    from ..errors import TrainlabError, closest
    from ..lock import acquire
    from ..run import open_run, refresh_reports

    if args.view not in VIEWS:
        near = closest(args.view, VIEWS)
        raise TrainlabError(f"view {args.view!r}: expected one of {', '.join(VIEWS)}"
                            + (f" (did you mean {' or '.join(near)}?)" if near else ""))
    if args.n < 5:
        raise TrainlabError(f"--n: expected at least 5 samples for t-SNE, got {args.n}")
    if args.input is not None and args.view in ("filters", "embeddings"):
        raise TrainlabError(f"--input: {args.view} does not look at one input (it is for features and saliency)")
    run_dir = open_run(args.run)
    with acquire(run_dir.dir, "show"):  # report.html and report.md are rewritten: one writer at a time
        path = draw(run_dir, args)
        refreshed = refresh_reports(run_dir)
    print(f"wrote {path}" + ("; report.md and report.html include it" if refreshed else
                             " (the run has no summary yet: its reports are written when it finishes)"))
    return 0


def _sample(run, recipe, task, info, args):
    """(input batch (1, C, H, W), its name, its true class index or None)."""
    import torch

    from ..errors import TrainlabError
    from ..inputs import gather_inputs

    if args.input is not None:
        x, names = gather_inputs([args.input], info)
        return x[:1].float(), names[0], None
    batch = next(iter(_batches(recipe, task, args.split, 1)), None)
    if batch is None:
        raise TrainlabError(f"--split {args.split}: the run's {args.split} split is empty; give --input FILE")
    target = batch.get("target")
    label = int(target[0]) if isinstance(target, torch.Tensor) and target.dim() == 1 else None
    return batch["input"][:1].float(), f"{args.split} sample 0", label


def _batches(recipe, task, split: str, size: int):
    import torch

    from ..data import build_data
    from ..engine.trainer import eval_loader

    bundle = build_data(recipe, statistics=False)  # the model's input stage holds the statistics
    loader = eval_loader(bundle.split(split), size, recipe, torch.device("cpu"), task)
    return loader.batches(0) if loader is not None else iter(())


def draw(run, args):
    """Compute the view and write its PNG into ``run.plots``; returns the path."""
    import torch

    from ..errors import TrainlabError
    from ..report import inside
    from ..report.figures import gc_paused, save

    model, task, recipe, info, _ = run.load_model(args.checkpoint)
    model = model.float().cpu().eval()
    if info.kind == "sequence":
        raise TrainlabError(f"run {run.dir} was trained on token sequences; show draws image models")
    classes = task.model_info(info).class_names
    run.plots.mkdir(parents=True, exist_ok=True)
    x, name, truth = _sample(run, recipe, task, info, args)
    if x.dim() != 4:
        raise TrainlabError(f"show: the run's inputs have shape {tuple(x.shape)}; expected images (N, C, H, W)")
    layers = inside.call_order(model, x)
    with gc_paused():
        if args.view == "filters":
            from ..report.inside_plots import filters_figure

            layer, filters = inside.first_layer_filters(layers, tuple(x.shape[1:]))
            return save(filters_figure(inside.filter_image(filters), layer, tuple(filters.shape)),
                        run.plots / "filters.png")
        if args.view == "features":
            from ..report.html import anchor
            from ..report.inside_plots import features_figure

            layer = inside.find_layer(layers, args.layer, need_maps=True, what="features")
            maps = inside.feature_maps(model, x, layer.module)
            return save(features_figure(maps, x[0], layer.name, name), run.plots / f"features-{anchor(layer.name)}.png")
        if args.view == "saliency":
            from ..report.inside_plots import saliency_figure

            if not task.labels_per_sample and task.name != "segmentation":
                raise TrainlabError(f"saliency: the {task.name} task's outputs are not class scores")
            with torch.no_grad():
                scores = inside.class_scores(model(x))
            target = _target(args.target, classes, int(scores[0].argmax()))
            grad = inside.vanilla_gradient(model, x, target)[0]
            cam_layer = None
            if inside.map_layers(layers) or args.layer is not None:
                cam_layer = inside.find_layer(layers, args.layer, need_maps=True, what="Grad-CAM")
            cam = inside.grad_cam(model, x, cam_layer.module, target)[0] if cam_layer else None
            label = classes[target] if target < len(classes) else str(target)
            if truth is not None:
                name += f", true class '{classes[truth] if truth < len(classes) else truth}'"
            return save(saliency_figure(x[0], grad, cam, label, cam_layer.name if cam_layer else None, name),
                        run.plots / "saliency.png")
        # embeddings
        from ..report.plots import scatter_figure

        if not task.labels_per_sample and task.name != "embedding":
            raise TrainlabError(f"embeddings: the {task.name} task has no one class per sample to colour by")
        layer = inside.penultimate(layers)
        feats, targets = inside.layer_inputs(model, _batches(recipe, task, args.split, 256), layer.module, args.n)
        xy = inside.tsne_2d(feats, recipe.seed)
        title = f"t-SNE of the penultimate features ({args.split}, {len(feats)} samples, input of {layer.name})"
        return save(scatter_figure(xy[:, 0].tolist(), xy[:, 1].tolist(), targets.tolist(), classes or None, title),
                    run.plots / "embeddings.png")


def _target(name: str | None, classes: list[str], predicted: int) -> int:
    from ..errors import TrainlabError, closest

    if name is None:
        return predicted
    if name in classes:
        return classes.index(name)
    near = closest(name, classes)
    hint = f"; did you mean {' or '.join(near)}?" if near else f" (classes: {', '.join(classes[:20])})"
    raise TrainlabError(f"--class {name!r}: not a class of this run{hint}")
