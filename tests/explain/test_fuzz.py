"""Property-based fuzzing of ``explain`` (hypothesis): over models (1/3/4-channel CNNs, a
segmenter, a tiny ViT), input shapes, dtypes, non-finite pixels, targets, layers, options and
methods, every call either returns finite maps of the right shape or raises a ValueError or
TypeError with a message, and leaves the model exactly as it was (no hook, same state_dict,
training and requires_grad flags, no .grad).

Fixed example count and derandomised, so CI runs the same examples each time (about 30 s here).
Run with ``-s`` to see the counts (examples tried, results and errors by kind).
"""

from __future__ import annotations

import collections
import inspect
import math

import pytest
import torch
import torchvision
from torch import nn

from guidewidgets import explain as E
from guidewidgets import hooks

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.fuzz_strategies import assert_unchanged, counts_reporter, fuzz_settings, snapshot  # noqa: E402

EXAMPLES = 400
COUNTS: collections.Counter[str] = collections.Counter()
# Failures the fuzz found that belong to other methods' owners, counted (not hidden) until fixed.
KNOWN: dict[tuple[str, str], str] = {}

# Options that keep slow methods fast on these tiny models.
# Valid and invalid values per option name (whatever method has it).
OPTION_VALUES = {
    "relu": [True, False, 1],
    "raw": [True, False],
    "samples": [1, 2, 0, -1, 2.5],
    "noise": [0.0, 0.1, -0.5, float("nan")],
    "seed": [0, 7],
    "batch_size": [None, 1, 3, 0, 2.5, True],
    "max_channels": [None, 1, 2, 0, -1, 2.5, True],
    "window": [None, 2, 3, (2, 3), 2.0, 0, 100, "2"],
    "stride": [None, 1, 2, 1.5, 0],
    "fill": [0.0, 0.5, [0.1, 0.2, 0.3], "grey"],
    "masks": [4, 0, 3.5],
    "cells": [1, 2, 0, 50],
    "p": [0.5, 1.0, 0.0, 2.0],
    "probabilities": [True, False],
    "head_fusion": ["mean", "max", "median"],
    "reshape": [None, "tokens", lambda t: t],
    "steps": [2, 0],
    "baseline": [0.0, 0.5],
}


class Net(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.Conv2d(6, 6, 3, padding=1)
        )
        self.act = nn.SiLU()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.act(self.features(x)).mean((2, 3)))


class Segmenter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 1))

    def forward(self, x):
        return {"out": self.body(x)}


def tiny_vit() -> nn.Module:
    m = torchvision.models.VisionTransformer(
        image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=4
    )
    nn.init.normal_(m.heads.head.weight, std=0.1)
    return m


def build_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    models = {"grey": Net(1), "rgb": Net(3), "rgba": Net(4), "segmenter": Segmenter(), "vit": tiny_vit()}
    models["rgb"].train()  # one model in training mode: it must stay so, with unchanged statistics
    for m in models.values():
        if m is not models["rgb"]:
            m.eval()
    models["grey"].features[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    return models


MODELS = build_models()


def sometimes(draw, normal, wild, one_in: int = 6):
    """``normal`` most of the time; a value from ``wild`` once in ``one_in`` draws."""
    return draw(wild) if draw(st.integers(1, one_in)) == 1 else draw(normal)


@st.composite
def calls(draw):
    model_name = draw(st.sampled_from(sorted(MODELS)))
    model = MODELS[model_name]
    method = draw(st.sampled_from(E.methods()))
    c = {"grey": 1, "rgba": 4}.get(model_name, 3)
    b = draw(st.integers(1, 3))
    if model_name == "vit":  # the ViT asserts its own image size: only channels and batch vary
        h = w = 16
    else:
        h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    channels = sometimes(draw, st.just(c), st.sampled_from([1, 3, 4]))
    shape = sometimes(
        draw, st.just((b, channels, h, w)), st.sampled_from([(channels, h, w), (b, h, w, channels), (b, channels, h)])
    )
    dtype = sometimes(
        draw, st.just(torch.float32), st.sampled_from([torch.float64, torch.float16, torch.uint8, torch.int64])
    )
    x = torch.rand(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99)))).to(dtype)
    if dtype.is_floating_point and draw(st.integers(0, 9)) == 0:
        x.view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf")]))
    k = 3 if model_name == "segmenter" else 4
    target = sometimes(
        draw,
        st.one_of(
            st.none(),
            st.integers(0, k - 1),
            st.lists(st.integers(0, k - 1), min_size=b, max_size=b),
            st.just(lambda out: out.flatten(1)[:, 0]),
        ),
        st.one_of(
            st.integers(-2, k + 1),
            st.lists(st.integers(0, k - 1), min_size=0, max_size=4),
            st.sampled_from(["cat", 1.5, torch.tensor([0.5]), lambda out: out]),
        ),
    )
    names = hooks.layer_names(model)
    layer = sometimes(draw, st.none(), st.one_of(st.sampled_from(names), st.just("no_such_layer")), one_in=3)
    params = inspect.signature(E.method_function(method)).parameters
    own = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "progress"]
    options = dict(E.method_info(method).quick)
    if own and draw(st.integers(1, 3)) == 1:
        for name in draw(st.lists(st.sampled_from([*own, "bogus"]), min_size=1, max_size=2, unique=True)):
            options[name] = draw(st.sampled_from(OPTION_VALUES.get(name, [None, 1, "x"])))
    return model_name, method, x, target, layer, options


def check_result(maps: torch.Tensor, x: torch.Tensor, options: dict) -> None:
    b, _, h, w = x.shape
    if options.get("raw") is True and maps.dim() == 4:
        assert maps.shape == x.shape
    else:
        assert maps.shape == (b, h, w), f"shape {tuple(maps.shape)} for x {tuple(x.shape)}"
    assert torch.isfinite(maps).all(), "non-finite map"


report_counts = counts_reporter(COUNTS, "explain")


@fuzz_settings(EXAMPLES)
@given(calls())
def test_explain_returns_maps_or_a_clear_error_and_leaves_the_model_alone(call):
    model_name, method, x, target, layer, options = call
    model = MODELS[model_name]
    before = snapshot(model)
    COUNTS["examples"] += 1
    try:
        maps = E.explain(model, x, method, target=target, layer=layer, **options)
    except (ValueError, TypeError) as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        COUNTS[f"error {type(e).__name__}"] += 1
    except Exception as e:
        if (model_name, method) not in KNOWN:
            raise
        COUNTS[f"known bug {KNOWN[model_name, method]}: {type(e).__name__}"] += 1
    else:
        check_result(maps, x, options)
        COUNTS["ok"] += 1
    finally:
        assert_unchanged(before, snapshot(model))


def test_counts_are_plausible():
    """Runs after the fuzz test (file order): most calls must have been tried and some succeed."""
    if COUNTS["examples"] == 0:
        pytest.skip("run together with the fuzz test")
    assert COUNTS["ok"] >= COUNTS["examples"] // 10
    assert not math.isnan(COUNTS["ok"])
