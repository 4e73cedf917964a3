"""Concurrent explain calls on one model (a widget's background job and the user's own cell)
never interfere: same maps as sequential calls, no errors, nothing left on the model, and a
user's plain forward in another thread is never touched by explain's hooks."""

import threading

import torch
import torchvision

from guidewidgets import explain as E

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


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


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
