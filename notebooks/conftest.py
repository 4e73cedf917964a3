"""Print each tutorial notebook's wall time at the end of a pytest run (measured, never asserted).

nbval turns every notebook into one test item per cell; the kernel starts in the first cell's
setup and stops in the last cell's teardown. Summing every phase of every item of a notebook
therefore gives the notebook's wall time under nbval, kernel start-up included.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

_seconds: dict[str, float] = defaultdict(float)
_failed: set[str] = set()


def _notebook_of(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    return Path(path).name if path.endswith(".ipynb") else None


def pytest_runtest_logreport(report) -> None:
    name = _notebook_of(report.nodeid)
    if name is None:
        return
    _seconds[name] += report.duration
    if report.failed:
        _failed.add(name)


def pytest_terminal_summary(terminalreporter) -> None:
    if not _seconds:
        return
    terminalreporter.write_sep("-", "notebook wall times under nbval (not asserted)")
    for name in sorted(_seconds):
        status = "FAILED" if name in _failed else "ok"
        terminalreporter.write_line(f"{name:<32} {_seconds[name]:7.1f} s  {status}")
    terminalreporter.write_line(f"{'total':<32} {sum(_seconds.values()):7.1f} s")
