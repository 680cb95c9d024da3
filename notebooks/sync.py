"""Pair the notebooks: ``NAME.py`` (jupytext percent format, the source of truth) -> ``NAME.ipynb``.

The ``.ipynb`` files are generated without outputs. ``python notebooks/sync.py`` rewrites
them; ``python notebooks/sync.py --check`` fails when one is out of date;
``python notebooks/sync.py --execute`` also runs every notebook's code (quick presets,
through the Python API) and fails if one raises.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cells_of(source: str) -> list[dict]:
    """Split a percent-format script into notebook cells."""
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        while lines and not lines[-1].strip():
            lines.pop()
        if kind == "markdown":
            text = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
            cells.append({"cell_type": "markdown", "metadata": {}, "source": _join(text)})
        else:
            cells.append({"cell_type": "code", "execution_count": None, "metadata": {},
                          "outputs": [], "source": _join(lines)})

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def _join(lines: list[str]) -> list[str]:
    return [ln + "\n" for ln in lines[:-1]] + lines[-1:] if lines else []


def notebook(py: Path) -> str:
    nb = {"cells": cells_of(py.read_text()),
          "metadata": {"jupytext": {"formats": "ipynb,py:percent"},
                       "kernelspec": {"display_name": "Python 3", "language": "python",
                                      "name": "python3"},
                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def sources() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name != "sync.py")


def main(argv: list[str]) -> int:
    stale = []
    for py in sources():
        text, ipynb = notebook(py), py.with_suffix(".ipynb")
        if "--check" in argv:
            if not ipynb.exists() or ipynb.read_text() != text:
                stale.append(ipynb.name)
        else:
            ipynb.write_text(text)
    if stale:
        print("out of date (run python notebooks/sync.py): " + ", ".join(stale))
        return 1
    if "--execute" in argv:
        import matplotlib
        matplotlib.use("Agg")
        os.chdir(HERE)
        for py in sources():
            print(f"executing {py.name}", flush=True)
            runpy.run_path(str(py), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
