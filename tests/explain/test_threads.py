"""Concurrent explain calls on one model (a widget's background job and the user's own cell)
never interfere: same maps as sequential calls, no errors, nothing left on the model, and a
user's plain forward in another thread is never touched by explain's hooks."""

import threading

import pytest
import torch
import torchvision
from torch import nn

from guidewidgets import explain as E
from tests.helpers import hook_count

CALLS = [
    ("grad-cam", {}),
    ("grad-cam++", {"layer": "layer3"}),
    ("saliency", {}),
    ("guided-backprop", {}),
    ("guided-grad-cam", {}),
    ("cam", {}),
    ("deconvnet", {}),
    ("smoothgrad", {"samples": 2}),
    ("occlusion", {"window": 24, "stride": 24}),
]
THREADS, PER_THREAD = 8, 25


def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def test_eight_threads_of_mixed_calls_equal_sequential_maps():
    # Training mode on purpose (a notebook mid-training): each call flips the modules to eval and
    # back, and a concurrent call must never run while another has restored training mode (its
    # BatchNorm would then use batch statistics and update the running ones).
    model = resnet().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    plan = [[(i * PER_THREAD + j) % len(CALLS) for j in range(PER_THREAD)] for i in range(THREADS)]
    targets = [None, 3, [1]]
    expected = {
        (k, t): E.explain(model, x, CALLS[k][0], target=targets[t], **CALLS[k][1])
        for k in range(len(CALLS))
        for t in range(len(targets))
    }
    errors: list[BaseException] = []
    mismatches: list[str] = []
    start = threading.Barrier(THREADS)

    def work(i):
        torch.set_num_threads(1)
        start.wait()
        for j, k in enumerate(plan[i]):
            t = (i + j) % len(targets)
            name, opts = CALLS[k]
            try:
                got = E.explain(model, x, name, target=targets[t], **opts)
            except BaseException as e:  # every failure is counted and reported
                errors.append(e)
                continue
            if not torch.allclose(got, expected[k, t], rtol=1e-5, atol=1e-6 * float(expected[k, t].abs().max())):
                mismatches.append(f"thread {i} call {j}: {name}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, f"{len(errors)} errors, first: {errors[0]!r}"
    assert not mismatches, mismatches[:5]
    assert hook_count(model) == 0
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())


def test_a_users_plain_forward_in_another_thread_is_not_touched():
    """explain's hooks act only in the thread that placed them: a user's own training-style
    forward (with a graph, in another thread) keeps its output and its gradients."""
    model = resnet()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    xu = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    out_ref = model(xu)
    (g_ref,) = torch.autograd.grad(out_ref[:, 0].sum(), xu)
    stop = threading.Event()
    problems: list[str] = []
    runs = [0]

    def user():
        torch.set_num_threads(1)
        while not stop.is_set():
            out = model(xu)  # grad mode on, as in a training loop
            if not out.requires_grad:
                problems.append("the user's forward lost its graph")
                continue
            if not torch.allclose(out, out_ref, atol=1e-6):
                problems.append("the user's output changed")
            (g,) = torch.autograd.grad(out[:, 0].sum(), xu)
            if not torch.allclose(g, g_ref, atol=1e-6 * float(g_ref.abs().max())):
                problems.append("the user's gradient changed (guided rule or cut graph leaked)")
            runs[0] += 1

    th = threading.Thread(target=user)
    th.start()
    try:
        for _ in range(3):
            for name in ("grad-cam", "guided-backprop", "guided-grad-cam", "cam", "deconvnet"):
                E.explain(model, x, name)
    finally:
        stop.set()
        th.join()
    assert runs[0] > 0
    assert not problems, problems[:3]
    assert all(p.grad is None for p in model.parameters())


# --- every registered method against a user's plain forward in another thread ---------------------

# The slow methods run with their registry's quick options (a few forwards on 16 px images).


class Gate(nn.Module):
    """Identity; in the armed (explain) thread each forward waits until the user's thread has
    finished two more forwards. Why two: the second one started after this wait began, so it ran
    whole while the explain call's hooks were on the model. A plain module, no hook: the signal
    itself must not be what the test is about."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.user_forwards = 0
        self.armed: int | None = None  # thread ident of the explain call
        self.waits = self.timeouts = 0

    def forward(self, x):
        if threading.get_ident() == self.armed:
            with self.cond:
                goal = self.user_forwards + 2
                if not self.cond.wait_for(lambda: self.user_forwards >= goal, timeout=10):
                    self.timeouts += 1
                self.waits += 1
        return x

    def user_done(self) -> None:
        with self.cond:
            self.user_forwards += 1
            self.cond.notify_all()


class GatedCNN(nn.Module):
    """Conv net with a global-average-pool + linear head (CAM applies), ReLUs for the rules."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.features(self.gate(x)).mean((2, 3)))


class GatedViT(nn.Module):
    """A tiny torchvision ViT (16 px, 4 px patches) behind a gate: for attention rollout."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()
        self.vit = torchvision.models.VisionTransformer(
            image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=4
        )
        nn.init.normal_(self.vit.heads.head.weight, std=0.1)  # torchvision zero-initialises it

    def forward(self, x):
        return self.vit(self.gate(x))


@pytest.mark.parametrize("method", E.methods())
def test_every_method_leaves_a_users_forward_in_another_thread_alone(method):
    """While a method runs (hooks placed, flags flipped), the user's own ``model(x)`` on a batch
    of another size in another thread keeps its shape and values, and never raises."""
    torch.manual_seed(0)
    model = (GatedViT() if E.method_info(method).family == "attention" else GatedCNN()).eval()
    gate = model.gate
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    xu = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(xu)
    stop = threading.Event()
    problems: list[str] = []

    def user() -> None:
        torch.set_num_threads(1)
        while not stop.is_set():
            try:
                with torch.no_grad():
                    out = model(xu)
                if out.shape != ref.shape:
                    problems.append(f"the user's output has shape {tuple(out.shape)}, not {tuple(ref.shape)}")
                elif not torch.allclose(out, ref, rtol=1e-5, atol=1e-6):
                    problems.append("the user's output values changed")
            except Exception as e:  # every failure in the user's thread is reported
                problems.append(f"the user's forward raised {e!r}")
            gate.user_done()

    th = threading.Thread(target=user)
    th.start()
    first = gate.user_forwards
    gate.armed = threading.get_ident()
    try:
        maps = E.explain(model, x, method, **E.method_info(method).quick)
    finally:
        gate.armed = None
        during = gate.user_forwards - first
        stop.set()
        th.join()
    assert maps.shape[0] == 2
    assert gate.waits > 0 and gate.timeouts == 0, "the user's forwards did not overlap the explain call"
    assert during >= 2 * gate.waits  # user forwards finished while the method ran
    assert not problems, f"{len(problems)} bad user forwards, first: {problems[0]}"
    assert hook_count(model) == 0
