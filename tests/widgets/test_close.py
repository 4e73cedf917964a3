"""close() on every widget stops its background work and releases the model within 1 s (the bound
issue 25 names; measured with time.monotonic, a behaviour bound, not a speed benchmark)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

pytest.importorskip("ipywidgets")

from guidewidgets import explain, zoo
from guidewidgets.attend import stn
from guidewidgets.widgets import (
    CaptionWidget,
    ExplainWidget,
    FeatureWidget,
    GainWidget,
    GuideWidget,
    STNWidget,
)
from tests.helpers import TinyCNN, TinySeg
from tests.helpers import hook_count as _hooks_on
from tests.helpers import until as _until

BOUND_S = 1.0


def _close_time(widget) -> float:
    t = time.monotonic()
    widget.close()
    return time.monotonic() - t


def test_explain_widget_close_cancels_its_slow_method(monkeypatch):
    started, real = threading.Event(), explain.explain

    def endless(model, x, method, progress=None, **kw):  # a slow method that only stops when cancelled
        if method == "occlusion":
            started.set()
            for i in range(100_000):
                time.sleep(0.005)
                progress and progress(min(0.99, i / 1000))
        return real(model, x, method, **kw)

    monkeypatch.setattr(explain.registry, "explain", endless)
    model = TinyCNN().eval()
    w = ExplainWidget(model, torch.rand(2, 3, 16, 16))
    w.method = "occlusion"
    assert started.wait(10) and w.busy
    job = w.session.job
    assert _close_time(w) < BOUND_S
    assert job.done and job.state == "cancelled" and _hooks_on(model) == 0


def test_guide_widget_close_removes_the_block():
    model = TinySeg().eval()
    w = GuideWidget(model, torch.rand(3, 16, 16))
    assert _hooks_on(model) > 0
    assert _close_time(w) < BOUND_S
    assert w.session.guide.closed and _hooks_on(model) == 0


def test_gain_widget_close_stops_training():
    w = GainWidget(train_scenes=32, test_scenes=32, epochs=50, warmup_epochs=0, probes=1, pixel_labels=0, batch_size=8)
    w.start()
    assert _until(lambda: w.step >= 1), w.status
    job = w.session.job
    assert _close_time(w) < BOUND_S
    assert job.done and not job.thread.is_alive() and w.state == "stopped" and _hooks_on(w.model) == 0


def test_feature_widget_close_stops_the_maximization():
    model = zoo.load("shapes-classifier")
    w = FeatureWidget(model, zoo.ShapeScenes(8, seed=5), k=2, steps=2000)
    job = w.session.job("maximize")
    assert _until(lambda: job.progress > 0) and job.running
    assert _close_time(w) < BOUND_S
    assert job.done and job.state == "cancelled" and not w.session.busy
    assert _hooks_on(model) == 0 and not model.training


def test_caption_and_stn_widgets_close_at_once():
    w = CaptionWidget()
    assert _close_time(w) < BOUND_S
    torch.manual_seed(0)
    model = stn.STNClassifier().eval()
    s = STNWidget(model, stn.PlainClassifier().eval(), stn.DistortedScenes(2, seed=61_001))
    assert _close_time(s) < BOUND_S and _hooks_on(model) == 0
