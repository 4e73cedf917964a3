"""render: tensors/arrays -> RGBA uint8, checked through identities rather than stored pictures."""

import io
import sys

import numpy as np
import pytest
import torch

from guidewidgets import render


def test_render_imports_no_pyplot():
    import subprocess

    code = "import sys, guidewidgets.render as r; r.colorize([[0.0, 1.0]]); r.palette(5); print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_to_rgba_layouts_agree():
    x = torch.rand(3, 5, 7)
    a = render.to_rgba(x)
    assert a.shape == (5, 7, 4) and a.dtype == np.uint8 and (a[..., 3] == 255).all()
    assert np.array_equal(render.to_rgba(x[None]), a)
    hwc = x.permute(1, 2, 0).numpy()
    assert np.array_equal(render.to_rgba(hwc), a)
    assert np.array_equal(render.to_rgba((hwc * 255 + 0.5).astype(np.uint8)), a)
    # a (3, H, 3) tensor is channels-first by the torch convention
    assert render.to_rgba(torch.rand(3, 4, 3)).shape == (4, 3, 4)
    g = render.to_rgba(np.full((4, 4), 0.5))
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 0] == 128).all()
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert render.to_rgba(rgba) is not None and render.to_rgba(rgba).shape == (2, 2, 4)


def test_to_rgba_clips_and_rejects():
    a = render.to_rgba(torch.tensor([[[-1.0, 2.0, float("nan")]]] * 3))
    assert a[0, :, 0].tolist() == [0, 255, 0]
    with pytest.raises(ValueError, match="expected"):
        render.to_rgba(np.zeros((5, 5, 7)))
    with pytest.raises(ValueError, match="one item at a time"):
        render.to_rgba(torch.rand(2, 3, 4, 4))


def test_normalize_properties():
    m = torch.randn(9, 11)
    n = render.normalize(m)
    assert n.dtype == np.float32 and n.min() == 0.0 and n.max() == 1.0
    # invariant to positive affine changes
    assert np.allclose(render.normalize(3 * m + 7), n, atol=1e-6)
    assert (render.normalize(torch.ones(4, 4)) == 0).all()
    s = render.normalize(torch.tensor([[-2.0, 0.0, 1.0]]), signed=True)
    assert np.allclose(s, [[0.0, 0.5, 0.75]])
    assert render.normalize(m[None]).shape == (9, 11)
    with pytest.raises(ValueError):
        render.normalize(torch.rand(2, 3, 4))


def test_colorize_matches_matplotlib():
    import matplotlib

    m = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    c = render.colorize(m, "viridis")
    ref = (matplotlib.colormaps["viridis"](m) * 255 + 0.5).astype(np.uint8)
    assert np.abs(c.astype(int) - ref.astype(int)).max() <= 1
    assert c.shape == (16, 16, 4)
    with pytest.raises(ValueError, match="viridis"):
        render.colorize(m, "viridsi")
    assert np.array_equal(render.colorize(m, matplotlib.colormaps["viridis"]), c)


def test_overlay_alpha_endpoints():
    img = torch.rand(3, 8, 8)
    m = torch.rand(8, 8)
    assert np.array_equal(render.overlay(img, m, alpha=0.0), render.to_rgba(img))
    assert np.array_equal(render.overlay(img, m, "jet", alpha=1.0), render.colorize(m, "jet"))
    half = render.overlay(img, m, alpha=0.5).astype(int)
    mid = (render.to_rgba(img).astype(int) + render.colorize(m).astype(int)) / 2
    assert np.abs(half[..., :3] - mid[..., :3]).max() <= 1
    # a low-resolution map is resized to the image
    assert render.overlay(img, torch.rand(2, 2)).shape == (8, 8, 4)
    with pytest.raises(ValueError, match="alpha"):
        render.overlay(img, m, alpha=1.5)


def test_overlay_rgba_layer_uses_its_alpha():
    img = np.zeros((4, 4, 3), np.float32)
    lab = np.zeros((4, 4), np.int64)
    lab[0, 0] = 1
    seg = render.segmentation_rgba(lab, alpha=1.0)
    out = render.overlay(img, seg, alpha=1.0)
    assert (out[1:, 1:, :3] == 0).all()  # background transparent
    assert np.array_equal(out[0, 0, :3], render.palette(2)[1, :3])


def test_palette_distinct():
    p = render.palette(40)
    assert p.shape == (40, 4) and p.dtype == np.uint8
    assert len({tuple(c) for c in p}) == 40
    assert np.array_equal(render.palette(5), p[:5])
    with pytest.raises(ValueError):
        render.palette(0)


def test_segmentation_rgba():
    lab = torch.tensor([[0, 1], [2, 1]])
    s = render.segmentation_rgba(lab, alpha=0.5)
    assert s.shape == (2, 2, 4)
    assert s[0, 0, 3] == 0 and s[0, 1, 3] == 128
    assert np.array_equal(s[0, 1, :3], s[1, 1, :3])
    assert render.segmentation_rgba(lab, background=None)[0, 0, 3] > 0
    with pytest.raises(ValueError, match="palette"):
        render.segmentation_rgba(lab, palette=render.palette(2))
    with pytest.raises(TypeError, match="argmax"):
        render.segmentation_rgba(torch.rand(2, 2))


def test_gradient_image():
    raw = torch.zeros(3, 6, 6)
    g = render.gradient_image(raw)
    assert (g[..., :3] == 128).all()
    raw[0, 2, 2] = 1.0
    g = render.gradient_image(raw, clip=None)
    assert g[2, 2, 0] == 255 and g.shape == (6, 6, 4)
    with pytest.raises(ValueError, match="raw=True"):
        render.gradient_image(torch.zeros(6, 6))


def test_grid_layout():
    a = np.full((4, 5, 4), 10, np.uint8)
    b = np.full((4, 5, 4), 200, np.uint8)
    g = render.grid([a, b, a], cols=2, pad=1)
    assert g.shape == (9, 11, 4)
    assert (g[:4, :5] == 10).all() and (g[:4, 6:11] == 200).all() and (g[5:9, :5] == 10).all()
    assert (g[4] == 255).all()
    assert render.grid([a, b]).shape == (4, 12, 4)
    with pytest.raises(ValueError):
        render.grid([])


def test_upscale_and_png_roundtrip():
    from PIL import Image

    a = render.colorize(np.random.rand(5, 6))
    u = render.upscale(a, 3)
    assert u.shape == (15, 18, 4) and np.array_equal(u[::3, ::3], a)
    png = render.to_png(a)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    back = np.asarray(Image.open(io.BytesIO(png)))
    assert np.array_equal(back, a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors():
    x = torch.rand(3, 8, 8, device="cuda")
    assert np.array_equal(render.to_rgba(x), render.to_rgba(x.cpu()))
    assert render.overlay(x, torch.rand(8, 8, device="cuda").half()).shape == (8, 8, 4)


def test_half_precision_and_requires_grad_inputs():
    m = torch.rand(6, 6, requires_grad=True)
    assert np.array_equal(render.colorize(m), render.colorize(m.detach().numpy()))
    assert render.colorize(m.detach().bfloat16()).shape == (6, 6, 4)
    assert render.to_rgba(torch.rand(3, 6, 6).half()).shape == (6, 6, 4)
