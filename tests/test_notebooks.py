"""Hygiene of the tutorial notebooks (nbval runs them: `pytest --nbval-lax ... tests notebooks`).

Executing them is nbval's job in the README test command; notebooks/conftest.py prints each one's
wall time at the end of that run. Here: the set is complete, nothing machine-specific is committed
(outputs, absolute paths, widget state), each tells its story to the end (an Exercises section with
hidden solutions), and the cells whose numbers matter really are checked by nbval.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from guidewidgets.widgets import WIDGETS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = [
    "00_quickstart.ipynb",
    "01_cam_and_gradcam.ipynb",
    "02_which_pixels_matter.ipynb",
    "03_guide_me.ipynb",
    "04_inside_the_cnn.ipynb",
    "05_gain.ipynb",
    "06_where_is_the_object.ipynb",
    "07_guide_with_words.ipynb",
    "08_training_basics.ipynb",
    "09_segmentation_networks.ipynb",
    "10_attention_and_transformers.ipynb",
    "11_localization_and_segmentation_beyond.ipynb",
    "12_attention_and_guidance_beyond.ipynb",
    "13_concepts_tcav.ipynb",
]
CHECK = "# NBVAL_CHECK_OUTPUT"
# A path that only exists on one machine: /home/..., /work/..., C:\..., file:///...
ABSOLUTE = re.compile(r"(?<![\w.~])/(?:home|work|root|tmp|Users|opt|usr|mnt|var)/|\b[A-Za-z]:\\\\|file:///")


def _paths():
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_the_tutorial_set_is_complete():
    """The core lessons are all there; later lessons (11, 12, ...) continue the numbering without gaps."""
    names = [p.name for p in _paths()]
    assert names[: len(EXPECTED)] == EXPECTED
    assert [int(n[:2]) for n in names] == list(range(len(names))), names


@pytest.fixture(params=[p.name for p in _paths()])
def nb(request):
    path = NOTEBOOKS / request.param
    return path, _read(path)


def test_valid_notebook_with_a_sane_python_kernel(nb):
    path, book = nb
    nbformat.validate(book)
    spec = book.metadata.get("kernelspec", {})
    assert spec.get("name") == "python3" and spec.get("language") == "python", spec
    assert "widgets" not in book.metadata, f"{path.name}: saved widget state (clear it before committing)"


def test_only_checked_cells_carry_outputs_and_they_are_small(nb):
    path, book = nb
    for i, cell in enumerate(book.cells):
        if cell.cell_type != "code":
            continue
        if cell.source.lstrip().startswith(CHECK):
            # nbval compares only cells that were run, so a checked cell keeps its expected output.
            assert cell.execution_count is not None and cell.outputs, (
                f"{path.name} cell {i}: checked but no reference output"
            )
            assert all(o.output_type == "stream" for o in cell.outputs), f"{path.name} cell {i}: only text is checked"
            assert sum(len(o.text) for o in cell.outputs) < 600, f"{path.name} cell {i}: reference output too big"
        else:
            assert not cell.outputs and cell.execution_count is None, f"{path.name} cell {i}: committed output"


def test_checked_outputs_are_deterministic_statements(nb):
    """A checked cell prints identities (booleans), never floats that vary across CPUs."""
    path, book = nb
    for cell in book.cells:
        if cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK):
            text = "".join(o.text for o in cell.outputs)
            assert not re.search(r"\d\.\d{3,}", text), f"{path.name}: checked output has raw floats: {text!r}"


def test_no_absolute_paths(nb):
    path, _book = nb
    raw = path.read_text()
    assert not ABSOLUTE.search(raw), f"{path.name}: {ABSOLUTE.search(raw).group(0)!r} only exists on one machine"


def test_story_shape_title_widget_and_exercises_with_hidden_solutions(nb):
    path, book = nb
    first = book.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), f"{path.name}: start with a title"
    code = "\n".join(c.source for c in book.cells if c.cell_type == "code")
    live = "|".join(entry.name for entry in WIDGETS)
    assert re.search(rf"\b({live})\(", code), f"{path.name}: every tutorial shows a live widget"
    # Markdown headings only: a "# comment" inside a fenced solution is code, not a heading.
    headings = [
        (i, line)
        for i, c in enumerate(book.cells)
        if c.cell_type == "markdown"
        for line in re.sub(r"```.*?```", "", c.source, flags=re.S).splitlines()
        if line.startswith("#")
    ]
    last_index, last_heading = headings[-1]
    assert re.match(r"#+ .*Exercises", last_heading), f"{path.name}: the last section should be 'Exercises'"
    rest = "\n".join(c.source for c in book.cells[last_index:] if c.cell_type == "markdown")
    assert "<details>" in rest and "</details>" in rest, f"{path.name}: hide the solutions in <details> blocks"


def test_no_installs_or_downloads_at_run_time(nb):
    path, book = nb
    code = "\n".join(c.source for c in book.cells if c.cell_type == "code")
    for bad in ("pip install", "!pip", "%pip", "urlopen", "requests.get", "wget ", "curl "):
        assert bad not in code, f"{path.name}: {bad!r} (the notebooks run offline)"


def test_wall_time_summary_is_printed_for_notebooks(tmp_path):
    """notebooks/conftest.py prints one line per notebook after an nbval run."""
    pytest.importorskip("nbval")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "conftest.py").write_text((NOTEBOOKS / "conftest.py").read_text())
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell("x = 1 + 1")]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, tmp_path / "notebooks" / "tiny.ipynb")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval-lax",
            "--nbval-current-env",
            "notebooks",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "notebook wall times under nbval" in proc.stdout
    assert re.search(r"tiny\.ipynb\s+\d+\.\d s\s+ok", proc.stdout), proc.stdout
