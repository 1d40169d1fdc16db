"""``WS /v1/backtests/{id}/events``: a job's events, resumable with ``?after=<seq>``.

The events table is the source of truth and resumption has to read it anyway, so the
socket polls it (one indexed primary-key range query per open socket every
``events_poll_s``, 0.25 s by default) instead of subscribing to Redis: the same code
works in the embedded mode (no Redis) and nothing is missed between a replay and a
subscription. Each message is one :class:`pitwall.models.ProgressEvent` as JSON; the
server closes the socket (code 1000) after the job's terminal status event.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from pitwall.models import JobStatus
from pitwall_executor.api.errors import ApiError, to_api_error
from pitwall_executor.api.handlers import ApiHandler, _int_arg

MAX_SEQ = 2**31 - 1


class EventsSocket(ApiHandler, WebSocketHandler):
    """Streams the job's events after ``after`` (default 0: from the start)."""

    route = "/v1/backtests/{id}/events"

    def initialize(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        job_id = args[0]
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(400, "bad_request", "this endpoint is a WebSocket; connect with "
                           "ws:// (Upgrade: websocket) and an Authorization header")
        self._job_id = job_id
        self._view = await self.visible_job(job_id)
        self._after = _int_arg(self.get_query_argument("after", "0"), "after", 0, MAX_SEQ)
        await WebSocketHandler.get(self, *args, **kwargs)

    def open(self, *args: str, **kwargs: str) -> None:
        self._task = asyncio.ensure_future(self._pump())

    def on_message(self, message: str | bytes) -> None:
        pass  # the stream is one-way; clients resume by reconnecting with ?after=

    def on_close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _pump(self) -> None:
        store = self.ctx.stack.store
        after, ended = self._after, self._view.status.terminal
        try:
            while True:
                batch = await self.ctx.run(store.events, self._job_id, after)
                for event in batch:
                    await self.write_message(event.model_dump_json())
                    after = event.seq
                    if event.kind == "status" and event.status is not None:
                        ended = JobStatus(event.status).terminal
                if ended and not batch:
                    self.close(1000, "job ended")
                    return
                await asyncio.sleep(self.ctx.events_poll_s)
        except WebSocketClosedError:
            return
        except Exception as exc:  # the DB went away: tell the client why, it can resume
            err = to_api_error(exc)
            if err is None:
                raise
            self.close(1011, err.message[:120])
