"""MkDocs hooks: pages made from the code base at build time.

* one page per registered experiment (title, figure, check table, parameters);
* the benchmark page from ``benchmarks/RESULTS.md`` (and its figure);
* the notebook gallery: executed copies from ``build/notebooks/`` when
  ``python notebooks/sync.py --execute --output build/notebooks`` ran first (CI does),
  else the committed, output-free ``notebooks/*.ipynb``. The docs build itself never
  executes a notebook.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "build" / "notebooks"
_RUN = re.compile(r"ex\.run\(\s*\"([\w-]+)\"")


def _experiments():
    import sgdlab.experiments as ex

    return [ex.get(n) for n in ex.names()]


def _notebooks() -> list[tuple[str, Path, bool]]:
    out = []
    for src in sorted((ROOT / "notebooks").glob("*.ipynb")):
        done = EXECUTED / src.name
        out.append((src.stem, done if done.exists() else src, done.exists()))
    return out


def _outputs_by_experiment() -> dict[str, dict[str, list]]:
    """Text and PNG outputs of the executed notebooks, by the experiment whose cell made them."""
    found: dict[str, dict[str, list]] = {}
    for stem, path, executed in _notebooks():
        if not executed:
            continue
        current = None
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            m = _RUN.search("".join(cell["source"]))
            if m:
                current = found.setdefault(m.group(1), {"text": [], "png": [], "nb": stem})
            if current is None:
                continue
            for o in cell.get("outputs", []):
                if o.get("name") == "stdout":
                    text = "".join(o["text"]).splitlines(keepends=True)
                    current["text"] += [ln for ln in text if not ln.startswith("[sgdlab]")]
                png = o.get("data", {}).get("image/png")
                if png:
                    current["png"].append(base64.b64decode("".join(png)))
    return found


def _fmt(v) -> str:
    return f"`{v!r}`".replace("|", "\\|")


def _experiment_page(exp, outputs, files, config) -> str:
    lines = [f"# `{exp.name}` (study {exp.study})", "", exp.title[0].upper() + exp.title[1:] + ".",
             ""]
    made = outputs.get(exp.name)
    if made and made["png"]:
        for k, png in enumerate(made["png"]):
            name = f"experiments/{exp.name}-{k}.png"
            files.append(File.generated(config, name, content=png))
            lines += [f"![{exp.name} figure {k + 1}]({exp.name}-{k}.png)", ""]
        lines += [f"Figures and checks from the executed notebook "
                  f"[{made['nb']}](../notebooks/{made['nb']}.ipynb), quick preset.", ""]
    elif (ROOT / "docs" / "figures" / f"{exp.name}.png").exists():
        lines += [f"![{exp.name}](../figures/{exp.name}.png)", "",
                  "The quick preset's figure (as in the README).", ""]
    lines += ["## Checks", ""]
    if made and made["text"]:
        lines += ["Measured against predicted, with standard errors and the verdict of each "
                  "check (see [the verdict format](../getting-started.md#reading-a-verdict)):",
                  "", "```text", *"".join(made["text"]).rstrip().splitlines(), "```", ""]
    else:
        lines += ["Run it to print the table of checks (measured, predicted, standard error, "
                  "verdict); the documentation shows it when built after "
                  "`python notebooks/sync.py --execute --output build/notebooks`.", ""]
    lines += ["## Run it", "", "```bash", f"sgdlab run {exp.name}                 # quick preset",
              f"sgdlab run {exp.name} --preset paper  # the paper's sizes",
              f"sgdlab run {exp.name} --params        # every parameter, default and preset value",
              "```", "", "## Parameters", "",
              "| key | type | default | quick | paper | meaning |", "|---|---|---|---|---|---|"]
    quick, paper = exp.presets.get("quick", {}), exp.presets.get("paper", {})
    for p in exp.params:
        q = _fmt(quick[p.name]) if p.name in quick else ""
        pp = _fmt(paper[p.name]) if p.name in paper else ""
        lines.append(f"| `{p.name}` | {p.kind_text()} | {_fmt(p.default)} | {q} | {pp} | "
                     f"{p.help.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _benchmarks(files, config) -> None:
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    for ref in sorted(set(re.findall(r"\]\((results/[^)]+\.png)\)", text))):
        src = ROOT / "benchmarks" / ref
        if src.exists():
            files.append(File.generated(config, f"benchmarks/{ref}", abs_src_path=str(src)))
        text = text.replace(f"]({ref})", f"](benchmarks/{ref})")
    files.append(File.generated(config, "benchmarks.md", content=text))


def on_config(config):
    """Fill the nav's experiment and notebook sections from the registry and notebooks/."""
    exps = [{f"{e.name}": f"experiments/{e.name}.md"} for e in _experiments()]
    nbs = [{stem.replace("_", " "): f"notebooks/{stem}.ipynb"} for stem, _, _ in _notebooks()]
    for i, entry in enumerate(config["nav"]):
        if isinstance(entry, dict) and "Experiments" in entry:
            config["nav"][i] = {"Experiments": exps}
        if isinstance(entry, dict) and "Notebooks" in entry:
            config["nav"][i] = {"Notebooks": nbs}
    return config


@event_priority(100)  # before mkdocs-jupyter, which converts the notebooks in the file set
def on_files(files, config):
    outputs = _outputs_by_experiment()
    for exp in _experiments():
        page = _experiment_page(exp, outputs, files, config)
        files.append(File.generated(config, f"experiments/{exp.name}.md", content=page))
    _benchmarks(files, config)
    for _, path, _ in _notebooks():
        # a plain File (mkdocs-jupyter's wrapper cannot read generated ones): src_dir is the
        # folder above notebooks/ (the repository, or build/ for the executed copies)
        files.append(File(f"notebooks/{path.name}", src_dir=str(path.parents[1]),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
