"""Property-based fuzzing of ``GainTrainer`` (hypothesis): over construction arguments (images,
labels, masks, knobs, probes, eval sets, layers, devices) and tiny fits (1-2 steps on 4 tiny
images, a tiny model with and without BatchNorm), every call either trains (finite losses, finite
weights) or raises a ValueError or TypeError with a message. Never NaN weights, never a foreign
exception; a refused trainer leaves the model exactly as it was, and no call leaves a hook on it.

Fixed example count and derandomised, so CI runs the same examples each time (about 15 s on a shared 2-core machine).
Run with ``-s`` to see the counts (examples tried, results and errors by kind).
"""

from __future__ import annotations

import collections
import math
import random

import pytest
import torch
from torch import nn

from guidewidgets.gain import GainConfig, GainTrainer
from tests.helpers import hook_count

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.fuzz_strategies import counts_reporter, fuzz_settings, snapshot  # noqa: E402

EXAMPLES = 400
COUNTS: collections.Counter[str] = collections.Counter()
WILD_SEEN: set[tuple[str, int]] = set()  # (argument, index of its odd value) tried
N, SIZE, K = 4, 12, 3
NAN, INF = float("nan"), float("inf")


class Net(nn.Module):
    """Three outputs; BatchNorm optional (its statistics must never turn NaN either)."""

    def __init__(self, bn: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 6, 3, stride=2, padding=1)]
        layers += [nn.BatchNorm2d(6)] if bn else []
        self.features = nn.Sequential(*layers, nn.ReLU(inplace=True), nn.Conv2d(6, 6, 3, padding=1))
        self.fc = nn.Linear(6, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def _images(seed: int) -> torch.Tensor:
    return torch.rand(N, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _with_one(x: torch.Tensor, value: float, at: int) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[at % x.numel()] = value
    return x


def _wild_images(x: torch.Tensor, at: int) -> list[object]:
    return [
        (x * 255).to(torch.uint8),  # fine: uint8 is read as 0-255
        x.double(),  # fine
        (x * 255).long(),
        x[0],
        x[:, :1],
        torch.cat([x, x[:, :1]], 1),
        x[:0],
        x[..., :0],
        x.tolist(),
        _with_one(x, NAN, at),
        _with_one(x, INF, at),
    ]


def _config(rng: random.Random, wild: bool) -> object:
    if not wild and rng.random() < 0.5:
        return None
    cfg = GainConfig(
        alpha=rng.choice([0.0, 0.5, 1.0]),
        omega=rng.choice([1.0, 10.0]),
        sigma=rng.choice([0.0, 0.5, 1.0]),
        omega_e=rng.choice([0.0, 10.0]),
        score=rng.choice(["auto", "softmax", "sigmoid"]),
        masked_bn=rng.choice(["batch", "eval"]),
    )
    if not wild:
        return cfg
    if rng.random() < 0.2:
        return rng.choice([{"alpha": 1.0}, "paper"])
    # changed after it was made: the trainer must check it again
    name = rng.choice(["alpha", "omega", "sigma", "omega_e", "score", "masked_bn"])
    setattr(cfg, name, rng.choice([NAN, INF, -INF, -1.0, 0.0, 2.0, True, "x", None]))
    return cfg


ARGS = [
    "images",
    "labels",
    "masks",
    "has_mask",
    "config",
    "lr",
    "weight_decay",
    "batch_size",
    "mask_batch",
    "epochs",
    "seed",
    "probes",
    "probe_labels",
    "probe_every",
    "eval_sets",
    "eval_every",
    "mine",
    "device",
    "layer",
    "steps",
]


@st.composite
def trainings(draw):
    # Why one seeded generator (not a hypothesis draw per choice): derandomised hypothesis mutates
    # earlier examples, so a few hundred of them repeated a few odd values; a fresh seed each spreads them.
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    # Why a chosen few odd arguments (not each one odd with some chance): with 20 arguments the
    # first odd one would nearly always be refused before the rest were looked at.
    wild = {rng.choice(ARGS) for _ in range(rng.choice([0, 0, 1, 1, 1, 2]))}

    def pick(name: str, normal: list[object], odd: list[object]) -> object:
        if name not in wild:
            return rng.choice(normal)
        k = rng.randrange(len(odd))
        WILD_SEEN.add((name, k))
        return odd[k]

    x = _images(rng.randrange(100))
    y = torch.arange(N) % K
    hot = torch.eye(K)[y]
    images = pick("images", [x], _wild_images(x, rng.randrange(10**6)))
    labels = pick(
        "labels",
        [y, y.tolist(), tuple(y.tolist()), hot, hot.tolist(), hot.bool()],
        [y.float(), y + K, y - 1, y[:3], y.bool(), ["a"] * N, torch.eye(K + 1)[y], hot * 2, hot * NAN, [1.5] * N, "0"],
    )
    multi = (isinstance(labels, torch.Tensor) and labels.dim() == 2) or (
        isinstance(labels, list) and isinstance(labels[0], list)
    )
    m = torch.rand((N, K, SIZE, SIZE) if multi else (N, SIZE, SIZE), generator=torch.Generator().manual_seed(1))
    masks = pick(
        "masks",
        [None, None, m > 0.5, (m > 0.5).float(), m],
        [(m > 0.5).float() * 255, m * NAN, m - 1, m[..., :5], (m > 0.5).tolist()],
    )
    flags = torch.tensor([True, False, True, False])
    has = [None] if masks is None else [None, flags, flags.long()]
    has_mask = pick("has_mask", has, [torch.zeros(N, dtype=torch.bool), flags.float(), flags[:3], [1, 0, 1, 0]])
    kw = {
        "masks": masks,
        "has_mask": has_mask,
        "config": _config(rng, "config" in wild),
        "lr": pick("lr", [1e-3, 0.1, 1.0], [0.0, -1e-3, NAN, INF, 2.0, "x", True]),
        "weight_decay": pick("weight_decay", [0.0, 0.01], [-1.0, NAN, 1e40]),
        "batch_size": pick("batch_size", [1, 2, 4, 9], [0, 2.5, 2.0, True, "2"]),
        "mask_batch": pick("mask_batch", [1, 2, 4] if masks is not None else [0, 1], [-1, 1.5, False, 0]),
        "epochs": pick("epochs", [1, 2], [0, -1, 1.0, None]),
        "seed": pick("seed", [0, 7], [-1, 1.5]),
        "probes": pick("probes", [None, x[:2]], [x[:2, :1], x[:2] * NAN, x[0], x[:0], "probes"]),
        "probe_labels": pick("probe_labels", [None], [[0, 1], torch.tensor([0, 1]), [5, 0], [0]]),
        "probe_every": pick("probe_every", [1, 2], [0, 1.5]),
        "eval_sets": pick(
            "eval_sets",
            [None, {"all": (x, y)}, {"all": (x, y.tolist())}],
            [{"hot": (x, hot)}, {"grey": (x[:, :1], y)}, {"bad": x}, [(x, y)], {"e": (x[:0], y[:0])}],
        ),
        "eval_every": pick("eval_every", [None, 1], [0, 1.5]),
        "mine": pick("mine", [None, True, False], [1, "yes"]),
        "device": pick("device", [None, "cpu"], ["gpu", 3.5, "cuda:99"]),
    }
    if kw["probe_labels"] is not None and kw["probes"] is None and rng.random() < 0.5:
        kw["probes"] = x[:2]  # probe labels with and without their probes
    kw = {k: v for k, v in kw.items() if k in wild or rng.random() < 0.5}  # left out: the default
    layer = pick("layer", ["features", "features.0"], ["fc", "nope", "features.2", 3])
    steps = pick("steps", [None, 1, 2], [0, 1.5, -1, True])
    return rng.random() < 0.5, rng.random() < 0.5, images, labels, layer, kw, steps, sorted(wild)


report_counts = counts_reporter(COUNTS, "gain", lambda: f"; {len(WILD_SEEN)} distinct odd values tried")


def _finite(model: nn.Module) -> bool:
    return all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


@fuzz_settings(EXAMPLES)
@given(trainings())
def test_gain_trainer_trains_or_refuses_clearly(case):
    bn, training, images, labels, layer, kw, steps, _wild = case
    torch.manual_seed(0)
    model = Net(bn).train(training)
    before = snapshot(model)
    COUNTS["examples"] += 1
    stage = "built"
    try:
        trainer = GainTrainer(model, layer, images, labels, **kw)
        stage = "fit"
        trainer.fit(steps=steps)
    except (ValueError, TypeError) as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        COUNTS[f"refused when {stage}: {type(e).__name__}"] += 1
        if stage == "built":
            after = snapshot(model)
            assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]), "a refused trainer changed weights"
            assert before[1] == after[1], "a refused trainer changed a training flag"
        else:
            assert "diverged" in str(e) or "steps" in str(e), f"refused only at fit(): {e}"
    else:
        losses = [h["losses"] for h in trainer.history]
        assert losses and all(math.isfinite(v) for d in losses for v in d.values()), "non-finite loss recorded"
        assert model.training == training, "fit() did not restore the training flag"
        COUNTS["trained"] += 1
    finally:
        assert _finite(model), "NaN or inf weights or statistics"
        assert hook_count(model) == 0, "hooks left on the model"


def test_counts_are_plausible():
    """Runs after the fuzz test (file order): most calls were tried, and both outcomes occur."""
    if COUNTS["examples"] == 0:
        pytest.skip("run together with the fuzz test")
    assert COUNTS["trained"] >= COUNTS["examples"] // 10
    assert sum(v for k, v in COUNTS.items() if k.startswith("refused")) >= COUNTS["examples"] // 10
