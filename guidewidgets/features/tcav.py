"""TCAV: Testing with Concept Activation Vectors (Kim et al., ICML 2018), on the embedded world.

A **concept activation vector** (CAV) is the normal of a linear boundary that separates a layer's
activations for images of a concept (water, a colour, a shape) from those for random images; it
points towards the concept. The **conceptual sensitivity** of class ``k`` to the concept at an
image is the directional derivative of the class logit along the CAV,

    S(x) = grad_{f_l(x)} h_k(f_l(x)) . v_C,

and the **TCAV score** is the fraction of a class's images with S(x) > 0. A score from one CAV
means little on its own (a random direction scores too), so :func:`tcav` trains several CAVs of
the concept against different random sets and several random-vs-random CAVs, and asks with a
two-sided t-test whether the concept's scores differ from the random ones (the paper's test).
The concept's CAVs share their positive set, so their scores are correlated: on small sets
(tens of images) a random concept passes the test more often than ``alpha`` says; use more and
larger random sets when the answer matters.

Concept images come from :class:`~guidewidgets.zoo.ShapeScenes`' own generator
(:func:`concept_images`): a background without any object (``"water"``, ``"grass"``, ...), a
colour patch on a textured background (``"red"``, ``"yellow"``, ...), scenes of one shape
(``"circle"``, ``"star"``, ...) or random scenes (``"random"``).

>>> from guidewidgets import zoo
>>> from guidewidgets.features import tcav
>>> model = zoo.load("shapes-classifier")
>>> water = tcav.concept_images("water", 24, seed=1)
>>> randoms = [tcav.concept_images("random", 24, seed=10 + i) for i in range(4)]
>>> circles = tcav.concept_images("circle", 24, seed=2)
>>> result = tcav.tcav(model, "features", water, randoms, circles, target="circle")
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import hooks
from ..explain.targets import check_input
from ..zoo import scenes as _scenes
from ._common import locked_eval, model_device

__all__ = [
    "COLOURS",
    "CONCEPTS",
    "Cav",
    "TcavResult",
    "activations",
    "cav",
    "concept_images",
    "directional_derivatives",
    "gradients",
    "random_sets",
    "tcav",
    "tcav_score",
]

#: Colour concepts: the scene generator's base colour of each class, named.
COLOURS: dict[str, str] = {
    "red": "circle",
    "orange": "ellipse",
    "blue": "square",
    "green": "triangle",
    "yellow": "star",
    "purple": "cross",
}
#: Every concept :func:`concept_images` can make.
CONCEPTS: list[str] = [*_scenes.BACKGROUNDS, *COLOURS, *_scenes.CLASSES, "random"]


def _generator(seed: int, salt: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, salt]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _finish(image: torch.Tensor, g: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """The scene generator's pixel noise and 8-bit rounding, so concepts look like scenes."""
    sigma = torch.rand((len(image), 1, 1, 1), generator=g) * 0.8 + 0.2
    image = image + sigma * noise * _scenes._noise(g, tuple(image.shape))
    return (image.clamp(0, 1) * 255 + 0.5).floor() / 255


def _colour_patches(colour: str, n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """A square patch of one base colour (jittered as objects are) on random backgrounds."""
    base = _scenes._COLOURS[_scenes.CLASSES.index(COLOURS[colour])]
    image = _scenes._backgrounds(torch.randint(0, len(_scenes.BACKGROUNDS), (n,), generator=g), size, g)
    rgb = base * (0.75 + 0.35 * torch.rand((n, 1), generator=g)) + 0.06 * torch.randn((n, 3), generator=g)
    side = (torch.rand(n, generator=g) * 0.3 + 0.3) * size
    y0 = torch.rand(n, generator=g) * (size - side)
    x0 = torch.rand(n, generator=g) * (size - side)
    ar = torch.arange(size, dtype=torch.float32)
    rows = (ar[None] >= y0[:, None]) & (ar[None] < (y0 + side)[:, None])
    cols = (ar[None] >= x0[:, None]) & (ar[None] < (x0 + side)[:, None])
    inside = (rows[:, :, None] & cols[:, None, :])[:, None]
    return torch.where(inside, rgb[:, :, None, None].clamp(0, 1), image)


def concept_images(concept: str, n: int, seed: int = 0, size: int = 96) -> torch.Tensor:
    """``n`` images of a concept, (n, 3, size, size) float in [0, 1], a pure function of the seed.

    Args:
        concept: a background without objects (``"grass"``, ``"gravel"``, ``"brick"``,
            ``"water"``, ``"noise"``), a colour patch (``"red"``, ``"orange"``, ``"blue"``,
            ``"green"``, ``"yellow"``, ``"purple"``: the scenes' base colours), scenes of one shape
            (a class name: ``"circle"``, ``"star"``, ...) or ``"random"`` (any scene).
        n: number of images (at least 1).
        seed: images depend only on (concept, n, seed, size).
        size: image side in pixels (96 to 512, as ShapeScenes).

    Returns:
        The images.
    """
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; choose one of {CONCEPTS}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (number of images), got {n!r}")
    if concept == "random" or concept in _scenes.CLASSES:
        want = None if concept == "random" else _scenes.CLASSES.index(concept)
        found: list[torch.Tensor] = []
        scenes = _scenes.ShapeScenes(64 * (n // 8 + 8) if want is not None else n, seed=seed, size=size)
        stop = len(scenes)
        for start in range(0, stop, _scenes.CHUNK):
            b = scenes.batch(start, min(start + _scenes.CHUNK, stop))
            keep = b["images"] if want is None else b["images"][b["labels"] == want]
            found.append(keep)
            if sum(len(f) for f in found) >= n:
                break
        return torch.cat(found)[:n].float() / 255
    g = _generator(seed, CONCEPTS.index(concept))
    if concept in _scenes.BACKGROUNDS:
        kind = torch.full((n,), _scenes.BACKGROUNDS.index(concept))
        image = _scenes._backgrounds(kind, size, g)
    else:
        image = _colour_patches(concept, n, size, g)
    return _finish(image, g)


def random_sets(k: int, n: int, seed: int = 0, size: int = 96) -> list[torch.Tensor]:
    """``k`` disjoint sets of ``n`` random scenes each: the counter-examples of :func:`tcav`.

    Args:
        k: number of sets (at least 2 for the significance test).
        n: scenes per set.
        seed: the sets are scenes ``0 .. k n - 1`` of ``ShapeScenes(k * n, seed)``, split in order.
        size: image side in pixels.

    Returns:
        A list of ``k`` (n, 3, size, size) float tensors in [0, 1].
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int (number of random sets), got {k!r}")
    # Why one scene set split in k: rendering is per chunk of 64 scenes, so k small sets would each pay a chunk.
    return list(concept_images("random", k * n, seed=seed, size=size).split(n))


def _check_images(model: nn.Module, x: object, what: str) -> torch.Tensor:
    """``x`` as the float (N, C, H, W) batch the model takes (uint8 scaled to [0, 1]), else the
    explain engine's refusal (shape, channels, dtype, NaN) naming which argument it was."""
    if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
        x = x.float() / 255
    try:
        return check_input(model, x)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{what}: {e}") from None


def _target(model: nn.Module, target: int | str, classes: int) -> int:
    names = list(getattr(model, "classes", []) or [])
    if isinstance(target, str):
        if target not in names:
            raise ValueError(f"unknown class {target!r}; choose one of {names} or give a class index")
        return names.index(target)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= int(target) < classes:
        raise ValueError(f"target must be a class index in 0..{classes - 1} (or a class name), got {target!r}")
    return int(target)


def activations(model: nn.Module, layer: str | nn.Module, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """``layer``'s activations for ``images``, flattened to (N, D) float on the CPU.

    Args:
        model: the network (left unchanged; run in eval mode).
        layer: a layer name (an unknown name lists close matches) or sub-module.
        images: (N, C, H, W) float in [0, 1] or uint8.
        batch: images per forward.

    Returns:
        The activations, one row per image (the layer's (C, h, w) map flattened).
    """
    x = _check_images(model, images, "images")
    hooks.get_layer(model, layer)
    rows = []
    device = model_device(model)
    with locked_eval(model), torch.no_grad():
        for start in range(0, len(x), batch):
            with hooks.capture(model, layer, cut=False) as cap:
                model(x[start : start + batch].to(device))
            if cap.activations is None:
                raise ValueError(f"layer {layer!r} was not run by the model's forward; pick one that is")
            rows.append(cap.activations.flatten(1).float().cpu())
    return torch.cat(rows)


@dataclass
class Cav:
    """A concept activation vector.

    Attributes:
        vector: (D,) unit vector in the layer's flattened activation space, pointing to the concept.
        accuracy: the linear classifier's accuracy on held-out activations (1.0 = separable).
        layer: the layer it lives in.
        concept: a label for printing.
    """

    vector: torch.Tensor
    accuracy: float
    layer: str
    concept: str = "concept"


def _split(n: int, holdout: float, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = g.permutation(n)
    k = min(n - 1, max(1, round(n * holdout)))
    return order[k:], order[:k]


def _fit(pos: torch.Tensor, neg: torch.Tensor, seed: int, holdout: float, c: float) -> tuple[np.ndarray, float]:
    """Logistic regression concept (1) vs random (0); returns (coef, held-out accuracy)."""
    from sklearn.linear_model import LogisticRegression

    g = np.random.default_rng(seed)
    (tp, hp), (tn, hn) = _split(len(pos), holdout, g), _split(len(neg), holdout, g)
    a, b = pos.numpy().astype(np.float64), neg.numpy().astype(np.float64)
    xs, ys = np.concatenate([a[tp], b[tn]]), np.r_[np.ones(len(tp)), np.zeros(len(tn))]
    # Why a common scale: activations of deep layers are large, and lbfgs converges on unit-ish features.
    scale = float(np.abs(xs).max()) or 1.0
    clf = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(xs / scale, ys)
    held = np.concatenate([a[hp], b[hn]]) / scale
    accuracy = float((clf.predict(held) == np.r_[np.ones(len(hp)), np.zeros(len(hn))]).mean())
    return clf.coef_[0], accuracy


def _check_sets(concept: torch.Tensor, random: torch.Tensor) -> None:
    for what, x in (("concept_images", concept), ("random_images", random)):
        if len(x) < 2:
            raise ValueError(
                f"{what} has {len(x)} image(s): a CAV separates two classes of images and needs at least "
                "2 of each (20-50 per set is usual)"
            )
    if concept.shape[1:] != random.shape[1:]:
        raise ValueError(
            f"concept images {tuple(concept.shape[1:])} and random images {tuple(random.shape[1:])} differ in "
            "shape; give both sets the same (C, H, W)"
        )
    if concept.shape == random.shape and torch.equal(concept, random):
        raise ValueError(
            "the concept set and the random set are the same images, so there is only one class to "
            "separate; give random images that are not the concept's"
        )


def _cav_from(pos: torch.Tensor, neg: torch.Tensor, layer: str, concept: str, seed: int, c: float) -> Cav:
    if pos.shape == neg.shape and torch.equal(pos, neg):
        raise ValueError("the two sets have identical activations at this layer: there is only one class")
    coef, accuracy = _fit(pos, neg, seed, 0.25, c)
    v = torch.from_numpy(coef).float()
    norm = float(v.norm())
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"the classifier found no direction at layer {layer!r}: the two sets look the same there")
    return Cav(v / norm, accuracy, layer, concept)


def cav(
    model: nn.Module,
    layer: str,
    concept_images: torch.Tensor,
    random_images: torch.Tensor,
    seed: int = 0,
    c: float = 1.0,
    concept: str = "concept",
) -> Cav:
    """Train a CAV: logistic regression on ``layer``'s activations, concept vs random images.

    A quarter of each set (at least one image) is held out to report the accuracy; the vector is
    the normal of the boundary learnt on the rest, normalised to unit length.

    Args:
        model: the network (left unchanged).
        layer: a layer name; an unknown one lists close matches.
        concept_images: (N, C, H, W) images of the concept (at least 2).
        random_images: (M, C, H, W) counter-examples (at least 2).
        seed: fixes the held-out split and the solver.
        c: inverse L2 regularisation strength of the logistic regression.
        concept: a label for printing.

    Returns:
        The CAV with its held-out accuracy.
    """
    pos, neg = (
        _check_images(model, concept_images, "concept_images"),
        _check_images(model, random_images, "random_images"),
    )
    _check_sets(pos, neg)
    return _cav_from(activations(model, layer, pos), activations(model, layer, neg), str(layer), concept, seed, c)


def gradients(model: nn.Module, layer: str, images: torch.Tensor, target: int | str, batch: int = 64) -> torch.Tensor:
    """Gradient of the target logit with respect to ``layer``'s activation, (N, D) on the CPU.

    Args:
        model: the network (left unchanged; run in eval mode).
        layer: a layer name; an unknown one lists close matches.
        images: (N, C, H, W) images.
        target: class index or name.
        batch: images per forward.

    Returns:
        One flattened gradient per image (the same layout as :func:`activations`).
    """
    x = _check_images(model, images, "images")
    hooks.get_layer(model, layer)
    device = model_device(model)
    out = []
    with locked_eval(model):
        for start in range(0, len(x), batch):
            with hooks.capture(model, layer, cut=True) as cap:
                logits = hooks.model_output(model(x[start : start + batch].to(device)))
                k = _target(model, target, logits.shape[1])
                out.append(cap.grad(logits[:, k]).flatten(1).detach().float().cpu())
    return torch.cat(out)


def _dot(grads: torch.Tensor, vector: Cav | torch.Tensor, layer: object) -> torch.Tensor:
    v = (vector.vector if isinstance(vector, Cav) else vector).flatten().cpu()
    if grads.shape[1] != v.numel():
        raise ValueError(
            f"the CAV has {v.numel()} entries but layer {layer!r} has {grads.shape[1]} activations per "
            "image: use the layer (and image size) the CAV was trained on"
        )
    return (grads.double() @ v.double()).float()


def directional_derivatives(
    model: nn.Module, layer: str, vector: Cav | torch.Tensor, images: torch.Tensor, target: int | str
) -> torch.Tensor:
    """S(x) = grad of the target logit with respect to ``layer``'s activation, dotted with the CAV.

    Args:
        model: the network (left unchanged).
        layer: the CAV's layer.
        vector: a :class:`Cav` or a (D,) vector in the layer's flattened activation space.
        images: (N, C, H, W) images.
        target: class index or name.

    Returns:
        (N,) float tensor on the CPU.
    """
    return _dot(gradients(model, layer, images, target), vector, layer)


def tcav_score(
    model: nn.Module, layer: str, vector: Cav | torch.Tensor, images: torch.Tensor, target: int | str
) -> float:
    """The fraction of ``images`` whose target logit rises along the CAV (directional derivative > 0).

    Args:
        model: the network (left unchanged).
        layer: the CAV's layer.
        vector: a :class:`Cav` or a (D,) vector.
        images: (N, C, H, W) images, usually of the target class.
        target: class index or name.

    Returns:
        The TCAV score in [0, 1].
    """
    return float((directional_derivatives(model, layer, vector, images, target) > 0).float().mean())


@dataclass
class TcavResult:
    """Scores of the concept's CAVs vs random-vs-random CAVs and the two-sided t-test between them.

    Attributes:
        concept, target, layer: what was tested.
        scores: TCAV score of each concept-vs-random-set CAV.
        random_scores: TCAV score of each random-vs-random CAV.
        accuracies: held-out accuracy of each concept CAV.
        random_accuracies: the same for the random CAVs.
        p_value: two-sided t-test (``scipy.stats.ttest_ind``) of scores vs random_scores.
        alpha: significance level; ``significant`` is ``p_value < alpha``.
    """

    concept: str
    target: str
    layer: str
    scores: list[float]
    random_scores: list[float]
    accuracies: list[float]
    random_accuracies: list[float]
    p_value: float
    alpha: float = 0.05
    significant: bool = field(init=False)

    def __post_init__(self) -> None:
        self.significant = bool(self.p_value < self.alpha)

    mean = property(lambda self: float(np.mean(self.scores)), doc="Mean TCAV score of the concept's CAVs.")
    sd = property(lambda self: float(np.std(self.scores, ddof=1)), doc="Their standard deviation (ddof 1).")
    random_mean = property(lambda self: float(np.mean(self.random_scores)), doc="Mean score of the random CAVs.")
    random_sd = property(lambda self: float(np.std(self.random_scores, ddof=1)), doc="Their sd (ddof 1).")

    def __str__(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (
            f"TCAV({self.target!r} <- {self.concept!r} at {self.layer}): {self.mean:.2f} +- {self.sd:.2f} vs random "
            f"{self.random_mean:.2f} +- {self.random_sd:.2f}, p = {self.p_value:.3g} ({verdict} at {self.alpha}); "
            f"CAV accuracy {np.mean(self.accuracies):.2f}"
        )


def _p_value(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy import stats

    if np.std(a) == 0 and np.std(b) == 0:
        # Why: the t statistic is undefined without spread; equal constants are no evidence, different ones are.
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    with warnings.catch_warnings():
        # Why: one constant side (every CAV scores 1.0) is a valid case; scipy only warns about precision.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b).pvalue)


def tcav(
    model: nn.Module,
    layer: str,
    concept_images: torch.Tensor,
    random_sets: Sequence[torch.Tensor],
    images: torch.Tensor,
    target: int | str,
    alpha: float = 0.05,
    seed: int = 0,
    concept: str = "concept",
) -> TcavResult:
    """Kim et al.'s significance test: CAVs of the concept against each random set, and
    random-vs-random CAVs (set i against set i + 1, cyclically), scored on ``images``; a two-sided
    t-test of the two lists of scores.

    Args:
        model: the network (left unchanged).
        layer: a layer name; an unknown one lists close matches.
        concept_images: (N, C, H, W) images of the concept (at least 2).
        random_sets: at least 2 tensors of random images (at least 2 each; the paper uses many).
        images: images of the class to test (usually of ``target``).
        target: class index or name.
        alpha: significance level of the test.
        seed: fixes the CAVs' held-out splits.
        concept: a label for printing.

    Returns:
        A :class:`TcavResult`.
    """
    if isinstance(random_sets, torch.Tensor) or len(random_sets) < 2:
        raise ValueError(
            "random_sets must be a list of at least 2 random image sets (e.g. "
            "[concept_images('random', 30, seed=s) for s in range(5)]): the test compares CAVs across them"
        )
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    pos = _check_images(model, concept_images, "concept_images")
    sets = [_check_images(model, r, f"random_sets[{i}]") for i, r in enumerate(random_sets)]
    for r in sets:
        _check_sets(pos, r)
    x = _check_images(model, images, "images")
    name = str(layer) if isinstance(layer, str) else type(layer).__name__
    acts = [activations(model, layer, a) for a in (pos, *sets)]
    concept_cavs = [_cav_from(acts[0], r, name, concept, seed + i, 1.0) for i, r in enumerate(acts[1:])]
    n = len(sets)
    random_cavs = [_cav_from(acts[1 + i], acts[1 + (i + 1) % n], name, "random", seed + i, 1.0) for i in range(n)]
    grads = gradients(model, layer, x, target)  # Why once: the gradient does not depend on the CAV
    scores = [float((_dot(grads, v, name) > 0).float().mean()) for v in concept_cavs]
    random_scores = [float((_dot(grads, v, name) > 0).float().mean()) for v in random_cavs]
    names = list(getattr(model, "classes", []) or [])
    label = target if isinstance(target, str) else (names[int(target)] if int(target) < len(names) else str(target))
    return TcavResult(
        concept=concept,
        target=str(label),
        layer=name,
        scores=scores,
        random_scores=random_scores,
        accuracies=[v.accuracy for v in concept_cavs],
        random_accuracies=[v.accuracy for v in random_cavs],
        p_value=_p_value(scores, random_scores),
        alpha=float(alpha),
    )
