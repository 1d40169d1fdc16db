"""Helpers of the server-extension tests."""

from __future__ import annotations

from typing import Any


def notebook(*sources: str, params: str | None = None) -> dict[str, Any]:
    cells = [{"cell_type": "code", "source": s, "metadata": {}, "outputs": [],
              "execution_count": None, "id": f"c{i}"} for i, s in enumerate(sources)]
    if params is not None:
        cells.insert(0, {"cell_type": "code", "source": params, "outputs": [],
                         "metadata": {"tags": ["pitwall:params"]}, "execution_count": None,
                         "id": "params"})
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
