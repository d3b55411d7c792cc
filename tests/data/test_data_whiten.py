"""D2: PCA and ZCA whitening fitted on the training split, applied in the model's input stage."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_data import shapes_recipe

from trainlab.data import build_data
from trainlab.data.whiten import whitening_matrix
from trainlab.errors import RecipeError
from trainlab.recipe import load_recipe


def _correlated(n=4000, d=6, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.linspace(0.2, 3.0, d)
    return torch.from_numpy(rng.normal(size=(n, d)) @ mix.T + rng.normal(size=d))


def test_whitened_data_has_identity_covariance_and_zca_stays_closest():
    """D2: (x − μ)Wᵀ has covariance I for PCA and ZCA (numpy's covariance as the reference); ZCA is
    symmetric and of all whitenings the closest to the centred input, so closer than PCA."""
    x = _correlated()
    xc = x - x.mean(0)
    out = {}
    for method in ("pca", "zca"):
        mu, w = whitening_matrix(x, method, eps=0.0)
        y = (x - mu) @ w.T
        cov = np.cov(y.numpy(), rowvar=False, bias=True)
        assert np.allclose(cov, np.eye(6), atol=1e-8)
        out[method] = float(((y - xc) ** 2).sum())
    _, w = whitening_matrix(x, "zca", 0.0)
    assert torch.allclose(w, w.T, atol=1e-10)
    assert out["zca"] < out["pca"]
    # PCA's rows are the principal axes, largest variance first (numpy's eigh as the reference)
    evals, evecs = np.linalg.eigh(np.cov(x.numpy(), rowvar=False, bias=True))
    _, w = whitening_matrix(x, "pca", 0.0)
    assert np.allclose(np.abs(w[0].numpy()), np.abs(evecs[:, -1]) / np.sqrt(evals[-1]), atol=1e-8)


def test_whitening_is_fitted_on_the_training_split_and_saved_with_the_model(tmp_path):
    """D2: data.whiten=zca on digits: the Whiten stage after Normalize holds the matrix fitted on the
    normalized training split, whose whitened covariance has eigenvalues λ/(λ+eps) ≤ 1 (~1 for the
    directions that carry variance); the run predicts with it after reloading."""
    from conftest import FAST

    from trainlab.api import build_components, fit
    from trainlab.models.wrapper import Whiten

    recipe = load_recipe("digits-mlp", ["data.whiten=zca", "data.whiten_eps=0.001"])
    trainer = build_components(recipe)
    stage = trainer.model.input
    assert isinstance(stage[1], Whiten)
    train = trainer.bundle.train.inputs
    with torch.no_grad():
        y = stage(train).reshape(len(train), -1).double()
    evals = np.linalg.eigvalsh(np.cov(y.numpy(), rowvar=False, bias=True))
    assert evals.max() <= 1.0 + 1e-6 and (evals > 0.9).sum() >= 40
    run = fit(recipe, [*FAST, "train.epochs=1", f"run.dir={tmp_path / 'r'}"], quiet=True)
    model, *_ = run.load_model()
    assert torch.allclose(model.input[1].matrix, stage[1].matrix)
    assert run.predict(train[:3].numpy()).probs.shape == (3, 10)


def test_whitening_refuses_large_images():
    """D2: whitening is for flat inputs; 3x64x64 images are refused with the field named."""
    with pytest.raises(RecipeError, match="data.whiten: inputs have 12288 features"):
        build_data(shapes_recipe("data.whiten=pca", size=64, count=40))
    with pytest.raises(RecipeError, match="data.whiten: inputs have 12288 features"):
        build_data(shapes_recipe("data.whiten=pca", size=64, count=40), statistics=False)
