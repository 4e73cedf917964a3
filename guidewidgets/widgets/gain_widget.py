"""GainWidget: a GAIN training dashboard (start / pause / stop, live curves, attention strip).

Training runs in a background thread (:class:`guidewidgets.gain.GainTrainer`), so the notebook
stays responsive; the trainer's callbacks refresh the widget: loss curves (L_cl, L_am, L_e),
accuracies on a biased and an unbiased held-out set, a strip of probe scenes with their
attention maps and the erased images I*, a progress bar and, at the end, the biased-circle table
(see :mod:`guidewidgets.gain.reproduce`). alpha, omega, sigma and the number of pixel labels are
read when a run starts.
"""

from __future__ import annotations

import copy
import html
import threading
from typing import Any

import ipywidgets as W
import numpy as np
import torch
import traitlets as T

from .. import render
from ..gain import GainConfig, GainTrainer, reproduce
from ..zoo.models import ShapeClassifier
from ..zoo.scenes import BACKGROUNDS, CLASSES, ShapeScenes
from .base import WidgetBase, error_text
from .charts import LineChart

__all__ = ["GainWidget"]

_TILE = 96
#: How long close() waits for the training thread: it ends after the step in flight.
_CLOSE_WAIT_S = 1.0


LOSS_NAMES = {"cl": "L_cl (classification)", "am": "L_am (attention mining)", "e": "L_e (pixel labels)"}


def _png(rgba: np.ndarray) -> bytes:
    return render.to_png(rgba)


class GainWidget(WidgetBase):
    """Train a classifier with GAIN on biased ShapeScenes and watch where it looks.

    Args:
        train_scenes: biased training scenes (circles on water, :data:`reproduce.BIAS`).
        test_scenes: held-out scenes for each of the biased and unbiased accuracy sets.
        warmup_epochs: plain epochs first (the Clever Hans network); epochs: then GAIN epochs.
        probes: probe scenes in the attention strip; probe_every: steps between refreshes.
        alpha, omega, sigma, pixel_labels: the starting knobs (see :class:`GainConfig`).
        seed: model initialisation and shuffling.
    """

    export_stem = "gain_attention"

    alpha = T.Float(1.0, help="weight of the attention-mining loss L_am")
    omega = T.Float(10.0, help="steepness of the soft mask")
    sigma = T.Float(0.5, help="threshold of the soft mask on the normalised attention")
    pixel_labels = T.Int(0, help="circles with a pixel-level mask (GAIN_ext when > 0)")
    state = T.Unicode("idle", help="idle, warm-up, training, paused, stopped, done or error")
    step = T.Int(0, help="steps done in the current phase")
    probe_refreshes = T.Int(0, help="how many times the attention strip was redrawn")

    def __init__(
        self,
        train_scenes: int = 600,
        test_scenes: int = 300,
        epochs: int = 2,
        warmup_epochs: int = 4,
        probes: int = 4,
        probe_every: int = 5,
        alpha: float = 1.0,
        omega: float = 10.0,
        sigma: float = 0.5,
        pixel_labels: int = 8,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        GainConfig(alpha=alpha, omega=omega, sigma=sigma)  # ValueError now, not in the thread
        if train_scenes < batch_size or epochs < 1 or warmup_epochs < 0 or probes < 1:
            raise ValueError("need train_scenes >= batch_size, epochs >= 1, warmup_epochs >= 0 and probes >= 1")
        self.sizes = dict(
            train=int(train_scenes),
            test=int(test_scenes),
            epochs=int(epochs),
            warmup=int(warmup_epochs),
            probes=int(probes),
            probe_every=int(probe_every),
            batch=int(batch_size),
            seed=int(seed),
        )
        self.trainer: GainTrainer | None = None
        self.model: torch.nn.Module | None = None
        self.history: list[dict[str, Any]] = []
        self.accuracies: list[dict[str, Any]] = []
        self.table: dict[str, float] | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop_asked = False
        self._data: dict[str, Any] | None = None
        with self._building():
            self.alpha, self.omega, self.sigma, self.pixel_labels = alpha, omega, sigma, pixel_labels
            self._base_controls()
            self.w_alpha = W.FloatSlider(min=0, max=5, step=0.1, description="alpha (L_am)")
            self.w_omega = W.FloatSlider(min=0, max=40, step=1, description="omega (mask)")
            self.w_sigma = W.FloatSlider(min=0, max=1, step=0.05, description="sigma (mask)")
            self.w_labels = W.IntSlider(min=0, max=64, description="pixel labels")
            for trait, w in (
                ("alpha", self.w_alpha),
                ("omega", self.w_omega),
                ("sigma", self.w_sigma),
                ("pixel_labels", self.w_labels),
            ):
                W.link((self, trait), (w, "value"))
            self.w_start = W.Button(description="Start", icon="play", button_style="success")
            self.w_pause = W.ToggleButton(description="Pause", icon="pause", disabled=True)
            self.w_stop = W.Button(description="Stop", icon="stop", button_style="danger", disabled=True)
            self.w_start.on_click(lambda _: self.start())
            self.w_stop.on_click(lambda _: self.stop())
            self.w_pause.observe(self._on_pause, "value")
            self.w_progress = W.IntProgress(value=0, min=0, max=1, description="idle")
            self.loss_chart = LineChart(
                list(LOSS_NAMES.values()), title="Losses per training step", xlabel="step (all phases)", ylabel="loss"
            )
            self.acc_chart = LineChart(
                ["biased", "unbiased"], title="Accuracy on held-out scenes", xlabel="step (all phases)",
                ylabel="accuracy (%)",
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
            bar = render.colorbar("jet", length=2 * _TILE, thickness=12)
            self.w_bar = W.Image(value=_png(bar), format="png", layout=W.Layout(width="12px", height=f"{2 * _TILE}px"))
            strip = W.HBox(
                [
                    W.VBox([W.HBox(self.w_strip), W.HBox(self.w_masked)]),
                    W.VBox(
                        [
                            W.HTML("<b>1</b>: most"),
                            self.w_bar,
                            W.HTML("<b>0</b>: none"),
                            W.HTML("<span class='gw-muted'>attention,<br>min-max<br>normalised</span>"),
                        ],
                        layout=W.Layout(margin="0 0 0 6px"),
                    ),
                ]
            )
            self.w_table = W.HTML()
            controls = W.VBox(
                [
                    self.w_alpha,
                    self.w_omega,
                    self.w_sigma,
                    self.w_labels,
                    W.HBox([self.w_start, self.w_pause, self.w_stop]),
                    self.w_progress,
                ]
            )
            self.children = [
                W.HTML(
                    "<b>GAIN training</b>: circles sit on water in the training scenes; watch where the "
                    "network looks (top: attention of its prediction, colour bar at the right; bottom: the "
                    "erased image I*)."
                ),
                W.HBox([controls, W.VBox([strip, self.w_strip_text])]),
                self.w_curve_text,
                curves,
                self.w_table,
                self.w_status,
                W.HBox([self.w_export, self.w_export_out]),
            ]
        self.status = "Set the knobs, then Start."

    # ---- data -------------------------------------------------------------------------------------
    def _prepare(self) -> dict[str, Any]:
        if self._data is None:
            s = self.sizes
            data = reproduce.training_set(s["train"])
            test = reproduce.test_sets(max(s["test"], 200), seed=reproduce.DEV_SEED)
            biased = ShapeScenes(s["test"], seed=reproduce.DEV_SEED + 1, bias=reproduce.BIAS).batch()
            water = BACKGROUNDS.index(reproduce.BIAS[1])
            # probes: shapes on water that are not circles, and circles elsewhere (the traps)
            traps = (
                test["background_without_class"].nonzero()[:, 0].tolist()[: (s["probes"] + 1) // 2]
                + test["class_without_background"].nonzero()[:, 0].tolist()[: s["probes"] // 2]
            )
            self._data = dict(
                train=data,
                test=test,
                probes=test["images"][traps],
                probe_names=[
                    f"{CLASSES[int(test['labels'][i])]} on {BACKGROUNDS[int(test['background'][i])]}" for i in traps
                ],
                evals={"biased": (biased["images"], biased["labels"]), "unbiased": (test["images"], test["labels"])},
                water=water,
            )
        return self._data

    # ---- control ----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the background training thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start a fresh run in a background thread with the current knobs (ignored while running)."""
        if self._closed:
            self.status = "This widget is closed; make a new GainWidget to train again."
            return
        if self.running:
            self.status = "Already running: pause or stop it first."
            return
        try:
            config = GainConfig(alpha=self.alpha, omega=self.omega, sigma=self.sigma)
        except ValueError as err:
            self.status = f"Error: {err}"
            return
        self.history, self.accuracies, self.table, self.error = [], [], None, None
        self._stop_asked = False
        self.w_table.value = ""
        self.w_start.disabled, self.w_pause.disabled, self.w_stop.disabled = True, False, False
        self._thread = threading.Thread(target=self._run, args=(config,), daemon=True, name="GainWidget")
        self._thread.start()

    def pause(self) -> None:
        """Hold training after the current step."""
        self.w_pause.value = True

    def resume(self) -> None:
        """Go on after :meth:`pause`."""
        self.w_pause.value = False

    def stop(self) -> None:
        """End the run after the current step ("Stopping..." at once, "Stopped at step N" then)."""
        self._stop_asked = True
        if self.running:
            self.status = "Stopping after the current step..."
            self.w_stop.disabled = True
        if self.trainer is not None:
            self.trainer.stop()
        self.w_pause.value = False

    def close(self) -> None:
        """Stop the training run, wait (about a second at most) for its thread to end after the step
        in flight, so that the model is left alone, and close the widget."""
        self._closed = True
        self._stop_asked = True
        trainer = getattr(self, "trainer", None)  # a constructor that failed made none (close runs on __del__)
        if trainer is not None:
            trainer.stop()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(_CLOSE_WAIT_S)
        super().close()

    _closed = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends (scripts, tests); True if it did within ``timeout``."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _on_pause(self, change: dict) -> None:
        t = self.trainer
        if t is None:
            return
        if change["new"]:
            t.pause()
            self.w_pause.description, self.w_pause.icon = "Resume", "play"
            self.state = "paused"
            self.status = f"Paused at step {self.step}."
        else:
            t.resume()
            self.w_pause.description, self.w_pause.icon = "Pause", "pause"
            if self.state == "paused":
                self.state = "training" if self.model is not None and not self._in_warmup else "warm-up"
                self.status = "Running."

    _in_warmup = False

    # ---- the run (background thread) ---------------------------------------------------------------
    def _run(self, config: GainConfig) -> None:
        s = self.sizes
        try:
            self.state = "preparing"
            self.status = "Rendering scenes..."
            d = self._prepare()
            data = d["train"]
            torch.manual_seed(s["seed"])
            model = ShapeClassifier()
            self.model = model
            common: dict[str, Any] = dict(
                batch_size=s["batch"],
                probes=d["probes"],
                probe_every=s["probe_every"],
                eval_sets=d["evals"],
                callbacks=[self._event],
            )
            phases: list[tuple[str, GainConfig, int, float, dict[str, Any]]] = []
            if s["warmup"]:
                phases.append(("warm-up", GainConfig(alpha=0.0), s["warmup"], 3e-3, {"mine": False}))
            circles = (data["labels"] == CLASSES.index(reproduce.BIAS[0])).nonzero()[:, 0]
            kw: dict[str, Any] = {}
            n = min(int(self.pixel_labels), len(circles))
            if n:
                has = torch.zeros(len(data["labels"]), dtype=torch.bool)
                has[circles[:n]] = True
                kw = {"masks": data["masks"], "has_mask": has}
            phases.append(("training", config, s["epochs"], 1e-3, kw))
            for phase, cfg, epochs, lr, extra in phases:
                if self._stop_asked:
                    break
                trainer = GainTrainer(
                    model,
                    "features",
                    data["images"],
                    data["hot"],
                    config=cfg,
                    lr=lr,
                    epochs=epochs,
                    seed=s["seed"],
                    **common,
                    **extra,
                )
                trainer.eval_every = max(1, trainer.total_steps // 4)
                self._in_warmup = phase == "warm-up"
                self.trainer = trainer
                self.state = phase
                self.step = 0
                self.w_progress.max, self.w_progress.value = trainer.total_steps, 0
                self.w_progress.description = phase
                self.status = f"{phase}: {trainer.total_steps} steps" + (
                    f", {n} pixel labels" if phase == "training" and n else ""
                )
                if self.w_pause.value:
                    trainer.pause()
                if self._stop_asked:
                    trainer.stop()
                trainer.fit()
                if trainer.stopped:
                    break
            if self._stop_asked:
                self.state = "stopped"
                self.status = f"Stopped at step {self.step}."
            else:
                self.table = reproduce.score(copy.deepcopy(model).eval(), d["test"])
                self._show_table()
                self.state = "done"
                self.status = "Done: the table below is on held-out unbiased scenes."
        except Exception as err:  # a failing run reports, never kills the kernel's thread silently
            self.error = err
            self.state = "error"
            self.status = f"Error: {error_text(err)}"
        finally:
            self._draw_curves()  # the steps after the last redraw (curves redraw every other step)
            self.w_start.disabled, self.w_pause.disabled, self.w_stop.disabled = False, True, True

    def _event(self, ev: dict[str, Any]) -> None:
        kind = ev["kind"]
        if kind == "step":
            ev = {
                **ev,
                "phase": self.state if self.state != "paused" else ("warm-up" if self._in_warmup else "training"),
            }
            self.history.append(ev)
            self.step = ev["step"]
            self.w_progress.value = ev["step"]
            if ev["step"] % 2 == 0 or ev["step"] == 1:
                self._draw_curves()
        elif kind == "probe":
            self._draw_probes(ev)
        elif kind == "eval":
            self.accuracies.append(
                {**ev, "phase": "warm-up" if self._in_warmup else "training", "global_step": len(self.history)}
            )
            self._draw_curves()

    # ---- drawing -----------------------------------------------------------------------------------
    def _draw_curves(self) -> None:
        steps = range(1, len(self.history) + 1)
        self.loss_chart.update(steps, {name: [h["losses"][k] for h in self.history] for k, name in LOSS_NAMES.items()})
        at = [a["global_step"] for a in self.accuracies]
        self.acc_chart.update(
            at, {k: [100 * a["accuracy"].get(k, float("nan")) for a in self.accuracies] for k in ("biased", "unbiased")}
        )
        warm = [i for i, h in enumerate(self.history, 1) if h["phase"] == "warm-up"]
        note = (
            f"Steps 1-{warm[-1]} are the warm-up: plain training, so L_am and L_e stay at 0 until attention "
            f"mining starts at step {warm[-1] + 1}. "
            if warm
            else ""
        )
        if self.history:
            last = self.history[-1]["losses"]
            note += "Last step: " + ", ".join(f"{n} {last[k]:.3f}" for k, n in LOSS_NAMES.items())
        if self.accuracies:
            acc = self.accuracies[-1]["accuracy"]
            note += "; accuracy " + ", ".join(f"{html.escape(k)} {100 * v:.0f}%" for k, v in acc.items())
        self.w_curve_text.value = note

    def _draw_probes(self, ev: dict[str, Any]) -> None:
        d = self._data
        assert d is not None
        self._last_probe = ev
        for i, w in enumerate(self.w_strip):
            if i >= len(ev["maps"]):
                break
            w.value = _png(render.overlay(ev["images"][i], ev["maps"][i], alpha=self.opacity))
            self.w_masked[i].value = _png(render.to_rgba(ev["masked"][i].clamp(0, 1)))
        said = [CLASSES[int(p)] for p in ev["predicted"]]
        self.w_strip_text.value = "step {}: {}".format(
            ev["step"], "; ".join(f"{html.escape(n)} &rarr; says {p}" for n, p in zip(d["probe_names"], said))
        )
        self.probe_refreshes += 1

    _last_probe: dict[str, Any] | None = None

    def _show_table(self) -> None:
        t = self.table
        assert t is not None
        rows = [
            ("unbiased accuracy", "unbiased"),
            ("circle without water", "class_without_background"),
            ("water without circle", "background_without_class"),
            ("overall", "overall"),
            ("pointing game", "pointing"),
            ("mask IoU", "iou"),
        ]
        body = "".join(f"<tr><td>{a}</td><td style='text-align:right'>{100 * t[k]:.1f}%</td></tr>" for a, k in rows)
        self.w_table.value = (
            f"<b>Held-out unbiased scenes</b> (alpha {self.alpha}, omega {self.omega}, sigma "
            f"{self.sigma}, {self.pixel_labels} pixel labels)<table>{body}</table>"
        )

    # ---- export --------------------------------------------------------------------------------------
    def composite(self) -> np.ndarray:
        """The probe strip: attention overlays above, erased images below."""
        ev = self._last_probe
        if ev is None:
            raise ValueError("nothing to export yet: start training and wait for the first probe refresh")
        top = [render.overlay(ev["images"][i], ev["maps"][i], alpha=self.opacity) for i in range(len(ev["maps"]))]
        bottom = [render.to_rgba(ev["masked"][i].clamp(0, 1)) for i in range(len(ev["maps"]))]
        return np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)

    def heading(self) -> str:
        return f"GAIN attention at step {self.step} ({self.state}); alpha {self.alpha}, sigma {self.sigma}, omega {self.omega}"

    def colorbar(self) -> tuple[np.ndarray, tuple[str, str], str] | None:
        return render.colorbar("jet"), ("0: none", "1: most"), "attention (min-max normalised)"
