"""The house limits (CONTRIBUTING.md): short functions, short modules, short test files.

They hold from now on because this test reads the tree: a new 81-line function or a 501-line module
fails here with its name and length, not in a review weeks later.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "guidewidgets"
MAX_FUNCTION = 80  # lines of a def, decorators excluded, docstring included
MAX_MODULE = 500
MAX_WIDGET_MODULE = 450  # a widget is a thin view over its session
MAX_TEST_FILE = 600


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def long_functions(path: Path, limit: int = MAX_FUNCTION) -> list[str]:
    """``file:line name (n lines)`` for every function or method in ``path`` longer than ``limit``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            if n > limit:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    return found


def long_files(paths: list[Path], limit: int) -> list[str]:
    """``file (n lines)`` for every file in ``paths`` longer than ``limit`` lines."""
    return [f"{p.relative_to(ROOT)} ({n} lines)" for p in paths if (n := _lines(p)) > limit]


def test_no_function_over_80_lines() -> None:
    found = [f for p in sorted(PACKAGE.rglob("*.py")) for f in long_functions(p)]
    assert not found, "functions over 80 lines; split them by what each part does:\n" + "\n".join(found)


def test_no_module_over_500_lines_and_no_widget_over_450() -> None:
    modules = [p for p in sorted(PACKAGE.rglob("*.py")) if "widgets" not in p.parts]
    widgets = sorted((PACKAGE / "widgets").rglob("*.py"))
    found = long_files(modules, MAX_MODULE) + long_files(widgets, MAX_WIDGET_MODULE)
    assert not found, "modules over the limit (500 lines, widgets 450):\n" + "\n".join(found)


def test_no_test_file_over_600_lines() -> None:
    tests = sorted(p for p in (ROOT / "tests").rglob("*.py"))
    found = long_files(tests, MAX_TEST_FILE)
    assert not found, "test files over 600 lines; split them by what they test:\n" + "\n".join(found)


def test_the_limits_catch_a_long_function(tmp_path: Path) -> None:
    """The check itself can fail: a planted 81-line function is found, an 80-line one is not."""
    body = "\n".join(f"    x{i} = {i}" for i in range(79))
    short = tmp_path / "short.py"
    short.write_text(f"def f():\n{body}\n")
    long = tmp_path / "long.py"
    long.write_text(f"def g():\n{body}\n    return 0\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert long_functions(short) == []
        assert long_functions(long) == ["long.py:1 g (81 lines)"]
        assert long_files([long], 80) == ["long.py (81 lines)"]
    finally:
        ROOT = saved
