"""The one registry of explanation methods that widgets, notebooks and :func:`explain` read.

Adding a method (it then appears in every widget, notebook and test that lists methods) is a row in
the catalog, :mod:`guidewidgets.explain.catalog` (order, name, title, family, reference, summary),
plus one decorated function that names that row and states only what its code decides:

- a gradient CAM that differs only in its channel weights (or its own pixel-wise map) is one
  decorated function on the CAM base, :func:`guidewidgets.explain.cam_base.gradient_cam`::

      @gradient_cam("my-cam")  # row: (95, "my-cam", "My-CAM", "cam", "Me et al. 2027", "Grad-CAM with ...")
      def my_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
          '''My-CAM: w_k = mean_ij (dy/dA_k)^2.'''
          return (g * g).mean((2, 3))  # (B, C) weights of the feature maps a (B, C, h, w)

- a CAM with passes of its own: ``@cam_method(name, slow=..., quick=...)`` on
  ``fn(c: CamCall, *, <its options>) -> (B, h, w)`` (same module; the base adds the call shape).
- any other method: :func:`method` on its own part only, ``fn(c: Call, *, <its options>) -> (B, H, W)``::

      @method("my-grad")  # row: (175, "my-grad", "My gradient", "gradient", "Me et al. 2027", ...)
      def my_grad(c: Call, *, power: float = 2.0) -> torch.Tensor:
          '''My gradient: |d y / d x| ** power, largest over colour channels.'''
          g, _ = input_gradient(c.model, c.x, c.target)
          return g.abs().pow(power).amax(1)

  registers ``"my-grad"`` as ``my_grad(model, x, target=None, layer=None, *, progress=None,
  power=2.0)``; ``c.target`` is the checked :class:`~guidewidgets.explain.targets.Target` and
  ``c.layer`` the resolved layer when ``uses_layer=True``. The row's ``order`` places it in
  :func:`methods` (the widget's number keys follow it; the shipped methods use multiples of 10). A
  slow method gives ``slow=True`` and ``quick={...}``, the cheap options every test runs it with.
  A method outside the package (a user's, a test's) has no row: it gives its texts to the
  decorator, ``@method(name, title, family, reference, summary, order=...)``
  (``@cam_method`` / ``@gradient_cam``: ``name, title, reference, summary, order=...``).
  (``@register(MethodInfo(...))`` on a full ``fn(model, x, target=None, layer=None, *, progress=None,
  ...)`` still works.)
- import its module in ``guidewidgets/explain/__init__.py``.

A method is registered once with :func:`register`; that also wraps it so that every method
checks its input the same way, runs the model in eval mode (restoring it afterwards) and holds
the model's lock (:func:`guidewidgets.hooks.model_lock`) while it runs.

Threads: two explain calls on one model run one after the other (the lock), so neither sees
the other's hooks or flag changes, and every hook explain places acts only in the thread that
placed it (:func:`guidewidgets.hooks.owned`), so a user's own ``model(x)`` in another thread is
never cut, recorded or re-routed. (Eval mode is a flag on the modules, shared by all threads: a
forward in another thread while explain runs sees eval mode; it gets the same output when the
model is in eval mode already, as it is for inference.)

Scripted models (``torch.jit.script``/``trace``): their forward runs no Python hooks and no
Python-level activation calls, so gradient and perturbation methods work ('saliency',
'smoothgrad', 'occlusion', 'rise' ...) and methods that need a layer or a backward rule
('grad-cam' family, 'guided-backprop', 'deconvnet', 'attention-rollout') refuse with a message.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import nn

from ..hooks import eval_mode, model_lock, model_output
from .catalog import Entry, Family, entry
from .layers import resolve_layer
from .targets import Target, TargetLike, check_input

__all__ = ["MethodInfo", "Call", "method", "register", "methods", "method_info", "method_function", "explain"]


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """What a widget or a notebook needs to know about a method without running it.

    Args:
        name: the registry key (lower case, dashes), e.g. ``"grad-cam"``.
        title: what a menu shows.
        family: ``"cam"``, ``"gradient"``, ``"perturbation"`` or ``"attention"``.
        reference: the paper.
        summary: one sentence on what the map shows.
        order: place in :func:`methods` (ascending; the widget's number keys follow it).
        uses_layer: whether ``layer=`` matters.
        signed: whether maps have both signs (a diverging colour scale).
        slow: whether a widget should run it in a background job with progress.
        has_image: whether ``raw=True`` gives a (B, C, H, W) gradient image.
        quick: cheap options (fewer samples, masks, steps ...) under which the method keeps its
            properties: what tests and quick demos pass. Every slow method has some.
        target_kind: what ``target=`` names: ``"class"`` (an output class, or a callable on the
            model's output) or ``"neuron"`` (a unit of ``layer``: a channel int or a
            :class:`~guidewidgets.explain.neuron_attribution.Neuron`; None is each sample's most
            active channel; a callable on the model's output is refused).
    """

    name: str
    title: str
    family: Family
    reference: str
    summary: str
    order: float = 1000.0
    uses_layer: bool = False
    signed: bool = False
    slow: bool = False
    has_image: bool = False
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    target_kind: Literal["class", "neuron"] = "class"

    def __post_init__(self) -> None:
        # Why a read-only view: one MethodInfo is shared by every caller, so a test that edits
        # its options must not change them for the next one.
        object.__setattr__(self, "quick", types.MappingProxyType(dict(self.quick)))

    @classmethod
    def of(cls, row: Entry, **flags: Any) -> MethodInfo:
        """The info of catalog row ``row`` (:mod:`~guidewidgets.explain.catalog`) with the code's
        ``flags`` (``uses_layer``, ``signed``, ``slow``, ``has_image``, ``quick``, ``target_kind``)."""
        return cls(row.name, row.title, row.family, row.reference, row.summary, order=row.order, **flags)


_INFO: dict[str, MethodInfo] = {}
_FUNCS: dict[str, Callable[..., torch.Tensor]] = {}


# Methods that need Python hooks or intercepted activation calls besides a layer (uses_layer).
_NEEDS_PYTHON_FORWARD = {"guided-backprop", "deconvnet", "attention-rollout"}


def check_model(model: nn.Module, info: MethodInfo) -> None:
    """Refuse what cannot work on this model (scripted models and hook-based methods); warn
    when the model carries an open Guide (its forward is then the guided one)."""
    if isinstance(model, torch.jit.ScriptModule) and (info.uses_layer or info.name in _NEEDS_PYTHON_FORWARD):
        raise TypeError(
            f"{info.name!r} needs Python hooks inside the forward, which a scripted model "
            "(torch.jit.script/trace) does not run. Explain the original nn.Module, or use a method "
            "that needs only the model's output and input gradient ('saliency', 'smoothgrad', "
            "'occlusion', 'rise')"
        )
    from ..owners import owner_of  # a Guide claims its model there: no import of the guide package

    if owner_of(model) is not None:
        warnings.warn(
            f"{type(model).__name__} carries an open Guide, so its forward is the guided one and "
            f"{info.name!r} explains the guided prediction. For the plain model close the guide "
            "first (guide.close())",
            UserWarning,
            stacklevel=3,
        )


def register(info: MethodInfo) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: add a method ``fn(model, x, target=None, layer=None, *, progress=None, ...)``."""

    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        @functools.wraps(fn)
        def method(model: nn.Module, x: torch.Tensor, target: TargetLike = None, layer=None, **kw):
            x = check_input(model, x)
            check_model(model, info)
            report = kw.get("progress")
            if report is not None and not callable(report):
                raise TypeError("progress must be a callable(fraction) or None")
            last = [0.0]
            if report is not None:
                # Why wrap: fast methods never report, yet a widget's bar must end at 1.

                def tracked(f: float) -> None:
                    last[0] = f
                    report(f)

                kw["progress"] = tracked
            # Why the lock: eval_mode's flag flips and the hooks of two calls on one model must not
            # interleave (a concurrent call would restore training mode mid-way, or cut the graph).
            with model_lock(model), eval_mode(model):
                result = fn(model, x, target, layer, **kw)
            if report is not None and last[0] < 1.0:
                report(1.0)
            return result

        _INFO[info.name] = info
        _FUNCS[info.name] = method
        return method

    return wrap


@dataclasses.dataclass(frozen=True)
class Call:
    """One checked request, what a method's own part (under :func:`method`) starts from.

    Args:
        model: the model (in eval mode and locked while the method runs).
        x: the checked input (B, C, H, W).
        target: the checked :class:`~guidewidgets.explain.targets.Target` for the batch (what the
            method's ``check_target`` gives, where it has its own).
        layer: the resolved layer (the default filled in) for ``uses_layer`` methods, else as given.
        progress: ``progress(fraction)`` or None.
    """

    model: nn.Module
    x: torch.Tensor
    target: Target
    layer: str | nn.Module | None
    progress: Callable[[float], None] | None

    def fixed_target(self) -> Target:
        """The target with "predicted class" fixed to the clean input's prediction (one forward
        without gradients, only when the target needs it): what every noisy or shifted copy is
        then explained for."""
        if not self.target.needs_prediction:
            return self.target
        with torch.no_grad():
            return self.target.fix(model_output(self.model(self.x)))


def public_signature(
    run: Callable[..., torch.Tensor], fn: Callable[..., torch.Tensor], what: str, target: Any = None
) -> list[inspect.Parameter]:
    """Give ``run(model, x, target, layer, *, progress, <knobs>, **options)`` the public signature:
    its own parameters without ``**options``, then the options of ``fn(call, *, <options>)``.

    Args:
        run: the registered method's body (by :func:`method`, or by the CAM base's ``cam_method``).
        fn: the method's own part; its parameters after the first must be keyword-only.
        what: how a refusal names the method ("a method", "a CAM").
        target: the annotation of ``target=`` (None: ``run``'s own).

    Returns:
        ``fn``'s options (the parameters after the call).
    """
    own = list(inspect.signature(fn).parameters.values())[1:]
    if any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in own):
        raise TypeError(f"{fn.__name__}: {what}'s own options must be keyword-only (after *)")
    base = list(inspect.signature(run).parameters.values())[:-1]  # without **options
    if target is not None:
        base[2] = base[2].replace(annotation=target)
    # Why __signature__: inspect.signature, explain()'s option check and sphinx autodoc read it.
    run.__signature__ = inspect.Signature([*base, *own], return_annotation="torch.Tensor")  # type: ignore[attr-defined]
    return own


def _annotation(check_target: Callable[..., Any]) -> Any:
    """What ``target=`` is annotated with: ``check_target``'s first parameter's annotation (a
    neuron method's own target type), or None for :class:`Target` (the public ``TargetLike``)."""
    if check_target is Target:
        return None
    return next(iter(inspect.signature(check_target).parameters.values())).annotation


def method(
    name: str,
    *texts: str,
    order: float | None = None,
    uses_layer: bool = False,
    signed: bool = False,
    slow: bool = False,
    has_image: bool = False,
    quick: Mapping[str, Any] | None = None,
    target_kind: Literal["class", "neuron"] = "class",
    check_target: Callable[[Any, int], Any] = Target,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: register a method given only its own part ``fn(c: Call, *, <its options>)``.

    The title, family, reference, summary and order are ``name``'s row in
    :mod:`~guidewidgets.explain.catalog`; ``uses_layer`` ... ``target_kind`` are the code's
    :class:`MethodInfo` fields (see there).

    Args:
        name: the method's registry key, its row's name.
        texts: none (the catalog's row), or, for a method outside the package (a user's, a
            test's): its title, family, reference and summary, with ``order=``.
        order: with ``texts``: its place in :func:`methods`.
        check_target: ``check_target(target, batch)`` gives ``c.target``: :class:`Target` (a class
            score) unless the method's target means something else (a neuron of the layer).

    Returns:
        A decorator whose result is the registered method, named and documented as ``fn``, with the
        public signature ``(model, x, target=None, layer=None, *, progress=None, <its options>)``:
        it checks the target (and resolves the layer when ``uses_layer``) and calls ``fn``.
    """
    info = MethodInfo.of(
        entry(name, texts, order),
        uses_layer=uses_layer,
        signed=signed,
        slow=slow,
        has_image=has_image,
        quick=quick or {},
        target_kind=target_kind,
    )

    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def run(
            model: nn.Module,
            x: torch.Tensor,
            target: TargetLike = None,
            layer: str | nn.Module | None = None,
            *,
            progress: Callable[[float], None] | None = None,
            **options: Any,
        ) -> torch.Tensor:
            t = check_target(target, x.shape[0])
            where = resolve_layer(model, x, layer) if uses_layer else layer
            return fn(Call(model, x, t, where, progress), **options)

        public_signature(run, fn, "a method", _annotation(check_target))
        functools.update_wrapper(run, fn, updated=())  # fn's name, qualified name, module and docstring
        return register(info)(run)

    return wrap


def methods() -> list[str]:
    """Names of all registered methods by their ``order`` (ties: registration order)."""
    return sorted(_INFO, key=lambda name: _INFO[name].order)


def _lookup(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"method must be a name (str), got {type(name).__name__}")
    if name in _INFO:
        return name
    key = name.lower().replace("_", "-").replace(" ", "-")
    if key in _INFO:
        return key
    close = difflib.get_close_matches(key, list(_INFO), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown explanation method {name!r}.{hint} guidewidgets.explain.methods() lists all: {', '.join(methods())}."
    )


def method_info(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of a registered method (ValueError with close matches if unknown)."""
    return _INFO[_lookup(name)]


def method_function(name: str) -> Callable[..., torch.Tensor]:
    """The registered function of a method."""
    return _FUNCS[_lookup(name)]


def explain(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    **options,
) -> torch.Tensor:
    """Explanation maps (B, H, W) of ``model`` on ``x`` (B, C, H, W) with the named method.

    ``x``: finite floats of the model's dtype and device, C the model's input channels (its first
    conv's ``in_channels``: 1 for a grey MNIST-style net, 3 for RGB, 4 ...); anything else is
    refused with a ValueError/TypeError that names the fix. Calls on one model from several
    threads run one at a time (see the module docstring); a model carrying an open Guide warns.

    ``target``: None (each sample's predicted class), an int, one int per sample, or a
    callable(output) -> (B,) scores. ``layer``: module name (or module) for methods with
    ``method_info(name).uses_layer`` (default: the model's ``default_explain_layer``, else the
    last spatial feature map); the other methods ignore it, so a widget can always pass it.
    ``progress(fraction)`` is called as slow methods go, and with 1.0 at the end by every method.
    ``options`` are the method's own keywords (e.g. ``window=32`` for occlusion, ``raw=True`` for
    gradient-image methods); an unknown one raises a ValueError listing the valid ones.
    """
    fn = method_function(method)
    name = _lookup(method)
    params = inspect.signature(fn).parameters
    allowed = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    for key in options:
        if key not in allowed:
            valid = [a for a in allowed if a != "progress"]
            why = ""
            if key == "raw":
                why = " raw=True is only for methods that make an image (method_info(name).has_image)."
            raise ValueError(f"{name!r} has no option {key!r}.{why} Its options are: {', '.join(valid) or 'none'}.")
    return fn(model, x, target, layer, progress=progress, **options)
