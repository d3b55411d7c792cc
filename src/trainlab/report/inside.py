"""Seeing inside a network (V3): first-layer filters, feature maps, saliency by vanilla gradient and
Grad-CAM, penultimate features for a t-SNE view. Pure functions of a model and an input batch;
``inside_plots`` draws them and ``trainlab show`` writes the PNGs.

Shapes: x (N, C, H, W) the model's input (before its input stage: the model normalizes);
scores (N, K) one score per class.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TrainlabError


@dataclass
class Layer:
    """A leaf module as a forward pass calls it: its dotted name, type and output shape."""

    name: str
    module: nn.Module
    kind: str
    shape: tuple[int, ...]


@contextlib.contextmanager
def capture(module: nn.Module, keep_grad: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record ``module``'s input and output tensors of the next forward passes (the last one wins)
    in the yielded dict (keys ``input``, ``output``); with ``keep_grad`` the output stays in the
    autograd graph so that a score can be differentiated with respect to it.

    A tensor output is passed on as a copy: the zoo's activations work in place (``ReLU(inplace=
    True)`` after a convolution or a norm), and would otherwise turn the recorded maps into the
    activation's; gradients still flow through the copy to the recorded tensor."""
    seen: dict[str, torch.Tensor] = {}

    def hook(mod, args, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        seen["input"] = args[0] if args else None
        seen["output"] = out if keep_grad else out.detach()
        if isinstance(output, torch.Tensor):
            return output.clone()
        return None

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def call_order(model: nn.Module, x: torch.Tensor) -> list[Layer]:
    """The leaf modules (no children) with a tensor output, in the order one forward pass of ``x``
    calls them (the order of ``named_modules`` can differ), each with its output shape."""
    order: list[Layer] = []
    handles = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None or not name:
            continue

        def hook(mod, args, output, name=name):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(out, torch.Tensor):
                order.append(Layer(name, mod, type(mod).__name__, tuple(out.shape)))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return order


def map_layers(layers: list[Layer]) -> list[Layer]:
    """The layers with feature maps (N, C, H, W) from the first layer with weights on: the
    model's input stage (normalization) is no feature."""
    first = next((i for i, layer in enumerate(layers) if any(True for _ in layer.module.parameters())), len(layers))
    return [layer for layer in layers[first:] if len(layer.shape) == 4]


def cam_layer(maps: list[Layer]) -> Layer:
    """Grad-CAM's default layer among the layers with maps: the last convolution's output after
    the layers that keep its shape (its normalization and activation), where the maps are
    still spatial; without a convolution, the last layer whose maps are larger than 1 × 1."""
    convs = [i for i, layer in enumerate(maps) if isinstance(layer.module, nn.Conv2d)]
    if convs:
        i = convs[-1]
        while i + 1 < len(maps) and maps[i + 1].shape == maps[i].shape:
            i += 1
        return maps[i]
    spatial = [layer for layer in maps if layer.shape[2] * layer.shape[3] > 1]
    return (spatial or maps)[-1]


def find_layer(layers: list[Layer], name: str | None, need_maps: bool, what: str) -> Layer:
    """The layer called ``name`` (or, when None, the default of ``what``: the first layer with
    feature maps for ``features``, :func:`cam_layer` for Grad-CAM); a TrainlabError naming the choices
    when there is none, or when ``need_maps`` and it outputs no (N, C, H, W) maps."""
    maps = map_layers(layers)
    if name is None:
        if not maps:
            raise TrainlabError(f"{what}: the model has no layer with feature maps (N, C, H, W) "
                                "(a convolutional network has)")
        return cam_layer(maps) if what == "Grad-CAM" else maps[0]
    by_name = {layer.name: layer for layer in layers}
    if name not in by_name:
        from ..errors import closest

        near = closest(name, list(by_name))
        shown = ", ".join(layer.name for layer in (maps if need_maps else layers)[:20])
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise TrainlabError(f"--layer {name!r}: no such layer{hint} (layers: {shown})")
    layer = by_name[name]
    if need_maps and len(layer.shape) != 4:
        shown = ", ".join(m.name for m in maps[:20]) or "none"
        raise TrainlabError(f"--layer {name!r}: outputs {tuple(layer.shape)}, not feature maps (N, C, H, W); "
                            f"layers with feature maps: {shown}")
    return layer


# ------------------------------------------------------------------------------------- filters
def first_layer_filters(layers: list[Layer], input_shape: tuple[int, ...]) -> tuple[str, torch.Tensor]:
    """(layer name, filters (O, C, kh, kw)) of the first layer the input meets that has weights
    over the image: a 2-D convolution's kernels, or the rows of a fully connected first layer
    reshaped to the input's (C, H, W) (the templates an MLP learns)."""
    c, h, w = input_shape[-3:]
    for layer in layers:
        weight = getattr(layer.module, "weight", None)
        if isinstance(layer.module, nn.Conv2d) and weight is not None:
            return layer.name, weight.detach().float().cpu()
        if isinstance(layer.module, nn.Linear) and weight is not None:
            if weight.shape[1] == c * h * w:
                return layer.name, weight.detach().float().cpu().reshape(-1, c, h, w)
            break
        if weight is not None and weight.dim() > 1:
            break  # a first layer of another kind (an embedding, an attention block): no image filters
    raise TrainlabError("filters: the model's first layer is neither a 2-D convolution nor a fully connected "
                        "layer over the whole image; there are no first-layer image filters to draw")


def normalize_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """Each tile (N, C, h, w) scaled to [0, 1] by its own min and max (a constant tile is 0.5)."""
    flat = tiles.reshape(len(tiles), -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    span = (hi - lo).clamp_min(1e-12)
    out = (tiles - lo[:, None, None, None]) / span[:, None, None, None]
    out[(hi - lo) <= 1e-12] = 0.5
    return out


def tile_grid(tiles: torch.Tensor, cols: int | None = None, pad: int = 1, fill: float = 1.0) -> torch.Tensor:
    """Tiles (N, C, h, w) laid out row by row in a grid (C, rows·(h+pad)+pad, cols·(w+pad)+pad),
    ``cols`` defaulting to ceil(sqrt(N)), the gaps filled with ``fill``."""
    import math

    n, c, h, w = tiles.shape
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), fill, dtype=tiles.dtype)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = tiles[i]
    return grid


def filter_image(filters: torch.Tensor, cols: int | None = None) -> torch.Tensor:
    """The image (h, w, 3) in [0, 1] of first-layer filters (O, C, kh, kw): each filter scaled to
    its own range, shown in colour for 3 input channels and in grey otherwise (the mean over the
    input channels); white gaps between the filters."""
    shown = filters if filters.shape[1] == 3 else filters.mean(1, keepdim=True)
    grid = tile_grid(normalize_tiles(shown), cols)
    return grid.expand(3, -1, -1).permute(1, 2, 0).contiguous() if grid.shape[0] == 1 else grid.permute(1, 2, 0)


# --------------------------------------------------------------------------------- feature maps
def feature_maps(model: nn.Module, x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """The output (C, h, w) of ``layer`` for the single input ``x`` (1, C, H, W)."""
    with capture(layer) as seen, torch.no_grad():
        model(x)
    return seen["output"][0].float().cpu()


# ------------------------------------------------------------------------------------- saliency
def class_scores(outputs: torch.Tensor) -> torch.Tensor:
    """Scores (N, K) from a model's outputs: class logits as they are; per-pixel class logits
    (N, K, H, W) summed over the pixels (how much the image supports class k overall)."""
    if outputs.dim() == 2:
        return outputs
    if outputs.dim() == 4:
        return outputs.sum((2, 3))
    raise TrainlabError(f"saliency: the model outputs {tuple(outputs.shape)}; expected class scores (N, K) "
                        "or per-pixel class scores (N, K, H, W)")


def vanilla_gradient(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Saliency (N, H, W): |d score_target / d x|, the largest over the input channels (Simonyan et
    al.'s vanilla gradient)."""
    x = x.detach().float().clone().requires_grad_(True)
    score = class_scores(model(x))[:, target].sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad.abs().amax(1)


def grad_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: int) -> torch.Tensor:
    """Grad-CAM (N, H, W) of class ``target`` at ``layer`` (its output A (N, K, h, w)):
    alpha_k = the spatial mean of d score / d A_k, map = ReLU(sum_k alpha_k A_k), up-sampled
    bilinearly to the input's H × W. Not rescaled: 0 where nothing supports the class."""
    x = x.detach().float().requires_grad_(True)  # so that a layer before any weight has a gradient too
    with capture(layer, keep_grad=True) as seen:
        score = class_scores(model(x))[:, target].sum()
    acts = seen["output"]
    (grads,) = torch.autograd.grad(score, acts)
    alpha = grads.mean((2, 3), keepdim=True)
    cam = torch.relu((alpha * acts).sum(1, keepdim=True))
    up = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return up[:, 0].detach()


# ------------------------------------------------------------------------------------ embeddings
def penultimate(layers: list[Layer]) -> Layer:
    """The last fully connected layer a forward pass calls: its input is the penultimate features."""
    linear = [layer for layer in layers if isinstance(layer.module, nn.Linear)]
    if not linear:
        raise TrainlabError("embeddings: the model has no fully connected layer whose input is the "
                            "penultimate features")
    return linear[-1]


def layer_inputs(model: nn.Module, batches, layer: nn.Module, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs of ``layer`` flattened to (N, D), targets (N,)) over ``batches`` (dicts with
    ``input`` and ``target``) until ``limit`` samples."""
    feats, targets = [], []
    n = 0
    with capture(layer) as seen, torch.no_grad():
        for batch in batches:
            model(batch["input"])
            feats.append(seen["input"].detach().float().reshape(len(batch["input"]), -1).cpu())
            targets.append(batch["target"].reshape(-1).cpu())
            n += len(batch["input"])
            if n >= limit:
                break
    if not feats:
        raise TrainlabError("embeddings: the split has no samples")
    return torch.cat(feats)[:limit], torch.cat(targets)[:limit]


def tsne_2d(features: torch.Tensor, seed: int = 0):
    """A 2-D t-SNE of features (N, D) (scikit-learn, PCA initialisation, perplexity 30 or less for
    small N); a NumPy array (N, 2)."""
    import numpy as np
    from sklearn.manifold import TSNE

    x = features.numpy().astype(np.float64)
    n = len(x)
    if n < 5:
        raise TrainlabError(f"embeddings: {n} samples; t-SNE needs at least 5")
    perplexity = float(min(30.0, (n - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
