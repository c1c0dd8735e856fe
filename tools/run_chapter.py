"""Execute chapters in place so that they are committed with their outputs visible.

    .venv/bin/python tools/run_chapter.py nbs/03_morphisms.ipynb [more.ipynb ...] [--slow]

Cells run in order in one kernel, from nbs/. Cells marked `#| slow` (training on real data) are skipped
unless --slow is given, and keep the outputs they already have, so a chapter's real-data results survive
edits to its fast cells. Cells tagged `skip-execution` never run. `nbdev-clean` runs on each notebook after.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
from nbclient import NotebookClient

SLOW = re.compile(r"^\s*#\s*\|\s*slow\b", re.M)


def run(path: Path, slow: bool, timeout: int) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # nbformat 4.5 wants an id on every cell (cells added by hand may lack one)
        if "id" not in cell:
            cell["id"] = uuid.uuid4().hex[:8]
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if "skip-execution" in cell.metadata.get("tags", []):
                continue
            if SLOW.search(cell.source) and not slow:
                continue
            client.execute_cell(cell, index)
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).with_name("nbdev-clean")), "--fname", str(path)], check=True)
    print(f"executed {path}{' (slow cells too)' if slow else ' (slow cells kept as they were)'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--slow", action="store_true", help="also run the #| slow cells")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = ap.parse_args()
    for nb in args.notebooks:
        run(nb.resolve(), args.slow, args.timeout)
