"""Jupyter widgets (ipywidgets + ipycanvas): :class:`ExplainWidget`, :class:`GuideWidget`,
:class:`GainWidget`, :class:`FeatureWidget`, :class:`CaptionWidget` and :class:`STNWidget`.

All live in notebooks, JupyterLab, Notebook 7 and Voila; their state is in traitlets, so a
notebook can set it and a test can drive it without a browser.
"""

from .caption_widget import CaptionWidget
from .explain_widget import ExplainWidget
from .feature_widget import FeatureWidget
from .gain_widget import GainWidget
from .guide_widget import GuideWidget
from .image_view import ImageView
from .stn_widget import STNWidget

__all__ = [
    "CaptionWidget",
    "ExplainWidget",
    "FeatureWidget",
    "GainWidget",
    "GuideWidget",
    "ImageView",
    "STNWidget",
]
