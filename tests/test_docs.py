"""The documentation site (``make docs``) builds without a warning and holds what it promises.

The build reads the lessons from the executed-lesson cache (``docs/site/_ext/nbcache.py``): in
``make test`` the nbval run of ``notebooks/`` fills it and this module runs after the notebooks
(``notebooks/conftest.py``), so no lesson is executed twice. Run alone with a cold cache, the build
executes the missing lessons itself (minutes).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

for _module in ("sphinx", "myst_nb", "furo"):
    pytest.importorskip(_module, reason=f"{_module} is missing: install the docs extra (`make env` does)")

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "site"
LESSONS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
MODULES = ("explain", "guide", "gain", "features", "localize", "metrics", "attend", "basics", "segnets", "zoo")
MODULES += ("widgets", "hooks", "render", "jobs", "owners", "guide.noc")


class Page(HTMLParser):
    """The ids, links and images of one HTML page."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (attribute, value) of href / src
        self.images = 0
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)
            elif key in ("href", "src") and value:
                self.links.append((key, value))
        self.images += tag == "img"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(out / "doctrees"), str(SITE), str(out / "html")]
    env = {**os.environ, "GUIDEWIDGETS_OFFLINE": "1"}
    env.pop("GUIDEWIDGETS_DOCS_ONLY", None)  # the test checks the whole site
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    problems = "\n".join(line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line)
    assert done.returncode == 0, f"the site does not build cleanly (make docs):\n{problems or done.stderr[-4000:]}"
    executed = [line for line in done.stdout.splitlines() if line.startswith("[gwdocs] executing")]
    if executed:  # not an error: said so that a run that executes the lessons twice is visible
        warnings.warn(f"the docs build executed {len(executed)} lessons itself: " + "; ".join(executed), stacklevel=1)
    return (out / "html").resolve()


@pytest.fixture(scope="module")
def pages(site: Path) -> dict[Path, Page]:
    return {path: Page(path) for path in site.rglob("*.html")}


def test_every_lesson_page_shows_its_figures(site: Path, pages: dict[Path, Page]) -> None:
    for stem in LESSONS:
        page = pages.get(site / "lessons" / f"{stem}.html")
        assert page is not None, f"no page for notebooks/{stem}.ipynb"
        rendered = nbformat.read(SITE / "lessons" / f"{stem}.ipynb", as_version=4)
        figures = sum("image/png" in o.get("data", {}) for c in rendered.cells for o in c.get("outputs", []))
        assert page.images > 0, f"{stem}: a lesson page without a single figure"
        assert page.images >= figures, f"{stem}: {figures} figures in the notebook, {page.images} on the page"
        assert any("mybinder.org" in v for _, v in page.links), f"{stem}: no link to open the lesson on Binder"


def test_lessons_link_the_api_they_use(site: Path, pages: dict[Path, Page]) -> None:
    for stem in LESSONS:
        api = {v.split("#")[0] for _, v in pages[site / "lessons" / f"{stem}.html"].links if v.startswith("../api/")}
        assert api, f"{stem}: its 'Uses' line links no API page"


def test_widgets_in_lessons_show_a_snapshot(site: Path) -> None:
    text = (site / "lessons" / "00_quickstart.html").read_text(encoding="utf-8")
    assert text.count("gw-snapshot") >= 2, "the quickstart's ExplainWidget and GuideWidget show no snapshot"
    assert "live" in text


def test_api_reference_documents_every_public_name(site: Path, pages: dict[Path, Page]) -> None:
    for mod in MODULES:
        module = importlib.import_module(f"guidewidgets.{mod}")
        page = pages.get(site / "api" / f"{mod}.html")
        assert page is not None, f"no API page for guidewidgets.{mod}"
        missing = [name for name in module.__all__ if f"guidewidgets.{mod}.{name}" not in page.ids]
        assert not missing, f"guidewidgets.{mod}: not in the API reference: {missing}"


def test_method_entries_link_their_lesson_and_paper(site: Path) -> None:
    from guidewidgets import explain

    text = (site / "api" / "explain.html").read_text(encoding="utf-8")
    code = "\n".join(
        c.source
        for p in (ROOT / "notebooks").glob("*.ipynb")
        for c in nbformat.read(p, 4).cells
        if c.cell_type == "code"
    )
    for name in explain.methods():
        func = explain.method_function(name).__name__
        start = text.index(f'id="guidewidgets.explain.{func}"')
        entry = text[start : text.find('<dl class="py', start + 1)]
        assert "scholar.google.com" in entry or "arxiv.org/abs/" in entry, f"{name}: its API entry links no paper"
        if "../lessons/" not in entry:  # allowed only for a method that no lesson uses
            assert "No lesson uses it yet" in entry, f"{name}: its API entry links no lesson"
            assert f'"{name}"' not in code and f".{func}(" not in code, f"{name}: a lesson uses it, the entry says none"


def test_no_internal_link_is_broken(site: Path, pages: dict[Path, Page]) -> None:
    broken = []
    for path, page in pages.items():
        for attr, value in page.links:
            parts = urlsplit(value)
            if parts.scheme or parts.netloc or value.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{path.relative_to(site)}: {attr}={value} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else Page(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(site)}: {attr}={value} (no such anchor)")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:40])
