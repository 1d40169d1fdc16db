"""Handlers of the server extension: bundle a notebook, submit, proxy the API and its events.

Every handler is ``@tornado.web.authenticated``: the browser talks to Jupyter with the
user's Jupyter identity, and the extension talks to the Backtest API with the
researcher's API token, which never reaches the browser.

A job's report, artifacts and log are served here too, under Jupyter's own URL (a remote
browser reaches only Jupyter): ``/pitwall/report/{id}`` and ``/pitwall/artifacts/{id}/{name}``
with the file's content type and a Content-Security-Policy that lets the report's inline
scripts (plotly.js is inlined) run, fetch nothing, and run sandboxed (an origin of its own:
no access to Jupyter's cookies or API), and ``/pitwall/log/{id}``, the failure of a job:
its traceback with the frames named by notebook cell (:mod:`pitwall.tracebacks`).
The cell map of every bundle submitted from here is kept by bundle sha256 in
``cell_map_dir``, so a rerun (same bundle) maps too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import re
from pathlib import Path
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

from pitwall.bundle import load_bundle
from pitwall.errors import BundleError
from pitwall.models import BacktestSpec
from pitwall.tracebacks import CellSpan, clean_log, spans_from_manifest
from pitwall_server.bundler import NotebookBundleError, bundle_notebook, plan_notebook

MAX_POINTS = 2000
#: Largest event message relayed (one event carries at most 500 equity points).
MAX_EVENT_BYTES = 1024 * 1024


#: What a report or an artifact page may do: run its own inline scripts and styles (the
#: report inlines plotly.js), show inline images, fetch nothing, and run sandboxed in an
#: origin of its own even when opened outside the lab's iframe.
FILE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "img-src data: blob:; font-src data:; frame-ancestors 'self'; "
            "sandbox allow-scripts allow-downloads allow-popups")
#: Content types of the artifacts served; anything else is a download.
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json",
                 ".txt": "text/plain; charset=utf-8", ".parquet": "application/octet-stream"}
INLINE = (".html", ".json", ".txt")
_ARTIFACT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class ApiClientMixin(tornado.web.RequestHandler):
    """Talk to the Backtest API: its URL and the researcher's token come from the settings."""

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


class PitwallHandler(ApiClientMixin, APIHandler):
    """Base of the JSON handlers."""

    def refuse(self, status: int, message: str, cell: int | None = None) -> None:
        self.set_status(status)
        self.finish(json.dumps({"message": message, "cell": cell}))


class DefaultsHandler(PitwallHandler):
    """Prefill of the Run Backtest dialog (the extension config and the params cell) and
    the preview of the bundle (which cells go in); an ambiguous notebook is refused here,
    before the dialog opens (docs/notebooks.md)."""

    @tornado.web.authenticated
    async def post(self) -> None:
        body = json.loads(self.request.body or b"{}")
        try:
            plan = plan_notebook(body.get("notebook", {}), strategy=body.get("strategy"))
        except NotebookBundleError as exc:
            self.refuse(400, str(exc), exc.cell)
            return
        except BundleError as exc:
            self.refuse(400, str(exc))
            return
        defaults = self.settings["pitwall_defaults"]
        self.finish(json.dumps({**defaults, "params": plan.params, "plan": plan.to_json()}))


class SubmitHandler(PitwallHandler):
    """Notebook + spec → bundle (its strategy, docs/notebooks.md) → POST /v1/backtests."""

    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body)
            built = bundle_notebook(body["notebook"], strategy=body.get("strategy"))
            spec_in = dict(body.get("spec") or {})
            spec_in["params"] = {**built.params, **spec_in.get("params", {})}
            if spec_in.get("engine", built.kind) != built.kind:
                raise ValueError(f"{built.plan.strategy} runs on the {built.kind} engine (a "
                                 "@pitwall.vectorized function: vectorized, a "
                                 f"pitwall.Strategy subclass: event); choose {built.kind}")
            spec_in["engine"] = built.kind
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
            ("spec", "spec.json", "application/json", spec.submission_json()),
        ):
            payload.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                          f"filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n".encode())
            payload.write(data + b"\r\n")
        payload.write(f"--{boundary}--\r\n".encode())
        code, data, _ = await self.api("/v1/backtests", method="POST", body=payload.getvalue(),
                                       headers={"Content-Type":
                                                f"multipart/form-data; boundary={boundary}"})
        if code < 300:  # the cell map, for the traceback of a failure (LogHandler)
            path = body.get("path")
            maps: CellMaps = self.settings["pitwall_cell_maps"]
            try:
                maps.record(built.data, path if isinstance(path, str) else None)
            except (OSError, BundleError) as exc:
                self.log.warning("Pitwall: cannot keep the cell map of a bundle: %s", exc)
        self.set_status(code)
        self.finish(data)


class ApiProxyHandler(PitwallHandler):
    """Reads and cancels, passed through to the Backtest API with the researcher's token."""

    @tornado.web.authenticated
    async def get(self, path: str) -> None:
        query = ("?" + self.request.query) if self.request.query else ""
        code, data, headers = await self.api("/" + path + query)
        if code == 200 and path == "v1/backtests":
            data = self.with_notebooks(data)
        self.set_status(code)
        self.set_header("Content-Type", headers.get("Content-Type", "application/json"))
        self.finish(data)

    def with_notebooks(self, data: bytes) -> bytes:
        """The job list, each job with the notebook it was submitted from (when known here)."""
        maps: CellMaps = self.settings["pitwall_cell_maps"]
        try:
            body = json.loads(data)
            for item in body["items"]:
                item["notebook"] = maps.notebook(str(item.get("bundle_sha256", "")))
        except (ValueError, KeyError, TypeError, AttributeError):
            return data
        return json.dumps(body).encode()

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


class FileHandler(ApiClientMixin, JupyterHandler):
    """A job's file as a page of its own: its content type and :data:`FILE_CSP`."""

    @property
    def content_security_policy(self) -> str:
        return FILE_CSP

    async def serve(self, job_id: str, name: str) -> None:
        if not _ARTIFACT.match(name) or name.startswith("."):
            self.fail(400, f"{name[:80]!r} is not an artifact name (e.g. report.html)")
            return
        path = "report" if name == "report.html" else f"artifacts/{name}"
        code, data, _ = await self.api(f"/v1/backtests/{job_id}/{path}", follow=True)
        pending = code == 503 and _error_code(data) == "artifacts_pending"
        if name == "report.html" and (pending or (code == 404
                                                  and await self._completed(job_id))):
            # The report is written just after the job completes (the API says 503
            # "artifacts_pending" meanwhile): say so, and look again.
            self.set_status(503)
            self.set_header("Retry-After", "2")
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish('<!DOCTYPE html><html><head><meta http-equiv="refresh" content="2">'
                        "<title>Report</title></head><body><p id=\"pitwall-report-pending\">"
                        "The report is being written; this page reloads in a moment.</p>"
                        "</body></html>")
            return
        if code != 200:
            self.fail(code, _message(data) or f"the Backtest API answered {code}")
            return
        suffix = Path(name).suffix
        self.set_header("Content-Type", CONTENT_TYPES.get(suffix, "application/octet-stream"))
        if suffix not in INLINE:
            self.set_header("Content-Disposition", f'attachment; filename="{job_id[:8]}-{name}"')
        self.set_header("Cache-Control", "private, max-age=60")
        self.finish(data)

    async def _completed(self, job_id: str) -> bool:
        code, data, _ = await self.api(f"/v1/backtests/{job_id}")
        try:
            return code == 200 and json.loads(data).get("status") == "COMPLETED"
        except ValueError:
            return False

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(message + "\n")


class ReportHandler(FileHandler):
    """``/pitwall/report/{id}``: the job's HTML report, rendered (see :data:`FILE_CSP`)."""

    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        await self.serve(job_id, "report.html")


class ArtifactHandler(FileHandler):
    """``/pitwall/artifacts/{id}/{name}``: one of the job's files (Parquet is a download)."""

    @tornado.web.authenticated
    async def get(self, job_id: str, name: str) -> None:
        await self.serve(job_id, name)


def _error_code(body: bytes) -> str:
    """The ``error`` code of an API error body ("" when it is not one)."""
    try:
        return str(json.loads(body).get("error") or "")
    except (ValueError, AttributeError):
        return ""


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message") or "")
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:500]


class CellMaps:
    """Cell maps of submitted bundles, one JSON file per bundle sha256 (see the module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._notebooks: dict[str, str | None] = {}

    def record(self, bundle: bytes, notebook_path: str | None) -> str:
        loaded = load_bundle(bundle)
        spans = spans_from_manifest(loaded.manifest, loaded.files)
        self.root.mkdir(parents=True, exist_ok=True)
        entry = {"cells": [s.to_json() for s in spans], "notebook": notebook_path}
        tmp = self.root / f".{loaded.sha256}.tmp"
        tmp.write_text(json.dumps(entry))
        tmp.replace(self.root / f"{loaded.sha256}.json")
        self._notebooks[loaded.sha256] = notebook_path
        return loaded.sha256

    def notebook(self, sha256: str) -> str | None:
        """The path of the notebook a bundle came from (memoized: the list polls each second)."""
        if sha256 not in self._notebooks:
            self._notebooks[sha256] = self.get(sha256)[1]
        return self._notebooks[sha256]

    def get(self, sha256: str) -> tuple[list[CellSpan], str | None]:
        if not _SHA.match(sha256):
            return [], None
        try:
            entry = json.loads((self.root / f"{sha256}.json").read_text())
            return [CellSpan.from_json(c) for c in entry["cells"]], entry.get("notebook")
        except (OSError, ValueError, KeyError, TypeError):
            return [], None


class LogHandler(PitwallHandler):
    """``/pitwall/log/{id}``: the job's log and its failure, the traceback's frames named by
    notebook cell (when the bundle was submitted from this lab) and the noise left out."""

    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        code, data, _ = await self.api(f"/v1/backtests/{job_id}")
        if code != 200:
            self.set_status(code)
            self.finish(data)
            return
        job = json.loads(data)
        code, data, _ = await self.api(f"/v1/backtests/{job_id}/logs")
        if code != 200:
            self.refuse(code, _message(data) or f"no log for job {job_id}")
            return
        log = data.decode("utf-8", "replace")
        maps: CellMaps = self.settings["pitwall_cell_maps"]
        spans, notebook = maps.get(str(job.get("bundle_sha256", "")))
        failure = clean_log(log, spans) if job.get("status") != "COMPLETED" else None
        self.finish(json.dumps({
            "job_id": job_id, "status": job.get("status"), "reason": job.get("reason"),
            "notebook": notebook, "mapped": bool(spans), "log": log,
            "failure": failure.to_json() if failure is not None else None,
        }))


class RerunHandler(PitwallHandler):
    """Run a finished job again from its manifest (same bundle, same pinned data)."""

    @tornado.web.authenticated
    async def post(self, job_id: str) -> None:
        code, data, _ = await self.api(f"/v1/backtests/{job_id}/rerun", method="POST", body=b"")
        self.set_status(code)
        self.finish(data)
