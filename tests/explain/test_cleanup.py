"""1,000 calls, some raising mid-way, leave the model exactly as it was and leak nothing."""

import gc
import itertools
import tracemalloc
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from guidewidgets import explain as E

# Methods for any CNN (attention rollout needs a transformer: tests/explain/test_transformers.py).
CNN_METHODS = [m for m in E.methods() if E.method_info(m).family != "attention"]


class Boom(Exception):
    pass


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 6, 3, padding=1)
        )
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, 3)
        self.fail = False

    def forward(self, x):
        a = F.relu(self.features(x), inplace=True)
        if self.fail:
            raise Boom("forward failed")
        return self.fc(self.drop(a.mean((2, 3))))


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance() pokes deprecated lazy torch objects
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [
            (
                n,
                type(m),
                m.training,
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(m._backward_pre_hooks),
            )
            for n, m in model.named_modules()
        ],
        [(n, p.requires_grad, p.grad) for n, p in model.named_parameters()],
    )


def assert_same(a, b):
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1] == b[1]
    assert a[2] == b[2]


def global_hooks() -> int:
    from torch.nn.modules import module as M

    return sum(len(getattr(M, n)) for n in dir(M) if n.startswith("_global_") and n.endswith("hooks"))


def test_thousand_calls_some_raising_leave_no_trace():
    torch.manual_seed(0)
    model = Tiny()
    model.train()  # training mode on purpose: BatchNorm must not update its statistics
    model.features[3].weight.requires_grad_(False)  # a frozen layer stays frozen
    x = torch.rand(2, 3, 16, 16)
    before = state(model)
    hooks_before = global_hooks()
    raised = 0

    def bad_target(out):
        raise Boom("target failed")

    def calls():
        for i, name in zip(range(1000), itertools.cycle(CNN_METHODS)):
            kind = i % 5
            opts = dict(E.method_info(name).quick)
            if kind == 3:  # a target callable that raises mid-way
                # CAM and the neuron methods refuse a callable: an index out of range raises instead
                takes_callable = name != "cam" and E.method_info(name).target_kind == "class"
                yield name, (bad_target if takes_callable else 99), opts, False
            elif kind == 4:  # a forward that raises mid-way
                yield name, None, opts, True
            else:
                yield name, None, opts, False

    def one_round(n_calls):
        nonlocal raised
        for name, target, opts, fail in itertools.islice(calls(), n_calls):
            model.fail = fail
            try:
                E.explain(model, x, name, target=target, **opts)
            except (Boom, ValueError):
                raised += 1
            finally:
                model.fail = False

    one_round(100)  # warm-up: caches, lazy imports, allocator pools
    gc.collect()
    tensors_before = live_tensors()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    one_round(1000)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))

    # Every fifth call's forward raises; class-agnostic methods (eigen-cam, attention-rollout)
    # may ignore a raising target, so only that floor is certain.
    assert raised >= 1100 // 5
    assert_same(before, state(model))
    assert model.training and all(m.training for m in model.modules())
    assert global_hooks() == hooks_before
    assert torch._C._len_torch_function_stack() == 0
    assert torch.is_grad_enabled()
    assert live_tensors() <= tensors_before
    assert growth < 256 * 1024, f"Python heap grew by {growth} bytes over 1000 calls"


@pytest.mark.parametrize("name", CNN_METHODS)
def test_error_inside_forward_restores_everything(name):
    model = Tiny().eval()
    model.features[1].train()  # a mixed-mode model keeps its mix
    model.fail = True
    before = state(model)
    # Neuron methods end the forward at their layer: one after the raise makes them meet it.
    layer = "fc" if E.method_info(name).target_kind == "neuron" else "features"
    with torch.no_grad():
        with pytest.raises(Boom):
            E.explain(model, torch.rand(1, 3, 16, 16), name, layer=layer, **E.method_info(name).quick)
        assert not torch.is_grad_enabled()
    model.fail = False
    assert_same(before, state(model))
    assert torch._C._len_torch_function_stack() == 0
