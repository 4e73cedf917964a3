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


# Test files at the top of tests/ that check the repository (README, notebooks, docs, Binder, these
# limits) or the sessions across packages, rather than one module of the package.
REPOSITORY_CHECKS = {
    "test_binder",
    "test_docs",
    "test_house_limits",
    "test_notebook_numbers",
    "test_notebooks",
    "test_readme",
    "test_sessions",
}


def misplaced_tests(tests: Path, package: Path) -> list[str]:
    """Test files that do not mirror the package: ``tests/<sub>/`` must name a subpackage of
    ``package`` (or ``browser``), and a top-level ``tests/test_<name>.py`` a top-level module or a
    repository check."""
    subpackages = {p.parent.name for p in package.glob("*/__init__.py")} | {"browser"}
    modules = {f"test_{p.stem}" for p in package.glob("*.py")}
    found = []
    for path in sorted(tests.rglob("test_*.py")):
        parts = path.relative_to(tests).parts
        if len(parts) == 1 and path.stem not in modules | REPOSITORY_CHECKS:
            found.append(f"{path.relative_to(tests.parent)}: no module guidewidgets/{path.stem[5:]}.py")
        elif len(parts) > 1 and parts[0] not in subpackages:
            found.append(f"{path.relative_to(tests.parent)}: no subpackage guidewidgets/{parts[0]}/")
    return found


def test_tests_mirror_the_package_tree() -> None:
    found = misplaced_tests(ROOT / "tests", PACKAGE)
    assert not found, "tests/ mirrors guidewidgets/ (CONTRIBUTING.md):\n" + "\n".join(found)


def test_the_mirror_check_catches_a_stray_file(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("")
    tests = tmp_path / "tests"
    for name in ("sub/test_a.py", "test_mod.py", "test_docs.py", "other/test_b.py", "test_sub_c.py"):
        (tests / name).parent.mkdir(parents=True, exist_ok=True)
        (tests / name).write_text("")
    assert misplaced_tests(tests, tmp_path / "pkg") == [
        "tests/other/test_b.py: no subpackage guidewidgets/other/",
        "tests/test_sub_c.py: no module guidewidgets/sub_c.py",
    ]


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
