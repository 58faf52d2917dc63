"""``examples/notebook.ipynb`` runs top to bottom in a real Jupyter kernel (nbclient), in
its short mode (``MULTINET_QUICK=1``), so it can never break unnoticed.

The notebook's first code cell, tagged ``parameters`` (papermill's convention), holds
the choices a reader edits. The test adds a cell after it, as papermill would, pointing
``DATA_DIR`` at the suite's MNIST (the full files, or the committed sample, which is read
with ``VERIFY = False``).
"""

import json
from pathlib import Path

import pytest

from helpers import is_sample

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb"
nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


def outputs_of(cell, kind):
    return [o for o in cell.outputs if kind in o.get("data", {})]


def text_of(cell):
    return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/markdown", ""))
                   + o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def test_notebook_runs_in_a_kernel_and_shows_its_figures(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("MULTINET_QUICK", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    injected = nbformat.v4.new_code_cell(
        f"DATA_DIR = {str(mnist.directory)!r}\nVERIFY = {not is_sample(mnist)}",
        metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(first + 1, injected)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback

    cells = [c for c in notebook.cells if c.cell_type == "code"]
    by_source = {c.source.splitlines()[0]: c for c in cells}
    figures = [c for c in cells if outputs_of(c, "image/png")]
    # The curves, the four predictions, the picture file, the confusion matrix.
    assert len(figures) == 4, [c.source[:40] for c in figures]
    assert all(len(outputs_of(c, "image/png")) == 1 for c in figures)  # each shown once

    run = next(c for c in cells if c.source.startswith("run = multinet.fit"))
    assert "notebook" in text_of(run) and "iterations=60" in text_of(run)
    bar = [o for o in run.outputs if "application/vnd.jupyter.widget-view+json" in
           o.get("data", {}) or "train [" in o.get("text", "")]
    assert bar, "no progress bar"
    accuracy = by_source['summary = run.summary']
    assert "test  accuracy" in text_of(accuracy)

    bugs = next(c for c in cells if "notebook_softmax" in c.source)
    assert "nan in 100 of 100 images" in text_of(bugs)
    assert "gradients finite: True" in text_of(bugs)
    check = next(c for c in cells if "finite_difference" in c.source)
    lines = {line.split()[0]: line.split()[1:] for line in text_of(check).splitlines()
             if line.startswith("b")}
    for key in ("b1", "b2"):
        notebook_error, multinet_error = map(float, lines[key])
        assert notebook_error > 0.1 and multinet_error < 1e-6, lines

    table = next(c for c in cells if "parity.report" in c.source)
    shown = text_of(table)
    assert "| numpy | cpu | float32 |" in shown and "**fail**" not in shown
    assert shown.count("**pass**") >= 2
    kept = next(c for c in cells if "again = multinet.load" in c.source)
    assert "same predictions: True" in text_of(kept)
    json.dumps(notebook)  # the executed notebook is still plain JSON
