"""The widgets' look: one stylesheet in every widget, presenter mode by keyword or package-wide,
text colours readable from the back row (WCAG contrast), sizes that follow the mode."""

from __future__ import annotations

import re

import ipywidgets as W
import pytest
import torch
from torch import nn

from guidewidgets.widgets import ExplainWidget, theme


class TinyCNN(nn.Module):
    classes = ["a", "b"]
    default_explain_layer = "conv"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(fg: str, bg: str = "#ffffff") -> float:
    hi, lo = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.fixture
def widget():
    w = ExplainWidget(TinyCNN().eval(), torch.rand(2, 3, 16, 16))
    yield w
    w.close()


def test_every_text_colour_in_the_stylesheet_reads_at_7_to_1():
    css = theme._css()
    colours = set(re.findall(r"#[0-9a-fA-F]{6}\b", css))
    assert theme.TEXT in colours and theme.MUTED in colours
    text_colours = set(re.findall(r"(?<![-\w])color:\s*(#[0-9a-fA-F]{6})", css))
    assert text_colours, "the stylesheet sets no text colour"
    assert all(contrast(c) >= 7.0 for c in text_colours), {c: round(contrast(c), 2) for c in text_colours}


def test_sizes_meet_the_classroom_floor():
    (body, head), (pbody, phead) = theme.SIZES[False], theme.SIZES[True]
    assert body >= 13 and head > body and pbody >= 18 and phead >= 22
    css = theme._css()
    assert f"--jp-widgets-font-size: {body}px" in css and f"--jp-widgets-font-size: {pbody}px" in css


def test_the_stylesheet_stays_among_the_children(widget):
    assert widget.children[0] is widget._style and "gw-root" in widget._dom_classes
    widget.children = [W.Label("x")]
    assert widget._style in widget.children


def test_presenter_by_keyword_and_package_wide(widget):
    assert "gw-presenter" not in widget._dom_classes
    widget.presenter = True
    assert "gw-presenter" in widget._dom_classes
    widget.presenter = False
    assert "gw-presenter" not in widget._dom_classes
    w = ExplainWidget(TinyCNN().eval(), torch.rand(1, 3, 16, 16), presenter=True)
    assert w.presenter and "gw-presenter" in w._dom_classes
    w.close()
    try:
        theme.set_presenter(True)
        w = ExplainWidget(TinyCNN().eval(), torch.rand(1, 3, 16, 16))
        assert w.presenter and "gw-presenter" in w._dom_classes
        w.close()
    finally:
        theme.set_presenter(False)
    with pytest.raises(TypeError, match="True or False"):
        theme.set_presenter("yes")  # type: ignore[arg-type]


def test_close_closes_the_stylesheet_too():
    from ipywidgets.widgets import widget as registry

    before = set(registry._instances)
    w = ExplainWidget(TinyCNN().eval(), torch.rand(1, 3, 16, 16))
    style = w._style
    w.close()
    assert style.comm is None and style.layout.comm is None
    assert not {k for k in set(registry._instances) - before if registry._instances[k] in (style, style.layout)}


def test_key_help_offers_only_the_keys_the_front_end_leaves(widget):
    text = widget.w_help.value
    everywhere, nb7 = text.split('class="gw-muted gw-keys-nb7"')
    assert "previous image" in everywhere and "<kbd>1-9</kbd> method" in everywhere
    assert "previous image" not in nb7 and "<kbd>1-9</kbd> method" in nb7 and "use the buttons" in nb7
    css = theme._css()
    assert 'body[data-notebook="notebooks"] .gw-root .gw-keys-all { display: none; }' in css
