"""Notebook runs under nbval: wall times, and the executed lessons the docs site is built from.

nbval turns every notebook into one test item per cell; the kernel starts in the first cell's
setup and stops in the last cell's teardown. Summing every phase of every item of a notebook
therefore gives the notebook's wall time under nbval, kernel start-up included.

The same run feeds the docs (``make docs``, ``tests/test_docs.py``): each kernel starts with the
docs' start-up file (every guidewidgets widget then also offers its PNG export, as it does when
the docs execute a lesson), and a notebook whose every cell passed is written with its outputs
into the executed-lesson cache (``docs/site/_ext/nbcache.py``). ``tests/test_docs.py`` is moved
after the notebooks, so the site is built from this run instead of executing every lesson again.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

_seconds: dict[str, float] = defaultdict(float)
_failed: set[str] = set()
_DOCS_TEST = "tests/test_docs.py"


def _load_nbcache() -> Any | None:
    path = Path(__file__).resolve().parents[1] / "docs" / "site" / "_ext" / "nbcache.py"
    if not path.is_file():  # a copy of the notebooks without the docs (a test's scratch checkout)
        return None
    spec = importlib.util.spec_from_file_location("guidewidgets_docs_nbcache", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError:  # nbformat missing: the notebooks cannot run either, nothing to feed
        return None
    return module


_nbcache = _load_nbcache()


class _Run:
    """The cells of one notebook in this session and how they went."""

    def __init__(self, parent: Any) -> None:
        self.parent = parent
        self.cells: list[Any] = []
        self.passed = 0
        self.package = ""


_runs: dict[str, _Run] = {}  # notebook file name -> its run


def _notebook_of(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    return Path(path).name if path.endswith(".ipynb") else None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[Any]) -> None:
    cells = [item for item in items if _notebook_of(item.nodeid)]
    if not cells:
        return
    # the docs test builds the site from what the notebooks leave in the cache: run it after them
    docs = [item for item in items if item.nodeid.startswith(_DOCS_TEST)]
    if docs:
        items[:] = [item for item in items if not item.nodeid.startswith(_DOCS_TEST)] + docs
    if _nbcache is None:
        return
    package = _nbcache.package_digest()
    for item in cells:
        name = _notebook_of(item.nodeid)
        run = _runs.setdefault(name, _Run(item.parent))
        run.cells.append(item)
        run.package = package


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: Any):
    run = _runs.get(_notebook_of(item.nodeid) or "")
    if run is None or item is not run.cells[0]:
        yield
        return
    # the first cell's setup starts the kernel: give it the docs' start-up file
    old = os.environ.get("PYTHONSTARTUP")
    os.environ["PYTHONSTARTUP"] = str(_nbcache.STARTUP)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONSTARTUP", None)
        else:
            os.environ["PYTHONSTARTUP"] = old


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = _notebook_of(report.nodeid)
    if name is None:
        return
    _seconds[name] += report.duration
    if report.failed:
        _failed.add(name)
    run = _runs.get(name)
    if run is None:
        return
    if report.when == "call" and report.passed:
        run.passed += 1
    if report.when == "teardown" and report.nodeid == run.cells[-1].nodeid:
        _feed_docs(name, run)


def _feed_docs(name: str, run: _Run) -> None:
    """Keep the executed notebook for the docs when every one of its code cells ran and passed."""
    nb = run.parent.nb
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    if name in _failed or run.passed != len(code_cells) or len(run.cells) != len(code_cells):
        return  # a failed, skipped or deselected cell: the docs execute this one themselves
    executed = copy.deepcopy(nb)
    ran = [c for c in executed.cells if c.cell_type == "code"]
    for cell, item in zip(ran, run.cells):
        cell.outputs = list(item.test_outputs or [])
        cell.execution_count = next(
            (o["execution_count"] for o in cell.outputs if o.get("output_type") == "execute_result"), None
        )
    _nbcache.store(Path(name).stem, executed, run.package)


def pytest_terminal_summary(terminalreporter) -> None:
    if not _seconds:
        return
    terminalreporter.write_sep("-", "notebook wall times under nbval (not asserted)")
    for name in sorted(_seconds):
        status = "FAILED" if name in _failed else "ok"
        terminalreporter.write_line(f"{name:<32} {_seconds[name]:7.1f} s  {status}")
    terminalreporter.write_line(f"{'total':<32} {sum(_seconds.values()):7.1f} s")
