"""Metric learning (issue 18): the P×K sampler, open-set splits, the embedding task end to end,
its CLIs (embed, identify, verify) and their bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import trainlab
from trainlab.cli import main
from trainlab.data.bundle import build_data
from trainlab.data.pk_sampler import check_pk, pk_order
from trainlab.data.splits import class_split
from trainlab.errors import RecipeError
from trainlab.recipe import load_recipe
from trainlab.tasks.embedding import gallery_mask, open_set_metrics

FAST = {"train.progress": False, "run.plots": False, "run.tensorboard": False, "train.threads": 1}


def test_pk_batches_hold_p_identities_of_k_samples_from_seed_and_epoch():
    """K5: every batch of data.sampler=pk holds P distinct identities with K samples each; the
    order is a function of (seed, epoch) only (exact resume), another epoch draws others; an epoch
    has ceil(N / (P×K)) batches, and samples are visited about equally often."""
    sizes = torch.tensor([5, 6, 7, 8, 9, 10, 11, 40])
    targets = torch.arange(8).repeat_interleave(sizes)
    p, k = 3, 4
    order = pk_order(targets, p, k, seed=7, epoch=2)
    assert len(order) == -(-len(targets) // (p * k)) * p * k
    for batch in order.view(-1, p * k):
        ids = targets[batch].view(p, k)
        assert (ids == ids[:, :1]).all() and len(set(ids[:, 0].tolist())) == p
        assert len(set(batch.tolist())) == p * k  # no sample twice within a batch
    assert torch.equal(order, pk_order(targets, p, k, seed=7, epoch=2))
    assert not torch.equal(order, pk_order(targets, p, k, seed=7, epoch=3))
    assert not torch.equal(order, pk_order(targets, p, k, seed=8, epoch=2))
    # over epochs every sample is visited, the large identity's samples not much less than the
    # others' (it gives at most one chunk per batch; a remainder of fewer than K samples waits for
    # another shuffle, so small identities vary more)
    visits = torch.bincount(torch.cat([pk_order(targets, p, k, 7, e) for e in range(1, 21)]), minlength=len(targets))
    assert visits.min() >= 5 and visits.max() <= 2 * visits.float().mean()
    assert visits[targets == 7].float().mean() > 0.6 * visits.float().mean()


def test_pk_refuses_too_few_identities_or_samples_naming_them():
    """K5 / bad input: P larger than the identities, or an identity with fewer than K samples
    (named), is one RecipeError line."""
    targets = torch.tensor([0] * 5 + [1] * 2 + [2] * 6)
    with pytest.raises(RecipeError, match=r"^data.p: 4 identities per batch, but the training split has only 3$"):
        check_pk(targets, 4, 2)
    with pytest.raises(RecipeError, match=r"^data.k: identity 'bob' has 2 training samples, fewer than data.k=3$"):
        check_pk(targets, 2, 3, ["ann", "bob", "cy"])


def test_class_split_keeps_validation_and_test_identities_out_of_training():
    """K5: data.split.by=class puts whole identities in each split (open set); data.split.unseen
    holds named classes out of training and shares their samples between val and test."""
    targets = torch.arange(20).repeat_interleave(7)
    tr, va, te = class_split(targets, 0.2, 0.1, seed=0)
    a, b, c = (set(targets[i].tolist()) for i in (tr, va, te))
    assert not (a & b) and not (a & c) and not (b & c) and len(b) == 4 and len(c) == 2
    assert len(tr) + len(va) + len(te) == len(targets)
    tr, va, te = class_split(targets, 0.15, 0.15, seed=0, unseen=[3, 4])
    assert set(targets[va].tolist()) == set(targets[te].tolist()) == {3, 4}
    assert not {3, 4} & set(targets[tr].tolist()) and abs(len(va) - len(te)) <= 1
    recipe = load_recipe("digits-triplet")
    b = build_data(recipe, statistics=False)
    assert set(b.train.targets.tolist()) == set(range(7)) and set(b.val.targets.tolist()) == {7, 8, 9}
    with pytest.raises(RecipeError, match=r"data.split.unseen: no class '12' in the data set"):
        build_data(load_recipe("digits-triplet", ['data.split.unseen=["7", "12"]']), statistics=False)
    with pytest.raises(RecipeError, match="unseen: holding classes out needs split.by=class"):
        load_recipe("digits-cnn", ['data.split.unseen=["7"]'])


def test_gallery_and_probes_split_every_identity():
    """E5: each evaluated identity enrols a seeded share of its samples in the gallery and keeps at
    least one probe; an identity with one sample is enrolled only."""
    labels = torch.tensor([0] * 10 + [1] * 2 + [2] * 1 + [3] * 7)
    m = gallery_mask(labels, 0.5, seed=3)
    for i, n_enrolled in ((0, 5), (1, 1), (2, 1), (3, 4)):
        assert int(m[labels == i].sum()) == n_enrolled
    assert torch.equal(m, gallery_mask(labels, 0.5, seed=3)) and not torch.equal(m, gallery_mask(labels, 0.5, seed=4))


def test_open_set_metrics_against_scikit_learn():
    """E5: the k-NN vote answers as scikit-learn's KNeighborsClassifier on the same gallery and
    probes; AUC is roc_auc_score of the same pairs; separated identities verify perfectly."""
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import KNeighborsClassifier

    from trainlab.evaluate.retrieval import pairs_from_labels
    from trainlab.tasks.embedding import row_distances

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(12)
    centres = torch.randn(6, 8, generator=g)
    emb = torch.nn.functional.normalize(centres[labels] + 0.6 * torch.randn(len(labels), 8, generator=g), dim=1)
    m = open_set_metrics(emb, labels, k=5, metric="euclidean", gallery=0.5, pairs=2000, seed=0)
    enrolled = gallery_mask(labels, 0.5, 0)
    knn = KNeighborsClassifier(5, algorithm="brute").fit(emb[enrolled].numpy(), labels[enrolled].numpy())
    expected = (knn.predict(emb[~enrolled].numpy()) == labels[~enrolled].numpy()).mean()
    assert m["rank1"] == pytest.approx(expected)
    pairs, same = pairs_from_labels(labels, 2000, 0)
    d = row_distances(emb[pairs[:, 0]], emb[pairs[:, 1]], "euclidean")
    assert m["auc"] == pytest.approx(roc_auc_score(same.numpy(), -d.numpy()), abs=1e-12)
    far = open_set_metrics(torch.nn.functional.normalize(centres[labels], dim=1), labels, k=5, metric="cosine",
                           gallery=0.5, pairs=2000, seed=0)
    assert far["rank1"] == far["auc"] == 1.0 and far["eer"] == 0.0
    assert set(far["verification"]["thresholds"]) == {"eer", "far1e-2", "far1e-3"}


@pytest.fixture(scope="module")
def triplet_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("emb") / "run"
    return trainlab.fit("digits-triplet", quiet=True, **FAST, **{"train.epochs": 2, "run.dir": str(path)})


def test_digits_triplet_trains_and_reports_open_set_metrics(triplet_run):
    """K5/L5/E5/M11: the built-in digits-triplet trains on digits 0-6 with P×K batches and is
    judged on the unseen 7-9: rank-1 (5-NN vote), rank-5, AUC, EER and TAR at FAR 1e-2/1e-3 per
    epoch, followed as higher-is-better by the best checkpoint; thresholds kept for verify."""
    s = triplet_run.summary()
    assert s["monitor"] == "val_rank1" and s["best_epoch"] in (1, 2)
    epochs = triplet_run.epochs()
    assert {"train_loss", "train_active", "val_rank1", "val_rank5", "val_auc", "val_eer", "val_tar_far1e-3"} <= set(
        epochs[0])
    assert s["best_value"] == max(r["val_rank1"] for r in epochs)
    assert s["val"]["rank1"] > 0.6 and s["val"]["auc"] > 0.6
    v = s["val"]["verification"]
    assert v["identities"] == 3 and v["gallery"] + v["probes"] == s["val"]["verification"]["gallery"] + v["probes"]
    task = triplet_run.task()
    assert task.metric_mode("val_rank1") == "max" and task.metric_mode("val_eer") == "min"


@pytest.mark.slow
def test_pk_run_resumes_bit_for_bit(tmp_path):
    """K5/T3: P×K batches come from (seed, epoch), so a run stopped after epoch 1 and resumed ends
    with the weights of an uninterrupted run."""
    from safetensors.torch import load_file

    o = {**FAST, "schedule.name": "none", "model.width": 8}
    full = trainlab.fit("digits-triplet", quiet=True, **o, **{"train.epochs": 2, "run.dir": str(tmp_path / "a")})
    part = trainlab.fit("digits-triplet", quiet=True, **o, **{"train.epochs": 1, "run.dir": str(tmp_path / "b")})
    resumed = trainlab.fit(resume=str(part.dir), quiet=True, **{"train.epochs": 2})
    a = load_file(full.dir / "checkpoints" / "last.safetensors")
    b = load_file(resumed.dir / "checkpoints" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def _digit_png(path, image8x8):
    Image.fromarray(np.clip(np.rint(image8x8 * 255 / 16), 0, 255).astype(np.uint8), mode="L").save(path)


def test_embed_identify_verify_cli(triplet_run, tmp_path, capsys):
    """E5: `trainlab embed` writes (N, D) unit-norm embeddings and their names; `identify` names
    each probe's identity among a gallery folder with its k-NN vote and distances; `verify` prints
    the distance and the decision at the validation EER threshold."""
    from trainlab.data.digits import load_digits_arrays

    images, labels = load_digits_arrays()
    gallery = tmp_path / "gallery"
    picks = {d: np.nonzero(labels == d)[0] for d in (7, 8, 9)}
    for d, idx in picks.items():
        (gallery / f"digit{d}").mkdir(parents=True)
        for i in idx[:6]:
            _digit_png(gallery / f"digit{d}" / f"{i}.png", images[i])
    probes = []
    for d, idx in picks.items():
        probes.append(tmp_path / f"probe{d}.png")
        _digit_png(probes[-1], images[idx[-1]])
    out = tmp_path / "emb.npy"
    assert main(["embed", str(triplet_run.dir), *map(str, probes), "--out", str(out)]) == 0
    emb = np.load(out)
    assert emb.shape == (3, 64) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert (tmp_path / "emb.names.txt").read_text().splitlines() == list(map(str, probes))
    capsys.readouterr()
    assert main(["identify", str(triplet_run.dir), "--gallery", str(gallery), *map(str, probes), "--top", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(" of the nearest vote for it); nearest (euclidean): " in ln for ln in lines)
    right = sum(ln.split(": ")[1].startswith(f"digit{d} ") for ln, d in zip(lines, (7, 8, 9)))
    assert right >= 2
    assert main(["verify", str(triplet_run.dir), str(probes[0]), str(probes[0])]) == 0
    line = capsys.readouterr().out.strip()
    assert "euclidean distance 0.0000; same identity (threshold" in line and "validation EER" in line
    assert main(["evaluate", str(triplet_run.dir), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "rank1" in out and "3 identities:" in out and "distance thresholds: EER" in out
    p = triplet_run.predict(probes)  # the Python API: unit embeddings in probs
    assert p.probs.shape == (3, 64) and np.allclose(np.linalg.norm(p.probs, axis=1), 1, atol=1e-5)


def test_embedding_bad_input_is_one_line_exit_2(triplet_run, tmp_path, capsys):
    """K5 / bad input: an empty gallery folder, a probe of another image size, P larger than the
    identities and K larger than an identity's samples each exit 2 with one line."""
    (tmp_path / "empty" / "someone").mkdir(parents=True)
    probe = tmp_path / "big.png"
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(probe)
    cases = [
        (["identify", str(triplet_run.dir), "--gallery", str(tmp_path / "empty"), str(probe)],
         "identity 'someone' has no images"),
        (["identify", str(triplet_run.dir), "--gallery", str(tmp_path / "nowhere"), str(probe)], "not a folder"),
        (["embed", str(triplet_run.dir), str(probe), "--out", str(tmp_path / "e.npy")],
         "image of 16x16 pixels with 1 channel; this run was trained on 1x8x8 arrays"),
        (["fit", "digits-triplet", "data.p=8", "data.batch_size=128", f"run.dir={tmp_path / 'r1'}"],
         "data.p: 8 identities per batch, but the training split has only 7"),
        (["fit", "digits-triplet", "data.subset=60", f"run.dir={tmp_path / 'r2'}"], "training samples, fewer than "
                                                                                      "data.k=16"),
        (["fit", "digits-triplet", "loss.name=cross_entropy", f"run.dir={tmp_path / 'r3'}"],
         "loss.name: the embedding task trains with the triplet loss"),
    ]
    for argv, text in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0], (argv, err)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_folder_of_identities_trains_an_embedding(tmp_path):
    """K5/D10: the folder data set with one sub-folder per identity trains the embedding task, its
    validation identities kept out of training (data.split.by=class)."""
    from trainlab.registry import DATASETS

    recipe = load_recipe("faces-triplet", ["data.faces={identities: 8, samples_per_identity: 6, image_size: 16}"])
    source, _ = DATASETS.get("faces").fn(recipe.data, 0)  # the faces renderer writes the identities' images
    for i in range(len(source)):
        x, y = source.load(i)
        folder = tmp_path / "people" / f"person{int(y)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    run = trainlab.fit("faces-triplet", quiet=True, **FAST, **{
        "data.name": "folder", "data.root": str(tmp_path / "people"), "data.faces": None, "data.augment": [],
        "data.split": {"by": "class", "val": 0.25, "test": 0.0}, "data.p": 3, "data.k": 2, "data.batch_size": 6,
        "model.width": 8, "model.depth": 2, "model.embed_dim": 8, "train.epochs": 2, "run.dir": str(tmp_path / "r")})
    s = run.summary()
    assert s["val"]["verification"]["identities"] == 2 and 0.0 <= s["val"]["rank1"] <= 1.0
    assert {r["epoch"] for r in run.epochs()} == {1, 2}
