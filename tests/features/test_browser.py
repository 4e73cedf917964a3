"""FeatureBrowser.neuron_image: the session's guided backprop / gradient of a channel's unit on one
image agrees with the explain functions, is cached, and refuses bad requests with a sentence."""

import pytest
import torch

from guidewidgets import zoo
from guidewidgets.explain import Neuron, neuron_gradient, neuron_guided_backprop
from guidewidgets.features import FeatureBrowser


@pytest.fixture(scope="module")
def browser():
    b = FeatureBrowser(zoo.load("shapes-classifier"), zoo.ShapeScenes(6, seed=3), k=2, steps=2)
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
    with pytest.raises(ValueError, match="no image 9"):
        browser.neuron_image("features", 0, 9)
