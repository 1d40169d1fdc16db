"""Each job's event stream: status changes and progress, numbered per job.

Events are appended inside the transaction that makes the change they report, so a
reader never sees a status without its event or an event without its status. The API
replays them (``after`` a sequence number) to a WebSocket that reconnects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pitwall.models import MAX_EQUITY_POINTS, ProgressEvent
from pitwall_executor.jobs.schema import aware, events, utcnow


def append(conn: Connection, job_id: str, kind: str, payload: dict[str, Any]) -> None:
    """Append an event to a job's stream inside the caller's transaction."""
    # Sequence numbers are per job; the primary key makes a racing writer fail loudly.
    seq = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0))
        .where(events.c.job_id == job_id)
    ).scalar_one()
    conn.execute(events.insert().values(job_id=job_id, seq=int(seq) + 1, kind=kind,
                                        at=utcnow(), payload=json.dumps(payload)))


def read(conn: Connection, job_id: str, after: int = 0) -> list[ProgressEvent]:
    """The job's events numbered above ``after``, oldest first."""
    rows = conn.execute(
        sa.select(events).where(events.c.job_id == job_id, events.c.seq > after)
        .order_by(events.c.seq)
    ).mappings().all()
    out = []
    for r in rows:
        payload = json.loads(r["payload"])
        equity = payload.pop("equity", None)  # its own field, not repeated in ``data``
        out.append(ProgressEvent(
            job_id=job_id, seq=r["seq"], kind=r["kind"], at=aware(r["at"]),
            status=payload.get("status"), progress=payload.get("progress"),
            message=payload.get("message") or payload.get("reason"), data=payload,
            equity=equity,
        ))
    return out


def equity_points(points: Sequence[tuple[int, float]]) -> list[list[int | float]]:
    """``[[ts_ms, value], ...]``: finite points only, thinned evenly (the last one kept) to
    at most :data:`~pitwall.models.MAX_EQUITY_POINTS`."""
    clean: list[list[int | float]] = [[int(ts), float(v)] for ts, v in points
                                      if math.isfinite(v)]
    if len(clean) > MAX_EQUITY_POINTS:
        step = len(clean) / MAX_EQUITY_POINTS
        clean = [clean[min(len(clean) - 1, math.ceil((i + 1) * step) - 1)]
                 for i in range(MAX_EQUITY_POINTS)]
    return clean
