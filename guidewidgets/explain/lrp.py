"""Layer-wise relevance propagation (LRP) with the epsilon, gamma and alpha-beta rules.

LRP (Bach et al. 2015) hands the target's score back layer by layer: a layer ``z = W a + b``
passes the relevance ``R_out`` of its outputs to its inputs as
``R_in = a * rho(W)^T (R_out / z')`` with ``z' = rho(W) a + rho(b)`` the rule's modified forward:

- ``"epsilon"``: ``rho = id``, ``z' = z + eps * sign(z)`` (Captum's ``EpsilonRule``, eps 1e-9);
- ``"gamma"``: ``rho(W) = W + gamma * W^+``, bias kept (Captum's ``GammaRule``, gamma 0.25);
- ``"alpha-beta"``: ``alpha * (a W)^+ / z^+ - beta * (a W)^- / z^-`` with ``alpha - beta = 1``;
  ``alpha=1, beta=0`` is the z+ rule (Captum's ``Alpha1_Beta0_Rule``). The bias joins the side of
  its sign (``b^+`` in ``z^+``), as in Bach et al. and zennit; Captum puts the whole bias into
  its denominator, where a negative bias can make it near 0 or negative and flip signs. Where
  biases are >= 0 (torchvision's VGG starts with zero biases) and inputs >= 0 the two agree;
- ``"identity"`` (per layer, shape-keeping layers such as BatchNorm): ``R_in = R_out``.

How: gradient times input with a modified backward. A thread-owned forward hook
(:func:`guidewidgets.hooks.hooked`) on each weighted layer replaces its output ``z`` by
``z + (z' - z'.detach())`` and scales the gradient reaching ``z'`` by ``c = z / z'`` (a tensor
hook on our own ``z'``): its value is the layer's own output, so every later layer sees the true
activations, and its gradient is ``rho(W)^T c``. Under the epsilon rule (and on pools) ``z' = z``,
so ``z`` stays the output and only its gradient is scaled.
The backward of the target's score then carries ``R / a`` at every activation, so relevance is
``a * grad``: ``x * grad`` at the input, and ReLU's own derivative is the identity rule. Nothing
on the model is changed; the hooks go when the call ends, even on an error.

Modules: Conv2d, Linear (the chosen rule), MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d
(epsilon, as Captum; or ``"identity"`` per layer), ReLU, Dropout, Flatten, Identity (pass-through).
Any other torch.nn leaf module, and any leaf of the user's own with parameters or buffers, is
refused by name; a parameter-free module of the user's own passes with its plain gradient (the
identity rule for what only routes or reshapes values). A skip addition (ResNet) gets the ratio rule
``R_i = a_i / (a_1 + a_2) * R`` from the gradient itself; Captum's LRP runs ResNets without a
word and returns nonsense (relevance summing to -1.8e9 for a score of 0.06 on resnet18).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import get_layer, hooked, model_output
from .input_attribution import attribution_map, signed_image_method
from .registry import Call
from .targets import Target, TargetLike

__all__ = ["lrp", "LRPRule", "RULES", "SUPPORTED"]

RULES = ("epsilon", "gamma", "alpha-beta", "identity")
_WEIGHTED = (nn.Conv2d, nn.Linear)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm2d)
_PASS = (nn.ReLU, nn.Dropout, nn.Flatten, nn.Identity)
SUPPORTED = _WEIGHTED + _POOLS + _PASS
# Why 1e-9: the stabiliser Captum's gamma and alpha-beta rules divide with (PropagationRule's).
_STABILISER = 1e-9


@dataclasses.dataclass(frozen=True)
class LRPRule:
    """One layer's rule and its parameters (the values in ``lrp(..., rules={name: rule})``).

    Args:
        kind: ``"epsilon"``, ``"gamma"``, ``"alpha-beta"`` or ``"identity"``.
        epsilon: the epsilon rule's stabiliser.
        gamma: how much the gamma rule boosts positive weights.
        alpha: weight of the positive contributions (alpha-beta).
        beta: weight of the negative contributions (alpha-beta); ``alpha - beta`` must be 1.
    """

    kind: str = "epsilon"
    epsilon: float = 1e-9
    gamma: float = 0.25
    alpha: float = 1.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        key = self.kind.lower().replace("_", "-").replace(" ", "-") if isinstance(self.kind, str) else self.kind
        if key not in RULES:
            close = difflib.get_close_matches(str(key), RULES, n=2, cutoff=0.4)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown LRP rule {self.kind!r}.{hint} The rules are: {', '.join(RULES)}")
        object.__setattr__(self, "kind", key)
        for name in ("epsilon", "gamma", "alpha", "beta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                raise ValueError(f"LRP {name} must be a number >= 0, got {v!r}")
        if key == "alpha-beta" and abs(self.alpha - self.beta - 1) > 1e-9:
            raise ValueError(
                f"the alpha-beta rule needs alpha - beta = 1 (so relevance is conserved), got alpha={self.alpha}, "
                f"beta={self.beta}; e.g. alpha=1, beta=0 (the z+ rule) or alpha=2, beta=1"
            )


def _as_rule(value: str | LRPRule, base: LRPRule) -> LRPRule:
    if isinstance(value, LRPRule):
        return value
    if not isinstance(value, str):
        raise TypeError(f"an LRP rule is a rule name or an LRPRule, got {type(value).__name__}")
    return dataclasses.replace(base, kind=value)


def check_supported(model: nn.Module) -> None:
    """Refuse a model with a module LRP has no rule for, naming it and the supported types.

    Args:
        model: the network; every module without children must be of a supported type.
    """
    if isinstance(model, torch.jit.ScriptModule):
        # Why refuse: a scripted forward runs no Python hooks, so the rules would silently not apply.
        raise TypeError(
            "LRP needs Python hooks inside the forward, which a scripted model (torch.jit.script/trace) "
            "does not run. Explain the original nn.Module"
        )
    for name, m in model.named_modules():
        if any(True for _ in m.children()) or isinstance(m, SUPPORTED):
            continue
        own = not type(m).__module__.startswith("torch.")
        if own and next(m.parameters(recurse=False), None) is None and next(m.buffers(recurse=False), None) is None:
            # Why let it pass: a parameter-free module of the user's own (a gate, a reshape) gets its
            # plain gradient, which is the identity rule for what only routes or reshapes values.
            continue
        types = ", ".join(t.__name__ for t in SUPPORTED)
        raise TypeError(
            f"LRP has no rule for module {name!r} ({type(m).__name__}). Supported module types: {types}. "
            "Explain a network built from these, or use 'gradient-x-input' or 'deeplift', which work on any net"
        )


def _layer_rules(
    model: nn.Module, base: LRPRule, rules: Mapping[str, str | LRPRule] | None
) -> dict[nn.Module, LRPRule]:
    """The rule of every module that gets one: weighted layers ``base``, pools and BatchNorm epsilon
    (Captum's defaults), then ``rules`` by module name (a name covers the modules inside it; the
    longest name wins)."""
    pool_rule = LRPRule("epsilon", epsilon=_STABILISER)
    chosen: dict[nn.Module, LRPRule] = {}
    for m in model.modules():
        if isinstance(m, _WEIGHTED):
            chosen[m] = base
        elif isinstance(m, _POOLS):
            chosen[m] = pool_rule
    if rules is None:
        return chosen
    if not isinstance(rules, Mapping):
        raise TypeError("rules must map module names to rule names or LRPRule objects, e.g. {'features.0': 'gamma'}")
    for key in sorted(rules, key=len):
        rule = _as_rule(rules[key], base)
        top = get_layer(model, key)  # an unknown name lists close matches
        for m in top.modules():
            if m in chosen:
                chosen[m] = rule
    return chosen


def _functional(m: nn.Module, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``m``'s forward with other weights (the model's own are never touched)."""
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            a = F.pad(a, m._reversed_padding_repeated_twice, mode=m.padding_mode)
            return F.conv2d(a, weight, bias, m.stride, 0, m.dilation, m.groups)
        return F.conv2d(a, weight, bias, m.stride, m.padding, m.dilation, m.groups)
    return F.linear(a, weight, bias)


def _ratio(z: torch.Tensor, zp: torch.Tensor, eps: float) -> torch.Tensor:
    """``z / (zp + eps * sign(zp))`` with sign(0) = 1 (Captum's stabilised denominator), no graph."""
    zp = zp.detach()
    return z.detach() / (zp + torch.where(zp >= 0, eps, -eps))


def _relay(z: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``z`` in value; in gradient, each modified forward ``zp`` of ``parts`` gets the output's
    gradient times its ``c`` (a tensor hook on ``zp``, our own tensor: nothing of the model's)."""
    out = z.detach()
    for zp, c in parts:
        zp.register_hook(lambda g, c=c: g * c)
        out = out + (zp - zp.detach())
    return out


def _alpha_beta(m: nn.Conv2d | nn.Linear, a: torch.Tensor, z: torch.Tensor, rule: LRPRule) -> torch.Tensor:
    w: torch.Tensor = m.weight
    b: torch.Tensor | None = m.bias
    ap = a.clamp(min=0)
    # Why a check (a host sync, alpha-beta only): after a ReLU a >= 0 and half the convs are saved.
    an = a.clamp(max=0) if bool((a < 0).any()) else None
    with torch.no_grad():  # constants: no weight gradient is ever wanted
        wp = w.clamp(min=0)
        wn = w.clamp(max=0) if an is not None or rule.beta else wp
    pos = _functional(m, ap, wp, b.detach().clamp(min=0) if b is not None else None)
    if an is not None:
        # Why both signs of a: (a w)^+ is a^+ w^+ plus a^- w^-, e.g. at a normalised input image.
        pos = pos + _functional(m, an, wn, None)
    parts = [(pos, rule.alpha * _ratio(z, pos, _STABILISER))]
    if rule.beta:
        neg = _functional(m, ap, wn, b.detach().clamp(max=0) if b is not None else None)
        if an is not None:
            neg = neg + _functional(m, an, wp, None)
        parts.append((neg, -rule.beta * _ratio(z, neg, _STABILISER)))
    return _relay(z, parts)


def _epsilon(z: torch.Tensor, eps: float) -> None:
    """The epsilon rule on ``z`` itself: its gradient scaled by ``z / (z + eps sign(z))``.

    Why a tensor hook, not a new output: this is the rule of every pool and of the default, and
    four passes over the activations (instead of nine) cut LRP's time on VGG-16 by a third. The
    hook belongs to ``z``'s present version, so an in-place ReLU after the layer leaves it alone.
    """
    if not z.requires_grad:
        return
    a = z.detach().abs()
    c = a.div_(a + eps) if eps > 0 else (a > 0).to(a.dtype)
    z.register_hook(lambda g: g * c)


def _relayed(m: nn.Module, a: torch.Tensor, z: torch.Tensor, rule: LRPRule) -> torch.Tensor | None:
    """The layer output ``z`` (same value) whose backward is ``rule``'s (see the module docstring);
    None where the rule is applied to ``z`` in place (the epsilon rule)."""
    if rule.kind == "epsilon":
        _epsilon(z, rule.epsilon)
        return None
    if rule.kind == "identity":
        if a.shape != z.shape:
            raise ValueError(
                f"the identity rule needs a layer whose output has its input's shape; {type(m).__name__} maps "
                f"{tuple(a.shape)} to {tuple(z.shape)}. Give it 'epsilon'"
            )
        # Why a view: a hook on the input tensor itself would also act on its other uses (a skip).
        same = a.view_as(a)
        return _relay(z, [(same, _ratio(z, a, _STABILISER))])
    if not isinstance(m, _WEIGHTED):
        # Why epsilon: pools and BatchNorm have no weights of a sign to split; Captum's gamma and
        # alpha-beta rules change nothing on them either (they keep 1e-9 stabilisers).
        _epsilon(z, _STABILISER)
        return None
    if rule.kind == "gamma":
        w: torch.Tensor = m.weight
        # Why one conv with W + gamma W^+ (Captum keeps the bias): the backward then runs one conv.
        # Why in place on one new tensor, without grad: VGG's first Linear alone has 103 M weights.
        with torch.no_grad():
            wg = w.clamp(min=0).mul_(rule.gamma).add_(w)
        zp = _functional(m, a, wg, m.bias.detach() if m.bias is not None else None)
        return _relay(z, [(zp, _ratio(z, zp, _STABILISER))])
    return _alpha_beta(m, a, z, rule)


def relevance(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike | Target = None,
    rule: str | LRPRule = "epsilon",
    rules: Mapping[str, str | LRPRule] | None = None,
) -> torch.Tensor:
    """LRP relevance of every input value (B, C, H, W) for the target's score.

    Args:
        model: a network of :data:`SUPPORTED` modules (in eval mode for BatchNorm and Dropout).
        x: the batch (B, C, H, W).
        target: None (predicted class), an int, one int per sample, or a callable(output) -> (B,).
        rule: the rule of every Conv2d and Linear layer (a name or an :class:`LRPRule`).
        rules: per-layer rules by module name, overriding the defaults.

    Returns:
        The relevance; per sample it sums to the score where the rules conserve it.
    """
    check_supported(model)
    base = _as_rule(rule, LRPRule())
    chosen = _layer_rules(model, base, rules)
    t = target if isinstance(target, Target) else Target(target, x.shape[0])
    xg = x.detach().requires_grad_(True)

    def make(r: LRPRule) -> Callable[..., Any]:
        def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
            return _relayed(m, args[0], out, r)

        return hook

    with torch.enable_grad(), hooked() as h:
        for m, r in chosen.items():
            h.forward(m, make(r))
        out = model_output(model(xg))
        scores = t.scores(out)
        (g,) = torch.autograd.grad(scores.sum(), xg)
    return g * x.detach()


@signed_image_method("lrp")
def lrp(
    c: Call,
    *,
    raw: bool = False,
    rule: str = "epsilon",
    epsilon: float = 1e-9,
    gamma: float = 0.25,
    alpha: float = 1.0,
    beta: float = 0.0,
    rules: Mapping[str, str | LRPRule] | None = None,
) -> torch.Tensor:
    """LRP relevance summed over channels (B, H, W); ``raw=True`` gives it per channel (B, C, H, W).

    Called as ``lrp(model, x, target=None, layer=None, *, progress=None, ...)``: ``model`` a network
    of Conv2d, Linear, ReLU, pooling, BatchNorm2d, Dropout, Flatten modules; ``target`` None
    (predicted class), an int, one int per sample, or a callable(output) -> (B,); ``layer`` and
    ``progress`` ignored (LRP explains the input in one forward and one backward).

    Args:
        c: the checked call.
        raw: return the relevance per channel.
        rule: the rule of every Conv2d and Linear layer: "epsilon", "gamma" or "alpha-beta".
        epsilon: the epsilon rule's stabiliser (Captum's default 1e-9).
        gamma: the gamma rule's boost of positive weights (Captum's default 0.25).
        alpha: alpha-beta's weight of positive contributions.
        beta: alpha-beta's weight of negative ones (alpha - beta = 1).
        rules: per-layer rules by module name, e.g. ``{"features.0": "gamma", "classifier":
            LRPRule("epsilon", epsilon=0.25)}``; a rule name takes the parameters above.

    Returns:
        The relevance map, on x's device.
    """
    base = LRPRule(rule, epsilon=epsilon, gamma=gamma, alpha=alpha, beta=beta)
    return attribution_map(relevance(c.model, c.x, c.target, base, rules), raw)
