"""FeatureWidget driven from Python: layer/channel/image changes redraw the panels, the activation
maximization runs in the background and is cached, bad values are refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")

from guidewidgets import features, zoo
from guidewidgets.widgets.feature_widget import FeatureWidget


@pytest.fixture(scope="module")
def widget():
    w = FeatureWidget(zoo.load("shapes-classifier"), zoo.ShapeScenes(24, seed=3), k=4, steps=3)
    assert w.wait(60)
    yield w
    w.cancel()
    w.close()


def test_panels_follow_layer_channel_and_image(widget):
    w = widget
    assert w.layer == "features" and w.w_channel.max == 127
    first = (w.w_acts.value, w.w_patches.value, w.w_neigh.value, w.w_max.value)
    assert all(first) and w.status == ""
    assert w.w_patches.layout.width == f"{4 * 39 + 3 * 2}px"  # shown at its own size, not stretched
    w.channel = 5
    assert w.wait(60)
    assert w.w_acts.value != first[0] and w.w_patches.value != first[1] and w.w_max.value != first[3]
    assert w.w_neigh.value == first[2]  # neighbours depend on the layer and image, not the channel
    assert w.session.cached("maximized", "features", 5) is not None and w.w_progress.value == 1.0
    w.image_index = 7
    assert w.wait(60)
    assert w.neighbours_shown[0] == features.neighbours(w.session.cached("embedding", "features"), 7, k=3)[0].tolist()
    w.layer = "features.block3"
    assert w.wait(60)
    assert w.w_channel.max == 63 and "features.block3" in w.w_acts_caption.value
    assert "(15, 15)" in w.w_patches_caption.value
    before = len(w.session._maximized)
    w.layer = "features"
    w.channel = 5
    assert w.wait(60)
    assert len(w.session._maximized) == before  # cached: not computed again
    png = w.to_png()
    assert png.startswith(b"\x89PNG")


def test_scatter_hover_shows_a_thumbnail_and_click_selects(widget):
    w = widget
    w.layer, w.image_index = "features", 0
    assert w.wait(60)
    before = w.scatter.frames["image"].copy()
    xy = w._xy[("features", "pca")]
    i = 9
    y, x = 159 - int(xy[i, 1]), int(xy[i, 0])
    assert w.nearest_dot(y, x) in {j for j in range(len(xy)) if tuple(xy[j]) == tuple(xy[i])}
    j = w.nearest_dot(y, x)
    w.scatter.on_mouse_move(x * w.scatter.scale, y * w.scatter.scale)
    assert f"image {j}" in w.scatter.value_label.value and bytes(w.w_thumb.value).startswith(b"\x89PNG")
    w.scatter.on_mouse_down(x * w.scatter.scale, y * w.scatter.scale)
    w.scatter.on_mouse_up(x * w.scatter.scale, y * w.scatter.scale)
    assert w.wait(60)
    assert w.image_index == j and not np.array_equal(w.scatter.frames["image"], before)  # the ring moved
    w.projection = "tsne"
    assert w.wait(60)
    assert ("features", "tsne") in w._xy and "t-SNE" in w.w_scatter_caption.value
    w.projection = "umap"
    assert w.projection == "tsne" and "pca" in w.status
    w.projection = "pca"
    assert w.wait(60)


def test_bad_values_are_refused_with_a_reason(widget):
    w = widget
    w.layer = "features"
    w.channel = 500
    assert w.channel != 500 and "out of range" in w.status
    w.layer = "fc"
    assert w.layer == "features" and "no feature-map layer" in w.status
    w.image_index = 99
    assert w.image_index != 99 and "no image 99" in w.status


def test_model_is_left_as_it_was(widget):
    widget.wait(60)
    for m in widget.model.modules():
        assert not m._forward_hooks and not m.training
    assert all(p.grad is None for p in widget.model.parameters())
    assert torch.equal(widget.images[0], zoo.ShapeScenes(24, seed=3)[0]["image"])


def test_tsne_says_so_at_once_runs_in_the_background_and_a_newer_request_cancels_it():
    w = FeatureWidget(zoo.load("shapes-classifier"), zoo.ShapeScenes(48, seed=4), k=2, steps=2)
    try:
        assert w.wait(60) and w.status == ""
        w.projection = "tsne"  # returns before t-SNE is done: the status says what runs, at once
        job = w.session.job("projection")
        assert w.status.startswith("Computing t-SNE of features for 48 images") and w.busy
        assert "Computing t-SNE" in w.w_scatter_caption.value
        w.layer = "features.block3"  # a newer request: the older t-SNE is cancelled
        assert job.cancelled and w.session.job("projection") is not job
        assert w.wait(60) and not w.busy and w.status == ""
        assert ("features.block3", "tsne") in w._xy and "t-SNE of features.block3" in w.w_scatter_caption.value
        assert w.session.cached("projection", "features", "tsne") is None or job.state == "done"
    finally:
        w.close()


def test_neuron_fold_shows_the_units_guided_backprop_and_gradient(widget):
    """Opening the first fold draws the image beside the guided backprop of the channel's strongest
    unit on it; the rule and unit toggles redraw it; the maximization is still computed."""
    from guidewidgets.explain import Neuron, neuron_gradient, neuron_guided_backprop

    w = widget
    w.layer, w.channel, w.image_index = "features", 3, 2
    assert w.wait(60) and w.session.cached("neuron", "features", 3, 2, "guided", "max") is None  # fold closed
    w.w_tabs.selected_index = 0
    g, unit = w.session.cached("neuron", "features", 3, 2, "guided", "max")
    a = w.session.activations("features", 2)[3]
    assert unit == Neuron(3, divmod(int(a.argmax()), a.shape[-1]))
    torch.testing.assert_close(g, neuron_guided_backprop(w.model, w.images[2][None], unit, "features", raw=True)[0])
    first = w.w_neuron.w_image.value
    assert bytes(first).startswith(b"\x89PNG") and str(unit) in w.w_neuron.w_caption.value
    assert w.w_neuron.frame.shape[1] > 2 * 192  # the image and the neuron picture side by side
    w.neuron_rule = "gradient"
    assert w.w_neuron.w_rule.value == "gradient" and w.w_neuron.w_image.value != first
    g, _ = w.session.cached("neuron", "features", 3, 2, "gradient", "max")
    torch.testing.assert_close(g, neuron_gradient(w.model, w.images[2][None], unit, "features", raw=True)[0])
    w.neuron_unit = "channel"
    assert "channel 3 of" in w.w_neuron.w_caption.value
    w.channel = 4
    assert w.session.cached("neuron", "features", 4, 2, "gradient", "channel") is not None
    w.neuron_rule = "deconv"
    assert w.neuron_rule == "gradient" and "neuron_rule must be one of" in w.status
    assert w.wait(60) and w.session.cached("maximized", "features", 4) is not None
    w.neuron_rule, w.neuron_unit = "guided", "max"
    w.w_tabs.selected_index = None


def test_opening_the_neuron_fold_waits_for_the_running_maximization(widget, monkeypatch):
    """Opening the fold while the channel's maximizing image computes keeps that job (computing the
    neuron image then would take the model from it and restart it from step 0); the image follows
    when the job ends."""
    import threading

    w, gate = widget, threading.Event()
    w.w_tabs.selected_index = None
    real = w.session.maximized

    def held(layer, channel, job=None):
        gate.wait(30)  # the job stays running until the test has opened the fold
        return real(layer, channel, job)

    monkeypatch.setattr(w.session, "maximized", held)
    w.layer, w.channel, w.image_index = "features", 6, 1
    running = w.session.job("maximize")
    assert running is not None and running.running
    w.w_tabs.selected_index = 0
    assert w.session.job("maximize") is running and running.running  # not cancelled, not restarted
    assert w.session.cached("neuron", "features", 6, 1, w.neuron_rule, w.neuron_unit) is None
    assert "follows when the maximizing image is done" in w.w_neuron.w_caption.value
    gate.set()
    assert w.wait(60) and running.state == "done"
    assert w.session.cached("neuron", "features", 6, 1, w.neuron_rule, w.neuron_unit) is not None
    w.w_tabs.selected_index = None
