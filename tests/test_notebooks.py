"""The notebooks: jupytext pairs (.py source -> .ipynb without outputs), and inline figures.

Executing every notebook (the quick presets, through a real Jupyter kernel, checking that
each figure came out as an image) is part of `.ci/run`
(`python notebooks/sync.py --check --execute`), not of pytest, to keep pytest short;
here one tiny notebook runs in a kernel to prove the display mechanism.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

NB = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(NB))
import sync  # noqa: E402


def test_every_notebook_is_paired_and_in_sync():
    sources = sorted(p.stem for p in NB.glob("*.py") if p.name != "sync.py")
    assert sources, "no notebooks"
    assert sorted(p.stem for p in NB.glob("*.ipynb")) == sources
    r = subprocess.run([sys.executable, str(NB / "sync.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_committed_notebooks_have_no_outputs_and_cell_ids():
    for ipynb in NB.glob("*.ipynb"):
        nb = json.loads(ipynb.read_text())
        assert (nb["nbformat"], nb["nbformat_minor"]) == (4, 5)
        assert nb["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"
        ids = [cell["id"] for cell in nb["cells"]]
        assert len(set(ids)) == len(ids) and all(ids), ipynb.name
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None


def test_check_finds_a_stale_notebook(tmp_path, monkeypatch):
    src = tmp_path / "demo.py"
    src.write_text("# %% [markdown]\n# # Demo\n\n# %%\nx = 1\nx\n")
    monkeypatch.setattr(sync, "HERE", tmp_path)
    assert sync.main([]) == 0 and sync.main(["--check"]) == 0
    src.write_text(src.read_text() + "\n# %%\nx + 1\n")
    assert sync.main(["--check"]) == 1
    assert sync.main(["--check", "nope"]) == 2


def _needs_kernel():
    pytest.importorskip("nbclient", reason="the notebooks extra is not installed "
                        "(pip install -e '.[notebooks]')")


def _kernel_run(cells):
    _needs_kernel()
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return sync.execute(nb, timeout=300)


def test_figures_display_inline_in_a_real_kernel():
    draw = ("f = Figure(figsize=(2, 2))\nf.add_subplot().plot([1, 2])\nf")
    nb = _kernel_run([
        "from matplotlib.figure import Figure",
        draw,                                    # before sgdlab: plain IPython shows text
        "import sgdlab.experiments",
        draw,                                    # what a study notebook does
        "from sgdlab import plots",
        draw,
    ])
    kinds = [set(nb.cells[i].outputs[0]["data"]) for i in (1, 3, 5)]
    assert kinds[0] == {"text/plain"}  # the bug this guards against: '<Figure size ...>'
    assert "image/png" in kinds[1] and "image/png" in kinds[2]
    assert sync.figure_problems(nb) == ["cell 1 shows '<Figure size 200x200 with 1 Axes>' "
                                        "instead of an image"]


def test_execute_runs_notebooks_side_by_side_and_fails_on_a_raising_cell(tmp_path, monkeypatch,
                                                                          capsys):
    _needs_kernel()
    (tmp_path / "good.py").write_text("# %%\nimport sgdlab.experiments\n"
                                      "from matplotlib.figure import Figure\n\n"
                                      "# %%\nf = Figure(figsize=(2, 2))\n"
                                      "f.add_subplot().plot([1, 2])\nf\n")
    (tmp_path / "bad.py").write_text("# %%\nraise ValueError('planted failure')\n")
    monkeypatch.setattr(sync, "HERE", tmp_path)
    assert sync.main([]) == 0
    out = tmp_path / "out"
    assert sync.main(["--execute", "--jobs", "2", "--output", str(out)]) == 1
    text = capsys.readouterr().out
    assert "2 at a time" in text and "planted failure" in text
    assert text.splitlines()[-1] == "failed: bad"
    assert [p.name for p in out.glob("*.ipynb")] == ["good.ipynb"]
    assert sync.main(["--execute", "--jobs", "2", "good"]) == 0
    with pytest.raises(SystemExit) as exit_:
        sync.main(["--execute", "--jobs", "-1"])
    assert exit_.value.code == 2 and "expected a count >= 1" in capsys.readouterr().err
