"""Perception Visualization: the decoder's bookkeeping (layer and latent checked), PV's identity
(reconstruction x normalised Grad-CAM), save/load, and the shipped decoder against a baseline."""

from __future__ import annotations

import pytest
import torch

from guidewidgets import features, zoo
from guidewidgets.explain.cam import grad_cam
from guidewidgets.features import pv as perception


@pytest.fixture(scope="module")
def model():
    return zoo.load("shapes-classifier")


@pytest.fixture(scope="module")
def tiny(model):
    return perception.train_decoder(model, steps=3, batch_size=4, seed=1)


def test_pv_is_the_reconstruction_weighted_by_normalised_grad_cam(model, tiny):
    x = zoo.ShapeScenes(4, seed=3).batch()["images"].float() / 255
    out = features.perception(model, x, tiny, target=2)
    assert out.reconstruction.shape == x.shape and out.saliency.shape == (4, 96, 96)
    assert out.reconstruction.min() >= 0 and out.reconstruction.max() <= 1
    cam = grad_cam(model, x, target=torch.full((4,), 2), layer="features")
    want = cam.clamp_min(0) / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    torch.testing.assert_close(out.saliency, want)
    torch.testing.assert_close(out.pv, out.reconstruction * out.saliency[:, None])
    assert out.target.tolist() == [2, 2, 2, 2]
    pred = features.perception(model, x, tiny)
    with torch.no_grad():
        assert torch.equal(pred.target, model(x).argmax(1))
    assert all(p.grad is None for p in model.parameters())


def test_a_decoder_refuses_another_layer_and_bad_targets(model, tiny):
    x = zoo.ShapeScenes(2, seed=3).batch()["images"].float() / 255
    with pytest.raises(ValueError, match="trained for layer 'features'"):
        features.reconstruct(model, tiny, x, layer="features.block4")
    with pytest.raises(ValueError, match="trained for layer 'features'"):
        features.perception(model, x, tiny, layer="features.block3")
    wrong_shape = perception.Decoder((64, 12, 12), (96, 96), "features")
    with pytest.raises(ValueError, match="train one with"):
        features.reconstruct(model, wrong_shape, x)
    with pytest.raises(ValueError, match="class index"):
        features.perception(model, x, tiny, target=6)
    with pytest.raises(ValueError, match="power of two"):
        perception.Decoder((128, 12, 12), (100, 100), "features")


def test_save_and_load_keep_the_decoder(model, tiny, tmp_path):
    path = tmp_path / "dec.pt"
    perception.save_decoder(tiny, path)
    back = features.load_decoder(path)
    assert back.meta == tiny.meta
    x = zoo.ShapeScenes(2, seed=5).batch()["images"].float() / 255
    # float16 weights: the same picture to within a few 1e-3
    torch.testing.assert_close(
        features.reconstruct(model, back, x), features.reconstruct(model, tiny, x), atol=5e-3, rtol=0
    )
    with pytest.raises(FileNotFoundError, match="make one with"):
        features.load_decoder(tmp_path / "missing.pt")


@pytest.mark.skipif(not perception.DECODER_PATH.exists(), reason="the shipped decoder is not built yet")
def test_shipped_decoder_beats_the_mean_image_on_held_out_scenes(model):
    dec = features.load_decoder()
    assert dec.meta["layer"] == "features" and tuple(dec.meta["latent"]) == (128, 12, 12)
    assert perception.DECODER_PATH.stat().st_size < 2_000_000
    held = zoo.ShapeScenes(64, seed=4242).batch()["images"].float() / 255
    rec = features.reconstruct(model, dec, held)
    mse = float((rec - held).pow(2).mean())
    baseline = float((held.mean(0, keepdim=True) - held).pow(2).mean())  # the best constant picture
    assert mse < 0.6 * baseline, (mse, baseline)
