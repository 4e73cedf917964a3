"""FeatureBrowser, the widget-free session under the FeatureWidget, driven from Python alone: its
caches per layer, background projections and maximizations (cancelled by a newer one, stopped by
close()), and neuron_image: the session's guided backprop / gradient of a channel's unit on one
image agrees with the explain functions, is cached, and refuses bad requests with a sentence."""

import threading
import time

import pytest
import torch

from guidewidgets import features, jobs, zoo
from guidewidgets.explain import Neuron, neuron_gradient, neuron_guided_backprop
from guidewidgets.features import FeatureBrowser
from tests.helpers import hook_count as _hooks_on
from tests.helpers import until as _until


@pytest.fixture(scope="module")
def browser():
    b = FeatureBrowser(zoo.load("shapes-classifier"), zoo.ShapeScenes(24, seed=3), k=4, steps=3)
    yield b
    b.close()


def test_neuron_image_is_the_units_guided_backprop_or_gradient(browser):
    b = browser
    x = b.images[1][None]
    g, unit = b.neuron_image("features.block3", 7, 1)
    a = b.activations("features.block3", 1)[7]
    assert unit == Neuron(7, divmod(int(a.argmax()), a.shape[-1])) and a[unit.position] == a.max()
    torch.testing.assert_close(g, neuron_guided_backprop(b.model, x, unit, "features.block3", raw=True)[0])
    assert b.neuron_image("features.block3", 7, 1)[0] is g  # cached
    g, unit = b.neuron_image("features.block3", 7, 1, rule="gradient", unit="channel")
    assert unit == Neuron(7)
    torch.testing.assert_close(g, neuron_gradient(b.model, x, 7, "features.block3", raw=True)[0])
    assert b.cached("neuron", "features.block3", 7, 1, "gradient", "channel")[0] is g


def test_neuron_image_refuses_bad_requests(browser):
    with pytest.raises(ValueError, match="rule must be one of"):
        browser.neuron_image("features", 0, 0, rule="deconv")
    with pytest.raises(ValueError, match=r"channel 128 out of range: features has 128 \(0 to 127\)"):
        browser.neuron_image("features", 128, 0)
    with pytest.raises(ValueError, match="no image 24"):
        browser.neuron_image("features", 0, 24)


def test_browser_caches_per_layer(browser):
    b = browser
    assert b.default_layer == "features" and b.channels["features"] == 128 and len(b.images) == 24
    acts = b.activations("features", 0)
    assert acts.shape[0] == 128 and b.activations("features", 0) is acts  # cached
    top = b.patches("features")
    assert b.patches("features") is top and b.cached("patches", "features") is top
    e = b.embedding("features")
    assert e.vectors.shape == (24, 128) and torch.equal(e.labels, b.labels)
    feat, pix = b.neighbours("features", 7)
    assert feat == features.neighbours(e, 7, k=3)[0].tolist() and len(pix) == 3 and 7 not in feat
    xy = b.projection("features", "pca")
    assert xy.shape == (24, 2) and b.cached("projection", "features", "pca") is xy
    with pytest.raises(ValueError, match="kind"):
        b.cached("umap", "features")


def test_browser_refuses_bad_requests(browser):
    with pytest.raises(ValueError, match="no feature-map layer"):
        browser.check_layer("fc")
    with pytest.raises(ValueError, match="out of range"):
        browser.check_channel("features", 128)
    with pytest.raises(ValueError, match="no image True"):
        browser.check_image(True)  # a bool is not an index
    with pytest.raises(ValueError, match="projection"):
        browser.submit_projection("features", "umap")
    with pytest.raises(TypeError, match="k"):
        FeatureBrowser(zoo.load("shapes-classifier"), zoo.ShapeScenes(4, seed=3), k=2.5)


def test_background_tsne_reports_progress_and_can_be_cancelled_inside(browser):
    b = browser
    seen = []
    job = b.submit_projection("features.block3", "tsne", on_progress=lambda j: seen.append(j.progress))
    assert job.message == "Computing t-SNE of features.block3 for 24 images..."  # said before any work
    assert b.submit_projection("features.block3", "tsne") is job  # asked twice: computed once
    assert job.wait(120) and job.state == "done", job.error_text
    assert b.cached("projection", "features.block3", "tsne").shape == (24, 2)
    assert any(0.3 < p < 1.0 for p in seen), seen  # progress from inside t-SNE, not just start and end
    assert seen == sorted(seen)

    def stop_midway(j: jobs.Job) -> None:
        if j.progress > 0.4:
            j.cancel()  # the next report inside scikit-learn's loop raises Cancelled

    job = b.submit_projection("features.block2", "tsne", on_progress=stop_midway)
    assert job.wait(120) and job.state == "cancelled"
    assert b.cached("projection", "features.block2", "tsne") is None  # nothing half-done is kept
    assert b.cached("embedding", "features.block2") is not None  # what finished before stays


def test_a_newer_maximization_cancels_the_older_one(browser):
    b = browser
    started, release = threading.Event(), threading.Event()

    def hold(j: jobs.Job) -> None:
        started.set()
        release.wait(10)

    first = b.submit_maximize("features", 3, on_progress=hold)
    assert started.wait(60)
    second = b.submit_maximize("features", 4)
    release.set()
    assert first.wait(30) and first.state == "cancelled" and b.cached("maximized", "features", 3) is None
    assert second.wait(60) and second.state == "done" and b.cached("maximized", "features", 4).shape == (3, 96, 96)
    assert _hooks_on(b.model) == 0 and not b.model.training and all(p.grad is None for p in b.model.parameters())


def test_browser_close_stops_its_jobs():
    b = FeatureBrowser(zoo.load("shapes-classifier"), zoo.ShapeScenes(8, seed=4), k=2, steps=500)
    job = b.submit_maximize("features", 0)
    assert _until(lambda: job.progress > 0, 60)
    t = time.monotonic()
    assert b.close()
    assert time.monotonic() - t < 1.0 and job.state == "cancelled"  # the bound close() promises
    with pytest.raises(RuntimeError, match="closed"):
        b.submit_layer("features")
