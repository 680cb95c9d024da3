"""Pair the notebooks with jupytext: ``NAME.py`` (percent format, the source) -> ``NAME.ipynb``.

``python notebooks/sync.py`` rewrites every ``.ipynb`` from its ``.py`` with
jupytext: no outputs, deterministic cell ids, the ``ipynb,py:percent`` pairing in
the metadata (so Jupyter with jupytext keeps both files in step when a notebook is
edited there). ``--check`` fails when one is out of date. ``--execute`` runs each
notebook with a real Jupyter kernel (nbclient) and fails when a cell raises or a
figure comes out as ``<Figure ...>`` text instead of an ``image/png``;
``--output DIR`` keeps the executed copies (the documentation reuses them).
``--jobs N`` runs N notebooks at a time (default: one per core, at most 4), each in its
own kernel: a notebook is mostly XLA compiles, which use one core.
Names after the options pick notebooks (``study5_lzu_stationary``); default: all.

Needs the ``notebooks`` extra: ``pip install -e ".[notebooks]"``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
METADATA = {
    "jupytext": {"formats": "ipynb,py:percent"},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def sources() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name != "sync.py")


def notebook(py: Path):
    """The output-free notebook of a percent-format source, with stable cell ids."""
    import jupytext

    nb = jupytext.read(py, fmt="py:percent")
    nb.metadata = dict(METADATA)
    nb.nbformat, nb.nbformat_minor = 4, 5
    for i, cell in enumerate(nb.cells):
        cell["id"] = hashlib.sha1(f"{py.stem}:{i}".encode()).hexdigest()[:8]
        cell["metadata"] = {}
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def text_of(nb) -> str:
    import jupytext

    text = jupytext.writes(nb, fmt="ipynb")
    return text if text.endswith("\n") else text + "\n"


def figure_problems(nb) -> list[str]:
    """Cells that displayed a matplotlib Figure as text, and a notebook with no image at all."""
    bad, images = [], 0
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images += "image/png" in data
            if "image/png" not in data and str(data.get("text/plain", "")).startswith("<Figure"):
                bad.append(f"cell {i} shows {data['text/plain']!r} instead of an image")
    if images == 0:
        bad.append("no image/png output at all")
    return bad


def execute(nb, timeout: int = 900):
    """Run ``nb`` in a fresh python3 kernel started in notebooks/ (nbclient)."""
    from nbclient import NotebookClient

    NotebookClient(nb, kernel_name="python3", timeout=timeout,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


def run_one(py: Path, output: str | None) -> tuple[str, float, list[str]]:
    """Execute one notebook; write the executed copy to ``output``; return what went wrong.

    A cell that raises comes back as a problem (its error text), not as an exception: an
    exception would have to cross the process boundary, and nbclient's does not pickle.
    """
    import nbformat

    t0 = time.perf_counter()
    nb = notebook(py)
    try:
        execute(nb)
    except Exception as e:  # noqa: BLE001 - reported, and the run fails
        return py.stem, time.perf_counter() - t0, [f"a cell raised: {e}"]
    problems = figure_problems(nb)
    if output:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / f"{py.stem}.ipynb")
    return py.stem, time.perf_counter() - t0, problems


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="notebooks/sync.py", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="notebooks to handle (default: all)")
    ap.add_argument("--check", action="store_true", help="fail when an .ipynb is out of date")
    ap.add_argument("--execute", action="store_true",
                    help="run each notebook in a Jupyter kernel and check its figures")
    ap.add_argument("--output", metavar="DIR", help="write the executed notebooks to DIR")
    ap.add_argument("--jobs", type=int, default=0, metavar="N",
                    help="notebooks executed at a time (default: one per core, at most 4)")
    args = ap.parse_args(argv)
    if args.jobs < 0:
        ap.error(f"--jobs {args.jobs}: expected a count >= 1 (or 0: one per core, at most 4)")
    chosen = [p for p in sources() if not args.names or p.stem in args.names]
    unknown = set(args.names) - {p.stem for p in chosen}
    if unknown:
        print(f"unknown notebook(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    stale = []
    for py in chosen:
        text, ipynb = text_of(notebook(py)), py.with_suffix(".ipynb")
        if args.check:
            if not ipynb.exists() or ipynb.read_text() != text:
                stale.append(ipynb.name)
        else:
            ipynb.write_text(text)
    if stale:
        print("out of date (run python notebooks/sync.py): " + ", ".join(stale))
        return 1
    if args.execute:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        failed = []
        jobs = args.jobs or min(4, os.cpu_count() or 1)
        print(f"executing {len(chosen)} notebook(s), {jobs} at a time", flush=True)
        # spawn, not fork: the caller may hold JAX's threads (pytest), which fork does not copy
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_one, py, args.output) for py in chosen]
            for fut in as_completed(futures):
                stem, seconds, problems = fut.result()
                print(f"  {stem}.ipynb: {seconds:.0f} s"
                      + "".join(f"\n    {p}" for p in problems), flush=True)
                failed += [stem] * bool(problems)
        if failed:
            print("failed: " + ", ".join(sorted(failed)))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
