"""Jupyter widgets (ipywidgets + ipycanvas): :class:`ExplainWidget`, :class:`GuideWidget`,
:class:`GainWidget`, :class:`FeatureWidget`, :class:`CaptionWidget` and :class:`STNWidget`.

All live in notebooks, JupyterLab, Notebook 7 and Voila; their state is in traitlets, so a
notebook can set it and a test can drive it without a browser.

:data:`WIDGETS` is the one list of them: the README test asks for each one's picture, the lesson
test accepts each as a lesson's live widget, the browser layout test must show each, and the docs
site shows each one's screenshot where a lesson's run left no export.
"""

from __future__ import annotations

from dataclasses import dataclass

from .caption_widget import CaptionWidget
from .explain_widget import ExplainWidget
from .feature_widget import FeatureWidget
from .gain_widget import GainWidget
from .guide_widget import GuideWidget
from .image_view import ImageView
from .stn_widget import STNWidget


@dataclass(frozen=True)
class WidgetEntry:
    """A registered widget: its class, the session it views and its screenshot in ``docs/img``."""

    name: str
    cls: type
    session: str
    screenshot: str


#: Every widget of the package, in the order the README shows them.
WIDGETS: tuple[WidgetEntry, ...] = (
    WidgetEntry("ExplainWidget", ExplainWidget, "explain.Explainer", "explain_widget.png"),
    WidgetEntry("GuideWidget", GuideWidget, "guide.GuideSession", "guide_widget.png"),
    WidgetEntry("GainWidget", GainWidget, "gain.GainRun", "gain_widget.png"),
    WidgetEntry("FeatureWidget", FeatureWidget, "features.FeatureBrowser", "feature_widget.png"),
    WidgetEntry("CaptionWidget", CaptionWidget, "attend.CaptionSession", "caption_widget.png"),
    WidgetEntry("STNWidget", STNWidget, "attend.STNSession", "stn_widget.png"),
)

__all__ = [
    "WIDGETS",
    "WidgetEntry",
    "CaptionWidget",
    "ExplainWidget",
    "FeatureWidget",
    "GainWidget",
    "GuideWidget",
    "ImageView",
    "STNWidget",
]
