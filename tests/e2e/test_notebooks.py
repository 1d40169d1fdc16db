"""The example notebooks run as they are, in a real kernel, and show what they claim."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _outputs(nb: nbformat.NotebookNode) -> str:
    return "\n".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


def test_sma_crossover_notebook_runs_through_the_sandbox() -> None:
    nb = nbformat.read(NOTEBOOKS / "sma_crossover.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = _outputs(nb)
    assert "COMPLETED sharpe=" in text and "data=sample@v1" in text
    assert "identical metrics" in text
    local = text.split("sharpe=")[1].split()[0]
    sandboxed = text.split("COMPLETED sharpe=")[1].split()[0]
    assert local == sandboxed
