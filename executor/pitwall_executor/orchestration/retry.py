"""Database calls a worker must not lose to an outage: retried until it ends, within bounds.

A result finished while PostgreSQL restarts is committed once it is back, not dropped
(docs/architecture.md §1.5); the attempt number still fences the commit, so a retry can
never overwrite a newer attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pitwall_executor.jobs.store import database_unreachable

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_PAUSE_S = 0.25
MAX_PAUSE_S = 2.0  # the database is used within this of its return


def until_reachable(what: str, call: Callable[[], T], *, within_s: float) -> T:
    """``call()``, called again while the database is unreachable, for up to ``within_s``.

    Any other error, or an outage longer than ``within_s``, is raised.
    """
    deadline = time.monotonic() + within_s
    pause = FIRST_PAUSE_S
    waited = False
    while True:
        try:
            result = call()
        except Exception as exc:
            if not database_unreachable(exc) or time.monotonic() + pause > deadline:
                raise
            if not waited:
                log.warning("%s: the metadata database is unreachable (%s); retrying for up "
                            "to %.0f s", what, first_line(exc), within_s)
                waited = True
            time.sleep(pause)
            pause = min(2 * pause, MAX_PAUSE_S)
            continue
        if waited:
            log.info("%s: done, the database is back", what)
        return result


def first_line(exc: BaseException) -> str:
    """An exception in one short line (a driver's messages run over several)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
