"""Write a notebook from a plain cell file (a maintainer's tool for authoring notebooks/*.ipynb).

The cell file is text with one marker line before each cell:
    #%% md           a markdown cell
    #%% code         a code cell
    #%% parameters   the papermill `parameters` cell
Usage: python scripts/nb_from_cells.py cells.txt notebooks/NN_name.ipynb
       python scripts/nb_from_cells.py --to-cells notebooks/NN_name.ipynb cells.txt   (the reverse)
The notebook is written without outputs, with the `lpt` kernel. Cell files are scratch copies
(`notebooks/cells/` is git-ignored): the notebooks are the source.
"""
import sys

import nbformat


def build(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "lpt", "display_name": "LPT (.venv)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    kind, lines = None, []

    def flush():
        if kind is None:
            return
        src = "\n".join(lines).strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            cell = nbformat.v4.new_code_cell(src)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)

    for line in text.splitlines():
        if line.startswith("#%% "):
            flush()
            kind, lines = line[4:].strip(), []
            if kind not in ("md", "code", "parameters"):
                raise SystemExit(f"unknown cell marker: {line!r}")
        else:
            lines.append(line)
    flush()
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def to_cells(nb: nbformat.NotebookNode) -> str:
    out = []
    for c in nb.cells:
        kind = "md" if c.cell_type == "markdown" else (
            "parameters" if "parameters" in c.metadata.get("tags", []) else "code")
        out.append(f"#%% {kind}\n{c.source}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1] == "--to-cells":
        open(sys.argv[3], "w").write(to_cells(nbformat.read(sys.argv[2], as_version=4)))
        raise SystemExit(0)
    src, dst = sys.argv[1:3]
    nbformat.write(build(open(src).read()), dst)
    print(f"wrote {dst}")
