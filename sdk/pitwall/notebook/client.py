"""``pitwall.Client``: the Backtest API from Python (a notebook, a script, a sweep driver).

>>> client = Client("http://127.0.0.1:8765", token="...")       # doctest: +SKIP
>>> job = client.submit(bundle, spec)                            # doctest: +SKIP
>>> job = client.submit_notebook("sma_crossover.ipynb", spec)    # doctest: +SKIP
>>> client.wait(job).metrics.sharpe                              # doctest: +SKIP
>>> bars = client.bars("sample", "AAPL,MSFT", "2024-03-04", "2024-03-15")  # doctest: +SKIP

The URL and token default to ``PITWALL_API_URL`` and ``PITWALL_TOKEN``; inside JupyterLab
the Pitwall server extension sets both for the kernels it starts. :meth:`Client.wait` and
:meth:`Client.stream_events` ride out an API that is briefly unavailable (see
:mod:`pitwall.notebook.backoff`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from pitwall.errors import PitwallError
from pitwall.models import BacktestSpec, JobStatus, JobView, Metrics, ProgressEvent
from pitwall.notebook.backoff import Backoff, retry_after_s

_T = TypeVar("_T")

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import AsyncIterator

    import httpx
    import polars as pl
    from tornado.websocket import WebSocketClientConnection

    from pitwall.engine.corporate import CorporateActions


#: Statuses that mean "not now" rather than "no": the API's database is restarting (503),
#: a proxy in front of it cannot reach it (502, 504), or tornado's client lost the
#: connection before an answer (599).
UNAVAILABLE = frozenset({502, 503, 504, 599})
#: How long :meth:`Client.wait` and :meth:`Client.stream_events` retry an unavailable API.
RETRY_FOR_S = 120.0


class ApiError(PitwallError):
    """The Backtest API refused a request; ``status`` is the HTTP status.

    ``retry_after`` is the answer's ``Retry-After`` in seconds, when it had one.
    """

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class ApiUnavailableError(ApiError, ConnectionError):
    """The API stayed unavailable (503, 502/504, unreachable) for longer than the client
    retries; ``status`` is the last status it answered, 503 when it could not be reached."""


class Client:
    """A small synchronous client of the Backtest API."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 30.0) -> None:
        import httpx

        self.url = (url or os.environ.get("PITWALL_API_URL") or "").rstrip("/")
        if not self.url:
            raise PitwallError("no Backtest API URL: pass url= or set PITWALL_API_URL "
                               "(inside JupyterLab the Pitwall extension sets it)")
        token = token or os.environ.get("PITWALL_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  follow_redirects=False)
        #: The dataset version the last :meth:`bars` call read.
        self.last_bars_version: int | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _check(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            try:
                body = resp.json()
                message = body.get("message") or body.get("error") or resp.text
            except ValueError:
                message = resp.text
            raise ApiError(resp.status_code, str(message),
                           retry_after=retry_after_s(resp.headers.get("Retry-After")))
        if not resp.content:
            return None
        return resp.json() if "json" in resp.headers.get("content-type", "") else resp.content

    def submit(self, bundle: bytes, spec: BacktestSpec) -> str:
        """Submit a bundle with its spec; return the job id.

        Every ``submit*`` sends only the fields ``spec`` was given
        (:meth:`BacktestSpec.submission_json`): a spec that names no ``costs_preset`` gets
        the deployment's default preset, under the cost fields it sets
        (docs/engine-conventions.md §2.3)."""
        resp = self._http.post("/v1/backtests", files={
            "bundle": ("bundle.zip", bundle, "application/zip"),
            "spec": ("spec.json", spec.submission_json(), "application/json"),
        })
        return str(self._check(resp)["id"])

    def submit_notebook(self, notebook: str | os.PathLike[str] | dict[str, Any],
                        spec: BacktestSpec, *, strategy: str | None = None) -> str:
        """Submit a notebook (a path to an ``.ipynb`` or its JSON as a dict); return the job id.

        The API bundles it by the Run Backtest button's rule (docs/notebooks.md): its one
        strategy (``strategy`` names it when there are several) and the cells it depends on
        by name; its kind decides the engine, its ``pitwall:params`` cell gives default
        params under ``spec.params``. Outputs are not sent. An ambiguous notebook is
        refused here, before anything is uploaded (:class:`pitwall.errors.BundleError`).
        """
        from pitwall.notebook_bundle import plan_notebook

        book = _notebook(notebook)
        plan_notebook(book, strategy=strategy)  # refused here, not after the upload
        cells = [{k: v for k, v in cell.items() if k not in ("outputs", "attachments")}
                 for cell in book.get("cells", []) if isinstance(cell, dict)]
        data = json.dumps({**book, "cells": cells}).encode()
        files: dict[str, Any] = {
            "notebook": ("notebook.ipynb", data, "application/x-ipynb+json"),
            "spec": ("spec.json", spec.submission_json(), "application/json"),
        }
        if strategy is not None:
            files["strategy"] = (None, strategy.encode())
        return str(self._check(self._http.post("/v1/backtests", files=files))["id"])

    def submit_sweep(self, bundle: bytes, spec: BacktestSpec,
                     grid: dict[str, builtins.list[Any]]) -> str:
        """Submit one run per point of ``grid`` (parameter → values, overriding
        ``spec.params``); return the sweep's id. ``get``/``wait`` show its aggregate state."""
        resp = self._http.post("/v1/sweeps", files={
            "bundle": ("bundle.zip", bundle, "application/zip"),
            "spec": ("spec.json", spec.submission_json(), "application/json"),
            "grid": ("grid.json", json.dumps(grid).encode(), "application/json"),
        })
        return str(self._check(resp)["id"])

    def submit_notebook_sweep(self, notebook: str | os.PathLike[str] | dict[str, Any],
                              spec: BacktestSpec, grid: dict[str, builtins.list[Any]], *,
                              strategy: str | None = None) -> str:
        """:meth:`submit_sweep` of a notebook's strategy, bundled here by the Run Backtest
        button's rule (docs/notebooks.md), as :meth:`submit_notebook` bundles it; its
        ``pitwall:params`` cell gives default params under ``spec.params``. The sweep's id."""
        from pitwall.models import EngineKind
        from pitwall.notebook_bundle import bundle_notebook

        built = bundle_notebook(_notebook(notebook), strategy=strategy)
        spec = spec.model_copy(update={"engine": EngineKind(built.kind),
                                       "params": {**built.params, **spec.params}})
        return self.submit_sweep(built.data, spec, grid)

    def sweep_results(self, sweep_id: str) -> pl.DataFrame:
        """The sweep's results table: one row per child in grid order, with ``job_id``,
        ``status``, ``reason``, one column per grid parameter and one per scalar metric
        (null until the child completes)."""
        import polars as pl

        body = self._check(self._http.get(f"/v1/sweeps/{sweep_id}"))
        return pl.DataFrame([_flat_row(row) for row in body["rows"]], strict=False,
                            infer_schema_length=None)

    def get(self, job_id: str) -> JobView:
        return JobView.model_validate(self._check(self._http.get(f"/v1/backtests/{job_id}")))

    def list(self, *, status: JobStatus | None = None, limit: int = 50,
             ) -> builtins.list[JobView]:
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status.value
        body = self._check(self._http.get("/v1/backtests", params=params))
        items = body["items"] if isinstance(body, dict) else body
        return [JobView.model_validate(item) for item in items]

    def cancel(self, job_id: str) -> JobView:
        self._check(self._http.post(f"/v1/backtests/{job_id}/cancel"))
        return self.get(job_id)

    def logs(self, job_id: str) -> str:
        body = self._check(self._http.get(f"/v1/backtests/{job_id}/logs"))
        if body is None:  # an empty log is an empty body
            return ""
        return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)

    def events(self, job_id: str, *, after: int = 0, idle: float = 1.0,
               ) -> builtins.list[ProgressEvent]:
        """Events after ``after``: a snapshot read from the events WebSocket, which ends
        when the server closes it (an ended job) or sends nothing for ``idle`` seconds."""
        # On a thread of its own: a notebook cell already runs inside an event loop.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._read_events(job_id, after, idle)).result()

    async def _read_events(self, job_id: str, after: int, idle: float,
                           ) -> builtins.list[ProgressEvent]:
        conn = await self._connect_events(job_id, after)
        out: builtins.list[ProgressEvent] = []
        try:
            while True:
                try:
                    message = await asyncio.wait_for(conn.read_message(), idle)
                except TimeoutError:
                    break
                if message is None:  # the server closed the stream: the job has ended
                    break
                out.append(ProgressEvent.model_validate_json(message))
        finally:
            conn.close()
        return out

    async def stream_events(self, job_id: str, *, after: int = 0,
                            retry_for: float = RETRY_FOR_S) -> AsyncIterator[ProgressEvent]:
        """The job's events after ``after`` as they happen (the running equity curve rides
        on the progress events). Ends when the server ends the stream after the job's
        terminal event.

        A stream refused with 503 (the API's database is restarting) or lost mid-way is
        reopened after the last event seen, with backoff, for up to ``retry_for`` seconds
        in a row; then :class:`ApiUnavailableError` (a :class:`ConnectionError`), and the
        caller can resume later with ``after=`` the last ``seq`` it saw.
        """
        outage = Backoff(retry_for)
        while True:
            try:
                conn = await self._connect_events(job_id, after)
            except (ApiError, OSError) as exc:
                await asyncio.sleep(self._retry_delay(exc, outage, job_id, "follow"))
                continue
            try:
                while (message := await conn.read_message()) is not None:
                    event = ProgressEvent.model_validate_json(message)
                    after = event.seq
                    outage.reset()
                    yield event
                if conn.close_code == 1000:  # the server's end: the job has ended
                    return
                lost = ConnectionError(f"the events stream was lost ({conn.close_code}: "
                                       f"{conn.close_reason})")
            finally:
                conn.close()
            await asyncio.sleep(self._retry_delay(lost, outage, job_id, "follow"))

    async def _connect_events(self, job_id: str, after: int) -> WebSocketClientConnection:
        from tornado.httpclient import HTTPClientError, HTTPRequest
        from tornado.iostream import StreamClosedError
        from tornado.websocket import websocket_connect

        url = "ws" + self.url.removeprefix("http") + f"/v1/backtests/{job_id}/events"
        request = HTTPRequest(f"{url}?after={after}", headers=dict(self._http.headers))
        try:
            return await websocket_connect(request)
        except HTTPClientError as exc:  # refused before the upgrade: a JSON error body
            body = exc.response.body.decode("utf-8", "replace") if exc.response else str(exc)
            with contextlib.suppress(ValueError, AttributeError):
                body = str(json.loads(body).get("message") or body)
            retry_after = retry_after_s(exc.response.headers.get("Retry-After")
                                        if exc.response else None)
            raise ApiError(exc.code, body, retry_after=retry_after) from exc
        except StreamClosedError as exc:  # the API closed the connection during the upgrade
            raise ConnectionError(f"the API closed the connection ({exc})") from exc

    def wait(self, job_id: str, *, timeout: float | None = None, poll: float = 0.5,
             retry_for: float = RETRY_FOR_S) -> JobView:
        """Block until the job ends (or ``timeout`` seconds pass: TimeoutError).

        An unavailable API (503 while its database restarts, 502/504 from a proxy, a
        refused or dropped connection) is retried with backoff, honouring its
        ``Retry-After``, for up to ``retry_for`` seconds in a row (and never past
        ``timeout``); then :class:`ApiUnavailableError`. The job itself is unaffected.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        outage = Backoff(retry_for)
        retried: tuple[type[Exception], ...] = (ApiError, OSError, *_transient_http_errors())
        while True:
            try:
                view = self.get(job_id)
            except retried as exc:
                time.sleep(self._retry_delay(exc, outage, job_id, "wait for", until=deadline))
                continue
            outage.reset()
            if view.status.terminal:
                return view
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {view.status.value} after {timeout} s")
            time.sleep(poll)

    def _retry_delay(self, exc: BaseException, outage: Backoff, job_id: str, doing: str, *,
                     until: float | None = None) -> float:
        """How long to wait before retrying after ``exc``; re-raises ``exc`` when it is not
        an outage, :class:`ApiUnavailableError` when the outage outlasted the budget."""
        if isinstance(exc, ApiError) and exc.status not in UNAVAILABLE:
            raise exc
        retry_after = exc.retry_after if isinstance(exc, ApiError) else None
        delay = outage.delay(retry_after=retry_after, until=until)
        if delay is not None:
            return delay
        status = exc.status if isinstance(exc, ApiError) else 503
        what = (f"it answered {exc.status}: {exc.message[:200]}" if isinstance(exc, ApiError)
                else f"the connection failed: {exc}")
        raise ApiUnavailableError(status, (
            f"the Backtest API at {self.url} has been unavailable for {outage.elapsed_s:.0f} s "
            f"({what}), so the client stopped trying to {doing} job {job_id}. The job itself "
            f"is unaffected: check the API ({self.url}/healthz, or ask whoever runs it), then "
            f"call the same method again, with a larger retry_for= to wait longer"),
        ) from exc

    def report_url(self, job_id: str, *, retry_for: float = RETRY_FOR_S) -> str:
        """A signed, expiring URL of the job's HTML report (waited for while it is being
        written, as :meth:`artifact` does)."""
        return self._available(job_id, "find the report of", retry_for,
                               lambda: self._report_url(job_id))

    def _report_url(self, job_id: str) -> str:
        resp = self._http.get(f"/v1/backtests/{job_id}/report")
        if resp.status_code in (301, 302, 303, 307):
            location = resp.headers["location"]
            return location if "://" in location else self.url + location
        self._check(resp)
        raise ApiError(resp.status_code, "the API did not redirect to the report")

    def artifact(self, job_id: str, name: str, *, retry_for: float = RETRY_FOR_S) -> bytes:
        """One result file of the job (equity.parquet, metrics.json, trades.parquet, …).

        A file written after the job's commit (the HTML report, the ledgers) may still be
        on its way right after :meth:`wait` returns: the API answers 503 with a
        ``Retry-After`` then, and this waits for it, as it waits out an outage."""
        return self._available(job_id, "read an artifact of", retry_for,
                               lambda: self._artifact(job_id, name))

    def _artifact(self, job_id: str, name: str) -> bytes:
        resp = self._http.get(f"/v1/backtests/{job_id}/artifacts/{name}")
        if resp.status_code in (301, 302, 303, 307):
            resp = self._http.get(resp.headers["location"])  # the signature is the credential
        if resp.status_code >= 400:
            self._check(resp)
        return resp.content

    def _available(self, job_id: str, doing: str, retry_for: float,
                   call: Callable[[], _T]) -> _T:
        """``call()``, retried with backoff while the API answers "not now" (503…)."""
        outage = Backoff(retry_for)
        retried: tuple[type[Exception], ...] = (ApiError, OSError, *_transient_http_errors())
        while True:
            try:
                return call()
            except retried as exc:
                time.sleep(self._retry_delay(exc, outage, job_id, doing))

    def bars(self, dataset: str, symbols: str | builtins.list[str], start: dt.date | str,
             end: dt.date | str, version: int | None = None) -> pl.DataFrame:
        """The bars a job with this dataset, symbols and range would be given (the latest
        version, or ``version``), for a quick local check: ``pitwall.backtest(strategy,
        client.bars(...))`` then sees exactly what the sandboxed run sees.

        The frame's columns are those a strategy receives (``ts``, ``symbol``, ``open``,
        ``high``, ``low``, ``close``, ``volume``), sorted by ``(symbol, ts)``. One call is
        limited to a few million bars (the API says so; narrow the range). The version
        read is ``client.last_bars_version`` afterwards.
        """
        import io

        import polars as pl

        names = symbols.split(",") if isinstance(symbols, str) else symbols
        params: dict[str, Any] = {"symbols": ",".join(s.strip() for s in names),
                                  "start": str(start), "end": str(end)}
        if version is not None:
            params["version"] = version
        resp = self._http.get(f"/v1/datasets/{dataset}/bars", params=params)
        if resp.status_code >= 400:
            self._check(resp)
        version_read = resp.headers.get("Pitwall-Data-Version")
        self.last_bars_version = int(version_read) if version_read else None
        return pl.read_parquet(io.BytesIO(resp.content))

    def reference(self, dataset: str, version: int | None = None) -> CorporateActions | None:
        """The version's corporate actions and listings (docs/reference-data.md), for a
        quick run that applies them as the job does: ``pitwall.backtest(strategy, bars,
        corporate=client.reference(...))``; None when the version has no reference data.
        Pass the version ``client.bars`` read (``client.last_bars_version``)."""
        import io

        import polars as pl

        from pitwall.engine.corporate import CorporateActions

        params = {"version": version} if version is not None else {}
        tables = []
        for table in ("listings", "corporate_actions"):
            resp = self._http.get(f"/v1/datasets/{dataset}/reference/{table}", params=params)
            if resp.status_code >= 400:
                self._check(resp)
            tables.append(pl.read_parquet(io.BytesIO(resp.content)))
        listings, actions = tables
        if listings.is_empty() and actions.is_empty():
            return None
        return CorporateActions(actions, listings)

    def rerun(self, job_id: str) -> str:
        """Run a job again from its manifest (same bundle, pinned data); the new job id."""
        return str(self._check(self._http.post(f"/v1/backtests/{job_id}/rerun"))["id"])

    def equity(self, job_id: str) -> pl.DataFrame:
        """The job's equity curve as a Polars frame."""
        import io

        import polars as pl

        return pl.read_parquet(io.BytesIO(self.artifact(job_id, "equity.parquet")))


def _notebook(notebook: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    """A notebook given as a path to an ``.ipynb`` or as its JSON already read."""
    from pitwall.notebook_bundle import load_notebook

    if isinstance(notebook, dict):
        return notebook
    with open(notebook, "rb") as fh:
        return load_notebook(fh.read())


def _transient_http_errors() -> tuple[type[Exception], ...]:
    """httpx's errors of a connection that failed or dropped (not of a malformed URL)."""
    import httpx

    return (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


def _flat_row(row: dict[str, Any]) -> dict[str, Any]:
    metrics = row.get("metrics") or {}
    scalars = {k: metrics.get(k) for k in Metrics.model_fields if k != "lookahead"}
    flat: dict[str, Any] = {"job_id": row["job_id"], "status": row["status"],
                            "reason": row.get("reason")}
    return {**flat, **row["params"], **scalars}
