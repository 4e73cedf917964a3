"""guidewidgets.owners: which session owns a model's forward (claim, release, owner_of), and the
Guide and explain's check_model meeting there instead of explain importing the guide package."""

from __future__ import annotations

import gc
import threading
import warnings
import weakref

import pytest
import torch
from torch import nn

from guidewidgets import owners
from guidewidgets.explain import registry
from guidewidgets.guide import Guide, active_guide
from tests.guide_models import TinySeg, image_fixture, tiny_fixture  # noqa: F401  (pytest fixtures)


class Owner:
    """Any session: an ordinary object, so it takes weak references."""


def test_claim_release_and_owner_of():
    model, a, b = nn.Linear(2, 2), Owner(), Owner()
    assert owners.owner_of(model) is None
    assert owners.claim(model, a) is None  # the model was free
    assert owners.owner_of(model) is a
    assert owners.claim(model, a) is None  # claiming again is no handover
    assert owners.claim(model, b) is a  # the handover names the owner it replaced
    assert owners.owner_of(model) is b
    assert not owners.release(model, a)  # a replaced owner cannot free its successor's model
    assert owners.owner_of(model) is b
    assert owners.release(model, b) and owners.owner_of(model) is None
    assert not owners.release(model, b)  # twice is harmless


def test_the_table_keeps_neither_model_nor_owner_alive():
    model, owner = nn.Linear(2, 2), Owner()
    owners.claim(model, owner)
    dead_owner = weakref.ref(owner)
    del owner
    gc.collect()
    assert dead_owner() is None and owners.owner_of(model) is None  # a collected owner frees the model
    owners.claim(model, keep := Owner())
    dead_model = weakref.ref(model)
    del model
    gc.collect()
    assert dead_model() is None  # a dropped model is not kept alive by its entry
    assert keep is not None


def test_bad_arguments_are_refused_with_a_sentence():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        owners.claim("model", Owner())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="weak references"):
        owners.claim(nn.Linear(2, 2), 42)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        owners.release(object(), Owner())  # type: ignore[arg-type]
    assert owners.owner_of("not a model") is None  # type: ignore[arg-type]  # nothing owns it


def test_racing_claims_and_releases_leave_the_table_consistent():
    """Each thread claims the model for its own owner and releases it; once all are done the
    model is free (only the last claimer can free it, and it does), and nothing raised."""
    model = nn.Linear(2, 2)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work() -> None:
        mine = Owner()
        try:
            start.wait()
            for _ in range(200):
                owners.claim(model, mine)
                seen = owners.owner_of(model)
                assert seen is None or isinstance(seen, Owner)
                owners.release(model, mine)
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and owners.owner_of(model) is None


def test_a_guide_claims_its_model_and_a_takeover_or_close_hands_it_on(tiny, image):
    assert owners.owner_of(tiny) is None
    old = Guide(tiny, image)
    assert owners.owner_of(tiny) is old is active_guide(tiny)
    new = Guide(tiny, image)  # a re-run cell: the new guide takes over
    assert old.closed and owners.owner_of(tiny) is new
    old.close()  # the superseded guide's close must not free the model its successor owns
    assert owners.owner_of(tiny) is new
    new.close()
    assert owners.owner_of(tiny) is None and active_guide(tiny) is None


def test_a_failed_guide_leaves_the_older_owner_in_place(tiny, image):
    with Guide(tiny, image) as g:
        with pytest.raises(ValueError):
            Guide(tiny, image, layer="flat")  # a (B, C, H*W) output: no feature map to guide
        assert owners.owner_of(tiny) is g and not g.closed


def test_check_model_asks_the_owners_table(tiny, image):
    """explain's check_model warns on a guided model (as before the table existed), not after close."""
    info = registry.method_info("saliency")
    with Guide(tiny, image):
        with pytest.warns(UserWarning, match=r"TinySeg carries an open Guide.*'saliency'.*guide.close\(\)"):
            registry.check_model(tiny, info)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.check_model(tiny, info)  # closed: the plain forward, no warning
    torch.manual_seed(0)
    other = TinySeg().eval()
    with Guide(other, image), warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.check_model(tiny, info)  # a guide on another model says nothing about this one
