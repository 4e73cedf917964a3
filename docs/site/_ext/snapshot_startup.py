"""Kernel start-up file (``PYTHONSTARTUP``) used when the lessons are executed for the docs site.

Every guidewidgets widget then also offers its own PNG export (``to_png()``: the view with its
heading and colour bar) as ``image/png`` beside the live widget, so a static page can show what
the widget showed. A live frontend still draws the widget: it ranks the widget view first.
"""


def _gw_widget_png(widget):
    try:
        wait = getattr(widget, "wait", None)
        if callable(wait):
            wait(60)  # a background map (a slow method) should be in the picture
        return widget.to_png()
    except Exception:  # a picture is a bonus: never turn a display into an error
        return None


def _gw_register():
    try:
        shell = get_ipython()  # type: ignore[name-defined]
    except NameError:  # a plain python prompt: nothing to register
        return
    png = shell.display_formatter.formatters["image/png"]
    # by name: importing the package here would slow every kernel start
    png.for_type_by_name("guidewidgets.widgets.base", "WidgetBase", _gw_widget_png)


_gw_register()
del _gw_register
