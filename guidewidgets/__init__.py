"""guidewidgets: explain CNNs and guide them with hints, live in Jupyter.

The science (``explain``, ``guide``, ``zoo``, ``render``, ``hooks``) imports no widget library;
the widgets (``ExplainWidget``, ``GuideWidget``, ``GainWidget``, ``FeatureWidget``, ``CaptionWidget``,
``STNWidget``) are loaded on first use so that plain scripts and tests stay free of ipywidgets.
"""

from __future__ import annotations

__version__ = "0.1.0"

_WIDGETS = {"CaptionWidget", "ExplainWidget", "FeatureWidget", "GainWidget", "GuideWidget", "STNWidget"}


def __getattr__(name: str):
    if name in _WIDGETS:
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'guidewidgets' has no attribute {name!r}")


__all__ = [*sorted(_WIDGETS), "__version__"]
