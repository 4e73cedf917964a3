"""Explainer: an image index (or target) outside the session is refused with the valid range,
never taken from the end of the list (-1) or answered with a bare IndexError."""

import numpy as np
import pytest
import torch
from torch import nn

from guidewidgets.explain.session import Explainer, MapKey


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


@pytest.fixture
def session():
    torch.manual_seed(0)
    return Explainer(Tiny().eval(), [("a", torch.rand(3, 8, 8)), ("b", torch.rand(3, 8, 8))])


# Every public method that takes an image index, called with that index.
CALLS = {
    "key": lambda s, i: s.key(i, "grad-cam", 0),
    "probabilities": lambda s, i: s.probabilities(i),
    "top_classes": lambda s, i: s.top_classes(i),
    "model_input": lambda s, i: s.model_input(i),
    "true_boxes": lambda s, i: s.true_boxes(i),
    "target_name": lambda s, i: s.target_name(i, 0),
    "target_options": lambda s, i: s.target_options(i),
    "layers": lambda s, i: s.layers(i),
    "layer_options": lambda s, i: s.layer_options(i),
    "num_classes": lambda s, i: s.num_classes(i),
    "compute": lambda s, i: s.compute(MapKey(i, "grad-cam", None, 0)),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("index", [-1, 2, 99])
def test_out_of_range_image_index_names_the_valid_range(session, call, index):
    with pytest.raises(
        ValueError, match=rf"image index {index} is out of range: this session has 2 images, so use 0 to 1"
    ):
        CALLS[call](session, index)


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("index", [True, 1.0, 0.5, "0", None])
def test_non_integer_image_index_is_refused(session, call, index):
    with pytest.raises(TypeError, match=r"image index must be an int \(images: 0 to 1\)"):
        CALLS[call](session, index)


def test_valid_indices_still_work_and_numpy_ints_are_ints(session):
    k = session.key(np.int64(1), "grad-cam", np.int32(2))
    assert k.image == 1 and type(k.image) is int and k.target == 2 and type(k.target) is int
    assert session.compute(k)["map"].shape == (8, 8)
    assert session.key(1, "grad-cam", 2) == k  # one cache entry per image, whatever int type named it


def test_empty_session_says_to_add_an_image():
    s = Explainer(Tiny().eval())
    with pytest.raises(ValueError, match=r"has 0 images, so use none yet: add one with add_image"):
        s.key(0, "grad-cam", 0)


def test_target_of_a_key_is_checked(session):
    for bad in (True, 1.5, "0"):
        with pytest.raises(TypeError, match="target must be an int class index"):
            session.key(0, "grad-cam", bad)
    with pytest.raises(ValueError, match="target class -1 is out of range"):
        session.key(0, "grad-cam", -1)
    session.probabilities(0)  # the class count is now known without another forward
    with pytest.raises(ValueError, match=r"target class 3 is out of range for image 0: use a class index from 0 to 2"):
        session.key(0, "grad-cam", 3)


def test_num_classes_checks_the_index_even_when_class_names_are_known():
    s = Explainer(Tiny().eval(), [("a", torch.rand(3, 8, 8))], classes=["x", "y", "z"])
    assert s.num_classes(0) == 3 and Explainer(Tiny().eval()).num_classes(5) == 0  # no images: no classes yet
    with pytest.raises(ValueError, match="image index 1 is out of range"):
        s.num_classes(1)
    with pytest.raises(ValueError, match=r"target class 3 is out of range for image 0: use a class index from 0 to 2"):
        s.key(0, "grad-cam", 3)  # class names known: checked before any forward
