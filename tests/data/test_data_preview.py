"""D11: the augmentation preview grid, and the augment / kfold / fit CLI contract of the data pipeline."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, assert_user_error, run_cli
from helpers_data import shapes_recipe

from trainlab.errors import TrainlabError


def test_preview_draws_boxes_and_masks_over_augmented_samples(tmp_path):
    """D11: the grid has one tile per sample, captions, box outlines in the class colour, and it is
    what the first batch sees (mosaic and cutmix included)."""
    from trainlab.cli.augment import write_grid
    from trainlab.data.preview import PALETTE, augment_grid, augmented_batch, render_tile

    recipe = shapes_recipe("data.augment=[mosaic, hflip]", "data.batch_augment=[cutmix]", count=30, size=32)
    batch, info = augmented_batch(recipe, n=6)
    assert batch["input"].shape == (6, 3, 32, 32) and batch["target"].shape == (6, 4)
    ann = batch["annotations"][0]
    tile = render_tile(batch["input"][0], ann, None, info)
    assert tile.shape == (3, 128, 128)  # 32 px enlarged 4 times
    x0, y0 = (int(v) * 4 for v in ann["boxes"][0][:2])
    colour = PALETTE[int(ann["labels"][0]) % len(PALETTE)]
    assert tile[:, y0, x0 + 1].tolist() == list(colour) or tile[:, y0 + 1, x0].tolist() == list(colour)
    grid = augment_grid(recipe, n=6)
    assert grid.size == (3 * (128 + 4) + 4, 2 * (128 + 14 + 4) + 4)
    with pytest.raises(TrainlabError, match=r"^--out '.*grid.jpg': expected a .png file name$"):
        write_grid(recipe, tmp_path / "grid.jpg")


def test_preview_of_digits_without_boxes():
    """D11: data sets without boxes preview their (enlarged) augmented images."""
    from trainlab.data.preview import augment_grid
    from trainlab.recipe import load_recipe

    grid = augment_grid(load_recipe(None, ["data.augment=[random_erasing, {name: rotate, degrees: 20}]"]), n=4)
    assert grid.size == (2 * (128 + 4) + 4, 2 * (128 + 14 + 4) + 4)


def test_preview_ignores_the_training_batch_size_and_caps_at_the_split(tmp_path, capsys):
    """D11: the preview trains nothing, so a data.batch_size larger than the training split (which
    training caps at the split, issue 22) plays no part; asking for more samples than the split has
    draws the whole split, and `trainlab augment` prints the real count."""
    from trainlab.cli import main
    from trainlab.data import build_data
    from trainlab.data.preview import augmented_batch
    from trainlab.recipe import load_recipe

    recipe = load_recipe("digits-mlp", ["data.subset=12", "data.batch_size=64"])
    assert len(build_data(recipe, statistics=False).train) == 12  # not refused (issue 22)
    batch, _ = augmented_batch(recipe, n=100_000)
    assert len(batch["input"]) == 12
    assert recipe.data.batch_size == 64  # the caller's recipe is left as it was
    out = tmp_path / "grid.png"
    assert main(["augment", "digits-mlp", "data.subset=12", "data.batch_size=64", "--n", "100000",
                 "--out", str(out)]) == 0
    assert f"wrote {out} (12 samples of digits;" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_augment_cli_writes_a_png(tmp_path):
    """D11: `trainlab augment RECIPE key=value --n --out` writes the grid and says so."""
    from PIL import Image

    out = tmp_path / "sub" / "grid.png"
    proc = run_cli("augment", "shapes-cnn", "data.shapes.count=24", "data.batch_size=8", "data.augment=[mosaic, color_jitter]",
                   "--n", "4", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    with Image.open(out) as im:
        assert im.size == (2 * (128 + 4) + 4, 2 * (128 + 14 + 4) + 4)


def test_kfold_cli_prints_mean_std_and_writes_summary(tmp_path):
    """D9: `trainlab kfold RECIPE --folds K key=value` prints each fold and mean ± std, writes kfold.json."""
    proc = run_cli("kfold", "digits-mlp", "--folds", "2", *FAST, "train.epochs=1", "data.subset=200",
                   f"run.dir={tmp_path / 'cv'}")
    assert proc.returncode == 0, proc.stderr
    assert "digits-mlp fold 2/2: val accuracy" in proc.stdout and "±" in proc.stdout
    summary = json.loads((tmp_path / "cv" / "kfold.json").read_text())
    assert summary["folds"] == 2 and len(summary["recipes"][0]["folds"]) == 2


def test_label_changing_augment_exits_2(tmp_path):
    """D7: a recipe asking for a label-changing transform fails validation naming it, exit code 2,
    and writes nothing."""
    proc = run_cli("fit", "digits-cnn", "data.augment=[vflip]", *FAST, f"run.dir={tmp_path / 'r'}")
    assert_user_error(proc, "data.augment[0]", "'vflip' changes the label")
    assert not (tmp_path / "r").exists()


def test_shapes_cnn_recipe_trains():
    """D10: the built-in shapes-cnn recipe is listed with its description and trains."""
    import tempfile

    from trainlab.api import fit
    from trainlab.recipe import builtin_recipes, recipe_summary

    assert "largest" in recipe_summary(builtin_recipes()["shapes-cnn"])
    with tempfile.TemporaryDirectory() as d:
        run = fit("shapes-cnn", [*FAST, "train.epochs=1", "data.shapes.count=80", "data.batch_size=16",
                                 f"run.dir={d}/r"], quiet=True)
        summary = run.summary()
    assert 0.0 <= summary["val"]["accuracy"] <= 1.0 and summary["epochs_run"] == 1
    assert torch.isfinite(torch.tensor(summary["val"]["loss"]))


def test_preview_is_the_trainers_first_batch():
    """D11, D8: with n = data.batch_size the preview's batch is the one the trainer computes its first loss on:
    same samples, per-sample augmentation (load_sample, as in the loader) and batch ops (the training
    device's generator seeded from (seed, epoch, batch 0))."""
    from trainlab.api import build_components
    from trainlab.data.preview import augmented_batch
    from trainlab.recipe import load_recipe

    recipe = load_recipe("digits-cnn", ["data.batch_size=8", "data.augment=[{name: rotate, degrees: 20}]",
                                        "data.batch_augment=[{name: random_erasing, p: 1.0}, mixup]"])
    trainer = build_components(recipe)
    seen = {}

    class Seen(Exception):
        pass

    def capture(batch):
        seen.update(batch)
        raise Seen

    trainer.compute_loss = capture
    with pytest.raises(Seen):
        trainer.train_epoch()
    batch, _ = augmented_batch(recipe, n=8)
    assert torch.equal(batch["input"], seen["input"]) and torch.equal(batch["target"], seen["target"])
    assert batch["target"].shape == (8, 10)  # mixup ran
