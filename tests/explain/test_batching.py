"""batching.py: how many of a method's forwards go in one batch changes no map, for every method
with ``batch_size`` (Captum's ``internal_batch_size``)."""

import inspect

import pytest
import torch

from guidewidgets import explain as E
from guidewidgets.explain.batching import Progress, chunks
from tests.helpers import TinyCNN

# Every registered method that runs many forwards of one image takes batch_size (the registry
# decides, so a new method is covered the day it is registered).
BATCHED = [
    m
    for m in E.methods()
    if "batch_size" in inspect.signature(E.method_function(m)).parameters and E.method_info(m).family != "attention"
]
# The methods that must have it: many forwards (noisy copies, path points, baselines, patches,
# masks, coalitions) of one image.
MANY_FORWARDS = [
    "smoothgrad",
    "smoothgrad-sq",
    "vargrad",
    "integrated-gradients",
    "gradient-shap",
    "deeplift-shap",
    "occlusion",
    "rise",
    "feature-ablation",
    "shapley-sampling",
    "kernel-shap",
    "lime",
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyCNN().eval()


def test_every_method_of_many_forwards_takes_batch_size():
    missing = [m for m in MANY_FORWARDS if m not in BATCHED]
    assert not missing, f"no batch_size= on {missing}"


@pytest.mark.parametrize("name", BATCHED)
def test_chunked_forwards_give_the_maps_of_one_batch(model, name):
    torch.set_num_threads(1)
    torch.manual_seed(1)
    x = torch.rand(2, 3, 16, 16)
    opts = dict(E.method_info(name).quick)
    one = E.explain(model, x, name, batch_size=100_000, **opts)  # every forward in one batch
    scale = float(one.abs().max()) + 1e-12
    # B = 2 images: 2 -> one item (copy, point, patch ...) per forward, 4 -> two, 6 -> three
    for size in (2, 4, 6):
        chunked = E.explain(model, x, name, batch_size=size, **opts)
        torch.testing.assert_close(chunked, one, rtol=1e-4, atol=1e-5 * scale, msg=f"{name}, batch_size={size}")


@pytest.mark.parametrize("name", BATCHED)
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_batch_size_is_refused_with_a_sentence(model, name, bad):
    opts = dict(E.method_info(name).quick)
    with pytest.raises((TypeError, ValueError), match="batch_size must be"):
        E.explain(model, torch.rand(1, 3, 16, 16), name, batch_size=bad, **opts)


@pytest.mark.parametrize("n, per, size", [(1, 1, 1), (7, 2, 5), (10, 3, 100), (5, 4, 3), (12, 1, 4)])
def test_chunks_cover_every_item_once_in_order(n, per, size):
    ranges = list(chunks(n, per, size))
    assert [i for start, stop in ranges for i in range(start, stop)] == list(range(n))
    step = max(1, size // per)  # at least one item per forward, however large an item is
    assert all(stop - start <= step for start, stop in ranges)


def test_progress_reports_fractions_up_to_one():
    seen: list[float] = []
    done = Progress(seen.append, 4)
    for k in (1, 2, 3):
        done.advance(k)
    assert seen == [0.25, 0.75, 1.0]
    Progress(None, 3).advance(5)  # no callable: nothing to call
    with pytest.raises(TypeError, match="progress must be a callable"):
        Progress(5, 3)  # type: ignore[arg-type]
