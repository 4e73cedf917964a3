"""guidewidgets.hooks: layer lookup, capture, ReLU backward rules, and cleanup on error."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from guidewidgets import hooks
from tests.helpers import hook_count


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 3)
        self.fail_at = None

    def forward(self, x):
        a = F.relu(self.body(x))  # functional ReLU after the captured block
        if self.fail_at == "forward":
            raise RuntimeError("boom")
        return self.fc(self.pool(a).flatten(1))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().eval()


def test_layer_names_and_get_layer(net):
    assert hooks.layer_names(net)[:2] == ["body", "body.0"]
    assert hooks.get_layer(net, "body.2") is net.body[2]
    assert hooks.get_layer(net, net.fc) is net.fc
    with pytest.raises(ValueError, match=r"No layer named 'bdy.2'.*Did you mean 'body.2'"):
        hooks.get_layer(net, "bdy.2")
    with pytest.raises(ValueError, match="layer_names"):
        hooks.get_layer(net, "")
    with pytest.raises(ValueError, match="not a sub-module"):
        hooks.get_layer(net, nn.Linear(1, 1))
    with pytest.raises(TypeError, match="str"):
        hooks.get_layer(net, 3)


def test_capture_gives_the_layer_gradient_without_weight_gradients(net):
    x = torch.rand(2, 3, 8, 8)
    with hooks.capture(net, "body") as cap:
        out = net(x)
    g = cap.grad(out[:, 1])
    # reference: the full graph
    acts = {}
    h = net.body.register_forward_hook(lambda m, a, o: acts.setdefault("a", o))
    try:
        ref_out = net(x)
    finally:
        h.remove()
    (ref,) = torch.autograd.grad(ref_out[:, 1].sum(), acts["a"])
    assert torch.allclose(cap.activations, acts["a"].detach())
    assert torch.allclose(g, ref)
    assert all(p.grad is None for p in net.parameters())
    assert hook_count(net) == 0
    # the head ran without a graph: its weights are not reachable from the output
    assert cap.activations.is_leaf and cap.activations.requires_grad


def test_capture_is_safe_from_inplace_ops_after_the_layer(net):
    """body.0 is followed by an inplace ReLU: the captured map keeps its negative values."""
    x = torch.rand(1, 3, 8, 8)
    with hooks.capture(net, "body.0") as cap:
        net(x)
    assert (cap.activations < 0).any()


def test_capture_without_cut_is_safe_from_inplace_ops(net):
    with hooks.capture(net, "body.0", cut=False) as cap:
        net(torch.rand(1, 3, 8, 8))
    assert (cap.activations < 0).any()


def test_capture_restores_grad_mode_and_hooks_on_error(net):
    net.fail_at = "forward"
    for grad_mode in (True, False):
        with torch.set_grad_enabled(grad_mode):
            with pytest.raises(RuntimeError, match="boom"):
                with hooks.capture(net, "body"):
                    net(torch.rand(1, 3, 8, 8))
            assert torch.is_grad_enabled() == grad_mode
    assert hook_count(net) == 0
    with pytest.raises(RuntimeError, match="not run"):
        with hooks.capture(net, "body") as cap:
            pass
        cap.grad(torch.zeros(1))


def guided_reference(x, w):
    """Guided backprop through relu(conv(x)) by hand: positive grads through positive inputs."""
    z = F.conv2d(x, w, padding=1)
    g_out = torch.ones_like(z) * torch.sign(torch.randn_like(z))
    g_z = g_out.clamp_min(0) * (z > 0)
    return z, g_out, torch.nn.grad.conv2d_input(x.shape, w, g_z, padding=1)


@pytest.mark.parametrize("relu", [nn.ReLU(inplace=True), nn.ReLU(), F.relu, torch.relu, lambda t: t.relu_()])
def test_guided_rule_for_every_relu_spelling(relu):
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    z, g_out, ref = guided_reference(x.detach(), w)
    with hooks.relu_backward("guided"):
        y = relu(F.conv2d(x, w, padding=1))
    assert torch.allclose(y, z.clamp_min(0))
    (g,) = torch.autograd.grad(y, x, g_out)
    assert torch.allclose(g, ref, atol=1e-6)
    assert torch._C._len_torch_function_stack() == 0


def test_deconv_rule_ignores_the_forward_sign():
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    with hooks.relu_backward("deconv"):
        y = nn.ReLU(inplace=True)(x * 1)
    (g,) = torch.autograd.grad(y, x, torch.tensor([3.0, -4.0]))
    assert g.tolist() == [3.0, 0.0]  # gradient rectified, input sign ignored
    with hooks.relu_backward("guided"):
        y = F.relu(x * 1)
    (g,) = torch.autograd.grad(y, x, torch.tensor([3.0, -4.0]))
    assert g.tolist() == [0.0, 0.0]


def test_relu_backward_leaves_modules_alone_and_cleans_up_on_error(net):
    types = [type(m) for m in net.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.relu_backward("guided"):
            raise RuntimeError("boom")
    assert torch._C._len_torch_function_stack() == 0
    assert [type(m) for m in net.modules()] == types
    assert net.body[1].inplace
    with pytest.raises(ValueError, match="'guided' or 'deconv'"):
        with hooks.relu_backward("lrp"):
            pass
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(net(x), net(x))  # plain ReLU again


def test_last_conv_layer(net):
    x = torch.rand(1, 3, 8, 8)
    assert hooks.last_conv_layer(net, x) == "body"
    assert hook_count(net) == 0
    net.default_explain_layer = "body.0"
    assert hooks.last_conv_layer(net, x) == "body.0"
    with pytest.raises(ValueError, match="layer=..."):
        hooks.last_conv_layer(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)), x)


def test_owned_hooks_act_only_in_the_placing_thread(net):
    import threading

    seen = []
    handle = net.body.register_forward_hook(hooks.owned(lambda m, a, out: seen.append(threading.get_ident())))
    try:
        x = torch.rand(1, 3, 8, 8)
        other = threading.Thread(target=lambda: net(x))
        other.start()
        other.join()
        assert seen == []  # another thread's forward: the hook did nothing
        net(x)
        assert seen == [threading.get_ident()]
    finally:
        handle.remove()


class Tokens(nn.Module):
    """Patch embedding (kernel = stride = 4) and a class token: (B, 1 + h*w, D) outputs."""

    def __init__(self, seq_first: bool = False) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 4, stride=4)
        self.norm = nn.LayerNorm(6)
        self.seq_first = seq_first

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # (B, h*w, D)
        t = torch.cat([t.mean(1, keepdim=True), t], 1)
        t = self.norm(t.transpose(0, 1) if self.seq_first else t)
        return (t[0] if self.seq_first else t[:, 0]).sum(1, keepdim=True).repeat(1, 2)


@pytest.mark.parametrize("seq_first", [False, True])
def test_token_outputs_are_laid_on_the_patch_grid(seq_first):
    model = Tokens(seq_first).eval()
    x = torch.rand(2, 3, 8, 12)  # a 2 x 3 patch grid: not square, found from the patch stride
    assert hooks.token_grid(model, 7, (8, 12)) == (1, 2, 3)
    assert hooks.token_grid(model, 50, None) == (1, 7, 7)  # without the image: the square rule
    with torch.no_grad(), hooks.capture(model, "norm", cut=False) as cap:
        model(x)
    raw = cap.raw.transpose(0, 1) if seq_first else cap.raw
    expected = raw[:, 1:].reshape(2, 2, 3, 6).permute(0, 3, 1, 2)
    assert torch.equal(cap.activations, expected)
    assert [tuple(fm) for fm in hooks.feature_maps(model, x)] == [("embed", (6, 2, 3))]  # norm has no conv inside


def test_attention_weights_are_collected_and_the_model_is_unchanged():
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = mha

        def forward(self, t):
            out, w = self.attn(t, t, t, need_weights=False)
            assert w is None  # the caller still gets what it asked for
            return out

    block = Block()
    t = torch.rand(2, 5, 8)
    with torch.no_grad():
        plain = block(t)
        with hooks.attention_weights(block) as found:
            out = block(t)
        _, ref = mha(t, t, t, need_weights=True)
    assert torch.allclose(out, plain, atol=1e-6)
    assert len(found) == 1 and torch.allclose(found[0], ref, atol=1e-6)
    assert hook_count(block) == 0


def test_hooked_places_thread_owned_hooks_and_removes_them_even_on_error(net):
    import threading

    seen: list[str] = []
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.hooked() as h:
            h.forward_pre(net.body, lambda m, a: seen.append("pre")).forward(
                net.body, lambda m, a, out: seen.append("post")
            )
            assert len(h) == 2
            other = threading.Thread(target=lambda: net(x))
            other.start()
            other.join()
            assert seen == []  # another thread's forward: both hooks did nothing
            net(x)
            assert seen == ["pre", "post"]
            raise RuntimeError("boom")
    assert hook_count(net) == 0


def test_capture_in_one_thread_leaves_another_threads_forward_alone(net):
    """A capture block (cut=True turns grad mode off before the layer and restarts the graph at
    it) is open in this thread; a training-style forward in another thread keeps its graph to
    the input and is not recorded."""
    import threading

    x = torch.rand(1, 3, 8, 8)
    xu = torch.rand(2, 3, 8, 8, requires_grad=True)
    results: dict = {}

    def user():
        out = net(xu)
        results["grad"] = torch.autograd.grad(out.sum(), xu)[0]

    with torch.enable_grad(), hooks.capture(net, "body", cut=True) as cap:
        th = threading.Thread(target=user)
        th.start()
        th.join()
        assert cap.activations is None  # the other thread's forward was not recorded
        net(x)
    assert cap.activations is not None and cap.activations.shape[0] == 1
    assert results["grad"].shape == xu.shape and results["grad"].abs().sum() > 0
    assert hook_count(net) == 0


def test_every_module_hook_the_package_places_goes_through_hooked():
    """Only ``Hooks`` registers module hooks (thread-owned, removed in ``finally``). The guide
    session's own hooks are the guided forward every thread must see (its owner's files)."""
    import pathlib
    import re

    root = pathlib.Path(hooks.__file__).parent
    allowed = {root / "hooks.py", root / "guide" / "session.py", root / "guide" / "guided_forward.py"}
    pattern = re.compile(
        r"\.register_(forward_hook|forward_pre_hook|full_backward_hook|full_backward_pre_hook|module_)"
    )
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted(root.rglob("*.py"))
        if path not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, f"module hooks placed outside hooks.hooked(): {offenders}"
