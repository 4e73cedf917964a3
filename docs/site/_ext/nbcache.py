"""The executed-lesson cache shared by the docs build and the notebook tests.

A lesson is executed once per change and the docs site is rendered from that copy:

- ``make test`` runs every notebook under nbval; ``notebooks/conftest.py`` writes each notebook
  that passed, with the outputs nbval collected, into this cache;
- ``make docs`` (and ``tests/test_docs.py``) look each lesson up here and execute only those
  that are missing (:func:`execute`), with the same kernel start-up file.

An entry is keyed by the notebook's code cells, the package's code and weights, the start-up file and the
Python environment, so a figure is never older than the code that drew it; markdown edits need no
re-execution (the docs merge the cached outputs into the current notebook).
``GUIDEWIDGETS_DOCS_STALE_OK=1`` accepts an entry made with other package files (a quick preview
while writing prose; its figures may be out of date). The folder is ``GUIDEWIDGETS_DOCS_CACHE``,
by default ``~/.cache/guidewidgets/docs-notebooks``.
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "guidewidgets"
NOTEBOOKS = REPO / "notebooks"
STARTUP = Path(__file__).with_name("snapshot_startup.py")
CELL_TIMEOUT_S = 1800  # nbval's cells have 2000 s; a lesson's slowest cell takes well under a minute


def cache_dir() -> Path:
    """Where executed lessons are kept (created on first use)."""
    default = Path.home() / ".cache" / "guidewidgets" / "docs-notebooks"
    return Path(os.environ.get("GUIDEWIDGETS_DOCS_CACHE") or default)


def code_digest(nb: Any) -> str:
    """Hash of what execution depends on inside the notebook: its code cells, in order."""
    h = hashlib.sha1()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode())
            h.update(b"\0")
    return h.hexdigest()[:16]


def package_digest() -> str:
    """Hash of the package's code and weights, the kernel start-up file and the interpreter's environment.

    Only ``*.py`` and ``*.pt`` files count: what a test run leaves in the tree (caches, stores) must
    not make the docs execute every lesson again.
    """
    h = hashlib.sha1(sys.prefix.encode())
    files = sorted(p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".pt") and "__pycache__" not in p.parts)
    for path in [*files, STARTUP]:
        h.update(str(path.relative_to(REPO)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _entry(stem: str, code: str, package: str) -> Path:
    return cache_dir() / f"{stem}.{code}.{package}.ipynb"


def lookup(path: Path, package: str, stale_ok: bool | None = None) -> Any | None:
    """The cached executed copy of the notebook at ``path`` (outputs merged into its current
    markdown), or None when there is none for these code cells and this package."""
    if stale_ok is None:
        stale_ok = os.environ.get("GUIDEWIDGETS_DOCS_STALE_OK", "") not in ("", "0")
    nb = nbformat.read(path, as_version=4)
    code = code_digest(nb)
    entry = _entry(path.stem, code, package)
    if not entry.is_file() and stale_ok:
        others = sorted(cache_dir().glob(f"{path.stem}.{code}.*.ipynb"), key=lambda p: p.stat().st_mtime)
        entry = others[-1] if others else entry
    if not entry.is_file():
        return None
    executed = nbformat.read(entry, as_version=4)
    return merge_outputs(nb, executed)


def merge_outputs(nb: Any, executed: Any) -> Any:
    """``nb`` with the outputs of ``executed``, a run of the same code cells."""
    out = copy.deepcopy(nb)
    ran = [c for c in executed.cells if c.cell_type == "code"]
    mine = [c for c in out.cells if c.cell_type == "code"]
    if len(ran) != len(mine):
        raise ValueError(f"the cached run of {nb.metadata.get('name', 'a notebook')} has other code cells")
    for cell, done in zip(mine, ran):
        cell.outputs = done.outputs
        cell.execution_count = done.execution_count
    out.metadata.pop("widgets", None)  # live widget state has no use in a static page
    return out


def store(stem: str, executed: Any, package: str) -> Path:
    """Keep an executed notebook; older entries of the same lesson are removed."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    entry = _entry(stem, code_digest(executed), package)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        nbformat.write(executed, f)
    os.replace(tmp, entry)  # atomic: a concurrent build never reads half a notebook
    for old in folder.glob(f"{stem}.*.ipynb"):
        if old != entry:
            old.unlink(missing_ok=True)
    return entry


def kernel_env() -> dict[str, str]:
    """The environment of a lesson's kernel: this checkout importable, the snapshot start-up file."""
    env = dict(os.environ)
    env["PYTHONSTARTUP"] = str(STARTUP)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def execute(path: Path) -> Any:
    """Run the notebook at ``path`` top to bottom in a fresh kernel of this interpreter.

    Output sent to an ``ipywidgets.Output`` stays in the cell's outputs (as under nbval), and no
    widget state is stored: the page shows figures and widget snapshots, not live widgets.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=False,
    )
    client.widget_registry = {}  # no Output-widget emulation: what a cell prints stays in the cell
    try:
        client.execute(env=kernel_env())
    except CellExecutionError as err:
        raise RuntimeError(f"{path.name} failed while executing it for the docs: {err}") from None
    return nb
