"""The notebooks' .ipynb files are generated from their percent-format .py sources.

Executing them (the quick presets through the Python API) is part of `.ci/run`
(`python notebooks/sync.py --check --execute`), not of pytest, to keep pytest short.
"""

import subprocess
import sys
from pathlib import Path

NB = Path(__file__).resolve().parents[1] / "notebooks"


def test_every_notebook_is_paired_and_in_sync():
    sources = sorted(p.stem for p in NB.glob("*.py") if p.name != "sync.py")
    assert sources, "no notebooks"
    assert sorted(p.stem for p in NB.glob("*.ipynb")) == sources
    r = subprocess.run([sys.executable, str(NB / "sync.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_generated_notebooks_have_no_outputs():
    import json
    for ipynb in NB.glob("*.ipynb"):
        nb = json.loads(ipynb.read_text())
        assert nb["nbformat"] == 4
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None
