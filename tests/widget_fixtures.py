"""Stand-in models, fixtures and helpers the widget test files share (``from tests.widget_fixtures import ...``).

PYTEST_DONT_REWRITE (no asserts here; the test files also load it as a plugin for its fixtures).

Small models keep the widget tests fast and independent of the zoo's weights; the test files
import the fixtures from here by name (tests/ is a package).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from guidewidgets import explain, render
from guidewidgets.widgets import ExplainWidget
from tests.helpers import TinyCNN, TinySeg  # noqa: F401  (TinySeg re-exported: widget tests import it from here)


@pytest.fixture
def clf():
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 32, 32, generator=g)


@pytest.fixture
def ew(clf, images):
    w = ExplainWidget(clf, images, options={"occlusion": {"window": 8, "stride": 4}, "rise": {"masks": 64}})
    yield w
    w.wait(10)
    w.close()


def expected_overlay(w: ExplainWidget, method: str) -> np.ndarray:
    info = explain.method_info(method)
    kw = dict(w.session.options.get(method, {}))
    m = explain.explain(w.model, w.images[w.image_index][None], method, target=w.target, layer=w.layer or None, **kw)
    return render.heatmap_rgba(m[0], w.colormap, signed=info.signed, opacity=w.opacity)


def encode_png(mode: str, size=(20, 30)) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(0).integers(
        0, 255, size + ((len(mode),) if mode in ("RGB", "RGBA") else ()), dtype=np.uint8
    )
    buf = io.BytesIO()
    Image.fromarray(arr, mode=None).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def zoo_ready(name: str) -> bool:
    try:
        from guidewidgets import zoo

        zoo.load(name)
        return True
    except Exception:
        return False
