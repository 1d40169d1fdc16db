"""Handlers of the server extension: bundle a notebook, submit, proxy the API and its events.

Every handler is ``@tornado.web.authenticated``: the browser talks to Jupyter with the
user's Jupyter identity, and the extension talks to the Backtest API with the
researcher's API token, which never reaches the browser.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from pydantic import ValidationError
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import (
    WebSocketClientConnection,
    WebSocketClosedError,
    WebSocketHandler,
    websocket_connect,
)

from pitwall.errors import BundleError
from pitwall.models import BacktestSpec
from pitwall_server.bundler import NotebookBundleError, bundle_notebook, read_params

MAX_POINTS = 2000
#: Largest event message relayed (one event carries at most 500 equity points).
MAX_EVENT_BYTES = 1024 * 1024


class PitwallHandler(APIHandler):
    """Base: the API URL and token come from the extension's settings."""

    @property
    def api_url(self) -> str:
        return str(self.settings["pitwall_api_url"])

    def _request(self, path: str, *, method: str = "GET", body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> HTTPRequest:
        token = self.settings["pitwall_api_token"]
        return HTTPRequest(self.api_url + path, method=method, body=body,
                           headers={"Authorization": f"Bearer {token}", **(headers or {})},
                           follow_redirects=False, request_timeout=60)

    async def api(self, path: str, *, follow: bool = False,
                  **kwargs: Any) -> tuple[int, bytes, dict[str, str]]:
        """Call the API; with ``follow``, fetch the signed URL a 302 points at (same API)."""
        try:
            resp = await AsyncHTTPClient().fetch(self._request(path, **kwargs))
        except HTTPClientError as exc:
            if exc.response is None:
                raise
            resp = exc.response
        location = resp.headers.get("Location")
        if follow and resp.code in (301, 302, 303, 307) and location:
            signed = "/" + location.split("://", 1)[-1].split("/", 1)[-1] if "://" in location \
                else location
            return await self.api(signed)
        return resp.code, resp.body or b"", dict(resp.headers)

    def refuse(self, status: int, message: str, cell: int | None = None) -> None:
        self.set_status(status)
        self.finish(json.dumps({"message": message, "cell": cell}))


def _params_of(notebook: dict[str, Any]) -> dict[str, Any]:
    for index, cell in enumerate(notebook.get("cells", [])):
        if "pitwall:params" in cell.get("metadata", {}).get("tags", []):
            src = cell.get("source", "")
            return read_params("".join(src) if isinstance(src, list) else src, index + 1)
    return {}


class DefaultsHandler(PitwallHandler):
    """Prefill of the Run Backtest dialog, from the extension config and the params cell."""

    @tornado.web.authenticated
    async def post(self) -> None:
        body = json.loads(self.request.body or b"{}")
        try:
            params = _params_of(body.get("notebook", {}))
        except NotebookBundleError as exc:
            self.refuse(400, str(exc), exc.cell)
            return
        defaults = self.settings["pitwall_defaults"]
        self.finish(json.dumps({**defaults, "params": params}))


class SubmitHandler(PitwallHandler):
    """Notebook + active cell + spec → bundle → POST /v1/backtests."""

    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body)
            built = bundle_notebook(body["notebook"], active_cell=body.get("active_cell"))
            spec_in = dict(body.get("spec") or {})
            spec_in["params"] = {**built.params, **spec_in.get("params", {})}
            spec = BacktestSpec.model_validate(spec_in)
        except NotebookBundleError as exc:
            self.refuse(400, str(exc), exc.cell)
            return
        except (BundleError, KeyError, ValueError, ValidationError) as exc:
            self.refuse(400, f"cannot submit: {exc}")
            return
        boundary = "pitwall-" + dt.datetime.now(dt.UTC).strftime("%H%M%S%f")
        payload = io.BytesIO()
        for name, filename, ctype, data in (
            ("bundle", "bundle.zip", "application/zip", built.data),
            ("spec", "spec.json", "application/json", spec.model_dump_json().encode()),
        ):
            payload.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                          f"filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n".encode())
            payload.write(data + b"\r\n")
        payload.write(f"--{boundary}--\r\n".encode())
        code, data, _ = await self.api("/v1/backtests", method="POST", body=payload.getvalue(),
                                       headers={"Content-Type":
                                                f"multipart/form-data; boundary={boundary}"})
        self.set_status(code)
        self.finish(data)


class ApiProxyHandler(PitwallHandler):
    """Reads and cancels, passed through to the Backtest API with the researcher's token."""

    @tornado.web.authenticated
    async def get(self, path: str) -> None:
        query = ("?" + self.request.query) if self.request.query else ""
        code, data, headers = await self.api("/" + path + query)
        self.set_status(code)
        self.set_header("Content-Type", headers.get("Content-Type", "application/json"))
        self.finish(data)

    @tornado.web.authenticated
    async def post(self, path: str) -> None:
        if not path.endswith("/cancel"):
            self.refuse(404, "only cancel is proxied by POST; submit through /pitwall/submit")
            return
        code, data, _ = await self.api("/" + path, method="POST", body=b"")
        self.set_status(code)
        self.finish(data)


class EquityHandler(PitwallHandler):
    """The equity curve of a job as JSON points (at most 2,000) for the panel's chart."""

    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        import polars as pl

        code, data, _ = await self.api(f"/v1/backtests/{job_id}/artifacts/equity.parquet",
                                       follow=True)
        if code != 200:
            self.set_status(code)
            self.finish(data)
            return
        frame = pl.read_parquet(io.BytesIO(data)).select("ts", "equity")
        step = max(1, frame.height // MAX_POINTS)
        frame = frame.gather_every(step)
        self.finish(json.dumps({
            "ts": frame.get_column("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_list(),
            "equity": frame.get_column("equity").to_list(),
        }))


class EventsProxyHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """``WS /pitwall/events/{id}?after=N``: the job's events, relayed from the Backtest API.

    The browser authenticates to Jupyter (cookie or Jupyter token); this handler opens the
    API's ``WS /v1/backtests/{id}/events`` with the researcher's token, server-side, and
    relays each message (a :class:`pitwall.models.ProgressEvent` as JSON) one way. The
    upstream socket is opened before the upgrade, so a refusal (no such job, a bad
    ``after``) is answered as an HTTP error. When the API closes (1000 after the job's
    terminal event) the same code is passed on; a lost API closes with 1011 and the
    client resumes with ``?after=`` its last ``seq``.
    """

    upstream: WebSocketClientConnection | None = None
    _pump_task: asyncio.Task[None] | None = None

    def set_default_headers(self) -> None:
        """No JupyterHandler default headers (CSP and the like) on a WebSocket upgrade."""

    @ws_authenticated
    async def get(self, job_id: str) -> None:
        after = self.get_query_argument("after", "0")
        if not after.isdigit() or len(after) > 10:
            raise tornado.web.HTTPError(400, "after must be an event seq (an integer ≥ 0)")
        api = str(self.settings["pitwall_api_url"])
        request = HTTPRequest(
            "ws" + api.removeprefix("http") + f"/v1/backtests/{job_id}/events?after={after}",
            headers={"Authorization": f"Bearer {self.settings['pitwall_api_token']}"},
            connect_timeout=30, request_timeout=30, follow_redirects=False)
        try:
            self.upstream = await websocket_connect(request, max_message_size=MAX_EVENT_BYTES)
        except HTTPClientError as exc:  # refused before the upgrade: pass the refusal on
            code = exc.code if 400 <= exc.code < 600 else 502
            raise tornado.web.HTTPError(code, _api_message(exc)) from None
        except OSError as exc:
            raise tornado.web.HTTPError(502, f"the Backtest API is unreachable ({exc})") from None
        await WebSocketHandler.get(self, job_id)
        if self.ws_connection is None:  # the upgrade was refused (origin, headers)
            self._close_upstream()

    def open(self, *args: str, **kwargs: str) -> None:
        super().open(*args, **kwargs)  # WebSocketMixin: the ping loop
        self._pump_task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        while True:
            message = await upstream.read_message()
            if message is None:  # the API closed: 1000 when the job ended, else resume later
                code = upstream.close_code or 1011
                reason = upstream.close_reason or "the Backtest API closed the stream"
                self.close(code, reason[:120])
                return
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except WebSocketClosedError:
                return

    def on_message(self, message: str | bytes) -> None:
        """The stream is one-way; a client resumes by reconnecting with ``?after=``."""

    def on_close(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
        self._close_upstream()

    def _close_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None


def _api_message(exc: HTTPClientError) -> str:
    body = exc.response.body if exc.response is not None and exc.response.body else b""
    try:
        return str(json.loads(body).get("message") or exc.message)
    except (ValueError, AttributeError):
        return str(exc.message)


class ReportHandler(PitwallHandler):
    """The job's HTML report, fetched through its signed URL and served here."""

    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        code, data, headers = await self.api(f"/v1/backtests/{job_id}/report", follow=True)
        self.set_status(code)
        self.set_header("Content-Type", headers.get("Content-Type", "text/html"))
        self.finish(data)


class RerunHandler(PitwallHandler):
    """Run a finished job again from its manifest (same bundle, same pinned data)."""

    @tornado.web.authenticated
    async def post(self, job_id: str) -> None:
        code, data, _ = await self.api(f"/v1/backtests/{job_id}/rerun", method="POST", body=b"")
        self.set_status(code)
        self.finish(data)
