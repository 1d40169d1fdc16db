"""``POST /v1/backtests`` with a notebook, and ``pitwall.Client.submit_notebook``: bundled
by the same rule as the Run Backtest button (pitwall.notebook_bundle, docs/notebooks.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from apikit import StartApi, spec_json

from pitwall.bundle import load_bundle
from pitwall.errors import BundleError
from pitwall.models import BacktestSpec
from pitwall.notebook.client import Client
from pitwall.notebook_bundle import bundle_notebook


def _cell(src: str, *tags: str, out: str = "") -> dict[str, Any]:
    return {"cell_type": "code", "id": f"c{abs(hash(src)) % 10**8}", "source": src,
            "metadata": {"tags": list(tags)}, "execution_count": 1,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": out}]}


NOTEBOOK = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
    {"cell_type": "markdown", "id": "title", "metadata": {}, "source": "# Title"},
    _cell("import polars as pl\nimport pitwall\n"),
    _cell('params = {"level": 0.5}', "pitwall:params"),
    _cell("@pitwall.vectorized\ndef hold(bars, level=1.0):\n"
          "    return bars.select('ts', 'symbol', weight=pl.lit(level))\n"),
    _cell("print(pitwall.backtest(hold, bars))\n", out="x" * 2_000_000),  # a big output
]}
SECOND = _cell("@pitwall.vectorized\ndef flat(bars):\n"
               "    return bars.select('ts', 'symbol', weight=pl.lit(0.0))\n")


def test_a_notebook_is_bundled_by_the_buttons_rule(live_api: StartApi) -> None:
    api = live_api()  # no workers: the jobs stay PENDING, nothing runs
    spec = BacktestSpec.model_validate_json(spec_json(params={"extra": 1}))
    with Client(api.url, token=api.tokens["alice"]) as client:
        job_id = client.submit_notebook(NOTEBOOK, spec)
        view = client.get(job_id)
        assert view.spec.engine.value == "vectorized"
        assert view.spec.params == {"level": 0.5, "extra": 1}
        # The spec named no preset and the notebook part kept it unnamed: the default.
        assert (view.spec.costs_preset, view.spec.default_costs_preset) == ("retail",
                                                                            "retail")
        stored = api.stack.store.bundle(view.bundle_sha256)
        # The server's bundle is the SDK's bundle of the same notebook (outputs dropped).
        assert stored == bundle_notebook(NOTEBOOK).data
        assert load_bundle(stored).entrypoint == "strategy.py:hold"

        two = {**NOTEBOOK, "cells": [*NOTEBOOK["cells"], SECOND]}
        # Refused by the client before the upload, saying what to do …
        with pytest.raises(BundleError, match=r"2 strategies.*pitwall:strategy"):
            client.submit_notebook(two, spec)
        # … and by the API, for a client that sends it anyway; a name picks one.
        files = {"notebook": ("n.ipynb", json.dumps(two).encode(), "application/json"),
                 "spec": ("spec.json", spec_json(), "application/json")}
        refused = api.post("/v1/backtests", files=files)
        assert refused.status_code == 400 and "pitwall:strategy" in refused.json()["message"]
        picked = client.get(client.submit_notebook(two, spec, strategy="flat"))
        assert load_bundle(api.stack.store.bundle(picked.bundle_sha256)).entrypoint \
            == "strategy.py:flat"
    garbage = api.post("/v1/backtests", files={
        "notebook": ("n.ipynb", b"import os", "text/plain"),
        "spec": ("spec.json", spec_json(), "application/json")})
    assert garbage.status_code == 400 and "not JSON" in garbage.json()["message"]
