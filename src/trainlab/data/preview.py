"""Augmentation preview (D11): a grid of augmented training samples with boxes and masks drawn.

The grid shows what the first batch of an epoch sees: the samples of that epoch's order, each
transformed with its own (seed, epoch, index) generator (:func:`trainlab.data.loader.load_sample`,
as in the loader), then the batch transforms on the training device (``train.device``) with the
(seed, epoch, batch 0) generator of that device, as the trainer applies them. With ``n`` equal to
``data.batch_size`` it is exactly the trainer's first batch; with another ``n`` the per-sample
transforms are the same but the batch transforms draw for a batch of ``n`` (other rectangles and
mixing partners). Each tile is captioned with its label (soft labels after mixing show their two
largest weights); instance masks (or the semantic mask) are overlaid and boxes are drawn in the
colour of their class.

This module builds the batch and draws the grid as an in-memory PIL image; writing it to a file
(PNG encoding, the ``--out`` policy, the atomic write) is the CLI's job
(:func:`trainlab.cli.augment.write_grid`): data sits below the CLI and never imports it.
"""
from __future__ import annotations

import math
from typing import Any

import torch

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255)]
MIN_TILE = 128  # small images (8x8 digits) are enlarged so that a tile is readable


def augmented_batch(recipe, n: int = 16, epoch: int = 0) -> tuple[dict[str, Any], Any]:
    """The first ``n`` samples of ``epoch`` as the trainer would see them, and the DataInfo.

    Fewer than ``n`` when the training split is smaller. ``data.batch_size`` plays no part.
    """
    from ..rng import generator
    from ..device import resolve_device, to_device
    from . import build_data
    from .batch import build_batch_transforms
    from .loader import epoch_order, load_sample
    from .samples import collate
    from .transforms import build_transforms

    # The preview trains nothing: 'full' keeps build_data from noting a batch larger than the
    # training split, and changes nothing here.
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"batch_size": "full"})})
    # The preview draws boxes and masks even for classification, and shows inputs before the model's
    # input stage: no normalization statistics or whitening are needed.
    bundle = build_data(recipe, annotations=True, statistics=False)
    source, info = bundle.train, bundle.info
    transform = build_transforms(recipe.data.augment, info, recipe.data.forbid, source=source)
    order = epoch_order(len(source), recipe.seed, epoch, shuffle=True)[: min(n, len(source))]
    batch = collate([load_sample(source, transform, recipe.seed, epoch, i) for i in order.tolist()])
    batch["input"] = batch["input"].clone()  # batch ops may write in place; sources may cache
    ops = build_batch_transforms(recipe.data.batch_augment, info)
    if ops is not None:
        # On the training device with that device's generator: a CUDA generator draws other
        # numbers than a CPU one seeded alike, and the fills take another path there.
        device = resolve_device(recipe.train.device)
        batch = _to_cpu(ops(to_device(batch, device), generator(recipe.seed, "batch", epoch, 0, device=device)))
    return batch, info


def _to_cpu(obj: Any) -> Any:
    """Tensors anywhere in a batch (annotations included) moved to the CPU, to be drawn."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _caption(target: torch.Tensor, names: list[str]) -> str:
    if target.dim() == 0:
        return names[int(target)]
    top = torch.topk(target, min(2, len(target)))
    parts = [f"{names[int(i)]} {float(v):.2f}" for v, i in zip(top.values, top.indices) if float(v) > 0.005]
    return " / ".join(parts)


def render_tile(image: torch.Tensor, ann: dict[str, Any] | None, semantic: torch.Tensor | None, info) -> torch.Tensor:
    """(3, h, w) uint8 picture of one sample with its masks and boxes drawn."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    x = image.as_subclass(torch.Tensor).float()
    x = (x * (255.0 / info.max_value)).round().clamp(0, 255).to(torch.uint8)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    h, w = x.shape[1:]
    scale = max(1, math.ceil(MIN_TILE / max(h, w)))
    if scale > 1:
        x = x.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    x = x.contiguous()
    masks, colours = None, []
    if ann is not None and "masks" in ann and len(ann["masks"]):
        masks = ann["masks"].as_subclass(torch.Tensor).bool()
        colours = [PALETTE[int(c) % len(PALETTE)] for c in ann["labels"]]
    elif semantic is not None:
        ids = [int(v) for v in torch.unique(semantic) if int(v) != 0 and int(v) != 255]
        masks = torch.stack([semantic == v for v in ids]) if ids else None
        colours = [PALETTE[(v - 1) % len(PALETTE)] for v in ids]
    if masks is not None:
        if scale > 1:
            masks = masks.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        x = draw_segmentation_masks(x, masks, alpha=0.35, colors=colours)
    if ann is not None and "boxes" in ann and len(ann["boxes"]):
        boxes = ann["boxes"].as_subclass(torch.Tensor).float() * scale
        names = [info.class_names[int(c)] for c in ann["labels"]]
        x = draw_bounding_boxes(x, boxes, labels=names, colors=[PALETTE[int(c) % len(PALETTE)] for c in ann["labels"]],
                                width=1)
    return x


def draw_detections(image: torch.Tensor, detections: dict[str, torch.Tensor], class_names: list[str], info) -> "np.ndarray":
    """(H', W', 3) uint8 picture of ``image`` with each detection's box (and mask, where the
    detections carry ``masks`` (M, H, W)) in its class colour, labelled "<class> <score>" (V4);
    small images are enlarged as in the preview grid."""
    boxes, scores, labels = detections["boxes"], detections["scores"], detections["labels"]
    names = [f"{class_names[int(c)]} {float(s):.2f}" for c, s in zip(labels, scores)]
    colours = [PALETTE[int(c) % len(PALETTE)] for c in labels]
    tile = render_tile(image, None, None, info)
    scale = tile.shape[1] // image.shape[1]
    if len(boxes) and "masks" in detections:
        from torchvision.utils import draw_segmentation_masks

        masks = detections["masks"].bool()
        if scale > 1:
            masks = masks.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        tile = draw_segmentation_masks(tile, masks, alpha=0.45, colors=colours)
    if len(boxes):
        from torchvision.utils import draw_bounding_boxes

        tile = draw_bounding_boxes(tile, boxes.float() * scale, labels=names, width=2, colors=colours)
    return tile.permute(1, 2, 0).contiguous().numpy()


def augment_grid(recipe, n: int = 16, epoch: int = 0):
    """A PIL image: the grid of :func:`augmented_batch` with captions."""
    return grid_image(*augmented_batch(recipe, n, epoch))


def grid_image(batch: dict[str, Any], info):
    """The captioned grid image (PIL) of a batch from :func:`augmented_batch`."""
    from PIL import Image, ImageDraw

    anns = batch.get("annotations")
    sem = batch.get("semantic")
    tiles = [render_tile(batch["input"][i], anns[i] if anns else None, sem[i] if sem is not None else None, info)
             for i in range(len(batch["input"]))]
    th, tw = tiles[0].shape[1:]
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    caption, pad = 14, 4
    grid = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + caption + pad) + pad), (32, 32, 32))
    draw = ImageDraw.Draw(grid)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (tw + pad), pad + r * (th + caption + pad)
        grid.paste(Image.fromarray(tile.permute(1, 2, 0).numpy()), (x0, y0))
        draw.text((x0 + 2, y0 + th + 1), _caption(batch["target"][i], info.class_names), fill=(235, 235, 235))
    return grid
