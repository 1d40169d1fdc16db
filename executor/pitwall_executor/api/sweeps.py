"""Sweep endpoints of the Backtest API: one submission with a parameter grid.

``POST /v1/sweeps`` takes the multipart body of ``POST /v1/backtests`` plus a ``grid``
part (JSON ``{"param": [values, ...]}``) and queues one child job per grid point;
``GET /v1/sweeps/{id}`` answers the sweep (aggregate status and progress), its
results table and, once it has ended, its overfitting statistics (docs/overfitting.md).
The sweep and its children are ordinary jobs too: ``GET /v1/backtests/{id}`` and
``/cancel`` work on them, with the same access rules.
"""

from __future__ import annotations

import json
from typing import Any

from tornado.web import stream_request_body

from pitwall.models import BacktestSpec, JobStatus
from pitwall_executor.api.errors import bad_request, not_found
from pitwall_executor.api.handlers import ApiHandler, BacktestsHandler
from pitwall_executor.api.models import CreateSweepResponse, SweepResultsResponse
from pitwall_executor.execution.overfitting import sweep_overfitting


def parse_grid(raw: bytes | None) -> dict[str, list[Any]]:
    """The ``grid`` part as a dict of parameter → list; a 400 naming ``grid`` otherwise.

    The values themselves are checked by :func:`pitwall_executor.jobs.sweeps.expand_grid`
    and the child specs (a :class:`SweepError`, also a 400 on ``grid``).
    """
    if raw is None:
        raise bad_request("grid", 'missing; send the parameter grid as JSON in the multipart '
                          'part \'grid\', e.g. {"fast": [5, 10], "slow": [60, 120]}')
    try:
        grid = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("grid", "is not valid JSON; send an object of parameter → list of "
                          'values, e.g. {"fast": [5, 10]}') from None
    if not isinstance(grid, dict):
        raise bad_request("grid", f"must be a JSON object of parameter → list of values, not "
                          f"{type(grid).__name__}; e.g. {{\"fast\": [5, 10]}}")
    return grid


@stream_request_body
class SweepsHandler(BacktestsHandler):
    """``POST /v1/sweeps``: a bundle, a spec and a grid → a sweep of child jobs (202)."""

    route = "/v1/sweeps"
    SUPPORTED_METHODS = ("POST",)

    async def post(self) -> None:
        if self._size > self._cap:
            raise self._too_large(self._size)
        part = self._multipart(b"".join(self._chunks))
        self._chunks.clear()
        bundle, spec_raw = self._required(part)
        if len(bundle) > self.ctx.max_bundle_bytes:
            raise self._too_large(len(bundle))
        spec = BacktestSpec.model_validate_json(spec_raw)
        grid = parse_grid(part("grid"))
        stack = self.ctx.stack
        parent = await self.ctx.run_submit(stack.submit_sweep, spec, bundle, grid,
                                           researcher=self.researcher.name)
        children = [row.job_id for row in await self.ctx.run(stack.store.sweep_results, parent)]
        self.set_header("Location", f"/v1/sweeps/{parent}")
        self.write_json(CreateSweepResponse(id=parent, status=JobStatus.PENDING,
                                            children=children), 202)


class SweepHandler(ApiHandler):
    """``GET /v1/sweeps/{id}``: the sweep's aggregate state and its results table."""

    route = "/v1/sweeps/{id}"

    async def get(self, sweep_id: str) -> None:
        view = await self.visible_job(sweep_id)
        if view.kind != "sweep":
            raise not_found(f"sweep {sweep_id!r} (it is a single backtest: use "
                            f"/v1/backtests/{sweep_id})")
        rows = await self.ctx.run(self.ctx.stack.store.sweep_results, sweep_id)
        overfitting, note = await self.ctx.run(sweep_overfitting, self.ctx.stack, view, rows)
        self.write_json(SweepResultsResponse(sweep=view, rows=rows, overfitting=overfitting,
                                             overfitting_note=note))
