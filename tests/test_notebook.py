"""``examples/notebook.ipynb`` is committed with the outputs of a full run (so it reads on
a code host), and runs top to bottom in a real Jupyter kernel (nbclient), in its short
mode (``MULTINET_QUICK=1``), so it can never break unnoticed; the fresh run's outputs must
be of the kinds stored, and as small.

The notebook's first code cell, tagged ``parameters`` (papermill's convention), holds
the choices a reader edits. The test adds a cell after it, as papermill would, pointing
``DATA_DIR`` at the suite's MNIST (the full files, or the committed sample, which is read
with ``VERIFY = False``).

To store it again after a change, run it in full from the repository root, with MNIST
where multinet finds it (outputs of a quiet machine read best: they show its seconds)::

    python -c "import nbclient, nbformat; p = 'examples/notebook.ipynb'; \\
    nb = nbformat.read(p, 4); nbclient.NotebookClient(nb, timeout=1800, \\
    coalesce_streams=True, record_timing=False).execute(); nbformat.write(nb, p)"
"""

import json
from pathlib import Path

import pytest

from helpers import is_sample

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb"
nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")

#: The stored notebook, outputs and figures included, in bytes: it was 460 KB when the
#: text progress bar left ~500 frames per training cell.
MAX_BYTES = 400_000
#: Outputs a cell may have (each print, figure, table or progress line between two
#: flushes is one); a progress bar redrawn as text gave hundreds.
MAX_OUTPUTS = 8
#: The widget mime type of a progress bar drawn with ipywidgets.
WIDGET = "application/vnd.jupyter.widget-view+json"


def code_cells(notebook):
    return [c for c in notebook.cells if c.cell_type == "code"]


def is_progress(output) -> bool:
    """A progress bar's widget, or a stream of progress lines only: how many there are
    depends on how long the run took and on whether ipywidgets is installed."""
    if WIDGET in output.get("data", {}):
        return True
    lines = output.get("text", "").splitlines()
    return (output.get("name") == "stderr" and bool(lines)
            and all(line.startswith("multinet: train [") for line in lines))


def kinds(cell) -> set:
    """What a cell shows, in kind: streams by name, other outputs by type and mime types
    (progress aside)."""
    return {("stream", o.name) if o.output_type == "stream"
            else (o.output_type, tuple(sorted(o.get("data", {}))))
            for o in cell.outputs if not is_progress(o)}


def assert_small_and_clean(notebook):
    """No errors, no tqdm warning (``IProgress not found``, where ipywidgets is missing), no
    text progress bar: few outputs per cell, none redrawn in place."""
    for cell in code_cells(notebook):
        assert len(cell.outputs) <= MAX_OUTPUTS, (cell.source[:40], len(cell.outputs))
        for output in cell.outputs:
            assert output.output_type != "error", output
            text = output.get("text", "")
            assert "IProgress" not in text and "TqdmWarning" not in text, text
            assert "\r" not in text, text[:200]  # a bar redrawn in place


def test_notebook_is_stored_with_the_small_outputs_of_a_full_run():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert NOTEBOOK.stat().st_size <= MAX_BYTES, NOTEBOOK.stat().st_size
    code = code_cells(notebook)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in code)
    # Run top to bottom, once, every cell showing something but the parameters.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert all(c.outputs for c in code[1:])
    assert_small_and_clean(notebook)
    figures = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert len(figures) == 4
    summary = next(c for c in code if c.source.startswith("summary = run.summary"))
    assert "after 500 iterations" in text_of(summary)  # the notebook's run, not the short one


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

    # What a fresh run shows is what the stored notebook shows, in kind, and as small.
    assert_small_and_clean(notebook)
    stored = code_cells(nbformat.read(NOTEBOOK, as_version=4))
    fresh = [c for c in code_cells(notebook) if c is not injected]
    assert [c.source for c in fresh] == [c.source for c in stored]
    for old, new in zip(stored, fresh):
        assert kinds(new) == kinds(old), new.source[:60]
    assert len(json.dumps(notebook)) <= MAX_BYTES

    cells = [c for c in notebook.cells if c.cell_type == "code"]
    by_source = {c.source.splitlines()[0]: c for c in cells}
    figures = [c for c in cells if outputs_of(c, "image/png")]
    # The curves, the four predictions, the picture file, the confusion matrix.
    assert len(figures) == 4, [c.source[:40] for c in figures]
    assert all(len(outputs_of(c, "image/png")) == 1 for c in figures)  # each shown once

    run = next(c for c in cells if c.source.startswith("run = multinet.fit"))
    assert "notebook" in text_of(run) and "iterations=60" in text_of(run)
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
