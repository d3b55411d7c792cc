"""Metric learning (K5, M11): a face-recognition-style embedding judged on identities never seen in
training.

The model is any zoo architecture whose last layer projects to ``model.embed_dim``; the task
L2-normalises its output, so distances live on the unit sphere. Training draws P×K batches
(``data.sampler=pk``) and minimises the triplet loss (L5, ``loss.name=triplet``) with the mining
``loss.mining``. Evaluation is open set: the evaluated split's identities (``data.split.by=class``
keeps them out of training) are divided into a gallery (enrolled, ``eval.gallery`` of each
identity's samples) and probes, and the split is judged by

- identification (E5): each probe's identity is the vote of its ``eval.knn_k`` nearest gallery
  embeddings (``rank1``); ``rank5`` is the share of probes whose identity is among the labels of
  their 5 nearest gallery items (the CMC curve at 5);
- verification: pairs of the split's samples, same or different identity, accepted when their
  distance is below a threshold: ROC, ``auc``, ``eer``, the TAR at FAR 1e-2 and 1e-3, and the
  thresholds of those operating points (which `trainlab verify` uses).
"""
from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import RecipeError
from ..registry import TASKS
from .base import Figure, Task, TrainMeter

FARS = (("tar_far1e-2", 1e-2), ("tar_far1e-3", 1e-3))
EMBED_POINTS = 400  # embeddings kept in the summary for the 2-D view (t-SNE at report time)
ROC_POINTS = 300  # ROC points kept in the summary for its plot
HIST_BINS = 40


def row_distances(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance of each row of ``a`` to the same row of ``b``: (N, D), (N, D) -> (N,)."""
    if metric == "cosine":
        return 1 - F.cosine_similarity(a, b, dim=1)
    sq = (a - b).pow(2).sum(1)
    return sq if metric == "squared" else sq.sqrt()


def gallery_mask(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Which samples are enrolled (True) and which are probes: per identity, a seeded random
    ``fraction`` of its samples (at least one enrolled and, with two or more samples, at least one
    probe). labels: (N,) -> (N,) bool."""
    from ..rng import generator

    n = len(labels)
    key = torch.rand(n, generator=generator(seed, "gallery"), dtype=torch.float64)
    order = torch.argsort(labels.double().cpu() + key * 0.5)  # grouped by identity, shuffled within
    sorted_labels = labels.cpu()[order]
    rank = torch.arange(n) - torch.searchsorted(sorted_labels, sorted_labels)
    _, inverse, counts = torch.unique(sorted_labels, return_inverse=True, return_counts=True)
    size = counts[inverse]
    enrolled = (size.double() * fraction).round().long().clamp(min=1)
    enrolled = torch.minimum(enrolled, (size - 1).clamp(min=1))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order] = rank < enrolled
    return mask.to(labels.device)


def open_set_metrics(emb: torch.Tensor, labels: torch.Tensor, *, k: int, metric: str, gallery: float,
                     pairs: int, seed: int) -> dict[str, Any]:
    """Identification and verification metrics of embeddings ``emb`` (N, D) with identities
    ``labels`` (N,) (see the module docstring), plus the curves and samples the report draws."""
    from ..evaluate.retrieval import (auc, equal_error_rate, knn_classify, knn_search, pairs_from_labels,
                                      rank_k_accuracy, roc_curve, tar_at_far)

    out: dict[str, Any] = {}
    enrolled = gallery_mask(labels, gallery, seed)
    g_emb, g_lab, p_emb, p_lab = emb[enrolled], labels[enrolled], emb[~enrolled], labels[~enrolled]
    if len(p_lab) and len(g_lab):
        kk = min(max(k, 5), len(g_lab))
        dist, idx = knn_search(p_emb, g_emb, kk, metric)
        kv = min(k, len(g_lab))
        pred = knn_classify(dist[:, :kv], idx[:, :kv], g_lab)
        out["rank1"] = float((pred == p_lab).float().mean())
        out["rank5"] = float(rank_k_accuracy(idx, g_lab, p_lab, min(5, kk)))
    pair_idx, same = pairs_from_labels(labels.cpu(), pairs, seed)
    if same.any() and (~same).any():
        d = row_distances(emb[pair_idx[:, 0].to(emb.device)], emb[pair_idx[:, 1].to(emb.device)], metric).cpu()
        fpr, tpr, thr = roc_curve(d, same, "distance", drop_intermediate=False)
        out["auc"] = float(auc(fpr, tpr))
        eer, t_eer = equal_error_rate(fpr, tpr, thr)
        out["eer"] = eer
        thresholds = {"eer": t_eer}
        for name, far in FARS:
            out[name], thresholds[name.replace("tar_", "")] = tar_at_far(fpr, tpr, thr, far)
        keep = torch.unique(torch.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).round().long())
        top = float(d.max()) if len(d) else 1.0
        edges = torch.linspace(0, max(top, 1e-6), HIST_BINS + 1)
        out["verification"] = {
            "thresholds": thresholds, "same_pairs": int(same.sum()), "different_pairs": int((~same).sum()),
            "gallery": int(enrolled.sum()), "probes": int((~enrolled).sum()),
            "identities": int(torch.unique(labels).numel()), "distance": metric,
            "roc": {"fpr": [round(float(v), 6) for v in fpr[keep]], "tpr": [round(float(v), 6) for v in tpr[keep]]},
            "histogram": {"edges": [round(float(v), 5) for v in edges],
                          "same": torch.histogram(d[same].double(), edges.double()).hist.long().tolist(),
                          "different": torch.histogram(d[~same].double(), edges.double()).hist.long().tolist()},
        }
    from ..rng import generator

    pick = torch.randperm(len(labels), generator=generator(seed, "embedding-view"))[:EMBED_POINTS].sort().values
    out["embedding_sample"] = {"labels": labels.cpu()[pick].tolist(),
                               "embeddings": [[round(v, 4) for v in row] for row in emb.cpu()[pick].tolist()]}
    return out


class EmbeddingTask(Task):
    name = "embedding"
    monitor = "val_rank1"
    train_metrics = ("loss", "active")
    val_metrics = ("loss", "rank1", "rank5", "auc", "eer", "tar_far1e-2", "tar_far1e-3")
    # ``active``: the share of mined triplets that still add to the loss (falls as the margin holds)
    metrics = {"loss": "min", "active": "min", "rank1": "max", "rank5": "max", "auc": "max", "eer": "min",
               "tar_far1e-2": "max", "tar_far1e-3": "max"}
    quality = "rank1"
    quality_words = "rank-1 identification"
    quality_judges_fit = False  # measured on unseen identities only; the loss judges the fit
    labels_per_sample = False  # the model's outputs are embedding dimensions, not classes
    exportable = False  # the L2 normalisation is the task's, outside the model
    # the validation triplet loss mines other identities in larger batches than training's P×K:
    # it may rise while identification improves, so over-fitting is judged by rank-1
    overfit_measure = "rank1"

    def __init__(self, recipe, info):
        super().__init__(recipe, info)
        if recipe.loss.name != "triplet":
            raise RecipeError(f"loss.name: the embedding task trains with the triplet loss (loss.name=triplet), "
                              f"got {recipe.loss.name!r}")
        if recipe.data.sampler != "pk":
            raise RecipeError("data.sampler: the embedding task needs identity-balanced batches "
                              "(data.sampler=pk with data.p and data.k)")
        from ..triplet import triplet_loss

        self._triplet = triplet_loss

    def model_info(self, info):
        d = self.recipe.model.embed_dim
        return replace(info, num_classes=d, class_names=[f"e{i}" for i in range(d)])

    def check_data(self, bundle) -> None:
        super().check_data(bundle)
        for name in ("val", "test"):
            split = getattr(bundle, name)
            if split is None or len(split) == 0:
                continue
            ids, counts = torch.unique(split.targets, return_counts=True)
            if len(ids) < 2 or not (counts >= 2).any():
                raise RecipeError(f"data.split: the {name} split has {len(ids)} identities and "
                                  f"{int((counts >= 2).sum())} with two samples; open-set evaluation needs at least "
                                  f"two identities and one with a gallery and a probe sample")

    # ------------------------------------------------------------------------------ the step
    def forward(self, model, batch):
        return F.normalize(model(batch["input"]).float(), dim=1)

    def loss(self, outputs, batch):
        return self.step_loss(outputs, batch)[0]

    def step_loss(self, outputs, batch):
        cfg = self.recipe.loss
        return self._triplet(outputs, batch["target"], cfg.margin, cfg.mining, cfg.distance)

    def step(self, model, batch):
        outputs = self.forward(model, batch)
        loss, stats = self.step_loss(outputs, batch)
        batch["_active"] = stats["active_fraction"]  # read by train_update without a sync here
        return outputs, loss

    def train_update(self, meter: TrainMeter, outputs, batch, loss):
        n = len(batch["target"])
        meter.loss_sum = meter.loss_sum + loss.detach() * n
        meter.correct = meter.correct + batch["_active"] * n
        meter.n += n

    def train_summary(self, meter: TrainMeter):
        n = max(meter.n, 1)
        return {"loss": float(meter.loss_sum) / n, "active": float(meter.correct) / n}

    # --------------------------------------------------------------------------- evaluation
    def eval_meter(self):
        return _EmbeddingMeter(self)

    def predict(self, outputs):
        return F.normalize(outputs.float(), dim=1)

    def curves(self):
        return [("rank1", ["val_rank1", "val_rank5"]), ("verification", ["val_auc", "val_tar_far1e-3"])]

    def figures(self, summary):
        split = "test" if summary.get("test") else "val"
        final = summary.get(split) or {}
        out = []
        sample = final.get("embedding_sample")
        if sample and len(sample["labels"]) >= 5:
            xy = embedding_view(tuple(map(tuple, sample["embeddings"])), self.recipe.seed)
            out.append(Figure("embedding", "scatter", f"embeddings of unseen identities ({split}, t-SNE)",
                              {"x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(), "labels": sample["labels"],
                               "names": list(self.info.class_names)}))
        v = final.get("verification")
        if v:
            out.append(Figure("roc", "curve", f"verification ROC ({split}, AUC {final.get('auc', 0):.4f})",
                              {"x": v["roc"]["fpr"], "y": v["roc"]["tpr"], "xlabel": "false acceptance rate",
                               "ylabel": "true acceptance rate", "logx": True,
                               "marks": {f"EER {final.get('eer', 0):.3f}": final.get("eer")}}))
            out.append(Figure("distances", "histograms", f"pair distances ({split}, {v['distance']})",
                              {"edges": v["histogram"]["edges"],
                               "series": {"same identity": v["histogram"]["same"],
                                          "different identities": v["histogram"]["different"]},
                               "marks": {"EER threshold": v["thresholds"]["eer"]}}))
        return out

    def describe_metrics(self, m):
        v = m.get("verification")
        if not v:
            return []
        t = v["thresholds"]
        return ["", f"  {v['identities']} identities: {v['gallery']} gallery samples, {v['probes']} probes; "
                    f"{v['same_pairs']} same and {v['different_pairs']} different pairs",
                f"  {v['distance']} distance thresholds: EER {t['eer']:.4f}, FAR 1e-2 {t['far1e-2']:.4f}, "
                f"FAR 1e-3 {t['far1e-3']:.4f}"]


@functools.lru_cache(maxsize=2)  # the plots and report.md both ask for the figures of one summary
def embedding_view(embeddings: tuple[tuple[float, ...], ...], seed: int):
    """2-D t-SNE coordinates (N, 2) numpy array of up to a few hundred embeddings (scikit-learn,
    imported here only: it costs a second of start-up)."""
    import numpy as np
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, dtype=np.float32)
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


class _EmbeddingMeter:
    """Collects a split's embeddings and labels; the metrics need all of them at once."""

    def __init__(self, task: EmbeddingTask):
        self.task = task
        self.emb: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.loss_sum, self.n = 0.0, 0

    def update(self, outputs, batch, loss):
        n = len(batch["target"])
        self.emb.append(outputs.detach().float())
        self.labels.append(batch["target"])
        self.loss_sum, self.n = self.loss_sum + float(loss) * n, self.n + n

    def compute(self) -> dict[str, Any]:
        if not self.n:
            return {}
        r = self.task.recipe
        out = {"loss": self.loss_sum / self.n, "n": self.n}
        out.update(open_set_metrics(torch.cat(self.emb), torch.cat(self.labels), k=r.eval.knn_k,
                                    metric=r.loss.distance, gallery=r.eval.gallery, pairs=r.eval.pairs, seed=r.seed))
        return out


@TASKS.register("embedding", help="metric learning: L2-normalised embeddings, triplet loss, open-set k-NN "
                "identification and verification")
def embedding(recipe, info):
    return EmbeddingTask(recipe, info)
