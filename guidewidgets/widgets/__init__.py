"""Jupyter widgets (ipywidgets + ipycanvas): :class:`ExplainWidget` and :class:`GuideWidget`.

Both live in notebooks, JupyterLab, Notebook 7 and Voila; their state is in traitlets, so a
notebook can set it and a test can drive it without a browser.
"""

from .explain_widget import ExplainWidget
from .gain_widget import GainWidget
from .guide_widget import GuideWidget
from .image_view import ImageView

__all__ = ["ExplainWidget", "GainWidget", "GuideWidget", "ImageView"]
