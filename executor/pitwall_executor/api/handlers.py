"""HTTP handlers of the Backtest API: parse the request, call the stack, write the answer.

Every failure is raised as an exception and turned into a JSON :class:`ErrorResponse`
by :meth:`ApiHandler.write_error` through :func:`errors.to_api_error` (mapped once).

Access control: a researcher only ever sees their own jobs. Another researcher's job
answers **404**, exactly like a job that does not exist, so ids cannot be probed; an
admin sees every job. Store calls run on the context's thread pool.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from tornado import httputil
from tornado.web import RequestHandler, stream_request_body

from pitwall.models import BacktestSpec, JobStatus, JobView
from pitwall.notebook_bundle import bundle_notebook, load_notebook
from pitwall.text import printable_log
from pitwall_executor.api.context import ApiContext
from pitwall_executor.api.errors import ApiError, bad_request, not_found, to_api_error
from pitwall_executor.api.models import CreateBacktestResponse, ListBacktestsResponse
from pitwall_executor.api.signing import sign_url, verify
from pitwall_executor.config import Config
from pitwall_executor.jobs.researchers import Researcher, bearer_token
from pitwall_executor.jobs.store import MetadataStore
from pitwall_executor.storage.artifacts import (
    ArtifactMissingError,
    ArtifactUnavailableError,
    read_artifact,
)

log = logging.getLogger(__name__)
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SPEC_SLACK = 1 << 20  # room for the spec part and multipart framing beside the bundle
# An upload over the cap is read and dropped up to this many times the cap, so a client
# that sends its whole body before reading the answer gets the 413; past it the 413 is
# sent at once and the connection closed.
DRAIN_FACTOR = 4
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json",
                 ".txt": "text/plain; charset=utf-8"}


class ApiHandler(RequestHandler):
    """Base of every handler: authentication, JSON answers, the one error mapping."""

    route = "unmatched"
    auth_required = True
    _researcher: Researcher | None = None

    @property
    def ctx(self) -> ApiContext:
        ctx = self.settings["pitwall"]
        assert isinstance(ctx, ApiContext)
        return ctx

    @property
    def researcher(self) -> Researcher:
        assert self._researcher is not None, "handler used researcher without auth"
        return self._researcher

    async def prepare(self) -> None:
        if self.auth_required:
            self._researcher = await self._authenticate()

    async def _authenticate(self) -> Researcher:
        token = bearer_token(self.request.headers.get("Authorization"))
        if token is None:
            raise ApiError(401, "unauthorized", "send your API token as 'Authorization: Bearer "
                           "<token>'; an admin creates one with `pitwall admin create-researcher`")
        who = await self.ctx.authenticate(token)
        if who is None:
            raise ApiError(401, "unauthorized", "this API token is not valid; ask an admin for "
                           "a new one (`pitwall admin create-researcher`)")
        return who

    def write_json(self, model: BaseModel, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(model.model_dump_json())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        err = to_api_error(exc) if exc is not None else None
        if err is None:
            message = ("internal error; it is logged on the server, report it with the time"
                       if status_code >= 500 else self._reason)
            err = ApiError(status_code, "internal" if status_code >= 500 else "error", message)
        self.write_api_error(err)

    def write_api_error(self, err: ApiError) -> None:
        """Answer ``err`` as the JSON :class:`ErrorResponse`, with its headers."""
        self.set_status(err.status)
        if err.status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="pitwall"')
        if err.retry_after is not None:
            self.set_header("Retry-After", str(err.retry_after))
        self.set_header("Content-Type", "application/json")
        self.finish(err.body().model_dump_json())

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        err = to_api_error(value) if value is not None else None
        if err is None:
            super().log_exception(typ, value, tb)
        elif err.status >= 500:
            log.warning("%s %s: %s (%s)", self.request.method, self.request.path, err.message,
                        value)

    async def visible_job(self, job_id: str) -> JobView:
        """The job if the caller may see it; 404 otherwise (also for other people's jobs)."""
        if not JOB_ID.match(job_id):
            raise not_found(f"job {job_id[:64]!r}")
        view = await self.ctx.job_view(job_id)
        if not self.researcher.may_see(view.researcher):
            raise not_found(f"job {job_id!r}")
        return view


class NotFoundHandler(ApiHandler):
    """Any path the API does not have."""

    auth_required = False

    def prepare(self) -> None:  # type: ignore[override]
        raise ApiError(404, "not_found", f"no such endpoint {self.request.path[:200]!r}; "
                       "see /v1/openapi.json")


@stream_request_body
class BacktestsHandler(ApiHandler):
    """``POST /v1/backtests`` submits (multipart: a 'bundle' zip, or a 'notebook' bundled
    here by the button's rule, and a 'spec'); ``GET /v1/backtests`` lists."""

    route = "/v1/backtests"

    def initialize(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    @property
    def _cap(self) -> int:
        return self.ctx.max_bundle_bytes + SPEC_SLACK

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method != "POST":
            return
        ctype = self.request.headers.get("Content-Type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise ApiError(415, "unsupported_media_type",
                           f"send multipart/form-data with a 'bundle' file and a 'spec' JSON "
                           f"part, not {ctype[:100] or 'no Content-Type'!r}")
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self._cap:
            raise self._too_large(int(length))
        # A chunked body has no length to refuse up front, and tornado would cut one over
        # its own limit with a bare 400: data_received enforces the limit instead.
        self.request.connection.set_max_body_size(  # type: ignore[union-attr]
            2**62 if length == "" else DRAIN_FACTOR * self._cap)

    def _too_large(self, size: int, *, at_least: bool = False) -> ApiError:
        limit = self.ctx.stack.config.max_bundle_mb
        return ApiError(413, "too_large", f"the upload is {'over ' if at_least else ''}{size} "
                        f"bytes; bundles are limited to {limit} MiB. Move data out of the "
                        "bundle (the platform provides bars)")

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self._cap:
            self._chunks.append(chunk)
            return
        self._chunks.clear()
        if self._size > DRAIN_FACTOR * self._cap and not self._finished:
            # Enough read and dropped: answer now; tornado then closes the connection.
            self.write_api_error(self._too_large(self._size, at_least=True))

    async def post(self) -> None:
        if self._size > self._cap:
            raise self._too_large(self._size)
        part = self._multipart(b"".join(self._chunks))
        self._chunks.clear()
        notebook = part("notebook")
        if notebook is not None and part("bundle") is None:
            bundle, spec = await self.ctx.run_submit(_from_notebook, notebook, part("spec"),
                                                     part("strategy"))
        else:
            bundle, spec_raw = self._required(part)
            spec = BacktestSpec.model_validate_json(spec_raw)
        if len(bundle) > self.ctx.max_bundle_bytes:
            raise self._too_large(len(bundle))
        job_id = await self.ctx.run_submit(self.ctx.stack.submit, spec, bundle,
                                           researcher=self.researcher.name)
        self.set_header("Location", f"/v1/backtests/{job_id}")
        self.write_json(CreateBacktestResponse(id=job_id, status=JobStatus.PENDING), 202)

    def _required(self, part: Callable[[str], bytes | None]) -> tuple[bytes, bytes]:
        """The 'bundle' and 'spec' parts; a 400 naming the one that is missing."""
        bundle = part("bundle")
        if bundle is None:
            raise bad_request("bundle", "missing; send the bundle zip as the multipart part "
                              "'bundle' (build it with pitwall.bundle.build_bundle), or a "
                              "notebook as the part 'notebook'")
        spec = part("spec")
        if spec is None:
            raise bad_request("spec", "missing; send the BacktestSpec as JSON in the multipart "
                              "part 'spec'")
        return bundle, spec

    def _multipart(self, body: bytes) -> Callable[[str], bytes | None]:
        """A lookup of the body's multipart parts by name (file or plain field)."""
        args: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        try:
            httputil.parse_body_arguments(self.request.headers["Content-Type"], body, args,
                                          files, self.request.headers)
        except httputil.HTTPInputError as exc:
            raise ApiError(400, "bad_request", f"the body is not valid multipart/form-data "
                           f"({exc}); send a 'bundle' file part and a 'spec' JSON part") from None

        def part(name: str) -> bytes | None:
            if files.get(name):
                return bytes(files[name][0].body)
            return args[name][0] if args.get(name) else None

        return part

    async def get(self) -> None:
        ctx = self.ctx
        limit = _int_arg(self.get_query_argument("limit", "50"), "limit", 1, ctx.max_page)
        views = await ctx.run(
            ctx.stack.store.query_jobs, researcher=self._researcher_filter(),
            status=_status_arg(self.get_query_argument("status", None)),
            since=_time_arg(self.get_query_argument("since", None), "since"),
            until=_time_arg(self.get_query_argument("until", None), "until"),
            before=_decode_cursor(self.get_query_argument("cursor", None)), limit=limit + 1,
        )
        more = len(views) > limit
        views = views[:limit]
        cursor = _encode_cursor(views[-1]) if more else None
        self.write_json(ListBacktestsResponse(items=views, next_cursor=cursor))

    def _researcher_filter(self) -> str | None:
        asked = self.get_query_argument("researcher", None)
        if self.researcher.is_admin:
            return asked
        if asked not in (None, self.researcher.name):
            raise ApiError(403, "forbidden", "only an admin may list other researchers' jobs; "
                           "leave out 'researcher' to list your own")
        return self.researcher.name


def _from_notebook(notebook: bytes, spec_raw: bytes | None, strategy: bytes | None,
                   ) -> tuple[bytes, BacktestSpec]:
    """A notebook upload bundled here by the Run Backtest button's rule (docs/notebooks.md):
    the engine is its strategy's kind, its ``pitwall:params`` cell the default params."""
    if spec_raw is None:
        raise bad_request("spec", "missing; send the BacktestSpec as JSON in the multipart "
                          "part 'spec'")
    try:
        spec_in = json.loads(spec_raw)
    except ValueError as exc:
        raise bad_request("spec", f"not JSON: {exc}") from None
    if not isinstance(spec_in, dict):
        raise bad_request("spec", "must be a JSON object (a BacktestSpec)")
    name = strategy.decode("utf-8", "replace").strip() if strategy else None
    built = bundle_notebook(load_notebook(notebook), strategy=name or None)
    given = spec_in.get("params")
    params: dict[str, Any] = given if isinstance(given, dict) else {}
    spec_in = {**spec_in, "engine": built.kind, "params": {**built.params, **params}}
    return built.data, BacktestSpec.model_validate(spec_in)


class BacktestHandler(ApiHandler):
    """``GET /v1/backtests/{id}``: status, progress, and metrics once done."""

    route = "/v1/backtests/{id}"

    async def get(self, job_id: str) -> None:
        self.write_json(await self.visible_job(job_id))


class CancelHandler(ApiHandler):
    """``POST /v1/backtests/{id}/cancel``: 202; a PENDING job ends now, a RUNNING one soon."""

    route = "/v1/backtests/{id}/cancel"

    async def post(self, job_id: str) -> None:
        view = await self.visible_job(job_id)
        store = self.ctx.stack.store
        status = view.status
        if not status.terminal:
            status = await self.ctx.run(store.cancel, job_id)
        if (status.terminal and status is not JobStatus.CANCELLED) or view.status.terminal:
            raise ApiError(409, "conflict", f"job {job_id} already ended as {status.value}; "
                           "there is nothing to cancel")
        self.write_json(await self.ctx.run(store.get, job_id), 202)


class LogsHandler(ApiHandler):
    """``GET /v1/backtests/{id}/logs``: the strategy's captured stderr, once the attempt ended."""

    route = "/v1/backtests/{id}/logs"

    async def get(self, job_id: str) -> None:
        view = await self.visible_job(job_id)
        rows = await self.ctx.run(self.ctx.stack.store.artifacts, job_id)
        if "log.txt" not in rows:
            raise ApiError(404, "not_found", f"job {job_id} has no log yet (it is "
                           f"{view.status.value}); logs appear when an attempt ends")
        data = await self.ctx.run(_read_artifact, rows["log.txt"], self.ctx.stack.config)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        # Captured logs are already printable; a log recorded before they were is made so.
        self.finish(printable_log(data))


class JobArtifactHandler(ApiHandler):
    """``GET /v1/backtests/{id}/artifacts/{name}``: 302 to a signed URL that expires."""

    route = "/v1/backtests/{id}/artifacts/{name}"

    async def get(self, job_id: str, name: str = "report.html") -> None:
        view = await self.visible_job(job_id)
        rows = await self.ctx.run(self.ctx.stack.store.artifacts, job_id)
        if name not in rows and name in LATER_FILES:
            if await self.ctx.run(_still_writing, self.ctx.stack.store, view):
                raise ApiError(503, "artifacts_pending", f"job {job_id} is COMPLETED and its "
                               f"{name} is still being written (the report follows the "
                               "metrics): retry in a second", retry_after=1)
            # Recorded since the first read? The rows and their event commit together,
            # so once the event is there a second read has the rows.
            rows = await self.ctx.run(self.ctx.stack.store.artifacts, job_id)
        if name not in rows:
            have = ", ".join(sorted(rows)) or "none yet"
            raise ApiError(404, "not_found", f"job {job_id} has no {name} (it is "
                           f"{view.status.value}; its artifacts: {have})")
        url = sign_url(self.ctx.secret, job_id, name, ttl_s=self.ctx.report_ttl_s)
        self.redirect(url, status=302)


class ReportHandler(JobArtifactHandler):
    """``GET /v1/backtests/{id}/report``: 302 to a signed URL of report.html that expires."""

    route = "/v1/backtests/{id}/report"


class RerunHandler(ApiHandler):
    """``POST /v1/backtests/{id}/rerun``: a new job from the manifest of this one.

    Same bundle, same spec with the data version it pinned: the rerun reads the bytes
    the first run read, whatever was ingested since, with the costs the stored spec
    holds (its preset is not resolved again: docs/engine-conventions.md §2.3).
    """

    route = "/v1/backtests/{id}/rerun"

    async def post(self, job_id: str) -> None:
        view = await self.visible_job(job_id)
        bundle = await self.ctx.run(self.ctx.stack.store.bundle, view.bundle_sha256)
        new_id = await self.ctx.run_submit(self.ctx.stack.submit, view.spec, bundle,
                                           researcher=self.researcher.name, stored=True)
        self.set_header("Location", f"/v1/backtests/{new_id}")
        self.write_json(CreateBacktestResponse(id=new_id, status=JobStatus.PENDING), 202)


class ArtifactHandler(ApiHandler):
    """``GET /v1/artifacts/{id}/{name}?expires=&sig=``: the signature is the credential."""

    route = "/v1/artifacts/{id}/{name}"
    auth_required = False

    async def get(self, job_id: str, name: str) -> None:
        why = verify(self.ctx.secret, job_id, name, self.get_query_argument("expires", ""),
                     self.get_query_argument("sig", ""))
        if why is not None:
            raise ApiError(403, "forbidden", why)
        rows = await self.ctx.run(self.ctx.stack.store.artifacts, job_id)
        if name not in rows:
            raise not_found(f"artifact {name!r} of job {job_id!r}")
        data = await self.ctx.run(_read_artifact, rows[name], self.ctx.stack.config)
        self.set_header("Content-Type",
                        CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream"))
        self.set_header("Cache-Control", "private, max-age=60")
        self.finish(data)


#: The files an attempt writes after its commit (``execution/attempt.py: later``).
LATER_FILES = frozenset({"report.html", "tearsheet.json", "trades.parquet", "positions.parquet"})
#: How long after a job's commit its post-commit files (the report, the ledgers) are
#: awaited: past it, a missing file is missing (its worker stopped after the commit).
PENDING_ARTIFACTS_S = 120.0


def _still_writing(store: MetadataStore, view: JobView) -> bool:
    """True while a COMPLETED job's post-commit files are being written: no ``artifacts``
    event yet, and the commit is recent (docs/architecture.md §2, "record")."""
    if view.status is not JobStatus.COMPLETED or view.finished_at is None:
        return False
    age = (dt.datetime.now(dt.UTC) - view.finished_at).total_seconds()
    if age > PENDING_ARTIFACTS_S:
        return False
    return not any(e.kind == "artifacts" for e in store.events(view.id))


def _read_artifact(row: dict[str, Any], config: Config) -> bytes:
    """The bytes of a recorded artifact row, from a local folder or S3 (sha256 checked)."""
    try:
        return read_artifact(row["uri"], config, sha256=row["sha256"])
    except ArtifactMissingError as exc:
        raise ApiError(404, "not_found", f"artifact {row['name']}: {exc}") from None
    except ArtifactUnavailableError as exc:
        raise ApiError(503, "artifact_store_unavailable", f"artifact {row['name']}: {exc}; "
                       "retry in a moment") from exc


def _int_arg(raw: str, name: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(name, f"{raw[:40]!r} is not an integer") from None
    if not lo <= value <= hi:
        raise bad_request(name, f"must be between {lo} and {hi}, got {value}")
    return value


def _status_arg(raw: str | None) -> JobStatus | None:
    if raw is None:
        return None
    try:
        return JobStatus(raw)
    except ValueError:
        choices = ", ".join(s.value for s in JobStatus)
        raise bad_request("status", f"{raw[:40]!r} is not a status; use one of {choices}") from None


def _time_arg(raw: str | None, name: str) -> dt.datetime | None:
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise bad_request(name, f"{raw[:40]!r} is not an ISO 8601 time, e.g. "
                          "2024-03-01T00:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _encode_cursor(view: JobView) -> str:
    raw = json.dumps([view.created_at.isoformat(), view.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(raw: str | None) -> tuple[dt.datetime, str] | None:
    if raw is None:
        return None
    try:
        at, job_id = json.loads(base64.urlsafe_b64decode(raw.encode()))
        return dt.datetime.fromisoformat(at), str(job_id)
    except (ValueError, TypeError, binascii.Error):
        raise bad_request("cursor", "is not a cursor this API returned; pass next_cursor "
                          "unchanged, or leave it out for the first page") from None
