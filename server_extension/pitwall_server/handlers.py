"""HTTP handlers of the server extension: bundle a notebook, submit, and proxy the API.

Every handler is ``@tornado.web.authenticated``: the browser talks to Jupyter with the
user's Jupyter identity, and the extension talks to the Backtest API with the
researcher's API token, which never reaches the browser.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from pydantic import ValidationError
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from pitwall.errors import BundleError
from pitwall.models import BacktestSpec
from pitwall_server.bundler import NotebookBundleError, bundle_notebook, read_params

MAX_POINTS = 2000


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
