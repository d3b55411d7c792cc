"""COCO box and mask evaluation (E3): AP@[.5:.95], AP@0.5, AP@0.75, AP and AR by object size, per class.

The rules are COCO's, reproduced exactly so that the 12 summary numbers equal pycocotools'
``COCOeval.stats`` with ``iouType="bbox"`` or ``"segm"`` (tests check 1e-6 on randomized sets; in
practice they agree to rounding):

- Detections are matched per image and category, best score first (ties keep file order), at most
  ``max_dets[-1]`` (100) of them per image and category. Each detection takes the unmatched
  ground truth it overlaps most (IoU >= threshold; among equal IoUs, the later one in file order).
- Crowd ground truths (``iscrowd=1``) are ignored: matching one does not count, a detection may
  match a crowd many times, and IoU with a crowd is intersection / detection area. Ground truths
  outside the current area range are ignored too; a detection prefers any regular ground truth
  over an ignored one. Detections matched to ignored ground truths, and unmatched detections
  outside the area range, are left out of the curve. (A ground truth's ``ignore`` field has no
  effect, as in pycocotools, which overwrites it with ``iscrowd``.)
- Per category, area range and max-detections, detections from all images are pooled by score,
  precision is interpolated and sampled at 101 recall levels; AP is the mean over recall levels,
  IoU thresholds and the categories that have ground truth. Recall is the recall reached at the
  end of the pooled list.
- The two kinds differ only in the IoU of a (detection, ground truth) pair: box IoU for
  ``"bbox"``, mask IoU of COCO run-length encodings (RLE) for ``"segm"``, computed by
  ``pycocotools.mask.iou`` (the same C code pycocotools uses, so the values are identical) with
  the same crowd rule. Area ranges use the ground truth's ``area`` and the detection's area
  (box area, or mask area; see :mod:`trainlab.evaluate.coco_json` for the results-file rule).

Where pycocotools loops in Python over image x category x area x threshold x detection, this
module matches all (image, category) groups at once and loops only over "the k-th contending
detection of each group" (a handful of steps; a detection contends if it overlaps some ground
truth of its group by at least the lowest threshold). Pooling uses cumulative sums and a
reversed running maximum over arrays. Mask IoUs are computed with one ``mask.iou`` call per
image (pycocotools makes one per image and category), for the pairs that can match only.

The tensor entry point is :class:`MeanAveragePrecision` (``update(preds, targets)`` per batch,
``compute()`` at the end); JSON files go through :func:`evaluate_files`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

AREA_RANGES: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e10),
    ("small", 0.0, 32.0**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, 1e10),
)

STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)

_EPS = np.spacing(1.0)  # added to tp + fp, as pycocotools does, so that 0/0 gives 0


@dataclass(frozen=True)
class CocoParams:
    """Evaluation settings; the defaults are COCO's box defaults.

    ``iou_thresholds`` and ``recall_thresholds`` are built with ``np.linspace`` as in COCO, so
    that the float values (and thus every comparison against them) are the same.
    """

    iou_thresholds: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10))
    recall_thresholds: tuple[float, ...] = tuple(np.linspace(0.0, 1.0, 101))
    max_dets: tuple[int, ...] = (1, 10, 100)
    area_ranges: tuple[tuple[str, float, float], ...] = AREA_RANGES


@dataclass
class Boxes:
    """Boxes of one kind (ground truth or detections) as flat arrays, one row per box.

    ``image`` and ``category`` are indices into the image list and category list of the
    evaluation (not ids). ``boxes`` are ``(N, 4)`` float64 xywh; ``area`` is used for area ranges
    (ground truth: the annotation's area, detections: w * h, or the mask area for masks).
    ``scores`` is set for detections, ``crowd`` for ground truth. ``masks`` (for
    ``iou_type="segm"``) is an ``(N,)`` object array of compressed COCO RLE dicts
    (``{"size": [h, w], "counts": str or bytes}``), all of a given image the same size; with
    masks, ``boxes`` may be None (mask evaluation does not look at them).
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray | None
    area: np.ndarray
    scores: np.ndarray | None = None
    crowd: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.image.shape[0])


@dataclass
class CocoResult:
    """What :func:`evaluate` returns.

    ``precision`` is ``(T, R, K, A, M)`` and ``recall`` ``(T, K, A, M)`` in pycocotools' layout
    (IoU threshold, recall level, category, area range, max-dets), -1 where a category has no
    ground truth in that area range. ``stats`` holds the 12 summary numbers in COCO's order
    (:data:`STAT_NAMES`).
    """

    params: CocoParams
    category_ids: np.ndarray
    category_names: list[str]
    precision: np.ndarray
    recall: np.ndarray
    num_gt: np.ndarray  # (K, A) ground truths that count
    num_det: np.ndarray  # (K,) detections evaluated (after the per-image cap)
    voc_ap50: np.ndarray  # (K,) all-point AP at IoU 0.5 (area all, most dets); nan without gt
    stats: np.ndarray = field(default_factory=lambda: np.zeros(12))

    def _mean(self, values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    def _t(self, iou: float | None) -> np.ndarray:
        thr = np.asarray(self.params.iou_thresholds)
        return np.arange(thr.size) if iou is None else np.flatnonzero(thr == iou)

    def _a(self, label: str) -> list[int]:
        return [i for i, (name, _, _) in enumerate(self.params.area_ranges) if name == label]

    def _m(self, max_det: int) -> list[int]:
        return [i for i, m in enumerate(self.params.max_dets) if m == max_det]

    def average_precision(self, iou: float | None = None, area: str = "all", max_det: int | None = None, k=None):
        """Mean precision over the selected thresholds, recall levels and categories (-1 if none)."""
        max_det = self.params.max_dets[-1] if max_det is None else max_det
        p = self.precision[self._t(iou)]
        p = p[:, :, slice(None) if k is None else [k]]
        return self._mean(p[:, :, :, self._a(area)][:, :, :, :, self._m(max_det)])

    def average_recall(self, iou: float | None = None, area: str = "all", max_det: int | None = None, k=None):
        """Mean recall over the selected thresholds and categories (-1 if none)."""
        max_det = self.params.max_dets[-1] if max_det is None else max_det
        r = self.recall[self._t(iou)]
        r = r[:, slice(None) if k is None else [k]]
        return self._mean(r[:, :, self._a(area)][:, :, :, self._m(max_det)])

    def summarize(self) -> np.ndarray:
        """The 12 numbers of COCO's summary, in its order; also stored in ``self.stats``."""
        md = self.params.max_dets
        if len(md) < 3:
            raise ValueError(f"COCO's summary needs 3 max_dets values, got {md}")
        ap, ar = self.average_precision, self.average_recall
        self.stats = np.array([
            ap(), ap(iou=0.5, max_det=md[2]), ap(iou=0.75, max_det=md[2]),
            ap(area="small", max_det=md[2]), ap(area="medium", max_det=md[2]), ap(area="large", max_det=md[2]),
            ar(max_det=md[0]), ar(max_det=md[1]), ar(max_det=md[2]),
            ar(area="small", max_det=md[2]), ar(area="medium", max_det=md[2]), ar(area="large", max_det=md[2]),
        ])
        return self.stats

    def summary_lines(self) -> list[str]:
        """COCO's summary table, one line per number, in pycocotools' wording."""
        thr = self.params.iou_thresholds
        md = self.params.max_dets
        rows = [
            (1, None, "all", md[2]), (1, 0.5, "all", md[2]), (1, 0.75, "all", md[2]),
            (1, None, "small", md[2]), (1, None, "medium", md[2]), (1, None, "large", md[2]),
            (0, None, "all", md[0]), (0, None, "all", md[1]), (0, None, "all", md[2]),
            (0, None, "small", md[2]), (0, None, "medium", md[2]), (0, None, "large", md[2]),
        ]
        lines = []
        for value, (is_ap, iou, area, m) in zip(self.stats, rows):
            title = "Average Precision  (AP)" if is_ap else "Average Recall     (AR)"
            iou_s = f"{thr[0]:0.2f}:{thr[-1]:0.2f}" if iou is None else f"{iou:0.2f}"
            lines.append(f" {title} @[ IoU={iou_s:<9} | area={area:>6s} | maxDets={m:>3d} ] = {value:0.3f}")
        return lines

    def per_class(self) -> list[dict]:
        """One dict per category: id, name, AP, AP50, AP75, AP by size, AR100, VOC AP50, counts.

        A number is None where the category has no ground truth to measure it against.
        """
        out = []
        none = lambda v: None if v == -1 else v  # noqa: E731
        for k, (cid, name) in enumerate(zip(self.category_ids.tolist(), self.category_names)):
            voc = self.voc_ap50[k]
            out.append({
                "id": cid,
                "name": name,
                "AP": none(self.average_precision(k=k)),
                "AP50": none(self.average_precision(iou=0.5, k=k)),
                "AP75": none(self.average_precision(iou=0.75, k=k)),
                "APs": none(self.average_precision(area="small", k=k)),
                "APm": none(self.average_precision(area="medium", k=k)),
                "APl": none(self.average_precision(area="large", k=k)),
                "AR100": none(self.average_recall(k=k)),
                "AP50_voc": None if np.isnan(voc) else float(voc),
                "num_gt": int(self.num_gt[k, 0]),
                "num_det": int(self.num_det[k]),
            })
        return out

    def pr_curve(self, k: int, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """``(recall (R,), precision (R,))``: category k's interpolated curve at one IoU threshold."""
        t = self._t(iou)
        if t.size == 0:
            raise ValueError(f"IoU threshold {iou} is not one of {self.params.iou_thresholds}")
        a, m = self._a("all")[0], len(self.params.max_dets) - 1
        return np.asarray(self.params.recall_thresholds), self.precision[t[0], :, k, a, m]

    def to_dict(self) -> dict:
        """JSON-ready: ``stats`` (the 12 numbers, COCO's order), ``stat_names``, ``per_class``."""
        return {
            "stats": [float(s) for s in self.stats],
            "stat_names": list(STAT_NAMES),
            "per_class": self.per_class(),
        }


# --- the engine ------------------------------------------------------------------------------


def coco_box_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired xywh boxes ``(P, 4)`` and ``(P, 4)`` -> ``(P,)``, COCO's way, in float64.

    For a crowd ground truth the denominator is the detection's area (the fraction of the
    detection that lies in the crowd region). The operations are ordered as in COCO's C code so
    the values are identical bit for bit, which matters for IoUs that sit on a threshold.
    """
    w = np.minimum(dt[:, 0] + dt[:, 2], gt[:, 0] + gt[:, 2]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 1] + dt[:, 3], gt[:, 1] + gt[:, 3]) - np.maximum(dt[:, 1], gt[:, 1])
    overlap = (w > 0) & (h > 0)
    inter = w * h
    da = dt[:, 2] * dt[:, 3]
    ga = gt[:, 2] * gt[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


IOU_TYPES: tuple[str, ...] = ("bbox", "segm")


def mask_utils():
    """``pycocotools.mask``, imported on first use (masks are encoded and compared with its C code)."""
    try:
        import pycocotools.mask as mask_utils
    except ImportError as err:  # pragma: no cover - pycocotools is installed with trainlab
        raise ImportError("mask evaluation (iou_type='segm') needs pycocotools: pip install pycocotools") from err
    return mask_utils


def mask_area(rles) -> np.ndarray:
    """Pixel counts of a sequence of RLEs as float64 ``(N,)``.

    ``pycocotools.mask.area`` is called on at most 255 RLEs at a time: it builds its result with
    ``np.array((n,), dtype=np.uint8)``, which numpy 2 refuses for n > 255 (OverflowError).
    """
    rles = list(rles)
    area = mask_utils().area
    out = np.zeros(len(rles), dtype=np.float64)
    for a in range(0, len(rles), 255):
        out[a:a + 255] = area(rles[a:a + 255])
    return out


def box_pair_iou(gt: Boxes, dt: Boxes, d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """IoU of the pairs (detection ``d[i]``, ground truth ``g[i]``) -> ``(P,)``: box IoU, COCO's way."""
    return coco_box_iou(dt.boxes[d], gt.boxes[g], gt.crowd[g])


def _local_index(image: np.ndarray, items: np.ndarray):
    """Distinct ``items`` grouped by image: ``(distinct, starts, local)`` where ``distinct`` is
    sorted by (image, item), ``starts[i]:starts[i + 1]`` is the i-th image present, and
    ``local[j]`` is the position of ``items[j]`` within its image's slice."""
    distinct, inverse = np.unique(items, return_inverse=True)
    by_image = np.argsort(image[distinct], kind="stable")  # distinct is sorted, so (image, item) order
    distinct = distinct[by_image]
    position = np.empty(by_image.size, dtype=np.int64)
    position[by_image] = np.arange(by_image.size)
    img = image[distinct]
    starts = np.flatnonzero(np.r_[True, img[1:] != img[:-1], True])
    first_of = np.repeat(starts[:-1], np.diff(starts))  # first position of each one's image
    return distinct, starts, (position - first_of[position])[inverse]


def mask_pair_iou(gt: Boxes, dt: Boxes, d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """IoU of the pairs (detection ``d[i]``, ground truth ``g[i]``) -> ``(P,)``: mask IoU of RLEs.

    pycocotools' ``mask.iou`` (COCO's C code: for a crowd ground truth the denominator is the
    detection's mask area) is called once per image, on the detections and ground truths of that
    image that occur in some pair; the pairs' values are then picked from each matrix.
    """
    if dt.masks is None or gt.masks is None:
        raise ValueError("iou_type='segm' needs masks (RLEs) for the detections and the ground truth")
    out = np.zeros(d.size, dtype=np.float64)
    if d.size == 0:
        return out
    iou = mask_utils().iou
    img = dt.image[d]
    by_image = np.argsort(img, kind="stable")
    pair_starts = np.flatnonzero(np.r_[True, img[by_image][1:] != img[by_image][:-1], True])
    d_all, d_starts, d_local = _local_index(dt.image, d)
    g_all, g_starts, g_local = _local_index(gt.image, g)
    d_local, g_local = d_local[by_image], g_local[by_image]
    d_masks, g_masks = dt.masks[d_all], gt.masks[g_all]
    g_crowd = gt.crowd[g_all].astype(np.uint8)
    # images come in the same ascending order in all three groupings
    for i in range(pair_starts.size - 1):
        a, b = pair_starts[i], pair_starts[i + 1]
        ds, de, gs, ge = d_starts[i], d_starts[i + 1], g_starts[i], g_starts[i + 1]
        m = iou(d_masks[ds:de].tolist(), g_masks[gs:ge].tolist(), g_crowd[gs:ge])
        out[by_image[a:b]] = np.asarray(m, dtype=np.float64)[d_local[a:b], g_local[a:b]]
    return out


_PAIR_IOU = {"bbox": box_pair_iou, "segm": mask_pair_iou}


def _group_rank(keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal ``keys`` (keys sorted)."""
    n = keys.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.arange(n)
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return idx - np.maximum.accumulate(np.where(first, idx, 0))


def _match(gt: Boxes, dt: Boxes, num_images: int, p: CocoParams, pair_iou=box_pair_iou):
    """Greedy COCO matching of every detection at every area range and IoU threshold.

    ``pair_iou(gt, dt, d, g)`` gives the IoU of the candidate pairs (detection ``d[i]``, ground
    truth ``g[i]``), all of the same image and category: :func:`box_pair_iou` or
    :func:`mask_pair_iou`.

    Returns ``(order, rank, matches)``: the kept detections (indices into ``dt``) sorted by
    (category, image, score desc), their rank within their image and category, and the matches
    as four equal-length arrays ``(det, area, threshold, gt)``: detection ``order[det]`` matched
    ground truth ``gt`` at that area range and IoU threshold index. Unlisted means unmatched.
    """
    thr = np.minimum(np.asarray(p.iou_thresholds, dtype=np.float64), 1 - 1e-10)
    lo = np.array([a[1] for a in p.area_ranges])
    hi = np.array([a[2] for a in p.area_ranges])
    T, A = thr.size, lo.size

    gkey = gt.category.astype(np.int64) * num_images + gt.image
    gorder = np.argsort(gkey, kind="stable")
    gkey_sorted = gkey[gorder]

    dkey = dt.category.astype(np.int64) * num_images + dt.image
    order = np.lexsort((-dt.scores, dkey))  # stable: equal scores keep input order
    rank = _group_rank(dkey[order])
    capped = rank < max(p.max_dets)
    order, rank = order[capped], rank[capped]
    dkey = dkey[order]
    D = order.size
    none = tuple(np.zeros(0, dtype=np.int64) for _ in range(4))
    if D == 0 or len(gt) == 0:
        return order, rank, none

    # every (detection, ground truth) pair of the same image and category
    g_first = np.searchsorted(gkey_sorted, dkey, side="left")
    g_count = np.searchsorted(gkey_sorted, dkey, side="right") - g_first
    pair_det = np.repeat(np.arange(D), g_count)
    within = np.arange(pair_det.size) - np.repeat(np.cumsum(g_count) - g_count, g_count)
    pair_gt = gorder[np.repeat(g_first, g_count) + within]
    iou = pair_iou(gt, dt, order[pair_det], pair_gt)

    # only pairs that can match at some threshold take part in the sequential part
    live = iou >= thr.min()
    pair_det, pair_gt, iou = pair_det[live], pair_gt[live], iou[live]
    if pair_det.size == 0:
        return order, rank, none
    # step = how many contending detections of the same group come before this one
    det_first = np.r_[True, pair_det[1:] != pair_det[:-1]]
    contenders = pair_det[det_first]
    step_of_det = _group_rank(dkey[contenders])
    pair_step = np.repeat(step_of_det, np.diff(np.r_[np.flatnonzero(det_first), pair_det.size]))
    by_step = np.argsort(pair_step, kind="stable")  # keeps pairs of a detection together, gt order
    pair_det, pair_gt, iou, pair_step = pair_det[by_step], pair_gt[by_step], iou[by_step], pair_step[by_step]
    step_bounds = np.searchsorted(pair_step, np.arange(pair_step[-1] + 2))

    ignored = gt.crowd[:, None] | (gt.area[:, None] < lo) | (gt.area[:, None] > hi)  # (G, A)
    taken = np.zeros((len(gt), A, T), dtype=bool)
    found = []
    for s in range(step_bounds.size - 1):
        a, b = step_bounds[s], step_bounds[s + 1]
        pd, pg, pi = pair_det[a:b], pair_gt[a:b], iou[a:b]
        seg = np.flatnonzero(np.r_[True, pd[1:] != pd[:-1]])
        seg_of = np.repeat(np.arange(seg.size), np.diff(np.r_[seg, pd.size]))
        regular = ~ignored[pg][:, :, None]  # (P, A, 1)
        valid = (gt.crowd[pg][:, None, None] | ~taken[pg]) & (pi[:, None] >= thr)[:, None, :]
        any_regular = np.logical_or.reduceat(valid & regular, seg, axis=0)
        # a regular ground truth, if one is free, beats any ignored one
        cand = valid & (regular == any_regular[seg_of])
        value = np.where(cand, pi[:, None, None], -1.0)
        best = np.maximum.reduceat(value, seg, axis=0)
        at = np.where(cand & (value == best[seg_of]), np.arange(pd.size)[:, None, None], -1)
        pick = np.maximum.reduceat(at, seg, axis=0)  # last of equal IoUs, as pycocotools
        si, ai, ti = np.nonzero(pick >= 0)
        g = pg[pick[si, ai, ti]]
        taken[g, ai, ti] = True
        found.append((pd[seg[si]], ai, ti, g))
    if not found:
        return order, rank, none
    return order, rank, tuple(np.concatenate(column) for column in zip(*found))


def _needed_tp(npig: np.ndarray, rec_thr: np.ndarray) -> np.ndarray:
    """``(K, R)``: smallest n >= 1 with ``n / npig >= r`` in float64 (npig + 1 if none)."""
    npig_f = np.maximum(npig, 1).astype(np.float64)[:, None]
    guess = np.ceil(rec_thr[None, :] * npig_f)
    best = np.full(guess.shape, np.inf)
    # the float product can be off by one either way; test the neighbours exactly
    for n in (guess + 1, guess, guess - 1):
        ok = (n >= 0) & (n / npig_f >= rec_thr[None, :])
        best = np.where(ok, np.minimum(best, n), best)
    best = np.where(np.isinf(best), npig_f + 1, best)
    return np.maximum(best, 1).astype(np.int64)


def evaluate(gt: Boxes, dt: Boxes, num_images: int, category_ids, category_names=None,
             params: CocoParams | None = None, iou_type: str = "bbox") -> CocoResult:
    """COCO evaluation of detections ``dt`` against ground truth ``gt``.

    ``num_images`` is the number of images (indices ``0..num_images-1``, in ascending id order),
    ``category_ids`` the K category ids (ascending) that ``category`` indices refer to.
    ``iou_type`` is ``"bbox"`` (box IoU) or ``"segm"`` (mask IoU; ``gt.masks`` and ``dt.masks``
    hold the RLEs); every other rule is the same.
    """
    if iou_type not in _PAIR_IOU:
        raise ValueError(f"unknown iou_type {iou_type!r}; known: {', '.join(IOU_TYPES)}")
    p = params or CocoParams()
    category_ids = np.asarray(category_ids, dtype=np.int64)
    names = list(category_names) if category_names is not None else [str(c) for c in category_ids]
    K = category_ids.size
    thr = np.asarray(p.iou_thresholds, dtype=np.float64)
    rec_thr = np.asarray(p.recall_thresholds, dtype=np.float64)
    T, R, A, M = thr.size, rec_thr.size, len(p.area_ranges), len(p.max_dets)
    lo = np.array([a[1] for a in p.area_ranges])
    hi = np.array([a[2] for a in p.area_ranges])
    max_dets = sorted(p.max_dets)

    order, rank, (m_det, m_area, m_thr, m_gt) = _match(gt, dt, num_images, p, _PAIR_IOU[iou_type])
    D = order.size
    g_ignored = gt.crowd[:, None] | (gt.area[:, None] < lo) | (gt.area[:, None] > hi)  # (G, A)
    npig = np.zeros((K, A), dtype=np.int64)
    for a in range(A):
        npig[:, a] = np.bincount(gt.category[~g_ignored[:, a]], minlength=K)

    # (A, T, D) so that one area range is a contiguous (T, D) block
    d_area = dt.area[order]
    d_outside = (d_area[None, :] < lo[:, None]) | (d_area[None, :] > hi[:, None])  # (A, D)
    is_match = np.zeros((A, T, D), dtype=bool)
    is_match[m_area, m_thr, m_det] = True
    tp = np.zeros((A, T, D), dtype=bool)
    regular = ~g_ignored[m_gt, m_area]
    tp[m_area[regular], m_thr[regular], m_det[regular]] = True
    # unmatched detections count as false positives unless outside the area range
    fp = ~is_match & ~d_outside[:, None, :]

    d_cat = dt.category[order]
    # pool images: category, then score (desc), then image, then rank; as pycocotools' stable sort
    pool = np.lexsort((rank, dt.image[order], -dt.scores[order], d_cat))
    pools = []
    for m in p.max_dets:
        sel = pool[rank[pool] < m]
        cat = d_cat[sel]
        starts = np.searchsorted(cat, np.arange(K + 1))
        pools.append((sel, cat, starts))

    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    voc = np.full(K, np.nan)
    num_det = np.bincount(d_cat, minlength=K)
    t50 = np.flatnonzero(thr == 0.5)
    area_all = [i for i, r in enumerate(p.area_ranges) if r[0] == "all"]
    for a in range(A):
        has_gt = npig[:, a] > 0
        need = _needed_tp(npig[:, a], rec_thr)  # (K, R)
        width = int(npig[:, a].max(initial=0)) + 1
        for mi, (sel, cat, starts) in enumerate(pools):
            tps, fps = tp[a][:, sel], fp[a][:, sel]  # (T, N)
            ctp = np.cumsum(tps, axis=1, dtype=np.int32)  # int32: half the memory traffic of int64
            cfp = np.cumsum(fps, axis=1, dtype=np.int32)
            # running counts just before each category's block (K + 1 boundaries)
            before = np.maximum(starts - 1, 0)
            nonempty = (starts > 0)[None, :]
            tp_at = np.where(nonempty, ctp[:, before], 0) if sel.size else np.zeros((T, K + 1), np.int64)
            fp_at = np.where(nonempty, cfp[:, before], 0) if sel.size else np.zeros((T, K + 1), np.int64)
            # starts[k + 1] - 1 is the last element of category k, so "before starts[k+1]" is its end
            n_tp = tp_at[:, 1:] - tp_at[:, :-1]  # (T, K)
            ti, cols = np.nonzero(tps)
            k_of = cat[cols]
            n = ctp[ti, cols] - tp_at[ti, k_of]
            f = (cfp[ti, cols] - fp_at[ti, k_of]).astype(np.float64)
            # precision at the n-th true positive of each category; padded with 0 past the last
            at_tp = np.zeros((K, width, T))
            at_tp[k_of, n - 1, ti] = n / (f + n + _EPS)
            env = np.flip(np.maximum.accumulate(np.flip(at_tp, 1), axis=1), 1)
            q = env[np.arange(K)[:, None], np.minimum(need, width) - 1, :]  # (K, R, T)
            q = np.where((need <= npig[:, a][:, None])[:, :, None], q, 0.0)
            precision[:, :, has_gt, a, mi] = q[has_gt].transpose(2, 1, 0)
            recall[:, has_gt, a, mi] = n_tp[:, has_gt] / npig[has_gt, a]
            if area_all[:1] == [a] and p.max_dets[mi] == max_dets[-1] and t50.size:
                # all-point AP: each true positive adds 1/npig of recall at its interpolated precision
                voc[has_gt] = env[has_gt, :, t50[0]].sum(axis=1) / npig[has_gt, a]
    result = CocoResult(p, category_ids, names, precision, recall, npig, num_det, voc)
    result.summarize()
    return result


# --- tensors in, batch by batch --------------------------------------------------------------


def _as_array(value, dtype) -> np.ndarray:
    """A torch tensor (any device) or array-like as a numpy array of ``dtype``."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _to_xywh(boxes: np.ndarray, fmt: str) -> np.ndarray:
    a, b, c, d = boxes.T
    if fmt == "xywh":
        return boxes
    if fmt == "xyxy":
        return np.stack([a, b, c - a, d - b], 1)
    if fmt == "cxcywh":
        return np.stack([a - c / 2, b - d / 2, c, d], 1)
    raise ValueError(f"unknown box format {fmt!r}; known: xyxy, xywh, cxcywh")


def encode_masks(masks, what: str = "masks") -> tuple[np.ndarray, tuple[int, int] | None]:
    """Binary masks ``(N, H, W)`` (a tensor or array; bool, integer, or float probabilities,
    which are thresholded at 0.5; ``(N, 1, H, W)`` is accepted too) as an ``(N,)`` object array of
    compressed COCO RLE dicts, and ``(H, W)`` (None for an empty ``(0,)`` input)."""
    m = masks.detach().cpu().numpy() if hasattr(masks, "detach") else np.asarray(masks)
    if m.size == 0 and m.ndim < 3:
        return np.empty(0, dtype=object), None
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3:
        raise ValueError(f"{what} must have shape (N, H, W), got {tuple(m.shape)}")
    hw = (int(m.shape[1]), int(m.shape[2]))
    out = np.empty(m.shape[0], dtype=object)
    if m.shape[0]:
        binary = m > 0.5 if np.issubdtype(m.dtype, np.floating) else m != 0
        rles = mask_utils().encode(np.asfortranarray(binary.transpose(1, 2, 0), dtype=np.uint8))
        out = np.fromiter(rles, dtype=object, count=len(rles))
    return out, hw


class MeanAveragePrecision:
    """COCO box or mask evaluation fed with tensors batch by batch, for use during validation.

    ``update(preds, targets)`` takes one list entry per image, like torchvision's detection
    models produce and consume::

        preds[i]   = {"boxes": (N, 4), "scores": (N,), "labels": (N,)}
        targets[i] = {"boxes": (M, 4), "labels": (M,)}  # optional "iscrowd" (M,), "area" (M,)

    Boxes are in ``box_format`` (default xyxy, pixels). A target's area defaults to its box area.
    With ``iou_type="segm"`` the IoU is mask IoU and each entry has ``"masks"`` instead of (or
    beside, unused) ``"boxes"``: ``(N, H, W)`` binary masks of the image (bool or integer; float
    masks, e.g. Mask R-CNN's probabilities, are thresholded at 0.5; ``(N, 1, H, W)`` is
    accepted), the same ``H, W`` in a prediction and its target. They are run-length encoded on
    ``update``; a target's area defaults to its mask area, a prediction's area is its mask area.
    Tensors may live on any device; they are copied to the CPU on ``update``.
    ``compute()`` evaluates everything seen since the last ``reset()`` with COCO's rules and
    returns a :class:`CocoResult` (``.stats``, ``.per_class()``, ``.to_dict()``). The categories are
    the labels that occur (in targets or predictions) plus the keys of ``class_names``.
    """

    def __init__(self, box_format: str = "xyxy", params: CocoParams | None = None,
                 class_names: Mapping[int, str] | Sequence[str] | None = None, iou_type: str = "bbox"):
        _to_xywh(np.zeros((0, 4)), box_format)  # reject an unknown format now, not at update
        if iou_type not in IOU_TYPES:
            raise ValueError(f"unknown iou_type {iou_type!r}; known: {', '.join(IOU_TYPES)}")
        if iou_type == "segm":
            mask_utils()  # fail now if pycocotools is missing
        self.box_format = box_format
        self.iou_type = iou_type
        self.params = params or CocoParams()
        if class_names is not None and not isinstance(class_names, Mapping):
            class_names = dict(enumerate(class_names))
        self.class_names = dict(class_names or {})
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._num_images = 0
        self._gt: list[tuple[np.ndarray, ...]] = []
        self._dt: list[tuple[np.ndarray, ...]] = []

    def update(self, preds: Sequence[Mapping], targets: Sequence[Mapping]) -> None:
        """Add one batch: ``preds`` and ``targets`` are lists with one dict per image."""
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} predictions but {len(targets)} targets; need one of each per image")
        segm = self.iou_type == "segm"
        for i, (pred, target) in enumerate(zip(preds, targets)):
            image = self._num_images + i
            ds = _as_array(pred["scores"], np.float64).reshape(-1)
            dl = _as_array(pred["labels"], np.int64).reshape(-1)
            gl = _as_array(target["labels"], np.int64).reshape(-1)
            if segm:
                dm, dhw = self._masks(pred, "preds", i)
                gm, ghw = self._masks(target, "targets", i)
                if dhw is not None and ghw is not None and dhw != ghw:
                    raise ValueError(f"image {i} of the batch: prediction masks are {dhw[0]}x{dhw[1]} "
                                     f"but target masks {ghw[0]}x{ghw[1]}")
                db, gb = None, None  # not needed to match masks
                d_area = mask_area(dm)
            else:
                dm = gm = None
                db = self._boxes(pred, "preds", i)
                gb = self._boxes(target, "targets", i)
                d_area = db[:, 2] * db[:, 3]
            kind = "masks" if segm else "boxes"
            n_dt, n_gt = (dm.size, gm.size) if segm else (db.shape[0], gb.shape[0])
            if not (ds.size == dl.size == n_dt) or gl.size != n_gt:
                raise ValueError(f"image {i} of the batch: {kind}, scores and labels differ in length")
            crowd = (_as_array(target["iscrowd"], np.int64).reshape(-1) != 0
                     if "iscrowd" in target else np.zeros(gl.size, dtype=bool))
            if "area" in target:
                area = _as_array(target["area"], np.float64).reshape(-1)
            else:
                area = mask_area(gm) if segm else gb[:, 2] * gb[:, 3]
            if crowd.size != gl.size or area.size != gl.size:
                raise ValueError(f"image {i} of the batch: iscrowd/area differ in length from the {kind}")
            self._dt.append((np.full(dl.size, image), dl, db, ds, d_area, dm))
            self._gt.append((np.full(gl.size, image), gl, gb, area, crowd, gm))
        self._num_images += len(preds)

    def _boxes(self, item: Mapping, kind: str, i: int) -> np.ndarray:
        b = _as_array(item["boxes"], np.float64)
        if b.size == 0:
            return np.zeros((0, 4))
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"{kind}[{i}]['boxes'] must have shape (N, 4), got {b.shape}")
        return _to_xywh(b, self.box_format)

    @staticmethod
    def _masks(item: Mapping, kind: str, i: int) -> tuple[np.ndarray, tuple[int, int] | None]:
        if "masks" not in item:
            raise ValueError(f"{kind}[{i}] has no 'masks'; iou_type='segm' needs (N, H, W) masks")
        return encode_masks(item["masks"], f"{kind}[{i}]['masks']")

    def compute(self) -> CocoResult:
        """COCO evaluation of all images seen since the last reset."""
        def cat(parts, j, shape, dtype):
            return np.concatenate([p[j] for p in parts]) if parts else np.zeros(shape, dtype)

        g_img, g_lab = cat(self._gt, 0, 0, np.int64), cat(self._gt, 1, 0, np.int64)
        d_img, d_lab = cat(self._dt, 0, 0, np.int64), cat(self._dt, 1, 0, np.int64)
        ids = np.unique(np.concatenate([g_lab, d_lab, np.array(sorted(self.class_names), dtype=np.int64)]))
        names = [self.class_names.get(int(c), str(int(c))) for c in ids]
        segm = self.iou_type == "segm"
        gt = Boxes(g_img, np.searchsorted(ids, g_lab), None if segm else cat(self._gt, 2, (0, 4), np.float64),
                   cat(self._gt, 3, 0, np.float64), crowd=cat(self._gt, 4, 0, bool),
                   masks=cat(self._gt, 5, 0, object) if segm else None)
        dt = Boxes(d_img, np.searchsorted(ids, d_lab), None if segm else cat(self._dt, 2, (0, 4), np.float64),
                   cat(self._dt, 4, 0, np.float64), scores=cat(self._dt, 3, 0, np.float64),
                   masks=cat(self._dt, 5, 0, object) if segm else None)
        return evaluate(gt, dt, self._num_images, ids, names, self.params, self.iou_type)
