"""TensorBoard images and hparams (V2/V3/V4): a finished run's tensorboard/ folder holds, beside
the per-epoch scalars, the first-layer filters, the confusion matrix and the augmentation preview
as images, and the recipe's hyper-parameters with the final metrics (the HParams dashboard)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import trainlab
from trainlab.report.board import hparams_of
from trainlab.report.inside import filter_image


@pytest.mark.slow
def test_tensorboard_has_images_and_hparams_beside_the_scalars(tmp_path):
    """V2/V3/V4: images filters, confusion matrix, augmentation preview; hparams with final metrics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = trainlab.fit("digits-cnn", ["train.epochs=1", "train.progress=false", "run.plots=false",
                                      "doctor.enabled=false", f"run.dir={tmp_path / 'r'}"], quiet=True)
    events = EventAccumulator(str(run.tensorboard), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"inside/first_layer_filters", "figures/confusion", "data/augmentation_preview"} <= set(tags["images"])
    assert "val/loss" in tags["scalars"] and "hparam/test_accuracy" in tags["scalars"]

    # the filters image is the final model's first convolution, each kernel in its own range
    model = run.load_model("best")[0]
    expected = (filter_image(model.net[0][0].weight.detach()) * 255).round().to(torch.uint8).numpy()
    png = events.Images("inside/first_layer_filters")[-1].encoded_image_string
    got = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    np.testing.assert_array_equal(got, expected)
    preview = events.Images("data/augmentation_preview")[-1]
    assert preview.width > 100 and preview.height > 100

    summary = run.summary()
    test_accuracy = events.Scalars("hparam/test_accuracy")[-1].value
    assert test_accuracy == pytest.approx(summary["test"]["accuracy"], abs=1e-6)
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    recipe = run.recipe()
    assert start.hparams["optim.lr"].number_value == pytest.approx(recipe.optim.lr)
    assert start.hparams["model.name"].string_value == "cnn"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "hparam/test_accuracy" in {m.name.tag for m in experiment.metric_infos}


def test_hparams_leave_out_how_a_run_is_written_and_unset_settings():
    """V2: the hyper-parameters are what is trained (data, model, optimizer...), not run.* or doctor.*."""
    recipe = trainlab.load_recipe("digits-cnn", ["run.dir=/tmp/x"])
    hp = hparams_of(recipe)
    assert hp["optim.lr"] == recipe.optim.lr and hp["data.name"] == "digits" and hp["seed"] == recipe.seed
    assert not any(k.startswith(("run.", "doctor.", "eval.")) for k in hp)
    assert all(v is not None and isinstance(v, (bool, int, float, str)) for v in hp.values())
