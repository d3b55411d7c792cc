"""DETR and Deformable DETR (M9, L7, K2): Hungarian matching, GIoU, the set loss, multi-scale
deformable attention, the detector contract and both built-in recipes end to end.

Matching is checked against brute force over every assignment, GIoU against
torchvision.ops.generalized_box_iou, deformable attention against a direct loop over points with
bilinear interpolation written out (forward and gradients).
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchvision.ops import generalized_box_iou as tv_giou

import trainlab.models.catalog  # noqa: F401  registers detr and deformable_detr
from trainlab.data.bundle import DataInfo
from trainlab.errors import RecipeError
from trainlab.models.deformable_attention import MSDeformableAttention, deformable_attention
from trainlab.models.positional import sine_encoding
from trainlab.models.set_loss import SetLossWeights, generalized_box_iou, hungarian, match_queries, set_loss
from trainlab.recipe import ModelConfig
from trainlab.registry import MODELS

CLASSES = 3


def info(classes: int = CLASSES, side: int = 32) -> DataInfo:
    return DataInfo((3, side, side), classes, [f"c{i}" for i in range(classes)])


def make(name: str, depth: int = 3, **options):
    cfg = ModelConfig(name=name, width=8, depth=depth, options={"hidden": 16, "heads": 2, "ffn": 32,
                                                                 "num_queries": 5, **options})
    return MODELS.get(name).fn(cfg, info())


# --------------------------------------------------------------------------------- matching
def brute_force(cost: torch.Tensor) -> float:
    """Least total cost over every one-to-one assignment of min(N, M) pairs."""
    n, m = cost.shape
    if n >= m:
        return min(sum(cost[r, c] for c, r in enumerate(rows)) for rows in itertools.permutations(range(n), m))
    return min(sum(cost[r, c] for r, c in enumerate(cols)) for cols in itertools.permutations(range(m), n))


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (6, 3), (2, 5), (4, 6), (6, 1)])
def test_hungarian_matches_brute_force(shape):
    """M9/L7: the Hungarian assignment's cost equals the least over all permutations (square and rectangular)."""
    g = torch.Generator().manual_seed(sum(shape))
    for trial in range(5):
        cost = torch.randn(*shape, generator=g, dtype=torch.float64)
        if trial == 4:  # ties: integer costs
            cost = torch.randint(0, 3, shape, generator=g).double()
        rows, cols = hungarian(cost)
        assert len(rows) == min(shape) and len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert float(cost[rows, cols].sum()) == pytest.approx(float(brute_force(cost)), abs=1e-9)


def test_generalized_box_iou_equals_torchvision():
    """L7: pairwise GIoU (overlapping, disjoint, nested, identical boxes) equals torchvision's."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(7, 2, generator=g) * 50
    a = torch.cat([xy, xy + 1 + torch.rand(7, 2, generator=g) * 30], 1)
    xy = torch.rand(5, 2, generator=g) * 50
    b = torch.cat([xy, xy + 1 + torch.rand(5, 2, generator=g) * 30], 1)
    b[0] = a[0]  # identical: GIoU 1
    b[1] = torch.tensor([200.0, 200, 210, 210])  # far away: GIoU near -1
    torch.testing.assert_close(generalized_box_iou(a, b), tv_giou(a, b))
    assert generalized_box_iou(a, b)[0, 0] == pytest.approx(1.0)


def test_set_loss_of_perfect_predictions():
    """L7: queries predicting the ground truths exactly (in any order) give 0 L1 and GIoU loss; the
    class loss comes only from the unmatched queries' "no object" and the matched ones' soft logits."""
    gt = {"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]]), "labels": torch.tensor([2, 0])}
    q, c1 = 4, CLASSES + 1
    boxes = torch.tensor([[[0.5, 0.5, 0.1, 0.1], [0.7, 0.6, 0.3, 0.4], [0.2, 0.8, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]]])
    logits = torch.full((1, q, c1), -20.0)
    logits[0, 1, 0] = logits[0, 3, 2] = 20.0  # confident and right
    logits[0, 0, -1] = logits[0, 2, -1] = 20.0  # "no object", confidently
    w = SetLossWeights()
    matches = match_queries(logits, boxes, [gt], w)
    assert dict(zip(matches[0][1].tolist(), matches[0][0].tolist())) == {0: 3, 1: 1}
    terms = set_loss(logits, boxes, [gt], w)
    assert float(terms["l1"]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms["giou"]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms["class"]) == pytest.approx(0.0, abs=1e-6)
    # unmatched queries with an even class distribution: only "no object" cross-entropy, weighted by eos_coef
    logits[0, 0] = logits[0, 2] = 0.0
    terms = set_loss(logits, boxes, [gt], w)
    expected = 2 * w.eos_coef * math.log(c1) / (2 * w.eos_coef + 2)  # PyTorch's weighted mean
    assert float(terms["class"]) == pytest.approx(expected, rel=1e-4)
    assert float(terms["l1"]) == pytest.approx(0.0, abs=1e-6)


def test_set_loss_of_an_image_without_objects():
    """L7: no ground truth: every query is "no object", L1 and GIoU are 0 (no division by zero)."""
    logits = torch.randn(2, 4, CLASSES + 1, requires_grad=True)
    boxes = torch.rand(2, 4, 4)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    terms = set_loss(logits, boxes, [empty, empty], SetLossWeights())
    assert float(terms["l1"]) == 0 and float(terms["giou"]) == 0 and torch.isfinite(terms["class"])
    terms["class"].backward()


def test_sine_encoding_shape_and_halves():
    """M9: (dim, H, W); the first half varies along y only, the second along x only."""
    pe = sine_encoding(3, 5, 8)
    assert pe.shape == (8, 3, 5)
    assert torch.allclose(pe[:4], pe[:4, :, :1].expand(4, 3, 5)) and torch.allclose(pe[4:], pe[4:, :1].expand(4, 3, 5))
    with pytest.raises(ValueError):
        sine_encoding(2, 2, 6)


# ---------------------------------------------------------------------- deformable attention
def bilinear(v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """v (D, H, W) at normalized (x, y), pixel centres at (j + ½)/W, zeros outside: (D,)."""
    d, h, w = v.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(float(px.detach())), math.floor(float(py.detach()))
    out = torch.zeros(d, dtype=v.dtype)
    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        if 0 <= yy < h and 0 <= xx < w:
            out = out + v[:, yy, xx] * (1 - (px - xx).abs()) * (1 - (py - yy).abs())
    return out


def loop_reference(value, shapes, locations, weights):
    """Σ_l Σ_k A_mlk · V_ml(p_mlk) per query and head, one point at a time."""
    n, _, m, d = value.shape
    _, lq, _, levels, k, _ = locations.shape
    starts = [0] + list(itertools.accumulate(h * w for h, w in shapes))
    rows = []
    for b in range(n):
        for q in range(lq):
            heads = []
            for hd in range(m):
                acc = torch.zeros(d, dtype=value.dtype)
                for lvl, (h, w) in enumerate(shapes):
                    v = value[b, starts[lvl]:starts[lvl + 1], hd].t().reshape(d, h, w)
                    for p in range(k):
                        x, y = locations[b, q, hd, lvl, p]
                        acc = acc + weights[b, q, hd, lvl, p] * bilinear(v, x, y)
                heads.append(acc)
            rows.append(torch.cat(heads))
    return torch.stack(rows).view(n, lq, m * d)


def _deform_inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 5), (2, 3)]
    n, lq, m, d, k = 2, 3, 2, 3, 2
    value = torch.randn(n, sum(h * w for h, w in shapes), m, d, generator=g, dtype=dtype)
    locations = torch.rand(n, lq, m, len(shapes), k, 2, generator=g, dtype=dtype) * 1.2 - 0.1  # some outside
    weights = torch.rand(n, lq, m, len(shapes) * k, generator=g, dtype=dtype).softmax(-1).view(n, lq, m, len(shapes), k)
    return value, shapes, locations, weights


def test_deformable_attention_equals_the_loop_reference():
    """M9: grid_sample-based multi-scale deformable attention equals a loop over points (forward)."""
    value, shapes, locations, weights = _deform_inputs()
    torch.testing.assert_close(deformable_attention(value, shapes, locations, weights),
                               loop_reference(value, shapes, locations, weights))


def test_deformable_attention_gradients_equal_the_loop_reference():
    """M9: gradients w.r.t. values, sampling locations and attention weights equal the loop's, and
    gradcheck passes in float64."""
    inputs = _deform_inputs(seed=1)
    grads = []
    for fn in (deformable_attention, loop_reference):
        value, shapes, locations, weights = (t.clone().requires_grad_() if torch.is_tensor(t) else t for t in inputs)
        out = fn(value, shapes, locations, weights)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([value.grad, locations.grad, weights.grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    value, shapes, locations, weights = _deform_inputs(seed=2)
    assert torch.autograd.gradcheck(lambda v, p, a: deformable_attention(v, shapes, p, a),
                                    (value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_()))


def test_deformable_attention_module_shapes_and_initial_points():
    """M9: the module maps (N, Lq, C) to (N, Lq, C); at initialization the attention is uniform."""
    attn = MSDeformableAttention(16, 2, 2, 3)
    shapes = [(4, 4), (2, 2)]
    out = attn(torch.randn(2, 5, 16), torch.rand(2, 5, 2), torch.randn(2, 20, 16), shapes)
    assert out.shape == (2, 5, 16)
    assert torch.allclose(attn.attention(torch.randn(3, 16)), torch.zeros(3, 2 * 2 * 3))


# ------------------------------------------------------------------------ models: contract
@pytest.mark.parametrize("name,options", [("detr", {}), ("deformable_detr", {"levels": 2, "points": 2})])
def test_forward_contract(name, options):
    """K2: training returns the set loss terms plus the auxiliary ones; eval returns detections
    (boxes inside the image, at most one per query) and the loss when targets are given."""
    torch.manual_seed(0)
    model = make(name, decoder_layers=2, **options)
    images = torch.randn(2, 3, 32, 32)
    targets = [{"boxes": torch.tensor([[2.0, 3, 12, 15], [16, 16, 30, 28]]), "labels": torch.tensor([0, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    out = model(images, targets)
    assert set(out["losses"]) == {"class", "l1", "giou", "aux_class", "aux_l1", "aux_giou"}
    sum(out["losses"].values()).backward()
    assert "detections" not in out and model(images) == {}
    model.eval()
    with torch.no_grad():
        out = model(images, targets)
    assert set(out["losses"]) >= {"class", "l1", "giou"} and len(out["detections"]) == 2
    for det in out["detections"]:
        assert det["boxes"].shape[0] <= 5 and (det["boxes"] >= 0).all() and (det["boxes"] <= 32).all()
        assert det["labels"].dtype == torch.long and ((det["labels"] >= 0) & (det["labels"] < CLASSES)).all()
    no_aux = make(name, decoder_layers=2, aux_loss=False, **options)
    assert set(no_aux(images, targets)["losses"]) == {"class", "l1", "giou"}


@pytest.mark.parametrize("name,options,expected", [
    ("detr", {"hidden": 18, "heads": 4}, "model.options.hidden: 18 is not divisible by heads"),
    ("detr", {"hidden": 18, "heads": 3}, "model.options.hidden: 18 is not divisible by 4"),
    ("detr", {"num_querys": 3}, "model.options.num_querys: unknown option for detr; did you mean 'num_queries'"),
    ("detr", {"eos_coef": 0}, "model.options.eos_coef:"),
    ("deformable_detr", {"levels": 9}, "model.options.levels:"),
    ("deformable_detr", {"backbone": "ssd"}, "model.options.backbone: 'ssd' is a detection model"),
])
def test_bad_options_are_one_line_recipe_errors(name, options, expected):
    """K2: a bad option stops the build with one line naming model.options.<key>."""
    with pytest.raises(RecipeError) as err:
        make(name, **options)
    assert expected in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- recipes end to end
@pytest.mark.parametrize("recipe", ["shapes-detr", "shapes-deformable-detr"])
def test_recipe_fits_and_predicts_end_to_end(recipe, tmp_path, capsys):
    """K2/M9/V4: each built-in recipe trains (loss terms and val mAP recorded every epoch), and
    `trainlab predict` draws its detections, on a tiny subset with a narrow transformer."""
    import trainlab
    from conftest import shapes_as_coco
    from trainlab.cli import main
    from trainlab.data.bundle import build_data

    run = trainlab.fit(recipe, ["data.shapes.count=32", "data.shapes.image_size=32", "data.batch_size=8",
                                "train.epochs=1", "train.threads=1", "doctor=null", "model.options.hidden=16",
                                "model.options.ffn=16", "model.options.encoder_layers=1",
                                f"run.dir={tmp_path / 'run'}"], quiet=True)
    last = run.epochs()[-1]
    assert {"val_map50", "val_loss", "train_loss_class", "train_loss_l1", "train_loss_giou",
            "train_loss_aux_giou"} <= set(last)
    assert 0.0 <= last["val_map"] <= last["val_map50"] <= 1.0
    paths, _ = shapes_as_coco(build_data(run.recipe(), statistics=False).test, tmp_path)
    assert main(["predict", str(run.dir), *paths[:2], "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "1.boxes.png").exists() or any((tmp_path / "pred").glob("*.boxes.png"))


# ------------------------------------------------------------------------------------ the doctor
def test_doctor_reads_the_set_loss_parts():
    """K2/L7: when a set detector under-fits, the doctor's finding says which part of the set loss
    is stuck (here the class loss, while L1 and GIoU fall); other models' findings are unchanged."""
    from trainlab.doctor.history import DoctorHistory
    from trainlab.doctor.rules import RULES, set_loss_parts
    from trainlab.recipe import DoctorConfig

    h = DoctorHistory(every=10)
    h.layers = [{"name": "net.0", "type": "Linear", "params": 10, "weight": True}]
    h.data = {"train_samples": 1000, "num_classes": 4, "class_names": list("abcd"), "parameters": 5000}
    h.add_step(1, 1, 12.0, 0.1, 1.0, [1.0], [1e-3])
    parts = [(1.5, 2.5, 1.6), (1.48, 1.5, 1.0), (1.46, 0.9, 0.8), (1.45, 0.7, 0.6)]
    ep = [{"epoch": i + 1, "step": 10 * (i + 1), "train_loss": 11.9 - i * 0.1, "train_loss_class": c,
           "train_loss_l1": l1, "train_loss_giou": g} for i, (c, l1, g) in enumerate(parts)]
    p = set_loss_parts(ep)
    assert p["stuck"] == ["class"] and p["improving"] == ["l1", "giou"]
    [f] = RULES["underfitting"](h, ep, DoctorConfig(), True)
    assert "the class loss is stuck while l1/giou improve" in f.message and "\n" not in f.message
    assert f.evidence["set_loss_parts"]["from_epoch"] == 1
    plain = [{k: v for k, v in r.items() if not k.startswith("train_loss_")} for r in ep]
    assert set_loss_parts(plain) is None
    assert "set loss" not in RULES["underfitting"](h, plain, DoctorConfig(), True)[0].message
