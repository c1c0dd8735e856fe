"""The book's shape (issue 21): chapter numbers are unique and the README lists them in that order, Part I shows
pictures, exported cells read in one sitting."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "nbs").glob("[0-9][0-9]_*.ipynb"))
MAX_EXPORTED_LINES = 60


def cells(nb: Path) -> list:
    return json.loads(nb.read_text())["cells"]


def test_chapter_numbers_are_unique_and_every_notebook_is_a_chapter():
    numbers = [nb.name[:2] for nb in CHAPTERS]
    assert len(numbers) == len(set(numbers)), (
        f"chapter numbers repeat: {sorted(n for n in numbers if numbers.count(n) > 1)}"
    )
    others = [p.name for p in (ROOT / "nbs").glob("*.ipynb") if p not in CHAPTERS]
    assert not others, f"notebooks without a two-digit chapter number: {others}"


def test_readme_lists_the_chapters_in_reading_order():
    listed = re.findall(r"^\| `nbs/(\d\d_\w+)\.ipynb`", (ROOT / "README.md").read_text(), re.M)
    assert listed == [nb.stem for nb in CHAPTERS]


def test_algorithms_come_early():
    "Algorithm 1 (NASH) by chapter 05, Algorithm 2 (Pareto-NASH) by chapter 08."
    by_module = {}
    for nb in CHAPTERS:
        first = "".join(cells(nb)[0]["source"])
        if first.startswith("#| default_exp "):
            by_module[first.split()[-1]] = int(nb.name[:2])
    assert by_module["hill_climbing"] <= 5 and by_module["pareto"] <= 8, by_module


@pytest.mark.parametrize(
    "module",
    ["ops", "arch", "morphisms", "operators", "hill_climbing", "front", "pareto", "pareto_run", "pareto_async"],
)
def test_part_one_chapters_commit_a_picture(module):
    nb = next(nb for nb in CHAPTERS if "".join(cells(nb)[0]["source"]) == f"#| default_exp {module}")
    images = [
        o for c in cells(nb) if c["cell_type"] == "code" for o in c["outputs"] if "image/png" in o.get("data", {})
    ]
    assert images, f"{nb.name} commits no picture: run tools/run_chapter.py {nb.relative_to(ROOT)}"


def test_exported_cells_read_in_one_sitting():
    long = [
        (nb.name, len(src.splitlines()), src.splitlines()[1][:60])
        for nb in CHAPTERS
        for c in cells(nb)
        if c["cell_type"] == "code"
        for src in ["".join(c["source"])]
        if src.startswith("#| export") and len(src.splitlines()) > MAX_EXPORTED_LINES
    ]
    assert not long, f"exported cells over {MAX_EXPORTED_LINES} lines (split them where the argument turns): {long}"


# a cell of imports (or of the package's `__all__`) needs no check of its own
IMPORT_LINE = re.compile(
    r"^\s*(from \S+ import .*|import .*|\)|\]|[\w ,]+,?|\"\w+\",|try:|except .*:|else:|\w+ = None|_?_all__? = .*"
    r"|__version__ = .*|)$"
)


def import_only(src: str) -> bool:
    return all(IMPORT_LINE.match(re.sub(r"\s*#.*$", "", line)) for line in src.splitlines())


def unchecked_cells(chapter: list) -> list:
    "Exported cells whose next code cell is exported, hidden or slow (or missing): the reader never sees them run."
    found = []
    for i, c in enumerate(chapter):
        src = "".join(c["source"])
        if c["cell_type"] != "code" or not src.startswith("#| export") or import_only(src):
            continue
        after = next(("".join(d["source"]) for d in chapter[i + 1 :] if d["cell_type"] == "code"), "#| none")
        if after.lstrip().startswith(("#| export", "#| hide", "#| slow", "#| none")):
            found.append(re.findall(r"^(?:def|class) (\w+)|^([A-Z_][A-Z_0-9]*) = ", src, re.M)[:1] or src[:40])
    return found


def test_unchecked_cells_are_found():
    "The rule itself: an exported cell followed by another exported one is found; imports and a check pass."
    chapter = [
        dict(cell_type="code", source=["#| export\n", "from pathlib import Path\n", "import torch"]),
        dict(cell_type="code", source=["#| export\n", "def f():\n", "    return 1"]),
        dict(cell_type="markdown", source=["`g` next:"]),
        dict(cell_type="code", source=["#| export\n", "def g():\n", "    return 2"]),
        dict(cell_type="code", source=["assert g() == 2"]),
        dict(cell_type="code", source=["#| export\n", "H = 3"]),
    ]
    found = unchecked_cells(chapter)
    assert [names[0][0] or names[0][1] for names in found] == ["f", "H"], found


def test_every_exported_cell_is_followed_by_its_check():
    "Issue 21: each exported cell is followed by the cell that shows or checks it."
    missing = {nb.name: found for nb in CHAPTERS if (found := unchecked_cells(cells(nb)))}
    assert not missing, f"exported cells not followed by a cell that shows or checks them: {missing}"


def test_the_index_lists_every_chapter_in_order():
    "00_index's reading list (the three Part bullets) names each chapter's number once, in order."
    text = "\n".join(
        "".join(c["source"]) for c in cells(ROOT / "nbs" / "00_index.ipynb") if c["cell_type"] == "markdown"
    )
    parts = re.findall(r"^- \*\*Part I+, .*?(?=^- \*\*Part|^\s*$)", text, re.M | re.S)
    assert len(parts) == 3, parts
    listed = [n for part in parts for n in re.findall(r"(?<![-\d.,])\b(\d\d)\b(?! ?[%,.]\d)", part)]
    assert listed == [nb.name[:2] for nb in CHAPTERS if nb.name[:2] != "00"], listed
