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


def _execute(name: str) -> str:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return _outputs(nb)


def _field(text: str, key: str) -> str:
    """The value printed as ``key=value`` (the first occurrence)."""
    assert f"{key}=" in text, (key, text)
    return text.split(f"{key}=")[1].split(maxsplit=1)[0]


def test_sma_crossover_notebook_runs_through_the_sandbox() -> None:
    nb = nbformat.read(NOTEBOOKS / "sma_crossover.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = _outputs(nb)
    assert "COMPLETED sharpe=" in text and "data=sample@v1" in text
    assert "identical metrics" in text and "lookahead audit: no_lookahead_found" in text
    local = text.split("sharpe=")[1].split()[0]
    sandboxed = text.split("COMPLETED sharpe=")[1].split()[0]
    assert local == sandboxed


def test_event_mean_reversion_notebook_trades_with_limit_orders() -> None:
    text = _execute("event_mean_reversion.ipynb")
    sandboxed = text.split("sandboxed:")[1]
    assert "COMPLETED" in text
    assert int(_field(sandboxed, "trades")) > 0
    assert _field(sandboxed, "trades") == _field(sandboxed, "n_trades")
    assert _field(sandboxed, "sharpe") == _field(text.split("local:")[1], "sharpe")
    assert "local and sandboxed agree: True" in text


def test_parameter_sweep_notebook_fills_the_grid() -> None:
    nb = nbformat.read(NOTEBOOKS / "parameter_sweep.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = _outputs(nb)
    assert "sweep rows=9 completed=9" in text
    table = text.split("shape: (9, 5)")[1].split("sweep rows=")[0]
    assert table.count("COMPLETED") == 9
    assert "best: fast=" in text
    figures = [out for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", [])
               if "application/vnd.plotly.v1+json" in out.get("data", {})]
    assert len(figures) == 1
    heatmap = figures[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]
    assert heatmap["type"] == "heatmap" and len(heatmap["z"]) == 3
    assert all(len(row) == 3 for row in heatmap["z"])


def test_lookahead_bug_notebook_is_flagged_then_passes() -> None:
    text = _execute("lookahead_bug.ipynb")
    leaky, fixed = text.split("leaky:")[1].split("fixed:")
    assert "COMPLETED" in leaky and "audit: flagged" in leaky
    assert _field(leaky, "first_symbol") in {"AAPL", "MSFT", "AMZN"}
    assert _field(leaky, "first_ts").startswith("2024-03-")
    assert "COMPLETED" in fixed and "audit: no_lookahead_found" in fixed
    assert int(_field(fixed, "cuts_checked")) > 0


def test_reproducibility_notebook_reruns_identically_on_the_pinned_version() -> None:
    text = _execute("reproducibility.ipynb")
    assert "first run: COMPLETED data=sample@v1" in text
    assert "versions: [1, 2]" in text
    assert int(text.split("bars that differ from v1: ")[1].split()[0]) > 0
    assert "rerun: COMPLETED data=sample@v1" in text
    assert "identical metrics: True" in text and "identical equity bytes: True" in text
    assert "fresh run: COMPLETED data=sample@v2" in text
    assert "fresh differs from first: True" in text
    assert _field(text.split("fresh run:")[1], "sharpe") != _field(
        text.split("first run:")[1], "sharpe")
