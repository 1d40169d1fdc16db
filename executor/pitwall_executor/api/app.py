"""The tornado application of the Backtest API: the one handler table, and its server.

``make_app(stack)`` is all an embedding needs (``pitwall serve``, ``pitwall api``,
tests); :func:`start_server` binds it to a port on the current IOLoop.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import tornado.web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from tornado.httpserver import HTTPServer

from pitwall_executor.api.bars import BarsHandler, ReferenceHandler
from pitwall_executor.api.context import ApiContext
from pitwall_executor.api.errors import ApiError
from pitwall_executor.api.events import EventsSocket
from pitwall_executor.api.handlers import (
    ApiHandler,
    ArtifactHandler,
    BacktestHandler,
    BacktestsHandler,
    CancelHandler,
    JobArtifactHandler,
    LogsHandler,
    NotFoundHandler,
    ReportHandler,
    RerunHandler,
)
from pitwall_executor.api.models import HealthResponse
from pitwall_executor.api.openapi import openapi_document
from pitwall_executor.api.signing import load_secret
from pitwall_executor.api.sweeps import SweepHandler, SweepsHandler
from pitwall_executor.stack import Stack

access_log = logging.getLogger("pitwall.api.access")
_ID = r"([^/]+)"


class Loops(Protocol):
    """The worker loops of the process serving the API (the embedded mode's
    ``orchestration.health.Health``)."""

    def states(self) -> dict[str, str]: ...
    def failing(self) -> dict[str, str]: ...
    def render(self) -> bytes: ...


def _loops(handler: tornado.web.RequestHandler) -> Loops | None:
    loops: Loops | None = handler.application.settings.get("pitwall_loops")
    return loops


class HealthHandler(ApiHandler):
    """``GET /healthz``: 200 when the API runs, the database answers and no worker loop of
    this process is dead or stuck; else 503 saying which."""

    route = "/healthz"
    auth_required = False

    async def get(self) -> None:
        await self.ctx.run(self.ctx.stack.store.ping)
        loops = _loops(self)
        failing = loops.failing() if loops is not None else {}
        if failing:
            raise ApiError(503, "worker_loop_failing", "worker loops of this process are not "
                           "running: " + "; ".join(f"{n} {why}" for n, why in failing.items())
                           + ". Restart the process; its jobs are recovered")
        self.write_json(HealthResponse(status="ok", database="ok",
                                       loops=loops.states() if loops is not None else {}))


class MetricsHandler(ApiHandler):
    """``GET /metrics``: Prometheus text; job gauges are left out while the DB is down."""

    route = "/metrics"
    auth_required = False

    async def get(self) -> None:
        try:
            counts: dict[str, int] | None = await self.ctx.run(
                self.ctx.stack.store.count_by_status)
        except Exception:  # the scrape must still answer; pitwall_db_up says why gauges vanished
            counts = None
        self.set_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
        # The cache's counters are files on disk: read them off the IOLoop.
        text = await self.ctx.run(self.ctx.metrics.render, counts, self.ctx.stack.lake)
        loops = _loops(self)
        self.finish(text + (loops.render() if loops is not None else b""))


class OpenApiHandler(ApiHandler):
    """``GET /v1/openapi.json``."""

    route = "/v1/openapi.json"
    auth_required = False

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(openapi_document())


HANDLERS: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    (r"/v1/backtests", BacktestsHandler),
    (rf"/v1/backtests/{_ID}", BacktestHandler),
    (rf"/v1/backtests/{_ID}/cancel", CancelHandler),
    (rf"/v1/backtests/{_ID}/logs", LogsHandler),
    (rf"/v1/backtests/{_ID}/report", ReportHandler),
    (rf"/v1/backtests/{_ID}/artifacts/([A-Za-z0-9_.-]{{1,64}})", JobArtifactHandler),
    (rf"/v1/backtests/{_ID}/rerun", RerunHandler),
    (rf"/v1/backtests/{_ID}/events", EventsSocket),
    (r"/v1/datasets/([A-Za-z0-9_.-]{1,128})/bars", BarsHandler),
    (r"/v1/datasets/([A-Za-z0-9_.-]{1,128})/reference/([a-z_]{1,32})", ReferenceHandler),
    (r"/v1/sweeps", SweepsHandler),
    (rf"/v1/sweeps/{_ID}", SweepHandler),
    (rf"/v1/artifacts/{_ID}/{_ID}", ArtifactHandler),
    (r"/v1/openapi.json", OpenApiHandler),
    (r"/healthz", HealthHandler),
    (r"/metrics", MetricsHandler),
]


def make_app(stack: Stack, *, secret: bytes | None = None, db_threads: int = 16,
             report_ttl_s: float = 300.0, events_poll_s: float = 0.25,
             loops: Loops | None = None) -> tornado.web.Application:
    """The API over ``stack``; the secret signing report URLs defaults to one in data_dir.
    ``loops``: the worker loops of this process, reported by ``/healthz`` and ``/metrics``."""
    ctx = ApiContext(
        stack=stack, secret=secret if secret is not None else load_secret(stack.config.data_dir),
        pool=ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="pitwall-api-db"),
        report_ttl_s=report_ttl_s, events_poll_s=events_poll_s,
    )

    def log_request(handler: tornado.web.RequestHandler) -> None:
        route = getattr(handler, "route", "unmatched")
        status = handler.get_status()
        seconds = handler.request.request_time()
        ctx.metrics.observe(route, handler.request.method or "?", status, seconds)
        level = logging.DEBUG if status < 400 else logging.INFO
        access_log.log(level, "%d %s %s %.1fms", status, handler.request.method,
                       handler.request.uri, 1000 * seconds)

    return tornado.web.Application(
        HANDLERS, pitwall=ctx, pitwall_loops=loops, log_function=log_request,
        default_handler_class=NotFoundHandler, compress_response=False,
    )


def api_context(app: tornado.web.Application) -> ApiContext:
    """The context of an app made by :func:`make_app` (for embedding and tests)."""
    ctx = app.settings["pitwall"]
    assert isinstance(ctx, ApiContext)
    return ctx


def start_server(app: tornado.web.Application, port: int, *, address: str = "127.0.0.1",
                 **kwargs: Any) -> HTTPServer:
    """Listen on ``address:port`` on the current IOLoop (port 0 picks a free one)."""
    ctx = api_context(app)
    # The server-wide cap; the submit handler lowers it per request to the bundle limit.
    server = HTTPServer(app, max_body_size=4 * ctx.max_bundle_bytes + (4 << 20), **kwargs)
    server.listen(port, address)
    return server


__all__ = ["HANDLERS", "ApiError", "Loops", "api_context", "make_app", "start_server"]
