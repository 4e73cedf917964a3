"""MTCNN on the real weights of the facenet-pytorch wheel (skipped when it is not installed)."""

import pytest
import torch
from torchvision.ops import box_iou

from guidewidgets.zoo import mtcnn as M
from guidewidgets.zoo.adapters import WeightsUnavailableError

try:
    WEIGHTS = M.weights_dir()
except WeightsUnavailableError:
    WEIGHTS = None
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason=f"MTCNN weights absent: {M.INSTALL_HINT}")

#: The astronaut's face, read off the photo by eye on a 20 px grid (scikit-image's astronaut,
#: 512 x 512): cheeks at x ~ 175 and ~ 265, hairline ~ 75, chin ~ 180.
ASTRONAUT_FACE = torch.tensor([[175.0, 75.0, 265.0, 180.0]])


@pytest.fixture(scope="module")
def mtcnn():
    return M.load_mtcnn()


@needs_weights
def test_weights_load_strictly_into_our_modules():
    for name, net in (("pnet", M.PNet()), ("rnet", M.RNet()), ("onet", M.ONet())):
        state = torch.load(WEIGHTS / f"{name}.pt", map_location="cpu", weights_only=True)
        result = net.load_state_dict(state, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("h, w", [(12, 12), (13, 40), (37, 24), (100, 151)])
def test_pnet_is_fully_convolutional_with_the_grid_formula(h, w):
    logits, reg = M.PNet()(torch.rand(2, 3, h, w))
    grid = (M.pnet_output_size(h), M.pnet_output_size(w))
    assert logits.shape == (2, 2, *grid) and reg.shape == (2, 4, *grid)


def test_pnet_output_size_refuses_inputs_below_its_window():
    assert M.pnet_output_size(12) == 1
    with pytest.raises(ValueError, match="at least 12"):
        M.pnet_output_size(11)


@needs_weights
def test_astronaut_has_one_confident_face_on_her_face(mtcnn):
    from guidewidgets.zoo.bundled_photos import photo

    out = mtcnn.detect(photo("astronaut", tensor=True))
    assert out["boxes"].shape == (1, 4) and out["landmarks"].shape == (1, 5, 2)
    assert out["scores"][0] > 0.99
    assert box_iou(out["boxes"], ASTRONAUT_FACE)[0, 0] >= 0.5
    # Landmarks inside the box, eyes left to right above the nose, the nose above the mouth.
    (lx, ly), (rx, ry), (_, ny), (_, my1), (_, my2) = out["landmarks"][0].tolist()
    x0, y0, x1, y1 = out["boxes"][0].tolist()
    assert (out["landmarks"][0, :, 0] > x0).all() and (out["landmarks"][0, :, 0] < x1).all()
    assert (out["landmarks"][0, :, 1] > y0).all() and (out["landmarks"][0, :, 1] < y1).all()
    assert lx < rx and max(ly, ry) < ny < min(my1, my2)


@needs_weights
@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_blank_image_has_no_face(mtcnn, value):
    out = mtcnn.detect(torch.full((3, 160, 200), value))
    assert len(out["boxes"]) == len(out["scores"]) == len(out["landmarks"]) == 0


@needs_weights
def test_face_classifier_explains_the_face_score(mtcnn):
    from guidewidgets.explain import explain
    from guidewidgets.zoo.bundled_photos import photo

    x = photo("astronaut", tensor=True)
    box = mtcnn.detect(x)["boxes"]
    crop = mtcnn.face_crops(x, box)
    clf = M.FaceClassifier(mtcnn.onet).eval()
    assert clf(crop).argmax(1).item() == 1
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    cam = explain(clf, crop, "grad-cam", target=1)
    assert cam.shape == (1, 48, 48) and torch.isfinite(cam).all() and cam.max() > 0
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())
    # P-Net as a dense face / no-face "segmenter": its face windows summed, explained at input size.
    small = torch.nn.functional.interpolate(x[None], scale_factor=0.135, mode="area")
    dense = M.FaceClassifier(mtcnn.pnet).eval()
    assert dense.task == "segmentation" and dense(small).shape[-2:] == tuple(map(M.pnet_output_size, small.shape[-2:]))
    cam = explain(dense, small, "grad-cam", target=1)
    assert cam.shape == (1, *small.shape[-2:]) and torch.isfinite(cam).all()


def test_detect_refuses_bad_input():
    m = M.MTCNN()
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        m.detect(torch.rand(1, 3, 50, 50))
    with pytest.raises(ValueError, match="factor"):
        m.detect(torch.rand(3, 50, 50), factor=1.5)
    with pytest.raises(ValueError, match="min_size"):
        m.detect(torch.rand(3, 50, 50), min_size=5)
    with pytest.raises(ValueError, match=r"propose\(\) takes one RGB image"):
        m.propose(torch.rand(50, 50))
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\)"):
        m.face_crops(torch.rand(3, 50, 50), torch.zeros(4))


def test_missing_weights_name_the_install_command(monkeypatch):
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsUnavailableError, match="pip install --no-deps facenet-pytorch==2.6.0"):
        M.load_mtcnn()


@needs_weights
def test_later_stages_only_remove_proposals(mtcnn):
    """The cascade narrows down: P-Net's loose proposals on a face-free photo are all rejected by
    R-Net / O-Net, and a stricter P-Net threshold keeps a subset of windows."""
    from guidewidgets.zoo.bundled_photos import photo

    cat = photo("cat", tensor=True)
    loose, strict = mtcnn.propose(cat, threshold=0.3), mtcnn.propose(cat, threshold=0.6)
    assert len(loose) > len(strict) > 0 and (strict[:, 4] > 0.6).all()
    assert len(mtcnn.detect(cat, thresholds=(0.3, 0.3, 0.3))["boxes"]) == 0
    crops = mtcnn.face_crops(cat, strict[:, :4], 24)
    assert crops.shape == (len(strict), 3, 24, 24) and crops.min() >= 0 and crops.max() <= 1
