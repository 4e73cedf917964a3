"""Binder's environment (binder/), checked without Docker.

mybinder.org builds the image with repo2docker, which reads only binder/: it installs
binder/requirements.txt (CPU-only torch from the PyTorch CPU index), runs binder/postBuild
(`pip install --no-deps .`, the package and its embedded weights) and opens the quickstart in
JupyterLab or as a Voila app. No Docker engine runs here, so the last test rebuilds that recipe in
a fresh virtual environment and executes notebooks/00_quickstart.ipynb in it with nbclient.

One honest difference: the PyTorch CPU index (download.pytorch.org) is not reachable from this
machine or from CI, only PyPI. The test therefore strips the `--extra-index-url` line and maps the
CPU pins `torch==X+cpu` / `torchvision==Y+cpu` to the same versions from PyPI (the CUDA builds,
which run fine on a CPU), whose numbers must equal .ci/constraints.txt. Everything else in the
file, and postBuild itself, is used as Binder uses it. The venv is cached under
~/.cache/guidewidgets/ keyed by a hash of binder/requirements.txt and .ci/constraints.txt: the
first run takes a few minutes (torch is large), later runs only reinstall the package.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
REQUIREMENTS = BINDER / "requirements.txt"
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
QUICKSTART = ROOT / "notebooks" / "00_quickstart.ipynb"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PIP_FAST_FAIL = ["--timeout", "10", "--retries", "0", "--disable-pip-version-check"]


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _pins(path: Path) -> dict[str, str]:
    """{canonical name: version} for every `name==version` line."""
    pins = {}
    for line in _requirement_lines(path):
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", line)
        if m:
            pins[_canon(m.group(1))] = m.group(2)
    return pins


def _names(path: Path) -> set[str]:
    names = set()
    for line in _requirement_lines(path):
        if line.startswith("-"):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)", line)
        if m:
            names.add(_canon(m.group(1)))
    return names


# --- the files repo2docker reads ------------------------------------------------------------------


def test_binder_folder_has_what_repo2docker_reads():
    assert REQUIREMENTS.is_file()
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime), runtime
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    script = post_build.read_text()
    assert script.startswith("#!"), "postBuild needs a shebang line"
    # repo2docker does not install the project once binder/ exists: postBuild must.
    assert re.search(r"pip install[^\n]*--no-deps[^\n]* \.(\s|$)", script), script


def test_binder_torch_is_the_cpu_build_of_the_ci_pins():
    lines = _requirement_lines(REQUIREMENTS)
    assert f"--extra-index-url {CPU_INDEX}" in lines
    binder, ci = _pins(REQUIREMENTS), _pins(CONSTRAINTS)
    for name in ("torch", "torchvision"):
        assert binder.get(name) == f"{ci[name]}+cpu", (
            f"binder/requirements.txt should pin {name}=={ci[name]}+cpu to match .ci/constraints.txt"
        )


def test_binder_installs_every_runtime_dependency_and_the_apps():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {_canon(re.match(r"[A-Za-z0-9_.\-]+", d).group(0)) for d in project["dependencies"]}
    needed |= {"jupyterlab", "voila"}
    missing = needed - _names(REQUIREMENTS)
    assert not missing, f"binder/requirements.txt lacks {sorted(missing)}"


# --- the recipe, rebuilt in a fresh venv ------------------------------------------------------------


def _local_requirements() -> str:
    """binder/requirements.txt as installable here: no CPU index, `+cpu` pins mapped to PyPI's."""
    ci = _pins(CONSTRAINTS)
    out = []
    for line in _requirement_lines(REQUIREMENTS):
        if line.startswith(("--extra-index-url", "--index-url")) and "download.pytorch.org" in line:
            continue
        m = re.match(r"^(torch|torchvision)\s*==\s*([^\s;]+)\+cpu$", line)
        if m:
            name, version = m.groups()
            assert version == ci[name], f"{name} {version}+cpu in binder/ vs {ci[name]} in .ci/"
            line = f"{name}=={ci[name]}"
        out.append(line)
    return "\n".join(out) + "\n"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two test runs must not build the same venv at once
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def binder_venv() -> Path:
    key = hashlib.sha1(REQUIREMENTS.read_bytes() + CONSTRAINTS.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("GUIDEWIDGETS_CACHE", Path.home() / ".cache" / "guidewidgets"))
    venv_dir = cache / f"binder-venv-{key}"
    with _locked(cache / f"binder-venv-{key}.lock"):
        if not (venv_dir / ".ready").exists():
            shutil.rmtree(venv_dir, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv_dir)])
            reqs = venv_dir / "requirements-local.txt"
            reqs.write_text(_local_requirements())
            _run(
                [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "-q", *PIP_FAST_FAIL, "-r", str(reqs)],
                timeout=1500,
            )
            (venv_dir / ".ready").touch()
    return venv_dir


def _clean_env(venv_dir: Path, home: Path) -> dict[str, str]:
    """The environment of a fresh Binder session: the venv first on PATH, no PYTHONPATH, own Jupyter dirs."""
    for sub in ("config", "data", "runtime", "ipython", "mpl"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv_dir),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IPYTHONDIR=str(home / "ipython"),
        MPLCONFIGDIR=str(home / "mpl"),
        TORCH_HOME=str(home / "torch"),  # postBuild's best-effort weight download lands here, not in ~
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
    )
    return env


_EXECUTE = textwrap.dedent(
    """
    import json, sys
    import nbformat
    from nbclient import NotebookClient
    import guidewidgets
    import jupyterlab, voila  # noqa: F401  (the two front ends the badges open)

    # The installed package, not the checkout: Binder has no PYTHONPATH trick.
    assert "site-packages" in guidewidgets.__file__, guidewidgets.__file__
    nb = nbformat.read(sys.argv[1], as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": sys.argv[2]}}).execute()
    views = sum(
        "application/vnd.jupyter.widget-view+json" in out.get("data", {})
        for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    print(json.dumps({"widget_views": views, "package": guidewidgets.__file__}))
    """
)


@pytest.mark.slow
def test_binder_environment_installs_the_package_and_runs_the_quickstart(binder_venv, tmp_path):
    """repo2docker's recipe: requirements, then postBuild from the repository root, then the app."""
    # postBuild runs `pip install --no-deps .` in the repository root; run it on a copy holding
    # what the build needs, so the checkout gets no build/ or egg-info debris.
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("pyproject.toml", "README.md", "binder", ".ci"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, repo / name)
    shutil.copytree(ROOT / "guidewidgets", repo / "guidewidgets", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(
        ROOT / "notebooks", repo / "notebooks", ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    )
    env = _clean_env(binder_venv, tmp_path / "home")
    env["PIP_TIMEOUT"], env["PIP_RETRIES"] = "10", "0"
    _run(["bash", str(repo / "binder" / "postBuild")], cwd=repo, env=env, timeout=600)

    workdir = repo / "notebooks"  # the kernel's cwd, as in JupyterLab and Voila
    proc = _run(
        [str(binder_venv / "bin" / "python"), "-c", _EXECUTE, str(workdir / QUICKSTART.name), str(workdir)],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert str(binder_venv) in report["package"]
    assert report["widget_views"] >= 2, "the quickstart should display the ExplainWidget and the GuideWidget"
