"""A widget-free GAIN run: the biased-circle experiment as a session a script, a test or
``GainWidget`` drives.

:class:`GainRun` prepares the data (biased training scenes, a biased and an unbiased held-out set,
probe scenes that are traps: shapes on water and circles elsewhere), then trains a fresh
``ShapeClassifier`` in two phases in a background :class:`~guidewidgets.jobs.Job`: a plain
warm-up (the Clever Hans network that learns "water means circle"), then GAIN (attention mining,
plus pixel labels for a few circles when ``pixel_labels > 0``). Pause, resume and stop act after
the step in flight; every trainer event reaches the listeners, tagged with its phase; at the end
the table of :func:`guidewidgets.gain.reproduce.score` is computed on the unbiased scenes.

>>> run = GainRun(train_scenes=64, test_scenes=64, epochs=1, warmup_epochs=1, batch_size=16)
>>> run.start().wait()
>>> run.state, run.table["unbiased"]
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import torch

from .. import jobs
from ..zoo.models import ShapeClassifier
from ..zoo.scenes import BACKGROUNDS, CLASSES, ShapeScenes
from . import reproduce
from .losses import GainConfig, check_whole
from .trainer import GainTrainer

__all__ = ["GainRun", "PHASES", "LOSS_NAMES", "KNOBS"]

#: The phases of a run, in order; ``state`` is one of these or idle, preparing, paused, stopped, done, error.
PHASES = ("warm-up", "training")
#: The losses each step records, with what they are.
LOSS_NAMES = {"cl": "L_cl (classification)", "am": "L_am (attention mining)", "e": "L_e (pixel labels)"}
#: The knobs: plain attributes of a run, read when it starts (so a widget may change them between
#: runs); :class:`~guidewidgets.widgets.GainWidget` makes a slider for each and copies them in.
KNOBS = ("alpha", "omega", "sigma", "pixel_labels")
#: How long :meth:`GainRun.close` waits for the step in flight (the bound the widgets promise).
CLOSE_WAIT_S = 1.0

Listener = Callable[[dict[str, Any]], None]


class GainRun:
    """Train a classifier with GAIN on biased ShapeScenes, in the background, and record everything.

    Args:
        train_scenes: biased training scenes (circles on water, :data:`reproduce.BIAS`).
        test_scenes: held-out scenes for each of the biased and unbiased accuracy sets.
        warmup_epochs: plain epochs first (the Clever Hans network); epochs: then GAIN epochs.
        probes: probe scenes whose attention is sent every ``probe_every`` steps.
        alpha, omega, sigma, pixel_labels: the knobs (see :class:`GainConfig`); plain attributes,
            read when a run starts.
        batch_size: images per step; seed: model initialisation and shuffling.

    Events (``listen(fn)``; ``fn(event)`` runs in the run's thread, or in the caller's for
    ``"state"``): the trainer's ``"step"`` (with ``"phase"`` and ``"global_step"``), ``"probe"``,
    ``"eval"`` (with ``"phase"``, ``"global_step"``) and ``"end"``; ``{"kind": "phase", "phase",
    "total"}`` when a phase starts; ``{"kind": "state", "state", "status"}`` whenever either changes;
    ``{"kind": "finished", "state"}`` once the run is over (table and history complete).
    """

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
        GainConfig(alpha=alpha, omega=omega, sigma=sigma)  # ValueError now, not in the thread
        self.sizes = dict(
            train=check_whole("train_scenes", train_scenes, 1, "biased training scenes"),
            test=check_whole("test_scenes", test_scenes, 1, "held-out scenes per accuracy set"),
            epochs=check_whole("epochs", epochs, 1, "GAIN epochs after the warm-up"),
            warmup=check_whole("warmup_epochs", warmup_epochs, 0, "plain epochs first; 0 for none"),
            probes=check_whole("probes", probes, 1, "probe scenes in the attention strip"),
            probe_every=check_whole("probe_every", probe_every, 1, "steps between probe refreshes"),
            batch=check_whole("batch_size", batch_size, 1, "images per step"),
            seed=check_whole("seed", seed, 0),
        )
        if self.sizes["train"] < self.sizes["batch"]:
            raise ValueError(
                f"train_scenes ({train_scenes}) must be at least batch_size ({batch_size}): "
                "use more scenes or a smaller batch"
            )
        self.alpha, self.omega, self.sigma = float(alpha), float(omega), float(sigma)
        self.pixel_labels = check_whole("pixel_labels", pixel_labels, 0, "circles with a pixel mask; 0 for none")
        self.state = "idle"
        self.status = "Set the knobs, then start."
        self.step = 0  # steps done in the current phase
        self.phase: str | None = None
        self.model: torch.nn.Module | None = None
        self.trainer: GainTrainer | None = None
        self.history: list[dict[str, Any]] = []
        self.accuracies: list[dict[str, Any]] = []
        self.last_probe: dict[str, Any] | None = None
        self.table: dict[str, float] | None = None
        self.error: BaseException | None = None
        self.config: GainConfig | None = None  # the knobs of the running (or last) run
        self.used_pixel_labels = 0
        self.data: dict[str, Any] | None = None
        self._listeners: list[Listener] = []
        self._jobs = jobs.JobGroup("GainRun")
        self._paused = False
        self._stop_asked = False
        self._lock = threading.Lock()

    # ---- listeners ------------------------------------------------------------------------------
    def listen(self, fn: Listener) -> None:
        """Call ``fn(event)`` for every event (see the class)."""
        if not callable(fn):
            raise TypeError(f"a listener must be a function taking one event dict, got {type(fn).__name__}")
        self._listeners.append(fn)

    def _emit(self, event: dict[str, Any]) -> None:
        for fn in list(self._listeners):
            fn(event)

    def _set(self, state: str | None = None, status: str | None = None) -> None:
        self.state = self.state if state is None else state
        self.status = self.status if status is None else status
        self._emit({"kind": "state", "state": self.state, "status": self.status})

    # ---- data -----------------------------------------------------------------------------------
    def prepare(self, job: jobs.Job | None = None) -> dict[str, Any]:
        """Render the scenes once: ``train``, ``test`` (unbiased, with the table's row selections),
        ``probes`` (traps: shapes on water that are not circles, and circles elsewhere) with their
        ``probe_names``, and the ``evals`` sets {"biased", "unbiased"}. With ``job``, a cancel
        takes effect between the three renders."""
        with self._lock:
            if self.data is None:
                s = self.sizes
                data = reproduce.training_set(s["train"])
                if job is not None:
                    job.check()
                test = reproduce.test_sets(max(s["test"], 200), seed=reproduce.DEV_SEED)
                if job is not None:
                    job.check()
                biased = ShapeScenes(s["test"], seed=reproduce.DEV_SEED + 1, bias=reproduce.BIAS).batch()
                traps = (
                    test["background_without_class"].nonzero()[:, 0].tolist()[: (s["probes"] + 1) // 2]
                    + test["class_without_background"].nonzero()[:, 0].tolist()[: s["probes"] // 2]
                )
                self.data = dict(
                    train=data,
                    test=test,
                    probes=test["images"][traps],
                    probe_names=[
                        f"{CLASSES[int(test['labels'][i])]} on {BACKGROUNDS[int(test['background'][i])]}" for i in traps
                    ],
                    evals={
                        "biased": (biased["images"], biased["labels"]),
                        "unbiased": (test["images"], test["labels"]),
                    },
                )
            return self.data

    # ---- control --------------------------------------------------------------------------------
    @property
    def job(self) -> jobs.Job | None:
        """The background job of the last run."""
        return self._jobs.job("run")

    @property
    def running(self) -> bool:
        """True while the run's background thread is alive."""
        job = self.job
        return job is not None and job.running

    @property
    def closed(self) -> bool:
        return self._jobs.closed

    def start(self) -> jobs.Job:
        """Start a fresh run with the current knobs; returns its job. A ValueError (bad knob) or a
        RuntimeError (already running, or closed) says why when it cannot start."""
        if self.closed:
            raise RuntimeError("this GAIN run is closed; make a new one to train again")
        if self.running:
            raise RuntimeError("already running: pause or stop it first")
        config = GainConfig(alpha=self.alpha, omega=self.omega, sigma=self.sigma)
        check_whole("pixel_labels", self.pixel_labels, 0, "circles with a pixel mask; 0 for none")
        self.history, self.accuracies, self.table, self.error = [], [], None, None
        self.last_probe, self.config, self.step, self.phase = None, config, 0, None
        self._stop_asked = False
        return self._jobs.submit(
            "run", object(), self._work, message="GAIN training", on_done=self._finished, on_cancel=self._on_cancel
        )

    def pause(self) -> None:
        """Hold training after the step in flight."""
        self._paused = True
        if self.trainer is not None and self.running:
            self.trainer.pause()
            self._set("paused", f"Paused at step {self.step}.")

    def resume(self) -> None:
        """Go on after :meth:`pause`."""
        was = self._paused
        self._paused = False
        if self.trainer is not None:
            self.trainer.resume()
        if was and self.state == "paused":
            self._set(self.phase or "training", "Running.")

    @property
    def paused(self) -> bool:
        return self._paused

    def stop(self) -> None:
        """End the run after the step in flight: ``status`` says "Stopping..." at once and
        "Stopped at step N." when the thread is done."""
        self._stop_asked = True
        self._paused = False
        job = self.job
        if job is not None and job.running:
            self._set(status="Stopping after the current step...")
            job.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run is over (history, table and the finished event included); True if it is."""
        return self._jobs.wait(timeout)

    def close(self, timeout: float | None = CLOSE_WAIT_S) -> bool:
        """Stop the run, refuse new ones and wait (``timeout`` s at most) until the thread has let go
        of the model; True if it has."""
        self._stop_asked = True
        self._paused = False
        return self._jobs.close(timeout)

    def _on_cancel(self, _job: jobs.Job) -> None:
        trainer = self.trainer
        if trainer is not None:
            trainer.stop()  # the trainer ends fit() after its step; the work then sees the cancel

    # ---- the run (background thread) ------------------------------------------------------------
    def phases(self, config: GainConfig) -> list[tuple[str, GainConfig, int, float, dict[str, Any]]]:
        """``(phase, config, epochs, lr, extra trainer arguments)`` of a run with ``config``."""
        s, d = self.sizes, self.prepare()
        out: list[tuple[str, GainConfig, int, float, dict[str, Any]]] = []
        if s["warmup"]:
            out.append(("warm-up", GainConfig(alpha=0.0), s["warmup"], reproduce.WARMUP_LR, {"mine": False}))
        labels = d["train"]["labels"]
        circles = (labels == CLASSES.index(reproduce.BIAS[0])).nonzero()[:, 0]
        self.used_pixel_labels = n = min(int(self.pixel_labels), len(circles))
        extra: dict[str, Any] = {}
        if n:
            has = torch.zeros(len(labels), dtype=torch.bool)
            has[circles[:n]] = True
            extra = {"masks": d["train"]["masks"], "has_mask": has}
        out.append(("training", config, s["epochs"], reproduce.LR, extra))
        return out

    def _work(self, job: jobs.Job) -> None:
        s = self.sizes
        self._set("preparing", "Rendering scenes...")
        d = self.prepare(job)
        job.report(0.0, "scenes ready")
        torch.manual_seed(s["seed"])
        self.model = model = ShapeClassifier()
        assert self.config is not None
        for phase, cfg, epochs, lr, extra in self.phases(self.config):
            job.check()
            trainer = GainTrainer(
                model, "features", d["train"]["images"], d["train"]["hot"], config=cfg, lr=lr, epochs=epochs,
                seed=s["seed"], batch_size=s["batch"], probes=d["probes"], probe_every=s["probe_every"],
                eval_sets=d["evals"], callbacks=[self._on_event], **extra,
            )  # fmt: skip
            trainer.eval_every = max(1, trainer.total_steps // 4)
            self.trainer, self.phase, self.step = trainer, phase, 0
            self._emit({"kind": "phase", "phase": phase, "total": trainer.total_steps})
            labelled = f", {self.used_pixel_labels} pixel labels" if phase == "training" and extra else ""
            self._set(phase, f"{phase}: {trainer.total_steps} steps{labelled}")
            if self._paused:
                trainer.pause()
                self._set("paused", f"Paused at step {self.step}.")
            if job.cancelled:  # asked between phases: on_cancel found the old trainer
                trainer.stop()
            trainer.fit()
            job.check()
        self.table = reproduce.score(copy.deepcopy(model).eval(), d["test"])

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind, phase = ev["kind"], self.phase
        if kind == "step":
            ev = {**ev, "phase": phase, "global_step": len(self.history) + 1}
            self.history.append(ev)
            self.step = ev["step"]
        elif kind == "eval":
            ev = {**ev, "phase": phase, "global_step": len(self.history)}
            self.accuracies.append(ev)
        elif kind == "probe":
            self.last_probe = ev
        self._emit(ev)

    def _finished(self, job: jobs.Job) -> None:
        if job.state == "failed":
            assert job.error is not None
            self.error = job.error
            self._set("error", f"Error: {job.error_text}")
        elif job.state == "cancelled" or self._stop_asked:
            self._set("stopped", f"Stopped at step {self.step}.")
        else:
            self._set("done", "Done: the table is on held-out unbiased scenes.")
        self._emit({"kind": "finished", "state": self.state})

    # ---- words a view shows (widget-free, so scripts read the same) ------------------------------
    def warmup_note(self) -> str:
        """Why L_am and L_e are 0 at first: "Steps 1-N are the warm-up ..." ("" without a warm-up)."""
        warm = [h["global_step"] for h in self.history if h["phase"] == "warm-up"]
        if not warm:
            return ""
        return (
            f"Steps 1-{warm[-1]} are the warm-up: plain training, so L_am and L_e stay at 0 until attention "
            f"mining starts at step {warm[-1] + 1}. "
        )

    def table_rows(self) -> list[tuple[str, float]]:
        """The final table as ``(row, fraction)``; empty before a run is done."""
        t = self.table
        if t is None:
            return []
        rows = [
            ("unbiased accuracy", "unbiased"),
            ("circle without water", "class_without_background"),
            ("water without circle", "background_without_class"),
            ("overall", "overall"),
            ("pointing game", "pointing"),
            ("mask IoU", "iou"),
        ]
        return [(name, float(t[key])) for name, key in rows]
