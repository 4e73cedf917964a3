"""The README keeps its promises: the two commands CI runs, a picture of every widget, every method
in its table, and no link to a file that is not there."""

from __future__ import annotations

import re
from pathlib import Path

from guidewidgets import explain, widgets

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_two_commands_are_the_ones_ci_runs() -> None:
    assert "`make demo`" in README and "`make test`" in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test\b", ci, re.M), ".ci/run must run the README's test command"


def test_every_widget_has_a_picture() -> None:
    for entry in widgets.WIDGETS:
        picture = f"docs/img/{entry.screenshot}"
        assert f"]({picture})" in README, f"README shows no picture of {entry.name} ({picture})"
        assert (ROOT / picture).is_file(), f"{picture} is missing"


def test_every_method_is_in_the_table() -> None:
    rows = set(re.findall(r"^\| `([a-z0-9+-]+)` \|", README, re.M))
    missing = [name for name in explain.methods() if name not in rows]
    assert not missing, f"methods missing from the README's table: {missing}"
    unknown = sorted(rows - set(explain.methods()))
    assert not unknown, f"the README's table lists methods that are not registered: {unknown}"


def test_relative_links_point_at_files_that_exist() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    assert local, "the README links no file: the link pattern is broken"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links files that do not exist: {missing}"


def test_every_widget_is_in_the_browser_layout_test() -> None:
    layout = (ROOT / "tests" / "browser" / "test_layout_browser.py").read_text(encoding="utf-8")
    missing = [entry.name for entry in widgets.WIDGETS if f"{entry.name}(" not in layout]
    assert not missing, f"tests/browser/test_layout_browser.py does not show {missing}"


def test_the_opening_lines_count_the_registered_methods():
    """The count in the first paragraph (README and the site's index) is the registry's, so a new
    method cannot leave it stale."""
    n = len(explain.methods())
    for page in ("README.md", "docs/site/index.md"):
        found = re.search(r"\((\d+) methods", (ROOT / page).read_text(encoding="utf-8"))
        assert found, f"{page}: no '(N methods' in its opening lines"
        assert int(found.group(1)) == n, f"{page} says {found.group(1)} methods; the registry has {n}"
