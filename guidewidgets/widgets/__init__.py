"""Jupyter widgets (ipywidgets + ipycanvas): :class:`ExplainWidget`, :class:`GuideWidget`,
:class:`GainWidget` and :class:`FeatureWidget`.

All live in notebooks, JupyterLab, Notebook 7 and Voila; their state is in traitlets, so a
notebook can set it and a test can drive it without a browser.
"""

from .explain_widget import ExplainWidget
from .feature_widget import FeatureWidget
from .gain_widget import GainWidget
from .guide_widget import GuideWidget
from .image_view import ImageView

__all__ = ["ExplainWidget", "FeatureWidget", "GainWidget", "GuideWidget", "ImageView"]
