"""Sphinx extension that writes the generated parts of the guidewidgets site before Sphinx reads.

On ``builder-inited`` it writes (into the source folder, git-ignored):

- ``lessons/<name>.ipynb``: each tutorial notebook with its outputs (from the executed-lesson
  cache, see :mod:`nbcache`; executed now when missing), a Binder link and a "Uses" line that
  links the API of what the lesson imports, a link target before each heading, and every live
  widget replaced by its own PNG export with a caption (or, for plain controls, a note);
- ``api/<module>.rst``: one page per public module, its ``__all__`` in order;
- ``_generated/methods_table.md``: the method registry as a table, with lesson and paper links.

On ``autodoc-process-docstring`` it adds to each registered method's entry the lesson section
that teaches it and its paper. A file is rewritten only when its text changed, so an unchanged
second build re-reads nothing.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import sys
import types
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbcache
import nbformat

from guidewidgets.widgets import WIDGETS

#: the public modules documented in the API reference, in the order of the package's layers
MODULES = (
    "explain",
    "guide",
    "gain",
    "features",
    "localize",
    "metrics",
    "attend",
    "basics",
    "segnets",
    "zoo",
    "widgets",
    "hooks",
    "render",
    "jobs",
    "owners",
    "guide.noc",
)
#: the screenshot of each widget, shown when a lesson's run left no PNG export of it
WIDGET_SCREENSHOTS = {entry.name: entry.screenshot for entry in WIDGETS}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# lessons other than the tour come first when looking for the lesson that teaches a method
TOUR = "00_quickstart"


@dataclass
class Lesson:
    stem: str
    title: str
    headings: list[tuple[str, str]] = field(default_factory=list)  # (label, heading text)
    cell_heading: list[str | None] = field(default_factory=list)  # per cell: the label of its section


# ---- small helpers ------------------------------------------------------------------------------
def lesson_paths() -> list[Path]:
    """The notebooks to render: all, or for a quick preview only the stems listed (comma separated)
    in ``GUIDEWIDGETS_DOCS_ONLY``."""
    paths = sorted(nbcache.NOTEBOOKS.glob("*.ipynb"))
    only = [s.strip() for s in os.environ.get("GUIDEWIDGETS_DOCS_ONLY", "").split(",") if s.strip()]
    unknown = set(only) - {p.stem for p in paths}
    if unknown:
        raise ValueError(
            f"GUIDEWIDGETS_DOCS_ONLY names no notebook {sorted(unknown)}; they are {[p.stem for p in paths]}"
        )
    return [p for p in paths if not only or p.stem in only]


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text``, leaving the file (and its mtime) alone when it already holds it."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def binder_url(repo: str, stem: str) -> str:
    return f"https://mybinder.org/v2/gh/{repo}/HEAD?labpath=notebooks/{stem}.ipynb"


def paper_url(reference: str) -> str:
    """A link to the paper of a registry reference: arXiv when it names an arXiv id, else a
    Google Scholar query for the citation (the registry stores citations, not URLs)."""
    arxiv = re.search(r"arXiv:(\d{4}\.\d{4,5})", reference)
    if arxiv:
        return f"https://arxiv.org/abs/{arxiv.group(1)}"
    citation = re.sub(r"\s*\(.*\)\s*$", "", reference.split(";")[0])
    return "https://scholar.google.com/scholar?q=" + urllib.parse.quote_plus(citation)


def label_for(stem: str, n: int) -> str:
    return f"gw-{stem.replace('_', '-')}-s{n}"


def documented_names() -> dict[int, str]:
    """id(object) -> the name under which the API reference documents it."""
    names: dict[int, str] = {}
    for mod in MODULES:
        module = importlib.import_module(f"guidewidgets.{mod}")
        for name in getattr(module, "__all__", []):
            names.setdefault(id(getattr(module, name)), f"guidewidgets.{mod}.{name}")
    return names


def role_for(obj: Any) -> str:
    if inspect.isclass(obj):
        return "py:class"
    if callable(obj):
        return "py:func"
    return "py:data"


# ---- lessons ------------------------------------------------------------------------------------
_HEADING = re.compile(r"^(#{1,4})\s+(.+?)\s*#*\s*$")


def add_heading_targets(nb: Any, stem: str) -> Lesson:
    """Put a MyST target before every heading (outside code fences); remember the sections."""
    lesson = Lesson(stem, stem)
    n, current = 0, None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines, fenced = [], False
            for line in cell.source.splitlines():
                if line.lstrip().startswith(("```", "~~~")):
                    fenced = not fenced
                m = None if fenced else _HEADING.match(line)
                if m and len(m.group(1)) == 1 and lesson.title == stem:
                    lesson.title = m.group(2)
                elif m:
                    n += 1
                    current = label_for(stem, n)
                    lesson.headings.append((current, m.group(2)))
                    lines.append(f"({current})=")
                lines.append(line)
            cell.source = "\n".join(lines)
        lesson.cell_heading.append(current)
    return lesson


def widget_name(data: dict[str, Any]) -> str:
    m = re.match(r"(\w+)\(", str(data.get("text/plain", "")))
    return m.group(1) if m else "widget"


def replace_widgets(nb: Any, stem: str, repo: str) -> None:
    """Each live widget becomes what a static page can show: the widget's own PNG export with a
    caption, or a note for plain controls (sliders) whose figure is drawn below them."""
    live = f"[open this lesson on Binder]({binder_url(repo, stem)})"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            data = out.get("data", {})
            if WIDGET_MIME not in data:
                outputs.append(out)
                continue
            name = widget_name(data)
            if "image/png" in data:
                caption = (
                    f"The {name} as it looked when this cell ran (its own *Export PNG* picture, taken when the "
                    f"site was built). In Jupyter it is live: {live} to use it."
                )
                cell.metadata.setdefault("mystnb", {})["figure"] = {"caption": caption, "classes": "gw-snapshot"}
                cell.metadata["mystnb"]["image"] = {"alt": f"{name} snapshot"}
                outputs.append(nbformat.v4.new_output("display_data", data={"image/png": data["image/png"]}))
            elif name in WIDGET_SCREENSHOTS:
                text = (
                    f"![{name} screenshot](../../img/{WIDGET_SCREENSHOTS[name]})\n\n"
                    f"*A screenshot of the {name}; in Jupyter it is live: {live} to use it.*"
                )
                outputs.append(nbformat.v4.new_output("display_data", data={"text/markdown": text}))
            else:
                text = f"*Interactive controls: live in Jupyter, {live} to move them.*"
                outputs.append(nbformat.v4.new_output("display_data", data={"text/markdown": text}))
        cell.outputs = outputs


def _cell_tree(source: str) -> ast.AST | None:
    # IPython magics and shell lines are not Python; a cell that still does not parse is skipped
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        return ast.parse(code)
    except SyntaxError:
        return None


def uses_of(nb: Any, documented: dict[int, str], method_funcs: dict[str, Any]) -> dict[str, list[str]]:
    """Documented module -> documented names of what the lesson's code imports and calls."""
    aliases: dict[str, Any] = {}
    found: dict[str, list[str]] = {}

    def note(obj: Any, as_name: str | None = None) -> None:
        if isinstance(obj, types.ModuleType):
            top = ".".join(obj.__name__.split(".")[:2])
            if top.removeprefix("guidewidgets.") in MODULES:
                found.setdefault(top, [])
            return
        name = documented.get(id(obj))
        plain = not (callable(obj) or inspect.isclass(obj))
        if name is None or (plain and as_name is not None and name.rsplit(".", 1)[1] != as_name):
            return  # a small int or string is shared by many names: only its own name links it
        mod = name.rsplit(".", 1)[0]
        if name not in found.setdefault(mod, []):
            found[mod].append(name)

    for cell in nb.cells:
        tree = _cell_tree(cell.source) if cell.cell_type == "code" else None
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("guidewidgets"):
                for alias in node.names:
                    try:
                        obj = importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        obj = getattr(importlib.import_module(node.module), alias.name, None)
                    aliases[alias.asname or alias.name] = obj
                    note(obj, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("guidewidgets.") and alias.asname:
                        aliases[alias.asname] = importlib.import_module(alias.name)
                        note(aliases[alias.asname])
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                base = aliases.get(node.value.id)
                if isinstance(base, types.ModuleType):
                    note(getattr(base, node.attr, None), node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in method_funcs:
                note(method_funcs[node.value])
    return found


def uses_markdown(found: dict[str, list[str]]) -> str:
    lines = []

    def place(mod: str) -> int:
        short = mod.removeprefix("guidewidgets.")
        return MODULES.index(short if short in MODULES else short.split(".")[0])

    for mod in sorted(found, key=place):
        short = mod.removeprefix("guidewidgets.")
        items = []
        for name in found[mod]:
            obj = getattr(importlib.import_module(mod), name.rsplit(".", 1)[1])
            items.append(f"{{{role_for(obj)}}}`{name.rsplit('.', 1)[1]} <{name}>`")
        lines.append(f"- {{py:mod}}`{short} <{mod}>`" + (": " + ", ".join(items) if items else ""))
    return "\n".join(lines)


def teaching_cells(nb: Any, name: str, func: Any) -> list[int]:
    """Indexes of the code cells that use a method: by its registry name or its function."""
    literal = re.compile(rf"""["']{re.escape(name)}["']|\.{re.escape(func.__name__)}\(""")
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and literal.search(c.source)]


def prepare_lesson(path: Path, package: str, repo: str, documented: dict[int, str], method_funcs: dict[str, Any]):
    nb = nbcache.lookup(path, package)
    if nb is None:
        print(f"[gwdocs] executing {path.name} (no cached run for this code)", flush=True)
        nbcache.store(path.stem, nbcache.execute(path), package)
        nb = nbcache.lookup(path, package, stale_ok=False)
    lesson = add_heading_targets(nb, path.stem)
    replace_widgets(nb, path.stem, repo)
    found = uses_of(nb, documented, method_funcs)
    intro = [
        f"**Run it live:** [open this lesson on Binder]({binder_url(repo, path.stem)}) (JupyterLab with the "
        f"widgets working), or `make demo` and open `notebooks/{path.name}`.",
    ]
    if found:
        intro += ["", "**Uses** (API reference):", "", uses_markdown(found)]
    first_heading = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
    # a fixed cell id: nbformat draws a random one, which would make every build rewrite the lesson
    nb.cells.insert(first_heading + 1, nbformat.v4.new_markdown_cell("\n".join(intro), id="gw-run-it-live"))
    lesson.cell_heading.insert(first_heading + 1, None)
    return nb, lesson


@dataclass(frozen=True)
class Taught:
    """Where a method is taught: a lesson and the section that first uses it."""

    stem: str
    label: str | None  # the section's target, None when the use comes before any heading
    section: str

    def text(self) -> str:
        number = self.stem.split("_", 1)[0]
        plain = re.sub(r"[`*$<>]", "", self.section)  # markup would break the link text
        return f"lesson {number}, {plain}" if self.label else f"lesson {number}"

    def myst(self) -> str:
        return (
            f"{{ref}}`{self.text()} <{self.label}>`" if self.label else f"{{doc}}`{self.text()} </lessons/{self.stem}>`"
        )

    def rst(self) -> str:
        return f":ref:`{self.text()} <{self.label}>`" if self.label else f":doc:`{self.text()} </lessons/{self.stem}>`"


def lesson_of_methods(
    notebooks: dict[str, Any], lessons: dict[str, Lesson], method_funcs: dict[str, Any]
) -> dict[str, Taught]:
    """Method name -> the lesson section that teaches it: the first section whose heading names the
    method, else the section of its first use in code (the tour last); none when no lesson uses it."""
    from guidewidgets import explain

    order = sorted(notebooks, key=lambda s: (s == TOUR, s))
    taught: dict[str, Taught] = {}
    for name, func in method_funcs.items():
        title = explain.method_info(name).title.split(" (")[0]
        named = re.compile(rf"(?<![\w-]){re.escape(title)}(?![\w+-])", re.IGNORECASE)
        by_heading = (
            Taught(stem, label, text) for stem in order for label, text in lessons[stem].headings if named.search(text)
        )
        found = next(by_heading, None)
        for stem in order if found is None else ():
            cells = teaching_cells(notebooks[stem], name, func)
            if cells:
                label = lessons[stem].cell_heading[cells[0]]
                found = Taught(stem, label, dict(lessons[stem].headings).get(label, "") if label else "")
                break
        if found is not None:
            taught[name] = found
    return taught


# ---- API pages and the methods table ------------------------------------------------------------
def attribute_doc(package: str, name: str, obj: Any) -> list[str] | None:
    """The ``#:`` doc comment of ``name`` in the submodule of ``package`` that defines it, when the
    name is re-exported (autodoc looks only in ``package`` and would fall back to the value's type's
    docstring, e.g. numpy's)."""
    from sphinx.pycode import ModuleAnalyzer

    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith(package + ".") or getattr(module, name, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # a module without source (compiled, generated): not this one
            continue
        if ("", name) in docs:
            return [line for line in docs[("", name)] if line.strip()]
    return None


def api_page(mod: str) -> str:
    module = importlib.import_module(f"guidewidgets.{mod}")
    full = f"guidewidgets.{mod}"
    out = [full, "=" * len(full), "", f".. automodule:: {full}", "   :no-members:", ""]
    names = list(getattr(module, "__all__", []))
    out += [".. autosummary::", "   :nosignatures:", ""] + [f"   {name}" for name in names] + [""]
    for name in names:
        obj = getattr(module, name)
        if inspect.isclass(obj):
            out += [f".. autoclass:: {name}", "   :members:", ""]
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj) or isinstance(obj, types.FunctionType):
            out += [f".. autofunction:: {name}", ""]
        else:
            doc = attribute_doc(full, name, obj)
            if doc is None:
                out += [f".. autodata:: {name}", "   :no-value:", ""]
            else:  # a constant re-exported from a submodule: its ``#:`` comment lives there
                out += [f".. py:data:: {name}", "", *(f"   {line}" for line in doc), ""]
    return "\n".join(out)


def api_index() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings. Each page lists a module's public names (its `__all__`) in the",
        "order of the module; the explanation methods also link the lesson that teaches them and their paper.",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        "",
        *MODULES,
        "```",
        "",
    ]
    return "\n".join(lines)


def methods_table(taught: dict[str, Taught]) -> str:
    """The registry as a table narrow enough for a page: one column of properties."""
    from guidewidgets import explain

    rows = [
        "| method | function | family | properties | taught in | paper |",
        "|---|---|---|---|---|---|",
    ]
    for name in explain.methods():
        info = explain.method_info(name)
        func = explain.method_function(name).__name__
        flags = [
            flag
            for flag, on in (
                ("layer", info.uses_layer),
                ("slow", info.slow),
                ("signed", info.signed),
                ("raw image", info.has_image),
            )
            if on
        ]
        lesson = taught[name].myst() if name in taught else ""
        rows.append(
            f"| `{name}` {info.title} | {{py:func}}`{func} <guidewidgets.explain.{func}>` | {info.family} | "
            f"{', '.join(flags) or '-'} | {lesson} | [{info.reference}]({paper_url(info.reference)}) |"
        )
    legend = (
        "\nProperties: *layer*: the method reads a layer's activations (`layer=`); "
        "*slow*: the widgets compute it in the background with a progress bar; *signed*: evidence against the "
        "class is below zero; *raw image*: `raw=True` gives the method's (B, C, H, W) image.\n"
    )
    return "\n".join(rows) + "\n" + legend


def binder_links(repo: str) -> str:
    """The landing page's two Binder links: the quickstart in JupyterLab and as a Voila app."""
    lab = binder_url(repo, TOUR)
    voila = f"https://mybinder.org/v2/gh/{repo}/HEAD?urlpath=voila%2Frender%2Fnotebooks%2F{TOUR}.ipynb"
    return (
        f"**Try it without installing:** [the quickstart in JupyterLab on Binder]({lab}) or "
        f"[as a Voila app]({voila}) (`binder/` installs the CPU build of torch and the package itself).\n"
    )


# ---- Sphinx hooks -------------------------------------------------------------------------------
def generate(app: Any) -> None:
    from guidewidgets import explain

    src = Path(app.srcdir)
    package = nbcache.package_digest()
    documented = documented_names()
    method_funcs = {name: explain.method_function(name) for name in explain.methods()}
    notebooks, lessons = {}, {}
    for path in lesson_paths():
        nb, lesson = prepare_lesson(path, package, app.config.gw_binder_repo, documented, method_funcs)
        notebooks[path.stem], lessons[path.stem] = nb, lesson
        write_if_changed(src / "lessons" / path.name, nbformat.writes(nb) + "\n")
    stale = {p.name for p in (src / "lessons").glob("*.ipynb")} - {f"{s}.ipynb" for s in notebooks}
    for name in stale:  # a lesson that was renamed or removed
        (src / "lessons" / name).unlink()
    taught = lesson_of_methods(notebooks, lessons, method_funcs)
    app.gw_taught = {method_funcs[m].__name__: taught[m] for m in taught}
    for mod in MODULES:
        text = api_page(mod)
        if mod == "explain":  # its entries show the lessons: a changed lesson must make Sphinx re-read it
            text += "\n.. taught in: " + "; ".join(f"{m} {t.stem} {t.label}" for m, t in sorted(taught.items())) + "\n"
        write_if_changed(src / "api" / f"{mod}.rst", text)
    write_if_changed(src / "api" / "index.md", api_index())
    write_if_changed(src / "_generated" / "methods_table.md", methods_table(taught))
    write_if_changed(src / "_generated" / "binder_links.md", binder_links(app.config.gw_binder_repo))


_BARS = re.compile(r"(?<![\\\w`])\|(\w[^|`]*?)\|(?![\w`])")


def clean_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Docstring text that reStructuredText would misread, made plain (the sources stay as they are).

    - a constant without a docstring of its own would show its type's (``dict``'s) docstring;
    - ``|x|`` (an absolute value in the text) would be a substitution reference.
    """
    if what in ("data", "attribute") and lines:
        doc = getattr(type(obj), "__doc__", None)
        own = inspect.cleandoc(doc) if isinstance(doc, str) else ""
        if own and "\n".join(lines).strip() == own.strip():
            lines.clear()
    for i, line in enumerate(lines):
        lines[i] = _BARS.sub(r"\|\1\|", line)


def add_method_links(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Under each registered method's entry: the lesson section that teaches it and its paper."""
    if what != "function" or not name.startswith("guidewidgets.explain."):
        return
    from guidewidgets import explain

    short = name.rsplit(".", 1)[1]
    methods = {explain.method_function(m).__name__: m for m in explain.methods()}
    if short not in methods:
        return
    info = explain.method_info(methods[short])
    taught = getattr(app, "gw_taught", {}).get(short)
    lines += ["", ".. rubric:: Learn it", ""]
    if taught is not None:
        lines.append(f"Taught in {taught.rst()}.")
    else:
        lines.append("No lesson uses it yet; :doc:`/details/explain` describes it.")
    lines.append(f"Paper: `{info.reference} <{paper_url(info.reference)}>`__. All methods: :doc:`/methods`.")


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("gw_binder_repo", "OWNER/guidewidgets", "html")
    app.connect("builder-inited", generate)
    app.connect("autodoc-process-docstring", clean_docstring)
    app.connect("autodoc-process-docstring", add_method_links)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
