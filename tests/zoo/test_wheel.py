"""The built wheel carries the trained weights: installed into a clean venv and run outside the
repository, both shipped models load from the installed package and reach their numbers."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHECK = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(2)
    import guidewidgets, guidewidgets.zoo as zoo
    from guidewidgets.zoo.train import evaluate
    cls = zoo.load("shapes-classifier")
    seg = zoo.load("shapes-segmenter")
    acc = evaluate(cls, zoo.ShapeScenes(300, seed=31337))["accuracy"]
    miou = evaluate(seg, zoo.ShapeScenes(150, seed=31337, task="segmentation"))["miou"]
    print(json.dumps({"file": guidewidgets.__file__, "weights": str(zoo.weights_path("shapes-segmenter")),
                      "accuracy": acc, "miou": miou}))
    """
)


def _run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_wheel_ships_the_models(tmp_path):
    # Build from a copy so the checkout gets no build/ or egg-info debris.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "guidewidgets", src / "guidewidgets", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(dist)])
    (wheel,) = dist.glob("guidewidgets-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "guidewidgets/zoo/weights/shapes-classifier.pt" in names
    assert "guidewidgets/zoo/weights/shapes-segmenter.pt" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    # Why: a venv made from a venv's python sees the base interpreter's packages, not torch and
    # friends in the test venv; a .pth after the new venv's own site-packages adds them.
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(purelib, "_outer_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["GUIDEWIDGETS_OFFLINE"] = "1"
    out = _run([str(py), "-c", CHECK], cwd=work, env=env).stdout.strip().splitlines()[-1]
    got = json.loads(out)
    assert got["file"].startswith(str(venv)), got["file"]
    assert got["weights"].startswith(str(venv)), got["weights"]
    print(f"\nfrom the installed wheel: accuracy {100 * got['accuracy']:.1f}%, mIoU {100 * got['miou']:.1f}")
    assert got["accuracy"] >= 0.95
    assert 0.55 <= got["miou"] <= 0.80
