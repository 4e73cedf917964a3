"""GainWidget: a GAIN training dashboard (start / pause / stop, live curves, attention strip).

A thin view over :class:`guidewidgets.gain.GainRun` (``w.session``), which prepares the scenes and
trains in a background job, so the notebook stays responsive; the run's events refresh the
widget: loss curves (L_cl, L_am, L_e), accuracies on a biased and an unbiased held-out set, a strip
of probe scenes with their attention maps and the erased images I*, a progress bar and, at the
end, the biased-circle table (see :mod:`guidewidgets.gain.reproduce`). alpha, omega, sigma and the
number of pixel labels are read when a run starts.
"""

from __future__ import annotations

import html
import inspect
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets as T

from .. import render
from ..gain.run import KNOBS, LOSS_NAMES, GainRun
from ..zoo.scenes import CLASSES
from .base import WidgetBase
from .charts import LineChart

__all__ = ["GainWidget"]

_TILE = 96
#: A slider per knob of :data:`guidewidgets.gain.run.KNOBS`: (class, min, max, step, label).
_SLIDERS = {
    "alpha": (W.FloatSlider, 0, 5, 0.1, "alpha (L_am)"),
    "omega": (W.FloatSlider, 0, 40, 1, "omega (mask)"),
    "sigma": (W.FloatSlider, 0, 1, 0.05, "sigma (mask)"),
    "pixel_labels": (W.IntSlider, 0, 64, 1, "pixel labels"),
}


def _png(rgba: np.ndarray) -> bytes:
    return render.to_png(rgba)


class GainWidget(WidgetBase):
    """Train a classifier with GAIN on biased ShapeScenes and watch where it looks.

    Args:
        presenter: larger text for a projector.
        **run_options: the arguments of :class:`~guidewidgets.gain.GainRun`, with its defaults
            (``train_scenes``, ``test_scenes``, ``epochs``, ``warmup_epochs``, ``probes``,
            ``probe_every``, ``alpha``, ``omega``, ``sigma``, ``pixel_labels``, ``batch_size``,
            ``seed``); the knobs (alpha, omega, sigma, pixel_labels) are the sliders' start values.
    """

    export_stem = "gain_attention"

    alpha = T.Float(1.0, help="weight of the attention-mining loss L_am")
    omega = T.Float(10.0, help="steepness of the soft mask")
    sigma = T.Float(0.5, help="threshold of the soft mask on the normalised attention")
    pixel_labels = T.Int(0, help="circles with a pixel-level mask (GAIN_ext when > 0)")
    state = T.Unicode("idle", help="idle, preparing, warm-up, training, paused, stopped, done or error")
    step = T.Int(0, help="steps done in the current phase")
    probe_refreshes = T.Int(0, help="how many times the attention strip was redrawn")

    def __init__(self, *, presenter: bool | None = None, **run_options: Any) -> None:
        super().__init__(presenter=presenter)
        with self._building():
            # Why forwarded: GainRun owns the arguments, their defaults and their checks (one source).
            self.session = GainRun(**run_options)
            for knob in KNOBS:
                setattr(self, knob, getattr(self.session, knob))
            self._build(self.session.sizes["probes"])
        self.session.listen(self._event)
        self.status = "Set the knobs, then Start."

    def _build(self, probes: int) -> None:
        self._base_controls()
        self.w_knobs = {}
        for knob in KNOBS:
            cls, lo, hi, step, label = _SLIDERS[knob]
            self.w_knobs[knob] = cls(min=lo, max=hi, step=step, description=label)
            W.link((self, knob), (self.w_knobs[knob], "value"))
        self.w_start = W.Button(description="Start", icon="play", button_style="success")
        self.w_pause = W.ToggleButton(description="Pause", icon="pause", disabled=True)
        self.w_stop = W.Button(description="Stop", icon="stop", button_style="danger", disabled=True)
        self.w_start.on_click(lambda _: self.start())
        self.w_stop.on_click(lambda _: self.stop())
        self.w_pause.observe(self._on_pause, "value")
        # shown only while a run works, from 0 (issue 25): hidden when idle, done or stopped
        self.w_progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(visibility="hidden"))
        self.loss_chart = LineChart(
            list(LOSS_NAMES.values()), title="Losses per training step", xlabel="step (all phases)", ylabel="loss",
            ymin=0.0, labels=[n.split(" ", 1)[0] for n in LOSS_NAMES.values()],
        )  # fmt: skip
        self.acc_chart = LineChart(
            ["biased", "unbiased"], title="Accuracy on held-out scenes", xlabel="step (all phases)",
            ylabel="accuracy (%)", ymin=0.0, ymax=100.0,
        )  # fmt: skip
        self.w_curve_text = W.HTML()
        curves = W.HBox(
            [
                W.VBox([self.loss_chart.figure], layout=W.Layout(flex="1 1 300px")),
                W.VBox([self.acc_chart.figure], layout=W.Layout(flex="1 1 300px")),
            ]
        )
        side = f"{_TILE}px"
        blank = _png(np.full((_TILE, _TILE, 4), 235, np.uint8))  # grey until the first probe refresh
        self.w_strip = [W.Image(value=blank, layout=W.Layout(width=side, height=side)) for _ in range(probes)]
        self.w_masked = [W.Image(value=blank, layout=W.Layout(width=side, height=side)) for _ in range(probes)]
        for i, w in enumerate(self.w_strip):
            w.add_class("gw-gain-probe")  # for browser tests and custom CSS
            self.w_masked[i].add_class("gw-gain-masked")
        self.w_start.add_class("gw-gain-start")
        self.w_stop.add_class("gw-gain-stop")
        self.w_strip_text = W.HTML()
        # the bar belongs to the attention row only (the row below is the erased image): as tall as one tile
        bar = render.colorbar("jet", length=_TILE - 40, thickness=12)
        self.w_bar = W.Image(value=_png(bar), format="png", layout=W.Layout(width="12px", height=f"{_TILE - 40}px"))
        scale = W.VBox(
            [W.HTML("<b>1</b>: most", layout=W.Layout(height="20px")), self.w_bar, W.HTML("<b>0</b>: none")],
            layout=W.Layout(margin="0 0 0 6px"),
        )
        strip = W.HBox([W.VBox([W.HBox([*self.w_strip, scale]), W.HBox(self.w_masked)])])
        self.w_table = W.HTML("The table of held-out scenes appears here when a run is done.")
        # secondary: folded, so the main view (strip, curves, controls) fits 760 px; its title says the headline
        self.w_more = W.Accordion([self.w_table], titles=("Held-out table (after a run)",), selected_index=None)
        knobs = list(self.w_knobs.values())
        for w in knobs:
            w.add_class("gw-short")
        controls = W.VBox([*knobs, W.HBox([self.w_start, self.w_pause, self.w_stop]), self.w_progress])
        # the strip's caption wraps beside the knobs instead of pushing the strip below them
        right = W.VBox([strip, self.w_strip_text], layout=W.Layout(flex="1 1 240px", min_width="0"))
        self.children = [
            W.HTML(
                "<b>GAIN training</b>: circles sit on water in the training scenes; watch where the "
                "network looks (top: attention of its prediction, min-max normalised, colour bar beside "
                "it; bottom: the erased image I*)."
            ),
            W.HBox([controls, right]),
            self.w_curve_text,
            curves,
            self.w_more,
            self._status_row(),
            self.w_export_out,
        ]

    # ---- the session's state, read-only (scripts and tests) -------------------------------------
    model = property(lambda self: self.session.model, doc="the classifier being trained (None before Start)")
    trainer = property(lambda self: self.session.trainer, doc="the GainTrainer of the current phase")
    history = property(lambda self: self.session.history, doc="one dict per step, with its phase")
    accuracies = property(lambda self: self.session.accuracies)
    table = property(lambda self: self.session.table, doc="the final table (None until done)")
    error = property(lambda self: self.session.error, doc="what ended the run in an error, or None")

    @property
    def running(self) -> bool:
        """True while the background training job runs."""
        return "session" in vars(self) and self.session.running

    # ---- control ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a fresh run in the background with the current knobs (refused while running)."""
        s = self.session
        if s.closed:
            self.status = "This widget is closed; make a new GainWidget to train again."
            return
        if s.running:
            self.status = "Already running: pause or stop it first."
            return
        for knob in KNOBS:
            setattr(s, knob, getattr(self, knob))
        try:
            s.start()
        except (ValueError, TypeError) as err:
            self.status = f"Error: {err}"
            return
        self.w_table.value = "The table of held-out scenes appears here when a run is done."
        self.w_more.set_title(0, "Held-out table (after a run)")
        self.w_start.disabled, self.w_pause.disabled, self.w_stop.disabled = True, False, False

    def pause(self) -> None:
        """Hold training after the current step."""
        self.w_pause.value = True

    def resume(self) -> None:
        """Go on after :meth:`pause`."""
        self.w_pause.value = False

    def stop(self) -> None:
        """End the run after the current step ("Stopping..." at once, "Stopped at step N" then)."""
        if self.running:
            self.w_stop.disabled = True
        self.session.stop()
        self.w_pause.value = False

    def close(self) -> None:
        """Stop the training run, wait (a second at most) for the step in flight to end, so that the
        model is left alone, and close the widget."""
        if "session" in vars(self):  # a constructor that failed made none (close runs on __del__ too)
            self.session.close()
        super().close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends (scripts, tests); True if it did within ``timeout``."""
        return self.session.wait(timeout)

    def _on_pause(self, change: dict) -> None:
        (self.session.pause if change["new"] else self.session.resume)()
        self.w_pause.description, self.w_pause.icon = ("Resume", "play") if change["new"] else ("Pause", "pause")

    # ---- the run's events (its thread) --------------------------------------------------------------
    def _event(self, ev: dict[str, Any]) -> None:
        kind = ev["kind"]
        if kind == "state":
            self.state, self.status = ev["state"], ev["status"]
        elif kind == "phase":  # value first: the bar must never show the last phase's 100 %
            self.step = 0
            self.w_progress.value, self.w_progress.max = 0, ev["total"]
            self.w_progress.description = ev["phase"]
            self.w_progress.layout.visibility = "visible"
        elif kind == "step":
            self.step = ev["step"]
            self.w_progress.value = ev["step"]
            if ev["step"] % 2 == 0 or ev["step"] == 1:
                self._draw_curves()
        elif kind == "probe":
            self._draw_probes(ev)
        elif kind == "eval":
            self._draw_curves()
        elif kind == "finished":
            self.w_progress.layout.visibility = "hidden"  # hidden first, then reset: no empty bar flashes
            self.w_progress.value = 0
            self._draw_curves()  # the steps after the last redraw (curves redraw every other step)
            if self.session.table is not None:
                self._show_table()
            self.w_start.disabled, self.w_pause.disabled, self.w_stop.disabled = False, True, True

    # ---- drawing -----------------------------------------------------------------------------------
    def _draw_curves(self) -> None:
        history, accuracies = list(self.session.history), list(self.session.accuracies)
        steps = range(1, len(history) + 1)
        self.loss_chart.update(steps, {name: [h["losses"][k] for h in history] for k, name in LOSS_NAMES.items()})
        at = [a["global_step"] for a in accuracies]
        self.acc_chart.update(
            at, {k: [100 * a["accuracy"].get(k, float("nan")) for a in accuracies] for k in ("biased", "unbiased")}
        )
        note = self.session.warmup_note()
        if history:
            last = history[-1]["losses"]
            note += "Last step: " + ", ".join(f"{n} {last[k]:.3f}" for k, n in LOSS_NAMES.items())
        if accuracies:
            acc = accuracies[-1]["accuracy"]
            note += "; accuracy " + ", ".join(f"{html.escape(k)} {100 * v:.0f}%" for k, v in acc.items())
        self.w_curve_text.value = note

    def _draw_probes(self, ev: dict[str, Any]) -> None:
        names = self.session.prepare()["probe_names"]
        for i, w in enumerate(self.w_strip):
            if i >= len(ev["maps"]):
                break
            w.value = _png(render.overlay(ev["images"][i], ev["maps"][i], alpha=self.opacity))
            self.w_masked[i].value = _png(render.to_rgba(ev["masked"][i].clamp(0, 1)))
        said = [CLASSES[int(p)] for p in ev["predicted"]]
        self.w_strip_text.value = "step {}: {}".format(
            ev["step"], "; ".join(f"{html.escape(n)} &rarr; says {p}" for n, p in zip(names, said))
        )
        self.probe_refreshes += 1

    def _show_table(self) -> None:
        body = "".join(
            f"<tr><td>{name}</td><td style='text-align:right'>{100 * v:.1f}%</td></tr>"
            for name, v in self.session.table_rows()
        )
        c = self.session.config
        knobs = f"alpha {c.alpha}, omega {c.omega}, sigma {c.sigma}" if c is not None else ""
        self.w_table.value = (
            f"<b>Held-out unbiased scenes</b> ({knobs}, {self.session.used_pixel_labels} pixel labels)"
            f"<table>{body}</table>"
        )
        head = ", ".join(f"{name} {100 * v:.0f}%" for name, v in self.session.table_rows()[:2])
        self.w_more.set_title(0, f"Held-out table: {head}")

    # ---- export --------------------------------------------------------------------------------------
    def composite(self) -> np.ndarray:
        """The probe strip: attention overlays above, erased images below."""
        ev = self.session.last_probe
        if ev is None:
            raise ValueError("nothing to export yet: start training and wait for the first probe refresh")
        top = [render.overlay(ev["images"][i], ev["maps"][i], alpha=self.opacity) for i in range(len(ev["maps"]))]
        bottom = [render.to_rgba(ev["masked"][i].clamp(0, 1)) for i in range(len(ev["maps"]))]
        return np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)

    def heading(self) -> str:
        return f"GAIN attention at step {self.step} ({self.state}); alpha {self.alpha}, sigma {self.sigma}, omega {self.omega}"

    def colorbar(self) -> tuple[np.ndarray, tuple[str, str], str] | None:
        return render.colorbar("jet"), ("0: none", "1: most"), "attention (min-max normalised)"


def _signature() -> inspect.Signature:
    # Why: help(GainWidget), tab completion and the API page then list GainRun's own arguments
    # (keyword-only here) instead of **run_options.
    run = list(inspect.signature(GainRun.__init__).parameters.values())
    params = [run[0]] + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in run[1:]]
    presenter = inspect.Parameter("presenter", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="bool | None")
    return inspect.Signature([*params, presenter], return_annotation=None)


GainWidget.__init__.__signature__ = _signature()  # type: ignore[attr-defined]
