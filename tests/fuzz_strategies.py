"""Shared strategies and the runner of the property-based fuzz of ``metrics``, ``localize`` and
``features`` (tests/metrics/test_fuzz.py, tests/features/test_fuzz.py): tiny models that must be
left exactly as they were, values that are mostly good and sometimes wild, and one runner that
calls a drawn case and checks that it returns a good result or refuses with a clear message.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from tests.helpers import hook_count

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NAN, INF = float("nan"), float("inf")
# Values that are wrong where a number is expected, each for its own reason.
WILD_NUMBERS = [NAN, INF, -INF, -1, 0, True, "1", None, [1]]
# (No huge count: a million steps or patches is a slow request, not a wrong one.)
# Messages of Python, numpy or torch internals: a ValueError that says one of these names no fix.
FOREIGN = re.compile(
    r"out of bounds|Dimension out of range|could not convert|range\(\) arg|values to unpack|zero-size array"
    r"|must match the size|Expected reduction dim|object is not (iterable|subscriptable)|unsupported operand"
)
WILD_INTS = [0, -1, 2.5, True, NAN, "2", None]


class Net(nn.Module):
    """A tiny classifier: conv-BN-ReLU(inplace)-conv, global average pool, 3 classes."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1)
        )
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def build_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    models: dict[str, nn.Module] = {"rgb": Net(3), "grey": Net(1).eval(), "seg": nn.Conv2d(3, 2, 1).eval()}
    models["rgb"].train()  # one model in training mode: it must stay so, with unchanged statistics
    models["grey"].features[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    return models


MODELS = build_models()


def snapshot(model: nn.Module) -> tuple:
    """What a call must leave as it was: weights and statistics, training flags, requires_grad and
    ``.grad`` of every parameter, and the hooks on its modules (every kind)."""
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(n, m.training) for n, m in model.named_modules()],
        [(n, p.requires_grad, p.grad is None) for n, p in model.named_parameters()],
        hook_count(model),
    )


def assert_unchanged(before: tuple, after: tuple) -> None:
    """``after`` (a :func:`snapshot`) equals ``before``, no hook is left, and the call left no global
    state behind (grad mode on, no torch function mode pushed)."""
    sd0, train0, params0, hooks0 = before
    sd1, train1, params1, hooks1 = after
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0), "state_dict changed"
    assert train0 == train1, "training flags changed"
    assert params0 == params1, "requires_grad flags changed or .grad written"
    assert hooks1 == hooks0 == 0, "hooks left on the model"
    assert torch.is_grad_enabled(), "grad mode left off"
    assert torch._C._len_torch_function_stack() == 0, "a torch function mode left pushed"


# --- values, mostly good, sometimes wild ---------------------------------------------------------------


# Wild values one example may still draw: at most two, so most calls have one thing wrong (its own
# refusal is seen) and many have none (their results are checked).
BUDGET = [0]


def go_wild(draw, one_in: int) -> bool:
    """True once in ``one_in`` draws while the example's budget of wild values lasts."""
    if BUDGET[0] > 0 and draw(st.integers(1, one_in)) == one_in:
        BUDGET[0] -= 1
        return True
    return False


def sometimes(draw, normal, wild, one_in: int = 6):
    """``normal`` most of the time; a value from ``wild`` once in ``one_in`` draws (within the budget)."""
    return draw(wild) if go_wild(draw, one_in) else draw(normal)


def number(draw, normal, wild=WILD_NUMBERS, one_in: int = 6):
    return sometimes(draw, normal, st.sampled_from(wild), one_in)


def integer(draw, normal, wild=WILD_INTS, one_in: int = 6):
    return sometimes(draw, normal, st.sampled_from(wild), one_in)


def rand(draw, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))


def tensor(draw, shape: tuple[int, ...], kind: str = "map") -> Any:
    """A map (or image) of ``shape``: usually random, else constant, holding NaN/inf, another dtype,
    another shape, empty, numpy, a list or no tensor at all."""
    wild = draw(st.integers(1, 13)) if go_wild(draw, 3) else 0
    t = rand(draw, shape)
    if kind == "map" and draw(st.booleans()):
        t = t - 0.3  # signed maps: some pixels negative
    if wild == 1:
        t = torch.full(shape, draw(st.sampled_from([0.0, 0.5, -1.0])))
    elif wild == 2 and t.numel():
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from([NAN, INF, -INF]))
    elif wild == 3:
        t = (t * 10).long()
    elif wild == 4:
        t = t > 0.5
    elif wild == 5:
        t = t.double()
    elif wild == 6 and len(shape) > 1:
        t = t[..., :-1] if shape[-1] > 1 else t[..., None]  # another width
    elif wild == 7:
        t = t[None]
    elif wild == 8 and len(shape) > 1:
        t = t[0]
    elif wild == 9:
        t = t[..., :0]
    elif wild == 10:
        return t.numpy()
    elif wild == 11:
        return t.tolist()
    elif wild == 12:
        return draw(st.sampled_from([None, "map", 3.0]))
    elif wild == 13:
        t = torch.complex(t, t)
    return t


def mask(draw, shape: tuple[int, ...]) -> Any:
    m = rand(draw, shape) > 0.6
    wild = draw(st.integers(1, 7)) if go_wild(draw, 4) else 0
    if wild == 1:
        return m.float()  # 0/1 floats: allowed
    if wild == 2:
        return rand(draw, shape)  # a map passed as a mask
    if wild == 3:
        return torch.zeros(shape, dtype=torch.bool)  # empty
    if wild == 4 and len(shape) > 1:
        return m[..., :-1] if shape[-1] > 1 else m[..., None]
    if wild == 5:
        f = m.float()
        f.view(-1)[0] = NAN
        return f
    if wild == 6:
        return m.numpy()
    if wild == 7:
        return "mask"
    return m


def box(draw, size: int = 12) -> Any:
    """``[x0, y0, x1, y1]``: valid (possibly empty or outside the image), or inverted, NaN, short."""
    x0, y0 = draw(st.integers(-2, size)), draw(st.integers(-2, size))
    b: list[Any] = [x0, y0, x0 + draw(st.integers(0, size)), y0 + draw(st.integers(0, size))]
    wild = draw(st.integers(1, 6)) if go_wild(draw, 5) else 0
    if wild == 1:
        b[0], b[2] = b[2] + 1, b[0]  # inverted
    elif wild == 2:
        b[draw(st.integers(0, 3))] = draw(st.sampled_from([NAN, INF]))
    elif wild == 3:
        b = b[:3]
    elif wild == 4:
        b[0] = b[0] + 0.5
    elif wild == 5:
        return "box"
    elif wild == 6:
        return [b, b[:2]]
    return b


def target(draw, b: int, classes: int = 3) -> Any:
    return sometimes(
        draw,
        st.one_of(
            st.none(), st.integers(0, classes - 1), st.lists(st.integers(0, classes - 1), min_size=b, max_size=b)
        ),
        st.one_of(
            st.integers(-2, classes + 5),
            st.lists(st.integers(0, classes - 1), min_size=0, max_size=4),
            st.sampled_from(["cat", 1.5, True, torch.tensor([0.5]), lambda out: out[:, 0]]),
        ),
    )


def model_and_images(draw) -> tuple[str, Any, int, int, int]:
    name = sometimes(draw, st.just("rgb"), st.sampled_from(["grey", "seg"]))
    c = {"grey": 1}.get(name, 3)
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 10)), draw(st.integers(3, 10))
    x = tensor(draw, (b, c, h, w), kind="image")
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == c and go_wild(draw, 8):
        x = x.expand(-1, 3, -1, -1).contiguous() if c == 1 else x[:, :1]  # the wrong channel count
    return name, x, b, h, w


# --- one case per public function: (call, check of the result) ------------------------------------------


Case = tuple[Callable[[], Any], Callable[[Any], None]]


def finite(t: torch.Tensor, shape: tuple[int, ...] | None = None) -> None:
    assert isinstance(t, torch.Tensor), type(t)
    if shape is not None:
        assert tuple(t.shape) == shape, (tuple(t.shape), shape)
    if t.is_floating_point():
        assert torch.isfinite(t).all(), "non-finite result"


def in_unit(t: torch.Tensor, shape: tuple[int, ...] | None = None) -> None:
    finite(t, shape)
    assert bool(((t >= -1e-9) & (t <= 1 + 1e-9)).all()), "result outside [0, 1]"


def fuzz_settings(examples: int) -> Any:
    """Hypothesis settings of these fuzz tests: ``examples`` derandomised examples, no deadline."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def run_example(data: Any, cases: dict[str, Callable[[Any], Case]], counts: collections.Counter[str]) -> None:
    """Draw one case of ``cases`` and call it: a result passes its check, or a ValueError/TypeError
    carries a message of ours; either way every tiny model is left exactly as it was."""
    name = data.draw(st.sampled_from(sorted(cases)))
    BUDGET[0] = data.draw(st.sampled_from([0, 1, 1, 2]))
    call, check = data.draw(st.composite(lambda draw: cases[name](draw))())
    before = {k: snapshot(m) for k, m in MODELS.items()}
    counts["examples"] += 1
    try:
        result = call()
    except (ValueError, TypeError) as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        assert not FOREIGN.search(str(e)), f"an internal message, not ours: {e}"
        counts[f"{name}: error"] += 1
    else:
        check(result)
        counts[f"{name}: ok"] += 1
    finally:
        for k, m in MODELS.items():
            assert_unchanged(before[k], snapshot(m))


def report(counts: collections.Counter[str], what: str, extra: str = "") -> None:
    """Print the examples per case and their outcomes (seen with ``pytest -s``), then ``extra``."""
    per = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "examples")
    print(f"\nfuzz {what}: {counts['examples']} examples; {per}{extra}")


def counts_reporter(counts: collections.Counter[str], what: str, extra: Callable[[], str] | None = None) -> Any:
    """A fixture to bind at module level (``report_counts = counts_reporter(...)``) that prints
    ``counts`` once the module's tests have run, with ``extra()`` after them."""

    @pytest.fixture(scope="module", autouse=True)
    def report_counts() -> Any:
        yield
        report(counts, what, extra() if extra else "")

    return report_counts


def check_counts(counts: collections.Counter[str], cases: dict[str, Any]) -> None:
    """Every case was tried and succeeded at least once (the fuzz does not only see errors)."""
    if counts["examples"] == 0:
        pytest.skip("run together with the fuzz test")
    for name in cases:
        assert counts[f"{name}: ok"] + counts[f"{name}: error"] > 0, f"{name} never tried"
        assert counts[f"{name}: ok"] > 0, f"{name} never succeeded: the fuzz only sees errors"


def fuzz_tests(cases: dict[str, Callable[[Any], Case]], what: str, examples: int) -> tuple[Any, Any, Any]:
    """A fuzz test module's three pieces, to bind at module level: a fixture that prints the counts,
    the fuzz test (``examples`` examples of ``cases``) and the check that every case ran and
    sometimes succeeded (it runs after the fuzz test, in file order)."""
    counts: collections.Counter[str] = collections.Counter()

    @fuzz_settings(examples)
    @given(st.data())
    def fuzz(data: Any) -> None:
        run_example(data, cases, counts)

    def plausible() -> None:
        check_counts(counts, cases)

    return counts_reporter(counts, what), fuzz, plausible
